"""A minimal raw NBD client for the tests (fixed newstyle, simple and
structured replies), with every step exposed so tests can also misbehave.

Spec: /work/shared/spec/nbd-protocol.md.
"""
import socket
import struct

INIT_MAGIC = 0x4E42444D41474943      # "NBDMAGIC"
OPTS_MAGIC = 0x49484156454F5054      # "IHAVEOPT"
REP_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
FLAG_C_FIXED_NEWSTYLE = 1
FLAG_C_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = (1 << 31) | 1
REP_ERR_POLICY = (1 << 31) | 2
REP_ERR_INVALID = (1 << 31) | 3
REP_ERR_PLATFORM = (1 << 31) | 4
REP_ERR_TLS_REQD = (1 << 31) | 5
REP_ERR_UNKNOWN = (1 << 31) | 6
REP_ERR_SHUTDOWN = (1 << 31) | 7
REP_ERR_BLOCK_SIZE_REQD = (1 << 31) | 8
REP_ERR_TOO_BIG = (1 << 31) | 9
REP_NAMES = {
    REP_ACK: "ACK", REP_SERVER: "SERVER", REP_INFO: "INFO",
    REP_META_CONTEXT: "META_CONTEXT", REP_ERR_UNSUP: "ERR_UNSUP",
    REP_ERR_POLICY: "ERR_POLICY", REP_ERR_INVALID: "ERR_INVALID",
    REP_ERR_PLATFORM: "ERR_PLATFORM", REP_ERR_TLS_REQD: "ERR_TLS_REQD",
    REP_ERR_UNKNOWN: "ERR_UNKNOWN", REP_ERR_SHUTDOWN: "ERR_SHUTDOWN",
    REP_ERR_BLOCK_SIZE_REQD: "ERR_BLOCK_SIZE_REQD", REP_ERR_TOO_BIG: "ERR_TOO_BIG",
}

INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 0, 1, 2, 3

FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) | 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2

EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108
ERRNO_NAMES = {0: "OK", EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM",
               EINVAL: "EINVAL", ENOSPC: "ENOSPC", EOVERFLOW: "EOVERFLOW",
               ENOTSUP: "ENOTSUP", ESHUTDOWN: "ESHUTDOWN"}


class Closed(Exception):
    """The server closed the connection."""


class ProtocolError(Exception):
    pass


