#!/usr/bin/env bash
#
# scripts/deps.sh SET... : install the Debian packages that are missing.
#
# SET is one or more of: build, check, bench, demo (each includes
# build).  A package counts as present when dpkg says it is installed or,
# for a tool, when its command is on PATH.  Nothing is fetched when nothing
# is missing; otherwise "apt-get update" runs once, then "apt-get install"
# for exactly the missing packages.  Without root, the missing packages are
# listed and the script exits 1.
set -euo pipefail

build_pkgs="gcc g++ clang meson ninja-build pkg-config liburing-dev libaio-dev python3
            libjansson-dev"
# valgrind: valgrind/valgrind.h, to register coroutine stacks (optional at
# build time, wanted for checks that run under valgrind).
# GLib is optional for the library; the GSource tests need it.
# qemu-utils, libnbd-bin, fio: the NBD clients the daemon is tested with;
# libclang-rt-14-dev: libFuzzer for the NBD protocol fuzz target.
check_pkgs="spin valgrind libglib2.0-dev qemu-utils libnbd-bin fio
            libclang-rt-14-dev"
# fio: the peer of the block I/O benchmark (bench/b1-blockio.sh).
# qemu-utils (qemu-nbd), nbdkit, libnbd-bin: the NBD daemon's peers and
# clients (bench/n1-nbd.sh).
bench_pkgs="libuv1-dev libev-dev libevent-dev libglib2.0-dev gnuplot-nox fio
            qemu-utils nbdkit libnbd-bin"

# The command a tool package provides (empty for libraries: dpkg only).
pkg_command() {
    case "$1" in
        gcc | g++ | clang | meson | pkg-config | python3 | spin | valgrind | fio | nbdkit) echo "$1" ;;
        qemu-utils) echo qemu-nbd ;;
        libnbd-bin) echo nbdcopy ;;
        ninja-build) echo ninja ;;
        gnuplot-nox) echo gnuplot ;;
        *) echo "" ;;
    esac
}

pkg_present() {
    local cmd
    if dpkg-query -W -f='${Status}' "$1" 2>/dev/null |
            grep -q 'install ok installed'; then
        return 0
    fi
    cmd=$(pkg_command "$1")
    [ -n "$cmd" ] && command -v "$cmd" >/dev/null 2>&1
}

if [ $# -eq 0 ]; then
    set -- build
fi
want="$build_pkgs"
for set in "$@"; do
    case "$set" in
        build) ;;
        check) want="$want $check_pkgs" ;;
        bench) want="$want $bench_pkgs" ;;
        demo) want="$want $check_pkgs" ;;
        *) echo "deps.sh: unknown package set '$set' (build, check, bench, demo)" >&2
           exit 2 ;;
    esac
done

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: dpkg-query not found: this script knows Debian only;" \
         "install by hand: $want" >&2
    for p in $want; do
        c=$(pkg_command "$p")
        if [ -n "$c" ] && ! command -v "$c" >/dev/null 2>&1; then
            exit 1
        fi
    done
    exit 0
fi

missing=""
for p in $want; do
    pkg_present "$p" || missing="$missing $p"
done
missing="${missing# }"
if [ -z "$missing" ]; then
    echo "deps: all packages present ($*)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<MSG
deps: missing Debian packages: $missing
deps: installing them needs root.  Run, as root:
    apt-get update && apt-get install -y $missing
or re-run this make target as root.
MSG
    exit 1
fi

echo "deps: installing missing packages: $missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # word splitting of the package list is wanted
apt-get install -y -q --no-install-recommends $missing
