/*
 * aioloop: asynchronous block I/O from coroutines
 *
 * Three engines serve the same coroutine API, chosen per AioContext:
 *
 *   io_uring   (liburing) When the context's fd monitor is io_uring, its
 *              ring is shared: fd readiness and block I/O complete through
 *              one io_uring_enter() per loop iteration.  Otherwise the
 *              engine has its own ring, whose fd the context watches.
 *   linux-aio  (libaio) One io_context per AioContext; completions through
 *              an EventNotifier whose io_poll peeks the completion ring, so
 *              adaptive polling covers them.
 *   threads    preadv/pwritev/fdatasync on the context's thread pool.
 *
 * The automatic choice is io_uring, then linux-aio, then threads; under
 * valgrind, threads (valgrind cannot follow the other two's kernel writes).
 * AIOLOOP_BLOCK_ENGINE=io_uring|linux-aio|threads forces one (read when a
 * context first needs an engine); aioloop_block_engine_select() sets one
 * explicitly.  A forced engine that cannot be set up is an error, never a
 * silent fallback.
 *
 * Semantics shared by the engines (QEMU's, except where noted):
 *  - Success is 0, failure -errno (-EBADF, -EINVAL for a misaligned
 *    O_DIRECT request, -EFBIG past RLIMIT_FSIZE, -EIO, ...).  Nothing is
 *    bounce-buffered: an O_DIRECT request must be aligned as the file
 *    requires, else the kernel's -EINVAL reaches the caller.
 *  - A read that reaches end of file succeeds and the part of @qiov past
 *    the end is zero-filled.  A short read is continued for the rest.
 *  - A short write is continued for the rest, so the caller sees the real
 *    reason it stopped (-EFBIG, -ENOSPC, -EDQUOT); a write that moves no
 *    byte at all is -ENOSPC.  (QEMU's linux-aio reports every short write
 *    as -ENOSPC; continuing is what write(2) callers expect.)
 *  - -EINTR and -EAGAIN from the kernel are retried, never reported.
 *  - Requests are batched: they reach the kernel together at the end of
 *    the loop iteration that queued them, or as soon as aio_max_batch of
 *    them are queued (aio_context_set_aio_params(); linux-aio's default is
 *    32).  io_uring's default adapts on the fd monitor's ring: requests of
 *    up to 64 KiB go 4 at a time while the loop sleeps waiting for the
 *    device, one batch per iteration otherwise (docs/block-io.md).
 *  - The completion resumes the coroutine in the context that submitted
 *    the request, which must be the current one (the coroutine runs in
 *    qemu_get_current_aio_context()).
 *  - Dropping the last reference to a context with requests in flight
 *    waits for them: aio_context_unref() runs the context's loop until
 *    every request has completed and its coroutine has been resumed.
 *
 * Windows' win32-aio is out of scope.
 */
#ifndef AIOLOOP_BLOCK_IO_H
#define AIOLOOP_BLOCK_IO_H

#include <stdint.h>

#include <aioloop/aio.h>
#include <aioloop/block-aio.h>
#include <aioloop/compiler.h>
#include <aioloop/coroutine.h>
#include <aioloop/error.h>
#include <aioloop/iov.h>

AIOLOOP_BEGIN_DECLS

/* Request types (QEMU's block/raw-aio.h); the engines serve the first four. */
#define QEMU_AIO_READ         0x0001
#define QEMU_AIO_WRITE        0x0002
#define QEMU_AIO_IOCTL        0x0004
#define QEMU_AIO_FLUSH        0x0008 /* fdatasync(2) */
#define QEMU_AIO_DISCARD      0x0010
#define QEMU_AIO_WRITE_ZEROES 0x0020
#define QEMU_AIO_COPY_RANGE   0x0040
#define QEMU_AIO_TRUNCATE     0x0080
#define QEMU_AIO_ZONE_REPORT  0x0100
#define QEMU_AIO_ZONE_MGMT    0x0200
#define QEMU_AIO_ZONE_APPEND  0x0400
/* Our addition: a full fsync(2), metadata included. */
#define AIOLOOP_AIO_FSYNC     0x0800
#define QEMU_AIO_TYPE_MASK                                                  \
    (QEMU_AIO_READ | QEMU_AIO_WRITE | QEMU_AIO_IOCTL | QEMU_AIO_FLUSH |     \
     QEMU_AIO_DISCARD | QEMU_AIO_WRITE_ZEROES | QEMU_AIO_COPY_RANGE |       \
     QEMU_AIO_TRUNCATE | QEMU_AIO_ZONE_REPORT | QEMU_AIO_ZONE_MGMT |        \
     QEMU_AIO_ZONE_APPEND | AIOLOOP_AIO_FSYNC)

