#!/usr/bin/env python3
"""Write under load and log every acknowledged write.

    ackwriter.py write SOCKET EXPORT START LEN LOG [DEPTH]
    ackwriter.py check IMAGE LOG...

`write` sends non-overlapping writes (4 KiB .. 64 KiB, contents derived
from the offset) one after the other through [START, START+LEN), DEPTH
(default 16) in flight, and appends "offset length" to LOG as soon as the
server acknowledges one (line-buffered, so it survives the server going
away).  It stops at the end of the range or when the server disconnects
(exit 0); an error reply other than ESHUTDOWN makes it exit 1.

`check` verifies that every logged write is in IMAGE.
"""
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbdclient as n  # noqa: E402


def payload(off, length):
    return random.Random(off).randbytes(length)


def write(sock, export, start, length, log_path, depth=16):
    c = n.Client(sock, timeout=30).connect(export)
    end = start + length
    assert end <= c.size, "range beyond the export"
    sem = threading.Semaphore(depth)
    pending = {}
    lock = threading.Lock()
    state = {"acked": 0, "errors": [], "closed": False, "sent": 0}
    log = open(log_path, "a", buffering=1)

    def receiver():
        try:
            while True:
                handle, err, _ = c.read_reply()
                with lock:
                    off, ln = pending.pop(handle)
                if err == 0:
                    log.write("%d %d\n" % (off, ln))
                    state["acked"] += 1
                elif err != n.ESHUTDOWN:
                    state["errors"].append((off, ln, err))
                sem.release()
                with lock:
                    if state["done"] and not pending:
                        return
        except (n.Closed, OSError):
            state["closed"] = True
            for _ in range(depth):
                sem.release()

    state["done"] = False
    rng = random.Random(start)
    t = threading.Thread(target=receiver, daemon=True)
    t.start()
    off = start
    try:
        while off < end and not state["closed"]:
            # multiples of 4 KiB: an O_DIRECT export may advertise (and enforce)
            # a minimum block size of 4096
            ln = min(rng.choice([4096, 4096, 8192, 12288, 65536, 32768]), end - off)
            data = payload(off, ln)
            sem.acquire()
            if state["closed"]:
                break
            with lock:
                h = c.next_handle
                pending[h] = (off, ln)
            c.send_request(n.CMD_WRITE, off, ln, data=data)
            state["sent"] += 1
            off += ln
    except OSError:
        state["closed"] = True
    with lock:
        state["done"] = True
        idle = not pending
    if not state["closed"] and idle:
        c.disconnect()
    else:
        t.join(60)
        if not state["closed"]:
            c.disconnect()
    log.close()
    print("    %s [%d, %d): %d writes sent, %d acknowledged, %s"
          % (export, start, end, state["sent"], state["acked"],
             "disconnected by the server" if state["closed"] else "range done"))
    if state["errors"]:
        print("    error replies: %r" % state["errors"][:10], file=sys.stderr)
        return 1
    return 0


def check(image, logs):
    total = 0
    with open(image, "rb") as f:
        for log_path in logs:
            with open(log_path) as lf:
                for line in lf:
                    off, ln = map(int, line.split())
                    f.seek(off)
                    if f.read(ln) != payload(off, ln):
                        print("acknowledged write [%d, +%d) (%s) is not in %s"
                              % (off, ln, log_path, image), file=sys.stderr)
                        return 1
                    total += 1
    print("    all %d acknowledged writes are in %s" % (total, os.path.basename(image)))
    return 0


if __name__ == "__main__":
    a = sys.argv
    if len(a) in (7, 8) and a[1] == "write":
        sys.exit(write(a[2], a[3], int(a[4]), int(a[5]), a[6],
                       int(a[7]) if len(a) == 8 else 16))
    elif len(a) >= 4 and a[1] == "check":
        sys.exit(check(a[2], a[3:]))
    sys.exit(__doc__)
