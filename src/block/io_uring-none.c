/* The io_uring block engine in a build without liburing: never available. */
#include <errno.h>

#include "block-internal.h"

LuringState *aio_setup_linux_io_uring(AioContext *ctx, Error **errp)
{
    (void)ctx;
    error_setg(errp, "aioloop was built without liburing: no io_uring "
               "block engine");
    return NULL;
}

LuringState *aio_get_linux_io_uring(AioContext *ctx)
{
    error_report("aio_get_linux_io_uring: aioloop was built without liburing "
                 "(AioContext %p)", (void *)ctx);
    abort();
}

void luring_cleanup_ctx(AioContext *ctx)
{
    (void)ctx;
}

static int luring_setup(AioContext *ctx, Error **errp)
{
    return aio_setup_linux_io_uring(ctx, errp) ? 0 : -ENOSYS;
}

static int coroutine_fn luring_co_submit_none(AioContext *ctx, int fd,
                                              uint64_t offset,
                                              QEMUIOVector *qiov, int type,
                                              BdrvRequestFlags flags,
                                              uint64_t dev_max_batch)
{
    (void)ctx, (void)fd, (void)offset, (void)qiov, (void)type, (void)flags;
    (void)dev_max_batch;
    return -ENOSYS;
}

const BlockEngineOps block_engine_io_uring = {
    .name = "io_uring",
    .id = AIOLOOP_BLOCK_ENGINE_IO_URING,
    .setup = luring_setup,
    .co_submit = luring_co_submit_none,
};
