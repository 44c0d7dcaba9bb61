/*
 * BlockAIOCB allocation, reference counting and cancellation.
 *
 * As in QEMU the count is a plain int: every request is handled in the home
 * thread of the context it completes in, so atomics would buy nothing.
 */
#include <stdlib.h>

#include <aioloop/aio.h>
#include <aioloop/block-aio.h>
#include <aioloop/error.h>

#include "../util/alloc.h"
void *qemu_aio_get(const AIOCBInfo *aiocb_info, BlockDriverState *bs,
                   BlockCompletionFunc *cb, void *opaque)
{
    BlockAIOCB *acb;

    if (!aiocb_info || aiocb_info->aiocb_size < sizeof(BlockAIOCB)) {
        error_report("qemu_aio_get: AIOCBInfo.aiocb_size must be at least "
                     "sizeof(BlockAIOCB) (%zu)", sizeof(BlockAIOCB));
        abort();
    }
    acb = aio_alloc0(aiocb_info->aiocb_size, "qemu_aio_get");
    acb->aiocb_info = aiocb_info;
    acb->bs = bs;
    acb->cb = cb;
    acb->opaque = opaque;
    acb->refcnt = 1;
    return acb;
}

static BlockAIOCB *check_live(void *p, const char *caller)
{
    BlockAIOCB *acb = p;

    if (!acb || acb->refcnt <= 0) {
        error_report("%s: request %p has no reference left (unref without a "
                     "matching ref, or used after its completion freed it)",
                     caller, p);
        abort();
    }
    return acb;
}

void qemu_aio_ref(void *p)
{
    check_live(p, "qemu_aio_ref")->refcnt++;
}

void qemu_aio_unref(void *p)
{
    BlockAIOCB *acb = check_live(p, "qemu_aio_unref");

    if (--acb->refcnt == 0) {
        free(acb);
    }
}

void bdrv_aio_cancel_async(BlockAIOCB *acb)
{
    check_live(acb, "bdrv_aio_cancel_async");
    if (acb->aiocb_info->cancel_async) {
        acb->aiocb_info->cancel_async(acb);
    }
}

void bdrv_aio_cancel(BlockAIOCB *acb)
{
    AioContext *ctx;

    /* Our reference keeps @acb readable after its completion ran. */
    qemu_aio_ref(acb);
    bdrv_aio_cancel_async(acb);
    ctx = acb->aiocb_info->get_aio_context
              ? acb->aiocb_info->get_aio_context(acb)
              : qemu_get_current_aio_context();
    if (!ctx) {
        error_report("bdrv_aio_cancel: no AioContext to wait in (the request "
                     "type has no get_aio_context and this thread has no "
                     "current context)");
        abort();
    }
    while (acb->refcnt > 1) {
        aio_poll(ctx, true);
    }
    qemu_aio_unref(acb);
}
