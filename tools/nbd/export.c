/*
 * Exports: the image file, the context that serves it, and the drained
 * section that moves it between contexts (export-set-iothread) or takes it
 * away (export-del, shutdown).
 *
 * Draining, as QEMU's blk_drain for an NBD export: set @quiescing, wake the
 * readers that wait at a request boundary (a BH in the export's context),
 * and AIO_WAIT_WHILE until no coroutine of the export runs.  Each client
 * then stands "parked": no trip, no fd handler, nothing in flight, its
 * unread bytes kept in its channel buffer.  Ending the section restarts a
 * trip per parked client in the (new) context.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <aioloop/aio-wait.h>
#include <aioloop/main-loop.h>
#include <aioloop/thread-pool.h>

#include "nbd-internal.h"

NBDExport *nbd_export_by_id(NBDServer *srv, const char *id)
{
    for (NBDExport *exp = srv->exports; exp; exp = exp->next) {
        if (!strcmp(exp->id, id)) {
            return exp;
        }
    }
    return NULL;
}

NBDExport *nbd_export_find(NBDServer *srv, const char *name)
{
    NBDExport *first = NULL;

    for (NBDExport *exp = srv->exports; exp; exp = exp->next) {
        if (exp->deleting) {
            continue;
        }
        if (!strcmp(exp->name, name)) {
            return exp;
        }
        first = first ? first : exp;
    }
    /* The empty name is the default export: the first, as nbd-server. */
    return name[0] ? NULL : first;
}

NBDExport *nbd_export_after(NBDServer *srv, uint64_t serial)
{
    /* The list is in the order of creation: serials ascend along it. */
    for (NBDExport *exp = srv->exports; exp; exp = exp->next) {
        if (exp->serial > serial) {
            return exp;
        }
    }
    return NULL;
}

void nbd_export_busy_dec(NBDExport *exp)
{
    if (__atomic_sub_fetch(&exp->busy, 1, __ATOMIC_SEQ_CST) == 0) {
        aio_wait_kick();
    }
}

bool nbd_export_attach(NBDExport *exp, NBDClient *client, AioContext **ctx)
{
    pthread_mutex_lock(&exp->lock);
    if (exp->deleting) {
        pthread_mutex_unlock(&exp->lock);
        return false;
    }
    client->exp = exp;
    client->next = exp->clients;
    exp->clients = client;
    exp->nclients++;
    if (exp->quiescing) {
        client->parked = true;
    } else {
        client->recv_running = true;
        client->refs = 1;
        __atomic_fetch_add(&exp->busy, 1, __ATOMIC_SEQ_CST);
    }
    *ctx = exp->ctx;
    pthread_mutex_unlock(&exp->lock);
    return true;
}

void nbd_export_detach(NBDExport *exp, NBDClient *client)
{
    pthread_mutex_lock(&exp->lock);
    for (NBDClient **pp = &exp->clients; *pp; pp = &(*pp)->next) {
        if (*pp == client) {
            *pp = client->next;
            exp->nclients--;
            break;
        }
    }
    pthread_mutex_unlock(&exp->lock);
}

/* In the export's context: wake readers idle at a request boundary. */
static void export_quiesce_bh(void *opaque)
{
    NBDExport *exp = opaque;

    pthread_mutex_lock(&exp->lock);
    for (NBDClient *c = exp->clients; c; c = c->next) {
        if (c->recv_running && chan_reader_idle(&c->chan)) {
            chan_interrupt(&c->chan);
        }
    }
    pthread_mutex_unlock(&exp->lock);
}

/*
 * In the export's context, once the drain has waited NBD_DRAIN_STALL_NS,
 * and again every NBD_DRAIN_RECHECK_NS while it waits: cut off the clients
 * that hold the drain (a move, a delete, SIGTERM) and would hold it
 * forever if they never did anything again:
 *  - a client in the middle of sending a request: nothing of it was
 *    acknowledged (the request is not complete);
 *  - a client with a reply waiting for room in its socket: it stopped
 *    reading; the request was served, only its reply is lost (the spec
 *    asks a server that shuts down to wait for in-flight requests to be
 *    serviced, not for a client that does not take the replies).
 * Requests still being served are not touched; if one's reply blocks
 * later, the next round cuts it.
 */
