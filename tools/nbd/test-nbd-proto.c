/*
 * Unit test of nbd-proto: the decoders and the request checks, case by
 * case against the protocol's rules.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd-proto.h"

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__,         \
                    __LINE__, #cond);                                      \
            failures++;                                                    \
        }                                                                  \
    } while (0)

/* Build an option payload: 32-bit length + string, then the rest. */
static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);

    nbd_st32(p, (uint32_t)n);
    memcpy(p + 4, s, n);
    return 4 + n;
}

static void test_info_request(void)
{
    uint8_t buf[64];
    NBDInfoRequest ir;
    size_t n = put_str(buf, "disk");

    nbd_st16(buf + n, 3);
    nbd_st16(buf + n + 2, NBD_INFO_BLOCK_SIZE);
    nbd_st16(buf + n + 4, NBD_INFO_NAME);
    nbd_st16(buf + n + 6, 0x7777);      /* unknown: ignored */
    CHECK(nbd_parse_info_request(buf, (uint32_t)(n + 8), &ir) == 0);
    CHECK(ir.name.len == 4 && !memcmp(ir.name.data, "disk", 4));
    CHECK(ir.want_block_size && ir.want_name && !ir.want_description);
    /* One info request short, one too many, a name past the end. */
    CHECK(nbd_parse_info_request(buf, (uint32_t)(n + 6), &ir) ==
          NBD_REP_ERR_INVALID);
    CHECK(nbd_parse_info_request(buf, (uint32_t)(n + 10), &ir) ==
          NBD_REP_ERR_INVALID);
    nbd_st32(buf, 1000);
    CHECK(nbd_parse_info_request(buf, (uint32_t)(n + 8), &ir) ==
          NBD_REP_ERR_INVALID);
    CHECK(nbd_parse_info_request(buf, 3, &ir) == NBD_REP_ERR_INVALID);
    /* The empty name (the default export) with no info requests. */
    nbd_st32(buf, 0);
    nbd_st16(buf + 4, 0);
    CHECK(nbd_parse_info_request(buf, 6, &ir) == 0 && ir.name.len == 0);
}

static void test_meta_request(void)
{
    uint8_t buf[512];
    NBDMetaRequest mr;
    size_t n = put_str(buf, "disk");

    nbd_st32(buf + n, 2);
    n += 4;
    n += put_str(buf + n, "base:allocation");
    n += put_str(buf + n, "qemu:dirty-bitmap:x");
    CHECK(nbd_parse_meta_request(buf, (uint32_t)n, &mr) == 0);
    CHECK(mr.nqueries == 2);
    CHECK(nbd_meta_query_matches(mr.queries[0], false));
    CHECK(!nbd_meta_query_matches(mr.queries[1], false));
    CHECK(!nbd_meta_query_matches(mr.queries[1], true));
    /* Trailing garbage, a truncated query. */
    CHECK(nbd_parse_meta_request(buf, (uint32_t)n + 1, &mr) ==
          NBD_REP_ERR_INVALID);
    CHECK(nbd_parse_meta_request(buf, (uint32_t)n - 1, &mr) ==
          NBD_REP_ERR_INVALID);
    /* A query count the payload cannot hold is invalid, not a big alloc. */
    nbd_st32(buf + 8, 0xffffffffu);
    CHECK(nbd_parse_meta_request(buf, (uint32_t)n, &mr) ==
          NBD_REP_ERR_INVALID);
    /* More queries than we take: TOO_BIG. */
    n = put_str(buf, "");
    nbd_st32(buf + n, NBD_MAX_META_QUERIES + 1);
    n += 4;
    for (int i = 0; i <= NBD_MAX_META_QUERIES; i++) {
        n += put_str(buf + n, "base:");
    }
    CHECK(nbd_parse_meta_request(buf, (uint32_t)n, &mr) ==
          NBD_REP_ERR_TOO_BIG);
    /* "base:" lists the namespace and selects nothing. */
    {
        NBDString s = { (const uint8_t *)"base:", 5 };

        CHECK(nbd_meta_query_matches(s, true));
        CHECK(!nbd_meta_query_matches(s, false));
    }
}

static uint32_t check(uint16_t type, uint16_t flags, uint64_t off,
                      uint32_t len, const NBDExportLimits *lim)
{
    NBDRequest r = { .type = type, .flags = flags, .offset = off,
                     .len = len };

    return nbd_check_request(&r, lim);
}