/*
 * Request flags (QEMU's BdrvRequestFlags; only BDRV_REQ_FUA means something
 * to the engines: the write is durable when it completes, RWF_DSYNC).
 */
typedef enum {
    BDRV_REQ_FUA = 0x10,
} BdrvRequestFlags;

typedef struct LinuxAioState LinuxAioState;
typedef struct LuringState LuringState;

typedef enum AioloopBlockEngine {
    AIOLOOP_BLOCK_ENGINE_AUTO = 0,
    AIOLOOP_BLOCK_ENGINE_IO_URING,
    AIOLOOP_BLOCK_ENGINE_LINUX_AIO,
    AIOLOOP_BLOCK_ENGINE_THREADS,
} AioloopBlockEngine;

/**
 * aio_setup_linux_aio: Set up the Linux AIO state bound to @ctx.
 * @ctx: the context
 * @errp: error object, set on failure
 *
 * Idempotent: later calls return the same state.  Any thread.
 *
 * Returns: the state, or NULL with @errp set (no libaio in this build,
 * io_setup() failed).
 */
AIOLOOP_API LinuxAioState *aio_setup_linux_aio(AioContext *ctx, Error **errp);

/**
 * aio_get_linux_aio: Return the Linux AIO state bound to @ctx.
 *
 * Aborts with a message when aio_setup_linux_aio() has not succeeded.
 */
AIOLOOP_API LinuxAioState *aio_get_linux_aio(AioContext *ctx);

/**
 * aio_setup_linux_io_uring: Set up the io_uring block state bound to @ctx.
 * @ctx: the context
 * @errp: error object, set on failure
 *
 * Idempotent.  Any thread.
 *
 * Returns: the state, or NULL with @errp set.
 */
AIOLOOP_API LuringState *aio_setup_linux_io_uring(AioContext *ctx,
                                                  Error **errp);

/**
 * aio_get_linux_io_uring: Return the io_uring block state bound to @ctx.
 *
 * Aborts with a message when aio_setup_linux_io_uring() has not succeeded.
 */
AIOLOOP_API LuringState *aio_get_linux_io_uring(AioContext *ctx);

/**
 * laio_co_submit: Submit a request to the current context's Linux AIO
 * state and wait for it.
 * @fd: file descriptor
 * @offset: file offset (ignored by flushes)
 * @qiov: the buffers (NULL for a flush)
 * @type: QEMU_AIO_READ, QEMU_AIO_WRITE, QEMU_AIO_FLUSH or AIOLOOP_AIO_FSYNC
 * @flags: BDRV_REQ_FUA or 0
 * @dev_max_batch: the device's own batch limit, 0 for none
 *
 * Call from a coroutine of a context on which aio_setup_linux_aio()
 * succeeded.
 *
 * Returns: 0 on success, -errno on failure.
 */
AIOLOOP_API int coroutine_fn laio_co_submit(int fd, uint64_t offset,
                                            QEMUIOVector *qiov, int type,
                                            BdrvRequestFlags flags,
                                            uint64_t dev_max_batch);

/**
 * luring_co_submit: Submit a request to the current context's io_uring
 * block state and wait for it.
 * @bs: opaque, unused (QEMU's signature)
 * @fd, @offset, @qiov, @type, @flags: as for laio_co_submit()
 *
 * Call from a coroutine of a context on which aio_setup_linux_io_uring()
 * succeeded.
 *
 * Returns: 0 on success, -errno on failure.
 */
AIOLOOP_API int coroutine_fn luring_co_submit(BlockDriverState *bs, int fd,
                                              uint64_t offset,
                                              QEMUIOVector *qiov, int type,
                                              BdrvRequestFlags flags);

/**
 * aioloop_block_engine_select: Choose the block engine of @ctx.
 * @ctx: the context
 * @engine: the engine, or AIOLOOP_BLOCK_ENGINE_AUTO for the automatic
 *          choice (AIOLOOP_BLOCK_ENGINE in the environment, else the first
 *          that works of io_uring, linux-aio, threads; threads under
 *          valgrind)
 * @errp: error object, set on failure
 *
 * May be called again to switch engines while no request is in flight on
 * @ctx.  Home thread of @ctx, or any thread before the context runs.
 *
 * Returns: the engine now in use, or -errno with @errp set:
 *  - the engine's set-up failed: that failure's own errno, e.g. -EPERM
 *    (io_uring refused by seccomp or kernel.io_uring_disabled), -EMFILE
 *    (no file descriptor left for the ring or the eventfd), -ENOMEM,
 *    -EAGAIN (linux-aio: fs.aio-max-nr reached); -ENOSYS only when the
 *    kernel or this build of aioloop lacks the engine.  With
 *    AIOLOOP_BLOCK_ENGINE_AUTO this holds for the engine that
 *    AIOLOOP_BLOCK_ENGINE names; @ctx's engine is left as it was;
 *  - -EINVAL: @engine is not an engine;
 *  - -ENODEV: AIOLOOP_BLOCK_ENGINE names an unknown engine, or (AUTO
 *    without it) no engine could be set up;
 *  - -EBUSY: requests are in flight on @ctx.
 */
