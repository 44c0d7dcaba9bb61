#!/bin/bash
# Clients killed with SIGKILL mid-write (fio, nbdcopy, a raw client in the
# middle of a write payload) while another client does verified I/O on the
# same export: the daemon keeps serving, the other client completes, the
# dead clients' connections go away, SIGTERM exits 0.
#   kill-client.sh [PATH-TO-aioloop-nbd]
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
need fio nbdcopy nbdinfo

mkimage "$WORK/disk.img" 64M
mkimage "$WORK/victim.img" 256M
nbd_start --iothreads 1 --monitor \
    "id=disk,file=$WORK/disk.img,writable=on,iothread=io0" \
    "id=victim,file=$WORK/victim.img,writable=on"
disk=$(nbd_uri disk)
victim=$(nbd_uri victim)

# the survivor: verified random I/O on the second half of disk, 3 passes
survivor() {
    local p
    for p in 1 2 3; do
        fio --name=survivor --ioengine=nbd "--uri=$disk" --rw=randwrite \
            --bsrange=4k-256k --offset=32M --size=32M --iodepth=16 --randrepeat=0 \
            --verify=crc32c --verify_state_save=0 --verify_fatal=1 --output="$WORK/survivor-$p.out" \
            >/dev/null 2>"$WORK/survivor-$p.err" || return 1
        grep -q "err= 0" "$WORK/survivor-$p.out" || return 1
    done
}
nbd_bg survivor
surv_pid=$BG_PID

# kill_after SECONDS CMD...: start CMD, SIGKILL it after SECONDS
kill_after() {
    local t=$1 pid
    shift
    "$@" &
    pid=$!
    NBD_PIDS+=("$pid")
    sleep "$t"
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
        log "killed $1 (pid $pid) after $t s"
    else
        log "note: $1 had already finished after $t s"
    fi
    wait "$pid" 2>/dev/null || true
    nbd_forget "$pid"
}

# 1. fio (one process: --thread) writing 1 MiB blocks on the first half
kill_after 0.5 sh -c "exec fio --name=victim --thread --ioengine=nbd '--uri=$disk' \
    --rw=randwrite --bs=1M --size=32M --iodepth=16 --time_based --runtime=60 \
    --output='$WORK/victim-fio.out' >/dev/null 2>&1"
nbd_alive "after killing fio"
# 2. nbdcopy from a pipe of random data into the other export
kill_after 0.5 sh -c "exec nbdcopy --requests=32 - '$victim' </dev/urandom"
nbd_alive "after killing nbdcopy"
# 3. a raw client sending half of a 1 MiB write payload, then killed
kill_after 0.5 "$PYTHON" -c '
import os, sys, time
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
c = n.Client(sys.argv[1]).connect("disk")
c.send_request(n.CMD_WRITE, 0, 1 << 20, data=b"\xab" * (1 << 19))
time.sleep(60)' "$(nbd_sock disk)"
nbd_alive "after killing a client in the middle of a payload"
# 4. nbdcopy again, 4 connections of nbdcopy at once
kill_after 0.3 sh -c "exec nbdcopy --connections=4 --requests=64 - '$victim' </dev/urandom"

nbdinfo "$disk" >/dev/null || die "nbdinfo after the kills failed"
nbdinfo "$victim" >/dev/null || die "nbdinfo on the victim export after the kills failed"

rc=0
wait "$surv_pid" || rc=$?
nbd_forget "$surv_pid"
if [ $rc -ne 0 ]; then
    cat "$WORK"/survivor-*.err >&2
    die "the surviving client failed (verify or I/O error)"
fi
log "survivor: 3 verified passes completed"

# the export still takes writes on the region the dead fio was writing
qemu-io -f raw "$disk" -c "write -P 0x5a 0 1M" -c "read -P 0x5a 0 1M" >/dev/null ||
    die "I/O after the kills failed"

if nbd_is_aioloop; then
    # the killed clients' connections are gone (a leak would keep them)
    for ((i = 0; i < 100; i++)); do
        n=$(qmp query-exports | json_get "sum(e['clients'] for e in j)")
        [ "$n" = 0 ] && break
        sleep 0.1
    done
    [ "$n" = 0 ] || die "$n clients still attached 10 s after all of them went away"
fi
nbd_alive "at the end"
nbd_stop
log "PASS"
