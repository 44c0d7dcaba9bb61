#!/bin/bash
# B1: block I/O, aioloop (b1-blockio) next to fio on the same file, same
# engine, same block size, same queue depth, same run time, in the same run.
#
#   bench/b1-blockio.sh [BUILD_DIR]
#
# BUILD_DIR (default: $BENCH_BUILD_DIR or /tmp/aioloop-bench-build) must hold
# bench/b1-blockio (run-all.sh builds it; so does
# `ninja -C BUILD_DIR bench/b1-blockio` in a build configured with
# -Dbench=true).  One line per figure:
#
#   B1 <engine> <workload> <cached|direct>: aioloop X IOPS (Y MB/s),
#      fio Z IOPS (W MB/s), ratio X/Z | goal >= 0.95: met
#
# followed by a "#" line with the CPU time per request of the submitting
# thread of each side (fio's job thread, aioloop's main thread), aioloop's
# whole process (thread-pool workers included) and aioloop's requests per
# submitting system call.  Environment:
#
#   BENCH_DIR          directory of the test file (default /var/tmp; must not
#                      be tmpfs for the O_DIRECT figures)
#   BENCH_B1_SIZE      test file size (default 1g; 256m in quick mode)
#   BENCH_B1_RUNTIME   seconds per run (default 1; 0.5 in quick mode)
#   BENCH_B1_ROUNDS    runs of each side per figure, alternating which side
#                      goes first (default 3; 1 in quick mode)
#   BENCH_B1_FIO_BATCH=0  fio's default batching (submit and reap one I/O
#                      per call) instead of iodepth_batch_submit=QD,
#                      iodepth_batch_complete_max=QD
#   BENCH_B1_ENGINES   engines to run (default "io_uring linux-aio threads")
#   BENCH_B1_MODES     "cached direct" (default both)
#   BENCH_B1_WORKLOADS only these workloads (e.g. "randread-4k-qd1"; default
#                      all: randread-4k-qd1 randread-4k-qd32 read-1m-qd8
#                      write-1m-qd8, the last two and qd1 not for threads)
#   BENCH_B1_MAX_BATCH aioloop's aio_max_batch (default 0: the library's
#                      default: io_uring submits a loop iteration's requests
#                      at once, linux-aio 32 at a time)
#   BENCH_B1_KEEP=1    keep the test file (reused by the next run)
#   BENCH_QUICK=1      smoke test: small file, short runs, one round
set -u -o pipefail

build=${1:-${BENCH_BUILD_DIR:-/tmp/aioloop-bench-build}}
prog="$build/bench/b1-blockio"
quick=${BENCH_QUICK:-0}
[ "$quick" = 0 ] || quick=1
dir=${BENCH_DIR:-/var/tmp}
if [ "$quick" = 1 ]; then
    size=${BENCH_B1_SIZE:-256m}
    runtime=${BENCH_B1_RUNTIME:-0.5}
    rounds=${BENCH_B1_ROUNDS:-1}
else
    size=${BENCH_B1_SIZE:-1g}
    runtime=${BENCH_B1_RUNTIME:-1}
    rounds=${BENCH_B1_ROUNDS:-3}
fi
engines=${BENCH_B1_ENGINES:-io_uring linux-aio threads}
modes=${BENCH_B1_MODES:-cached direct}
file="$dir/aioloop-b1-$$.dat"
[ "${BENCH_B1_KEEP:-0}" = 1 ] && file="$dir/aioloop-b1.dat"
tmp=$(mktemp -d /tmp/aioloop-b1.XXXXXX) || exit 1

lock_pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    [ -n "$lock_pid" ] && kill "$lock_pid" 2>/dev/null
    rm -rf "$tmp"
    [ "${BENCH_B1_KEEP:-0}" = 1 ] || rm -f "$file"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -x "$prog" ]; then
    echo "skipped: B1: $prog not built (ninja -C $build bench/b1-blockio)"
    exit 1
fi
have_fio=1
if ! command -v fio >/dev/null; then
    have_fio=0
    echo "skipped: B1 fio: fio not found (Debian package fio; make bench installs it): aioloop figures only"
fi

# ---- the figures -----------------------------------------------------------

# workload label, fio rw, block size, queue depth
workloads_full="randread-4k-qd1:randread:4k:1 randread-4k-qd32:randread:4k:32
                read-1m-qd8:read:1m:8 write-1m-qd8:write:1m:8"
# The thread-pool engine: only what the issue asks for, to keep the run short.
workloads_threads="randread-4k-qd32:randread:4k:32 read-1m-qd8:read:1m:8"

