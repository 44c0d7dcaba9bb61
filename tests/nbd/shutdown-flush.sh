#!/bin/bash
# The final flushes of aioloop-nbd's exports go to the main loop's thread
# pool (tools/nbd/export.c):
#  - SIGTERM flushes the writable exports together, not one after the
#    other: with images on different disks, or one slow disk, one
#    fdatasync() after another takes the sum of them, past a service
#    manager's stop timeout;
#  - export-del's flush does not stop the main loop: other exports in it
#    are served meanwhile.
#
# An LD_PRELOAD shim (flush-shim.c) watches the daemon's fdatasync()
# calls: it logs each one, can hold them, and counts how many are inside
# at once, each waiting (5 s at most) for the number it is told to expect.
#   shutdown-flush.sh [PATH-TO-aioloop-nbd] PATH-TO-flush-shim.so
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
SHIM=${2:-}
# absolute before nbd_init changes to the work directory
[ -n "$SHIM" ] && [ -f "$SHIM" ] || die "usage: $0 DAEMON FLUSH-SHIM.so (got '$SHIM')"
SHIM=$(cd "$(dirname "$SHIM")" && pwd)/$(basename "$SHIM")
nbd_init "$@"
nbd_is_aioloop || skip "several exports in one daemon, the monitor: aioloop-nbd only"

EXPORTS=(e0 e1 e2 e3 ro del)
for e in "${EXPORTS[@]}"; do mkimage "$WORK/$e.img" $((4 * 1024 * 1024)); done
export FLUSH_SHIM_DIR=$WORK/shim
mkdir -p "$FLUSH_SHIM_DIR"
LOG=$FLUSH_SHIM_DIR/log
: >"$LOG"
# A sanitizer runtime must come first in the library list; the shim does
# not need that check.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0
LD_PRELOAD=$SHIM${LD_PRELOAD:+ $LD_PRELOAD} nbd_start --iothreads 2 --monitor \
    "id=e0,file=$WORK/e0.img,writable=on,iothread=io0" \
    "id=e1,file=$WORK/e1.img,writable=on,iothread=io0,cache=none" \
    "id=e2,file=$WORK/e2.img,writable=on,iothread=io1" \
    "id=e3,file=$WORK/e3.img,writable=on" \
    "id=ro,file=$WORK/ro.img" \
    "id=del,file=$WORK/del.img,writable=on"
nbd_alive "at start"
[ ! -s "$LOG" ] || die "flushes before any request: $(cat "$LOG")"

# wait_log PATTERN COUNT WHAT: until COUNT lines of the log match
wait_log() {
    for ((i = 0; i < 400; i++)); do
        [ "$(grep -c "$1" "$LOG" || true)" -lt "$2" ] || return 0
        sleep 0.05
    done
    die "$3: log: $(tr '\n' ' ' <"$LOG")"
}

# export-del: its flush is held while a client reads from e3, which the
# main loop serves.
echo 1 >"$FLUSH_SHIM_DIR/expect"
touch "$FLUSH_SHIM_DIR/hold"
nbd_bg qmp export-del '{"id": "del"}'
del_pid=$BG_PID
wait_log '^enter$' 1 "export-del made no flush"
"$PYTHON" -c '
import os, sys
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
c = n.Client(sys.argv[1], timeout=60).connect("e3")
c.read(0, 4096)
c.disconnect()' "$(nbd_sock e3)" || die "reading e3 during export-del's flush failed"
grep -q '^concurrent' "$LOG" &&
    die "a read from an export in the main loop waited for export-del's flush to end"
log "a read from e3 was served during export-del's flush"
rm -f "$FLUSH_SHIM_DIR/hold"
wait "$del_pid" || die "export-del failed"
nbd_forget "$del_pid"
[ "$(cat "$LOG")" = "$(printf 'enter\nconcurrent 1')" ] ||
    die "export-del: expected one flush, log: $(tr '\n' ' ' <"$LOG")"

# SIGTERM: the four writable exports left, flushed together.
: >"$LOG"
echo 4 >"$FLUSH_SHIM_DIR/expect"
nbd_stop
lines=$(grep -c '^concurrent' "$LOG" || true)
[ "$lines" = 4 ] ||
    die "$lines final flushes, expected 4 (the writable exports): $(tr '\n' ' ' <"$LOG")"
log "SIGTERM flushes: $(grep '^concurrent' "$LOG" | tr '\n' ' ')"
[ "$(grep -c '^concurrent 4$' "$LOG" || true)" = 4 ] ||
    die "the final flushes were not all in flight together"
log "PASS"