static void test_check_request(void)
{
    NBDExportLimits rw = {
        .size = 1 << 20,
        .tx_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                    NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
                    NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO |
                    NBD_FLAG_SEND_CACHE,
        .min_block = 1,
        .structured = true,
        .meta_selected = true,
    };
    NBDExportLimits ro = rw, direct = rw, simple = rw;
    uint8_t hdr[NBD_REQUEST_SIZE];
    NBDRequest req;

    ro.tx_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY |
                  NBD_FLAG_SEND_FLUSH;
    direct.min_block = 4096;
    simple.structured = false;
    simple.meta_selected = false;

    CHECK(check(NBD_CMD_READ, 0, 0, 4096, &rw) == 0);
    CHECK(check(NBD_CMD_READ, 0, (1 << 20) - 1, 1, &rw) == 0);
    CHECK(check(NBD_CMD_READ, 0, 1 << 20, 1, &rw) == NBD_EINVAL);
    CHECK(check(NBD_CMD_READ, 0, UINT64_MAX, 2, &rw) == NBD_EINVAL);
    CHECK(check(NBD_CMD_WRITE, 0, 1 << 20, 1, &rw) == NBD_ENOSPC);
    CHECK(check(NBD_CMD_WRITE_ZEROES, 0, 1 << 20, 1, &rw) == NBD_ENOSPC);
    CHECK(check(NBD_CMD_READ, 0, 0, 0, &rw) == 0);
    CHECK(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, &rw) == 0);
    CHECK(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, &simple) ==
          NBD_EINVAL);
    CHECK(check(NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1, &rw) ==
          NBD_EOVERFLOW);
    CHECK(check(NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1, &simple) ==
          NBD_EINVAL);
    CHECK(check(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, 512, &rw) == 0);
    CHECK(check(NBD_CMD_WRITE, 0, 0, 512, &ro) == NBD_EPERM);
    CHECK(check(NBD_CMD_TRIM, 0, 0, 512, &ro) == NBD_EPERM);
    CHECK(check(NBD_CMD_WRITE_ZEROES, 0, 0, 512, &ro) == NBD_EPERM);
    CHECK(check(NBD_CMD_TRIM, 0, 0, 512, &simple) == 0);
    simple.tx_flags &= ~NBD_FLAG_SEND_TRIM;
    CHECK(check(NBD_CMD_TRIM, 0, 0, 512, &simple) == NBD_EINVAL);
    CHECK(check(NBD_CMD_WRITE_ZEROES, 0, 0, 512, &simple) == 0);
    simple.tx_flags |= NBD_FLAG_SEND_TRIM;
    CHECK(check(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, 512, &ro) == NBD_EINVAL);
    CHECK(check(NBD_CMD_FLUSH, 0, 123, 456, &ro) == 0);
    CHECK(check(NBD_CMD_WRITE_ZEROES,
                NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO, 0, 512,
                &rw) == 0);
    CHECK(check(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512, &rw) ==
          NBD_EINVAL);
    CHECK(check(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, 512, &rw) ==
          0);
    CHECK(check(NBD_CMD_BLOCK_STATUS, 0, 0, 512, &simple) == NBD_EINVAL);
    CHECK(check(NBD_CMD_BLOCK_STATUS, 0, 0, 0, &rw) == NBD_EINVAL);
    CHECK(check(NBD_CMD_CACHE, 0, 0, 512, &ro) == 0);
    CHECK(check(42, 0, 0, 0, &rw) == NBD_EINVAL);
    CHECK(check(NBD_CMD_READ, 1u << 9, 0, 512, &rw) == NBD_EINVAL);
    CHECK(check(NBD_CMD_READ, 0, 512, 4096, &direct) == NBD_EINVAL);
    CHECK(check(NBD_CMD_READ, 0, 4096, 512, &direct) == NBD_EINVAL);
    CHECK(check(NBD_CMD_READ, 0, 4096, 8192, &direct) == 0);

    nbd_st32(hdr, NBD_REQUEST_MAGIC);
    nbd_st16(hdr + 4, NBD_CMD_FLAG_FUA);
    nbd_st16(hdr + 6, NBD_CMD_WRITE);
    nbd_st64(hdr + 8, 0x0102030405060708ULL);
    nbd_st64(hdr + 16, 4096);
    nbd_st32(hdr + 24, 512);
    CHECK(nbd_parse_request(hdr, &req));
    CHECK(req.type == NBD_CMD_WRITE && req.flags == NBD_CMD_FLAG_FUA &&
          req.cookie == 0x0102030405060708ULL && req.offset == 4096 &&
          req.len == 512);
    hdr[0] ^= 1;
    CHECK(!nbd_parse_request(hdr, &req));
}

