#!/usr/bin/env bash
#
# scripts/check.sh: the whole "make check" sequence and its summary.
#
#   1. build/       default (debugoptimized) build: every suite
#   2. build-asan/  -Db_sanitize=address,undefined: all but 'model', 'headers'
#   3. build-tsan/  -Db_sanitize=thread: all but 'model', 'headers'
#   3b. build-ucontext/  -Dcoroutine_backend=ucontext: the 'coroutine'
#      suite again with the portable coroutine backend (both backends must
#      pass; the rest of the library does not depend on it)
#   (opt-in) build-aarch64/  cross-built for aarch64, 'coroutine' suite under
#      qemu-user: CHECK_FLAVOURS="... aarch64"
#   4. tests/integration/install-test.sh (install into a temporary prefix and
#      build examples/hello.c against it, shared and static)
#   5. scripts/fuzz.sh: aioloop-nbd's libFuzzer targets, built with clang in
#      build-fuzz/ and run from their committed corpus for
#      CHECK_FUZZ_SECONDS each (default 20; 0 skips the step)
#
# Each meson run's summary (Ok / Expected Fail / Fail / Unexpected Pass /
# Skipped / Timeout) is added up, a build that fails counts as one failed
# test, and the install test counts as one test.  The last line printed is
#
#   N passed, N failed, N skipped
#
# and the exit status is non-zero if anything failed or nothing passed.
#
# Environment: CHECK_FLAVOURS (default "default asan tsan ucontext") selects the
# builds, CHECK_INSTALL_TEST=0 skips step 4, CHECK_FUZZ_SECONDS=0 skips
# step 5, MESON_TEST_ARGS adds arguments
# to every "meson test" (e.g. "--suite unit").
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

JOBS=${JOBS:-2}
FLAVOURS=${CHECK_FLAVOURS:-default asan tsan ucontext}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

passed=0
failed=0
skipped=0
failures=()
start_all=$(date +%s)

note() { printf '\n==== %s\n' "$*"; }

# Record a failure that is not a meson test (a build, the install test).
fail_step() {
    failed=$((failed + 1))
    failures+=("$1")
}

# configure DIR ARGS...: set up DIR, or apply ARGS to an existing DIR.
# (meson configure, not "setup --reconfigure": meson 1.0 drops -Dc_args
# given to --reconfigure.)  A directory meson cannot use is wiped.
configure() {
    local dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        if [ $# -eq 0 ] || meson configure "$dir" "$@" >"$dir/setup.log" 2>&1
        then
            return 0
        fi
        cat "$dir/setup.log"
        echo "check: re-creating $dir"
        meson setup --wipe "$dir" "$@" >"$dir/setup.log" 2>&1 ||
            { cat "$dir/setup.log"; return 1; }
    else
        mkdir -p "$dir"
        meson setup "$dir" "$@" >"$dir/setup.log" 2>&1 ||
            { cat "$dir/setup.log"; return 1; }
    fi
}

# sanitizer_wrapper FLAG: print the wrapper the tests of a -fsanitize=FLAG
# build need, if any.  gcc-12's sanitizer runtimes abort ("unexpected memory
# mapping", "Shadow memory range interleaves ...") on kernels whose mmap
# randomisation is higher than they were built for; running without address
# randomisation (setarch -R, a per-process personality flag, no system
# setting changed) avoids that.  A tiny threaded program decides.
sanitizer_wrapper() {
    local flag=$1 tmp out
    tmp=$(mktemp -d) || return 0
    cat >"$tmp/probe.c" <<'PROBE'
#include <pthread.h>
#include <stdlib.h>
static int counter;
static void *worker(void *arg)
{
    (void)arg;
    __atomic_fetch_add(&counter, 1, __ATOMIC_SEQ_CST);
    return malloc(16);
}
int main(void)
{
    pthread_t t;
    void *p;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, &p);
    free(p);
    return counter == 1 ? 0 : 1;
}
PROBE
    if ! cc -fsanitize="$flag" -g -pthread "$tmp/probe.c" -o "$tmp/probe" \
            >"$tmp/cc.log" 2>&1; then
        echo "check: cannot build a -fsanitize=$flag probe:" >&2
        cat "$tmp/cc.log" >&2
        rm -rf "$tmp"
        return 0
    fi
    for _ in 1 2 3 4 5; do
        if ! out=$("$tmp/probe" 2>&1); then
            if setarch "$(uname -m)" -R true 2>/dev/null &&
                    setarch "$(uname -m)" -R "$tmp/probe" >/dev/null 2>&1; then
                echo "check: -fsanitize=$flag binaries fail here" \
                     "(${out%%$'\n'*}); running its tests under" \
                     "'setarch $(uname -m) -R'" >&2
                echo "setarch $(uname -m) -R"
            fi
            break
        fi
    done
    rm -rf "$tmp"
}

# gcc warns (-Wtsan) that TSan does not instrument atomic_thread_fence();
# with -Werror that stops the build.  The fences stay correct, TSan just
# cannot see them (QEMU builds its TSan flavour with -Wno-tsan too).
tsan_c_args() {
    if echo 'int x;' | "${CC:-cc}" -Werror -Wno-tsan -fsanitize=thread \
            -x c -c -o /dev/null - >/dev/null 2>&1; then
        echo "-Dc_args=-Wno-tsan"
    fi
}

