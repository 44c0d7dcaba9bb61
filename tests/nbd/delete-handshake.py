#!/usr/bin/env python3
"""An export deleted while a client in the handshake is answered about it.

    delete-handshake.py NBD-SOCKET MONITOR-SOCKET IMAGE

The server must have exports "victim", "v2" (in this order, first) and
"rw".  Each case makes the server block in the middle of an option about
"victim": the client sends unknown options (one short ERR_UNSUP reply
each) until the server's socket buffer is full, then the option, and
reads nothing.  The first reply to the option is then waiting for the
socket, and export-del (mode safe: the client is not attached) runs
meanwhile.  Then the client reads; the server must neither use the freed
export (ASan) nor serve the client from it:

  list         NBD_OPT_LIST (victim and v2 deleted): a complete list
  go           NBD_OPT_GO: the final reply is an error, not NBD_REP_ACK
  export-name  NBD_OPT_EXPORT_NAME: the connection is closed
  meta         NBD_OPT_SET_META_CONTEXT, then GO: no crash

How many unknown options fill the buffer is measured first (the server
blocks when its socket's send buffer is full, whole replies at a time).
"""
import array
import fcntl
import os
import socket
import struct
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbdclient as n  # noqa: E402
from qmp import QMP  # noqa: E402

SOCK = MON = IMAGE = None
FILLER_OPT = 0x7777


class Fail(Exception):
    pass


def queued(c):
    buf = array.array("i", [0])
    fcntl.ioctl(c.sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


def settled(c):
    """Bytes queued for the client once the server stopped writing."""
    last, same = -1, 0
    deadline = time.time() + 5
    while time.time() < deadline:
        q = queued(c)
        same = same + 1 if q == last else 0
        if same >= 4:
            return q
        last = q
        time.sleep(0.05)
    return last


def send_nowait(c, data):
    """Send what the socket takes without blocking; True if all of it."""
    c.sock.setblocking(False)
    try:
        c.sock.sendall(data)
        return True
    except BlockingIOError:
        return False
    finally:
        c.sock.settimeout(5)


def filler_reply_len():
    c = n.Client(SOCK)
    c.start()
    c.send_option(FILLER_OPT)
    _, rtype, data = c.read_option_reply()
    c.close()
    if rtype != n.REP_ERR_UNSUP:
        raise Fail("unknown option answered %s" % n.REP_NAMES.get(rtype, rtype))
    return 20 + len(data)


def fillers(count):
    return struct.pack(">QII", n.OPTS_MAGIC, FILLER_OPT, 0) * count


def capacity(reply_len):
    """Filler replies the server writes before its first write blocks."""
    c = n.Client(SOCK)
    c.start()
    send_nowait(c, fillers(4096))
    q = settled(c)
    c.close()
    return q // reply_len


def blocked_on(option, reply_len, count, structured=False):
    """A client whose server blocks on its first reply to @option."""
    for _ in range(6):
        c = n.Client(SOCK)
        c.start()
        if structured:
            c.structured_reply()
        full = send_nowait(c, fillers(count) + option)
        q = settled(c) if full else 0
        if q == count * reply_len:
            return c, count
        c.close()
        # the buffer held one filler more or less than measured
        count += 1 if q > count * reply_len else -1
    raise Fail("could not make the server block on the option")


def add_victim(q):
    q.cmd("export-add", {"id": "victim", "file": IMAGE, "writable": False})


def delete(q, *ids):
    for i in ids:
        q.cmd("export-del", {"id": i})


def read_fillers(c, count):
    for _ in range(count):
        _, rtype, _ = c.read_option_reply()
        if rtype != n.REP_ERR_UNSUP:
            raise Fail("filler answered %s" % n.REP_NAMES.get(rtype, rtype))


def expect_closed(c, what):
    try:
        c.send_request(n.CMD_READ, 0, 512)
        data = c.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        return
    except socket.timeout:
        raise Fail("%s: the server serves a deleted export" % what)
    if data:
        raise Fail("%s: %d bytes of reply from a deleted export" % (what, len(data)))


def case_list(q, reply_len, count):
    c, count = blocked_on(struct.pack(">QII", n.OPTS_MAGIC, n.OPT_LIST, 0),
                          reply_len, count)
    delete(q, "victim", "v2")
    read_fillers(c, count)
    replies = c.read_option_replies(n.OPT_LIST)
    names = [d[4:4 + struct.unpack(">I", d[:4])[0]].decode()
             for t, d in replies if t == n.REP_SERVER]
    if replies[-1][0] != n.REP_ACK or "rw" not in names:
        raise Fail("LIST with exports deleted meanwhile: %s, exports %s"
                   % (n.REP_NAMES.get(replies[-1][0]), names))
    c.close()
    return "listed %s" % names


def case_go(q, reply_len, count):
    add_victim(q)
    c, count = blocked_on(
        struct.pack(">QII", n.OPTS_MAGIC, n.OPT_GO, 12) +
        n.Client.go_payload("victim"), reply_len, count)
    delete(q, "victim")
    read_fillers(c, count)
    rtype = c.read_option_replies(n.OPT_GO)[-1][0]
    if rtype == n.REP_ACK:
        raise Fail("GO acknowledged for an export deleted before its ACK")
    c.close()
    return "GO answered %s" % n.REP_NAMES.get(rtype, rtype)


def case_export_name(q, reply_len, count):
    add_victim(q)
    c, count = blocked_on(struct.pack(">QII", n.OPTS_MAGIC,
                                      n.OPT_EXPORT_NAME, 6) + b"victim",
                          reply_len, count)
    delete(q, "victim")
    read_fillers(c, count)
    c.recv_exact(10)            # size and flags (NO_ZEROES negotiated)
    expect_closed(c, "EXPORT_NAME")
    c.close()
    return "closed"


def case_meta(q, reply_len, count):
    add_victim(q)
    name = b"victim"
    ctx = b"base:allocation"
    data = (struct.pack(">I", len(name)) + name + struct.pack(">II", 1, len(ctx))
            + ctx)
    c, count = blocked_on(struct.pack(">QII", n.OPTS_MAGIC,
                                      n.OPT_SET_META_CONTEXT, len(data)) + data,
                          reply_len, count, structured=True)
    delete(q, "victim")
    read_fillers(c, count)
    c.read_option_replies(n.OPT_SET_META_CONTEXT)
    c.go("rw")
    err, _ = c.read(0, 512)
    if err:
        raise Fail("read after SET_META_CONTEXT: error %d" % err)
    c.disconnect()
    return "no crash"


def main(argv):
    global SOCK, MON, IMAGE
    SOCK, MON, IMAGE = argv[1:4]
    q = QMP(MON, timeout=30)
    reply_len = filler_reply_len()
    count = capacity(reply_len)
    print("    %d unknown-option replies of %d bytes fill the socket"
          % (count, reply_len))
    failed = 0
    for name, fn in (("list", case_list), ("go", case_go),
                     ("export-name", case_export_name), ("meta", case_meta)):
        try:
            res = fn(q, reply_len, count)
            print("ok   %-12s %s" % (name, res))
        except (Fail, n.Closed, n.ProtocolError, OSError) as e:
            print("FAIL %-12s %s: %s" % (name, type(e).__name__, e))
            failed += 1
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
