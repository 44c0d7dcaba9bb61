/*
 * The io_uring block engine.
 *
 * Two rings, one code path.  When the context's fd monitor is io_uring,
 * requests go on *its* ring (fdmon_io_uring_get_sqe()): they reach the
 * kernel with the io_uring_enter() that also waits for fd events, and their
 * completions come back through the same reap, so a loop iteration that
 * does block I/O and waits costs one system call.  Otherwise (poll or epoll
 * monitor, or after aio_context_destroy()) the engine keeps a ring of its
 * own, whose fd the context watches like any other, with an io_poll that
 * peeks the CQ so adaptive polling sees completions; its requests are
 * submitted by a BH at the end of the iteration that queued them.  Either
 * way the batch goes out early once aio_max_batch requests are queued.
 *
 * A request is a LuringCB on the waiting coroutine's stack; its CqeHandler
 * runs in the dispatch phase (never inside the reap) and either resubmits
 * (short transfer, -EINTR, -EAGAIN) or resolves the request and wakes the
 * coroutine.  One iovec is sent as a plain READ/WRITE, which the kernel
 * serves a little faster than READV/WRITEV.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "block-internal.h"

/* The private ring: big enough for a deep queue, small enough to be cheap. */
#define PRIVATE_RING_ENTRIES 256
/* Requests up to this size may go to a waiting device in small batches. */
#define SMALL_REQUEST_BYTES (64 * 1024)

struct LuringState {
    AioContext *ctx;
    /* The private ring (ring_ok) and what it has queued but not submitted. */
    struct io_uring ring;
    bool ring_ok;
    unsigned queued;
    QEMUBH *submit_bh;
};

typedef struct LuringCB {
    CqeHandler handler; /* first: its address is the request's user_data */
    LuringState *s;
    Coroutine *co;
    int fd;
    int type;
    uint64_t offset;
    QEMUIOVector *qiov;
    BdrvRequestFlags flags;
    unsigned max_batch;
    size_t done;        /* bytes transferred so far */
    QEMUIOVector rest;  /* what is left after a short transfer */
    int ret;
} LuringCB;

static bool use_fdmon_ring(AioContext *ctx)
{
    return ctx->fdmon_ops == &fdmon_io_uring_ops;
}

/* ---- the private ring --------------------------------------------------- */

static void private_submit(LuringState *s)
{
    int ret;

    if (!s->queued) {
        return;
    }
    do {
        ret = io_uring_submit(&s->ring);
    } while (ret == -EINTR);
    if (ret > 0) {
        s->queued = 0;
        block_count_submit(s->ctx);
    }
    /*
     * -EAGAIN/-EBUSY: the SQEs stay queued; the completions that free the
     * kernel's resources schedule the BH again (private_reap()).
     */
}

static void private_submit_bh(void *opaque)
{
    private_submit(opaque);
}

/*
 * Move the CQEs to ctx->cqe_ready; the caller runs them.  More requests
 * may be in flight than the CQ holds: the kernel keeps the excess on its
 * overflow list (IORING_FEAT_NODROP) and copies it in when asked, which
 * the ring fd's readiness alone does not do.
 */
static bool private_reap(LuringState *s)
{
    struct io_uring_cqe *cqe;
    bool flushed = false;
    unsigned total = 0;

    for (;;) {
        unsigned head;
        unsigned n = 0;

        io_uring_for_each_cqe(&s->ring, head, cqe) {
            CqeHandler *handler = io_uring_cqe_get_data(cqe);

            handler->res = cqe->res;
            QSIMPLEQ_INSERT_TAIL(&s->ctx->cqe_ready, handler, next);
            n++;
        }
        io_uring_cq_advance(&s->ring, n);
        total += n;
        if (!io_uring_cq_has_overflow(&s->ring) || (n == 0 && flushed)) {
            break;
        }
        io_uring_get_events(&s->ring);
        flushed = true;
    }
    if (total && s->queued) {
        qemu_bh_schedule(s->submit_bh);
    }
    return total;
}

static void private_completion(void *opaque)
{
    LuringState *s = opaque;

    private_reap(s);
    aio_run_cqe_handlers(s->ctx);
}

static bool private_poll(void *opaque)
{
    LuringState *s = opaque;

    return io_uring_cq_ready(&s->ring) > 0 || io_uring_cq_has_overflow(&s->ring);
}

static void private_ring_watch(LuringState *s)
{
    aio_set_fd_handler(s->ctx, s->ring.ring_fd, private_completion, NULL,
                       private_poll, private_completion, s);
}

/*
 * The fd monitor stopped being io_uring (aio_context_destroy()) after the
 * state was set up: the private ring is made on first need.  Home thread.
 */