fio_engine() {
    case "$1" in
        io_uring) echo io_uring ;;
        linux-aio) echo libaio ;;
        # glibc's POSIX AIO: user-space threads doing pread/pwrite, the
        # closest thing fio has to a thread pool.  glibc serves the requests
        # of one fd in order in one thread, so its queue depth is nominal.
        threads) echo posixaio ;;
    esac
}

# ---- the test file ---------------------------------------------------------

bytes=$(numfmt --from=iec "${size^^}" 2>/dev/null) || {
    echo "B1: bad BENCH_B1_SIZE '$size'" >&2
    exit 1
}
if [ ! -d "$dir" ]; then
    echo "skipped: B1: BENCH_DIR $dir is not a directory"
    exit 1
fi
if [ "$(stat -c %s "$file" 2>/dev/null || echo 0)" != "$bytes" ]; then
    t0=$(date +%s%N)
    rm -f "$file"
    # Non-zero data (fio fills its buffers with random bytes), written and
    # synced, so that reads hit allocated blocks, not holes or zero pages.
    if [ $have_fio = 1 ]; then
        fio --name=b1-create --filename="$file" --size="$bytes" --rw=write \
            --bs=1m --ioengine=psync --end_fsync=1 --output=/dev/null \
            >"$tmp/create.log" 2>&1
    else
        head -c "$bytes" /dev/urandom >"$file" && sync "$file"
    fi
    if [ "$(stat -c %s "$file" 2>/dev/null || echo 0)" != "$bytes" ]; then
        echo "skipped: B1: could not create $file ($size):" \
             "$(tail -1 "$tmp/create.log" 2>/dev/null)"
        exit 1
    fi
    echo "# B1 test file $file, $size, created in" \
         "$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') s"
fi
fstype=$(stat -f -c %T "$dir" 2>/dev/null || echo '?')
direct_ok=1
if ! dd if="$file" of=/dev/null bs=4096 count=1 iflag=direct status=none \
        2>"$tmp/dd.log"; then
    direct_ok=0
fi

echo "# B1 block I/O: file $file ($size, $fstype), ${runtime} s per run," \
     "$rounds round(s) per figure (alternating who goes first), sum of ops /" \
     "sum of time"
if [ $have_fio = 1 ]; then
    echo "# B1 fio $(fio --version): ioengine io_uring / libaio / posixaio" \
         "for io_uring / linux-aio / threads; --norandommap --invalidate=0" \
         "--time_based, one job, iodepth = the coroutines, batches:" \
         "$([ "${BENCH_B1_FIO_BATCH:-1}" = 1 ] && echo "submit = complete_max = iodepth" ||
            echo "fio's default (1)")"
fi
echo "# B1 aioloop: one AioContext, aio_poll(ctx, true) in the main thread," \
     "iodepth coroutines, polling off, aio_max_batch ${BENCH_B1_MAX_BATCH:-0}" \
     "(0: default); $(uname -r)"

# ---- one run of each side --------------------------------------------------

# run_aioloop ENGINE RW BS QD DIRECT OUT -> key=value line in OUT
run_aioloop() {
    local d=()
    [ "$5" = 1 ] && d=(--direct)
    "$prog" --file "$file" --engine "$1" --rw "$2" --bs "$3" --iodepth "$4" \
        "${d[@]}" --runtime "$runtime" --max-batch "${BENCH_B1_MAX_BATCH:-0}" \
        >"$6" 2>"$6.err"
}

# run_fio ENGINE RW BS QD DIRECT OUT -> JSON in OUT
run_fio() {
    local batch=()
    # fio's defaults submit one I/O per system call and reap one per call
    # even at iodepth 32; the engines batch, so fio batches too (its own
    # settings for high IOPS): a stricter comparison.
    if [ "$4" -gt 1 ] && [ "${BENCH_B1_FIO_BATCH:-1}" = 1 ]; then
        batch=(--iodepth_batch_submit="$4" --iodepth_batch_complete_max="$4")
    fi
    fio "${batch[@]}" --name=b1 --filename="$file" --size="$bytes" --ioengine="$(fio_engine "$1")" \
        --rw="$2" --bs="$3" --iodepth="$4" --direct="$5" \
        --runtime="$runtime" --time_based --norandommap --randrepeat=0 \
        --invalidate=0 --fallocate=none --output-format=json \
        --output="$6" >"$6.err" 2>&1
}

