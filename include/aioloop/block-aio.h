/*
 * BlockAIOCB: a reference-counted, cancellable asynchronous request, with
 * QEMU's API (include/block/aio.h and block/block-io.h).
 *
 * A request type is described by an AIOCBInfo: its size (the BlockAIOCB is
 * the first member of a larger struct) and how to cancel it.  The producer
 * allocates the request with qemu_aio_get() and calls the completion
 * callback exactly once; whoever wants the request to outlive the callback
 * takes a reference with qemu_aio_ref().
 *
 * BlockDriverState is not part of aioloop.  The @bs argument of
 * qemu_aio_get() and the field of the same name are an opaque pointer that
 * aioloop stores and never dereferences, so code written against QEMU's
 * block layer ports by passing its own object (or NULL).
 *
 * Threads: a request belongs to the AioContext that completes it.  Reference
 * counting and cancellation are not atomic: call qemu_aio_ref(),
 * qemu_aio_unref(), bdrv_aio_cancel() and bdrv_aio_cancel_async() only from
 * that context's home thread (as in QEMU).
 */
#ifndef AIOLOOP_BLOCK_AIO_H
#define AIOLOOP_BLOCK_AIO_H

#include <stddef.h>

#include <aioloop/compiler.h>

AIOLOOP_BEGIN_DECLS

typedef struct AioContext AioContext;
typedef struct BlockAIOCB BlockAIOCB;

/*
 * Opaque to aioloop: only stored in BlockAIOCB.bs.  Code that has no block
 * layer passes NULL.
 */
typedef struct BlockDriverState BlockDriverState;

/* @ret is 0 or a positive result on success, -errno on failure. */
typedef void BlockCompletionFunc(void *opaque, int ret);

typedef struct AIOCBInfo {
    /*
     * Ask for cancellation and return at once.  The request still completes
     * exactly once: with -ECANCELED if the cancel won, else normally.
     */
    void (*cancel_async)(BlockAIOCB *acb);
    /*
     * The context in which the request completes; bdrv_aio_cancel() polls
     * it.  May be NULL: the caller's current context is used then.
     */
    AioContext *(*get_aio_context)(BlockAIOCB *acb);
    /* sizeof the struct that embeds the BlockAIOCB as its first member. */
    size_t aiocb_size;
} AIOCBInfo;

struct BlockAIOCB {
    const AIOCBInfo *aiocb_info;
    BlockDriverState *bs;
    BlockCompletionFunc *cb;
    void *opaque;
    int refcnt;
};

/**
 * qemu_aio_get: Allocate a request described by @aiocb_info.
 * @aiocb_info: the request type; aiocb_size must be at least
 *              sizeof(BlockAIOCB)
 * @bs: opaque pointer stored in the request (may be NULL)
 * @cb: completion callback stored in the request (may be NULL)
 * @opaque: argument for @cb
 *
 * Returns: zero-filled memory of aiocb_info->aiocb_size bytes whose
 * BlockAIOCB header is filled in, with one reference (the producer's).
 * Aborts when out of memory or when aiocb_size is too small.
 */
AIOLOOP_API void *qemu_aio_get(const AIOCBInfo *aiocb_info,
                               BlockDriverState *bs, BlockCompletionFunc *cb,
                               void *opaque);

/**
 * qemu_aio_ref: Take a reference to the request @p (a BlockAIOCB *).
 */
AIOLOOP_API void qemu_aio_ref(void *p);

/**
 * qemu_aio_unref: Drop a reference to @p; the last one frees it.
 *
 * Dropping a reference that was never taken aborts with a message.
 */
AIOLOOP_API void qemu_aio_unref(void *p);

/**
 * bdrv_aio_cancel_async: Ask @acb to cancel and return at once.
 *
 * The completion callback still runs exactly once, later, in the request's
 * context: with -ECANCELED if the request had not started yet, else with
 * its normal result.  Requests whose AIOCBInfo has no cancel_async are not
 * cancellable; the call then does nothing.  Home thread only.
 */
AIOLOOP_API void bdrv_aio_cancel_async(BlockAIOCB *acb);

/**
 * bdrv_aio_cancel: Cancel @acb and wait until it has completed.
 *
 * Calls bdrv_aio_cancel_async(), then runs aio_poll() on the request's
 * context (AIOCBInfo.get_aio_context, or the current context when that is
 * NULL) until the completion callback has run.  Must be called from that
 * context's home thread; aborts with a message when there is no context to
 * poll.
 */
AIOLOOP_API void bdrv_aio_cancel(BlockAIOCB *acb);

AIOLOOP_END_DECLS

#endif
