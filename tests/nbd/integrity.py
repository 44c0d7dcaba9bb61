#!/usr/bin/env python3
"""Data integrity through an NBD export, driven with qemu-io.

    integrity.py run URI IMAGE MODEL [SEED]   apply writes through URI, keep
                                              the expected image in MODEL
    integrity.py check IMAGE MODEL            compare IMAGE with MODEL

`run` reads IMAGE once at the start (the export's backing file, not written
by anyone else) as the initial contents, then sends batches of qemu-io
commands: pattern writes (plain and FUA) each followed by a verified read,
write-zeroes with and without unmap, discards, flushes; sizes from 1 byte to
several MiB, unaligned, at the end of the image, across holes and data.
Discarded ranges have unspecified contents (NBD spec), they are left out of
the comparison until rewritten.  MODEL is the expected image plus the list
of those ranges.
"""
import json
import random
import subprocess
import sys

MiB = 1 << 20


def qemu_io(uri, cmds, expect_ok=True):
    args = ["qemu-io", "-f", "raw", uri]
    for c in cmds:
        args += ["-c", c]
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    out = p.stdout.decode(errors="replace")
    bad = p.returncode != 0 or "fail" in out.lower() or "error" in out.lower()
    if expect_ok and bad:
        sys.exit("qemu-io failed (exit %d) on\n  %s\n%s"
                 % (p.returncode, "\n  ".join(cmds), out))
    return p.returncode, out


class Model:
    def __init__(self, data):
        self.data = bytearray(data)
        self.unknown = []          # [start, end) ranges with unspecified data

    def _known(self, a, b):
        out = []
        for s, e in self.unknown:
            if e <= a or s >= b:
                out.append((s, e))
            else:
                if s < a:
                    out.append((s, a))
                if e > b:
                    out.append((b, e))
        self.unknown = out

    def write(self, off, length, byte):
        self.data[off:off + length] = bytes([byte]) * length
        self._known(off, off + length)

    def discard(self, off, length):
        self.unknown.append((off, off + length))


def gen_ops(size, rng):
    """Yield (kind, off, len[, pattern]) covering the interesting cases."""
    sizes = [1, 2, 7, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 65537,
             MiB - 1, MiB + 3, 3 * MiB + 1, 4 * MiB]
    pat = 0
    for ln in sizes:
        for off in (0, 1, 511, 4096 - 1, rng.randrange(0, size - ln),
                    rng.randrange(0, (size - ln) // 512) * 512,
                    size - ln,                       # ends at the end of the image
                    16 * MiB - ln // 2):             # across the data/hole border
            pat = pat % 255 + 1
            yield ("write", off, ln, pat)
    for _ in range(60):                              # random mix
        ln = rng.choice([1, 3, 512, 1000, 4096, 8192, 12345, 65536, 100000, 2 * MiB + 7])
        off = rng.randrange(0, size - ln + 1)
        k = rng.random()
        pat = pat % 255 + 1
        if k < 0.5:
            yield ("write", off, ln, pat)
        elif k < 0.65:
            yield ("fua", off, ln, pat)
        elif k < 0.75:
            yield ("zero", off, ln)
        elif k < 0.85:
            yield ("zero-unmap", off, ln)
        elif k < 0.95:
            # 4 KiB aligned: an O_DIRECT export may advertise a minimum
            # block size of 4096 and refuse unaligned trims (the spec
            # allows it), which qemu's client passes through as they are
            a = off // 4096 * 4096
            yield ("discard", a, max(4096, ln // 4096 * 4096))
        else:
            yield ("flush",)
    # the last bytes and the last MiBs, and zeroes over data at the end
    yield ("write", size - 1, 1, 0xEE)
    yield ("fua", size - 4 * MiB, 4 * MiB, 0xA5)
    yield ("zero", size - 3 * MiB - 5, 2 * MiB, )
    yield ("zero-unmap", size - MiB, MiB)
    yield ("write", size - 8 * MiB, 8 * MiB, 0x3C)   # several MiB in one request
    yield ("flush",)


def run(uri, image, model_path, seed):
    rng = random.Random(seed)
    with open(image, "rb") as f:
        model = Model(f.read())
    size = len(model.data)
    batch = []
    nops = 0
    for op in gen_ops(size, rng):
        nops += 1
        kind = op[0]
        if kind in ("write", "fua"):
            _, off, ln, p = op
            flag = "-f " if kind == "fua" else ""
            batch.append("write -q %s-P 0x%02x %d %d" % (flag, p, off, ln))
            batch.append("read -q -P 0x%02x %d %d" % (p, off, ln))
            model.write(off, ln, p)
        elif kind in ("zero", "zero-unmap"):
            _, off, ln = op
            batch.append("write -q -z %s%d %d" % ("-u " if kind == "zero-unmap" else "", off, ln))
            batch.append("read -q -P 0 %d %d" % (off, ln))
            model.write(off, ln, 0)
        elif kind == "discard":
            _, off, ln = op
            batch.append("discard -q %d %d" % (off, ln))
            model.discard(off, ln)
        elif kind == "flush":
            batch.append("flush")
        if len(batch) >= 40:
            qemu_io(uri, batch)
            batch = []
    if batch:
        qemu_io(uri, batch)
    # reads past the end fail (the client or the server refuses them), and
    # the export still works afterwards
    for cmd in ("read %d 512" % (size - 511), "read %d 1" % size,
                "write -P 1 %d 2" % (size - 1)):
        rc, out = qemu_io(uri, [cmd], expect_ok=False)
        if rc == 0:
            sys.exit("qemu-io %r past the end of the image succeeded:\n%s" % (cmd, out))
    qemu_io(uri, ["read -q -P 0x%02x %d 1" % (model.data[-1], size - 1)])
    with open(model_path, "wb") as f:
        f.write(model.data)
    with open(model_path + ".unknown", "w") as f:
        json.dump(model.unknown, f)
    print("    %d operations through qemu-io, %d discarded ranges" % (nops, len(model.unknown)))


def check(image, model_path):
    with open(model_path, "rb") as f:
        want = bytearray(f.read())
    with open(model_path + ".unknown") as f:
        unknown = json.load(f)
    with open(image, "rb") as f:
        got = bytearray(f.read())
    if len(got) != len(want):
        sys.exit("image is %d bytes, expected %d" % (len(got), len(want)))
    for s, e in unknown:
        got[s:e] = want[s:e]
    if got != want:
        bad = next(i for i in range(len(got)) if got[i] != want[i])
        sys.exit("image differs from the model at offset %d: 0x%02x, expected 0x%02x"
                 % (bad, got[bad], want[bad]))
    print("    image matches the model (%d bytes, %d discarded ranges skipped)"
          % (len(got), len(unknown)))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], sys.argv[4],
            int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