# fio_fields JSON... -> "ops seconds cpu_seconds context_switches" summed
# over the files
fio_fields() {
    python3 - "$@" <<'EOF'
import json, sys
ops = secs = cpu = ctx = 0.0
for path in sys.argv[1:]:
    with open(path) as f:
        text = f.read()
    # fio may print notes before the JSON object.
    job = json.loads(text[text.index('{'):])['jobs'][0]
    rt = job['job_runtime'] / 1000.0
    ops += job['read']['total_ios'] + job['write']['total_ios']
    secs += rt
    cpu += (job['usr_cpu'] + job['sys_cpu']) / 100.0 * rt
    ctx += job['ctx']
print(f"{ops:.0f} {secs:.6f} {cpu:.6f} {ctx:.0f}")
EOF
}

# aioloop_fields FILE... -> "ops seconds cpu_seconds requests submits
#                             process_cpu_seconds voluntary_switches
#                             involuntary_switches"
aioloop_fields() {
    awk '{
        for (i = 1; i <= NF; i++) {
            split($i, kv, "=")
            v[kv[1]] = kv[2]
        }
        ops += v["ops"]; secs += v["seconds"]
        cpu += (v["usr"] + v["sys"]) / 100 * v["seconds"]
        proc += v["proc"] / 100 * v["seconds"]
        vcsw += v["vcsw"]; ivcsw += v["ivcsw"]
        req += v["requests"]; sub_ += v["submits"]
    } END { printf "%d %.6f %.6f %d %d %.6f %d %d\n", ops, secs, cpu, req,
            sub_, proc, vcsw, ivcsw }' "$@"
}

# Keep the test file's pages resident (see the cached mode below): a
# background python3 maps the file and mlock()s it until unlock_file.
lock_file() {
    python3 - "$file" >"$tmp/lock.out" 2>&1 <<'PY' &
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                      ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
if addr in (None, ctypes.c_void_p(-1).value):
    sys.exit("mmap: " + os.strerror(ctypes.get_errno()))
if libc.mlock(ctypes.c_void_p(addr), size) != 0:
    sys.exit("mlock: " + os.strerror(ctypes.get_errno()))
print("locked", flush=True)
signal.pause()
PY
    lock_pid=$!
    for _ in $(seq 100); do
        grep -q locked "$tmp/lock.out" 2>/dev/null && break
        kill -0 "$lock_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q locked "$tmp/lock.out" 2>/dev/null; then
        echo "# B1 cached: could not lock the file in memory" \
             "($(head -c 120 "$tmp/lock.out")): pages may be reclaimed"
        unlock_file
    fi
}

unlock_file() {
    if [ -n "$lock_pid" ]; then
        kill "$lock_pid" 2>/dev/null
        wait "$lock_pid" 2>/dev/null
        lock_pid=""
    fi
}

status=0
fig=0
goal_missed=0

