#!/bin/bash
# export-del (mode safe) while a client in the handshake waits for the
# socket in the middle of answering an option about that export: LIST,
# GO, EXPORT_NAME and SET_META_CONTEXT (delete-handshake.py).  The daemon
# must not touch the freed export (ASan), must not attach the client to
# it, must keep running and exit 0 on SIGTERM.
#   delete-handshake.sh [PATH-TO-aioloop-nbd]
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
nbd_is_aioloop || skip "$NBD_BACKEND has no monitor"

mkimage "$WORK/v.img" 1M
mkimage "$WORK/rw.img" 1M
nbd_start --monitor "id=victim,file=$WORK/v.img" "id=v2,file=$WORK/v.img" \
    "id=rw,file=$WORK/rw.img,writable=on"
"$PYTHON" "$NBD_LIB_DIR/delete-handshake.py" "$D_SOCK" "$D_MON" "$WORK/v.img" ||
    die "export deleted during the handshake"
nbd_alive "after the deletions"
nbd_stop
log "PASS"
