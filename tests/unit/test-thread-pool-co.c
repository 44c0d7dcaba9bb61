/*
 * thread_pool_submit_co(): the job's return value comes back to the
 * coroutine, which resumes in the context it submitted from (a plain
 * context driven by this thread, and an IOThread); many coroutines waiting
 * at once each resume exactly once; calling it outside a coroutine aborts.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>
#include <aioloop/coroutine.h>
#include <aioloop/iothread.h>
#include <aioloop/thread-pool.h>

#include <semaphore.h>
#include <stdint.h>

#include "aio-test.h"
#include "test.h"

#define NCO 100

static int job_double(void *opaque)
{
    return (int)(intptr_t)opaque * 2;
}

typedef struct CoJob {
    int arg;
    int ret;
    unsigned resumed;
    AioContext *before, *after;
    sem_t *done; /* NULL: not needed */
} CoJob;

static void coroutine_fn submit_co_entry(void *opaque)
{
    CoJob *j = opaque;

    j->before = qemu_get_current_aio_context();
    j->ret = thread_pool_submit_co(job_double, (void *)(intptr_t)j->arg);
    j->after = qemu_get_current_aio_context();
    j->resumed++;
    if (j->done) {
        sem_post(j->done);
    }
}

TEST(submit_co_returns_result_in_same_context)
{
    AioContext *ctx = test_aio_context_new();
    CoJob jobs[NCO] = { 0 };
    unsigned finished;

    qemu_set_current_aio_context(ctx);
    for (int i = 0; i < NCO; i++) {
        jobs[i].arg = i + 1;
        jobs[i].ret = -1;
        aio_co_enter(ctx, qemu_coroutine_create(submit_co_entry, &jobs[i]));
    }
    test_watchdog("submit_co completions", 60);
    do {
        aio_poll(ctx, true);
        finished = 0;
        for (int i = 0; i < NCO; i++) {
            finished += jobs[i].resumed;
        }
    } while (finished < NCO);
    test_watchdog_cancel();
    /* A few more iterations: nothing may resume twice. */
    while (aio_poll(ctx, false)) {
    }
    for (int i = 0; i < NCO; i++) {
        ASSERT_UINT(jobs[i].resumed, ==, 1);
        ASSERT_INT(jobs[i].ret, ==, 2 * (i + 1));
        ASSERT_PTR_EQ(jobs[i].before, ctx);
        ASSERT_PTR_EQ(jobs[i].after, ctx);
    }
    qemu_set_current_aio_context(NULL);
    aio_context_unref(ctx);
}

TEST(submit_co_from_iothread)
{
    Error *err = NULL;
    IOThread *iot = iothread_create("pool-co", &err);
    AioContext *ctx;
    sem_t done;
    CoJob j = { .arg = 21, .ret = -1, .done = &done };

    ASSERT_NULL(err);
    ctx = iothread_get_aio_context(iot);
    sem_init(&done, 0, 0);
    aio_co_enter(ctx, qemu_coroutine_create(submit_co_entry, &j));
    sem_wait(&done);
    iothread_destroy(iot);
    ASSERT_INT(j.ret, ==, 42);
    ASSERT_UINT(j.resumed, ==, 1);
    ASSERT_PTR_EQ(j.before, ctx);
    ASSERT_PTR_EQ(j.after, ctx);
    sem_destroy(&done);
}

static void submit_co_outside(void *opaque)
{
    AioContext *ctx = test_aio_context_new();

    (void)opaque;
    qemu_set_current_aio_context(ctx);
    thread_pool_submit_co(job_double, NULL);
}

TEST(submit_co_outside_coroutine_aborts)
{
    test_expect_abort(submit_co_outside, NULL, "outside a coroutine");
}

RUN_TESTS(T(submit_co_returns_result_in_same_context),
          T(submit_co_from_iothread),
          T(submit_co_outside_coroutine_aborts));
