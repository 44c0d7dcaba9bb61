#!/bin/sh
#
# check-headers.sh INCLUDE_DIR
#
# Every public header must stand on its own: a file that includes only that
# header compiles as C with gcc and clang (-std=gnu11, warnings as errors)
# and as C++ with g++ (-fsyntax-only), and including it twice is harmless
# (include guard).  The umbrella header aioloop.h must include every other
# public header.  POSIX sh: meson runs this with "sh".
#
# Exit status: 0 all good, 1 a header failed, 77 skipped (no compiler).

set -u

if [ $# -ne 1 ] || [ ! -d "$1/aioloop" ]; then
    echo "usage: $0 INCLUDE_DIR   (the directory that contains aioloop/)" >&2
    exit 1
fi
incdir=$1

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

cflags="-std=gnu11 -Wall -Wextra -Werror -Wstrict-prototypes -Wundef -Wshadow"
cxxflags="-Wall -Wextra -Werror"

compilers=""
for c in gcc clang g++; do
    if command -v "$c" >/dev/null 2>&1; then
        compilers="$compilers $c"
    else
        echo "SKIP $c: not installed"
    fi
done
if [ -z "$compilers" ]; then
    echo "SKIP: no compiler found (gcc, clang, g++)"
    exit 77
fi

fails=0
count=0
for h in "$incdir"/aioloop/*.h; do
    [ -f "$h" ] || continue
    name=aioloop/$(basename "$h")
    count=$((count + 1))
    printf '#include <%s>\n#include <%s>\n' "$name" "$name" >"$tmp/t.c"
    cp "$tmp/t.c" "$tmp/t.cc"
    for c in $compilers; do
        case $c in
            g++) cmd="$c $cxxflags -fsyntax-only -I$incdir $tmp/t.cc" ;;
            *) cmd="$c $cflags -c -o $tmp/t.o -I$incdir $tmp/t.c" ;;
        esac
        # shellcheck disable=SC2086 # $cmd is a word list
        if $cmd >"$tmp/log" 2>&1; then
            echo "PASS $name ($c)"
        else
            echo "FAIL $name ($c): $cmd"
            sed 's/^/    /' "$tmp/log"
            fails=$((fails + 1))
        fi
    done
done
if [ "$count" -eq 0 ]; then
    echo "FAIL: no headers in $incdir/aioloop"
    exit 1
fi

# The umbrella header must pull in every other public header.
umbrella="$incdir/aioloop/aioloop.h"
if [ -f "$umbrella" ]; then
    for h in "$incdir"/aioloop/*.h; do
        b=$(basename "$h")
        [ "$b" = aioloop.h ] && continue
        if grep -Eq "^[[:space:]]*#[[:space:]]*include[[:space:]]*<aioloop/$b>" \
                "$umbrella"; then
            :
        else
            echo "FAIL aioloop/aioloop.h does not include <aioloop/$b>"
            fails=$((fails + 1))
        fi
    done
else
    echo "FAIL: no umbrella header aioloop/aioloop.h"
    fails=$((fails + 1))
fi

if [ "$fails" -ne 0 ]; then
    echo "check-headers: $fails failure(s)"
    exit 1
fi
echo "check-headers: $count headers OK with:$compilers"
exit 0
