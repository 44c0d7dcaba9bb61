#!/bin/sh
# run-spin.sh [workdir] -- verify tests/model/aio-notify.pml with Spin.
#
# For each variant of the model: spin -a, compile pan, run an exhaustive
# safety search, and check the verdict:
#   correct               0 errors, and every consumer statement reachable
#   BUG1                  a lost wake-up (assertion !(req)) is found
#   BUG2                  a lost wake-up is found
#   BUG2 + BUG2_FENCED    0 errors (documents why BUG2 fails; see the model)
#
# All work happens in a fresh directory made with mktemp -d under WORKDIR
# (default: $TMPDIR or /tmp) and removed at the end; set SPIN_KEEP=1 to keep
# it (pan logs and error trails; replay a trail there with
# `spin -t -p <flags> aio-notify.pml`).
#
# Environment: SPIN (default spin), SPIN_CC (default gcc), SPIN_KEEP.
# Exit status: 0 all as expected, 1 some variant not as expected,
# 77 spin or the C compiler is missing (skip).

set -u

here=$(cd "$(dirname "$0")" && pwd)
model="$here/aio-notify.pml"
spin=${SPIN:-spin}
cc=${SPIN_CC:-gcc}

if ! command -v "$spin" >/dev/null 2>&1; then
    echo "SKIP model: '$spin' not found (install the Debian package 'spin')"
    exit 77
fi
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "SKIP model: C compiler '$cc' not found (needed to build pan)"
    exit 77
fi
if [ ! -r "$model" ]; then
    echo "FAIL model: $model not found"
    exit 1
fi

base=${1:-${TMPDIR:-/tmp}}
mkdir -p "$base" || exit 1
work=$(mktemp -d "$base/aio-notify-spin.XXXXXX") || exit 1
if [ "${SPIN_KEEP:-0}" = 1 ]; then
    echo "# model: keeping work directory $work"
else
    trap 'rm -rf "$work"' EXIT
    trap 'rm -rf "$work"; exit 130' INT TERM
fi

# Bound each pan run; `timeout` is coreutils, use it when present.
if command -v timeout >/dev/null 2>&1; then
    limit="timeout 60"
else
    limit=
fi

status=0

# check NAME EXPECT SPIN-FLAGS...
#   EXPECT is "safe" (0 errors) or "lost" (lost wake-up must be found).
check() {
    name=$1
    expect=$2
    shift 2
    dir="$work/$name"
    if ! { mkdir -p "$dir" && cp "$model" "$dir/"; }; then
        status=1
        return
    fi

    if ! (cd "$dir" && "$spin" -a "$@" aio-notify.pml >spin.log 2>&1); then
        echo "FAIL model: $name (spin -a $* failed)"
        sed 's/^/#   /' "$dir/spin.log"
        status=1
        return
    fi
    # Safety search only, memory bounded at 256 MB (uses a few MB).
    if ! (cd "$dir" && "$cc" -O1 -w -DSAFETY -DMEMLIM=256 -o pan pan.c \
              >cc.log 2>&1); then
        echo "FAIL model: $name (compiling pan failed)"
        sed 's/^/#   /' "$dir/cc.log"
        status=1
        return
    fi
    # -m: max depth (the model needs ~150, so 10000 is exhaustive);
    # -w20: 2^20-slot hash table, ample for the ~50k states.
    (cd "$dir" && $limit ./pan -m10000 -w20 >pan.log 2>&1)
    log="$dir/pan.log"

    errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
    states=$(sed -n 's/^ *\([0-9][0-9]*\) states, stored.*/\1/p' "$log" |
             head -n 1)
    if [ -z "$errors" ] || [ -z "$states" ]; then
        echo "FAIL model: $name (pan did not finish)"
        tail -n 20 "$log" | sed 's/^/#   /'
        status=1
        return
    fi
    if grep -q 'max search depth too small' "$log"; then
        echo "FAIL model: $name (search depth exceeded; not exhaustive)"
        status=1
        return
    fi

    case $expect in
    safe)
        if [ "$errors" -ne 0 ]; then
            echo "FAIL model: $name ($errors errors, $states states)"
            grep '^pan' "$log" | sed 's/^/#   /'
            echo "#   counterexample:"
            (cd "$dir" && "$spin" -t -p -g "$@" aio-notify.pml 2>&1) |
                tail -n 60 | sed 's/^/#   /'
            status=1
        elif [ "$name" = correct ] &&
             ! grep -A1 'unreached in proctype consumer' "$log" |
               grep -q '(0 of'; then
            # Guard against a vacuous model: every consumer statement,
            # including the blocking wait's wake-up and idle branches,
            # must be reachable.
            echo "FAIL model: $name (0 errors but unreached consumer code)"
            sed -n '/unreached in proctype consumer/,/^$/p' "$log" |
                sed 's/^/#   /'
            status=1
        else
            echo "PASS model: $name (0 errors, $states states)"
        fi
        ;;
    lost)
        if [ "$errors" -ge 1 ] && grep -q 'assertion violated.*!(req)' "$log"
        then
            depth=$(sed -n 's/.*assertion violated.*(at depth \([0-9]*\)).*/\1/p' \
                    "$log" | head -n 1)
            echo "PASS model: $name lost wake-up found" \
                 "(trail depth $depth, $states states)"
        elif [ "$errors" -ge 1 ]; then
            echo "FAIL model: $name ($errors errors, but not a lost wake-up)"
            grep '^pan' "$log" | sed 's/^/#   /'
            status=1
        else
            echo "FAIL model: $name (no lost wake-up found, $states states)"
            status=1
        fi
        ;;
    esac
}

check correct      safe
check BUG1         lost -DBUG1
check BUG2         lost -DBUG2
check BUG2_FENCED  safe -DBUG2 -DBUG2_FENCED

exit $status
