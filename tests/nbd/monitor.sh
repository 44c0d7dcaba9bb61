#!/bin/bash
# The control socket: query-exports, query-iothreads, export-add (file and
# errors, an unaligned cache=none image), export-del safe (refused with a
# client) and hard (the client is cut off), export-set-iothread errors,
# unknown and mistyped arguments, malformed lines, a client that does not
# read its replies, quit (exit 0).
#   monitor.sh [PATH-TO-aioloop-nbd]
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"
need nbdinfo qemu-io
nbd_is_aioloop || skip "$NBD_BACKEND has no monitor"

mkimage "$WORK/a.img" 16M
mkimage "$WORK/b.img" 8M
nbd_start --iothreads 2 --monitor "id=a,file=$WORK/a.img,writable=on,iothread=io0"

# expect_error CMD [ARGS]: the command must fail (error reply), monitor survives
expect_error() {
    if qmp "$@" >"$WORK/qmp.out" 2>&1; then
        die "monitor command $* succeeded: $(cat "$WORK/qmp.out")"
    fi
    grep -q "qmp.py: " "$WORK/qmp.out" || die "monitor command $*: $(cat "$WORK/qmp.out")"
}

exports() { qmp query-exports | json_get "sorted(e['id'] for e in j)"; }

[ "$(exports)" = '["a"]' ] || die "query-exports: $(exports)"
qmp query-exports | json_get "j[0]" >"$WORK/a.json"
for k in '"name": "a"' '"writable": true' '"iothread": "io0"' '"clients": 0' "\"file\": \"$WORK/a.img\""; do
    grep -qF "$k" "$WORK/a.json" || die "query-exports lacks $k: $(cat "$WORK/a.json")"
done
n=$(qmp query-iothreads | json_get "sorted(t['id'] for t in j)")
[ "$n" = '["io0", "io1"]' ] || die "query-iothreads: $n"
qmp query-iothreads | json_get "j[0]" >"$WORK/io.json"
for k in thread-id poll-max-ns poll-grow poll-shrink aio-max-batch iterations bh-runs poll-hits poll-misses blocked-ns; do
    grep -q "\"$k\"" "$WORK/io.json" || die "query-iothreads lacks $k: $(cat "$WORK/io.json")"
done

# export-add: a read-only export of b.img in io1, with a name
qmp export-add "{\"id\": \"b\", \"file\": \"$WORK/b.img\", \"name\": \"bee\", \"writable\": false, \"iothread\": \"io1\"}" >/dev/null ||
    die "export-add b failed"
[ "$(exports)" = '["a", "b"]' ] || die "after export-add: $(exports)"
nbdinfo --json "nbd+unix:///bee?socket=$D_SOCK" | json_get "[j['exports'][0]['export-size'], j['exports'][0]['is_read_only']]" >"$WORK/b.info" ||
    die "nbdinfo of the added export failed"
[ "$(cat "$WORK/b.info")" = '[8388608, true]' ] || die "added export: $(cat "$WORK/b.info")"
# errors: duplicate id, unknown iothread, missing file, no file
expect_error export-add "{\"id\": \"b\", \"file\": \"$WORK/b.img\"}"
expect_error export-add "{\"id\": \"c\", \"file\": \"$WORK/b.img\", \"iothread\": \"nosuch\"}"
expect_error export-add "{\"id\": \"c\", \"file\": \"$WORK/does-not-exist.img\"}"
expect_error export-add '{"id": "c"}'
expect_error export-set-iothread '{"id": "nosuch", "iothread": null}'
expect_error export-set-iothread '{"id": "a", "iothread": "nosuch"}'
expect_error export-del '{"id": "nosuch"}'
expect_error no-such-command
# cache=none (O_DIRECT, minimum block size 4096) on an image whose size is
# not a multiple of 4096: refused, saying why (clients could not reach its
# tail); an aligned one is accepted
truncate -s $((1024 * 1024 + 1000)) "$WORK/odd.img"
truncate -s $((1024 * 1024)) "$WORK/even.img"
if qmp export-add "{\"id\": \"even\", \"file\": \"$WORK/even.img\", \"cache\": \"none\"}" >/dev/null 2>&1; then
    qmp export-del '{"id": "even"}' >/dev/null || die "export-del even failed"
    expect_error export-add "{\"id\": \"odd\", \"file\": \"$WORK/odd.img\", \"cache\": \"none\"}"
    grep -q "multiple of 4096 bytes.* 1049576 bytes" "$WORK/qmp.out" ||
        die "export-add of an unaligned O_DIRECT image: $(cat "$WORK/qmp.out")"