AIOLOOP_API int aioloop_block_engine_select(AioContext *ctx,
                                            AioloopBlockEngine engine,
                                            Error **errp);

/**
 * aioloop_block_engine_name: "io_uring", "linux-aio", "threads" or "auto".
 */
AIOLOOP_API const char *aioloop_block_engine_name(AioloopBlockEngine engine);

/**
 * aioloop_co_preadv: Read @qiov->size bytes at @offset of @fd.
 * @fd: file descriptor
 * @offset: file offset
 * @qiov: where the data goes
 * @flags: 0 (reserved)
 *
 * Uses the block engine of the current context, choosing it on first use
 * as aioloop_block_engine_select(ctx, AIOLOOP_BLOCK_ENGINE_AUTO) does.
 * Coroutine only.
 *
 * Returns: 0 on success (past end of file, the rest of @qiov is zeroed),
 * -errno on failure, including the engine's set-up failure.
 */
AIOLOOP_API int coroutine_fn aioloop_co_preadv(int fd, uint64_t offset,
                                               QEMUIOVector *qiov,
                                               BdrvRequestFlags flags);

/**
 * aioloop_co_pwritev: Write @qiov at @offset of @fd.
 * @flags: BDRV_REQ_FUA to make the data durable before completion
 *
 * As aioloop_co_preadv().  Returns: 0 on success, -errno on failure.
 */
AIOLOOP_API int coroutine_fn aioloop_co_pwritev(int fd, uint64_t offset,
                                                QEMUIOVector *qiov,
                                                BdrvRequestFlags flags);

/**
 * aioloop_co_flush: fdatasync(2) @fd through the block engine.
 *
 * Returns: 0 on success, -errno on failure.
 */
AIOLOOP_API int coroutine_fn aioloop_co_flush(int fd);

/**
 * aioloop_co_fsync: fsync(2) @fd (data and metadata) through the block
 * engine.
 *
 * Returns: 0 on success, -errno on failure.
 */
AIOLOOP_API int coroutine_fn aioloop_co_fsync(int fd);

/**
 * aioloop_co_submit: One request through a chosen engine.
 * @engine: the engine for this request, or AIOLOOP_BLOCK_ENGINE_AUTO for the
 *          current context's engine (as aioloop_co_preadv() and friends)
 * @fd: the file
 * @offset: the file offset (ignored for flushes)
 * @qiov: the buffers (NULL for flushes)
 * @type: QEMU_AIO_READ, QEMU_AIO_WRITE, QEMU_AIO_FLUSH or AIOLOOP_AIO_FSYNC
 * @flags: BDRV_REQ_FUA or 0
 *
 * QEMU picks the engine per block node (aio=io_uring|native|threads), all
 * nodes of a context sharing its per-context engine state; this is that
 * model for callers that serve several files with different engines from
 * one context.  An engine not yet set up on the current context is set up
 * on first use; if it cannot be, the request fails with -ENOTSUP and the
 * reason is reported on stderr.
 *
 * Returns: 0 on success, -errno on failure (the semantics above).
 */
AIOLOOP_API int coroutine_fn aioloop_co_submit(AioloopBlockEngine engine,
                                               int fd, uint64_t offset,
                                               QEMUIOVector *qiov, int type,
                                               BdrvRequestFlags flags);

/**
 * AioloopBlockStats: block I/O counters of a context (our addition).
 * @engine: the engine in use (AUTO while none was chosen yet)
 * @requests: requests submitted to the kernel or the pool, resubmissions of
 *            short transfers included
 * @submits: system calls (io_uring_enter, io_submit) that handed requests
 *           to the kernel; for threads, pool submissions
 * @inflight: requests submitted whose coroutine has not been resumed yet
 */
typedef struct AioloopBlockStats {
    AioloopBlockEngine engine;
    uint64_t requests;
    uint64_t submits;
    uint64_t inflight;
} AioloopBlockStats;

/**
 * aioloop_block_get_stats: Read @ctx's block I/O counters.  Any thread: each
 * counter is read atomically, the set is not one snapshot.
 */
AIOLOOP_API void aioloop_block_get_stats(AioContext *ctx,
                                         AioloopBlockStats *stats);

AIOLOOP_END_DECLS

#endif