static void export_cut_stalled_bh(void *opaque)
{
    NBDExport *exp = opaque;

    pthread_mutex_lock(&exp->lock);
    for (NBDClient *c = exp->clients; c; c = c->next) {
        bool mid_request = c->recv_running && !c->closing;
        bool reply_stuck = c->chan.write_co != NULL;

        if (mid_request || reply_stuck) {
            fprintf(stderr, "aioloop-nbd: export '%s': disconnecting a "
                    "client %s\n", exp->id, mid_request ?
                    "stalled in the middle of a request" :
                    "that does not read its replies");
            c->closing = true;
            chan_shutdown(&c->chan);
        }
    }
    pthread_mutex_unlock(&exp->lock);
    __atomic_fetch_sub(&exp->stall_cuts, 1, __ATOMIC_SEQ_CST);
    aio_wait_kick();
}

static void export_stall_timer(void *opaque)
{
    NBDExport *exp = opaque;

    __atomic_fetch_add(&exp->stall_cuts, 1, __ATOMIC_SEQ_CST);
    aio_bh_schedule_oneshot(exp->ctx, export_cut_stalled_bh, exp);
    timer_mod(exp->stall_timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
              NBD_DRAIN_RECHECK_NS);
}

/*
 * Open a drained section: stop @exp's readers at the next request boundary
 * and arm the stalled-client cut.  The section is open once
 * export_drain_busy() is false and export_drain_wait_cuts() has returned;
 * shutdown starts every export's section before waiting for any, so that
 * their cuts run together.  Main thread.
 */
static void export_drain_start(NBDExport *exp)
{
    AioContext *ctx;

    pthread_mutex_lock(&exp->lock);
    __atomic_store_n(&exp->quiescing, true, __ATOMIC_SEQ_CST);
    ctx = exp->ctx;
    pthread_mutex_unlock(&exp->lock);
    /*
     * Waited for, so that it cannot run after the export is gone; readers
     * that come to a boundary after it see @quiescing themselves.
     */
    aio_wait_bh_oneshot(ctx, export_quiesce_bh, exp);
    exp->stall_timer = aio_timer_new(qemu_get_aio_context(),
                                     QEMU_CLOCK_REALTIME, SCALE_NS,
                                     export_stall_timer, exp);
    timer_mod(exp->stall_timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
              NBD_DRAIN_STALL_NS);
}

static bool export_drain_busy(NBDExport *exp)
{
    return __atomic_load_n(&exp->busy, __ATOMIC_SEQ_CST) > 0;
}

/* Once @exp is no longer busy: disarm the cut, wait for one under way. */
static void export_drain_wait_cuts(NBDExport *exp)
{
    timer_free(exp->stall_timer);
    exp->stall_timer = NULL;
    /* A cut scheduled but not run yet must not run after we return. */
    AIO_WAIT_WHILE(NULL,
                   __atomic_load_n(&exp->stall_cuts, __ATOMIC_SEQ_CST) > 0);
}

static void export_drain_begin(NBDExport *exp)
{
    export_drain_start(exp);
    AIO_WAIT_WHILE(NULL, export_drain_busy(exp));
    export_drain_wait_cuts(exp);
}

static void export_drain_end(NBDExport *exp, IOThread *iothread,
                             AioContext *ctx)
{
    pthread_mutex_lock(&exp->lock);
    exp->iothread = iothread;
    exp->ctx = ctx;
    __atomic_store_n(&exp->quiescing, false, __ATOMIC_SEQ_CST);
    for (NBDClient *c = exp->clients; c; c = c->next) {
        if (c->parked && !c->closing) {
            c->parked = false;
            c->recv_running = true;
            c->refs = 1;
            __atomic_fetch_add(&exp->busy, 1, __ATOMIC_SEQ_CST);
            aio_co_schedule(ctx, qemu_coroutine_create(nbd_client_trip_co, c));
        }
    }
    pthread_mutex_unlock(&exp->lock);
}

/*
 * Open the image; *size is its size and *align the alignment its requests
 * need (1 without O_DIRECT).
 */
static int open_image(const NBDExportConfig *cfg, uint64_t *size,
                      uint32_t *align, Error **errp)
{
    int flags = (cfg->writable ? O_RDWR : O_RDONLY) | O_CLOEXEC |
                (cfg->direct ? O_DIRECT : 0);
    struct stat st;
    int fd = open(cfg->file, flags);

    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot open '%s'", cfg->file);
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "cannot stat '%s'", cfg->file);
        goto fail;
    }
    /* O_DIRECT needs aligned requests: 4 KiB suits every file system. */
    *align = cfg->direct ? 4096 : 1;
    if (S_ISBLK(st.st_mode)) {
        int lbs;

        if (ioctl(fd, BLKGETSIZE64, size) < 0) {
            error_setg_errno(errp, errno, "cannot size '%s'", cfg->file);
            goto fail;
        }
        /* A disk says what it needs: its size is a multiple of it. */
        if (cfg->direct && ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0 &&
            !(lbs & (lbs - 1)) && lbs <= 4096) {
            *align = (uint32_t)lbs;
        }
    } else if (S_ISREG(st.st_mode)) {
        *size = (uint64_t)st.st_size;
    } else {
        error_setg(errp, "'%s' is neither a regular file nor a block device",
                   cfg->file);
        goto fail;
    }
    return fd;

