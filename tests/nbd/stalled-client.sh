#!/bin/bash
# Clients that stop must not hold the daemon forever: one stalled in the
# middle of a write payload (it sent the header and half of the data, then
# nothing), and one that pipelined 16 reads of 64 KiB and reads no reply
# (1 MiB, more than the socket holds, so the server blocks sending):
# 1. (aioloop-nbd) export-set-iothread returns within the limit with both
#    on the export, and the export serves new clients afterwards;
# 2. (aioloop-nbd) export-del hard returns within the limit with a client
#    that does not read;
# 3. SIGTERM: the daemon must still exit 0 promptly (qemu-nbd exits at once and closes the connection), the
# half-sent write is never acknowledged, and a write acknowledged just before
# is on disk.  Neither client closes by itself (no socket timeout while it
# waits), so a daemon that waits for them never exits.
#   stalled-client.sh [PATH-TO-aioloop-nbd]
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
nbd_init "$@"

LIMIT=${NBD_STALL_LIMIT:-20}
need nbdinfo
mkimage "$WORK/d.img" 64M
mkimage "$WORK/e.img" 4M
nbd_start --iothreads 1 --monitor "id=d,file=$WORK/d.img,writable=on,iothread=io0" \
    "id=e,file=$WORK/e.img,iothread=io0"

# stall: a client that sends half of a 1 MiB write, then waits (no timeout)
stall() {
    "$PYTHON" -c '
import os, sys, time
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
c = n.Client(sys.argv[1], timeout=None).connect("d")
c.send_request(n.CMD_WRITE, 2 << 20, 1 << 20, data=b"\xcd" * (1 << 19))
open(sys.argv[2], "w").close()
c.wait_closed()' "$(nbd_sock d)" "$1" &
    BG_PID=$!
    NBD_PIDS+=("$BG_PID")
    for ((i = 0; i < 200; i++)); do [ -e "$1" ] && return; sleep 0.05; done
    die "the stalling client did not connect"
}

# noread EXPORT READY: a client that pipelines 16 reads of 64 KiB and
# never reads a reply (it waits until killed)
noread() {
    "$PYTHON" -c '
import os, sys, time
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
c = n.Client(sys.argv[1], timeout=None).connect(sys.argv[2])
for i in range(16):
    c.send_request(n.CMD_READ, i << 16, 1 << 16)
open(sys.argv[3], "w").close()
time.sleep(3600)' "$(nbd_sock "$1")" "$1" "$2" &
    BG_PID=$!
    NBD_PIDS+=("$BG_PID")
    for ((i = 0; i < 200; i++)); do [ -e "$2" ] && return; sleep 0.05; done
    die "the client that does not read did not connect"
}

if nbd_is_aioloop; then
    stall "$WORK/stall1"
    noread d "$WORK/noread1"
    sleep 0.5
    t0=$(date +%s)
    timeout "$LIMIT" "$PYTHON" "$NBD_LIB_DIR/qmp.py" "$D_MON" export-set-iothread \
        '{"id": "d", "iothread": null}' >/dev/null ||
        die "export-set-iothread did not return within $LIMIT s with a client stalled mid-request and one not reading"
    log "export-set-iothread returned after $(( $(date +%s) - t0 )) s with stalled clients"
    timeout "$LIMIT" nbdinfo --size "$(nbd_uri d)" >/dev/null ||
        die "no new client served after the move"

    noread e "$WORK/noread2"
    sleep 0.5
    t0=$(date +%s)
    timeout "$LIMIT" "$PYTHON" "$NBD_LIB_DIR/qmp.py" "$D_MON" export-del \
        '{"id": "e", "mode": "hard"}' >/dev/null ||
        die "export-del hard did not return within $LIMIT s with a client not reading"
    log "export-del hard returned after $(( $(date +%s) - t0 )) s with a client not reading"
fi

"$PYTHON" - "$(nbd_sock d)" "$WORK/stalled" <<'EOF' >"$WORK/client.out" 2>&1 &
import os, socket, sys
sys.path.insert(0, os.environ["NBD_LIB_DIR"])
import nbdclient as n
c = n.Client(sys.argv[1], timeout=None).connect("d")
assert c.write(1 << 20, b"\x5a" * 65536) == 0       # acknowledged
c.send_request(n.CMD_WRITE, 0, 1 << 20, data=b"\xab" * (1 << 19))
open(sys.argv[2], "w").close()
data = c.wait_closed()                               # no timeout
if data:
    # only an error reply to the half-sent write is acceptable
    magic, err = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
    print("server sent %d bytes before closing: magic %x error %d" % (len(data), magic, err))
    sys.exit(0 if magic == n.SIMPLE_REPLY_MAGIC and err != 0 else 1)
print("closed by the server")
EOF
client=$!
NBD_PIDS+=("$client")
for ((i = 0; i < 200; i++)); do [ -e "$WORK/stalled" ] && break; sleep 0.05; done
[ -e "$WORK/stalled" ] || die "the client did not get its first write acknowledged"
noread d "$WORK/noread3"
sleep 0.5
kill -TERM "$D_PID"
for ((i = 0; i < LIMIT * 10; i++)); do
    kill -0 "$D_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$D_PID" 2>/dev/null; then
    die "still running $LIMIT s after SIGTERM: it waits for a client stalled in the middle of a request or one not reading"
fi
rc=0
wait "$D_PID" || rc=$?
nbd_forget "$D_PID"
NBD_SERVER_PIDS=()
[ $rc = 0 ] || die "exit status $rc after SIGTERM"
wait "$client" || die "the client saw: $(cat "$WORK/client.out")"
nbd_forget "$client"
log "client: $(cat "$WORK/client.out")"
cmp -s -n $((4 << 20)) "$WORK/d.img" /dev/zero -i 2097152:0 || die "a half-sent write reached the file"
cmp -s -n 65536 "$WORK/d.img" /dev/zero || die "the half-sent write reached the file"
cmp -s -i $((1 << 20)):0 -n 65536 "$WORK/d.img" <(head -c 65536 /dev/zero | tr '\0' 'Z') ||
    die "the acknowledged write is not in the file"
log "PASS"
