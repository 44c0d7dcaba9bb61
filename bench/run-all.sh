#!/bin/bash
# Run every aioloop benchmark (W1-W5 next to their peers, C1-C4 coroutines,
# B1 block I/O next to fio) and plot W2.
#
#   bench/run-all.sh [BUILD_DIR]
#
# BUILD_DIR (default: $BENCH_BUILD_DIR or /tmp/aioloop-bench-build; `make
# bench` passes build-bench/) is configured with -Dbench=true
# -Dbuildtype=release if it is not configured yet, else switched to
# -Dbench=true.  BENCH_QUICK=1 runs 10x fewer iterations (a
# smoke test of a few seconds per program).  Output goes to stdout and to
# bench/results/results-<date>.txt (also copied to results/latest.txt),
# with results/w2-poll-window.{dat,png}.  B1 (b1-blockio.sh) writes a test
# file in $BENCH_DIR (default /var/tmp) and needs fio; BENCH_SKIP_B1=1 leaves
# it out.  N1 (n1-nbd.sh: aioloop-nbd next to qemu-nbd and nbdkit, through
# fio's nbd engine and nbdcopy) needs tools/nbd/aioloop-nbd (jansson), fio
# and nbdcopy, and an image in $BENCH_DIR; BENCH_SKIP_N1=1 leaves it out.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-${BENCH_BUILD_DIR:-/tmp/aioloop-bench-build}}
results="$here/results"
programs="w1-bh w2-pingpong w3-timers w4-fds w5-threadpool coroutine-perf co-hop"

if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$src" -Dbench=true -Dbuildtype=release >/dev/null || {
        echo "run-all.sh: meson setup failed" >&2
        exit 1
    }
else
    meson configure "$build" -Dbench=true >/dev/null || exit 1
fi
buildtype=$(meson configure "$build" 2>/dev/null | awk '$1 == "buildtype" { print $2; exit }')
targets=""
for p in $programs b1-blockio; do targets="$targets bench/$p"; done
# shellcheck disable=SC2086
ninja -C "$build" $targets >/dev/null || {
    echo "run-all.sh: build failed (ninja -C $build$targets)" >&2
    exit 1
}

mkdir -p "$results"
stamp=$(date +%Y%m%d-%H%M%S)
out="$results/results-$stamp.txt"
export BENCH_RESULTS_DIR="$results"

{
    echo "# aioloop bench $(date -Is)  quick=${BENCH_QUICK:-0}  library buildtype=${buildtype:-?} (benches -O2)"
    echo "# $(uname -srm), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "# git $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo none)," \
         "load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# Absolute times on a shared VM drift; compare the ratios within one run."
} | tee "$out"

status=0
start=$(date +%s)
for p in $programs; do
    echo "" | tee -a "$out"
    t0=$(date +%s)
    timeout 280 "$build/bench/$p" 2>&1 | tee -a "$out"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "# $p FAILED (exit $rc)" | tee -a "$out"
        status=1
    fi
    echo "# $p took $(( $(date +%s) - t0 )) s" | tee -a "$out"
done

if [ "${BENCH_SKIP_B1:-0}" != 1 ]; then
    echo "" | tee -a "$out"
    t0=$(date +%s)
    timeout 400 bash "$here/b1-blockio.sh" "$build" 2>&1 | tee -a "$out"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "# b1-blockio FAILED (exit $rc)" | tee -a "$out"
        status=1
    fi
    echo "# b1-blockio took $(( $(date +%s) - t0 )) s" | tee -a "$out"
fi

if [ "${BENCH_SKIP_N1:-0}" != 1 ]; then
    echo "" | tee -a "$out"
    t0=$(date +%s)
    if ninja -C "$build" tools/nbd/aioloop-nbd >/dev/null 2>&1; then
        timeout 1500 bash "$here/n1-nbd.sh" "$build" 2>&1 | tee -a "$out"
        rc=$?
        if [ $rc -ne 0 ]; then
            echo "# n1-nbd FAILED (exit $rc)" | tee -a "$out"
            status=1
        fi
    else
        echo "skipped: N1: tools/nbd/aioloop-nbd does not build in $build (jansson missing?)" | tee -a "$out"
    fi
    echo "# n1-nbd took $(( $(date +%s) - t0 )) s" | tee -a "$out"
fi

dat="$results/w2-poll-window.dat"
png="$results/w2-poll-window.png"
if [ -s "$dat" ] && command -v gnuplot >/dev/null; then
    term=png
    if echo 'set terminal pngcairo' | gnuplot >/dev/null 2>&1; then
        term=pngcairo
    fi
    if gnuplot -e "datafile='$dat'; outfile='$png'; term='$term'" \
            "$here/w2-poll-window.gp" 2>>"$out"; then
        echo "# W2 plot: $png ($term)" | tee -a "$out"
    else
        echo "# W2 plot: gnuplot failed" | tee -a "$out"
    fi
else
    echo "# W2 plot: skipped (no data file or no gnuplot)" | tee -a "$out"
fi
echo "# total $(( $(date +%s) - start )) s; results in $out" | tee -a "$out"
cp "$out" "$results/latest.txt"
exit $status
