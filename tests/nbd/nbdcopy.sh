#!/bin/bash
# nbdcopy a random 256 MiB image into an empty writable export and back out,
# compare checksums; then block status: nbdinfo --map of a sparse image
# matches the file's holes (SEEK_DATA/SEEK_HOLE).
#   nbdcopy.sh [PATH-TO-aioloop-nbd]
# shellcheck source=tests/nbd/lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
need nbdcopy nbdinfo

MIB=${NBD_COPY_MIB:-256}
mkrandom "$WORK/src.img" "$MIB"
mkimage "$WORK/dst.img" "${MIB}M"
mkimage "$WORK/dst2.img" "${MIB}M"
want=$(sha256sum <"$WORK/src.img")

# the sparse image: data at known offsets (1 MiB aligned, so every
# filesystem keeps the holes between them), the rest holes
mkimage "$WORK/sparse.img" 64M
for spec in 0:1 5:2 6:1 20:3 40:1 63:1; do
    off=${spec%%:*} len=${spec#*:}
    head -c $((len * 1024 * 1024)) /dev/urandom |
        dd of="$WORK/sparse.img" bs=1M seek="$off" conv=notrunc status=none
done

nbd_start --iothreads 1 \
    "id=dst,file=$WORK/dst.img,writable=on,iothread=io0" \
    "id=dst2,file=$WORK/dst2.img,writable=on,cache=none,aio=io_uring" \
    "id=sparse,file=$WORK/sparse.img,writable=off"

for n in dst dst2; do
    t0=$(date +%s.%N)
    nbdcopy --flush "$WORK/src.img" "$(nbd_uri $n)" || die "nbdcopy file -> $n failed"
    t1=$(date +%s.%N)
    nbdcopy "$(nbd_uri $n)" "$WORK/out-$n.img" || die "nbdcopy $n -> file failed"
    t2=$(date +%s.%N)
    got=$(sha256sum <"$WORK/out-$n.img")
    [ "$got" = "$want" ] || die "$n: the copy read back differs from the source"
    [ "$(sha256sum <"$WORK/$n.img")" = "$want" ] || die "$n: the export's backing file differs from the source"
    log "$n: $MIB MiB in $(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}') s," \
        "out in $(echo "$t1 $t2" | awk '{printf "%.2f", $2 - $1}') s, sha256 equal"
    rm -f "$WORK/out-$n.img"
done
# a second copy with many connections and requests in flight
nbdcopy --connections=4 --requests=32 --request-size=65536 "$(nbd_uri dst)" "$WORK/out.img" ||
    die "nbdcopy --connections=4 failed"
[ "$(sha256sum <"$WORK/out.img")" = "$want" ] || die "4-connection copy differs"
rm -f "$WORK/out.img"
nbd_alive

# block status against SEEK_DATA/SEEK_HOLE
nbdinfo --map --json "$(nbd_uri sparse)" >"$WORK/map.json" || die "nbdinfo --map failed"
"$PYTHON" - "$WORK/sparse.img" "$WORK/map.json" <<'EOF' || die "--map does not match the file's holes"
import json, os, sys

def merge(extents):
    out = []
    for a, b, hole in extents:
        if a == b:
            continue
        if out and out[-1][2] == hole and out[-1][1] == a:
            out[-1] = (out[-1][0], b, hole)
        else:
            out.append((a, b, hole))
    return out

fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
file_ext = []
pos = 0
while pos < size:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        d = size
    if d > pos:
        file_ext.append((pos, d, True))
    if d >= size:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    file_ext.append((d, h, False))
    pos = h
file_ext = merge(file_ext)

m = json.load(open(sys.argv[2]))
nbd_ext = merge([(e["offset"], e["offset"] + e["length"], bool(e["type"] & 1)) for e in m])
# holes must also read as zeroes: type 3 (hole|zero) for holes
for e in m:
    if e["type"] & 1 and not e["type"] & 2:
        sys.exit("extent %r is a hole but not zero" % e)
fmt = lambda ext: " ".join("%s%d+%d" % ("h" if h else "D", a >> 20, (b - a) >> 20) for a, b, h in ext)
print("    file: " + fmt(file_ext))
print("    nbd:  " + fmt(nbd_ext))
if nbd_ext != file_ext:
    sys.exit("nbdinfo --map differs from SEEK_DATA/SEEK_HOLE")
EOF
# nbdcopy of the sparse export keeps the holes and the data
nbdcopy "$(nbd_uri sparse)" "$WORK/sparse-out.img" || die "nbdcopy sparse -> file failed"
cmp "$WORK/sparse.img" "$WORK/sparse-out.img" || die "sparse copy differs"

nbd_alive
nbd_stop
log "PASS"