figure() { # ENGINE LABEL RW BS QD MODE
    local engine=$1 label=$2 rw=$3 bs=$4 qd=$5 mode=$6
    local direct=0 r first a f aio_ok=1 fio_ok=$have_fio
    local a_ops a_secs a_cpu a_req a_sub a_proc a_vcsw a_ivcsw
    local f_ops f_secs f_cpu f_ctx bsb
    [ "$mode" = direct ] && direct=1
    fig=$((fig + 1))
    for ((r = 0; r < rounds; r++)); do
        first=$(( (fig + r) % 2 ))
        for side in $first $((1 - first)); do
            if [ "$side" = 0 ] && [ $aio_ok = 1 ]; then
                run_aioloop "$engine" "$rw" "$bs" "$qd" $direct "$tmp/a.$r" ||
                    aio_ok=0
            elif [ "$side" = 1 ] && [ $fio_ok = 1 ]; then
                run_fio "$engine" "$rw" "$bs" "$qd" $direct "$tmp/f.$r" ||
                    fio_ok=0
            fi
        done
    done
    bsb=$(numfmt --from=iec "${bs^^}")
    local line="B1 $engine $label $mode:"
    if [ $aio_ok = 1 ]; then
        read -r a_ops a_secs a_cpu a_req a_sub a_proc a_vcsw a_ivcsw \
            < <(aioloop_fields "$tmp"/a.?)
        a=$(awk -v o="$a_ops" -v s="$a_secs" 'BEGIN { printf "%.0f", o / s }')
        line="$line aioloop $a IOPS ($(awk -v o="$a_ops" -v s="$a_secs" \
            -v b="$bsb" 'BEGIN { printf "%.1f", o * b / s / 1e6 }') MB/s),"
    else
        line="$line aioloop n/a ($(cat "$tmp"/a.*.err 2>/dev/null |
            head -c 200 | tr '\n' ' ')),"
        status=1
    fi
    if [ $fio_ok = 1 ]; then
        read -r f_ops f_secs f_cpu f_ctx < <(fio_fields "$tmp"/f.?)
        f=$(awk -v o="$f_ops" -v s="$f_secs" 'BEGIN { printf "%.0f", o / s }')
        line="$line fio $f IOPS ($(awk -v o="$f_ops" -v s="$f_secs" \
            -v b="$bsb" 'BEGIN { printf "%.1f", o * b / s / 1e6 }') MB/s),"
    elif [ $have_fio = 1 ]; then
        line="$line fio n/a ($(grep -m1 -i -e error -e fio: "$tmp"/f.*.err |
            head -c 200)),"
    else
        line="$line fio n/a,"
    fi
    if [ $aio_ok = 1 ] && [ $fio_ok = 1 ] && [ "$f" != 0 ]; then
        local ratio
        ratio=$(awk -v a="$a" -v f="$f" 'BEGIN { printf "%.2f", a / f }')
        line="$line ratio $ratio"
        if [ "$engine" != threads ]; then
            if awk -v r="$ratio" 'BEGIN { exit !(r >= 0.95) }'; then
                line="$line | goal >= 0.95: met"
            else
                line="$line | goal >= 0.95: NOT met"
                goal_missed=$((goal_missed + 1))
            fi
        else
            line="$line | no goal (thread pool reported as it is)"
        fi
    else
        line="$line ratio n/a"
    fi
    echo "$line"
    if [ $aio_ok = 1 ]; then
        local cpuline
        cpuline="#   cpu/request, submitting thread: aioloop $(awk -v c="$a_cpu" -v o="$a_ops" \
            'BEGIN { printf "%.2f", o ? c / o * 1e6 : 0 }') us"
        if [ $fio_ok = 1 ]; then
            cpuline="$cpuline, fio $(awk -v c="$f_cpu" -v o="$f_ops" \
                'BEGIN { printf "%.2f", o ? c / o * 1e6 : 0 }') us"
        fi
        cpuline="$cpuline; aioloop process $(awk -v c="$a_proc" -v o="$a_ops" \
            'BEGIN { printf "%.2f", o ? c / o * 1e6 : 0 }') us"
        cpuline="$cpuline; aioloop requests/submit $(awk -v r="$a_req" \
            -v s="$a_sub" 'BEGIN { printf "%.1f", s ? r / s : 0 }')"
        # Context switches of the submitting thread per 1000 requests: a
        # side that got less CPU than the other was preempted (involuntary)
        # or blocked (voluntary).
        cpuline="$cpuline; switches/1000 requests: aioloop $(awk \
            -v v="$a_vcsw" -v i="$a_ivcsw" -v o="$a_ops" \
            'BEGIN { printf "%.1f voluntary + %.1f involuntary", v * 1000 / o, i * 1000 / o }')"
        if [ $fio_ok = 1 ]; then
            cpuline="$cpuline, fio $(awk -v c="$f_ctx" -v o="$f_ops" \
                'BEGIN { printf "%.1f", o ? c * 1000 / o : 0 }')"
        fi
        echo "$cpuline"
    fi
    rm -f "$tmp"/a.* "$tmp"/f.*
}

for mode in $modes; do
    case "$mode" in
        cached)
            # Read the file into the page cache and keep it there: the VM
            # may reclaim idle page cache on its own (DAMON pageout), which
            # turns "cached" reads into disk reads at random.  mmap+mlock
            # makes the pages unevictable while the cached figures run.
            cat "$file" >/dev/null
            lock_file
            ;;
        direct)
            if [ $direct_ok = 0 ]; then
                echo "skipped: B1 direct: O_DIRECT does not work on $dir" \
                     "($fstype: $(head -c 120 "$tmp/dd.log")); set BENCH_DIR"
                continue
            fi
            unlock_file
            # The cached writes' dirty pages must not be written back
            # during the direct figures.
            sync "$file"
            ;;
        *)
            echo "B1: unknown mode '$mode' (cached, direct)" >&2
            exit 1
            ;;
    esac
    for engine in $engines; do
        if [ "$engine" = threads ]; then
            list=$workloads_threads
        else
            list=$workloads_full
        fi
        for w in $list; do
            IFS=: read -r label rw bs qd <<<"$w"
            if [ -n "${BENCH_B1_WORKLOADS:-}" ] &&
                    [[ " $BENCH_B1_WORKLOADS " != *" $label "* ]]; then
                continue
            fi
            figure "$engine" "$label" "$rw" "$bs" "$qd" "$mode"
        done
    done
done
unlock_file
if [ $have_fio = 1 ]; then
    echo "# B1 goal (ratio >= 0.95 with io_uring and linux-aio):" \
         "$goal_missed figure(s) below it"
fi
exit $status
