#!/bin/bash
# SIGTERM under write load: 4 clients (2 per export, one export in an
# IOThread with the page cache, one in the main loop with O_DIRECT) log each
# acknowledged write; the daemon gets SIGTERM mid-load, must exit 0, and
# every acknowledged write must be in the files.
#   sigterm.sh [PATH-TO-aioloop-nbd]
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"

REGION=$((64 * 1024 * 1024))
for n in a b; do mkimage "$WORK/$n.img" $((2 * REGION)); done
nbd_start --iothreads 1 \
    "id=a,file=$WORK/a.img,writable=on,iothread=io0,cache=writeback" \
    "id=b,file=$WORK/b.img,writable=on,cache=none"

pids=()
for n in a b; do
    for r in 0 1; do
        : >"$WORK/ack-$n$r.log"
        nbd_bg "$PYTHON" "$NBD_LIB_DIR/ackwriter.py" write "$(nbd_sock $n)" $n \
            $((r * REGION)) $REGION "$WORK/ack-$n$r.log"
        pids+=("$BG_PID")
    done
done

# SIGTERM once every client has some writes acknowledged
for ((i = 0; i < 600; i++)); do
    ready=0
    for f in "$WORK"/ack-*.log; do
        [ "$(wc -l <"$f")" -lt 100 ] || ready=$((ready + 1))
    done
    [ $ready -lt 4 ] || break
    sleep 0.05
done
[ "$ready" = 4 ] || die "only $ready of 4 writers got 100 writes acknowledged in 30 s"
acked=$(cat "$WORK"/ack-*.log | wc -l)
log "SIGTERM with $acked writes acknowledged"
nbd_stop   # dies unless the exit status is 0

nbd_wait_writers "${pids[@]}"
for n in a b; do
    "$PYTHON" "$NBD_LIB_DIR/ackwriter.py" check "$WORK/$n.img" "$WORK/ack-${n}0.log" \
        "$WORK/ack-${n}1.log" || die "export $n lost acknowledged writes"
done
log "PASS"
