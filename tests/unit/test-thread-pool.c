/*
 * Thread pool: completion in the submitting context exactly once, the
 * 100-jobs / 64-threads case, cancellation (before start only, exactly one
 * outcome per job), nested aio_poll() in callbacks, worker lifetime (spawn
 * on demand, min kept, idle exit, max lowered), BlockAIOCB references and
 * misuse aborts.
 *
 * Nothing here asserts timing.  Jobs that must stay running wait on a gate
 * the test opens; "a worker exited" is waited for, not slept for (the idle
 * timeout is shortened to 20 ms through the internal tunable).
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>
#include <aioloop/block-aio.h>
#include <aioloop/thread-pool.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "aio-test.h"
#include "test.h"
#include "thread-pool-internal.h"

/* ---- helpers ---------------------------------------------------------- */

static AioContext *ctx_new_current(void)
{
    AioContext *ctx = test_aio_context_new();

    qemu_set_current_aio_context(ctx);
    return ctx;
}

static void ctx_free_current(AioContext *ctx)
{
    qemu_set_current_aio_context(NULL);
    aio_context_unref(ctx);
}

static ThreadPoolStats pool_stats(AioContext *ctx)
{
    ThreadPoolStats st;

    thread_pool_get_stats(aio_get_thread_pool(ctx), &st);
    return st;
}

static void wait_inflight_zero(AioContext *ctx)
{
    while (pool_stats(ctx).inflight) {
        aio_poll(ctx, true);
    }
}

/* Threads in this process, from /proc/self/task. */
static int count_threads(void)
{
    char buf[64];
    FILE *f = fopen("/proc/self/status", "r");
    int n = -1;

    ASSERT_NOT_NULL(f);
    while (fgets(buf, sizeof(buf), f)) {
        if (sscanf(buf, "Threads: %d", &n) == 1) {
            break;
        }
    }
    fclose(f);
    return n;
}

/* A gate jobs block on until the test opens it. */
typedef struct Gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool open;
    int entered; /* jobs that reached the gate */
} Gate;

static void gate_init(Gate *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->open = false;
    g->entered = 0;
}

static void gate_pass(Gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->entered++;
    pthread_cond_broadcast(&g->cond);
    while (!g->open) {
        pthread_cond_wait(&g->cond, &g->lock);
    }
    pthread_mutex_unlock(&g->lock);
}

static int gate_entered(Gate *g)
{
    int n;

    pthread_mutex_lock(&g->lock);
    n = g->entered;
    pthread_mutex_unlock(&g->lock);
    return n;
}

