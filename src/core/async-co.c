/*
 * Running coroutines in an AioContext: aio_co_schedule(), aio_co_wake(),
 * aio_co_enter() and aio_co_reschedule_self().
 *
 * aio_co_schedule() marks the coroutine scheduled with a CAS (a second
 * scheduler aborts, naming the first), pushes it lock-free on the
 * context's scheduled_coroutines and schedules co_schedule_bh, which takes
 * the whole list, reverses it into FIFO order and enters each coroutine.
 * As in QEMU's util/async.c.
 */
#include <stdio.h>
#include <stdlib.h>

#include "aio-internal.h"
#include "../coroutine/coroutine-int.h"

void co_schedule_bh_cb(void *opaque)
{
    AioContext *ctx = opaque;
    QSLIST_HEAD(, Coroutine) straight, reversed;

    QSLIST_MOVE_ATOMIC(&reversed, &ctx->scheduled_coroutines);
    QSLIST_INIT(&straight);

    while (!QSLIST_EMPTY(&reversed)) {
        Coroutine *co = QSLIST_FIRST(&reversed);

        QSLIST_REMOVE_HEAD(&reversed, co_scheduled_next);
        QSLIST_INSERT_HEAD(&straight, co, co_scheduled_next);
    }

    while (!QSLIST_EMPTY(&straight)) {
        Coroutine *co = QSLIST_FIRST(&straight);

        QSLIST_REMOVE_HEAD(&straight, co_scheduled_next);
        /*
         * Ordered before the coroutine runs by the barrier in
         * qemu_aio_coroutine_enter(); a new aio_co_schedule() of @co can
         * only come from code that runs after that.
         */
        __atomic_store_n(&co->scheduled, NULL, __ATOMIC_RELEASE);
        qemu_aio_coroutine_enter(ctx, co);
    }
}

void aio_co_schedule(AioContext *ctx, Coroutine *co)
{
    const char *scheduled;

    if (!ctx) {
        error_report("aio_co_schedule: no AioContext given (the coroutine "
                     "was entered without a current context?)");
        abort();
    }
    scheduled = qatomic_cmpxchg(&co->scheduled, NULL, __func__);
    if (scheduled) {
        error_report("aio_co_schedule: Co-routine was already scheduled in "
                     "'%s'", scheduled);
        abort();
    }

    /*
     * The coroutine might run and release the last ctx reference before we
     * invoke qemu_bh_schedule().  Take a reference to keep ctx alive until
     * we're done.
     */
    aio_context_ref(ctx);

    QSLIST_INSERT_HEAD_ATOMIC(&ctx->scheduled_coroutines, co,
                              co_scheduled_next);
    qemu_bh_schedule(ctx->co_schedule_bh);

    aio_context_unref(ctx);
}

void coroutine_fn aio_co_reschedule_self(AioContext *new_ctx)
{
    AioContext *old_ctx = qemu_get_current_aio_context();

    if (!qemu_in_coroutine()) {
        error_report("aio_co_reschedule_self: called outside coroutine "
                     "context");
        abort();
    }
    if (old_ctx != new_ctx) {
        if (!old_ctx) {
            error_report("aio_co_reschedule_self: this thread has no current "
                         "AioContext to leave from");
            abort();
        }
        /*
         * Scheduling ourselves in @new_ctx right now would be racy: its
         * thread could enter us before we have yielded here.  QEMU defers
         * the aio_co_schedule() to a one-shot BH in @old_ctx (an allocation
         * and one more loop iteration per hop); the enter loop we yield to
         * does it instead, as soon as we are switched out.
         */
        qemu_coroutine_self()->move_to = new_ctx;
        qemu_coroutine_yield();
    }
}

void aio_co_wake(Coroutine *co)
{
    /*
     * Read co->ctx after whatever made us wake @co (acquire); pairs with
     * smp_wmb() in qemu_aio_coroutine_enter().
     */
    AioContext *ctx = __atomic_load_n(&co->ctx, __ATOMIC_ACQUIRE);

    aio_co_enter(ctx, co);
}

void aio_co_enter(AioContext *ctx, Coroutine *co)
{
    if (ctx != qemu_get_current_aio_context()) {
        aio_co_schedule(ctx, co);
        return;
    }

    if (qemu_in_coroutine()) {
        Coroutine *self = qemu_coroutine_self();

        if (self == co) {
            error_report("aio_co_enter: a coroutine cannot wake itself");
            abort();
        }
        QSIMPLEQ_INSERT_TAIL(&self->co_queue_wakeup, co, co_queue_next);
    } else {
        qemu_aio_coroutine_enter(ctx, co);
    }
}
