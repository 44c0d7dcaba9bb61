#!/usr/bin/env bash
#
# scripts/install.sh PREFIX [BUILD_DIR]: release build configured for
# PREFIX (libraries in PREFIX/lib), then "ninja install".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
prefix=${1:?usage: install.sh PREFIX [BUILD_DIR]}
dir=${2:-build-install}

case "$prefix" in
    /*) ;;
    *) echo "install: PREFIX must be an absolute path, got '$prefix'" >&2
       exit 2 ;;
esac
# No -Werror here: a newer compiler's new warning must not stop an install.
args=(--prefix="$prefix" --libdir=lib --buildtype=release -Dwerror=false)
if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "${args[@]}"
else
    meson setup "$dir" "${args[@]}"
fi
ninja -C "$dir" -j "${JOBS:-2}"
ninja -C "$dir" install
echo "install: done; use PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs aioloop"