fail:
    close(fd);
    return -1;
}

/* Set up the export's engine in @ctx, in @ctx's thread. */
typedef struct EngineSetup {
    AioloopBlockEngine engine;
    Error *err;
} EngineSetup;

static void engine_setup_bh(void *opaque)
{
    EngineSetup *s = opaque;
    AioContext *ctx = qemu_get_current_aio_context();

    switch (s->engine) {
    case AIOLOOP_BLOCK_ENGINE_IO_URING:
        aio_setup_linux_io_uring(ctx, &s->err);
        break;
    case AIOLOOP_BLOCK_ENGINE_LINUX_AIO:
        aio_setup_linux_aio(ctx, &s->err);
        break;
    default:
        break;
    }
}

static int export_engine_check(NBDExport *exp, AioContext *ctx, Error **errp)
{
    EngineSetup s = { exp->engine, NULL };

    if (exp->engine != AIOLOOP_BLOCK_ENGINE_IO_URING &&
        exp->engine != AIOLOOP_BLOCK_ENGINE_LINUX_AIO) {
        return 0;
    }
    aio_wait_bh_oneshot(ctx, engine_setup_bh, &s);
    if (s.err) {
        error_propagate_prepend(errp, s.err, "export '%s': aio=%s: ",
                                exp->id,
                                aioloop_block_engine_name(exp->engine));
        return -ENOTSUP;
    }
    return 0;
}

static int lookup_iothread(const char *id, IOThread **iothread,
                           AioContext **ctx, Error **errp)
{
    if (!id) {
        *iothread = NULL;
        *ctx = qemu_get_aio_context();
        return 0;
    }
    *iothread = iothread_by_id(id);
    if (!*iothread) {
        error_setg(errp, "iothread '%s' not found", id);
        return -ENOENT;
    }
    *ctx = iothread_get_aio_context(*iothread);
    return 0;
}

static void export_free(NBDExport *exp)
{
    if (exp->fd >= 0) {
        close(exp->fd);
    }
    pthread_mutex_destroy(&exp->lock);
    free(exp->id);
    free(exp->name);
    free(exp->description);
    free(exp->node_name);
    free(exp->file);
    free(exp);
}

void nbd_export_ref(NBDExport *exp)
{
    exp->refs++;
}

void nbd_export_unref(NBDExport *exp)
{
    if (exp && --exp->refs == 0) {
        export_free(exp);
    }
}

static char *strdup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