# Add the counts of one meson test summary (from a saved log) to the totals.
add_summary() {
    local log=$1 name=$2 ok xfail fail upass skip timeout
    get() {
        awk -v key="$1" 'index($0, key ":") == 1 { n = $NF } END { print n + 0 }' "$log"
    }
    ok=$(get "Ok")
    xfail=$(get "Expected Fail")
    fail=$(get "Fail")
    upass=$(get "Unexpected Pass")
    skip=$(get "Skipped")
    timeout=$(get "Timeout")
    passed=$((passed + ok + xfail))
    failed=$((failed + fail + upass + timeout))
    skipped=$((skipped + skip))
    if [ $((fail + upass + timeout)) -gt 0 ]; then
        local line listed=0
        # The test lines of meson's "Summary of Failures" section.
        while IFS= read -r line; do
            failures+=("$name: $line")
            listed=$((listed + 1))
        done < <(awk '/^Summary of Failures:/ { on = 1; next }
                      /^Ok:/ { on = 0 }
                      on && NF { sub(/^ *[0-9]+\/[0-9]+ +/, ""); print }' "$log")
        if [ "$listed" -eq 0 ]; then
            failures+=("$name: $((fail + upass + timeout)) test(s) failed")
        fi
    fi
    echo "check: $name: $((ok + xfail)) passed, $((fail + upass + timeout))" \
         "failed, $skip skipped"
}

# run_flavour NAME DIR "SETUP ARGS" "TEST ARGS" [WRAPPER]
run_flavour() {
    local name=$1 dir=$2 setup_args=$3 test_args=$4 wrapper=${5:-}
    local t0 rc log
    t0=$(date +%s)

    note "$name: configure and build ($dir)"
    # shellcheck disable=SC2086 # the argument strings are word lists
    if ! configure "$dir" $setup_args; then
        fail_step "$name: meson setup failed"
        return
    fi
    if ! ninja -C "$dir" -j "$JOBS"; then
        fail_step "$name: build failed"
        return
    fi

    note "$name: meson test ($dir)"
    log="$dir/check-meson-test.log"
    local cmd=(meson test -C "$dir" --no-rebuild --num-processes "$JOBS"
               --print-errorlogs)
    # shellcheck disable=SC2206 # the argument strings are word lists
    cmd+=($test_args ${MESON_TEST_ARGS:-})
    if [ -n "$wrapper" ]; then
        cmd+=(--wrapper "$wrapper")
    fi
    "${cmd[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    if ! grep -q '^Ok:' "$log"; then
        fail_step "$name: meson test produced no summary (exit $rc)"
        return
    fi
    add_summary "$log" "$name"
    if [ "$rc" -ne 0 ] && ! grep -Eq '^(Fail|Timeout|Unexpected Pass): +[1-9]' "$log"; then
        fail_step "$name: meson test exited $rc"
    fi
    echo "check: $name took $(($(date +%s) - t0)) s"
}

for flavour in $FLAVOURS; do
    case "$flavour" in
        default)
            run_flavour default build "" ""
            ;;
        asan)
            run_flavour asan build-asan \
                "-Db_sanitize=address,undefined -Db_lundef=false" \
                "--no-suite model --no-suite headers" \
                "$(sanitizer_wrapper address)"
            ;;
        tsan)
            run_flavour tsan build-tsan \
                "-Db_sanitize=thread -Db_lundef=false $(tsan_c_args)" \
                "--no-suite model --no-suite headers" \
                "$(sanitizer_wrapper thread)"
            ;;
        ucontext)
            run_flavour ucontext build-ucontext \
                "-Dcoroutine_backend=ucontext" "--suite coroutine"
            ;;
        aarch64)
            # Opt-in (CHECK_FLAVOURS=aarch64): the aarch64 coroutine switch,
            # cross-built and run under qemu-user.
            if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 &&
                    command -v qemu-aarch64 >/dev/null 2>&1; then
                run_flavour aarch64 build-aarch64 \
                    "--cross-file scripts/cross/aarch64-linux-gnu.ini" \
                    "--suite coroutine"
            else
                echo "check: aarch64: skipped (needs gcc-aarch64-linux-gnu," \
                     "libc6-dev-arm64-cross and qemu-user)"
                skipped=$((skipped + 1))
            fi
            ;;
        *)
            fail_step "unknown flavour '$flavour' in CHECK_FLAVOURS"
            ;;
    esac
done

if [ "${CHECK_INSTALL_TEST:-1}" != 0 ]; then
    note "install test"
    t0=$(date +%s)
    bash tests/integration/install-test.sh "$ROOT"
    rc=$?
    case $rc in
        0) passed=$((passed + 1)) ;;
        77) skipped=$((skipped + 1)) ;;
        *) fail_step "install test (exit $rc)" ;;
    esac
    echo "check: install test took $(($(date +%s) - t0)) s"
fi

FUZZ_SECONDS=${CHECK_FUZZ_SECONDS:-20}
if [ "$FUZZ_SECONDS" != 0 ]; then
    note "fuzz (${FUZZ_SECONDS} s per target)"
    t0=$(date +%s)
    JOBS=$JOBS bash scripts/fuzz.sh "$FUZZ_SECONDS"
    rc=$?
    case $rc in
        0) passed=$((passed + 1)) ;;
        77) skipped=$((skipped + 1)) ;;
        *) fail_step "fuzz (exit $rc; reproducers in build-fuzz/fuzz-artifacts)" ;;
    esac
    echo "check: fuzz took $(($(date +%s) - t0)) s"
fi

note "summary ($(($(date +%s) - start_all)) s)"
if [ ${#failures[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failures[@]}"
fi
if [ "$passed" -eq 0 ]; then
    echo "check: no test passed: treating the run as failed"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
