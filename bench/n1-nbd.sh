#!/bin/bash
# N1: aioloop-nbd next to qemu-nbd and nbdkit (file plugin): same machine,
# same image, same clients (fio's nbd engine, nbdcopy), in one run.
#
#   bench/n1-nbd.sh [BUILD_DIR]
#
# BUILD_DIR (default: $BENCH_BUILD_DIR or /tmp/aioloop-bench-build) must hold
# tools/nbd/aioloop-nbd (built here with ninja if missing; a release build is
# what run-all.sh uses).  Every figure starts a fresh server on a UNIX socket,
# runs one client, stops the server (SIGTERM); the servers take turns in a
# rotating order.  One line per figure, then the ratio per workload:
#
#   n1 <workload>:<cache> <server> <value> <unit>
#   n1 <workload>:<cache> ratio aioloop-nbd/qemu-nbd <r>   (> 1: aioloop faster)
#
# Servers (all on the same image file, same cache mode):
#   aioloop-nbd      1 IOThread, the export in it, aio=io_uring
#   aioloop-nbd-2io  2 IOThreads, an export of the same file in each (only
#                    for the 2-client workloads; each fio job uses its own)
#   qemu-nbd         qemu-nbd -f raw --aio=io_uring -t -e 16 --cache=none|writeback
#   nbdkit           nbdkit -f file (cache=none is posix_fadvise(DONTNEED)
#                    after I/O, not O_DIRECT: its "direct" figures are not
#                    like for like; shown for reference)
# Cache modes: "direct" (O_DIRECT: aioloop cache=none, qemu-nbd --cache=none)
# and "cached" (the page cache: cache=writeback on both).
#
# Workloads (fio --ioengine=nbd, time-based; nbdcopy copies the whole image):
#   randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32
#   read-1m-qd8 write-1m-qd8                      IOPS (4k) or MiB/s (1m)
#   randread-4k-qd32-x2 randwrite-4k-qd32-x2      2 fio jobs = 2 connections
#   nbdcopy-in (file -> export), nbdcopy-out (export -> null:)   MiB/s
#
# Environment:
#   BENCH_N1_SECONDS    seconds per fio figure (default 5; 1 in quick mode)
#   BENCH_N1_SIZE_MIB   image size (default 1024; 256 in quick mode)
#   BENCH_N1_WORKLOADS  only these workloads (default all, names above)
#   BENCH_N1_SERVERS    only these servers (default all four)
#   BENCH_N1_CACHE      "direct cached" (default both)
#   BENCH_DIR           where the image lives (default /var/tmp; not tmpfs)
#   BENCH_QUICK=1       smoke test
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-${BENCH_BUILD_DIR:-/tmp/aioloop-bench-build}}
daemon=$build/tools/nbd/aioloop-nbd
quick=${BENCH_QUICK:-0}
[ "$quick" = 0 ] || quick=1
if [ "$quick" = 1 ]; then
    secs=${BENCH_N1_SECONDS:-1}
    size_mib=${BENCH_N1_SIZE_MIB:-256}
else
    secs=${BENCH_N1_SECONDS:-5}
    size_mib=${BENCH_N1_SIZE_MIB:-1024}
fi
all_workloads="randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32
read-1m-qd8 write-1m-qd8 randread-4k-qd32-x2 randwrite-4k-qd32-x2 nbdcopy-in nbdcopy-out"
workloads=${BENCH_N1_WORKLOADS:-$all_workloads}
servers=${BENCH_N1_SERVERS:-aioloop-nbd aioloop-nbd-2io qemu-nbd nbdkit}
caches=${BENCH_N1_CACHE:-direct cached}

for t in fio nbdcopy; do
    command -v $t >/dev/null || { echo "skipped: N1 needs $t"; exit 0; }
done
if [ ! -x "$daemon" ]; then
    ninja -C "$build" tools/nbd/aioloop-nbd >/dev/null 2>&1 || {
        echo "skipped: N1: no $daemon (configure with jansson) and it does not build"
        exit 0
    }
fi
have() { command -v "$1" >/dev/null; }
sv=""
for s in $servers; do
    case $s in
    qemu-nbd) have qemu-nbd || { echo "skipped: N1 qemu-nbd not installed"; continue; } ;;
    nbdkit) have nbdkit || { echo "skipped: N1 nbdkit not installed"; continue; } ;;
    esac
    sv="$sv $s"
done
servers=$sv

export AIOLOOP_TEST_DIR=${BENCH_DIR:-/var/tmp}
# shellcheck source-path=SCRIPTDIR/.. source=tests/nbd/lib.sh
. "$src/tests/nbd/lib.sh"
set +e
NBD_TEST_NAME=n1
nbd_init "$daemon" >/dev/null

echo "# N1 aioloop-nbd vs qemu-nbd vs nbdkit: ${size_mib} MiB image in $WORK, ${secs} s per fio figure"
echo "# $(qemu-nbd --version 2>/dev/null | head -1); nbdkit $(nbdkit --version 2>/dev/null | awk '{print $2}'); $(fio --version); $(nbdcopy --version 2>/dev/null | head -1)"
img=$WORK/image.img
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$img"
cp "$img" "$WORK/source.img"
# Write both back now, or their writeback competes with the first figures
# (the first server measured got half the direct QD1 IOPS), and read the
# image once with O_DIRECT so the host's cache is in the same state for
# every server.
sync
dd if="$img" of=/dev/null bs=1M iflag=direct status=none 2>/dev/null ||
    cat "$img" >/dev/null

