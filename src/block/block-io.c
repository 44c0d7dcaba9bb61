/*
 * Block I/O: engine choice, the coroutine API and its accounting.
 *
 * The engines (io_uring.c, linux-aio.c, io-threads.c) only move bytes; what
 * every request goes through lives here: the caller checks (a coroutine of
 * the current context, a type the engines serve), the in-flight count that
 * aio_context_unref() drains, and the choice of engine per context.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block-internal.h"
#include "../util/under-valgrind.h"

static const BlockEngineOps *const engines[] = {
    &block_engine_io_uring,
    &block_engine_linux_aio,
    &block_engine_threads,
};

const char *aioloop_block_engine_name(AioloopBlockEngine engine)
{
    for (size_t i = 0; i < ARRAY_SIZE(engines); i++) {
        if (engines[i]->id == engine) {
            return engines[i]->name;
        }
    }
    return "auto";
}

static const BlockEngineOps *engine_by_name(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(engines); i++) {
        if (!strcmp(engines[i]->name, name)) {
            return engines[i];
        }
    }
    return NULL;
}

static const BlockEngineOps *engine_by_id(AioloopBlockEngine engine)
{
    for (size_t i = 0; i < ARRAY_SIZE(engines); i++) {
        if (engines[i]->id == engine) {
            return engines[i];
        }
    }
    return NULL;
}

/*
 * The automatic choice: the environment's, else the first that works.
 * 0 with *ops set, or -errno: the environment's engine's own set-up
 * failure, or -ENODEV (the environment names no engine, or none works).
 */
static int engine_auto(AioContext *ctx, const BlockEngineOps **ops,
                       Error **errp)
{
    const char *env = getenv("AIOLOOP_BLOCK_ENGINE");
    int ret;

    if (env && *env) {
        *ops = engine_by_name(env);
        if (!*ops) {
            error_setg(errp, "AIOLOOP_BLOCK_ENGINE=%s: unknown block engine "
                       "(io_uring, linux-aio or threads)", env);
            return -ENODEV;
        }
        ret = (*ops)->setup(ctx, errp);
        if (ret < 0) {
            error_prepend(errp, "AIOLOOP_BLOCK_ENGINE=%s: ", env);
            return ret;
        }
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(engines); i++) {
        /*
         * Under valgrind, threads only: valgrind does not see the kernel
         * fill io_uring's read buffers (every read looks uninitialised) nor
         * write the completion rings of io_uring and linux-aio (reading
         * them is an invalid read to it).  AIOLOOP_BLOCK_ENGINE still
         * forces another engine.
         */
        if (UNDER_VALGRIND() && engines[i] != &block_engine_threads) {
            continue;
        }
        /* Not an error yet: the next engine may work. */
        if (engines[i]->setup(ctx, NULL) == 0) {
            *ops = engines[i];
            return 0;
        }
    }
    error_setg(errp, "no block engine could be set up");
    return -ENODEV;
}

int aioloop_block_engine_select(AioContext *ctx, AioloopBlockEngine engine,
                                Error **errp)
{
    const BlockEngineOps *ops;
    int ret;

    if (ctx->block_stats.inflight) {
        error_setg(errp, "cannot change the block engine of AioContext %p: "
                   "%" PRIu64 " request(s) in flight", (void *)ctx,
                   ctx->block_stats.inflight);
        return -EBUSY;
    }
    if (engine == AIOLOOP_BLOCK_ENGINE_AUTO) {
        ret = engine_auto(ctx, &ops, errp);
    } else {
        ops = engine_by_id(engine);
        if (!ops) {
            error_setg(errp, "unknown block engine %d", (int)engine);
            return -EINVAL;
        }
        ret = ops->setup(ctx, errp);
    }
    if (ret < 0) {
        return ret;
    }
    ctx->block_engine = ops;
    qatomic_set(&ctx->block_stats.engine, ops->id);
    return ops->id;
}

int block_rw_step(int type, QEMUIOVector *qiov, size_t *done,
                  QEMUIOVector *rest, ssize_t res)
{
    if (res == -EINTR || res == -EAGAIN) {
        /* Not a result: try again, from where the transfer stands. */
        goto again;
    }
    if (type != QEMU_AIO_READ && type != QEMU_AIO_WRITE) {
        return res < 0 ? (int)res : 0;
    }
    if (res < 0) {
        if (res != -EINVAL || !*done || type != QEMU_AIO_READ) {
            return (int)res;
        }
        /*
         * The rest of an O_DIRECT read that stopped at an unaligned end
         * of file starts unaligned: it is past the end.
         */
        res = 0;
    }
    *done += (size_t)res;
    if (*done >= qiov->size) {
        return 0;
    }
    if (res == 0) {
        if (type == QEMU_AIO_READ) {
            /* End of file: what lies past it reads as zeroes. */
            qemu_iovec_memset(qiov, *done, 0, qiov->size - *done);
            return 0;
        }
        /* A write that moved nothing would move nothing again. */
        return -ENOSPC;
    }
again:
    if (*done) {
        if (!rest->iov) {
            qemu_iovec_init(rest, qiov->niov);
        } else {
            qemu_iovec_reset(rest);
        }
        qemu_iovec_concat(rest, qiov, *done, qiov->size - *done);
    }
    return BLOCK_RW_AGAIN;
}

void block_check_caller(AioContext *ctx, const char *fn)
{
    if (!qemu_in_coroutine()) {
        error_report("%s: called outside a coroutine (block I/O yields "
                     "until the request completes)", fn);
        abort();
    }
    if (!ctx) {
        error_report("%s: the coroutine runs in no AioContext", fn);
        abort();
    }
    aio_context_bind_home(ctx, fn);
}

