/*
 * NBD wire format: decoders for what clients send, encoders for replies.
 * Every length is checked against what is left of the buffer before it is
 * used, since all of it comes from the network.
 */
#include <errno.h>
#include <string.h>

#include "nbd-proto.h"

/* Take a 32-bit length and that many bytes from [*p, end). */
static bool take_string(const uint8_t **p, const uint8_t *end, NBDString *s)
{
    uint32_t len;

    if (end - *p < 4) {
        return false;
    }
    len = nbd_ld32(*p);
    *p += 4;
    if ((uint64_t)(end - *p) < len || len > NBD_MAX_STRING) {
        return false;
    }
    s->data = *p;
    s->len = len;
    *p += len;
    return true;
}

uint32_t nbd_parse_info_request(const uint8_t *buf, uint32_t len,
                                NBDInfoRequest *req)
{
    const uint8_t *p = buf, *end = buf + len;

    memset(req, 0, sizeof(*req));
    if (!take_string(&p, end, &req->name) || end - p < 2) {
        return NBD_REP_ERR_INVALID;
    }
    req->ninfo = nbd_ld16(p);
    p += 2;
    if ((uint64_t)(end - p) != (uint64_t)req->ninfo * 2) {
        return NBD_REP_ERR_INVALID;
    }
    for (uint16_t i = 0; i < req->ninfo; i++, p += 2) {
        /* Unknown information requests are ignored, as the spec says. */
        switch (nbd_ld16(p)) {
        case NBD_INFO_NAME:
            req->want_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            req->want_description = true;
            break;
        case NBD_INFO_BLOCK_SIZE:
            req->want_block_size = true;
            break;
        }
    }
    return 0;
}

uint32_t nbd_parse_meta_request(const uint8_t *buf, uint32_t len,
                                NBDMetaRequest *req)
{
    const uint8_t *p = buf, *end = buf + len;

    memset(req, 0, sizeof(*req));
    if (!take_string(&p, end, &req->name) || end - p < 4) {
        return NBD_REP_ERR_INVALID;
    }
    req->nqueries = nbd_ld32(p);
    p += 4;
    /* Each query takes at least its 4-byte length: reject lies early. */
    if (req->nqueries > (uint64_t)(end - p) / 4) {
        return NBD_REP_ERR_INVALID;
    }
    if (req->nqueries > NBD_MAX_META_QUERIES) {
        return NBD_REP_ERR_TOO_BIG;
    }
    for (uint32_t i = 0; i < req->nqueries; i++) {
        if (!take_string(&p, end, &req->queries[i])) {
            return NBD_REP_ERR_INVALID;
        }
    }
    return p == end ? 0 : NBD_REP_ERR_INVALID;
}

static bool string_is(NBDString s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len == n && memcmp(s.data, lit, n) == 0;
}

bool nbd_meta_query_matches(NBDString query, bool list)
{
    if (string_is(query, "base:allocation")) {
        return true;
    }
    /* "base:" lists the whole namespace, but selects nothing. */
    return list && string_is(query, "base:");
}

bool nbd_parse_request(const uint8_t *buf, NBDRequest *req)
{
    if (nbd_ld32(buf) != NBD_REQUEST_MAGIC) {
        return false;
    }
    req->flags = nbd_ld16(buf + 4);
    req->type = nbd_ld16(buf + 6);
    req->cookie = nbd_ld64(buf + 8);
    req->offset = nbd_ld64(buf + 16);
    req->len = nbd_ld32(buf + 24);
    return true;
}

/* The command flags each command accepts (FUA is checked separately). */
static uint16_t allowed_flags(uint16_t type, const NBDExportLimits *lim)
{
    switch (type) {
    case NBD_CMD_READ:
        return lim->structured ? NBD_CMD_FLAG_DF : 0;
    case NBD_CMD_WRITE_ZEROES:
        return NBD_CMD_FLAG_NO_HOLE |
               ((lim->tx_flags & NBD_FLAG_SEND_FAST_ZERO) ?
                NBD_CMD_FLAG_FAST_ZERO : 0);
    case NBD_CMD_BLOCK_STATUS:
        return NBD_CMD_FLAG_REQ_ONE;
    default:
        return 0;
    }
}

uint32_t nbd_check_request(const NBDRequest *req, const NBDExportLimits *lim)
{
    uint16_t allowed = allowed_flags(req->type, lim);
    bool writes = false;

    if (lim->tx_flags & NBD_FLAG_SEND_FUA) {
        allowed |= NBD_CMD_FLAG_FUA;
    }
    switch (req->type) {
    case NBD_CMD_READ:
    case NBD_CMD_CACHE:
        break;
    case NBD_CMD_WRITE:
        writes = true;
        break;
    case NBD_CMD_FLUSH:
        if (!(lim->tx_flags & NBD_FLAG_SEND_FLUSH)) {
            return NBD_EINVAL;
        }
        /* Offset and length are reserved: ignore whatever they hold. */
        return (req->flags & ~allowed) ? NBD_EINVAL : 0;
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
        /*
         * A read-only export advertises neither, yet the spec asks for
         * EPERM there ("a write or trim request on a read-only export"):
         * the client learns why, not just that the command is unknown.
         */
        if (lim->tx_flags & NBD_FLAG_READ_ONLY) {
            return NBD_EPERM;
        }
        if (!(lim->tx_flags & (req->type == NBD_CMD_TRIM ?
                               NBD_FLAG_SEND_TRIM :
                               NBD_FLAG_SEND_WRITE_ZEROES))) {
            return NBD_EINVAL;
        }
        writes = true;
        break;
    case NBD_CMD_BLOCK_STATUS:
        if (!lim->structured || !lim->meta_selected || req->len == 0) {
            return NBD_EINVAL;
        }
        break;
    default:
        return NBD_EINVAL;
    }
    if (req->flags & ~allowed) {
        return NBD_EINVAL;
    }
    if (writes && (lim->tx_flags & NBD_FLAG_READ_ONLY)) {
        return NBD_EPERM;
    }
    if ((req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE) &&
        req->len > NBD_MAX_PAYLOAD) {
        return (req->type == NBD_CMD_READ && lim->structured) ?
               NBD_EOVERFLOW : NBD_EINVAL;
    }
    if (req->len > lim->size || req->offset > lim->size - req->len) {
        /* The spec's choice: past the end, writes ENOSPC, the rest EINVAL. */
        return (req->type == NBD_CMD_WRITE ||
                req->type == NBD_CMD_WRITE_ZEROES) ? NBD_ENOSPC : NBD_EINVAL;
    }
    if (req->type != NBD_CMD_BLOCK_STATUS && lim->min_block > 1 &&
        ((req->offset | req->len) & (lim->min_block - 1))) {
        return NBD_EINVAL;
    }
    return 0;
}