static int private_ring_init(LuringState *s)
{
    int ret;

    if (s->ring_ok) {
        return 0;
    }
    ret = io_uring_queue_init(PRIVATE_RING_ENTRIES, &s->ring, 0);
    if (ret < 0) {
        return ret;
    }
    s->ring_ok = true;
    private_ring_watch(s);
    return 0;
}

static struct io_uring_sqe *private_get_sqe(LuringState *s)
{
    struct io_uring_sqe *sqe;

    while (!(sqe = io_uring_get_sqe(&s->ring))) {
        int ret = io_uring_submit(&s->ring);

        if (ret > 0) {
            s->queued = 0;
            block_count_submit(s->ctx);
        } else if (ret == -EBUSY || ret == -EAGAIN || ret == -EINTR) {
            /* Completions held by the kernel free room: take them now. */
            if (!private_reap(s) && ret != -EINTR) {
                io_uring_get_events(&s->ring);
            }
        } else {
            return NULL;
        }
    }
    return sqe;
}

/* ---- requests ----------------------------------------------------------- */

static void luring_cqe_cb(CqeHandler *handler);

/*
 * The most one read or write moves (Linux's MAX_RW_COUNT with 4 KiB pages).
 * A single-buffer READ/WRITE takes a 32-bit length: a longer buffer would
 * wrap (4 GiB + n became n, and the continuation then zero-filled file
 * data or reported -ENOSPC).  Capped, it is a short transfer like the
 * kernel makes of a longer readv, and block_rw_step() goes on from there.
 */
#define LURING_MAX_RW 0x7ffff000u

static unsigned luring_rw_len(const QEMUIOVector *qiov)
{
    return (unsigned)MIN(qiov->iov[0].iov_len, (size_t)LURING_MAX_RW);
}

static void prep_sqe(LuringCB *cb, struct io_uring_sqe *sqe)
{
    QEMUIOVector *qiov = cb->done ? &cb->rest : cb->qiov;
    uint64_t offset = cb->offset + cb->done;

    switch (cb->type) {
    case QEMU_AIO_READ:
        if (qiov->niov == 1) {
            io_uring_prep_read(sqe, cb->fd, qiov->iov[0].iov_base,
                               luring_rw_len(qiov), offset);
        } else {
            io_uring_prep_readv(sqe, cb->fd, qiov->iov, (unsigned)qiov->niov,
                                offset);
        }
        break;
    case QEMU_AIO_WRITE:
        if (qiov->niov == 1) {
            io_uring_prep_write(sqe, cb->fd, qiov->iov[0].iov_base,
                                luring_rw_len(qiov), offset);
        } else {
            io_uring_prep_writev(sqe, cb->fd, qiov->iov, (unsigned)qiov->niov,
                                 offset);
        }
        if (cb->flags & BDRV_REQ_FUA) {
            sqe->rw_flags = RWF_DSYNC;
        }
        break;
    case QEMU_AIO_FLUSH:
        io_uring_prep_fsync(sqe, cb->fd, IORING_FSYNC_DATASYNC);
        break;
    default: /* AIOLOOP_AIO_FSYNC */
        io_uring_prep_fsync(sqe, cb->fd, 0);
        break;
    }
}

/* Queue (or re-queue) @cb; false if no ring will take it. */
static bool luring_queue(LuringCB *cb)
{
    LuringState *s = cb->s;
    AioContext *ctx = s->ctx;
    struct io_uring_sqe *sqe;

    cb->handler.cb = luring_cqe_cb;
    if (use_fdmon_ring(ctx)) {
        sqe = fdmon_io_uring_get_sqe(ctx);
        if (!sqe) {
            return false;
        }
        prep_sqe(cb, sqe);
        block_count_requests(ctx, 1);
        fdmon_io_uring_sqe_queued(ctx, sqe, &cb->handler, cb->max_batch);
        return true;
    }

    if (private_ring_init(s) < 0 || !(sqe = private_get_sqe(s))) {
        return false;
    }
    prep_sqe(cb, sqe);
    io_uring_sqe_set_data(sqe, &cb->handler);
    block_count_requests(ctx, 1);
    if (++s->queued >= (cb->max_batch ? cb->max_batch : UINT32_MAX)) {
        private_submit(s);
    } else if (s->queued == 1) {
        qemu_bh_schedule(s->submit_bh);
    }
    return true;
}

static void luring_done(LuringCB *cb, int ret)
{
    cb->ret = ret;
    aio_co_wake(cb->co);
}

static void luring_cqe_cb(CqeHandler *handler)
{
    LuringCB *cb = container_of(handler, LuringCB, handler);
    int ret = block_rw_step(cb->type, cb->qiov, &cb->done, &cb->rest,
                            handler->res);

    if (ret != BLOCK_RW_AGAIN) {
        luring_done(cb, ret);
    } else if (!luring_queue(cb)) {
        luring_done(cb, -ENOMEM);
    }
}