static int coroutine_fn block_co_submit(AioContext *ctx,
                                        const BlockEngineOps *ops, int fd,
                                        uint64_t offset, QEMUIOVector *qiov,
                                        int type, BdrvRequestFlags flags,
                                        uint64_t dev_max_batch)
{
    int ret;

    switch (type) {
    case QEMU_AIO_READ:
    case QEMU_AIO_WRITE:
        if (!qiov) {
            return -EINVAL;
        }
        if (qiov->size == 0) {
            return 0;
        }
        break;
    case QEMU_AIO_FLUSH:
    case AIOLOOP_AIO_FSYNC:
        break;
    default:
        return -ENOTSUP;
    }
    if (fd < 0) {
        return -EBADF;
    }
    qatomic_set(&ctx->block_stats.inflight, ctx->block_stats.inflight + 1);
    ret = ops->co_submit(ctx, fd, offset, qiov, type, flags, dev_max_batch);
    qatomic_set(&ctx->block_stats.inflight, ctx->block_stats.inflight - 1);
    return ret;
}

int coroutine_fn laio_co_submit(int fd, uint64_t offset, QEMUIOVector *qiov,
                                int type, BdrvRequestFlags flags,
                                uint64_t dev_max_batch)
{
    AioContext *ctx = qemu_get_current_aio_context();

    block_check_caller(ctx, "laio_co_submit");
    aio_get_linux_aio(ctx);
    return block_co_submit(ctx, &block_engine_linux_aio, fd, offset, qiov,
                           type, flags, dev_max_batch);
}

int coroutine_fn luring_co_submit(BlockDriverState *bs, int fd,
                                  uint64_t offset, QEMUIOVector *qiov,
                                  int type, BdrvRequestFlags flags)
{
    AioContext *ctx = qemu_get_current_aio_context();

    (void)bs;
    block_check_caller(ctx, "luring_co_submit");
    aio_get_linux_io_uring(ctx);
    return block_co_submit(ctx, &block_engine_io_uring, fd, offset, qiov,
                           type, flags, 0);
}

/* The current context's engine, chosen on first use. */
static int coroutine_fn co_request(const char *fn, int fd, uint64_t offset,
                                   QEMUIOVector *qiov, int type,
                                   BdrvRequestFlags flags)
{
    AioContext *ctx = qemu_get_current_aio_context();

    block_check_caller(ctx, fn);
    if (unlikely(!ctx->block_engine)) {
        Error *err = NULL;
        int ret = aioloop_block_engine_select(ctx, AIOLOOP_BLOCK_ENGINE_AUTO,
                                              &err);

        if (ret < 0) {
            error_prepend(&err, "%s: ", fn);
            error_report_err(err);
            return ret;
        }
    }
    return block_co_submit(ctx, ctx->block_engine, fd, offset, qiov, type,
                           flags, 0);
}

int coroutine_fn aioloop_co_preadv(int fd, uint64_t offset, QEMUIOVector *qiov,
                                   BdrvRequestFlags flags)
{
    return co_request("aioloop_co_preadv", fd, offset, qiov, QEMU_AIO_READ,
                      flags);
}

int coroutine_fn aioloop_co_pwritev(int fd, uint64_t offset,
                                    QEMUIOVector *qiov, BdrvRequestFlags flags)
{
    return co_request("aioloop_co_pwritev", fd, offset, qiov, QEMU_AIO_WRITE,
                      flags);
}

int coroutine_fn aioloop_co_flush(int fd)
{
    return co_request("aioloop_co_flush", fd, 0, NULL, QEMU_AIO_FLUSH, 0);
}

int coroutine_fn aioloop_co_fsync(int fd)
{
    return co_request("aioloop_co_fsync", fd, 0, NULL, AIOLOOP_AIO_FSYNC, 0);
}

int coroutine_fn aioloop_co_submit(AioloopBlockEngine engine, int fd,
                                   uint64_t offset, QEMUIOVector *qiov,
                                   int type, BdrvRequestFlags flags)
{
    AioContext *ctx = qemu_get_current_aio_context();
    const BlockEngineOps *ops;
    Error *err = NULL;

    if (engine == AIOLOOP_BLOCK_ENGINE_AUTO) {
        return co_request("aioloop_co_submit", fd, offset, qiov, type, flags);
    }
    block_check_caller(ctx, "aioloop_co_submit");
    ops = engine_by_id(engine);
    if (!ops) {
        return -EINVAL;
    }
    /* setup() is cheap once done: it finds the context's state. */
    if (ops->setup(ctx, &err) < 0) {
        error_prepend(&err, "aioloop_co_submit: ");
        error_report_err(err);
        return -ENOTSUP;
    }
    return block_co_submit(ctx, ops, fd, offset, qiov, type, flags, 0);
}

void aioloop_block_get_stats(AioContext *ctx, AioloopBlockStats *stats)
{
    stats->engine = qatomic_read(&ctx->block_stats.engine);
    stats->requests = qatomic_read(&ctx->block_stats.requests);
    stats->submits = qatomic_read(&ctx->block_stats.submits);
    stats->inflight = qatomic_read(&ctx->block_stats.inflight);
}

bool aio_block_drain(AioContext *ctx)
{
    bool progress = false;

    while (ctx->block_stats.inflight) {
        progress |= aio_poll(ctx, true);
    }
    return progress;
}

void aio_block_cleanup(AioContext *ctx)
{
    luring_cleanup_ctx(ctx);
    laio_cleanup_ctx(ctx);
}
