#!/usr/bin/env python3
"""Malformed and hostile NBD input against a running server.

    malformed.py [--strict] [--pid PID] RW-SOCKET RO-SOCKET

RW-SOCKET serves a writable export "rw", RO-SOCKET a read-only one "ro"
(the same socket for aioloop-nbd).  Each case opens its own connection with
a 5 s socket timeout, so a server that hangs fails the case instead of the
test; after each case a fresh `nbdinfo` must still succeed and the server
(--pid) must still be running.  --strict checks the exact error codes the
spec says SHOULD be used (aioloop-nbd); without it (qemu-nbd, nbdkit) any
error reply is accepted where the spec allows a choice.
"""
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbdclient as n  # noqa: E402
from nbdclient import Client  # noqa: E402

TIMEOUT = 5.0
STRICT = False
RW = RO = None
PID = None


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def rep_name(t):
    return n.REP_NAMES.get(t, "0x%x" % t)


def err_name(e):
    return n.ERRNO_NAMES.get(e, str(e))


def raw(path=None):
    return Client(path or RW, timeout=TIMEOUT)


def expect_eof(c, what):
    """The server must close the connection (any bytes before EOF are fine)."""
    try:
        c.wait_closed()
    except socket.timeout:
        raise Fail("%s: the server neither answered nor closed within %.0f s" % (what, TIMEOUT))


def expect_rep(c, opt, want, what):
    """Read the final reply to option opt; it must be one of want."""
    while True:
        ropt, rtype, _ = c.read_option_reply()
        check(ropt == opt, "%s: reply for option %d, expected %d" % (what, ropt, opt))
        if rtype == n.REP_ACK or rtype & (1 << 31):
            break
    check(rtype in want, "%s: got %s, expected %s"
          % (what, rep_name(rtype), " or ".join(rep_name(w) for w in want)))
    return rtype


def session_works(c, name="rw"):
    """After an option error: the same session can still GO and read."""
    c.go(name)
    err, data = c.read(0, 512)
    check(err == 0 and len(data) == 512, "read after the error failed: %s" % err_name(err))
    c.disconnect()


def transmission(name="rw", structured=False, path=None):
    return raw(path or (RO if name == "ro" else RW)).connect(name, structured)


def expect_error(c, cmd, off, ln, flags=0, data=b"", want=None, what=""):
    err, _ = c.request(cmd, off, ln, flags, data)
    check(err != 0, "%s: succeeded, expected an error" % what)
    if want and STRICT:
        check(err in want, "%s: error %s, expected %s"
              % (what, err_name(err), " or ".join(err_name(w) for w in want)))
    return err


def still_serving(c, what):
    err, data = c.read(4096, 4096)
    check(err == 0 and len(data) == 4096,
          "%s: the session does not work after the error (%s)" % (what, err_name(err)))


# --- handshake cases ---------------------------------------------------------

def case_close_at_once():
    """connect and close before reading anything"""
    s = socket.socket(socket.AF_UNIX)
    s.connect(RW)
    s.close()


def case_close_after_greeting():
    """read the greeting, send 0 bytes, close"""
    c = raw()
    c.greeting()
    c.close()


def case_truncated_flags():
    """2 of the 4 bytes of client flags, close"""
    c = raw()
    c.greeting()
    c.send(b"\0\0")
    c.close()


def case_close_after_4():
    """client flags (4 bytes), close"""
    c = raw()
    c.start()
    c.close()


def case_close_after_10():
    """client flags + 6 bytes of an option header, close"""
    c = raw()
    c.start()
    c.send(struct.pack(">Q", n.OPTS_MAGIC)[:6])
    c.close()


def case_half_option_payload():
    """an option announcing 100 bytes, 10 sent, close"""
    c = raw()
    c.start()
    c.send_option(n.OPT_GO, b"\0" * 10, length=100)
    c.close()


def case_bad_client_flags():
    """unknown client flag bits: the server must close"""
    c = raw()
    c.greeting()
    c.client_flags(n.FLAG_C_FIXED_NEWSTYLE | 0x80000000)
    expect_eof(c, "unknown client flags")