else
    log "no O_DIRECT in $WORK: unaligned cache=none not checked"
fi
# arguments: unknown keys and wrong types are errors in every command, never
# a default (a misspelt iothread moved the export to the main loop, a
# non-string mode deleted in safe mode)
"$PYTHON" - "$D_MON" <<'EOF' || die "commands with bad arguments"
import os, sys
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
from qmp import QMP
q = QMP(sys.argv[1], timeout=10)
for cmd, args in (
        ("export-set-iothread", {"id": "a", "iothred": "io1"}),
        ("export-set-iothread", {"id": "a"}),
        ("export-set-iothread", {"id": "a", "iothread": 1}),
        ("export-set-iothread", {"id": ["a"], "iothread": None}),
        ("export-del", {"id": "b", "mode": 1}),
        ("export-del", {"id": "b", "mode": True}),
        ("export-del", {"id": "b", "mode": ["hard"]}),
        ("export-del", {"id": "b", "mdoe": "hard"}),
        ("export-del", {"id": "b", "mode": None}),
        ("export-del", {"id": 7}),
        ("query-exports", {"bogus": 1}),
        ("query-iothreads", {"bogus": 1}),
        ("qmp_capabilities", {"enable": ["oob"]})):
    r = q.execute(cmd, args)
    assert "error" in r, "%s %r answered %r" % (cmd, args, r)
assert "return" in q.execute("qmp_capabilities", {"enable": []})
a = [e for e in q.cmd("query-exports") if e["id"] == "a"][0]
assert a["iothread"] == "io0", "a command with a bad argument moved a: %r" % a
print("    13 commands with bad arguments: an error each")
EOF
[ "$(exports)" = '["a", "b"]' ] || die "a failed command changed the exports: $(exports)"

# malformed lines: an error reply each, the connection keeps working
"$PYTHON" - "$D_MON" <<'EOF' || die "malformed monitor input"
import json, os, socket, sys
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
from qmp import QMP
q = QMP(sys.argv[1], timeout=10)
for line in (b"[1, 2]\n", b'{"execute": 42}\n', b'{"arguments": {}}\n',
             b'{"execute": "query-exports", "arguments": "x"}\n'):
    q.f.write(line)
    q.f.flush()
    r = q._read()
    assert "error" in r, "%r answered %r" % (line, r)
assert q.cmd("query-exports")
q.close()
# text that is not JSON: an error reply (the stream cannot be resynchronised:
# objects need no newline, so closing afterwards is fine)
q = QMP(sys.argv[1], timeout=10)
q.f.write(b"{not json\n")
q.f.flush()
r = q._read()
assert "error" in r, "invalid JSON answered %r" % r
q.close()
assert QMP(sys.argv[1], timeout=10).cmd("query-exports")
print("    malformed monitor lines: an error each, the connection still works")
EOF

# export-del safe is refused while a client is connected; hard cuts it off
"$PYTHON" - "$D_SOCK" "$WORK/client.ready" "$WORK/client.go" <<'EOF' >"$WORK/client.out" 2>&1 &
import os, sys, time
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
c = n.Client(sys.argv[1], timeout=30).connect("bee")
err, _ = c.read(0, 4096)
assert err == 0
open(sys.argv[2], "w").close()
for _ in range(600):       # until export-del hard is done
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.05)
try:
    err, _ = c.read(0, 4096)
    print("read after export-del hard: error %d" % err)
    sys.exit(0 if err else 1)