uint32_t nbd_errno_to_wire(int err)
{
    switch (err < 0 ? -err : err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case EIO:
        return NBD_EIO;
    case ENOMEM:
        return NBD_ENOMEM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        /* QEMU's choice too: the spec says to treat unknown as EINVAL. */
        return NBD_EINVAL;
    }
}

/*
 * Length of the valid UTF-8 character at @p (@len bytes left), or 0 if it
 * is invalid (overlong, a surrogate, above U+10FFFF, cut short) or a
 * control character.
 */
static size_t utf8_char(const uint8_t *p, size_t len)
{
    uint8_t lo = 0x80, hi = 0xbf;
    size_t n;

    if (p[0] < 0x80) {
        return p[0] < 0x20 || p[0] == 0x7f ? 0 : 1;
    } else if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        lo = p[0] == 0xe0 ? 0xa0 : 0x80;
        hi = p[0] == 0xed ? 0x9f : 0xbf;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        lo = p[0] == 0xf0 ? 0x90 : 0x80;
        hi = p[0] == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (len < n || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }
    return n;
}

size_t nbd_sanitize_string(char *dst, size_t size, const uint8_t *src,
                           size_t len)
{
    size_t limit = size - 1, i = 0, o = 0, cut = 0;

    while (i < len) {
        size_t n = utf8_char(src + i, len - i);
        size_t w = n ? n : 1;

        if (o + w > limit) {
            /* @cut leaves room for the ellipsis. */
            memcpy(dst + cut, "...", 3);
            o = cut + 3;
            break;
        }
        if (n) {
            memcpy(dst + o, src + i, n);
        } else {
            dst[o] = '?';
        }
        o += w;
        i += w;
        if (o + 3 <= limit) {
            cut = o;
        }
    }
    dst[o] = '\0';
    return o;
}

size_t nbd_encode_option_reply(uint8_t *buf, uint32_t option, uint32_t type,
                               uint32_t len)
{
    uint8_t *p = nbd_st64(buf, NBD_REP_MAGIC);

    p = nbd_st32(p, option);
    p = nbd_st32(p, type);
    p = nbd_st32(p, len);
    return (size_t)(p - buf);
}

size_t nbd_encode_simple_reply(uint8_t *buf, uint64_t cookie, uint32_t error)
{
    uint8_t *p = nbd_st32(buf, NBD_SIMPLE_REPLY_MAGIC);

    p = nbd_st32(p, error);
    p = nbd_st64(p, cookie);
    return (size_t)(p - buf);
}

size_t nbd_encode_chunk(uint8_t *buf, uint64_t cookie, uint16_t flags,
                        uint16_t type, uint32_t len)
{
    uint8_t *p = nbd_st32(buf, NBD_STRUCTURED_REPLY_MAGIC);

    p = nbd_st16(p, flags);
    p = nbd_st16(p, type);
    p = nbd_st64(p, cookie);
    p = nbd_st32(p, len);
    return (size_t)(p - buf);
}

const char *nbd_opt_name(uint32_t opt)
{
    static const char *const names[] = {
        [NBD_OPT_EXPORT_NAME] = "EXPORT_NAME",
        [NBD_OPT_ABORT] = "ABORT",
        [NBD_OPT_LIST] = "LIST",
        [NBD_OPT_STARTTLS] = "STARTTLS",
        [NBD_OPT_INFO] = "INFO",
        [NBD_OPT_GO] = "GO",
        [NBD_OPT_STRUCTURED_REPLY] = "STRUCTURED_REPLY",
        [NBD_OPT_LIST_META_CONTEXT] = "LIST_META_CONTEXT",
        [NBD_OPT_SET_META_CONTEXT] = "SET_META_CONTEXT",
    };

    if (opt < sizeof(names) / sizeof(names[0]) && names[opt]) {
        return names[opt];
    }
    return "unknown option";
}

const char *nbd_cmd_name(uint16_t cmd)
{
    static const char *const names[] = {
        [NBD_CMD_READ] = "READ",
        [NBD_CMD_WRITE] = "WRITE",
        [NBD_CMD_DISC] = "DISC",
        [NBD_CMD_FLUSH] = "FLUSH",
        [NBD_CMD_TRIM] = "TRIM",
        [NBD_CMD_CACHE] = "CACHE",
        [NBD_CMD_WRITE_ZEROES] = "WRITE_ZEROES",
        [NBD_CMD_BLOCK_STATUS] = "BLOCK_STATUS",
    };

    if (cmd < sizeof(names) / sizeof(names[0]) && names[cmd]) {
        return names[cmd];
    }
    return "unknown command";
}
