#!/usr/bin/env python3
"""Write the hand-made seed corpus of the aioloop-nbd fuzz targets.

    tests/fuzz/make-corpus.py [OUTDIR]      (default: tests/fuzz/corpus)

OUTDIR/session/<name>: byte for byte what a client sends on a fresh
connection (fuzz-nbd-session.c: the server's "rw" export is the default
one, "ro" is read-only, "direct" uses O_DIRECT, all 1 MiB).
OUTDIR/proto/<name>: a selector byte and a decoder payload
(fuzz-nbd-proto.c).

Seeds are named "seed-*"; the files the fuzzer found (hash names) are
left alone, so re-running this only refreshes the hand-made ones.
"""
import os
import struct
import sys

# The protocol's numbers, from the tests' raw client.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "nbd"))
from nbdclient import (  # noqa: E402
    REQUEST_MAGIC, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES,
    OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO,
    OPT_STRUCTURED_REPLY, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT,
    INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE,
    CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE,
    CMD_WRITE_ZEROES, CMD_BLOCK_STATUS,
    CMD_FLAG_FUA as F_FUA, CMD_FLAG_NO_HOLE as F_NO_HOLE, CMD_FLAG_DF as F_DF,
    CMD_FLAG_REQ_ONE as F_REQ_ONE, CMD_FLAG_FAST_ZERO as F_FAST_ZERO)
import nbdclient  # noqa: E402

OPTS_MAGIC = struct.pack(">Q", nbdclient.OPTS_MAGIC)

MIB = 1024 * 1024


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def option(opt, data=b""):
    return OPTS_MAGIC + struct.pack(">II", opt, len(data)) + data


def client_flags(flags=FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES):
    return struct.pack(">I", flags)


def info_payload(name, infos=()):
    return string(name) + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def go(name, infos=()):
    return option(OPT_GO, info_payload(name, infos))


def info(name, infos=()):
    return option(OPT_INFO, info_payload(name, infos))


def meta_payload(name, queries):
    return string(name) + struct.pack(">I", len(queries)) + b"".join(
        string(q) for q in queries)


def set_meta(name, queries):
    return option(OPT_SET_META_CONTEXT, meta_payload(name, queries))


def list_meta(name, queries):
    return option(OPT_LIST_META_CONTEXT, meta_payload(name, queries))


_cookie = [0]


def request(cmd, offset=0, length=0, flags=0, payload=None):
    _cookie[0] += 1
    hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, _cookie[0],
                      offset, length)
    if cmd == CMD_WRITE:
        if payload is None:
            payload = bytes((i * 13 + 5) & 0xff for i in range(length))
        return hdr + payload
    return hdr


def disc():
    return request(CMD_DISC)


ALL_INFOS = (INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE)


