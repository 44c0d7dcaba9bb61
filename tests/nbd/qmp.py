#!/usr/bin/env python3
"""Tiny client of aioloop-nbd's control socket (QMP-shaped, one JSON per line).

    qmp.py SOCKET CMD [JSON-ARGS]

prints the command's return value as JSON and exits 0, or prints the error
on stderr and exits 1.  As a module: QMP(path).cmd(name, **args).
"""
import json
import socket
import sys


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.f = self.sock.makefile("rwb")
        self.next_id = 0
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError("bad greeting: %r" % greeting)
        self.greeting = greeting["QMP"]
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            raise QMPError("monitor closed the connection")
        try:
            return json.loads(line)
        except ValueError as e:
            raise QMPError("bad JSON from monitor: %r (%s)" % (line, e))

    def execute(self, name, args=None):
        """Return the full reply object of one command."""
        self.next_id += 1
        msg = {"execute": name, "id": self.next_id}
        if args is not None:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            reply = self._read()
            if "event" in reply:      # not in the protocol, but harmless
                continue
            if reply.get("id") != self.next_id:
                raise QMPError("reply id %r, expected %r: %r"
                               % (reply.get("id"), self.next_id, reply))
            return reply

    def cmd(self, name, args=None, **kwargs):
        """Return the value of "return"; raise QMPError on an error reply."""
        if args is None and kwargs:
            args = kwargs
        reply = self.execute(name, args)
        if "error" in reply:
            raise QMPError("%s: %s" % (name, reply["error"].get("desc", reply["error"])))
        if "return" not in reply:
            raise QMPError("%s: reply without return or error: %r" % (name, reply))
        return reply["return"]

    def close(self):
        try:
            self.f.close()
        finally:
            self.sock.close()


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    args = json.loads(argv[3]) if len(argv) == 4 else None
    try:
        q = QMP(argv[1])
        ret = q.cmd(argv[2], args)
        q.close()
    except (QMPError, OSError) as e:
        print("qmp.py: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(ret))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
