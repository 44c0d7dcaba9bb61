#!/usr/bin/env bash
#
# scripts/fuzz.sh [SECONDS]: build aioloop-nbd's libFuzzer targets with
# clang into build-fuzz/ and run each for SECONDS (default 30) from the
# committed seed corpus (tests/fuzz/corpus/<target>/, copied to a temporary
# directory: the repository is not modified).
#
# Prints one line per target:
#
#   fuzz: fuzz-nbd-proto: ok (1234567 runs, 30 s, cov 321, corpus 45)
#   fuzz: fuzz-nbd-session: CRASH (reproducer build-fuzz/fuzz-artifacts/...)
#
# and exits 0 if no target crashed, 1 if one did (or the build failed), 77
# (skip) if clang/libFuzzer or jansson (needed by aioloop-nbd) is missing.
# A crash leaves its reproducer in build-fuzz/fuzz-artifacts/ and the whole
# log in build-fuzz/fuzz-logs/<target>.log; replay it with
#
#   build-fuzz/tests/fuzz/<target> <reproducer>
#
# Environment: FUZZ_CC (default clang), FUZZ_BUILD_DIR (default
# build-fuzz), JOBS (default 2), FUZZ_TARGETS (default: every target
# built), FUZZ_ARGS (extra libFuzzer arguments, e.g. "-jobs=2").
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

SECONDS_EACH=${1:-30}
CC_FUZZ=${FUZZ_CC:-clang}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-2}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

case $SECONDS_EACH in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

skip() { echo "fuzz: skipped: $*"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aioloop-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# clang with libFuzzer and the sanitizers, or skip.
command -v "$CC_FUZZ" >/dev/null 2>&1 || skip "no $CC_FUZZ"
cat >"$tmp/probe.c" <<'PROBE'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return size > 1 && data[0] == 0xff ? 0 : 0;
}
PROBE
"$CC_FUZZ" -fsanitize=fuzzer,address,undefined "$tmp/probe.c" \
    -o "$tmp/probe" >"$tmp/probe.log" 2>&1 ||
    skip "$CC_FUZZ cannot link -fsanitize=fuzzer,address,undefined" \
         "($(head -n1 "$tmp/probe.log"))"
pkg-config --exists jansson 2>/dev/null ||
    skip "no jansson (aioloop-nbd is not built without it)"

# Sanitizer runtimes built for a lower mmap randomisation than the kernel's
# fail at start-up; without address randomisation they work (check.sh does
# the same for the gcc sanitizer builds).
wrapper=()
if ! "$tmp/probe" -runs=1 >"$tmp/probe-run.log" 2>&1; then
    if setarch "$(uname -m)" -R "$tmp/probe" -runs=1 >/dev/null 2>&1; then
        wrapper=(setarch "$(uname -m)" -R)
    else
        echo "fuzz: a libFuzzer probe does not run:" >&2
        cat "$tmp/probe-run.log" >&2
        skip "libFuzzer binaries do not run here"
    fi
fi

# Configure: clang, ASan+UBSan, every object coverage-instrumented.
setup_args=(-Dfuzz=true -Dnbd=enabled -Db_sanitize=address,undefined
            -Db_lundef=false -Dwerror=true -Dslow_tests=false
            -Dbench=false -Dc_args=-fsanitize=fuzzer-no-link)
if [ -f "$BUILD/build.ninja" ]; then
    meson configure "$BUILD" "${setup_args[@]}" >"$tmp/setup.log" 2>&1 || {
        cat "$tmp/setup.log"
        echo "fuzz: re-creating $BUILD"
        CC=$CC_FUZZ meson setup --wipe "$BUILD" "${setup_args[@]}" \
            >"$tmp/setup.log" 2>&1
    } || { cat "$tmp/setup.log"; echo "fuzz: FAIL (meson setup)"; exit 1; }
else
    CC=$CC_FUZZ meson setup "$BUILD" "${setup_args[@]}" \
        >"$tmp/setup.log" 2>&1 ||
        { cat "$tmp/setup.log"; echo "fuzz: FAIL (meson setup)"; exit 1; }
fi

# The targets this tree has (after meson re-runs, if the tree changed).
ninja -C "$BUILD" build.ninja >"$tmp/regen.log" 2>&1 ||
    { cat "$tmp/regen.log"; echo "fuzz: FAIL (meson regenerate)"; exit 1; }
all_targets=$(ninja -C "$BUILD" -t targets all 2>/dev/null |
              sed -n 's|^tests/fuzz/\(fuzz-[a-z0-9-]*\): .*|\1|p' | sort -u)
targets=${FUZZ_TARGETS:-$all_targets}
[ -n "$targets" ] || skip "no fuzz target in $BUILD"
ninja_targets=()
for t in $targets; do
    ninja_targets+=("tests/fuzz/$t")
done
if ! ninja -C "$BUILD" -j "$JOBS" "${ninja_targets[@]}" >"$tmp/build.log" 2>&1
then
    tail -n 40 "$tmp/build.log"
    echo "fuzz: FAIL (build)"
    exit 1
fi

mkdir -p "$BUILD/fuzz-artifacts" "$BUILD/fuzz-logs"
crashed=0
for t in $targets; do
    exe=$BUILD/tests/fuzz/$t
    kind=${t#fuzz-nbd-}
    corpus=$tmp/corpus-$kind
    mkdir -p "$corpus"
    if [ -d "tests/fuzz/corpus/$kind" ]; then
        cp -r "tests/fuzz/corpus/$kind/." "$corpus/"
    fi
    log=$BUILD/fuzz-logs/$t.log
    dict=()
    if [ -f "tests/fuzz/$t.dict" ]; then
        dict=(-dict="tests/fuzz/$t.dict")
    fi
    # shellcheck disable=SC2086 # FUZZ_ARGS is a word list
    "${wrapper[@]}" "$exe" -max_total_time="$SECONDS_EACH" -timeout=60 \
        -rss_limit_mb=4096 -error_exitcode=1 -timeout_exitcode=1 \
        -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$ROOT/$BUILD/fuzz-artifacts/$t-" \
        ${FUZZ_ARGS:-} "$corpus" >"$log" 2>&1
    rc=$?
    runs=$(awk '/^stat::number_of_executed_units/ { print $NF }' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
    units=$(find "$corpus" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        echo "fuzz: $t: ok (${runs:-?} runs, $SECONDS_EACH s," \
             "cov ${cov:-?}, corpus $units)"
    else
        crashed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" |
                   tail -n1)
        echo "----- $t: last lines of $log"
        grep -v '^#[0-9]' "$log" | tail -n 60
        echo "-----"
        echo "fuzz: $t: CRASH (exit $rc; reproducer ${artifact:-none}," \
             "log $log)"
    fi
done
exit $crashed
