/*
 * IOThread: naming, current context, registry and ids, synchronous stop
 * from any thread (including itself), create/destroy cycles (ASan checks
 * the leaks at exit), properties with validation applied at run time, and
 * thread-pool completions landing in the IOThread.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>
#include <aioloop/iothread.h>
#include <aioloop/thread-pool.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "aio-internal.h"
#include "aio-test.h"
#include "test.h"
#include "thread-pool-internal.h"

static void read_comm(int tid, char *buf, size_t len)
{
    char path[64];
    FILE *f;

    snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
    f = fopen(path, "r");
    ASSERT_NOT_NULL(f);
    ASSERT_NOT_NULL(fgets(buf, (int)len, f));
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

typedef struct Probe {
    int ran;            /* atomic */
    bool in_iothread;
    AioContext *current;
    pid_t tid;
    sigset_t mask;
    IOThread *self;     /* for the self-stop case */
} Probe;

static void probe_bh(void *opaque)
{
    Probe *p = opaque;

    p->in_iothread = qemu_in_iothread();
    p->current = qemu_get_current_aio_context();
    p->tid = test_gettid();
    pthread_sigmask(SIG_BLOCK, NULL, &p->mask);
    if (p->self) {
        iothread_stop(p->self);
    }
    __atomic_store_n(&p->ran, 1, __ATOMIC_RELEASE);
}

static int probe_ran(Probe *p)
{
    return __atomic_load_n(&p->ran, __ATOMIC_ACQUIRE);
}

TEST(thread_is_named_and_runs_its_context)
{
    Error *err = NULL;
    IOThread *iot = iothread_create("io-test1", &err);
    AioContext *ctx;
    Probe p = { 0 };
    char comm[32];

    ASSERT_NULL(err);
    ASSERT_NOT_NULL(iot);
    ctx = iothread_get_aio_context(iot);
    ASSERT_NOT_NULL(ctx);
    ASSERT_STR_EQ(iothread_get_id(iot), "io-test1");
    ASSERT_INT(iothread_get_thread_id(iot), >, 0);
    read_comm(iothread_get_thread_id(iot), comm, sizeof(comm));
    ASSERT_STR_EQ(comm, "IO io-test1");

    aio_bh_schedule_oneshot(ctx, probe_bh, &p);
    WAIT_UNTIL(probe_ran(&p));
    ASSERT_TRUE(p.in_iothread);
    ASSERT_PTR_EQ(p.current, ctx);
    ASSERT_EQ(p.tid, iothread_get_thread_id(iot));
    ASSERT_FALSE(qemu_in_iothread());
    /*
     * QEMU's qemu_thread_create() mask: the application's signals go to
     * its own threads, but a fault in the IOThread must reach the
     * application's handler (blocked, Linux kills the process instead).
     */
    ASSERT_TRUE(sigismember(&p.mask, SIGINT));
    ASSERT_TRUE(sigismember(&p.mask, SIGTERM));
    ASSERT_TRUE(sigismember(&p.mask, SIGUSR1));
    ASSERT_FALSE(sigismember(&p.mask, SIGSEGV));
    ASSERT_FALSE(sigismember(&p.mask, SIGFPE));
    ASSERT_FALSE(sigismember(&p.mask, SIGILL));
    iothread_destroy(iot);
}

TEST(long_id_is_truncated_in_thread_name)
{
    IOThread *iot = iothread_create("a-very-long-iothread-id", &error_abort);
    char comm[32];

    read_comm(iothread_get_thread_id(iot), comm, sizeof(comm));
    ASSERT_STR_EQ(comm, "IO a-very-long-");
    iothread_destroy(iot);
}

