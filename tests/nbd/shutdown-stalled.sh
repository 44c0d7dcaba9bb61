#!/bin/bash
# SIGTERM with a client that does not read its replies on each of 4
# exports (two on one IOThread, one on another, one in the main loop),
# while a well-behaved writer on each export has requests in flight.
# The drain cuts a client that does not read after NBD_DRAIN_STALL_NS
# (tools/nbd/nbd-internal.h); draining the exports one after the other
# took that once per export (4 x 5 s), draining them together takes it
# once.  The daemon must:
#  - exit 0 in less than 3 x NBD_DRAIN_STALL_NS (the sequential drain of 4
#    exports cannot: it needs at least 4 x);
#  - have cut the client that does not read on every export;
#  - give the writers only clean replies (success or ESHUTDOWN), and have
#    every acknowledged write in the images.
#   shutdown-stalled.sh [PATH-TO-aioloop-nbd]
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
# qemu-nbd waits forever for a client that does not read its replies, and
# serves one export per process: nothing of this applies to it.
nbd_is_aioloop || skip "several exports in one daemon: aioloop-nbd only"

# The cut-off as the daemon has it: "#define NBD_DRAIN_STALL_NS (5 * ...LL)"
hdr=$NBD_LIB_DIR/../../tools/nbd/nbd-internal.h
expr=$(sed -n 's/^#define NBD_DRAIN_STALL_NS \(.*\)$/\1/p' "$hdr" | tr -d 'L')
[ -n "$expr" ] || die "no NBD_DRAIN_STALL_NS in $hdr"
STALL_NS=$((expr))
[ "$STALL_NS" -gt 0 ] || die "NBD_DRAIN_STALL_NS is $STALL_NS"
LIMIT_NS=$((3 * STALL_NS))
log "drain cut-off $((STALL_NS / 1000000)) ms; SIGTERM must exit within $((LIMIT_NS / 1000000)) ms"

EXPORTS=(e0 e1 e2 e3)
REGION=$((32 * 1024 * 1024))
for e in "${EXPORTS[@]}"; do mkimage "$WORK/$e.img" $((2 * REGION)); done
nbd_start --iothreads 2 \
    "id=e0,file=$WORK/e0.img,writable=on,iothread=io0" \
    "id=e1,file=$WORK/e1.img,writable=on,iothread=io0,cache=none" \
    "id=e2,file=$WORK/e2.img,writable=on,iothread=io1" \
    "id=e3,file=$WORK/e3.img,writable=on"

# noread EXPORT READY: pipeline 16 reads of 64 KiB from the second half (1
# MiB of replies, more than the socket holds) and never read a reply
noread() {
    "$PYTHON" -c '
import os, sys, time
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
c = n.Client(sys.argv[1], timeout=None).connect(sys.argv[2])
for i in range(16):
    c.send_request(n.CMD_READ, int(sys.argv[4]) + (i << 16), 1 << 16)
open(sys.argv[3], "w").close()
time.sleep(3600)' "$(nbd_sock "$1")" "$1" "$2" "$REGION" &
    BG_PID=$!
    NBD_PIDS+=("$BG_PID")
    for ((i = 0; i < 200; i++)); do [ -e "$2" ] && return; sleep 0.05; done
    die "the client of $1 that does not read did not connect"
}

for e in "${EXPORTS[@]}"; do
    noread "$e" "$WORK/noread-$e"
done

writers=()
for e in "${EXPORTS[@]}"; do
    : >"$WORK/ack-$e.log"
    nbd_bg "$PYTHON" "$NBD_LIB_DIR/ackwriter.py" write "$(nbd_sock "$e")" "$e" \
        0 "$REGION" "$WORK/ack-$e.log"
    writers+=("$BG_PID")
done
# SIGTERM once every writer has some writes acknowledged (it has more in
# flight then)
for ((i = 0; i < 600; i++)); do
    ready=0
    for e in "${EXPORTS[@]}"; do
        [ "$(wc -l <"$WORK/ack-$e.log")" -lt 50 ] || ready=$((ready + 1))
    done
    [ $ready -lt ${#EXPORTS[@]} ] || break
    sleep 0.05
done
[ "$ready" = ${#EXPORTS[@]} ] ||
    die "only $ready of ${#EXPORTS[@]} writers got 50 writes acknowledged in 30 s"
nbd_alive "before SIGTERM"

t0=$(date +%s%N)
kill -TERM "$D_PID"
while kill -0 "$D_PID" 2>/dev/null; do
    [ $(($(date +%s%N) - t0)) -lt $((NBD_STOP_TIMEOUT * 1000000000)) ] ||
        die "still running ${NBD_STOP_TIMEOUT} s after SIGTERM"
    sleep 0.05
done
t1=$(date +%s%N)
took=$(((t1 - t0) / 1000000))
rc=0
wait "$D_PID" || rc=$?
nbd_forget "$D_PID"
NBD_SERVER_PIDS=()
log "exited $rc after $took ms (cut-off $((STALL_NS / 1000000)) ms, ${#EXPORTS[@]} exports)"
[ $rc = 0 ] || die "exit status $rc after SIGTERM (expected 0)"
[ $((t1 - t0)) -lt $LIMIT_NS ] ||
    die "SIGTERM took $took ms, not under $((LIMIT_NS / 1000000)) ms: the exports were drained one after the other"

for e in "${EXPORTS[@]}"; do
    grep -q "export '$e': disconnecting a client that does not read" "$D_LOG" ||
        die "export $e did not cut its client that does not read: the test did not stall it"
done

nbd_wait_writers "${writers[@]}"
for e in "${EXPORTS[@]}"; do
    "$PYTHON" "$NBD_LIB_DIR/ackwriter.py" check "$WORK/$e.img" "$WORK/ack-$e.log" ||
        die "export $e lost acknowledged writes"
done
log "PASS"