def sessions():
    s = {}
    # GO on the default export and every simple command.
    s["go-default-rw"] = (
        client_flags() + go("", ALL_INFOS) +
        request(CMD_READ, 0, 4096) +
        request(CMD_WRITE, 8192, 4096) +
        request(CMD_WRITE, 4096, 512, F_FUA) +
        request(CMD_FLUSH) +
        request(CMD_TRIM, MIB - 65536, 65536) +
        request(CMD_WRITE_ZEROES, 65536, 65536) +
        request(CMD_WRITE_ZEROES, 131072, 4096, F_NO_HOLE) +
        request(CMD_CACHE, 0, 65536) +
        request(CMD_READ, MIB - 512, 512) +
        disc())
    # Structured replies, base:allocation, BLOCK_STATUS.
    s["go-structured-block-status"] = (
        client_flags() + option(OPT_STRUCTURED_REPLY) +
        set_meta("rw", ["base:allocation"]) + go("rw", [INFO_BLOCK_SIZE]) +
        request(CMD_READ, 0, 65536) +
        request(CMD_READ, 0, 65536, F_DF) +
        request(CMD_BLOCK_STATUS, 0, MIB) +
        request(CMD_BLOCK_STATUS, 0, MIB, F_REQ_ONE) +
        request(CMD_BLOCK_STATUS, MIB // 2 - 4096, 8192) +
        request(CMD_WRITE_ZEROES, 0, 4096, F_FAST_ZERO) +
        request(CMD_READ, MIB, 1) +
        disc())
    # More requests than a client may have in flight (64): the reader
    # waits for earlier ones.
    s["pipeline"] = (
        client_flags() + go("rw") +
        b"".join(request(CMD_READ, 4096 * i, 4096) for i in range(70)) +
        b"".join(request(CMD_FLUSH) for _ in range(70)) + disc())
    # More payload than a client may have in flight (4 MiB): the fifth
    # 1 MiB read waits until an earlier one is answered.
    s["budget"] = (
        client_flags() + go("rw") +
        b"".join(request(CMD_READ, 0, MIB) for _ in range(6)) + disc())
    # A WRITE payload large enough (32 KiB) to be read straight into its
    # buffer rather than through the channel's.
    s["write-large"] = (
        client_flags() + go("rw") + request(CMD_WRITE, 65536, 32768) +
        request(CMD_READ, 65536, 32768) + disc())
    # LIST, then ABORT.
    s["list-abort"] = client_flags() + option(OPT_LIST) + option(OPT_ABORT)
    # INFO with every info type, on each export and an unknown one.
    s["info-all"] = (
        client_flags() + info("rw", ALL_INFOS) + info("ro", ALL_INFOS) +
        info("", ALL_INFOS + (77,)) + info("nonexistent", ALL_INFOS) +
        option(OPT_ABORT))
    # Metadata contexts: LIST with the namespace, SET with junk.
    s["meta-contexts"] = (
        client_flags() + option(OPT_STRUCTURED_REPLY) +
        list_meta("rw", []) + list_meta("rw", ["base:"]) +
        list_meta("ro", ["base:allocation", "qemu:dirty-bitmap:x"]) +
        set_meta("rw", ["base:allocation", "nope:thing"]) +
        set_meta("nonexistent", ["base:allocation"]) +
        option(OPT_ABORT))
    # SET_META_CONTEXT without structured replies: an error, then GO.
    s["meta-no-structured"] = (
        client_flags() + set_meta("rw", ["base:allocation"]) + go("rw") +
        request(CMD_BLOCK_STATUS, 0, 4096) + disc())
    # The old way in: EXPORT_NAME, with and without NO_ZEROES.
    s["export-name-ro"] = (
        client_flags() + option(OPT_EXPORT_NAME, b"ro") +
        request(CMD_READ, 0, 4096) + request(CMD_WRITE, 0, 512) +
        request(CMD_TRIM, 0, 4096) + disc())
    s["export-name-zeroes"] = (
        client_flags(FLAG_C_FIXED_NEWSTYLE) +
        option(OPT_EXPORT_NAME, b"rw") + request(CMD_READ, 0, 512) + disc())
    # O_DIRECT export (4 KiB blocks): aligned requests, unaligned ones.
    s["go-direct"] = (
        client_flags() + option(OPT_STRUCTURED_REPLY) +
        set_meta("direct", ["base:allocation"]) +
        go("direct", [INFO_BLOCK_SIZE]) +
        request(CMD_WRITE, 4096, 8192) + request(CMD_READ, 0, 16384) +
        request(CMD_READ, 512, 512) + request(CMD_WRITE, 100, 4096) +
        request(CMD_WRITE_ZEROES, 8192, 4096, F_NO_HOLE) +
        request(CMD_TRIM, 4096, 4096) +
        request(CMD_BLOCK_STATUS, 1, 4095) + request(CMD_FLUSH) + disc())
    # Read-only export: writes refused, reads past the end.
    s["go-ro-errors"] = (
        client_flags() + go("ro", ALL_INFOS) +
        request(CMD_WRITE, 0, 4096) + request(CMD_WRITE_ZEROES, 0, 4096) +
        request(CMD_READ, MIB - 512, 1024) +
        request(CMD_READ, 2 ** 64 - 512, 1024) +
        request(CMD_READ, 0, 64 * MIB) +
        request(CMD_FLUSH, 0, 0, F_FUA) +
        request(99, 0, 0) + disc())
    # Option errors, then a good GO, then garbage instead of a request.
    s["option-errors"] = (
        client_flags() + option(OPT_STARTTLS) + option(1234, b"xyz") +
        go("nonexistent") + option(OPT_GO, b"\0\0\0\x10ab") +
        option(OPT_LIST, b"junk") + go("rw") +
        request(CMD_READ, 0, 512) + b"\xde\xad\xbe\xef" * 7)
    # Writes past the end and a write cut short by EOF.
    s["write-eof"] = (
        client_flags() + go("rw") +
        request(CMD_WRITE, MIB - 512, 1024) +
        request(CMD_WRITE, 0, 4096)[:28 + 100])
    # EOF in the middle of negotiation.
    s["eof-in-option"] = client_flags() + option(OPT_GO, info_payload("rw"))[:20]
    # A client without FIXED_NEWSTYLE, and one with unknown flags.
    s["client-flags-zero"] = client_flags(0) + option(OPT_EXPORT_NAME, b"rw")
    s["client-flags-unknown"] = client_flags(0xfffffffc) + go("rw")
    return s


def proto_seeds():
    s = {}
    s["info-go-all"] = b"\x00" + info_payload("rw", ALL_INFOS)
    s["info-empty-name"] = b"\x00" + info_payload("")
    s["info-bad-count"] = b"\x00" + string("rw") + struct.pack(">H", 5)
    s["meta-base-allocation"] = b"\x01" + meta_payload(
        "rw", ["base:allocation", "base:", "base:alloc", "qemu:x"])
    s["meta-none"] = b"\x01" + meta_payload("", [])
    s["meta-too-many"] = b"\x01" + meta_payload("rw", ["base:"] * 17)
    for name, (cmd, off, length, flags) in {
            "read": (CMD_READ, 4096, 4096, 0),
            "write-fua": (CMD_WRITE, 0, 512, F_FUA),
            "flush": (CMD_FLUSH, 7, 9, 0),
            "trim-end": (CMD_TRIM, MIB - 4096, 4096, 0),
            "zeroes-fast": (CMD_WRITE_ZEROES, 0, 65536,
                            F_NO_HOLE | F_FAST_ZERO),
            "block-status": (CMD_BLOCK_STATUS, 0, MIB, F_REQ_ONE),
            "read-overflow": (CMD_READ, 2 ** 64 - 1, 2, F_DF)}.items():
        hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, 1, off,
                          length)
        # Limits: size, tx_flags (everything), min_block 2^0, flags bits.
        lim = struct.pack(">QHBB", MIB, 0x0dfd, 0, 7)
        s["request-" + name] = b"\x02" + hdr + lim
    s["encoders"] = b"\x03" + bytes(range(1, 25))
    return s


def write(outdir, seeds):
    os.makedirs(outdir, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(outdir, "seed-" + name), "wb") as f:
            f.write(data)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus")
    write(os.path.join(top, "session"), sessions())
    write(os.path.join(top, "proto"), proto_seeds())


if __name__ == "__main__":
    main()
