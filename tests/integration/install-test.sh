#!/usr/bin/env bash
#
# install-test.sh SRC_DIR
#
# Build aioloop from SRC_DIR in a fresh temporary build directory, install
# it into a temporary prefix, check that everything a user needs is there
# (shared library with its soname link, static library, every public
# header, aioloop.pc), then build examples/hello.c the way a user would:
# with "pkg-config --cflags --libs aioloop" against the shared library, and
# with "pkg-config --static" against libaioloop.a.  Both programs must run.
#
# Prints one PASS/FAIL line per check; exits 0 if all passed, 1 if one
# failed, 77 if a required tool is missing.  KEEP_TMP=1 keeps the
# temporary directory for inspection.
set -uo pipefail

if [ $# -ne 1 ] || [ ! -f "$1/meson.build" ]; then
    echo "usage: $0 SRC_DIR   (the aioloop source tree)" >&2
    exit 1
fi
src=$(cd "$1" && pwd)

for tool in meson ninja pkg-config cc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not installed"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aioloop-install-test.XXXXXX") || exit 1
if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "install-test: keeping $tmp"
else
    trap 'rm -rf "$tmp"' EXIT
fi
build=$tmp/build
prefix=$tmp/prefix
fails=0

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# run_logged DESCRIPTION CMD...: run CMD, print its output only on failure.
run_logged() {
    local what=$1
    shift
    if "$@" >"$tmp/log" 2>&1; then
        pass "$what"
        return 0
    fi
    fail "$what"
    echo "    command: $*"
    tail -n 40 "$tmp/log" | sed 's/^/    /'
    return 1
}

finish() {
    if [ "$fails" -eq 0 ]; then
        echo "install-test: all checks passed"
        exit 0
    fi
    echo "install-test: $fails check(s) failed"
    exit 1
}

# The tests are built too (the tree always builds them), so leave out the
# slow ones to keep this quick.
run_logged "meson setup --prefix=$prefix" \
    meson setup "$build" "$src" --prefix="$prefix" --libdir=lib \
        -Dslow_tests=false || finish
run_logged "ninja build" ninja -C "$build" -j "${JOBS:-2}" || finish
run_logged "ninja install" ninja -C "$build" install || finish

# --- what must be installed ----------------------------------------------
libdir=$prefix/lib
if [ -f "$libdir/libaioloop.so" ] || [ -L "$libdir/libaioloop.so" ]; then
    pass "lib/libaioloop.so exists"
else
    fail "lib/libaioloop.so missing"
fi
soname=$(objdump -p "$libdir/libaioloop.so" 2>/dev/null |
         awk '$1 == "SONAME" { print $2 }')
if [ -z "$soname" ]; then
    fail "lib/libaioloop.so has no SONAME"
elif [ -L "$libdir/$soname" ] && [ -e "$libdir/$soname" ]; then
    pass "soname link lib/$soname -> $(readlink "$libdir/$soname")"
else
    fail "soname link lib/$soname missing (SONAME is $soname)"
fi
if [ -f "$libdir/libaioloop.a" ]; then
    pass "lib/libaioloop.a exists"
else
    fail "lib/libaioloop.a missing"
fi
n=0
for h in "$src"/include/aioloop/*.h; do
    b=$(basename "$h")
    n=$((n + 1))
    if [ -f "$prefix/include/aioloop/$b" ]; then
        :
    else
        fail "include/aioloop/$b not installed"
    fi
done
if [ -f "$prefix/include/aioloop/aioloop.h" ]; then
    pass "include/aioloop/aioloop.h exists ($n public headers checked)"
else
    fail "include/aioloop/aioloop.h missing"
fi
pc=$libdir/pkgconfig/aioloop.pc
if [ -f "$pc" ]; then
    pass "lib/pkgconfig/aioloop.pc exists"
else
    fail "lib/pkgconfig/aioloop.pc missing"
    finish
fi

# --- build a program the way a user does ---------------------------------
export PKG_CONFIG_PATH=$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
hello=$src/examples/hello.c
if ! cflags=$(pkg-config --cflags aioloop 2>"$tmp/pc.err") ||
        ! libs=$(pkg-config --libs aioloop 2>>"$tmp/pc.err") ||
        ! slibs=$(pkg-config --static --libs aioloop 2>>"$tmp/pc.err"); then
    fail "pkg-config aioloop"
    sed 's/^/    /' "$tmp/pc.err"
    finish
fi
pass "pkg-config aioloop: cflags '$cflags', libs '$libs'"
case " $cflags " in
    *" -I$prefix/include "* | *" -I$prefix/include/aioloop "*) ;;
    *) fail "pkg-config --cflags does not point into the prefix: '$cflags'" ;;
esac

# shellcheck disable=SC2086 # pkg-config output is a word list
if run_logged "cc hello.c \$(pkg-config --cflags --libs aioloop)" \
        cc -std=gnu11 -Wall -Wextra -Werror -o "$tmp/hello" "$hello" \
        $cflags $libs -Wl,-rpath,"$libdir"; then
    # Not grep -q: it would quit early and ldd would die of SIGPIPE (pipefail).
    if ldd "$tmp/hello" | grep "$libdir/libaioloop.so" >/dev/null; then
        pass "hello is linked against the installed libaioloop.so"
    else
        fail "hello does not use $libdir/libaioloop.so:"
        ldd "$tmp/hello" | sed 's/^/    /'
    fi
    run_logged "hello (shared) runs" "$tmp/hello"
fi

# Static: the same flags, with -laioloop replaced by the archive itself so
# that the shared library next to it cannot be picked.
static_libs=""
for w in $slibs; do
    if [ "$w" = -laioloop ]; then
        w=$libdir/libaioloop.a
    fi
    static_libs="$static_libs $w"
done
# shellcheck disable=SC2086 # pkg-config output is a word list
if run_logged "cc hello.c libaioloop.a \$(pkg-config --static --libs aioloop)" \
        cc -std=gnu11 -Wall -Wextra -Werror -o "$tmp/hello-static" "$hello" \
        $cflags $static_libs; then
    if readelf -d "$tmp/hello-static" | grep 'NEEDED.*libaioloop' >/dev/null; then
        fail "hello-static still needs libaioloop.so"
    else
        pass "hello-static does not need libaioloop.so"
    fi
    run_logged "hello (static) runs" "$tmp/hello-static"
fi

finish