except (n.Closed, OSError) as e:
    print("disconnected: %s" % e)
EOF
client=$!
NBD_PIDS+=("$client")
for ((i = 0; i < 100; i++)); do [ -e "$WORK/client.ready" ] && break; sleep 0.05; done
[ -e "$WORK/client.ready" ] || die "the client did not connect"
[ "$(qmp query-exports | json_get "[e['clients'] for e in j if e['id'] == 'b'][0]")" = 1 ] ||
    die "query-exports does not count the client of b"
expect_error export-del '{"id": "b", "mode": "safe"}'
[ "$(exports)" = '["a", "b"]' ] || die "export-del safe removed b with a client"
qmp export-del '{"id": "b", "mode": "hard"}' >/dev/null || die "export-del hard failed"
[ "$(exports)" = '["a"]' ] || die "after export-del hard: $(exports)"
touch "$WORK/client.go"
wait "$client" || die "the client of b got data after export-del hard: $(cat "$WORK/client.out")"
nbd_forget "$client"
log "client of the deleted export: $(cat "$WORK/client.out")"
if nbdinfo "nbd+unix:///bee?socket=$D_SOCK" >/dev/null 2>&1; then
    die "the deleted export is still served"
fi
# export-del safe without clients, then re-add under the same id
qmp export-add "{\"id\": \"b\", \"file\": \"$WORK/b.img\", \"writable\": true}" >/dev/null ||
    die "re-adding b failed"
qemu-io -f raw "nbd+unix:///b?socket=$D_SOCK" -c "write -P 7 0 64k" >/dev/null || die "writing to the re-added b failed"
qmp export-del '{"id": "b", "mode": "safe"}' >/dev/null || die "export-del safe without clients failed"
[ "$(exports)" = '["a"]' ] || die "after export-del safe: $(exports)"

# A control client that sends commands and does not read the replies must
# not stall the main loop: a read from an export there is answered at once
# meanwhile, another control connection works, and every reply arrives, in
# order, once the client reads.
qmp export-add "{\"id\": \"m\", \"file\": \"$WORK/b.img\"}" >/dev/null ||
    die "export-add m failed"
"$PYTHON" - "$D_MON" "$D_SOCK" <<'EOF' || die "a control client not reading its replies"
import json, os, socket, sys, time
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
from qmp import QMP
N = 3000
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
f = s.makefile("rb")
f.readline()                                  # the greeting
s.sendall(b"".join(json.dumps({"execute": "query-iothreads", "id": i}).encode()
                   for i in range(N)))
time.sleep(0.5)
t0 = time.time()
c = n.Client(sys.argv[2], timeout=20).connect("m")
err, _ = c.read(0, 4096)
c.disconnect()
t1 = time.time()
QMP(sys.argv[1], timeout=20).cmd("query-exports")
t2 = time.time()
print("    with %d replies unread: NBD read %.2f s, other control client %.2f s"
      % (N, t1 - t0, t2 - t1))
assert err == 0, "read error %d" % err
assert t1 - t0 < 2 and t2 - t1 < 2, "the main loop stalled"
for i in range(N):
    line = f.readline()
    assert line, "connection closed after %d of %d replies" % (i, N)
    r = json.loads(line)
    assert r.get("id") == i and "return" in r, "reply %d: %r" % (i, r)
print("    then all %d replies arrived in order" % N)
EOF
qmp export-del '{"id": "m"}' >/dev/null || die "export-del m failed"

# quit: clean exit 0
qmp quit >/dev/null || true
for ((i = 0; i < NBD_STOP_TIMEOUT * 10; i++)); do
    kill -0 "$D_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$D_PID" 2>/dev/null && die "still running after quit"
rc=0
wait "$D_PID" || rc=$?
nbd_forget "$D_PID"
NBD_SERVER_PIDS=()
[ $rc = 0 ] || die "exit status $rc after quit"
cmp -n 65536 "$WORK/b.img" <(head -c 65536 /dev/zero | tr '\0' '\7') || die "b.img lacks the write"
log "PASS"
