#!/usr/bin/env bash
#
# scripts/bench.sh [BUILD_DIR]: release build with -Dbench=true, then run
# bench/run-all.sh BUILD_DIR (with BUILD_DIR also in the environment) if the
# benchmarks exist.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
dir=${1:-build-bench}

if [ ! -f bench/meson.build ]; then
    echo "bench: bench/meson.build does not exist yet: no benchmarks to build" >&2
    exit 1
fi
if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" --buildtype=release -Dwerror=false -Dbench=true
else
    meson setup "$dir" --buildtype=release -Dwerror=false -Dbench=true
fi
ninja -C "$dir" -j "${JOBS:-2}"

if [ -x bench/run-all.sh ] || [ -f bench/run-all.sh ]; then
    BUILD_DIR="$ROOT/$dir" exec bash bench/run-all.sh "$ROOT/$dir"
fi
echo "bench: built in $dir; bench/run-all.sh does not exist yet, nothing run"