static int coroutine_fn luring_co_submit_ctx(AioContext *ctx, int fd,
                                             uint64_t offset,
                                             QEMUIOVector *qiov, int type,
                                             BdrvRequestFlags flags,
                                             uint64_t dev_max_batch)
{
    LuringState *s = aio_get_linux_io_uring(ctx);
    LuringCB cb = {
        .s = s,
        .co = qemu_coroutine_self(),
        .fd = fd,
        .type = type,
        .offset = offset,
        .qiov = qiov,
        .flags = flags,
        .ret = -EINPROGRESS,
    };

    /*
     * Without aio_max_batch, the private ring's size is the batch, and so
     * it is on the fd monitor's ring for large transfers: the device's
     * time dominates theirs, and one plug lets the kernel merge them
     * (1 MiB O_DIRECT writes at QD8 lost a third in batches of 4).  For
     * small ones, 0: the monitor decides, by whether the loop is waiting
     * for the device (fdmon_io_uring_sqe_queued()).
     */
    cb.max_batch = block_max_batch(ctx,
                                   qiov && qiov->size <= SMALL_REQUEST_BYTES ?
                                   0 : UINT32_MAX, dev_max_batch);
    if (!luring_queue(&cb)) {
        return -ENOMEM;
    }
    qemu_coroutine_yield();
    if (cb.rest.iov) {
        qemu_iovec_destroy(&cb.rest);
    }
    return cb.ret;
}

/* ---- state -------------------------------------------------------------- */

/*
 * aio_setup_linux_io_uring() with the reason of a failure kept: 0 and *ps
 * set, or -errno (the block engine's setup() returns it).
 */
static int luring_state_setup(AioContext *ctx, LuringState **ps, Error **errp)
{
    LuringState *s = qatomic_load_acquire(&ctx->linux_io_uring);
    LuringState *expected = NULL;

    if (s) {
        *ps = s;
        return 0;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    s->ctx = ctx;
    /*
     * Without the io_uring fd monitor the private ring is needed now; it
     * also tells whether this process may use io_uring at all (seccomp,
     * sysctl kernel.io_uring_disabled, old kernels).
     */
    if (!use_fdmon_ring(ctx)) {
        int ret = io_uring_queue_init(PRIVATE_RING_ENTRIES, &s->ring, 0);

        if (ret < 0) {
            error_setg_errno(errp, -ret, "io_uring is not available");
            free(s);
            return ret;
        }
        s->ring_ok = true;
    }
    s->submit_bh = aio_bh_new_full(ctx, private_submit_bh, s,
                                   "luring_submit", NULL);
    if (!__atomic_compare_exchange_n(&ctx->linux_io_uring, &expected, s,
                                     false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        qemu_bh_delete(s->submit_bh);
        if (s->ring_ok) {
            io_uring_queue_exit(&s->ring);
        }
        free(s);
        *ps = expected;
        return 0;
    }
    /* Watched by the winner only: the handler names the state. */
    if (s->ring_ok) {
        private_ring_watch(s);
    }
    *ps = s;
    return 0;
}

LuringState *aio_setup_linux_io_uring(AioContext *ctx, Error **errp)
{
    LuringState *s;

    return luring_state_setup(ctx, &s, errp) < 0 ? NULL : s;
}

LuringState *aio_get_linux_io_uring(AioContext *ctx)
{
    LuringState *s = qatomic_load_acquire(&ctx->linux_io_uring);

    if (!s) {
        error_report("aio_get_linux_io_uring: aio_setup_linux_io_uring() "
                     "has not succeeded on AioContext %p", (void *)ctx);
        abort();
    }
    return s;
}

void luring_cleanup_ctx(AioContext *ctx)
{
    LuringState *s = ctx->linux_io_uring;

    if (!s) {
        return;
    }
    if (s->ring_ok) {
        aio_set_fd_handler(ctx, s->ring.ring_fd, NULL, NULL, NULL, NULL,
                           NULL);
        io_uring_queue_exit(&s->ring);
    }
    qemu_bh_delete(s->submit_bh);
    ctx->linux_io_uring = NULL;
    free(s);
}

static int luring_setup(AioContext *ctx, Error **errp)
{
    LuringState *s;

    return luring_state_setup(ctx, &s, errp);
}

const BlockEngineOps block_engine_io_uring = {
    .name = "io_uring",
    .id = AIOLOOP_BLOCK_ENGINE_IO_URING,
    .setup = luring_setup,
    .co_submit = luring_co_submit_ctx,
};
