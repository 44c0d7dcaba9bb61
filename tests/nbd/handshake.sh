#!/bin/bash
# Handshake: what clients see of the exports (nbdinfo, qemu-img info), over
# UNIX and TCP.
#   handshake.sh [PATH-TO-aioloop-nbd]
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
need nbdinfo qemu-img

RW_SIZE=$((64 * 1024 * 1024))
RO_SIZE=$((3 * 1024 * 1024 + 512))
mkimage "$WORK/rw.img" $RW_SIZE
mkimage "$WORK/ro.img" $RO_SIZE
# some data in rw.img at 1 MiB so --map has something to show
head -c 65536 /dev/urandom | dd of="$WORK/rw.img" bs=65536 seek=16 conv=notrunc status=none

nbd_start --iothreads 1 --tcp \
    "id=rw,file=$WORK/rw.img,writable=on,description=scratch-disk,iothread=io0,multi-conn=on" \
    "id=ro-id,name=ro,file=$WORK/ro.img,writable=off,description=golden-image,multi-conn=off"

# nbdinfo --json URI -> the JSON of the one export
info() { nbdinfo --json "$1" >"$WORK/info.json" || die "nbdinfo --json $1 failed"; }
field() { json_get "j['exports'][0]['$1']" <"$WORK/info.json"; }
expect_field() {
    local v
    v=$(field "$1")
    [ "$v" = "$2" ] || die "$3: $1 is $v, expected $2"
}

# --- the writable export ---------------------------------------------------
info "$(nbd_uri rw)"
expect_field export-size $RW_SIZE rw
expect_field is_read_only false rw
expect_field can_flush true rw
expect_field can_fua true rw
expect_field can_trim true rw
expect_field can_zero true rw
expect_field export-name rw rw
if nbd_is_aioloop; then
    expect_field can_multi_conn true "rw (multi-conn=on)"
    expect_field can_cache true rw
    expect_field can_fast_zero true rw
    expect_field description scratch-disk rw
fi
json_get "j['exports'][0].get('contexts', [])" <"$WORK/info.json" >"$WORK/ctx"
grep -q '"base:allocation"' "$WORK/ctx" || die "rw: no base:allocation meta context: $(cat "$WORK/ctx")"
log "rw: $(json_get "{k: v for k, v in j['exports'][0].items() if k.startswith(('can_', 'is_', 'export-size'))}" <"$WORK/info.json")"

# the --can / --is exit codes (0 true, 2 false)
for c in flush trim zero fua write; do
    nbdinfo --can "$c" "$(nbd_uri rw)" || die "rw: nbdinfo --can $c says no"
done
rc=0; nbdinfo --is read-only "$(nbd_uri rw)" || rc=$?
[ $rc = 2 ] || die "rw: nbdinfo --is read-only exited $rc, expected 2 (false)"
for c in cache fast-zero multi-conn; do
    rc=0; nbdinfo --can "$c" "$(nbd_uri rw)" || rc=$?
    log "rw: --can $c: $([ $rc = 0 ] && echo yes || echo "no ($rc)")"
done

# --- the read-only export --------------------------------------------------
info "$(nbd_uri ro)"
expect_field export-size $RO_SIZE ro
expect_field is_read_only true ro
expect_field can_trim false ro
expect_field can_zero false ro
nbdinfo --is read-only "$(nbd_uri ro)" || die "ro: nbdinfo --is read-only says no"
rc=0; nbdinfo --can write "$(nbd_uri ro)" || rc=$?
[ $rc = 2 ] || die "ro: nbdinfo --can write exited $rc, expected 2 (false)"
if nbd_is_aioloop; then
    expect_field can_multi_conn false "ro (multi-conn=off)"
    expect_field description golden-image ro
    expect_field can_flush true ro
    expect_field can_cache true ro
fi

# --- unknown export: nbdinfo fails cleanly ---------------------------------
if nbdinfo "nbd+unix:///nosuch?socket=$D_SOCK" >/dev/null 2>"$WORK/err"; then
    die "nbdinfo of an unknown export succeeded"
fi
grep -qi "unknown\|not found\|no such\|export" "$WORK/err" ||
    die "unexpected error for an unknown export: $(cat "$WORK/err")"

# --- --list ---------------------------------------------------------------
if nbd_is_aioloop; then
    nbdinfo --list --json "nbd+unix://?socket=$D_SOCK" >"$WORK/list.json" ||
        die "nbdinfo --list failed"
    names=$(json_get "sorted(e['export-name'] for e in j['exports'])" <"$WORK/list.json")
    [ "$names" = '["ro", "rw"]' ] || die "--list: exports $names, expected [\"ro\", \"rw\"]"
    descs=$(json_get "sorted(e.get('description', '') for e in j['exports'])" <"$WORK/list.json")
    [ "$descs" = '["golden-image", "scratch-disk"]' ] ||
        die "--list: descriptions $descs"
    nbdinfo --list "nbd+unix://?socket=$D_SOCK" | sed 's/^/    /'
else
    nbdinfo --list --json "nbd+unix://?socket=$D_SOCK" >"$WORK/list.json" ||
        die "nbdinfo --list failed"
fi

# --- --map / content --------------------------------------------------------
nbdinfo --map --json "$(nbd_uri rw)" >"$WORK/map.json" || die "nbdinfo --map failed"
"$PYTHON" - "$WORK/map.json" $RW_SIZE <<'EOF' || die "rw: bad --map"
import json, sys
m = json.load(open(sys.argv[1]))
size = int(sys.argv[2])
pos = 0
data = []
for e in m:
    assert e["offset"] == pos, "extent at %d, expected %d" % (e["offset"], pos)
    pos += e["length"]
    if not e["type"] & 1:
        data.append((e["offset"], e["offset"] + e["length"]))
assert pos == size, "extents cover %d bytes of %d" % (pos, size)
# the 64 KiB written at 1 MiB must be inside data extents
need = (1 << 20, (1 << 20) + 65536)
assert any(a <= need[0] and need[1] <= b for a, b in data) or \
    sum(min(b, need[1]) - max(a, need[0]) for a, b in data if a < need[1] and b > need[0]) == 65536, \
    "the data at 1 MiB is not reported as data: %r" % data
print("    map: %d extents, data %r" % (len(m), data))
EOF
nbdinfo --map=base:allocation "$(nbd_uri rw)" >/dev/null || die "nbdinfo --map=base:allocation failed"

# --- qemu-img info, UNIX and TCP -------------------------------------------
for uri in "$(nbd_uri rw)" "nbd://127.0.0.1:$D_PORT/rw"; do
    qemu-img info --output=json "$uri" >"$WORK/qi.json" || die "qemu-img info $uri failed"
    vs=$(json_get "j['virtual-size']" <"$WORK/qi.json")
    [ "$vs" = $RW_SIZE ] || die "qemu-img info $uri: virtual-size $vs"
    log "qemu-img info $uri: virtual-size $vs"
done
info "nbd://127.0.0.1:$D_PORT/rw"
expect_field export-size $RW_SIZE "rw over TCP"
if nbd_is_aioloop; then
    info "nbd://127.0.0.1:$D_PORT/ro"
    expect_field is_read_only true "ro over TCP"
fi

nbd_alive
nbd_stop
log "PASS"
