/*
 * The NBD protocol's wire format (../shared/spec/nbd-protocol.md): the
 * constants, and pure functions that decode what a client sends and encode
 * what the server answers.  Nothing here does I/O or allocates, so the fuzz
 * target (tests/nbd/fuzz-nbd-proto.c) can drive every decoder directly.
 */
#ifndef AIOLOOP_NBD_PROTO_H
#define AIOLOOP_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Handshake. */
#define NBD_INIT_MAGIC            0x4e42444d41474943ULL /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC            0x49484156454f5054ULL /* "IHAVEOPT" */
#define NBD_REP_MAGIC             0x0003e889045565a9ULL

#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

#define NBD_REP_ACK               1
#define NBD_REP_SERVER            2
#define NBD_REP_INFO              3
#define NBD_REP_META_CONTEXT      4
#define NBD_REP_ERR(n)            ((1u << 31) | (n))
#define NBD_REP_ERR_UNSUP         NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY        NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID       NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM      NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD      NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN       NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN      NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG       NBD_REP_ERR(9)

#define NBD_INFO_EXPORT           0
#define NBD_INFO_NAME             1
#define NBD_INFO_DESCRIPTION      2
#define NBD_INFO_BLOCK_SIZE       3

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS        (1u << 0)
#define NBD_FLAG_READ_ONLY        (1u << 1)
#define NBD_FLAG_SEND_FLUSH       (1u << 2)
#define NBD_FLAG_SEND_FUA         (1u << 3)
#define NBD_FLAG_ROTATIONAL       (1u << 4)
#define NBD_FLAG_SEND_TRIM        (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF          (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN   (1u << 8)
#define NBD_FLAG_SEND_CACHE       (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO   (1u << 11)

/* Transmission. */
#define NBD_REQUEST_MAGIC         0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC    0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

#define NBD_CMD_READ              0
#define NBD_CMD_WRITE             1
#define NBD_CMD_DISC              2
#define NBD_CMD_FLUSH             3
#define NBD_CMD_TRIM              4
#define NBD_CMD_CACHE             5
#define NBD_CMD_WRITE_ZEROES      6
#define NBD_CMD_BLOCK_STATUS      7

#define NBD_CMD_FLAG_FUA          (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE      (1u << 1)
#define NBD_CMD_FLAG_DF           (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE      (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO    (1u << 4)

#define NBD_REPLY_FLAG_DONE       (1u << 0)
#define NBD_REPLY_TYPE_NONE       0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR      ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

#define NBD_STATE_HOLE            (1u << 0)
#define NBD_STATE_ZERO            (1u << 1)

/* Error values: the protocol's, which happen to be Linux errno numbers. */
#define NBD_EPERM                 1
#define NBD_EIO                   5
#define NBD_ENOMEM                12
#define NBD_EINVAL                22
#define NBD_ENOSPC                28
#define NBD_EOVERFLOW             75
#define NBD_ENOTSUP               95
#define NBD_ESHUTDOWN             108

/* Sizes. */
#define NBD_REQUEST_SIZE          28
#define NBD_SIMPLE_REPLY_SIZE     16
#define NBD_STRUCTURED_REPLY_SIZE 20
#define NBD_OPTION_HEADER_SIZE    16
#define NBD_OPTION_REPLY_SIZE     20
#define NBD_MAX_STRING            4096  /* names, queries, messages */
/* Largest option payload we read: a GO with a 4 KiB name and every info. */
#define NBD_MAX_OPTION_SIZE       (NBD_MAX_STRING * 2)
/* Largest READ/WRITE payload we serve (the spec's interoperable maximum). */
#define NBD_MAX_PAYLOAD           (32u * 1024 * 1024)
/* Queries accepted in one LIST/SET_META_CONTEXT. */
#define NBD_MAX_META_QUERIES      16
#define NBD_META_ID_BASE_ALLOCATION 1

/* Big-endian load/store. */
static inline uint16_t nbd_ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t nbd_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t nbd_ld64(const uint8_t *p)
{
    return (uint64_t)nbd_ld32(p) << 32 | nbd_ld32(p + 4);
}