TEST(ids_are_unique_and_validated)
{
    static const char *const bad[] = { "", "1abc", "a b", "a/b", "-x" };
    Error *err = NULL;
    IOThread *a = iothread_create("dup", &error_abort);

    ASSERT_PTR_EQ(iothread_by_id("dup"), a);
    ASSERT_NULL(iothread_by_id("nope"));
    ASSERT_NULL(iothread_by_id(NULL));
    ASSERT_NULL(iothread_create("dup", &err));
    ASSERT_NOT_NULL(err);
    ASSERT_TRUE(strstr(error_get_pretty(err), "already exists") != NULL);
    error_free(err);
    err = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        ASSERT_NULL(iothread_create(bad[i], &err));
        ASSERT_NOT_NULL(err);
        error_free(err);
        err = NULL;
    }
    ASSERT_NULL(iothread_create(NULL, &err));
    ASSERT_NOT_NULL(err);
    error_free(err);
    iothread_destroy(a);
    ASSERT_NULL(iothread_by_id("dup"));
    /* The id is free again. */
    a = iothread_create("dup", &error_abort);
    iothread_destroy(a);
}

TEST(stop_is_synchronous_and_idempotent)
{
    IOThread *iot = iothread_create("io-stop", &error_abort);
    Probe p = { 0 };

    /* Work queued before the stop has run by the time stop returns. */
    aio_bh_schedule_oneshot(iothread_get_aio_context(iot), probe_bh, &p);
    iothread_stop(iot);
    ASSERT_EQ(probe_ran(&p), 1);
    ASSERT_EQ(iothread_get_thread_id(iot), -1);
    iothread_stop(iot);
    iothread_destroy(iot);
    iothread_stop(NULL);
    iothread_destroy(NULL);
}

TEST(stop_from_the_iothread_itself)
{
    IOThread *iot = iothread_create("io-self", &error_abort);
    Probe p = { 0 };

    p.self = iot;
    aio_bh_schedule_oneshot(iothread_get_aio_context(iot), probe_bh, &p);
    /* The loop ends on its own, without anyone joining. */
    WAIT_UNTIL(iothread_get_thread_id(iot) == -1);
    ASSERT_EQ(probe_ran(&p), 1);
    iothread_destroy(iot);
}

static void *stopper(void *opaque)
{
    iothread_stop(opaque);
    return NULL;
}

TEST(concurrent_stops_from_several_threads)
{
    for (int round = 0; round < 20; round++) {
        IOThread *iot = iothread_create("io-many", &error_abort);
        pthread_t t[4];

        for (int i = 0; i < 4; i++) {
            t[i] = test_thread_start(stopper, iot);
        }
        for (int i = 0; i < 4; i++) {
            test_thread_join(t[i]);
        }
        ASSERT_EQ(iothread_get_thread_id(iot), -1);
        iothread_destroy(iot);
    }
}

typedef struct CrossStop {
    IOThread *victim;
    int done; /* atomic */
    int victim_tid_after;
} CrossStop;

static void cross_stop_bh(void *opaque)
{
    CrossStop *c = opaque;

    iothread_stop(c->victim);
    c->victim_tid_after = iothread_get_thread_id(c->victim);
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
}

TEST(stop_from_another_iothread)
{
    IOThread *a = iothread_create("io-a", &error_abort);
    IOThread *b = iothread_create("io-b", &error_abort);
    CrossStop c = { .victim = b };

    aio_bh_schedule_oneshot(iothread_get_aio_context(a), cross_stop_bh, &c);
    WAIT_UNTIL(__atomic_load_n(&c.done, __ATOMIC_ACQUIRE));
    /* Synchronous from there too: b had exited when stop returned in a. */
    ASSERT_EQ(c.victim_tid_after, -1);
    iothread_destroy(b);
    iothread_destroy(a);
}

static int pool_job(void *opaque)
{
    return *(int *)opaque;
}

typedef struct PoolRun {
    int n;
    int done;           /* atomic, written in the IOThread */
    int bad;            /* completions in the wrong place, or twice */
    AioContext *ctx;
    int vals[64];
    int seen[64];
} PoolRun;

