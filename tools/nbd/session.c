/*
 * One NBD client: the fixed-newstyle handshake in the main context, then
 * the transmission phase in its export's context.
 *
 * Transmission follows QEMU's nbd/server.c: one coroutine per request
 * ("trip") reads the request, starts the next trip so reading and serving
 * overlap, serves it through the block engine and sends the reply under
 * the client's send lock.  Reads stop at a request boundary when the export
 * is drained (the trip "parks" the client) and when the client leaves.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <aioloop/block-io.h>
#include <aioloop/iov.h>
#include <aioloop/thread-pool.h>

#include "nbd-internal.h"

/*
 * Largest option payload we read and drop (the data of options that take
 * none or that we do not know, and of options too long to take whole);
 * beyond it the client is disconnected.  Dropping streams through the
 * option buffer, so it costs no memory, and the handshake timeout bounds
 * the time it can take.
 */
#define NBD_MAX_OPTION_DISCARD (16 * 1024 * 1024)
/* Extents one BLOCK_STATUS reply describes at most. */
#define NBD_MAX_EXTENTS 1024
/* Extent length cap: a multiple of every block size, below 2^32. */
#define NBD_MAX_EXTENT_LEN 0x80000000u

/* A trip's outcome when the export is drained: stop, no error. */
#define TRIP_PARK 1

/* ------------------------------------------------------------------ */
/* Handshake */

static int coroutine_fn opt_reply(NBDClient *client, uint32_t opt,
                                  uint32_t type, const void *data,
                                  uint32_t len)
{
    uint8_t hdr[NBD_OPTION_REPLY_SIZE];
    struct iovec iov[2] = {
        { hdr, nbd_encode_option_reply(hdr, opt, type, len) },
        { (void *)data, len },
    };

    return chan_writev(&client->chan, iov, len ? 2 : 1);
}

static int coroutine_fn opt_error(NBDClient *client, uint32_t opt,
                                  uint32_t type, const char *msg)
{
    return opt_reply(client, opt, type, msg, (uint32_t)strlen(msg));
}

/* An NBDString as a C string in @buf (NBD_MAX_STRING + 1 bytes). */
static const char *cstr(NBDString s, char *buf)
{
    memcpy(buf, s.data, s.len);
    buf[s.len] = '\0';
    return buf;
}

static uint16_t client_tx_flags(NBDClient *client, NBDExport *exp)
{
    uint16_t flags = exp->tx_flags;

    if (client->structured) {
        flags |= NBD_FLAG_SEND_DF;
    }
    return flags;
}

static uint32_t pref_block(NBDExport *exp)
{
    return exp->min_block > 4096 ? exp->min_block : 4096;
}

/* The NBD_REP_INFO replies of INFO/GO; the caller sends the final ACK. */
static int coroutine_fn send_info(NBDClient *client, uint32_t opt,
                                  NBDExport *exp, const NBDInfoRequest *ir)
{
    uint8_t buf[2 + NBD_MAX_STRING];
    uint8_t *p;
    size_t n;
    int ret;

    p = nbd_st16(buf, NBD_INFO_EXPORT);
    p = nbd_st64(p, exp->size);
    p = nbd_st16(p, client_tx_flags(client, exp));
    ret = opt_reply(client, opt, NBD_REP_INFO, buf, (uint32_t)(p - buf));
    if (ret < 0) {
        return ret;
    }
    if (ir->want_name) {
        n = strlen(exp->name);
        nbd_st16(buf, NBD_INFO_NAME);
        memcpy(buf + 2, exp->name, n);
        ret = opt_reply(client, opt, NBD_REP_INFO, buf, (uint32_t)(2 + n));
        if (ret < 0) {
            return ret;
        }
    }
    if (ir->want_description && exp->description) {
        n = strlen(exp->description);
        nbd_st16(buf, NBD_INFO_DESCRIPTION);
        memcpy(buf + 2, exp->description, n);
        ret = opt_reply(client, opt, NBD_REP_INFO, buf, (uint32_t)(2 + n));
        if (ret < 0) {
            return ret;
        }
    }
    /* Always sent, as QEMU does: clients that did not ask ignore it. */
    p = nbd_st16(buf, NBD_INFO_BLOCK_SIZE);
    p = nbd_st32(p, exp->min_block);
    p = nbd_st32(p, pref_block(exp));
    p = nbd_st32(p, NBD_MAX_PAYLOAD);
    return opt_reply(client, opt, NBD_REP_INFO, buf, (uint32_t)(p - buf));
}

static void client_set_limits(NBDClient *client, NBDExport *exp)
{
    client->lim = (NBDExportLimits) {
        .size = exp->size,
        .tx_flags = client_tx_flags(client, exp),
        .min_block = exp->min_block,
        .structured = client->structured,
        .meta_selected = client->structured && client->meta_export &&
                         !strcmp(client->meta_export, exp->id),
    };
}