def case_not_fixed_newstyle():
    """client flags 0 (plain newstyle): close, or serve NBD_OPT_EXPORT_NAME"""
    c = raw()
    c.greeting()
    c.client_flags(0)
    c.send_option(n.OPT_EXPORT_NAME, b"rw")
    try:
        hdr = c.recv_exact(10)       # size + transmission flags (+ zeroes)
    except n.Closed:
        return
    size, flags = struct.unpack(">QH", hdr)
    check(size > 0, "NBD_OPT_EXPORT_NAME: size %d" % size)
    c.close()


def case_bad_option_magic():
    """option with a wrong magic: the server must close"""
    c = raw()
    c.start()
    c.send_option(n.OPT_LIST, magic=0x1122334455667788)
    expect_eof(c, "bad option magic")


def case_unknown_option():
    """unknown option: NBD_REP_ERR_UNSUP, the session continues"""
    c = raw()
    c.start()
    c.send_option(0x1234, b"some data")
    expect_rep(c, 0x1234, (n.REP_ERR_UNSUP,), "unknown option")
    session_works(c)


def _unknown_option_long(length):
    c = raw()
    c.start()
    # the spec: an unknown option MUST get NBD_REP_ERR_UNSUP (its data is
    # skipped by its length); --strict holds aioloop-nbd to it
    want = (n.REP_ERR_UNSUP,) if STRICT else (n.REP_ERR_UNSUP, n.REP_ERR_TOO_BIG,
                                              n.REP_ERR_INVALID)
    try:
        c.send_option(0x4321, b"\xaa" * length)
        expect_rep(c, 0x4321, want, "unknown option of %d bytes" % length)
    except (n.Closed, ConnectionResetError, BrokenPipeError):
        if STRICT:
            raise Fail("unknown option of %d bytes: disconnected" % length)
        return                         # disconnecting is allowed
    session_works(c)


def case_unknown_option_9000():
    """unknown option with 9000 bytes of data: ERR_UNSUP, the session continues"""
    _unknown_option_long(9000)


def case_unknown_option_big():
    """unknown option with a 100 KiB payload actually sent"""
    _unknown_option_long(100000)


def case_option_length_huge():
    """NBD_OPT_GO announcing 4 GiB - 1 of payload, none sent: error or close, no hang"""
    c = raw()
    c.start()
    c.send_option(n.OPT_GO, b"", length=0xFFFFFFFF)
    try:
        expect_rep(c, n.OPT_GO, (n.REP_ERR_INVALID, n.REP_ERR_TOO_BIG),
                   "option length 4 GiB")
    except n.Closed:
        return
    except socket.timeout:
        raise Fail("option length 4 GiB: the server waits for the payload (hang)")
    c.close()


def case_option_length_64m():
    """NBD_OPT_INFO announcing 64 MiB of payload, none sent: error or close"""
    c = raw()
    c.start()
    c.send_option(n.OPT_INFO, b"", length=64 << 20)
    try:
        expect_rep(c, n.OPT_INFO, (n.REP_ERR_INVALID, n.REP_ERR_TOO_BIG),
                   "option length 64 MiB")
    except n.Closed:
        return
    except socket.timeout:
        raise Fail("option length 64 MiB: the server waits for the payload (hang)")
    c.close()


def case_go_unknown_export():
    """NBD_OPT_GO for an unknown export: ERR_UNKNOWN, the session continues"""
    c = raw()
    c.start()
    c.send_option(n.OPT_GO, Client.go_payload("no-such-export"))
    want = (n.REP_ERR_UNKNOWN,) if STRICT else (n.REP_ERR_UNKNOWN, n.REP_ERR_UNSUP,
                                                n.REP_ERR_POLICY, n.REP_ERR_INVALID)
    expect_rep(c, n.OPT_GO, want, "GO for an unknown export")
    session_works(c)


def case_info_unknown_export():
    """NBD_OPT_INFO for an unknown export: ERR_UNKNOWN"""
    c = raw()
    c.start()
    c.send_option(n.OPT_INFO, Client.go_payload("no-such-export"))
    want = (n.REP_ERR_UNKNOWN,) if STRICT else (n.REP_ERR_UNKNOWN, n.REP_ERR_UNSUP,
                                                n.REP_ERR_POLICY, n.REP_ERR_INVALID)
    expect_rep(c, n.OPT_INFO, want, "INFO for an unknown export")
    session_works(c)