static void pool_cb(void *opaque, int ret)
{
    PoolRun *r = opaque;

    if (qemu_get_current_aio_context() != r->ctx || !qemu_in_iothread() ||
        ret < 0 || ret >= r->n || r->seen[ret]++) {
        r->bad++;
    }
    __atomic_fetch_add(&r->done, 1, __ATOMIC_RELEASE);
}

static void submit_bh(void *opaque)
{
    PoolRun *r = opaque;

    for (int i = 0; i < r->n; i++) {
        r->vals[i] = i;
        thread_pool_submit_aio(pool_job, &r->vals[i], pool_cb, r);
    }
}

static void run_pool_jobs(IOThread *iot, int n)
{
    PoolRun r = { .n = n, .ctx = iothread_get_aio_context(iot) };

    aio_bh_schedule_oneshot(r.ctx, submit_bh, &r);
    WAIT_UNTIL(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE) == n);
    /* done is the last write of the last callback; the pool may still
     * hold the request for a moment: wait until it has let it go. */
    WAIT_UNTIL(({
        ThreadPoolStats st_;
        thread_pool_get_stats(aio_get_thread_pool(r.ctx), &st_);
        st_.inflight == 0;
    }));
    ASSERT_EQ(r.bad, 0);
    for (int i = 0; i < n; i++) {
        ASSERT_EQ(r.seen[i], 1);
    }
}

TEST(pool_completions_run_in_the_iothread)
{
    IOThread *iot = iothread_create("io-pool", &error_abort);

    run_pool_jobs(iot, 64);
    iothread_destroy(iot);
}

TEST(create_destroy_many_times)
{
    int n = TEST_TSAN ? 200 : 1000;

    for (int i = 0; i < n; i++) {
        IOThread *iot = (i & 1) ? iothread_new()
                                : iothread_create("io-cycle", &error_abort);

        if (i % 50 == 0) {
            run_pool_jobs(iot, 8);
        }
        if (i & 1) {
            iothread_join(iot);
        } else {
            iothread_destroy(iot);
        }
    }
}

