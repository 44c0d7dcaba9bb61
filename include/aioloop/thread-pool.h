/*
 * The worker thread pool of an AioContext, with QEMU's API
 * (include/block/thread-pool.h, QEMU >= 8).
 *
 * Every AioContext has one pool, created on first use.  A job is a function
 * that runs in a worker thread (it may block); its completion callback runs
 * afterwards in the AioContext that submitted it, from a bottom half, exactly
 * once.  Workers are started on demand up to the context's thread-pool-max
 * (default 64), at least thread-pool-min (default 0) stay alive, and a worker
 * above the minimum exits after 10 s without work.  The values come from
 * aio_context_set_thread_pool_params(), which may be called at any time.
 *
 * Cancellation (bdrv_aio_cancel_async() on the returned BlockAIOCB) succeeds
 * only while the job is still queued: its function then never runs and the
 * callback receives -ECANCELED.  A job that has started always runs to the
 * end and completes with its own result.
 *
 * Threads: submission and cancellation happen in the home thread of the
 * submitting context, which must be the thread's current context
 * (qemu_set_current_aio_context()).  Workers block every signal.
 *
 * Jobs submitted from inside a completion callback are handed to the
 * workers together, when the batch of completions ends, after 64 of them,
 * or as soon as the thread runs aio_poll() (e.g. a callback waiting for
 * such a job in a nested aio_poll() or AIO_WAIT_WHILE works).  A callback
 * must therefore not block on a job it submitted by other means (a
 * semaphore the job posts) without polling.
 *
 * Lifetime: the pool is freed with its AioContext.  Dropping the last
 * reference to a context while jobs are outstanding (submitted, callback
 * not yet run) aborts with a message: wait for them first.
 */
#ifndef AIOLOOP_THREAD_POOL_H
#define AIOLOOP_THREAD_POOL_H

#include <aioloop/compiler.h>
#include <aioloop/block-aio.h>

AIOLOOP_BEGIN_DECLS

typedef struct AioContext AioContext;
typedef struct ThreadPool ThreadPool;

/* Runs in a worker thread; its result is passed to the completion. */
typedef int ThreadPoolFunc(void *opaque);

/**
 * aio_get_thread_pool: Return @ctx's pool, creating it on first use.
 *
 * Any thread.  The pool lives as long as @ctx.
 */
AIOLOOP_API ThreadPool *aio_get_thread_pool(AioContext *ctx);

/**
 * thread_pool_submit_aio: Run @func(@arg) in a worker of the current
 * context's pool and call @cb(@opaque, ret) in this context afterwards.
 * @func: the job; must not be NULL
 * @arg: its argument
 * @cb: completion callback (may be NULL); ret is @func's return value, or
 *      -ECANCELED if the job was cancelled before it started
 * @opaque: argument for @cb
 *
 * Call from the home thread of the current AioContext
 * (qemu_get_current_aio_context()); aborts with a message when the thread
 * has none.  The returned request is owned by the pool and freed after @cb
 * returns; take a reference with qemu_aio_ref() to use it after that.
 *
 * Returns: the request, usable with bdrv_aio_cancel_async() and
 * bdrv_aio_cancel() until the callback has run.
 */
AIOLOOP_API BlockAIOCB *thread_pool_submit_aio(ThreadPoolFunc *func,
                                               void *arg,
                                               BlockCompletionFunc *cb,
                                               void *opaque);

/**
 * thread_pool_submit_co: Run @func(@arg) in a worker of the current
 * context's pool and wait for it without blocking the thread.
 * @func: the job; must not be NULL
 * @arg: its argument
 *
 * Coroutine only (aborts with a message otherwise): the coroutine yields,
 * and is woken in the context it submitted from once the job is done.
 *
 * Returns: @func's return value.
 */
AIOLOOP_API int coroutine_fn thread_pool_submit_co(ThreadPoolFunc *func,
                                                   void *arg);

/**
 * thread_pool_submit: Fire-and-forget form of thread_pool_submit_aio().
 *
 * The job still counts as outstanding until it has finished and the context
 * has run its (empty) completion.
 */
AIOLOOP_API void thread_pool_submit(ThreadPoolFunc *func, void *arg);

/**
 * thread_pool_update_params: Re-read @ctx's thread-pool-min/max into @pool.
 *
 * Starts workers to reach the new minimum and lets workers above the new
 * maximum exit once their job is done.  aio_context_set_thread_pool_params()
 * calls this itself; there is no need to call it after that.  Any thread.
 */
AIOLOOP_API void thread_pool_update_params(ThreadPool *pool, AioContext *ctx);

AIOLOOP_END_DECLS

#endif