def case_unknown_export_message():
    """INFO for unknown names of 4096 bytes and of invalid UTF-8: ERR_UNKNOWN, a valid message"""
    c = raw()
    c.start()
    for name in (b"x" * 4096, b"\xff\xfe\x00\x1b[2J"):
        payload = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        c.send_option(n.OPT_INFO, payload)
        ropt, rtype, msg = c.read_option_reply()
        check(ropt == n.OPT_INFO and rtype & (1 << 31),
              "INFO for an unknown name: got %s" % rep_name(rtype))
        # the spec: strings (error messages included) MUST be no longer than
        # 4096 bytes, and are UTF-8
        check(len(msg) <= 4096, "error message of %d bytes" % len(msg))
        try:
            text = msg.decode("utf-8")
        except UnicodeDecodeError:
            raise Fail("error message is not UTF-8: %r" % msg[:60])
        check("\x00" not in text, "error message contains NUL")
    session_works(c)


def _name_too_long(opt):
    c = raw()
    c.start()
    payload = struct.pack(">I", 1000) + b"rw" + struct.pack(">H", 0)
    c.send_option(opt, payload)
    expect_rep(c, opt, (n.REP_ERR_INVALID,), "name length beyond the option")
    session_works(c)


def case_go_name_beyond_option():
    """NBD_OPT_GO whose name length runs past the option: ERR_INVALID"""
    _name_too_long(n.OPT_GO)


def case_info_name_beyond_option():
    """NBD_OPT_INFO whose name length runs past the option: ERR_INVALID"""
    _name_too_long(n.OPT_INFO)


def case_name_with_nul():
    """INFO and GO for "rw\\0x": ERR_INVALID, not export rw"""
    c = raw()
    c.start()
    name = b"rw\x00x"
    for opt in (n.OPT_INFO, n.OPT_GO):
        payload = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        c.send_option(opt, payload)
        expect_rep(c, opt, (n.REP_ERR_INVALID,), "a name with a NUL")
    session_works(c)


def case_go_info_count_beyond_option():
    """NBD_OPT_GO with 5 info requests announced, 1 sent: ERR_INVALID"""
    c = raw()
    c.start()
    payload = struct.pack(">I", 2) + b"rw" + struct.pack(">HH", 5, n.INFO_EXPORT)
    c.send_option(n.OPT_GO, payload)
    expect_rep(c, n.OPT_GO, (n.REP_ERR_INVALID,), "info count beyond the option")
    session_works(c)


def case_meta_before_structured():
    """SET_META_CONTEXT before STRUCTURED_REPLY: ERR_INVALID"""
    c = raw()
    c.start()
    c.set_meta_context  # noqa (documentation)
    n_ = b"rw"
    ctx = b"base:allocation"
    data = struct.pack(">I", 2) + n_ + struct.pack(">II", 1, len(ctx)) + ctx
    c.send_option(n.OPT_SET_META_CONTEXT, data)
    expect_rep(c, n.OPT_SET_META_CONTEXT, (n.REP_ERR_INVALID,),
               "SET_META_CONTEXT before STRUCTURED_REPLY")
    session_works(c)


def case_meta_bad_lengths():
    """SET_META_CONTEXT with a query length past the option: ERR_INVALID"""
    c = raw()
    c.start()
    c.structured_reply()
    data = struct.pack(">I", 2) + b"rw" + struct.pack(">II", 1, 500) + b"base:"
    c.send_option(n.OPT_SET_META_CONTEXT, data)
    expect_rep(c, n.OPT_SET_META_CONTEXT, (n.REP_ERR_INVALID, n.REP_ERR_TOO_BIG),
               "meta context query length past the option")
    session_works(c)


def case_structured_with_payload():
    """STRUCTURED_REPLY with a payload: ERR_INVALID"""
    c = raw()
    c.start()
    c.send_option(n.OPT_STRUCTURED_REPLY, b"xyz")
    expect_rep(c, n.OPT_STRUCTURED_REPLY, (n.REP_ERR_INVALID,),
               "STRUCTURED_REPLY with a payload")
    session_works(c)


def case_starttls():
    """STARTTLS without TLS configured: an error, the session continues"""
    c = raw()
    c.start()
    c.send_option(n.OPT_STARTTLS)
    expect_rep(c, n.OPT_STARTTLS, (n.REP_ERR_UNSUP, n.REP_ERR_POLICY, n.REP_ERR_INVALID),
               "STARTTLS")
    session_works(c)