class Client:
    def __init__(self, path=None, host=None, port=None, timeout=5.0):
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.structured = False
        self.size = None
        self.flags = None
        self.next_handle = 1
        self._read_off = 0

    # --- raw bytes -----------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))  # socket.timeout propagates
            if not chunk:
                raise Closed("server closed the connection after %d of %d bytes"
                             % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def wait_closed(self):
        """Read until EOF (ECONNRESET counts); return the bytes read."""
        data = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    # --- handshake -----------------------------------------------------
    def greeting(self):
        magic, opts, gflags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != INIT_MAGIC or opts != OPTS_MAGIC:
            raise ProtocolError("bad greeting %x %x" % (magic, opts))
        self.gflags = gflags
        return gflags

    def client_flags(self, flags=FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES):
        self.send(struct.pack(">I", flags))

    def start(self):
        self.greeting()
        self.client_flags()

    def send_option(self, opt, data=b"", length=None, magic=OPTS_MAGIC):
        if length is None:
            length = len(data)
        self.send(struct.pack(">QII", magic, opt, length) + data)

    def read_option_reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        if magic != REP_MAGIC:
            raise ProtocolError("bad option reply magic %x" % magic)
        data = self.recv_exact(length) if length else b""
        return opt, rtype, data

    def option(self, opt, data=b""):
        """Send an option, return the list of (type, data) replies up to the
        final one (ACK or an error)."""
        self.send_option(opt, data)
        return self.read_option_replies(opt)

    def read_option_replies(self, opt):
        """The replies to option opt sent earlier, up to the final one."""
        replies = []
        while True:
            ropt, rtype, rdata = self.read_option_reply()
            if ropt != opt:
                raise ProtocolError("reply to option %d, sent %d" % (ropt, opt))
            replies.append((rtype, rdata))
            if rtype == REP_ACK or rtype & (1 << 31):
                return replies

    @staticmethod
    def go_payload(name, infos=()):
        n = name.encode()
        return (struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos))
                + b"".join(struct.pack(">H", i) for i in infos))

    def go(self, name, opt=OPT_GO):
        replies = self.option(opt, self.go_payload(name))
        rtype = replies[-1][0]
        if rtype != REP_ACK:
            raise ProtocolError("NBD_OPT_GO %r: %s" % (name, REP_NAMES.get(rtype, rtype)))
        for t, d in replies:
            if t == REP_INFO and len(d) >= 12 and struct.unpack(">H", d[:2])[0] == INFO_EXPORT:
                self.size, self.flags = struct.unpack(">QH", d[2:12])
        if self.size is None:
            raise ProtocolError("NBD_OPT_GO without NBD_INFO_EXPORT")
        return replies

    def structured_reply(self):
        replies = self.option(OPT_STRUCTURED_REPLY)
        if replies[-1][0] == REP_ACK:
            self.structured = True
        return replies

    def set_meta_context(self, name, contexts):
        n = name.encode()
        data = struct.pack(">I", len(n)) + n + struct.pack(">I", len(contexts))
        for c in contexts:
            c = c.encode()
            data += struct.pack(">I", len(c)) + c
        return self.option(OPT_SET_META_CONTEXT, data)

    def connect(self, name, structured=False):
        self.start()
        if structured:
            self.structured_reply()
        self.go(name)
        return self

    # --- transmission --------------------------------------------------
    def send_request(self, cmd, offset, length, flags=0, data=b"", handle=None,
                     magic=REQUEST_MAGIC):
        if handle is None:
            handle = self.next_handle
            self.next_handle += 1
        self.send(struct.pack(">IHHQQI", magic, flags, cmd, handle, offset, length) + data)
        return handle

    def read_reply(self, read_len=0):
        """Read one reply (all chunks of a structured one).  Returns
        (handle, error, data).  read_len is the data length of a simple
        reply to a successful read."""
        magic = struct.unpack(">I", self.recv_exact(4))[0]
        if magic == SIMPLE_REPLY_MAGIC:
            error, handle = struct.unpack(">IQ", self.recv_exact(12))
            data = self.recv_exact(read_len) if error == 0 and read_len else b""
            return handle, error, data
        if magic != STRUCTURED_REPLY_MAGIC:
            raise ProtocolError("bad reply magic %x" % magic)
        error = 0
        data = bytearray(read_len)
        first = True
        while True:
            if not first:
                magic = struct.unpack(">I", self.recv_exact(4))[0]
                if magic != STRUCTURED_REPLY_MAGIC:
                    raise ProtocolError("bad chunk magic %x" % magic)
            first = False
            flags, rtype, handle, length = struct.unpack(">HHQI", self.recv_exact(16))
            payload = self.recv_exact(length) if length else b""
            if rtype == REPLY_TYPE_OFFSET_DATA:
                # offsets are absolute; callers pass read_len only for reads
                # from offset self._read_off
                off = struct.unpack(">Q", payload[:8])[0] - self._read_off
                data[off:off + length - 8] = payload[8:]
            elif rtype == REPLY_TYPE_OFFSET_HOLE:
                off, hlen = struct.unpack(">QI", payload)
                off -= self._read_off
                data[off:off + hlen] = bytes(hlen)
            elif rtype & (1 << 15):
                error = struct.unpack(">I", payload[:4])[0]
            if flags & REPLY_FLAG_DONE:
                return handle, error, bytes(data) if error == 0 else b""

    def request(self, cmd, offset, length, flags=0, data=b""):
        """One request, one reply; returns (error, data)."""
        self._read_off = offset
        h = self.send_request(cmd, offset, length, flags, data)
        handle, error, rdata = self.read_reply(length if cmd == CMD_READ else 0)
        if handle != h:
            raise ProtocolError("reply handle %d, expected %d" % (handle, h))
        return error, rdata

    def read(self, offset, length, flags=0):
        return self.request(CMD_READ, offset, length, flags)

    def write(self, offset, data, flags=0):
        return self.request(CMD_WRITE, offset, len(data), flags, data)[0]

    def flush(self):
        return self.request(CMD_FLUSH, 0, 0)[0]

    def disconnect(self):
        try:
            self.send_request(CMD_DISC, 0, 0)
        except OSError:
            pass
        self.close()