static inline uint8_t *nbd_st16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = (uint8_t)v;
    return p + 2;
}

static inline uint8_t *nbd_st32(uint8_t *p, uint32_t v)
{
    nbd_st16(p, v >> 16);
    nbd_st16(p + 2, (uint16_t)v);
    return p + 4;
}

static inline uint8_t *nbd_st64(uint8_t *p, uint64_t v)
{
    nbd_st32(p, v >> 32);
    nbd_st32(p + 4, (uint32_t)v);
    return p + 8;
}

/* A string inside a client's option payload: not NUL-terminated. */
typedef struct NBDString {
    const uint8_t *data;
    uint32_t len;
} NBDString;

/* NBD_OPT_INFO / NBD_OPT_GO payload. */
typedef struct NBDInfoRequest {
    NBDString name;
    uint16_t ninfo;
    bool want_name;
    bool want_description;
    bool want_block_size;
} NBDInfoRequest;

/* NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload. */
typedef struct NBDMetaRequest {
    NBDString name;
    uint32_t nqueries;
    NBDString queries[NBD_MAX_META_QUERIES];
} NBDMetaRequest;

typedef struct NBDRequest {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t len;
} NBDRequest;

/* What a request may do, decided at negotiation (nbd_check_request()). */
typedef struct NBDExportLimits {
    uint64_t size;
    uint16_t tx_flags;       /* the transmission flags advertised */
    uint32_t min_block;      /* 1, or the O_DIRECT alignment */
    bool structured;         /* structured replies negotiated */
    bool meta_selected;      /* a metadata context is selected */
} NBDExportLimits;

/*
 * Each decoder returns 0, or the NBD_REP_ERR_* the option deserves
 * (NBD_REP_ERR_INVALID for a malformed payload, NBD_REP_ERR_TOO_BIG for
 * more queries than we accept).  The strings point into @buf.
 */
uint32_t nbd_parse_info_request(const uint8_t *buf, uint32_t len,
                                NBDInfoRequest *req);
uint32_t nbd_parse_meta_request(const uint8_t *buf, uint32_t len,
                                NBDMetaRequest *req);

/*
 * What a metadata query selects: true if @query names base:allocation
 * (for LIST, the namespace wildcard "base:" does too).  Unknown namespaces
 * and leaf names select nothing, as the spec requires.
 */
bool nbd_meta_query_matches(NBDString query, bool list);

/* Decode the 28-byte request header; false if the magic is wrong. */
bool nbd_parse_request(const uint8_t *buf, NBDRequest *req);

/*
 * Validate @req against the export: returns 0 or the NBD_E* error to
 * reply with.  It does not look at the payload, which the caller must
 * still read (WRITE) or skip.
 */
uint32_t nbd_check_request(const NBDRequest *req, const NBDExportLimits *lim);

/* The NBD_E* value for a -errno from the block layer. */
uint32_t nbd_errno_to_wire(int err);

/*
 * Client bytes @src (@len) as a NUL-terminated string in @dst (@size >= 4
 * bytes) fit to quote in an error message, which must be UTF-8 of at most
 * NBD_MAX_STRING bytes: invalid UTF-8 and control characters become '?',
 * and a string too long is cut at a character boundary and ends in "...".
 * Returns the length.
 */
size_t nbd_sanitize_string(char *dst, size_t size, const uint8_t *src,
                           size_t len);

/* Encoders: fill @buf, return the bytes written. */
size_t nbd_encode_option_reply(uint8_t *buf, uint32_t option, uint32_t type,
                               uint32_t len);
size_t nbd_encode_simple_reply(uint8_t *buf, uint64_t cookie, uint32_t error);
size_t nbd_encode_chunk(uint8_t *buf, uint64_t cookie, uint16_t flags,
                        uint16_t type, uint32_t len);

const char *nbd_opt_name(uint32_t opt);
const char *nbd_cmd_name(uint16_t cmd);

#endif /* AIOLOOP_NBD_PROTO_H */