def case_many_options():
    """1000 unknown options in a row, then GO (a server may cut it short)"""
    c = raw()
    c.start()
    try:
        c.send(b"".join(struct.pack(">QII", n.OPTS_MAGIC, 0x2000 + i, 0) for i in range(1000)))
        for i in range(1000):
            expect_rep(c, 0x2000 + i, (n.REP_ERR_UNSUP,), "unknown option %d" % i)
    except (n.Closed, ConnectionResetError, BrokenPipeError):
        return                          # a limit on the number of options
    session_works(c)


def case_abort():
    """NBD_OPT_ABORT: (optional ACK) and close"""
    c = raw()
    c.start()
    c.send_option(n.OPT_ABORT)
    expect_eof(c, "NBD_OPT_ABORT")


def case_abort_with_data():
    """NBD_OPT_ABORT with 9000 bytes of data: ACK (the data ignored), close"""
    c = raw()
    c.start()
    c.send_option(n.OPT_ABORT, b"\0" * 9000)
    try:
        ropt, rtype, _ = c.read_option_reply()
    except (n.Closed, ConnectionResetError):
        check(not STRICT, "NBD_OPT_ABORT with data: closed without NBD_REP_ACK")
        return
    check(ropt == n.OPT_ABORT and rtype == n.REP_ACK,
          "NBD_OPT_ABORT with data: got %s (the spec: MUST reply NBD_REP_ACK)"
          % rep_name(rtype))
    expect_eof(c, "NBD_OPT_ABORT with data")


def case_list_with_payload():
    """NBD_OPT_LIST with a payload: ERR_INVALID"""
    c = raw()
    c.start()
    c.send_option(n.OPT_LIST, b"junk")
    expect_rep(c, n.OPT_LIST, (n.REP_ERR_INVALID,), "NBD_OPT_LIST with a payload")
    session_works(c)


# --- transmission cases ------------------------------------------------------

def case_bad_request_magic():
    """request with a bad magic: the server must close"""
    c = transmission()
    c.send_request(n.CMD_READ, 0, 512, magic=0xDEADBEEF)
    expect_eof(c, "bad request magic")


def case_unknown_command():
    """unknown command type: EINVAL, the session continues"""
    c = transmission()
    expect_error(c, 99, 0, 0, want=(n.EINVAL,), what="command 99")
    still_serving(c, "command 99")
    c.disconnect()


def case_read_past_end():
    """read past the end, and straddling it: EINVAL"""
    c = transmission()
    expect_error(c, n.CMD_READ, c.size, 512, want=(n.EINVAL,), what="read at the end")
    expect_error(c, n.CMD_READ, c.size - 512, 1024, want=(n.EINVAL,), what="read across the end")
    expect_error(c, n.CMD_READ, (1 << 64) - 512, 1024, want=(n.EINVAL,),
                 what="read with offset+length overflowing 64 bits")
    still_serving(c, "read past the end")
    c.disconnect()


def case_write_past_end():
    """write (with its payload) past the end: EINVAL or ENOSPC"""
    c = transmission()
    expect_error(c, n.CMD_WRITE, c.size - 100, 512, data=b"\x11" * 512,
                 want=(n.EINVAL, n.ENOSPC), what="write across the end")
    expect_error(c, n.CMD_WRITE_ZEROES, c.size, 4096, want=(n.EINVAL, n.ENOSPC),
                 what="write zeroes past the end")
    expect_error(c, n.CMD_TRIM, c.size + 4096, 4096, want=(n.EINVAL, n.ENOSPC),
                 what="trim past the end")
    still_serving(c, "write past the end")
    c.disconnect()


def case_zero_length():
    """zero-length read, write, trim, write zeroes: no crash, session continues"""
    c = transmission()
    for cmd in (n.CMD_READ, n.CMD_WRITE, n.CMD_TRIM, n.CMD_WRITE_ZEROES):
        c.request(cmd, 4096, 0)
    still_serving(c, "zero-length requests")
    c.disconnect()


def case_write_read_only():
    """write, trim, write zeroes on the read-only export: EPERM"""
    c = transmission("ro")
    expect_error(c, n.CMD_WRITE, 0, 4096, data=b"\x22" * 4096, want=(n.EPERM,),
                 what="write to the read-only export")
    # a read-only export advertises neither TRIM nor WRITE_ZEROES, but the
    # spec still asks for EPERM ("a write or trim request on a read-only
    # export"): --strict holds aioloop-nbd to it
    expect_error(c, n.CMD_TRIM, 0, 4096, want=(n.EPERM,),
                 what="trim on the read-only export")
    expect_error(c, n.CMD_WRITE_ZEROES, 0, 4096, want=(n.EPERM,),
                 what="write zeroes on the read-only export")
    still_serving(c, "writes to the read-only export")
    c.disconnect()