static void gate_open(Gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void gate_destroy(Gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

/* One job's record: what ran where, and what the callback saw. */
typedef struct Job {
    int id;
    Gate *gate;
    int sleep_us;
    int ran;              /* atomic: times func ran */
    pid_t worker_tid;
    bool signals_blocked;
    int cb_runs;          /* home thread */
    int cb_ret;
    pid_t cb_tid;
    AioContext *cb_ctx;
    BlockAIOCB *acb;
} Job;

static int job_fn(void *opaque)
{
    Job *j = opaque;
    sigset_t set;

    __atomic_fetch_add(&j->ran, 1, __ATOMIC_SEQ_CST);
    j->worker_tid = test_gettid();
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    /* QEMU's mask: all blocked but the faults (blocked, they kill). */
    j->signals_blocked = sigismember(&set, SIGINT) && sigismember(&set, SIGTERM) &&
                         !sigismember(&set, SIGSEGV) &&
                         !sigismember(&set, SIGFPE) && !sigismember(&set, SIGILL);
    if (j->gate) {
        gate_pass(j->gate);
    }
    if (j->sleep_us) {
        usleep((useconds_t)j->sleep_us);
    }
    return 1000 + j->id;
}

static int completed;

static void job_cb(void *opaque, int ret)
{
    Job *j = opaque;

    j->cb_runs++;
    j->cb_ret = ret;
    j->cb_tid = test_gettid();
    j->cb_ctx = qemu_get_current_aio_context();
    completed++;
}

/* ---- cases ------------------------------------------------------------ */

TEST(completion_runs_in_submitting_context_once)
{
    AioContext *ctx = ctx_new_current();
    Job j = { .id = 7 };

    completed = 0;
    j.acb = thread_pool_submit_aio(job_fn, &j, job_cb, &j);
    ASSERT_NOT_NULL(j.acb);
    while (!completed) {
        aio_poll(ctx, true);
    }
    ASSERT_EQ(j.ran, 1);
    ASSERT_EQ(j.cb_runs, 1);
    ASSERT_EQ(j.cb_ret, 1007);
    ASSERT_EQ(j.cb_tid, test_gettid());
    ASSERT_NE(j.worker_tid, test_gettid());
    ASSERT_PTR_EQ(j.cb_ctx, ctx);
    ASSERT_TRUE(j.signals_blocked);
    /* No second completion, however long we poll. */
    while (aio_poll(ctx, false)) {
    }
    ASSERT_EQ(j.cb_runs, 1);
    ASSERT_EQ(pool_stats(ctx).inflight, 0);
    ctx_free_current(ctx);
}

TEST(hundred_jobs_on_64_threads_all_complete)
{
    AioContext *ctx = ctx_new_current();
    static Job jobs[100];
    Gate gate;
    ThreadPoolStats st;

    gate_init(&gate);
    aio_context_set_thread_pool_params(ctx, 0, 64, &error_abort);
    completed = 0;
    for (int i = 0; i < 100; i++) {
        jobs[i] = (Job){ .id = i, .gate = &gate };
        jobs[i].acb = thread_pool_submit_aio(job_fn, &jobs[i], job_cb, &jobs[i]);
    }
    /*
     * Every job blocks until the gate opens, so the pool has to grow to its
     * maximum: 64 jobs enter, no more.
     */
    WAIT_UNTIL(gate_entered(&gate) == 64);
    st = pool_stats(ctx);
    ASSERT_EQ(st.cur_threads, 64);
    ASSERT_EQ(st.queued, 36);
    gate_open(&gate);
    while (completed < 100) {
        aio_poll(ctx, true);
    }
    for (int i = 0; i < 100; i++) {
        ASSERT_EQ(jobs[i].ran, 1);
        ASSERT_EQ(jobs[i].cb_runs, 1);
        ASSERT_EQ(jobs[i].cb_ret, 1000 + i);
        ASSERT_EQ(jobs[i].cb_tid, test_gettid());
    }
    ASSERT_EQ(gate_entered(&gate), 100);
    ASSERT_INT(pool_stats(ctx).spawned, <=, 64);
    ctx_free_current(ctx);
    gate_destroy(&gate);
}

/* Each job ends completed or cancelled, never both, never neither. */
static void check_outcomes(Job *jobs, int n, int *n_done, int *n_cancelled)
{
    *n_done = *n_cancelled = 0;
    for (int i = 0; i < n; i++) {
        ASSERT_EQ(jobs[i].cb_runs, 1);
        if (jobs[i].cb_ret == -ECANCELED) {
            ASSERT_EQ(jobs[i].ran, 0);
            (*n_cancelled)++;
        } else {
            ASSERT_EQ(jobs[i].ran, 1);
            ASSERT_EQ(jobs[i].cb_ret, 1000 + i);
            (*n_done)++;
        }
    }
    ASSERT_EQ(*n_done + *n_cancelled, n);
}

TEST(cancel_gated_jobs_only_queued_ones_cancel)
{
    AioContext *ctx = ctx_new_current();
    static Job jobs[100];
    Gate gate;
    int n_done, n_cancelled;

    gate_init(&gate);
    aio_context_set_thread_pool_params(ctx, 0, 4, &error_abort);
    completed = 0;
    for (int i = 0; i < 100; i++) {
        jobs[i] = (Job){ .id = i, .gate = &gate };
        jobs[i].acb = thread_pool_submit_aio(job_fn, &jobs[i], job_cb, &jobs[i]);
    }
    WAIT_UNTIL(gate_entered(&gate) == 4);
    for (int i = 0; i < 100; i++) {
        bdrv_aio_cancel_async(jobs[i].acb);
    }
    /* Cancelled completions still go through the BH, not synchronously. */
    ASSERT_EQ(completed, 0);
    gate_open(&gate);
    while (completed < 100) {
        aio_poll(ctx, true);
    }
    check_outcomes(jobs, 100, &n_done, &n_cancelled);
    ASSERT_EQ(n_done, 4);
    ASSERT_EQ(n_cancelled, 96);
    ctx_free_current(ctx);
    gate_destroy(&gate);
}

TEST(cancel_hundred_sleeping_jobs_exactly_one_outcome)
{
    AioContext *ctx = ctx_new_current();
    static Job jobs[100];
    int n_done, n_cancelled;

    aio_context_set_thread_pool_params(ctx, 0, 8, &error_abort);
    for (int round = 0; round < 3; round++) {
        completed = 0;
        for (int i = 0; i < 100; i++) {
            jobs[i] = (Job){ .id = i, .sleep_us = 500 };
            jobs[i].acb = thread_pool_submit_aio(job_fn, &jobs[i], job_cb,
                                                 &jobs[i]);
        }
        /* Let some start (round 0: none, maybe), then cancel them all. */
        if (round) {
            test_sleep_ms(round);
        }
        for (int i = 0; i < 100; i++) {
            bdrv_aio_cancel_async(jobs[i].acb);
        }
        while (completed < 100) {
            aio_poll(ctx, true);
        }
        check_outcomes(jobs, 100, &n_done, &n_cancelled);
        printf("round %d: %d completed, %d cancelled\n", round, n_done,
               n_cancelled);
    }
    ctx_free_current(ctx);
}

TEST(cancel_after_start_completes_normally)
{
    AioContext *ctx = ctx_new_current();
    Job j = { .id = 3 };
    Gate gate;

    gate_init(&gate);
    j.gate = &gate;
    completed = 0;
    j.acb = thread_pool_submit_aio(job_fn, &j, job_cb, &j);
    WAIT_UNTIL(gate_entered(&gate) == 1);
    bdrv_aio_cancel_async(j.acb);
    gate_open(&gate);
    while (!completed) {
        aio_poll(ctx, true);
    }
    ASSERT_EQ(j.cb_runs, 1);
    ASSERT_EQ(j.cb_ret, 1003);
    ctx_free_current(ctx);
    gate_destroy(&gate);
}

TEST(bdrv_aio_cancel_waits_for_the_callback)
{
    AioContext *ctx = ctx_new_current();
    Job running = { .id = 1 }, queued = { .id = 2 };
    Gate gate;

    gate_init(&gate);
    running.gate = &gate;
    aio_context_set_thread_pool_params(ctx, 0, 1, &error_abort);
    completed = 0;
    running.acb = thread_pool_submit_aio(job_fn, &running, job_cb, &running);
    queued.acb = thread_pool_submit_aio(job_fn, &queued, job_cb, &queued);
    WAIT_UNTIL(gate_entered(&gate) == 1);
    /* The single worker is busy: the second job is queued, cancel wins. */
    bdrv_aio_cancel(queued.acb);
    ASSERT_EQ(queued.cb_runs, 1);
    ASSERT_EQ(queued.cb_ret, -ECANCELED);
    ASSERT_EQ(queued.ran, 0);
    ASSERT_EQ(running.cb_runs, 0);
    gate_open(&gate);
    /* A started job: bdrv_aio_cancel() waits for its normal completion. */
    bdrv_aio_cancel(running.acb);
    ASSERT_EQ(running.cb_runs, 1);
    ASSERT_EQ(running.cb_ret, 1001);
    ctx_free_current(ctx);
    gate_destroy(&gate);
}

typedef struct Nest {
    AioContext *ctx;
    Job jobs[2];
    int order[2];
    int n;
} Nest;

static Nest nest;

static void nest_cb(void *opaque, int ret)
{
    Job *j = opaque;

    j->cb_runs++;
    j->cb_ret = ret;
    nest.order[nest.n++] = j->id;
    if (nest.n == 1) {
        /* The sibling finished too: a nested poll must complete it. */
        while (nest.n < 2) {
            aio_poll(nest.ctx, true);
        }
    }
}

TEST(nested_poll_in_callback_sees_sibling_completion)
{
    AioContext *ctx = ctx_new_current();

    nest = (Nest){ .ctx = ctx };
    for (int i = 0; i < 2; i++) {
        nest.jobs[i] = (Job){ .id = i };
    }
    /* Both jobs finish before the loop runs, so they form one batch. */
    for (int i = 0; i < 2; i++) {
        thread_pool_submit_aio(job_fn, &nest.jobs[i], nest_cb, &nest.jobs[i]);
    }
    WAIT_UNTIL(__atomic_load_n(&nest.jobs[0].ran, __ATOMIC_SEQ_CST) &&
               __atomic_load_n(&nest.jobs[1].ran, __ATOMIC_SEQ_CST));
    while (nest.n < 2) {
        aio_poll(ctx, true);
    }
    while (aio_poll(ctx, false)) {
    }
    ASSERT_EQ(nest.jobs[0].cb_runs, 1);
    ASSERT_EQ(nest.jobs[1].cb_runs, 1);
    ASSERT_NE(nest.order[0], nest.order[1]);
    ctx_free_current(ctx);
}

/* A callback that submits a job and waits for it in a nested aio_poll(). */
typedef struct Chain {
    AioContext *ctx;
    Job first, second, third;
    bool waited;
} Chain;

static Chain chain;

static void chain_cb(void *opaque, int ret)
{
    Job *j = opaque;

    j->cb_runs++;
    j->cb_ret = ret;
    if (j == &chain.first) {
        /* Submitted from a completion: the pool defers it to the batch end. */
        thread_pool_submit_aio(job_fn, &chain.second, chain_cb, &chain.second);
        chain.third.acb = thread_pool_submit_aio(job_fn, &chain.third,
                                                 chain_cb, &chain.third);
        /* Cancelling a deferred job wins: it never reached a worker. */
        bdrv_aio_cancel_async(chain.third.acb);
        while (!chain.second.cb_runs) {
            aio_poll(chain.ctx, true);
        }
        chain.waited = true;
    }
}

TEST(callback_submits_and_waits_in_nested_poll)
{
    AioContext *ctx = ctx_new_current();

    chain = (Chain){ .ctx = ctx };
    chain.first.id = 1;
    chain.second.id = 2;
    chain.third.id = 3;
    thread_pool_submit_aio(job_fn, &chain.first, chain_cb, &chain.first);
    while (!chain.waited || !chain.third.cb_runs) {
        aio_poll(ctx, true);
    }
    wait_inflight_zero(ctx);
    ASSERT_EQ(chain.first.cb_ret, 1001);
    ASSERT_EQ(chain.second.cb_ret, 1002);
    ASSERT_EQ(chain.second.cb_runs, 1);
    ASSERT_EQ(chain.third.cb_runs, 1);
    ASSERT_EQ(chain.third.cb_ret, -ECANCELED);
    ASSERT_EQ(chain.third.ran, 0);
    ctx_free_current(ctx);
}

static BlockAIOCB *seen_acb;

static void ref_cb(void *opaque, int ret)
{
    (void)opaque;
    (void)ret;
    completed++;
}

TEST(aiocb_reference_outlives_completion)
{
    AioContext *ctx = ctx_new_current();
    Job j = { .id = 0 };

    completed = 0;
    seen_acb = thread_pool_submit_aio(job_fn, &j, ref_cb, &j);
    qemu_aio_ref(seen_acb);
    ASSERT_EQ(seen_acb->refcnt, 2);
    ASSERT_PTR_EQ(seen_acb->opaque, &j);
    while (!completed) {
        aio_poll(ctx, true);
    }
    /* The pool dropped its reference; ours keeps the request readable. */
    ASSERT_EQ(seen_acb->refcnt, 1);
    ASSERT_PTR_EQ(seen_acb->aiocb_info->get_aio_context(seen_acb), ctx);
    qemu_aio_unref(seen_acb);
    ctx_free_current(ctx);
}

static int ff_runs;

static int ff_fn(void *opaque)
{
    (void)opaque;
    __atomic_fetch_add(&ff_runs, 1, __ATOMIC_SEQ_CST);
    return 0;
}

TEST(fire_and_forget_submit_runs)
{
    AioContext *ctx = ctx_new_current();

    ff_runs = 0;
    for (int i = 0; i < 10; i++) {
        thread_pool_submit(ff_fn, NULL);
    }
    wait_inflight_zero(ctx);
    ASSERT_EQ(__atomic_load_n(&ff_runs, __ATOMIC_SEQ_CST), 10);
    ctx_free_current(ctx);
}

TEST(workers_spawn_on_demand_and_exit_when_idle)
{
    /* Sanitizer runtimes may have threads of their own. */
    int threads_before = count_threads();
    AioContext *ctx = ctx_new_current();
    static Job jobs[8];
    Gate gate;
    ThreadPool *pool;
    ThreadPoolStats st;

    gate_init(&gate);
    pool = aio_get_thread_pool(ctx);
    ASSERT_PTR_EQ(aio_get_thread_pool(ctx), pool);
    /* Created on first use with min 0: no thread yet. */
    st = pool_stats(ctx);
    ASSERT_EQ(st.cur_threads, 0);
    ASSERT_EQ(st.spawned, 0);

    completed = 0;
    for (int i = 0; i < 8; i++) {
        jobs[i] = (Job){ .id = i, .gate = &gate };
        thread_pool_submit_aio(job_fn, &jobs[i], job_cb, &jobs[i]);
    }
    WAIT_UNTIL(gate_entered(&gate) == 8);
    ASSERT_EQ(pool_stats(ctx).cur_threads, 8);
    gate_open(&gate);
    while (completed < 8) {
        aio_poll(ctx, true);
    }
    /* Idle timeout is 20 ms here; min is 0, so all of them go. */
    WAIT_UNTIL(pool_stats(ctx).cur_threads == 0);
    ctx_free_current(ctx);
    gate_destroy(&gate);
    /* Exited workers are joined: nothing outlives the pool. */
    ASSERT_EQ(count_threads(), threads_before);
}

TEST(min_threads_stay_and_lowering_max_shrinks)
{
    int threads_before = count_threads();
    AioContext *ctx = ctx_new_current();
    static Job jobs[6];
    Gate gate;

    gate_init(&gate);
    aio_get_thread_pool(ctx);
    aio_context_set_thread_pool_params(ctx, 3, 8, &error_abort);
    /* Raising min starts workers at once. */
    WAIT_UNTIL(pool_stats(ctx).idle_threads == 3);
    ASSERT_EQ(pool_stats(ctx).cur_threads, 3);
    /* Several idle timeouts later they are still there. */
    test_sleep_ms(100);
    ASSERT_EQ(pool_stats(ctx).cur_threads, 3);

    completed = 0;
    for (int i = 0; i < 6; i++) {
        jobs[i] = (Job){ .id = i, .gate = &gate };
        thread_pool_submit_aio(job_fn, &jobs[i], job_cb, &jobs[i]);
    }
    WAIT_UNTIL(gate_entered(&gate) == 6);
    ASSERT_INT(pool_stats(ctx).cur_threads, >=, 6);
    ASSERT_INT(pool_stats(ctx).cur_threads, <=, 8);
    /* Lower max under busy workers: they leave after their job. */
    aio_context_set_thread_pool_params(ctx, 1, 2, &error_abort);
    gate_open(&gate);
    while (completed < 6) {
        aio_poll(ctx, true);
    }
    WAIT_UNTIL(pool_stats(ctx).cur_threads == 1);
    ASSERT_EQ(pool_stats(ctx).max_threads, 2);
    ASSERT_EQ(pool_stats(ctx).min_threads, 1);
    ctx_free_current(ctx);
    gate_destroy(&gate);
    /* The last worker was stopped and joined by aio_context_unref(). */
    ASSERT_EQ(count_threads(), threads_before);
}

TEST(max_threads_bounds_concurrency)
{
    AioContext *ctx = ctx_new_current();
    static Job jobs[20];
    Gate gate;

    gate_init(&gate);
    aio_context_set_thread_pool_params(ctx, 0, 2, &error_abort);
    completed = 0;
    for (int i = 0; i < 20; i++) {
        jobs[i] = (Job){ .id = i, .gate = &gate };
        thread_pool_submit_aio(job_fn, &jobs[i], job_cb, &jobs[i]);
    }
    WAIT_UNTIL(gate_entered(&gate) == 2);
    ASSERT_EQ(pool_stats(ctx).cur_threads, 2);
    ASSERT_EQ(pool_stats(ctx).queued, 18);
    gate_open(&gate);
    while (completed < 20) {
        aio_poll(ctx, true);
    }
    ASSERT_INT(pool_stats(ctx).spawned, <=, 2);
    ctx_free_current(ctx);
    gate_destroy(&gate);
}

TEST(bad_pool_params_are_rejected)
{
    AioContext *ctx = ctx_new_current();
    Error *err = NULL;

    aio_get_thread_pool(ctx);
    aio_context_set_thread_pool_params(ctx, 5, 2, &err);
    ASSERT_NOT_NULL(err);
    error_free(err);
    err = NULL;
    aio_context_set_thread_pool_params(ctx, 0, 0, &err);
    ASSERT_NOT_NULL(err);
    error_free(err);
    ASSERT_EQ(pool_stats(ctx).max_threads, 64);
    ASSERT_EQ(pool_stats(ctx).min_threads, 0);
    ctx_free_current(ctx);
}

/* Jobs that can only finish together: each waits until all have started. */
typedef struct Rendezvous {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int entered, n;
} Rendezvous;

static Rendezvous rv;

static int rendezvous_fn(void *opaque)
{
    (void)opaque;
    pthread_mutex_lock(&rv.lock);
    rv.entered++;
    pthread_cond_broadcast(&rv.cond);
    while (rv.entered < rv.n) {
        pthread_cond_wait(&rv.cond, &rv.lock);
    }
    pthread_mutex_unlock(&rv.lock);
    return 0;
}

TEST(short_jobs_then_blocking_jobs_still_get_threads)
{
    AioContext *ctx = ctx_new_current();
    Job quick = { .id = 0 };

    /*
     * Many short jobs first: a pool that learns from job lengths (and
     * stops adding workers for short ones) must not get stuck ...
     */
    for (int i = 0; i < 300; i++) {
        completed = 0;
        quick.ran = 0;
        thread_pool_submit_aio(job_fn, &quick, job_cb, &quick);
        while (!completed) {
            aio_poll(ctx, true);
        }
    }
    /*
     * ... when 16 jobs follow that can only finish once all 16 run at the
     * same time: the pool must still grow to 16 workers.
     */
    pthread_mutex_init(&rv.lock, NULL);
    pthread_cond_init(&rv.cond, NULL);
    rv.entered = 0;
    rv.n = 16;
    completed = 0;
    for (int i = 0; i < 16; i++) {
        thread_pool_submit_aio(rendezvous_fn, NULL, ref_cb, NULL);
    }
    while (completed < 16) {
        aio_poll(ctx, true);
    }
    ASSERT_EQ(rv.entered, 16);
    ASSERT_INT(pool_stats(ctx).spawned, >=, 16);
    ctx_free_current(ctx);
    pthread_cond_destroy(&rv.cond);
    pthread_mutex_destroy(&rv.lock);
}

static void submit_without_context(void *opaque)
{
    Job *j = opaque;

    thread_pool_submit_aio(job_fn, j, job_cb, j);
}

static void unref_with_job_outstanding(void *opaque)
{
    AioContext *ctx = ctx_new_current();
    Job *j = opaque;

    thread_pool_submit_aio(job_fn, j, job_cb, j);
    qemu_set_current_aio_context(NULL);
    aio_context_unref(ctx);
}

static const AIOCBInfo tiny_info = { .aiocb_size = 1 };

static void aio_get_too_small(void *opaque)
{
    (void)opaque;
    qemu_aio_get(&tiny_info, NULL, NULL, NULL);
}

TEST(misuse_aborts_with_a_message)
{
    Job j = { .id = 0 };

    test_expect_abort(submit_without_context, &j, "no current AioContext");
    test_expect_abort(unref_with_job_outstanding, &j, "outstanding");
    test_expect_abort(aio_get_too_small, NULL, "aiocb_size");
}

/* Before any case, also when one case is run alone: workers idle 20 ms. */
__attribute__((constructor)) static void pool_setup(void)
{
    thread_pool_set_idle_timeout_ns(20 * 1000 * 1000);
}

RUN_TESTS(          T(completion_runs_in_submitting_context_once),
          T(hundred_jobs_on_64_threads_all_complete),
          T(cancel_gated_jobs_only_queued_ones_cancel),
          T(cancel_hundred_sleeping_jobs_exactly_one_outcome),
          T(cancel_after_start_completes_normally),
          T(bdrv_aio_cancel_waits_for_the_callback),
          T(nested_poll_in_callback_sees_sibling_completion),
          T(callback_submits_and_waits_in_nested_poll),
          T(aiocb_reference_outlives_completion),
          T(fire_and_forget_submit_runs),
          T(workers_spawn_on_demand_and_exit_when_idle),
          T(min_threads_stay_and_lowering_max_shrinks),
          T(max_threads_bounds_concurrency),
          T(short_jobs_then_blocking_jobs_still_get_threads),
          T(bad_pool_params_are_rejected),
          T(misuse_aborts_with_a_message))
