#!/bin/bash
# Malformed and hostile input (malformed.py): truncated handshakes, bad
# magics and flags, unknown options and commands, lengths out of range,
# writes to a read-only export, clients vanishing mid-payload.  After each
# case a fresh nbdinfo works; the daemon still runs at the end and exits 0
# on SIGTERM.  MALFORMED_CASES=a,b runs only these cases.
#   malformed.sh [PATH-TO-aioloop-nbd]
# shellcheck source=tests/nbd/lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
need nbdinfo

mkrandom "$WORK/rw.img" 16
mkrandom "$WORK/ro.img" 1
nbd_start --iothreads 1 \
    "id=rw,file=$WORK/rw.img,writable=on,iothread=io0" \
    "id=ro,file=$WORK/ro.img,writable=off"

strict=()
if nbd_is_aioloop; then strict=(--strict); fi
"$PYTHON" "$NBD_LIB_DIR/malformed.py" "${strict[@]}" --pid "$D_PID" \
    "$(nbd_sock rw)" "$(nbd_sock ro)" || die "malformed input cases failed"
nbd_alive "after the malformed input"
nbdinfo "$(nbd_uri rw)" >/dev/null || die "nbdinfo at the end failed"
nbd_stop
log "PASS"
