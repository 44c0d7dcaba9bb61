#!/bin/bash
# Move an export between two IOThreads and the main loop 100 times
# (io0 -> io1 -> main loop -> io0 ...) through the monitor while 16 clients
# (fio --ioengine=nbd jobs, each owning a region, verify=crc32c) do random
# writes and verified reads.  No client error, no verify error, the daemon
# exits 0 on SIGTERM.
#   move-iothread.sh [PATH-TO-aioloop-nbd]
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
need fio

MOVES=${NBD_MOVES:-100}
JOBS=16
REGION_MIB=4
mkimage "$WORK/disk.img" $((JOBS * REGION_MIB))M

nbd_start --iothreads 2 --monitor \
    "id=disk,file=$WORK/disk.img,writable=on,iothread=io0"
uri=$(nbd_uri disk)

# clients: fio passes, one after the other, until the mover is done
fio_loop() {
    local pass=0
    while [ ! -e "$WORK/moves.done" ]; do
        pass=$((pass + 1))
        if ! fio --name=mv --ioengine=nbd "--uri=$uri" --rw=randwrite \
                --bsrange=512-64k --size=${REGION_MIB}M \
                --offset_increment=${REGION_MIB}M --numjobs=$JOBS \
                --iodepth=8 --loops=2 --randrepeat=0 --verify=crc32c --verify_state_save=0 --verify_backlog=32 \
                --verify_fatal=1 --group_reporting \
                --output="$WORK/fio-$pass.out" >/dev/null 2>"$WORK/fio-$pass.err"; then
            echo "$pass" >"$WORK/fio.failed"
            return 1
        fi
        grep -q "err= 0" "$WORK/fio-$pass.out" || {
            echo "$pass" >"$WORK/fio.failed"
            return 1
        }
    done
    echo "$pass" >"$WORK/fio.passes"
}
nbd_bg fio_loop
fio_pid=$BG_PID

if ! nbd_is_aioloop; then
    # no monitor: exercise the clients alone for a few seconds
    sleep 5
    touch "$WORK/moves.done"
    rc=0
    wait "$fio_pid" || rc=$?
    [ $rc = 0 ] || { tail -n 5 "$WORK"/fio-*.err >&2; die "fio clients failed (loop exit $rc)"; }
    nbd_forget "$fio_pid"
    nbd_stop
    skip "$NBD_BACKEND has no monitor: fio clients ran ($(cat "$WORK/fio.passes") passes), no moves"
fi

"$PYTHON" - "$D_MON" "$MOVES" "$WORK" <<'EOF' || { touch "$WORK/moves.done"; die "moving the export failed"; }
import os, random, sys, time
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
from qmp import QMP
mon, moves, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
q = QMP(mon)
ths = q.cmd("query-iothreads")
ids = sorted(t["id"] for t in ths)
assert ids == ["io0", "io1"], "query-iothreads: %r" % ids
order = ["io1", None, "io0"]
busy = 0
inflight = 0
t0 = time.time()
for i in range(moves):
    if os.path.exists(os.path.join(work, "fio.failed")):
        sys.exit("fio failed during move %d" % i)
    target = order[i % 3]
    # move while clients are connected (between two fio passes there are
    # none for a moment): wait for them, up to 5 s
    for _ in range(100):
        if any(e["clients"] for e in q.cmd("query-exports")):
            break
        time.sleep(0.05)
    q.cmd("export-set-iothread", {"id": "disk", "iothread": target})
    exp = [e for e in q.cmd("query-exports") if e["id"] == "disk"]
    assert len(exp) == 1, "query-exports: %r" % exp
    if exp[0]["iothread"] != target:
        sys.exit("move %d: export in %r, expected %r" % (i, exp[0]["iothread"], target))
    if exp[0]["clients"] > 0:
        busy += 1
    inflight += exp[0].get("in-flight", 0) > 0
    time.sleep(random.uniform(0, 0.03))
print("    %d moves in %.1f s, %d of them with clients connected, %d with requests in flight"
      % (moves, time.time() - t0, busy, inflight))
print("    iothreads: " + ", ".join("%s %d iterations" % (t["id"], t.get("iterations", -1))
                                    for t in q.cmd("query-iothreads")))
q.close()
EOF
touch "$WORK/moves.done"
rc=0
wait "$fio_pid" || rc=$?
nbd_forget "$fio_pid"
if [ $rc -ne 0 ] || [ -e "$WORK/fio.failed" ]; then
    p=$(cat "$WORK/fio.failed" 2>/dev/null || echo "?")
    cat "$WORK/fio-$p.err" "$WORK/fio-$p.out" >&2 2>/dev/null || true
    die "fio pass $p failed (client error or verify error; loop exit $rc)"
fi
log "fio: $(cat "$WORK/fio.passes") passes of $JOBS verified jobs, all clean"
# the last pass's data, read again by a new client after all the moves
fio --name=check --ioengine=nbd "--uri=$uri" --rw=read --bs=64k --size=${REGION_MIB}M \
    --offset_increment=${REGION_MIB}M --numjobs=$JOBS --group_reporting \
    --output="$WORK/fio-read.out" >/dev/null 2>&1 || die "reading after the moves failed"
nbd_alive "at the end"
nbd_stop
log "PASS"
