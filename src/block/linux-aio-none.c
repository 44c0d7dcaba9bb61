/* The Linux AIO block engine in a build without libaio: never available. */
#include <errno.h>

#include "block-internal.h"

LinuxAioState *aio_setup_linux_aio(AioContext *ctx, Error **errp)
{
    (void)ctx;
    error_setg(errp, "aioloop was built without libaio: no linux-aio block "
               "engine");
    return NULL;
}

LinuxAioState *aio_get_linux_aio(AioContext *ctx)
{
    error_report("aio_get_linux_aio: aioloop was built without libaio "
                 "(AioContext %p)", (void *)ctx);
    abort();
}

void laio_cleanup_ctx(AioContext *ctx)
{
    (void)ctx;
}

static int laio_setup(AioContext *ctx, Error **errp)
{
    return aio_setup_linux_aio(ctx, errp) ? 0 : -ENOSYS;
}

static int coroutine_fn laio_co_submit_none(AioContext *ctx, int fd,
                                            uint64_t offset,
                                            QEMUIOVector *qiov, int type,
                                            BdrvRequestFlags flags,
                                            uint64_t dev_max_batch)
{
    (void)ctx, (void)fd, (void)offset, (void)qiov, (void)type, (void)flags;
    (void)dev_max_batch;
    return -ENOSYS;
}

const BlockEngineOps block_engine_linux_aio = {
    .name = "linux-aio",
    .id = AIOLOOP_BLOCK_ENGINE_LINUX_AIO,
    .setup = laio_setup,
    .co_submit = laio_co_submit_none,
};
