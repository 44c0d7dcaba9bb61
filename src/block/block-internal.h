/*
 * Block I/O engines: the contract between src/block/block-io.c (engine
 * choice, the aioloop_co_* API, accounting) and the engines.
 *
 * Every engine serves requests from coroutines running in their context's
 * home thread, and resolves a request to 0 or -errno with the semantics
 * documented in include/aioloop/block-io.h (short reads continued, EOF
 * zero-filled, short writes continued, a write of no byte -ENOSPC,
 * -EINTR/-EAGAIN retried).
 */
#ifndef AIOLOOP_BLOCK_INTERNAL_H
#define AIOLOOP_BLOCK_INTERNAL_H

#include <aioloop/block-io.h>

#include <sys/types.h>

#include "../core/aio-internal.h"

typedef struct BlockEngineOps {
    const char *name;
    AioloopBlockEngine id;
    /*
     * Make the engine usable on @ctx (idempotent, any thread).  0, or
     * -errno with @errp set: the errno of what failed (-EPERM, -EMFILE,
     * -ENOMEM...), -ENOSYS only for an engine this build lacks or a
     * kernel without it.
     */
    int (*setup)(AioContext *ctx, Error **errp);
    /*
     * Submit one request and yield until it is resolved.  Coroutine, in
     * @ctx's home thread, @ctx being the current context; setup() has
     * succeeded.  @type is QEMU_AIO_READ, QEMU_AIO_WRITE, QEMU_AIO_FLUSH
     * or AIOLOOP_AIO_FSYNC (checked by the caller).
     */
    int coroutine_fn (*co_submit)(AioContext *ctx, int fd, uint64_t offset,
                                  QEMUIOVector *qiov, int type,
                                  BdrvRequestFlags flags,
                                  uint64_t dev_max_batch);
} BlockEngineOps;

extern const BlockEngineOps block_engine_io_uring;
extern const BlockEngineOps block_engine_linux_aio;
extern const BlockEngineOps block_engine_threads;

/*
 * Accounting (home thread, plain writes: only the home thread submits and
 * resumes).  Engines count requests handed to the kernel or the pool
 * (resubmissions included) and the calls that handed them over.
 */
static inline void block_count_requests(AioContext *ctx, unsigned n)
{
    qatomic_set(&ctx->block_stats.requests, ctx->block_stats.requests + n);
}

static inline void block_count_submit(AioContext *ctx)
{
    qatomic_set(&ctx->block_stats.submits, ctx->block_stats.submits + 1);
}

/*
 * The batch limit for @ctx: aio_max_batch when set, else @dflt (0: left to
 * the engine); never more than @dev_max_batch when that is non-zero.
 */
static inline unsigned block_max_batch(AioContext *ctx, unsigned dflt,
                                       uint64_t dev_max_batch)
{
    int64_t max = qatomic_read(&ctx->aio_max_batch);
    unsigned n = max > 0 ? (unsigned)MIN(max, (int64_t)UINT32_MAX) : dflt;

    if (dev_max_batch && dev_max_batch < n) {
        n = (unsigned)dev_max_batch;
    }
    return n;
}

/*
 * One step of a request: the kernel (or preadv/pwritev) returned @res,
 * bytes or -errno, for the part of @qiov that starts at *@done.  Applies
 * the semantics every engine shares (block-io.h): -EINTR/-EAGAIN and short
 * transfers go on, end of file reads as zeroes, a write that moves nothing
 * is -ENOSPC.  Returns BLOCK_RW_AGAIN when the request must be submitted
 * again, for what is left: @qiov itself while *@done is 0, else @rest
 * (rebuilt here; the caller destroys it once it was ever initialized).
 * Otherwise returns the request's result, 0 or -errno.  Flushes (@qiov
 * NULL) only retry or resolve.
 */
#define BLOCK_RW_AGAIN 1
int block_rw_step(int type, QEMUIOVector *qiov, size_t *done,
                  QEMUIOVector *rest, ssize_t res);

/* Aborts with a message naming @fn unless called from a coroutine of @ctx. */
void block_check_caller(AioContext *ctx, const char *fn);

/* Engines' teardown at context finalize (no request in flight). */
void luring_cleanup_ctx(AioContext *ctx);
void laio_cleanup_ctx(AioContext *ctx);

#endif
