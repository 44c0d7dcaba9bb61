/*
 * AIO_WAIT_WHILE, aio_wait_kick and aio_wait_bh_oneshot.
 *
 * A plain pthread plays the IOThread: it owns its AioContext (set as its
 * current context) and loops aio_poll(ctx, true) until stopped.  The main
 * thread has the main loop.  Waits that would be lost hang; the harness
 * watchdog cannot be used (the main loop traps SIGALRM), so a watchdog
 * thread turns a hang into a failure.
 */
#define _GNU_SOURCE

#include <aioloop/aio-wait.h>
#include <aioloop/main-loop.h>

#include <pthread.h>
#include <stdint.h>

#include "aio-test.h"
#include "test.h"


#define WATCHDOG_SECONDS 120
#define ROUNDS (TEST_SANITIZED ? 200 : 2000)

typedef struct Worker {
    AioContext *ctx;
    pthread_t thread;
    pid_t tid;          /* atomic, set when running */
    bool stop;          /* home thread only (set by a BH) */
} Worker;

static Worker worker;

static void *worker_fn(void *arg)
{
    Worker *w = arg;

    qemu_set_current_aio_context(w->ctx);
    __atomic_store_n(&w->tid, gettid(), __ATOMIC_SEQ_CST);
    while (!w->stop) {
        aio_poll(w->ctx, true);
    }
    qemu_set_current_aio_context(NULL);
    return NULL;
}

static void stop_bh(void *opaque)
{
    Worker *w = opaque;

    w->stop = true;
}

static void worker_start(Worker *w)
{
    w->ctx = test_aio_context_new();
    w->stop = false;
    w->tid = 0;
    w->thread = test_thread_start(worker_fn, w);
    while (!__atomic_load_n(&w->tid, __ATOMIC_SEQ_CST)) {
        sched_yield();
    }
}

static void worker_stop(Worker *w)
{
    aio_bh_schedule_oneshot(w->ctx, stop_bh, w);
    test_thread_join(w->thread);
    aio_context_unref(w->ctx);
}

static void *watchdog_thread(void *arg)
{
    (void)arg;
    sleep(WATCHDOG_SECONDS);
    fprintf(stderr, "FAIL: watchdog: test-aio-wait hung for %d s\n",
            WATCHDOG_SECONDS);
    _exit(1);
}

/* ---- waiting in the home thread ---------------------------------------- */

static void set_flag_bh(void *opaque)
{
    __atomic_store_n((bool *)opaque, true, __ATOMIC_SEQ_CST);
}

TEST(wait_in_home_thread)
{
    AioContext *main_ctx = qemu_get_aio_context();
    AioloopContextStats before, after;
    bool flag = false;

    /* The condition only becomes false by running the main context. */
    aio_bh_schedule_oneshot(main_ctx, set_flag_bh, &flag);
    ASSERT_TRUE(AIO_WAIT_WHILE(main_ctx, !flag));
    ASSERT_TRUE(flag);

    /* A false condition: no aio_poll() at all. */
    aioloop_context_get_stats(main_ctx, &before);
    ASSERT_FALSE(AIO_WAIT_WHILE(main_ctx, !flag));
    ASSERT_FALSE(AIO_WAIT_WHILE_UNLOCKED(NULL, false));
    aioloop_context_get_stats(main_ctx, &after);
    ASSERT_UINT(after.iterations, ==, before.iterations);
    ASSERT_EQ(__atomic_load_n(&global_aio_wait.num_waiters, __ATOMIC_SEQ_CST), 0);
}

/* ---- waiting for another thread's context ------------------------------- */

typedef struct KickData {
    int done;          /* atomic */
    pid_t ran_in;
} KickData;

static void done_and_kick_bh(void *opaque)
{
    KickData *k = opaque;

    k->ran_in = gettid();
    __atomic_fetch_add(&k->done, 1, __ATOMIC_SEQ_CST);
    aio_wait_kick();
}

TEST(wait_for_other_thread_bh)
{
    for (int i = 1; i <= ROUNDS; i++) {
        KickData k = { 0, 0 };

        aio_bh_schedule_oneshot(worker.ctx, done_and_kick_bh, &k);
        if (i % 2) {
            AIO_WAIT_WHILE(worker.ctx,
                           !__atomic_load_n(&k.done, __ATOMIC_SEQ_CST));
        } else {
            AIO_WAIT_WHILE_UNLOCKED(NULL,
                                    !__atomic_load_n(&k.done, __ATOMIC_SEQ_CST));
        }
        ASSERT_EQ(k.done, 1);
        ASSERT_EQ(k.ran_in, worker.tid);
    }
}

typedef struct OneshotData {
    uint64_t value;   /* written by the BH, read after the wait */
    pid_t ran_in;
} OneshotData;

static void oneshot_cb(void *opaque)
{
    OneshotData *d = opaque;

    d->value++;
    d->ran_in = gettid();
}

TEST(bh_oneshot_runs_and_waits)
{
    OneshotData d = { 0, 0 };

    for (int i = 0; i < ROUNDS; i++) {
        aio_wait_bh_oneshot(worker.ctx, oneshot_cb, &d);
        ASSERT_UINT(d.value, ==, (uint64_t)i + 1);
        ASSERT_EQ(d.ran_in, worker.tid);
    }
    /* In the main context itself. */
    aio_wait_bh_oneshot(qemu_get_aio_context(), oneshot_cb, &d);
    ASSERT_EQ(d.ran_in, gettid());
}