static void test_errno_and_encoders(void)
{
    uint8_t buf[32];

    CHECK(nbd_errno_to_wire(0) == 0);
    CHECK(nbd_errno_to_wire(-EROFS) == NBD_EPERM);
    CHECK(nbd_errno_to_wire(-EFBIG) == NBD_ENOSPC);
    CHECK(nbd_errno_to_wire(-EDQUOT) == NBD_ENOSPC);
    CHECK(nbd_errno_to_wire(-EIO) == NBD_EIO);
    CHECK(nbd_errno_to_wire(-ENOTSUP) == NBD_ENOTSUP);
    CHECK(nbd_errno_to_wire(-EBADF) == NBD_EINVAL);

    CHECK(nbd_encode_simple_reply(buf, 7, NBD_EIO) == NBD_SIMPLE_REPLY_SIZE);
    CHECK(nbd_ld32(buf) == NBD_SIMPLE_REPLY_MAGIC && nbd_ld32(buf + 4) == 5 &&
          nbd_ld64(buf + 8) == 7);
    CHECK(nbd_encode_chunk(buf, 9, NBD_REPLY_FLAG_DONE,
                           NBD_REPLY_TYPE_OFFSET_DATA, 12) ==
          NBD_STRUCTURED_REPLY_SIZE);
    CHECK(nbd_ld32(buf) == NBD_STRUCTURED_REPLY_MAGIC &&
          nbd_ld16(buf + 4) == 1 && nbd_ld16(buf + 6) == 1 &&
          nbd_ld64(buf + 8) == 9 && nbd_ld32(buf + 16) == 12);
    CHECK(nbd_encode_option_reply(buf, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, 3) ==
          NBD_OPTION_REPLY_SIZE);
    CHECK(nbd_ld64(buf) == NBD_REP_MAGIC && nbd_ld32(buf + 8) == 7 &&
          nbd_ld32(buf + 12) == NBD_REP_ERR_UNKNOWN && nbd_ld32(buf + 16) == 3);
    CHECK(!strcmp(nbd_opt_name(NBD_OPT_GO), "GO"));
    CHECK(!strcmp(nbd_cmd_name(99), "unknown command"));
}

/* nbd_sanitize_string() of the C string @in into @size bytes is @want. */
static bool sanitized(const char *in, size_t size, const char *want)
{
    char out[64];
    size_t n = nbd_sanitize_string(out, size, (const uint8_t *)in,
                                   strlen(in));

    if (n != strlen(want) || strcmp(out, want)) {
        fprintf(stderr, "sanitized '%s' (%zu): '%s', expected '%s'\n", in,
                size, out, want);
        return false;
    }
    return true;
}

static void test_sanitize_string(void)
{
    char big[8192];
    uint8_t name[4096];

    CHECK(sanitized("disk0", 64, "disk0"));
    CHECK(sanitized("", 64, ""));
    /* Invalid UTF-8 and control characters become '?'. */
    CHECK(sanitized("\xff\xfe", 64, "??"));
    CHECK(sanitized("a\tb\x1b[0m\x7f", 64, "a?b?[0m?"));
    CHECK(sanitized("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 64,
                    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
    CHECK(sanitized("\xc0\x80", 64, "??"));            /* overlong NUL */
    CHECK(sanitized("\xe0\x80\xaf", 64, "???"));       /* overlong '/' */
    CHECK(sanitized("\xed\xa0\x80", 64, "???"));       /* a surrogate */
    CHECK(sanitized("\xf4\x90\x80\x80", 64, "????")); /* above U+10FFFF */
    CHECK(sanitized("x\xe2\x82", 64, "x??"));          /* cut short */
    /* Too long: cut at a character boundary, with "..." in the size. */
    CHECK(sanitized("0123456789", 11, "0123456789"));
    CHECK(sanitized("0123456789a", 11, "0123456..."));
    CHECK(sanitized("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8,
                    "\xc3\xa9\xc3\xa9..."));
    CHECK(sanitized("\xff\xff\xff\xff\xff", 5, "?..."));
    /* A name of NBD_MAX_STRING bytes (NULs included) fits a message. */
    memset(name, 0, sizeof(name));
    CHECK(nbd_sanitize_string(big, 201, name, sizeof(name)) == 200);
    CHECK(strlen(big) == 200 && !strcmp(big + 197, "..."));
}

int main(void)
{
    test_info_request();
    test_meta_request();
    test_check_request();
    test_errno_and_encoders();
    test_sanitize_string();
    if (failures) {
        printf("not ok: %d check(s) failed\n", failures);
        return 1;
    }
    printf("ok: nbd-proto\n");
    return 0;
}