NBDExport *nbd_export_add(NBDServer *srv, const NBDExportConfig *cfg,
                          Error **errp)
{
    const char *name = cfg->name ? cfg->name : cfg->id;
    NBDExport *exp, **pp;

    if (!cfg->id || !cfg->id[0]) {
        error_setg(errp, "an export needs an id");
        return NULL;
    }
    if (!cfg->file) {
        error_setg(errp, "export '%s' has no file", cfg->id);
        return NULL;
    }
    if (strlen(name) > NBD_MAX_STRING ||
        (cfg->description && strlen(cfg->description) > NBD_MAX_STRING)) {
        error_setg(errp, "export '%s': name or description longer than %d "
                   "bytes", cfg->id, NBD_MAX_STRING);
        return NULL;
    }
    if (nbd_export_by_id(srv, cfg->id)) {
        error_setg(errp, "export id '%s' is already in use", cfg->id);
        return NULL;
    }
    for (NBDExport *e = srv->exports; e; e = e->next) {
        if (!strcmp(e->name, name)) {
            error_setg(errp, "export name '%s' is already in use", name);
            return NULL;
        }
    }

    exp = calloc(1, sizeof(*exp));
    if (!exp) {
        error_setg(errp, "out of memory");
        return NULL;
    }
    exp->srv = srv;
    exp->fd = -1;
    pthread_mutex_init(&exp->lock, NULL);
    exp->id = strdup(cfg->id);
    exp->name = strdup(name);
    exp->description = strdup_or_null(cfg->description);
    exp->node_name = strdup_or_null(cfg->node_name);
    exp->file = strdup(cfg->file);
    exp->writable = cfg->writable;
    exp->direct = cfg->direct;
    exp->engine = cfg->engine;
    if (lookup_iothread(cfg->iothread, &exp->iothread, &exp->ctx, errp) < 0) {
        goto fail;
    }
    exp->fd = open_image(cfg, &exp->size, &exp->min_block, errp);
    if (exp->fd < 0) {
        goto fail;
    }
    /*
     * The minimum block size is the smallest addressable unit: clients
     * (qemu, libnbd) refuse or fail on the unaligned tail of an export
     * whose size is not a multiple of it, and only O_DIRECT has one above
     * 1 here.  Refuse rather than serve an image whose end is unreachable.
     */
    if (exp->size % exp->min_block) {
        error_setg(errp, "export '%s': with cache=none the image size must "
                   "be a multiple of %" PRIu32 " bytes, and '%s' has %"
                   PRIu64 " bytes (pad it, or use cache=writeback)",
                   exp->id, exp->min_block, exp->file, exp->size);
        goto fail;
    }
    if (export_engine_check(exp, exp->ctx, errp) < 0) {
        goto fail;
    }
    exp->tx_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                    NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
    if (exp->writable) {
        exp->tx_flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                         NBD_FLAG_SEND_FAST_ZERO;
    } else {
        exp->tx_flags |= NBD_FLAG_READ_ONLY;
    }
    /*
     * Every connection shares the one fd, and a flush is fdatasync() of
     * that file, so a flush on any connection covers the writes completed
     * on all of them: what CAN_MULTI_CONN promises.
     */
    if (cfg->multi_conn != NBD_MULTI_CONN_OFF) {
        exp->tx_flags |= NBD_FLAG_CAN_MULTI_CONN;
    }

    exp->refs = 1;
    exp->serial = ++srv->next_serial;
    for (pp = &srv->exports; *pp; pp = &(*pp)->next) {
    }
    *pp = exp;
    return exp;

fail:
    export_free(exp);
    return NULL;
}

void nbd_export_foreach(NBDServer *srv,
                        void (*fn)(const NBDExportInfo *info, void *opaque),
                        void *opaque)
{
    for (NBDExport *exp = srv->exports; exp; exp = exp->next) {
        NBDExportInfo info = {
            .id = exp->id,
            .name = exp->name,
            .node_name = exp->node_name,
            .file = exp->file,
            .iothread = exp->iothread ? iothread_get_id(exp->iothread) : NULL,
            .engine = exp->engine == AIOLOOP_BLOCK_ENGINE_AUTO ? "auto" :
                      aioloop_block_engine_name(exp->engine),
            .writable = exp->writable,
            .direct = exp->direct,
            .size = exp->size,
            .in_flight = __atomic_load_n(&exp->in_flight, __ATOMIC_RELAXED),
            .requests = __atomic_load_n(&exp->requests, __ATOMIC_RELAXED),
        };

        if (exp->deleting) {
            continue;
        }
        pthread_mutex_lock(&exp->lock);
        info.clients = exp->nclients;
        pthread_mutex_unlock(&exp->lock);
        fn(&info, opaque);
    }
}

int nbd_export_set_iothread(NBDServer *srv, const char *id,
                            const char *iothread, Error **errp)
{
    NBDExport *exp = nbd_export_by_id(srv, id);
    IOThread *to;
    AioContext *ctx;

    if (!exp || exp->deleting) {
        error_setg(errp, "export '%s' not found", id);
        return -ENOENT;
    }
    if (lookup_iothread(iothread, &to, &ctx, errp) < 0) {
        return -ENOENT;
    }
    if (exp->moving) {
        error_setg(errp, "export '%s' is being moved already", id);
        return -EBUSY;
    }
    if (ctx == exp->ctx) {
        return 0;
    }
    if (export_engine_check(exp, ctx, errp) < 0) {
        return -ENOTSUP;
    }
    /*
     * The drain polls the main loop, where another monitor command may run:
     * @moving keeps a second move or a delete of this export out.
     */
    exp->moving = true;
    export_drain_begin(exp);
    export_drain_end(exp, to, ctx);
    exp->moving = false;
    return 0;
}

/* Mark @exp as going away: no client attaches to it any more. */
static void export_set_deleting(NBDExport *exp)
{
    pthread_mutex_lock(&exp->lock);
    exp->deleting = true;
    pthread_mutex_unlock(&exp->lock);
}