TEST(kick_without_waiters_schedules_nothing)
{
    AioContext *main_ctx = qemu_get_aio_context();
    AioloopContextStats before, after;

    while (aio_poll(main_ctx, false)) {
        continue;
    }
    aioloop_context_get_stats(main_ctx, &before);
    for (int i = 0; i < 10; i++) {
        aio_wait_kick();
    }
    aio_poll(main_ctx, false);
    aioloop_context_get_stats(main_ctx, &after);
    ASSERT_UINT(after.bh_runs, ==, before.bh_runs);
}

/* A waiter in the worker's home thread, nested in one of its BHs. */
typedef struct NestedData {
    bool flag;     /* atomic */
    bool waited;   /* written by the worker before done */
    int done;      /* atomic */
} NestedData;

static void nested_wait_bh(void *opaque)
{
    NestedData *n = opaque;

    n->waited = AIO_WAIT_WHILE(worker.ctx,
                               !__atomic_load_n(&n->flag, __ATOMIC_SEQ_CST));
    __atomic_store_n(&n->done, 1, __ATOMIC_SEQ_CST);
    aio_wait_kick();
}

TEST(wait_nested_in_home_thread)
{
    NestedData n = { false, false, 0 };

    aio_bh_schedule_oneshot(worker.ctx, nested_wait_bh, &n);
    /* The worker polls its own context; this BH ends its wait. */
    aio_bh_schedule_oneshot(worker.ctx, set_flag_bh, &n.flag);
    AIO_WAIT_WHILE(worker.ctx, !__atomic_load_n(&n.done, __ATOMIC_SEQ_CST));
    ASSERT_TRUE(n.flag);
}

/* ---- stress: many kickers, one waiter, exact count ---------------------- */

#define KICKERS 4

static uint64_t kicked;   /* atomic */

static void *kicker_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        __atomic_fetch_add(&kicked, 1, __ATOMIC_SEQ_CST);
        aio_wait_kick();
    }
    return NULL;
}

TEST(kick_stress)
{
    pthread_t t[KICKERS];
    const uint64_t total = (uint64_t)KICKERS * ROUNDS;

    kicked = 0;
    for (int i = 0; i < KICKERS; i++) {
        t[i] = test_thread_start(kicker_thread, NULL);
    }
    AIO_WAIT_WHILE(NULL, __atomic_load_n(&kicked, __ATOMIC_SEQ_CST) < total);
    for (int i = 0; i < KICKERS; i++) {
        test_thread_join(t[i]);
    }
    ASSERT_UINT(kicked, ==, total);
    ASSERT_EQ(__atomic_load_n(&global_aio_wait.num_waiters, __ATOMIC_SEQ_CST), 0);
}

/* ---- misuse --------------------------------------------------------------- */

static void *foreign_wait_thread(void *arg)
{
    AioContext *ctx = arg;

    AIO_WAIT_WHILE(ctx, true);
    return NULL;
}

static void foreign_wait(void *opaque)
{
    pthread_t t = test_thread_start(foreign_wait_thread, opaque);

    test_thread_join(t);
}

static void *foreign_oneshot_thread(void *arg)
{
    OneshotData d = { 0, 0 };

    aio_wait_bh_oneshot(arg, oneshot_cb, &d);
    return NULL;
}

static void foreign_oneshot(void *opaque)
{
    pthread_t t = test_thread_start(foreign_oneshot_thread, opaque);

    test_thread_join(t);
}

TEST(misuse_aborts)
{
    /* Both need a new thread in the forked child, which TSan refuses. */
    if (TEST_TSAN) {
        printf("# not under TSan (threads after a threaded fork)\n");
        return;
    }
    test_expect_abort(foreign_wait, worker.ctx,
                      "AIO_WAIT_WHILE: called from a thread that is neither");
    test_expect_abort(foreign_oneshot, worker.ctx,
                      "aio_wait_bh_oneshot: called from a thread that is neither");
}

static void wait_without_main_loop(void *opaque)
{
    AioContext *ctx = opaque;

    /* Not the home thread of ctx, and no main loop. */
    AIO_WAIT_WHILE(ctx, true);
}

static const TestCase cases[] = {
    T(wait_in_home_thread),
    T(wait_for_other_thread_bh),
    T(bh_oneshot_runs_and_waits),
    T(kick_without_waiters_schedules_nothing),
    T(wait_nested_in_home_thread),
    T(kick_stress),
    T(misuse_aborts),
};

int main(int argc, char **argv)
{
    Error *err = NULL;
    pthread_t wd;
    int ret;

    /* Before the main loop exists: a foreign waiter has nothing to poll. */
    {
        Worker w;

        worker_start(&w);
        printf("# no_main_loop_aborts\n");
        test_expect_abort(wait_without_main_loop, w.ctx,
                          "there is no main loop");
        worker_stop(&w);
    }
    if (qemu_init_main_loop(&err) < 0) {
        const char *forced = getenv("AIOLOOP_FDMON");

        if (forced && *forced) {
            test_skip(error_get_pretty(err));
        }
        TEST_FAIL_("qemu_init_main_loop: %s", error_get_pretty(err));
    }
    wd = test_thread_start(watchdog_thread, NULL);
    pthread_detach(wd);
    worker_start(&worker);
    ret = test_run_all(argc, argv, cases, ARRAY_SIZE(cases));
    worker_stop(&worker);
    return ret;
}
