/*
 * Helpers of the coroutine tests: N plain pthreads, each running
 * its own AioContext with aio_poll(ctx, true) (the IOThread object is not
 * used here on purpose: these tests only need "a thread with a context").
 */
#ifndef AIOLOOP_CO_THREADS_H
#define AIOLOOP_CO_THREADS_H

#include <aioloop/coroutine.h>

#include <semaphore.h>

#include "aio-test.h"

typedef struct LoopThread {
    AioContext *ctx;
    pthread_t thread;
    bool stop;          /* set by a BH in the loop's own thread */
    sem_t ready;
} LoopThread;

static inline void loop_stop_cb(void *opaque)
{
    LoopThread *t = opaque;

    t->stop = true;
}

static inline void *loop_thread_fn(void *opaque)
{
    LoopThread *t = opaque;

    qemu_set_current_aio_context(t->ctx);
    sem_post(&t->ready);
    while (!t->stop) {
        aio_poll(t->ctx, true);
    }
    qemu_set_current_aio_context(NULL);
    return NULL;
}

static inline void loop_thread_start(LoopThread *t)
{
    t->ctx = test_aio_context_new();
    t->stop = false;
    sem_init(&t->ready, 0, 0);
    t->thread = test_thread_start(loop_thread_fn, t);
    sem_wait(&t->ready);
}

static inline void loop_thread_stop(LoopThread *t)
{
    aio_bh_schedule_oneshot(t->ctx, loop_stop_cb, t);
    test_thread_join(t->thread);
    sem_destroy(&t->ready);
    aio_context_unref(t->ctx);
}

/* Let other coroutines of this context run: requeue ourselves, yield. */
static inline void coroutine_fn co_yield_to_loop(void)
{
    aio_co_schedule(qemu_get_current_aio_context(), qemu_coroutine_self());
    qemu_coroutine_yield();
}

#endif