static int coroutine_fn opt_list(NBDClient *client, uint32_t len)
{
    uint8_t buf[4 + 2 * NBD_MAX_STRING];
    uint64_t serial = 0;
    NBDExport *exp;

    if (len) {
        return opt_error(client, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
                         "NBD_OPT_LIST takes no data");
    }
    /*
     * Each reply is copied into @buf before the write, which may yield:
     * exports may come and go meanwhile, so the walk goes on from the
     * serial of the last one listed, never through a pointer kept across.
     */
    while ((exp = nbd_export_after(client->srv, serial))) {
        size_t n = strlen(exp->name), d;
        int ret;

        serial = exp->serial;
        if (exp->deleting) {
            continue;
        }
        nbd_st32(buf, (uint32_t)n);
        memcpy(buf + 4, exp->name, n);
        d = exp->description ? strlen(exp->description) : 0;
        if (d) {
            memcpy(buf + 4 + n, exp->description, d);
        }
        ret = opt_reply(client, NBD_OPT_LIST, NBD_REP_SERVER, buf,
                        (uint32_t)(4 + n + d));
        if (ret < 0) {
            return ret;
        }
    }
    return opt_reply(client, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/*
 * NBD_OPT_INFO and NBD_OPT_GO.  Returns 1 when GO succeeded (*pexp set,
 * with a reference for the caller), 0 to go on negotiating, -errno to drop
 * the client.
 */
static int coroutine_fn opt_info_go(NBDClient *client, uint32_t opt,
                                    const uint8_t *data, uint32_t len,
                                    NBDExport **pexp)
{
    char name[NBD_MAX_STRING + 1];
    NBDInfoRequest ir;
    NBDExport *exp;
    uint32_t err;
    int ret;

    err = nbd_parse_info_request(data, len, &ir);
    if (err) {
        return opt_error(client, opt, err, "malformed INFO/GO request");
    }
    /* Strings MUST NOT contain NUL; "a\0b" would find export "a". */
    if (memchr(ir.name.data, '\0', ir.name.len)) {
        return opt_error(client, opt, NBD_REP_ERR_INVALID,
                         "export name contains NUL");
    }
    exp = nbd_export_find(client->srv, cstr(ir.name, name));
    if (!exp) {
        /*
         * The client's bytes, quoted: a message must be UTF-8 and should
         * stay within 256 bytes, while a name may be any 4096 bytes.
         */
        char shown[200], msg[256];

        nbd_sanitize_string(shown, sizeof(shown), ir.name.data, ir.name.len);
        snprintf(msg, sizeof(msg), "export '%s' not present", shown);
        return opt_error(client, opt, NBD_REP_ERR_UNKNOWN, msg);
    }
    /* The writes may yield, and export-del run meanwhile. */
    nbd_export_ref(exp);
    ret = send_info(client, opt, exp, &ir);
    if (ret == 0 && exp->deleting) {
        ret = opt_error(client, opt, NBD_REP_ERR_UNKNOWN,
                        "export removed meanwhile");
        goto out;
    }
    if (ret == 0) {
        ret = opt_reply(client, opt, NBD_REP_ACK, NULL, 0);
    }
    if (ret == 0 && opt == NBD_OPT_GO) {
        /* Deleted during the ACK: nbd_export_attach() refuses it. */
        client_set_limits(client, exp);
        *pexp = exp;
        return 1;
    }
out:
    nbd_export_unref(exp);
    return ret;
}

static int coroutine_fn opt_meta_context(NBDClient *client, uint32_t opt,
                                         const uint8_t *data, uint32_t len)
{
    static const char ctx_name[] = "base:allocation";
    bool list = opt == NBD_OPT_LIST_META_CONTEXT;
    char name[NBD_MAX_STRING + 1];
    uint8_t reply[4 + sizeof(ctx_name)];
    char *meta_export = NULL;
    NBDMetaRequest mr;
    NBDExport *exp;
    bool match = false;
    uint32_t err;
    int ret;

    if (!list) {
        /* SET replaces the selection, even when it fails. */
        free(client->meta_export);
        client->meta_export = NULL;
    }
    if (!client->structured) {
        return opt_error(client, opt, NBD_REP_ERR_INVALID,
                         "structured replies not negotiated");
    }
    err = nbd_parse_meta_request(data, len, &mr);
    if (err) {
        return opt_error(client, opt, err, "malformed meta context request");
    }
    if (memchr(mr.name.data, '\0', mr.name.len)) {
        return opt_error(client, opt, NBD_REP_ERR_INVALID,
                         "export name contains NUL");
    }
    exp = nbd_export_find(client->srv, cstr(mr.name, name));
    if (!exp) {
        return opt_error(client, opt, NBD_REP_ERR_UNKNOWN,
                         "export not present");
    }
    if (list && mr.nqueries == 0) {
        match = true;
    }
    for (uint32_t i = 0; i < mr.nqueries; i++) {
        match |= nbd_meta_query_matches(mr.queries[i], list);
    }
    if (match) {
        uint32_t id = list ? 0 : NBD_META_ID_BASE_ALLOCATION;

        nbd_st32(reply, id);
        memcpy(reply + 4, ctx_name, sizeof(ctx_name) - 1);
        if (!list) {
            /* Before the write: the export may be deleted while it waits. */
            meta_export = strdup(exp->id);
        }
        ret = opt_reply(client, opt, NBD_REP_META_CONTEXT, reply,
                        (uint32_t)(4 + sizeof(ctx_name) - 1));
        if (ret < 0) {
            free(meta_export);
            return ret;
        }
        if (!list) {
            /* LIST leaves SET's selection alone. */
            client->meta_export = meta_export;
        }
    }
    return opt_reply(client, opt, NBD_REP_ACK, NULL, 0);
}

/* Options whose data we read and parse; the others' is dropped unread. */
static bool option_uses_data(uint32_t opt)
{
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return true;
    default:
        return false;
    }
}

/* Read and drop @len bytes of an option we will not use. */
static int coroutine_fn discard(NBDClient *client, uint32_t len,
                                uint8_t *scratch, size_t size)
{
    while (len) {
        uint32_t n = len < size ? len : (uint32_t)size;
        int ret = chan_read(&client->chan, scratch, n);

        if (ret < 0) {
            return ret;
        }
        len -= n;
    }
    return 0;
}

/*
 * Returns 0 with *pexp set (and referenced) when transmission starts,
 * -errno otherwise.
 */
static int coroutine_fn negotiate(NBDClient *client, uint8_t *data,
                                  NBDExport **pexp)
{
    uint8_t buf[NBD_OPTION_HEADER_SIZE + 128];
    uint32_t cflags;
    bool fixed;
    int ret;

    nbd_st64(buf, NBD_INIT_MAGIC);
    nbd_st64(buf + 8, NBD_OPTS_MAGIC);
    nbd_st16(buf + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    ret = chan_write(&client->chan, buf, 18);
    if (ret < 0) {
        return ret;
    }
    ret = chan_read(&client->chan, buf, 4);
    if (ret < 0) {
        return ret;
    }
    cflags = nbd_ld32(buf);
    if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        return -EPROTO;     /* the spec: unknown client flags end it */
    }
    fixed = cflags & NBD_FLAG_C_FIXED_NEWSTYLE;
    client->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

    for (;;) {
        uint32_t opt, len;

        ret = chan_read(&client->chan, buf, NBD_OPTION_HEADER_SIZE);
        if (ret < 0) {
            return ret;
        }
        if (nbd_ld64(buf) != NBD_OPTS_MAGIC) {
            return -EPROTO;
        }
        opt = nbd_ld32(buf + 8);
        len = nbd_ld32(buf + 12);
        if (!fixed && opt != NBD_OPT_EXPORT_NAME) {
            return -EPROTO; /* old newstyle clients know no other option */
        }
        if (len > NBD_MAX_OPTION_DISCARD ||
            (opt == NBD_OPT_EXPORT_NAME && len > NBD_MAX_OPTION_SIZE)) {
            return -EPROTO;
        }
        if (!option_uses_data(opt)) {
            /*
             * The answer depends on @len alone: ABORT's data is ignored
             * (as the spec asks), an unknown option is unsupported however
             * long, LIST or STRUCTURED_REPLY with data is invalid.
             */
            ret = discard(client, len, data, NBD_MAX_OPTION_SIZE);
        } else if (len > NBD_MAX_OPTION_SIZE) {
            ret = discard(client, len, data, NBD_MAX_OPTION_SIZE);
            if (ret == 0) {
                ret = opt_error(client, opt, NBD_REP_ERR_TOO_BIG,
                                "option too long");
            }
            if (ret < 0) {
                return ret;
            }
            continue;
        } else {
            ret = chan_read(&client->chan, data, len);
        }
        if (ret < 0) {
            return ret;
        }
        if (client->srv->shutting_down && opt != NBD_OPT_ABORT) {
            if (opt == NBD_OPT_EXPORT_NAME) {
                return -ESHUTDOWN;
            }
            ret = opt_error(client, opt, NBD_REP_ERR_SHUTDOWN,
                            "server shutting down");
            if (ret < 0) {
                return ret;
            }
            continue;
        }

        switch (opt) {
        case NBD_OPT_EXPORT_NAME: {
            char name[NBD_MAX_STRING + 1];
            NBDExport *exp;
            uint8_t *p = buf;

            /* No error reply exists for EXPORT_NAME: hang up. */
            if (len > NBD_MAX_STRING || memchr(data, '\0', len)) {
                return -EPROTO;
            }
            memcpy(name, data, len);
            name[len] = '\0';
            exp = nbd_export_find(client->srv, name);
            if (!exp) {
                return -ENOENT;     /* no way to say so but hanging up */
            }
            client_set_limits(client, exp);
            p = nbd_st64(p, exp->size);
            p = nbd_st16(p, client->lim.tx_flags);
            if (!client->no_zeroes) {
                memset(p, 0, 124);
                p += 124;
            }
            /* The caller's; the write may yield, export-del run meanwhile. */
            nbd_export_ref(exp);
            ret = chan_write(&client->chan, buf, (size_t)(p - buf));
            if (ret < 0) {
                nbd_export_unref(exp);
                return ret;
            }
            *pexp = exp;
            return 0;
        }
        case NBD_OPT_ABORT:
            opt_reply(client, opt, NBD_REP_ACK, NULL, 0);
            return -ECONNABORTED;
        case NBD_OPT_LIST:
            ret = opt_list(client, len);
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            ret = opt_info_go(client, opt, data, len, pexp);
            if (ret == 1) {
                return 0;
            }
            break;
        case NBD_OPT_STRUCTURED_REPLY:
            if (len) {
                ret = opt_error(client, opt, NBD_REP_ERR_INVALID,
                                "NBD_OPT_STRUCTURED_REPLY takes no data");
            } else if (client->structured) {
                ret = opt_error(client, opt, NBD_REP_ERR_INVALID,
                                "structured replies already negotiated");
            } else {
                client->structured = true;
                ret = opt_reply(client, opt, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            ret = opt_meta_context(client, opt, data, len);
            break;
        case NBD_OPT_STARTTLS:
            /* NOTLS mode: the spec's answer is ERR_UNSUP. */
        default:
            ret = opt_error(client, opt, NBD_REP_ERR_UNSUP,
                            "option not supported");
            break;
        }
        if (ret < 0) {
            return ret;
        }
    }
}

static void client_unlink_negotiating(NBDClient *client)
{
    NBDClient **pp = &client->srv->negotiating;

    while (*pp != client) {
        pp = &(*pp)->next;
    }
    *pp = client->next;
    client->next = NULL;
}

void coroutine_fn nbd_client_negotiate_co(void *opaque)
{
    NBDClient *client = opaque;
    uint8_t *data = malloc(NBD_MAX_OPTION_SIZE);
    NBDExport *exp = NULL;
    AioContext *ctx;
    int ret;

    ret = data ? negotiate(client, data, &exp) : -ENOMEM;
    free(data);
    /* The timer belongs to the main context: free it here. */
    timer_free(client->handshake_timer);
    client->handshake_timer = NULL;
    client_unlink_negotiating(client);
    chan_detach(&client->chan);
    if (ret < 0 || !nbd_export_attach(exp, client, &ctx)) {
        nbd_export_unref(exp);
        nbd_client_free(client);
        return;
    }
    /* Attached: export-del now disconnects the client before freeing. */
    nbd_export_unref(exp);
    if (client->parked) {
        return;     /* drained meanwhile: the drain's end starts it */
    }
    /* From here on, the client lives in its export's context. */
    aio_co_reschedule_self(ctx);
    nbd_client_trip_co(client);
}

/* ------------------------------------------------------------------ */
/* Transmission */

static void client_shutdown(NBDClient *client)
{
    client->closing = true;
    /* Wakes a reader blocked on the socket with end-of-stream. */
    shutdown(client->chan.fd, SHUT_RDWR);
}

static int coroutine_fn client_send(NBDClient *client, struct iovec *iov,
                                    int niov)
{
    int ret;

    qemu_co_mutex_lock(&client->send_lock);
    ret = chan_writev(&client->chan, iov, niov);
    qemu_co_mutex_unlock(&client->send_lock);
    if (ret < 0) {
        client_shutdown(client);
    }
    return ret;
}

static int coroutine_fn send_simple(NBDClient *client, uint64_t cookie,
                                    uint32_t error, void *data, size_t len)
{
    uint8_t hdr[NBD_SIMPLE_REPLY_SIZE];
    struct iovec iov[2] = {
        { hdr, nbd_encode_simple_reply(hdr, cookie, error) },
        { data, len },
    };

    return client_send(client, iov, len ? 2 : 1);
}

static int coroutine_fn send_error(NBDClient *client, const NBDRequest *req,
                                   uint32_t error)
{
    uint8_t buf[NBD_STRUCTURED_REPLY_SIZE + 6];
    struct iovec iov = { buf, sizeof(buf) };

    if (!client->structured) {
        return send_simple(client, req->cookie, error, NULL, 0);
    }
    nbd_encode_chunk(buf, req->cookie, NBD_REPLY_FLAG_DONE,
                     NBD_REPLY_TYPE_ERROR, 6);
    nbd_st32(buf + NBD_STRUCTURED_REPLY_SIZE, error);
    nbd_st16(buf + NBD_STRUCTURED_REPLY_SIZE + 4, 0);
    return client_send(client, &iov, 1);
}

static int coroutine_fn send_ok(NBDClient *client, const NBDRequest *req)
{
    uint8_t buf[NBD_STRUCTURED_REPLY_SIZE];
    struct iovec iov = { buf, sizeof(buf) };

    if (!client->structured) {
        return send_simple(client, req->cookie, 0, NULL, 0);
    }
    nbd_encode_chunk(buf, req->cookie, NBD_REPLY_FLAG_DONE,
                     NBD_REPLY_TYPE_NONE, 0);
    return client_send(client, &iov, 1);
}

static int coroutine_fn send_read(NBDClient *client, const NBDRequest *req,
                                  void *data)
{
    uint8_t hdr[NBD_STRUCTURED_REPLY_SIZE + 8];
    struct iovec iov[2] = { { hdr, 0 }, { data, req->len } };

    if (!client->structured) {
        return send_simple(client, req->cookie, 0, data, req->len);
    }
    if (req->len == 0) {
        return send_ok(client, req);    /* a data chunk holds >= 1 byte */
    }
    /* One data chunk, final: no error can follow the data. */
    nbd_encode_chunk(hdr, req->cookie, NBD_REPLY_FLAG_DONE,
                     NBD_REPLY_TYPE_OFFSET_DATA, 8 + req->len);
    nbd_st64(hdr + NBD_STRUCTURED_REPLY_SIZE, req->offset);
    iov[0].iov_len = sizeof(hdr);
    return client_send(client, iov, 2);
}

/*
 * Request buffers, cached per thread.  Every request needs one (aligned for
 * O_DIRECT), and glibc serves 4 KiB-aligned blocks from the top of the heap:
 * allocating and freeing them per request moved the break (brk) back and
 * forth once per loop iteration.  A trip frees its buffer in the thread that
 * allocated it (an export does not move while requests are in flight), so
 * a thread-local cache per power-of-two size needs no lock.
 */
#define BUF_MIN_SHIFT 12            /* 4 KiB */
#define BUF_MAX_SHIFT 20            /* 1 MiB: larger ones are not cached */
#define BUF_CACHE_BYTES (16u << 20) /* per thread */

typedef struct BufCache {
    void *free[BUF_MAX_SHIFT - BUF_MIN_SHIFT + 1][32];
    unsigned count[BUF_MAX_SHIFT - BUF_MIN_SHIFT + 1];
    size_t bytes;
} BufCache;

static __thread BufCache *buf_cache;
static pthread_key_t buf_cache_key;
static pthread_once_t buf_cache_once = PTHREAD_ONCE_INIT;

/* At thread exit (an IOThread stopping): free what the thread cached. */
static void buf_cache_destroy(void *opaque)
{
    BufCache *bc = opaque;

    for (unsigned c = 0; c <= BUF_MAX_SHIFT - BUF_MIN_SHIFT; c++) {
        while (bc->count[c]) {
            free(bc->free[c][--bc->count[c]]);
        }
    }
    free(bc);
    buf_cache = NULL;
}

static void buf_cache_key_init(void)
{
    pthread_key_create(&buf_cache_key, buf_cache_destroy);
}

static int buf_class(size_t len)
{
    int shift = BUF_MIN_SHIFT;

    while (((size_t)1 << shift) < len) {
        shift++;
    }
    return shift > BUF_MAX_SHIFT ? -1 : shift - BUF_MIN_SHIFT;
}

static void *buf_alloc(size_t len)
{
    int cls = buf_class(len);
    void *p = NULL;

    if (cls >= 0) {
        BufCache *bc = buf_cache;

        if (bc && bc->count[cls]) {
            bc->bytes -= (size_t)1 << (cls + BUF_MIN_SHIFT);
            return bc->free[cls][--bc->count[cls]];
        }
        len = (size_t)1 << (cls + BUF_MIN_SHIFT);
    }
    if (posix_memalign(&p, 4096, len)) {
        return NULL;
    }
    return p;
}

static void buf_free(void *p, size_t len)
{
    int cls = buf_class(len);
    BufCache *bc = buf_cache;

    if (!p) {
        return;
    }
    if (cls >= 0 && !bc) {
        bc = buf_cache = calloc(1, sizeof(*bc));
        pthread_once(&buf_cache_once, buf_cache_key_init);
        pthread_setspecific(buf_cache_key, bc);
    }
    if (cls >= 0 && bc && bc->count[cls] < 32 &&
        bc->bytes + ((size_t)1 << (cls + BUF_MIN_SHIFT)) <= BUF_CACHE_BYTES) {
        bc->free[cls][bc->count[cls]++] = p;
        bc->bytes += (size_t)1 << (cls + BUF_MIN_SHIFT);
        return;
    }
    free(p);
}

typedef struct FallocJob {
    int fd;
    int mode;
    uint64_t offset, len;
} FallocJob;

static int falloc_job(void *opaque)
{
    FallocJob *job = opaque;

    if (fallocate(job->fd, job->mode, (off_t)job->offset,
                  (off_t)job->len) < 0) {
        return -errno;
    }
    return 0;
}

static int coroutine_fn co_fallocate(int fd, int mode, uint64_t offset,
                                     uint64_t len)
{
    FallocJob job = { fd, mode, offset, len };

    return thread_pool_submit_co(falloc_job, &job);
}

static bool not_supported(int ret)
{
    return ret == -EOPNOTSUPP || ret == -ENOTSUP || ret == -ENOSYS ||
           ret == -EINVAL;
}

/* Zero by writing zeroes: the fallback when the filesystem cannot. */
static int coroutine_fn write_zeroes_slow(NBDExport *exp, uint64_t offset,
                                          uint64_t len, BdrvRequestFlags fl)
{
    size_t chunk = len < 1024 * 1024 ? (size_t)len : 1024 * 1024;
    void *zero = buf_alloc(chunk);
    int ret = 0;

    if (!zero) {
        return -ENOMEM;
    }
    memset(zero, 0, chunk);
    while (len && ret == 0) {
        size_t n = len < chunk ? (size_t)len : chunk;
        QEMUIOVector qiov;

        qemu_iovec_init_buf(&qiov, zero, n);
        ret = aioloop_co_submit(exp->engine, exp->fd, offset, &qiov,
                                QEMU_AIO_WRITE, fl);
        offset += n;
        len -= n;
    }
    buf_free(zero, chunk);
    return ret;
}

static int coroutine_fn do_write_zeroes(NBDExport *exp, const NBDRequest *req)
{
    int ret;

    if (!(req->flags & NBD_CMD_FLAG_NO_HOLE)) {
        /* A hole reads back as zeroes and costs no space. */
        ret = co_fallocate(exp->fd, FALLOC_FL_PUNCH_HOLE |
                           FALLOC_FL_KEEP_SIZE, req->offset, req->len);
        if (!not_supported(ret)) {
            return ret;
        }
    }
    ret = co_fallocate(exp->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                       req->offset, req->len);
    if (!not_supported(ret)) {
        return ret;
    }
    if (req->flags & NBD_CMD_FLAG_FAST_ZERO) {
        return -ENOTSUP;    /* it would be no faster than a write */
    }
    return write_zeroes_slow(exp, req->offset, req->len, 0);
}

/* base:allocation from SEEK_DATA/SEEK_HOLE; @ext gets (len, flags) pairs. */
static int coroutine_fn block_status(NBDExport *exp, const NBDRequest *req,
                                     uint8_t *ext, unsigned max)
{
    uint64_t pos = req->offset, end = req->offset + req->len;
    unsigned n = 0;

    while (pos < end && n < max) {
        uint64_t next;
        uint32_t flags;
        off_t data = lseek(exp->fd, (off_t)pos, SEEK_DATA);

        if (data < 0 && errno == ENXIO) {
            next = end;                 /* a hole up to the end */
            flags = NBD_STATE_HOLE | NBD_STATE_ZERO;
        } else if (data < 0) {
            next = end;                 /* cannot tell: say allocated */
            flags = 0;
        } else if ((uint64_t)data > pos) {
            next = (uint64_t)data;
            flags = NBD_STATE_HOLE | NBD_STATE_ZERO;
        } else {
            off_t hole = lseek(exp->fd, (off_t)pos, SEEK_HOLE);

            next = hole < 0 ? end : (uint64_t)hole;
            flags = 0;
        }
        if (next > end) {
            next = end;
        }
        if (next <= pos) {
            next = end;     /* the file changed under us: be safe */
            flags = 0;
        }
        if (next - pos > NBD_MAX_EXTENT_LEN) {
            next = pos + NBD_MAX_EXTENT_LEN;
        }
        if (n && nbd_ld32(ext + 8 * (n - 1) + 4) == flags) {
            /* Same status as the previous extent: extend it. */
            uint32_t prev = nbd_ld32(ext + 8 * (n - 1));

            if ((uint64_t)prev + (next - pos) <= NBD_MAX_EXTENT_LEN) {
                nbd_st32(ext + 8 * (n - 1), prev + (uint32_t)(next - pos));
                pos = next;
                continue;
            }
        }
        nbd_st32(ext + 8 * n, (uint32_t)(next - pos));
        nbd_st32(ext + 8 * n + 4, flags);
        n++;
        pos = next;
    }
    return (int)n;
}

static int coroutine_fn send_block_status(NBDClient *client, NBDExport *exp,
                                          const NBDRequest *req)
{
    unsigned max = (req->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS;
    size_t hdr_len = NBD_STRUCTURED_REPLY_SIZE + 4;
    uint8_t *buf = malloc(hdr_len + 8 * (size_t)max);
    struct iovec iov;
    int n, ret;

    if (!buf) {
        return send_error(client, req, NBD_ENOMEM);
    }
    n = block_status(exp, req, buf + hdr_len, max);
    nbd_encode_chunk(buf, req->cookie, NBD_REPLY_FLAG_DONE,
                     NBD_REPLY_TYPE_BLOCK_STATUS, (uint32_t)(4 + 8 * n));
    nbd_st32(buf + NBD_STRUCTURED_REPLY_SIZE, NBD_META_ID_BASE_ALLOCATION);
    iov = (struct iovec) { buf, hdr_len + 8 * (size_t)n };
    ret = client_send(client, &iov, 1);
    free(buf);
    return ret;
}

/* Serve one request whose header passed nbd_check_request(). */
static void coroutine_fn handle_request(NBDClient *client,
                                        const NBDRequest *req, void *payload)
{
    NBDExport *exp = client->exp;
    BdrvRequestFlags fua = (req->flags & NBD_CMD_FLAG_FUA) ? BDRV_REQ_FUA : 0;
    QEMUIOVector qiov;
    int ret = 0;

    switch (req->type) {
    case NBD_CMD_READ:
        if (req->len) {
            qemu_iovec_init_buf(&qiov, payload, req->len);
            ret = aioloop_co_submit(exp->engine, exp->fd, req->offset, &qiov,
                                    QEMU_AIO_READ, 0);
        }
        if (ret == 0) {
            send_read(client, req, payload);
            return;
        }
        break;
    case NBD_CMD_WRITE:
        if (req->len) {
            qemu_iovec_init_buf(&qiov, payload, req->len);
            ret = aioloop_co_submit(exp->engine, exp->fd, req->offset, &qiov,
                                    QEMU_AIO_WRITE, fua);
        }
        break;
    case NBD_CMD_FLUSH:
        ret = aioloop_co_submit(exp->engine, exp->fd, 0, NULL,
                                QEMU_AIO_FLUSH, 0);
        break;
    case NBD_CMD_TRIM:
        if (req->len) {
            ret = co_fallocate(exp->fd, FALLOC_FL_PUNCH_HOLE |
                               FALLOC_FL_KEEP_SIZE, req->offset, req->len);
            if (not_supported(ret)) {
                ret = 0;    /* a trim is a hint */
            }
        }
        if (ret == 0 && fua) {
            ret = aioloop_co_submit(exp->engine, exp->fd, 0, NULL,
                                    QEMU_AIO_FLUSH, 0);
        }
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (req->len) {
            ret = do_write_zeroes(exp, req);
        }
        if (ret == 0 && fua) {
            ret = aioloop_co_submit(exp->engine, exp->fd, 0, NULL,
                                    QEMU_AIO_FLUSH, 0);
        }
        break;
    case NBD_CMD_BLOCK_STATUS:
        send_block_status(client, exp, req);
        return;
    case NBD_CMD_CACHE:
        if (req->len) {
            posix_fadvise(exp->fd, (off_t)req->offset, (off_t)req->len,
                          POSIX_FADV_WILLNEED);
        }
        break;
    }
    if (ret < 0) {
        send_error(client, req, nbd_errno_to_wire(ret));
    } else {
        send_ok(client, req);
    }
}

/* Bytes a request holds in memory while served. */
static uint32_t request_bytes(const NBDRequest *req)
{
    return (req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE) ?
           req->len : 0;
}

/*
 * Read the next request (and a WRITE's payload).  Returns 0, TRIP_PARK
 * (drained before a byte of it arrived), or -errno (drop the client).
 * *error is the NBD error to answer with instead of serving it.
 */
static int coroutine_fn read_request(NBDClient *client, NBDRequest *req,
                                     void **payload, uint32_t *error)
{
    NBDExport *exp = client->exp;
    uint8_t hdr[NBD_REQUEST_SIZE];
    int ret;

    *payload = NULL;
    while (chan_buffered(&client->chan) == 0) {
        if (client->closing) {
            return -EPIPE;
        }
        if (__atomic_load_n(&exp->quiescing, __ATOMIC_SEQ_CST)) {
            return TRIP_PARK;
        }
        ret = chan_fill(&client->chan);
        if (ret < 0 && ret != -EINTR) {
            return ret;
        }
    }
    ret = chan_read(&client->chan, hdr, sizeof(hdr));
    if (ret < 0) {
        return ret;
    }
    if (!nbd_parse_request(hdr, req)) {
        return -EPROTO;
    }
    *error = nbd_check_request(req, &client->lim);
    if (req->type == NBD_CMD_WRITE && req->len > NBD_MAX_PAYLOAD) {
        return -EPROTO;     /* a payload we will not swallow: hang up */
    }
    if (req->type == NBD_CMD_DISC || (*error && req->type != NBD_CMD_WRITE)) {
        return 0;
    }
    if (request_bytes(req)) {
        /* Bound the client's memory: wait for earlier requests. */
        while (client->inflight_bytes &&
               client->inflight_bytes + req->len > NBD_CLIENT_MAX_BYTES) {
            client->mem_waiter = qemu_coroutine_self();
            qemu_coroutine_yield();
        }
        *payload = buf_alloc(req->len);
        if (!*payload) {
            return -ENOMEM;
        }
    }
    if (req->type == NBD_CMD_WRITE) {
        ret = chan_read(&client->chan, *payload, req->len);
        if (ret < 0) {
            buf_free(*payload, req->len);
            *payload = NULL;
            return ret;
        }
    }
    return 0;
}

static void client_park(NBDClient *client)
{
    client->parked = true;
    chan_unwatch_read(&client->chan);
}

void nbd_client_next_request(NBDClient *client)
{
    NBDExport *exp = client->exp;
    Coroutine *co;

    if (client->recv_running || client->closing || client->parked ||
        client->nb_requests >= NBD_CLIENT_MAX_REQUESTS) {
        return;
    }
    if (__atomic_load_n(&exp->quiescing, __ATOMIC_SEQ_CST)) {
        if (client->nb_requests == 0) {
            client_park(client);
        }
        return;
    }
    client->recv_running = true;
    client->refs++;
    __atomic_fetch_add(&exp->busy, 1, __ATOMIC_SEQ_CST);
    co = qemu_coroutine_create(nbd_client_trip_co, client);
    aio_co_enter(exp->ctx, co);
}

/* A trip ends: the last one out frees a closing client. */
static void client_trip_end(NBDClient *client)
{
    NBDExport *exp = client->exp;

    assert(client->refs > 0);
    if (--client->refs == 0) {
        if (client->closing) {
            nbd_export_detach(exp, client);
            nbd_client_free(client);
        } else if (!client->parked && !client->recv_running) {
            /* Quiescing stopped the reader while requests were out. */
            client_park(client);
        }
    }
    nbd_export_busy_dec(exp);
}

void coroutine_fn nbd_client_trip_co(void *opaque)
{
    NBDClient *client = opaque;
    NBDExport *exp = client->exp;
    uint32_t error = 0;
    NBDRequest req;
    void *payload;
    uint32_t bytes;
    int ret;

    ret = read_request(client, &req, &payload, &error);
    client->recv_running = false;
    if (ret == TRIP_PARK) {
        if (client->nb_requests == 0) {
            client_park(client);
        }
        client_trip_end(client);
        return;
    }
    if (ret < 0 || req.type == NBD_CMD_DISC) {
        if (ret == -EPROTO || ret == -ENOMEM) {
            client_shutdown(client);
        }
        client->closing = true;
        client_trip_end(client);
        return;
    }

    bytes = request_bytes(&req);
    client->nb_requests++;
    client->inflight_bytes += bytes;
    __atomic_fetch_add(&exp->in_flight, 1, __ATOMIC_RELAXED);
    nbd_client_next_request(client);

    if (error) {
        send_error(client, &req, error);
    } else {
        handle_request(client, &req, payload);
    }
    buf_free(payload, req.len);

    client->nb_requests--;
    client->inflight_bytes -= bytes;
    __atomic_fetch_sub(&exp->in_flight, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&exp->requests, 1, __ATOMIC_RELAXED);
    if (client->mem_waiter) {
        Coroutine *co = client->mem_waiter;

        client->mem_waiter = NULL;
        aio_co_wake(co);
    }
    nbd_client_next_request(client);
    client_trip_end(client);
}

void nbd_client_free(NBDClient *client)
{
    NBDServer *srv = client->srv;

    chan_destroy(&client->chan);
    free(client->meta_export);
    free(client);
    __atomic_fetch_sub(&srv->connections, 1, __ATOMIC_SEQ_CST);
    aio_wait_kick();
}