TEST(properties_default_validate_and_apply)
{
    IOThread *iot = iothread_create("io-props", &error_abort);
    AioContext *ctx = iothread_get_aio_context(iot);
    Error *err = NULL;
    ThreadPoolStats st;

    ASSERT_EQ(iothread_get_param(iot, "poll-max-ns", &error_abort), 32768);
    ASSERT_EQ(iothread_get_param(iot, "poll-grow", &error_abort), 0);
    ASSERT_EQ(iothread_get_param(iot, "poll-shrink", &error_abort), 0);
    ASSERT_EQ(iothread_get_param(iot, "aio-max-batch", &error_abort), 0);
    ASSERT_EQ(iothread_get_param(iot, "thread-pool-min", &error_abort), 0);
    ASSERT_EQ(iothread_get_param(iot, "thread-pool-max", &error_abort), 64);
    ASSERT_EQ(qatomic_read(&ctx->poll_max_ns), 32768);

    /* Valid values reach the running context. */
    ASSERT_TRUE(iothread_set_param(iot, "poll-max-ns", 1000, &error_abort));
    ASSERT_TRUE(iothread_set_param(iot, "poll-grow", 4, &error_abort));
    ASSERT_TRUE(iothread_set_param(iot, "poll-shrink", 3, &error_abort));
    ASSERT_TRUE(iothread_set_param(iot, "aio-max-batch", 16, &error_abort));
    ASSERT_EQ(qatomic_read(&ctx->poll_max_ns), 1000);
    ASSERT_EQ(qatomic_read(&ctx->poll_grow), 4);
    ASSERT_EQ(qatomic_read(&ctx->poll_shrink), 3);
    ASSERT_EQ(qatomic_read(&ctx->aio_max_batch), 16);
    ASSERT_EQ(iothread_get_param(iot, "poll-max-ns", &error_abort), 1000);

    /* The pool exists once used; min and max then apply to it at once. */
    run_pool_jobs(iot, 4);
    ASSERT_TRUE(iothread_set_param(iot, "thread-pool-max", 8, &error_abort));
    ASSERT_TRUE(iothread_set_param(iot, "thread-pool-min", 2, &error_abort));
    WAIT_UNTIL(({
        thread_pool_get_stats(aio_get_thread_pool(ctx), &st);
        st.cur_threads >= 2;
    }));
    ASSERT_EQ(st.min_threads, 2);
    ASSERT_EQ(st.max_threads, 8);

    /* Invalid values: an error, and nothing changes. */
    ASSERT_FALSE(iothread_set_param(iot, "poll-max-ns", -1, &err));
    ASSERT_NOT_NULL(err);
    error_free(err);
    err = NULL;
    ASSERT_FALSE(iothread_set_param(iot, "thread-pool-min", 9, &err));
    ASSERT_NOT_NULL(err);
    error_free(err);
    err = NULL;
    ASSERT_FALSE(iothread_set_param(iot, "thread-pool-max", 1, &err));
    ASSERT_NOT_NULL(err);
    error_free(err);
    err = NULL;
    ASSERT_FALSE(iothread_set_param(iot, "thread-pool-max", 0, &err));
    ASSERT_NOT_NULL(err);
    error_free(err);
    err = NULL;
    ASSERT_FALSE(iothread_set_param(iot, "thread-pool-max",
                                    (int64_t)INT_MAX + 1, &err));
    ASSERT_NOT_NULL(err);
    error_free(err);
    err = NULL;
    ASSERT_FALSE(iothread_set_param(iot, "poll-speed", 1, &err));
    ASSERT_NOT_NULL(err);
    ASSERT_TRUE(strstr(error_get_pretty(err), "poll-speed") != NULL);
    error_free(err);
    err = NULL;
    ASSERT_FALSE(iothread_set_param(iot, NULL, 1, &err));
    ASSERT_NOT_NULL(err);
    error_free(err);
    err = NULL;
    ASSERT_EQ(iothread_get_param(iot, "poll-speed", &err), -1);
    ASSERT_NOT_NULL(err);
    error_free(err);

    ASSERT_EQ(iothread_get_param(iot, "poll-max-ns", &error_abort), 1000);
    ASSERT_EQ(iothread_get_param(iot, "thread-pool-min", &error_abort), 2);
    ASSERT_EQ(iothread_get_param(iot, "thread-pool-max", &error_abort), 8);
    ASSERT_EQ(qatomic_read(&ctx->thread_pool_min), 2);
    ASSERT_EQ(qatomic_read(&ctx->thread_pool_max), 8);
    iothread_destroy(iot);
}

static void destroy_self_bh(void *opaque)
{
    iothread_destroy(opaque);
}

static void destroy_from_itself(void *opaque)
{
    IOThread *iot = iothread_create("io-suicide", &error_abort);

    (void)opaque;
    aio_bh_schedule_oneshot(iothread_get_aio_context(iot), destroy_self_bh,
                            iot);
    /* The abort in the IOThread ends this process. */
    test_sleep_ms(20000);
}

TEST(destroy_from_itself_aborts)
{
    test_expect_abort(destroy_from_itself, NULL, "cannot destroy itself");
}

RUN_TESTS(T(thread_is_named_and_runs_its_context),
          T(long_id_is_truncated_in_thread_name),
          T(ids_are_unique_and_validated),
          T(stop_is_synchronous_and_idempotent),
          T(stop_from_the_iothread_itself),
          T(concurrent_stops_from_several_threads),
          T(stop_from_another_iothread),
          T(pool_completions_run_in_the_iothread),
          T(create_destroy_many_times),
          T(properties_default_validate_and_apply),
          T(destroy_from_itself_aborts))