def case_huge_read():
    """64 MiB read (> 32 MiB maximum payload): error reply or close, no hang"""
    c = transmission()
    c.send_request(n.CMD_READ, 0, 64 << 20)
    try:
        handle, err, _ = c.read_reply(0)
    except n.Closed:
        return
    except socket.timeout:
        raise Fail("64 MiB read: no reply within %.0f s" % TIMEOUT)
    if err == 0:
        # a server may serve it: then 64 MiB of data follow
        c.recv_exact(64 << 20)
    else:
        still_serving(c, "64 MiB read")
    c.disconnect()


def case_huge_write():
    """64 MiB write header, no payload: error reply or close, no hang"""
    c = transmission()
    c.send_request(n.CMD_WRITE, 0, 64 << 20)
    try:
        handle, err, _ = c.read_reply(0)
        check(err != 0, "64 MiB write without its payload succeeded")
    except n.Closed:
        return
    except socket.timeout:
        raise Fail("64 MiB write header: neither an error nor a close within %.0f s" % TIMEOUT)
    c.close()


def case_unknown_flags():
    """read with unknown command flags: EINVAL, the session continues"""
    c = transmission()
    expect_error(c, n.CMD_READ, 0, 512, flags=1 << 9, want=(n.EINVAL,),
                 what="unknown command flag")
    # DF is only valid with structured replies
    expect_error(c, n.CMD_READ, 0, 512, flags=n.CMD_FLAG_DF, want=(n.EINVAL,),
                 what="DF without structured replies")
    still_serving(c, "unknown flags")
    c.disconnect()


def case_block_status_no_context():
    """BLOCK_STATUS without a meta context: EINVAL (simple and structured)"""
    for structured in (False, True):
        c = transmission(structured=structured)
        expect_error(c, n.CMD_BLOCK_STATUS, 0, 4096, want=(n.EINVAL,),
                     what="BLOCK_STATUS without meta context (structured=%s)" % structured)
        still_serving(c, "BLOCK_STATUS without meta context")
        c.disconnect()


def case_list_meta_after_set_keeps_selection():
    """LIST_META_CONTEXT after SET_META_CONTEXT leaves the selection alone"""
    # Found by fuzz-nbd-session: the LIST cleared SET's selection (and
    # leaked it), so BLOCK_STATUS after GO was refused with EINVAL.
    c = raw()
    c.start()
    c.structured_reply()
    replies = c.set_meta_context("rw", ["base:allocation"])
    check([r[0] for r in replies] == [n.REP_META_CONTEXT, n.REP_ACK],
          "SET_META_CONTEXT base:allocation: replies %s"
          % [rep_name(r[0]) for r in replies])
    data = struct.pack(">I", 2) + b"rw" + struct.pack(">I", 0)
    replies = c.option(n.OPT_LIST_META_CONTEXT, data)
    check(replies[-1][0] == n.REP_ACK, "LIST_META_CONTEXT: %s"
          % rep_name(replies[-1][0]))
    c.go("rw")
    err, _ = c.request(n.CMD_BLOCK_STATUS, 0, 4096)
    check(err == 0, "BLOCK_STATUS after SET, LIST and GO: %s" % err_name(err))
    still_serving(c, "BLOCK_STATUS after SET, LIST and GO")
    c.disconnect()


def case_half_payload_vanish():
    """client vanishing halfway through a 1 MiB write payload"""
    c = transmission()
    c.send_request(n.CMD_WRITE, 0, 1 << 20, data=b"\x33" * (1 << 19))
    c.close()


def case_vanish_with_requests_in_flight():
    """64 reads of 1 MiB sent, the client closes without reading the replies"""
    c = transmission()
    c.send(b"".join(struct.pack(">IHHQQI", n.REQUEST_MAGIC, 0, n.CMD_READ, i, 0, 1 << 20)
                    for i in range(64)))
    c.close()


