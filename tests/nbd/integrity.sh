#!/bin/bash
# Data integrity: qemu-io pattern writes + verified reads, FUA, write-zeroes,
# discard, flush on a writeback export (in an IOThread) and an O_DIRECT one
# (main loop); the backing files are compared with a model afterwards.  A
# read-only export refuses writes and keeps its data.
#   integrity.sh [PATH-TO-aioloop-nbd]
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
need qemu-io

SIZE=$((48 * 1024 * 1024))
for n in wb direct; do
    mkimage "$WORK/$n.img" $SIZE
    # 8 MiB of data at 16 MiB, holes around it
    head -c $((8 * 1024 * 1024)) /dev/urandom |
        dd of="$WORK/$n.img" bs=1M seek=16 conv=notrunc status=none
done
mkrandom "$WORK/ro.img" 4
sha_ro=$(sha256sum <"$WORK/ro.img")

nbd_start --iothreads 1 \
    "id=wb,file=$WORK/wb.img,writable=on,iothread=io0,cache=writeback" \
    "id=direct,file=$WORK/direct.img,writable=on,cache=none,aio=io_uring" \
    "id=ro,file=$WORK/ro.img,writable=off"

seed=${NBD_TEST_SEED:-$RANDOM}
log "seed $seed (NBD_TEST_SEED reproduces a run)"
for n in wb direct; do
    log "export $n"
    "$PYTHON" "$NBD_LIB_DIR/integrity.py" run "$(nbd_uri $n)" "$WORK/$n.img" \
        "$WORK/$n.model" "$seed" || die "$n: I/O through qemu-io failed"
    nbd_alive "after the I/O on $n"
done

# out of range and EPERM at the server itself (qemu-io checks them locally)
"$PYTHON" - "$(nbd_sock ro)" "$(nbd_sock wb)" <<'EOF' || die "raw requests failed"
import sys
import os
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
ro = n.Client(sys.argv[1]).connect("ro")
err = ro.write(0, b"x" * 512)
# the spec says SHOULD be EPERM; qemu-nbd 7.2 answers EINVAL
ok = (n.EPERM,) if os.environ["NBD_BACKEND"] == "aioloop" else (n.EPERM, n.EINVAL)
assert err in ok, "write to the read-only export: error %d, expected EPERM" % err
err, _ = ro.read(ro.size - 512, 1024)
assert err == n.EINVAL, "read across the end: error %d, expected EINVAL" % err
err, data = ro.read(0, 4096)
assert err == 0 and len(data) == 4096, "read after errors failed: %d" % err
ro.disconnect()
wb = n.Client(sys.argv[2]).connect("wb")
err = wb.write(wb.size, b"y")
assert err in (n.EINVAL, n.ENOSPC), "write past the end: error %d" % err
err, _ = wb.read(wb.size + 4096, 512)
assert err == n.EINVAL, "read past the end: error %d, expected EINVAL" % err
assert wb.flush() == 0
wb.disconnect()
print("    raw client: EPERM on the read-only export, EINVAL past the end")
EOF

# qemu-io on the read-only export: writes fail (at open or at the write)
for cmd in "write -P 0x55 0 4096" "write -z 0 4096" "discard 0 4096"; do
    if qemu-io -f raw "$(nbd_uri ro)" -c "$cmd" >"$WORK/ro.out" 2>&1; then
        grep -qi "error\|fail\|denied\|read-only" "$WORK/ro.out" ||
            die "qemu-io '$cmd' on the read-only export succeeded: $(cat "$WORK/ro.out")"
    fi
done
qemu-io -r -f raw "$(nbd_uri ro)" -c "read 0 4M" >/dev/null || die "reading the read-only export failed"

nbd_alive
nbd_stop
[ "$(sha256sum <"$WORK/ro.img")" = "$sha_ro" ] || die "the read-only image changed"
for n in wb direct; do
    "$PYTHON" "$NBD_LIB_DIR/integrity.py" check "$WORK/$n.img" "$WORK/$n.model" ||
        die "$n: the backing file does not match what was written"
done
log "PASS"