/* Free the clients of a drained, deleted @exp (all parked).  Main thread. */
static void export_free_clients(NBDExport *exp)
{
    NBDClient *c;

    pthread_mutex_lock(&exp->lock);
    c = exp->clients;
    exp->clients = NULL;
    exp->nclients = 0;
    pthread_mutex_unlock(&exp->lock);
    while (c) {
        NBDClient *next = c->next;

        /* Parked: no coroutine, no fd handler; any thread may free it. */
        nbd_client_free(c);
        c = next;
    }
}

/* Drain @exp for good and free its (parked) clients.  Main thread. */
static void export_disconnect_all(NBDExport *exp)
{
    export_set_deleting(exp);
    export_drain_begin(exp);
    export_free_clients(exp);
}

/*
 * The final flush of an export's image, in a thread of the main loop's
 * pool: fdatasync() of a large dirty image can take seconds, and the main
 * loop (the monitor, exports without an IOThread) keeps serving meanwhile
 * in AIO_WAIT_WHILE(srv->flushes_pending).  Several exports' flushes go
 * together, so shutdown waits for the slowest, not for the sum of them.
 * The result lands in exp->flush_ret.
 */
static int export_flush_worker(void *opaque)
{
    NBDExport *exp = opaque;

    return fdatasync(exp->fd) < 0 ? -errno : 0;
}

static void export_flush_done(void *opaque, int ret)
{
    NBDExport *exp = opaque;

    exp->flush_ret = ret;
    exp->srv->flushes_pending--;
}

static void export_flush_start(NBDExport *exp)
{
    exp->flush_ret = 0;
    if (exp->writable) {
        exp->srv->flushes_pending++;
        thread_pool_submit_aio(export_flush_worker, exp, export_flush_done,
                               exp);
    }
}

int nbd_export_del(NBDServer *srv, const char *id, bool hard, Error **errp)
{
    NBDExport *exp = nbd_export_by_id(srv, id), **pp;
    int ret;

    if (!exp || exp->deleting) {
        error_setg(errp, "export '%s' not found", id);
        return -ENOENT;
    }
    if (exp->moving) {
        error_setg(errp, "export '%s' is being moved", id);
        return -EBUSY;
    }
    if (!hard) {
        unsigned n;

        pthread_mutex_lock(&exp->lock);
        n = exp->nclients;
        pthread_mutex_unlock(&exp->lock);
        if (n) {
            error_setg(errp, "export '%s' has %u client(s) connected; "
                       "use mode 'hard' to disconnect them", id, n);
            return -EBUSY;
        }
    }
    exp->moving = true;
    export_disconnect_all(exp);
    export_flush_start(exp);
    AIO_WAIT_WHILE(NULL, srv->flushes_pending > 0);
    ret = exp->flush_ret;
    for (pp = &srv->exports; *pp != exp; pp = &(*pp)->next) {
    }
    *pp = exp->next;
    /*
     * A handshake may still hold the export (it only finds it is gone, no
     * client attaches to it any more): release the image now all the same.
     */
    close(exp->fd);
    exp->fd = -1;
    nbd_export_unref(exp);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "export '%s' removed, but its final "
                         "flush failed", id);
    }
    return ret;
}

static bool exports_busy(NBDServer *srv)
{
    for (NBDExport *exp = srv->exports; exp; exp = exp->next) {
        if (export_drain_busy(exp)) {
            return true;
        }
    }
    return false;
}

int nbd_exports_shutdown(NBDServer *srv)
{
    NBDExport *exp;
    int ret = 0;

    /*
     * Drain every export at once, not one after the other: each drain may
     * wait NBD_DRAIN_STALL_NS for clients that do not read their replies,
     * and in turn that is as many times over as there are exports, past
     * a service manager's stop timeout with a few dozen of them.  Together
     * the wait is that of the slowest export.  The final flushes likewise.
     */
    for (exp = srv->exports; exp; exp = exp->next) {
        export_set_deleting(exp);
        export_drain_start(exp);
    }
    AIO_WAIT_WHILE(NULL, exports_busy(srv));
    for (exp = srv->exports; exp; exp = exp->next) {
        export_drain_wait_cuts(exp);
        export_free_clients(exp);
        export_flush_start(exp);
    }
    AIO_WAIT_WHILE(NULL, srv->flushes_pending > 0);
    for (exp = srv->exports; exp && ret == 0; exp = exp->next) {
        ret = exp->flush_ret;
    }
    return ret;
}

void nbd_exports_free(NBDServer *srv)
{
    while (srv->exports) {
        NBDExport *exp = srv->exports;

        srv->exports = exp->next;
        nbd_export_unref(exp);
    }
}