def case_reset_with_requests_in_flight():
    """the same with an RST (SO_LINGER 0) instead of a FIN"""
    c = transmission()
    c.send(b"".join(struct.pack(">IHHQQI", n.REQUEST_MAGIC, 0, n.CMD_READ, i, 0, 1 << 20)
                    for i in range(64)))
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def rss_kib():
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Fail("no VmRSS for the server")


def case_memory_bounded():
    """64 reads of 1 MiB pipelined, replies not read: the server holds at most its per-client budget"""
    if not STRICT or PID is None:
        return                          # the budget is aioloop-nbd's (4 MiB)
    c = transmission()
    before = rss_kib()
    c.send(b"".join(struct.pack(">IHHQQI", n.REQUEST_MAGIC, 0, n.CMD_READ, i, (i % 8) << 20, 1 << 20)
                    for i in range(64)))
    # The server reads what its budget allows and blocks on the full socket.
    peak = before
    for _ in range(30):
        time.sleep(0.05)
        peak = max(peak, rss_kib())
    grew = peak - before
    # 4 MiB of buffers, plus one request over the budget and slack for the
    # allocator; 64 MiB if every read were taken at once.
    check(grew < 16 * 1024, "RSS grew by %d MiB with 64 MiB of reads pending" % (grew // 1024))
    seen = set()
    for _ in range(64):
        handle, err, data = c.read_reply(1 << 20)
        check(err == 0 and len(data) == 1 << 20 and handle < 64 and handle not in seen,
              "reply for handle %d: error %s, %d bytes" % (handle, err_name(err), len(data)))
        seen.add(handle)
    c.disconnect()


def case_disc_then_garbage():
    """NBD_CMD_DISC followed by garbage: the server closes"""
    c = transmission()
    c.send_request(n.CMD_DISC, 0, 0)
    try:
        c.send(b"\xff" * 100)
    except OSError:
        return                          # already closed
    expect_eof(c, "after NBD_CMD_DISC")


def case_same_handle_twice():
    """two requests with the same handle: answered (or closed), no crash"""
    c = transmission()
    c.send_request(n.CMD_READ, 0, 4096, handle=7)
    c.send_request(n.CMD_READ, 4096, 4096, handle=7)
    try:
        for _ in range(2):
            c.read_reply(4096)
    except n.Closed:
        return
    c.disconnect()


CASES = [(k, v) for k, v in list(globals().items()) if k.startswith("case_")]


def nbdinfo_ok():
    uri = "nbd+unix:///rw?socket=" + RW
    try:
        p = subprocess.run(["nbdinfo", "--size", uri], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=20)
    except subprocess.TimeoutExpired:
        return "nbdinfo hung"
    if p.returncode != 0:
        return "nbdinfo failed: " + p.stdout.decode(errors="replace").strip()
    return None


def alive():
    if PID is None:
        return True
    try:
        os.kill(PID, 0)
        return True
    except ProcessLookupError:
        return False


def main(argv):
    global STRICT, RW, RO, PID
    args = argv[1:]
    while args and args[0].startswith("--"):
        if args[0] == "--strict":
            STRICT = True
            args = args[1:]
        elif args[0] == "--pid":
            PID = int(args[1])
            args = args[2:]
        else:
            break
    if len(args) != 2:
        sys.exit(__doc__)
    RW, RO = args
    only = os.environ.get("MALFORMED_CASES")
    failed = []
    for name, fn in CASES:
        short = name[5:]
        if only and short not in only.split(","):
            continue
        t0 = time.time()
        try:
            fn()
            res = None
        except Fail as e:
            res = str(e)
        except socket.timeout:
            res = "timed out after %.0f s (the server hangs)" % TIMEOUT
        except n.Closed as e:
            res = "unexpected disconnect: %s" % e
        except (n.ProtocolError, OSError) as e:
            res = "%s: %s" % (type(e).__name__, e)
        time.sleep(0.05)
        if not alive():
            print("FAIL %-36s the server died" % short)
            failed.append(short)
            break
        after = nbdinfo_ok()
        if after:
            res = (res + "; " if res else "") + "then " + after
        status = "ok  " if res is None else "FAIL"
        print("%s %-36s %s%s" % (status, short, fn.__doc__.strip(),
                                 "" if res is None else "\n       -> " + res))
        sys.stdout.flush()
        if res is not None:
            failed.append(short)
    if failed:
        print("%d case(s) failed: %s" % (len(failed), " ".join(failed)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
