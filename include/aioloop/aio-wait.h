/*
 * AIO_WAIT_WHILE: wait for a condition while running an event loop.
 *
 * QEMU's include/block/aio-wait.h.  A waiter runs aio_poll() on the
 * context whose events will change the condition: @ctx itself when the
 * caller is its home thread, else the main AioContext (the caller must then
 * be the main thread).  Whoever changes the condition from another thread
 * calls aio_wait_kick() afterwards, which wakes waiters in the main loop
 * with a dummy BH; a home-thread waiter on @ctx is woken by the event that
 * changed the condition in @ctx.
 */
#ifndef AIOLOOP_AIO_WAIT_H
#define AIOLOOP_AIO_WAIT_H

#include <stdbool.h>

#include <aioloop/compiler.h>
#include <aioloop/aio.h>

AIOLOOP_BEGIN_DECLS

/**
 * AioWait: the state shared by AIO_WAIT_WHILE() and aio_wait_kick()
 * @num_waiters: callers inside AIO_WAIT_WHILE() right now (atomic)
 */
typedef struct AioWait {
    unsigned num_waiters;
} AioWait;

/* The one instance, as in QEMU; reached by the macros below. */
AIOLOOP_API extern AioWait global_aio_wait;

/**
 * aioloop_wait_main_context: the main AioContext, for a waiter outside
 *   the home thread of the context it waits for
 * @caller: the name used in the abort message
 *
 * Used by AIO_WAIT_WHILE().  Aborts with a message naming @caller when the
 * main loop does not exist or the calling thread is not the main thread
 * (QEMU asserts the same).
 *
 * Returns: qemu_get_aio_context().
 */
AIOLOOP_API AioContext *aioloop_wait_main_context(const char *caller);

/**
 * AIO_WAIT_WHILE_INTERNAL: the body of AIO_WAIT_WHILE()
 * @ctx: the context whose events change @cond, or NULL (the main context)
 * @cond: evaluated in the calling thread before each iteration
 *
 * num_waiters is incremented before @cond is first evaluated (the full
 * barrier pairs with the one in aio_wait_kick()), so a kick that follows a
 * change of @cond is never missed.
 *
 * Returns: true if it had to wait (ran at least one aio_poll()).
 */
#define AIO_WAIT_WHILE_INTERNAL(ctx, cond) ({                             \
    bool waited_ = false;                                                 \
    AioWait *wait_ = &global_aio_wait;                                    \
    AioContext *ctx_ = (ctx);                                             \
    __atomic_fetch_add(&wait_->num_waiters, 1, __ATOMIC_SEQ_CST);         \
    __atomic_thread_fence(__ATOMIC_SEQ_CST);                              \
    if (ctx_ && in_aio_context_home_thread(ctx_)) {                       \
        while ((cond)) {                                                  \
            aio_poll(ctx_, true);                                         \
            waited_ = true;                                               \
        }                                                                 \
    } else {                                                              \
        AioContext *main_ctx_ = aioloop_wait_main_context("AIO_WAIT_WHILE"); \
        while ((cond)) {                                                  \
            aio_poll(main_ctx_, true);                                    \
            waited_ = true;                                               \
        }                                                                 \
    }                                                                     \
    __atomic_fetch_sub(&wait_->num_waiters, 1, __ATOMIC_SEQ_CST);         \
    waited_; })

/**
 * AIO_WAIT_WHILE: wait for @cond to become false
 * @ctx: the context whose events change @cond, or NULL
 * @cond: the condition
 *
 * In @ctx's home thread, runs aio_poll(@ctx, true) while @cond holds.
 * Anywhere else, the caller must be the main thread (it aborts with a
 * message otherwise), and it runs the main context: the thread that makes
 * @cond false must then call aio_wait_kick().  Callbacks of the polled
 * context run meanwhile, as with any aio_poll().
 *
 * Returns: true if it waited.
 */
#define AIO_WAIT_WHILE(ctx, cond) AIO_WAIT_WHILE_INTERNAL(ctx, cond)

/**
 * AIO_WAIT_WHILE_UNLOCKED: AIO_WAIT_WHILE() without the AioContext lock
 * @ctx: the context, or NULL
 * @cond: the condition
 *
 * The same as AIO_WAIT_WHILE() (QEMU no longer releases a lock there
 * either; the name is kept for source compatibility).
 */
#define AIO_WAIT_WHILE_UNLOCKED(ctx, cond) AIO_WAIT_WHILE_INTERNAL(ctx, cond)

/**
 * aio_wait_kick: wake up AIO_WAIT_WHILE() callers in the main loop
 *
 * Call it after changing the condition of a waiter from a thread other
 * than the one that polls.  Costs one barrier when nobody waits; otherwise
 * schedules a one-shot BH that does nothing in the main context, which
 * makes its aio_poll() return so the condition is evaluated again.
 *
 * Thread: any.
 */
AIOLOOP_API void aio_wait_kick(void);

/**
 * aio_wait_bh_oneshot: run a function in an AioContext and wait for it
 * @ctx: the context (its home thread runs @cb)
 * @cb: the function
 * @opaque: its argument
 *
 * Schedules @cb as a one-shot BH in @ctx, then runs the main loop's
 * context until it has returned.  Everything @cb wrote is visible after.
 *
 * Thread: the main thread (aborts with a message elsewhere, or before
 * qemu_init_main_loop()).
 */
AIOLOOP_API void aio_wait_bh_oneshot(AioContext *ctx, QEMUBHFunc *cb,
                                     void *opaque);

AIOLOOP_END_DECLS

#endif
