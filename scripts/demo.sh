#!/bin/bash
# scripts/demo.sh [BUILD_DIR]: aioloop-nbd with real NBD clients (`make demo`).
#
# Makes a scratch image of random data (DEMO_MIB, default 512 MiB) in a temp
# directory under $AIOLOOP_TEST_DIR or /var/tmp, serves it with aioloop-nbd
# (two IOThreads, one export on each, a monitor socket), then drives it with
# qemu-img info, nbdinfo, qemu-io, nbdcopy and fio's nbd engine, shows the
# IOThreads' statistics and stops the daemon with SIGTERM (exit 0 checked).
# DEMO_FIO_SECONDS (default 5) is the length of each fio run.  About a minute.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
DAEMON=$BUILD/tools/nbd/aioloop-nbd
if [ ! -x "$DAEMON" ]; then
    echo "demo: $DAEMON not found: build first (make build, needs jansson)" >&2
    exit 1
fi
export NBD_BACKEND=aioloop
# shellcheck source=tests/nbd/lib.sh
. "$ROOT/tests/nbd/lib.sh"
NBD_TEST_NAME=demo
need qemu-img qemu-io nbdinfo nbdcopy fio

MIB=${DEMO_MIB:-512}
SECS=${DEMO_FIO_SECONDS:-5}
step=0
header() {
    step=$((step + 1))
    printf '\n=== %d. %s\n' "$step" "$*"
}
# run CMD...: show the command line, then run it with its output indented
run() {
    printf '$ %s\n' "$*"
    "$@" 2>&1 | sed 's/^/    /'
    return "${PIPESTATUS[0]}"
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mibps() { awk -v m="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", m / (b - a) }'; }

echo "aioloop-nbd demo: $DAEMON"
echo "($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); figures on a shared VM vary)"
nbd_init "$DAEMON"

header "Scratch images: $MIB MiB of random data (disk0.img), an empty one (disk1.img)"
t0=$(date +%s.%N)
mkrandom "$WORK/disk0.img" "$MIB"
mkimage "$WORK/disk1.img" "${MIB}M"
sha_src=$(sha256sum <"$WORK/disk0.img" | cut -d' ' -f1)
echo "made in $(elapsed "$t0" "$(date +%s.%N)") s in $WORK; sha256(disk0) = ${sha_src:0:16}..."

header "Start aioloop-nbd: IOThreads io0 and io1, disk0 on io0 (O_DIRECT, io_uring), disk1 on io1"
nbd_start --iothreads 2 --monitor \
    "id=disk0,file=$WORK/disk0.img,writable=on,iothread=io0,cache=none,aio=io_uring,description=random-data" \
    "id=disk1,file=$WORK/disk1.img,writable=on,iothread=io1,description=copy-target"
echo "pid $D_PID, NBD on $D_SOCK, monitor on $D_MON"
U0=$(nbd_uri disk0)
U1=$(nbd_uri disk1)

header "What clients see: nbdinfo --list, qemu-img info"
run nbdinfo --list "nbd+unix://?socket=$D_SOCK" || die "nbdinfo --list failed"
run qemu-img info "$U0" || die "qemu-img info failed"

header "qemu-io: pattern writes, then reads that verify the pattern"
run qemu-io -f raw "$U1" \
    -c "write -P 0xa5 0 4M" -c "write -P 0x5a 100M 1M" -c "write -f -P 0x33 200M 64k" \
    -c "read -P 0xa5 0 4M" -c "read -P 0x5a 100M 1M" -c "read -P 0x33 200M 64k" \
    -c "write -z 0 4M" -c "read -P 0 0 4M" -c flush || die "qemu-io failed"

header "nbdcopy: disk0.img -> export disk1 -> out.img, sha256 compared"
t0=$(date +%s.%N)
run nbdcopy --flush "$WORK/disk0.img" "$U1" || die "nbdcopy in failed"
t1=$(date +%s.%N)
run nbdcopy "$U1" "$WORK/out.img" || die "nbdcopy out failed"
t2=$(date +%s.%N)
sha_out=$(sha256sum <"$WORK/out.img" | cut -d' ' -f1)
echo "in:  $MIB MiB in $(elapsed "$t0" "$t1") s = $(mibps "$MIB" "$t0" "$t1") MiB/s"
echo "out: $MIB MiB in $(elapsed "$t1" "$t2") s = $(mibps "$MIB" "$t1" "$t2") MiB/s"
[ "$sha_out" = "$sha_src" ] || die "sha256 differs: ${sha_out:0:16}... vs ${sha_src:0:16}..."
echo "sha256 equal: ${sha_out:0:16}..."
rm -f "$WORK/out.img"

# fio_run LABEL ARGS...: one fio run against disk0, one line of results
fio_run() {
    local label=$1
    shift
    printf '$ fio --ioengine=nbd --uri=%s %s\n' "$U0" "$*"
    fio --name=demo --ioengine=nbd "--uri=$U0" --time_based "--runtime=$SECS" \
        --output-format=json --output="$WORK/fio.json" "$@" >/dev/null 2>"$WORK/fio.err" || {
        cat "$WORK/fio.err" >&2
        die "fio $label failed"
    }
    "$PYTHON" - "$WORK/fio.json" "$label" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
for job in j["jobs"]:
    for d in ("read", "write"):
        s = job[d]
        if s["io_bytes"]:
            lat = s.get("clat_ns", {}).get("mean", 0) / 1000
            print("    %-24s %-5s %9.0f IOPS  %8.1f MiB/s  mean latency %7.1f us"
                  % (sys.argv[2], d, s["iops"], s["bw_bytes"] / 2**20, lat))
EOF
}
header "fio --ioengine=nbd on disk0 (O_DIRECT, io_uring, IOThread io0), $SECS s each"
fio_run "4k randread QD32" --rw=randread --bs=4k --iodepth=32
fio_run "4k randread QD1" --rw=randread --bs=4k --iodepth=1
fio_run "1M seq read QD8" --rw=read --bs=1M --iodepth=8
fio_run "1M seq write QD8" --rw=write --bs=1M --iodepth=8

header "Move disk0 to the main loop and back while fio reads (export-set-iothread)"
fio --name=move --ioengine=nbd "--uri=$U0" --rw=randread --bs=4k --iodepth=16 \
    --time_based --runtime=3 --output="$WORK/fio-move.txt" >/dev/null 2>&1 &
fio_pid=$!
sleep 0.5
for t in null '"io1"' '"io0"'; do
    qmp export-set-iothread "{\"id\": \"disk0\", \"iothread\": $t}" >/dev/null ||
        die "export-set-iothread $t failed"
    echo "disk0 now in $(qmp query-exports | json_get "[e['iothread'] or 'main loop' for e in j if e['id'] == 'disk0'][0]")"
    sleep 0.3
done
wait "$fio_pid" || die "fio during the moves failed"
grep -m1 "IOPS" "$WORK/fio-move.txt" | sed 's/^ */    fio during the moves: /'

header "Monitor: query-exports and query-iothreads"
qmp query-exports | "$PYTHON" -c '
import json, sys
for e in json.load(sys.stdin):
    print("    export %-6s iothread %-9s writable %-5s clients %d  %s" % (
        e["id"], e["iothread"] or "main-loop", e["writable"], e["clients"],
        ", ".join("%s %s" % (k, e[k]) for k in ("engine", "requests", "size") if k in e)))'
qmp query-iothreads | "$PYTHON" -c '
import json, sys
for t in json.load(sys.stdin):
    print("    iothread %s (tid %s)" % (t["id"], t.get("thread-id")))
    keys = [k for k in t if k not in ("id", "thread-id")]
    for i in range(0, len(keys), 4):
        print("        " + "  ".join("%s=%s" % (k, t[k]) for k in keys[i:i + 4]))'

header "SIGTERM: drain, flush, exit 0"
nbd_stop
echo "aioloop-nbd exited with status 0"
printf '\ndemo: done\n'