# start SERVER CACHE: start it on $img; sets URIS (one per export)
start() {
    local server=$1 cache=$2 c
    c=$([ "$cache" = direct ] && echo none || echo writeback)
    URIS=()
    case $server in
    aioloop-nbd)
        NBD_BACKEND=aioloop nbd_start --iothreads 1 \
            "id=e0,file=$img,writable=on,iothread=io0,cache=$c,aio=io_uring"
        URIS=("$(nbd_uri e0)")
        ;;
    aioloop-nbd-2io)
        NBD_BACKEND=aioloop nbd_start --iothreads 2 \
            "id=e0,file=$img,writable=on,iothread=io0,cache=$c,aio=io_uring" \
            "id=e1,file=$img,writable=on,iothread=io1,cache=$c,aio=io_uring"
        URIS=("$(nbd_uri e0)" "$(nbd_uri e1)")
        ;;
    qemu-nbd)
        NBD_BACKEND=qemu-nbd nbd_start "id=e0,file=$img,writable=on,cache=$c,aio=io_uring"
        URIS=("$(nbd_uri e0)")
        ;;
    nbdkit)
        NBD_BACKEND=nbdkit nbd_start "id=e0,file=$img,writable=on,cache=$c"
        URIS=("$(nbd_uri e0)")
        ;;
    esac
}

# fio_figure WORKLOAD: run it against URIS, print "VALUE UNIT" or "n/a"
fio_figure() {
    local w=$1 rw bs qd jobs=1 unit i
    case $w in
    *-x2) jobs=2 ;;
    esac
    rw=${w%%-*}
    bs=$(echo "$w" | cut -d- -f2)
    qd=$(echo "$w" | cut -d- -f3)
    qd=${qd#qd}
    case $bs in 4k) unit=IOPS ;; *) unit=MiB/s ;; esac
    {
        echo "[global]"
        echo "ioengine=nbd"
        echo "rw=$rw"
        echo "bs=$bs"
        echo "iodepth=$qd"
        echo "time_based=1"
        echo "runtime=$secs"
        echo "size=${size_mib}M"
        echo "group_reporting=1"
        echo "thread=1"
        for ((i = 0; i < jobs; i++)); do
            echo "[job$i]"
            echo "uri=${URIS[$((i % ${#URIS[@]}))]}"
        done
    } >"$WORK/job.fio"
    if ! fio --output-format=json --output="$WORK/fio.json" "$WORK/job.fio" \
            >/dev/null 2>"$WORK/fio.err"; then
        echo "n/a $unit"
        return
    fi
    "$PYTHON" - "$WORK/fio.json" "$unit" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])   # the nbd engine logs a line before the JSON
iops = bw = 0.0
for job in j["jobs"]:
    for d in ("read", "write"):
        iops += job[d]["iops"]
        bw += job[d]["bw_bytes"]
print("%.0f IOPS" % iops if sys.argv[2] == "IOPS" else "%.1f MiB/s" % (bw / 2**20))
EOF
}

nbdcopy_figure() {
    local w=$1 t0 t1
    t0=$(date +%s.%N)
    if [ "$w" = nbdcopy-in ]; then
        nbdcopy --flush "$WORK/source.img" "${URIS[0]}" 2>"$WORK/nbdcopy.err" || { echo "n/a MiB/s"; return; }
    else
        nbdcopy "${URIS[0]}" null: 2>"$WORK/nbdcopy.err" || { echo "n/a MiB/s"; return; }
    fi
    t1=$(date +%s.%N)
    awk -v m="$size_mib" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f MiB/s\n", m / (b - a) }'
}

status=0
rot=0
for cache in $caches; do
    for w in $workloads; do
        # the 2-IOThread server only for the 2-client workloads; rotate the order
        list=()
        for s in $servers; do
            if [ "$s" = aioloop-nbd-2io ] && [ "${w%-x2}" = "$w" ]; then continue; fi
            list+=("$s")
        done
        n=${#list[@]}
        [ "$n" -gt 0 ] || continue
        declare -A val=()
        for ((k = 0; k < n; k++)); do
            s=${list[$(((k + rot) % n))]}
            ( trap 'for p in "${NBD_SERVER_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done' EXIT
              start "$s" "$cache" >/dev/null
              case $w in
              nbdcopy-*) nbdcopy_figure "$w" ;;
              *) fio_figure "$w" ;;
              esac
              nbd_stop >/dev/null ) >"$WORK/figure" 2>"$WORK/figure.err"
            rc=$?
            res=$(tail -n 1 "$WORK/figure")
            if [ $rc -ne 0 ] || [ -z "$res" ]; then
                echo "# N1 $w:$cache $s FAILED: $(tail -n 3 "$WORK/figure.err" | tr '\n' ' ')"
                res="n/a ?"
                status=1
            fi
            echo "n1 $w:$cache $s $res"
            val[$s]=${res%% *}
        done
        rot=$((rot + 1))
        for a in aioloop-nbd aioloop-nbd-2io; do
            q=${val[qemu-nbd]:-n/a}
            v=${val[$a]:-}
            [ -n "$v" ] || continue
            r=$(awk -v a="$v" -v b="$q" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }')
            echo "n1 $w:$cache ratio $a/qemu-nbd $r"
        done
        unset val
    done
done
exit $status
