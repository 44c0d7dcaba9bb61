#!/bin/bash
# SIGTERM flushes the writable exports together, not one after the other:
# with N images on different disks, or one slow disk, one fdatasync() after
# another takes the sum of them, past a service manager's stop timeout.
#
# An LD_PRELOAD shim (flush-shim.c) counts how many of the daemon's
# fdatasync() calls are inside at once; each waits (5 s at most) for the
# others before it goes on.  4 writable exports (two on one IOThread, one
# on another, one in the main loop) and a read-only one: SIGTERM must
# give exactly 4 flushes, all 4 in flight together, and exit 0.
#   shutdown-flush.sh [PATH-TO-aioloop-nbd] PATH-TO-flush-shim.so
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
SHIM=${2:-}
# absolute before nbd_init changes to the work directory
[ -n "$SHIM" ] && [ -f "$SHIM" ] || die "usage: $0 DAEMON FLUSH-SHIM.so (got '$SHIM')"
SHIM=$(cd "$(dirname "$SHIM")" && pwd)/$(basename "$SHIM")
nbd_init "$@"
nbd_is_aioloop || skip "several exports in one daemon: aioloop-nbd only"

EXPORTS=(e0 e1 e2 e3 ro)
for e in "${EXPORTS[@]}"; do mkimage "$WORK/$e.img" $((4 * 1024 * 1024)); done
export FLUSH_SHIM_LOG=$WORK/flush.log FLUSH_SHIM_EXPECT=4
# A sanitizer runtime must come first in the library list; the shim does
# not need that check.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0
LD_PRELOAD=$SHIM${LD_PRELOAD:+ $LD_PRELOAD} nbd_start --iothreads 2 \
    "id=e0,file=$WORK/e0.img,writable=on,iothread=io0" \
    "id=e1,file=$WORK/e1.img,writable=on,iothread=io0,cache=none" \
    "id=e2,file=$WORK/e2.img,writable=on,iothread=io1" \
    "id=e3,file=$WORK/e3.img,writable=on" \
    "id=ro,file=$WORK/ro.img"
nbd_alive "before SIGTERM"
[ ! -s "$FLUSH_SHIM_LOG" ] || die "flushes before SIGTERM: $(cat "$FLUSH_SHIM_LOG")"
nbd_stop

lines=$(wc -l <"$FLUSH_SHIM_LOG")
[ "$lines" = 4 ] ||
    die "$lines final flushes, expected 4 (the writable exports): $(cat "$FLUSH_SHIM_LOG")"
together=$(grep -c '^concurrent 4$' "$FLUSH_SHIM_LOG" || true)
log "flushes: $(tr '\n' ' ' <"$FLUSH_SHIM_LOG")"
[ "$together" = 4 ] ||
    die "the final flushes were not all in flight together: $(tr '\n' ' ' <"$FLUSH_SHIM_LOG")"
log "PASS"
