/*
 * Thread pool stress: N threads, each with its own AioContext and pool,
 * submit M jobs each with up to W in flight, cancelling some right away and
 * some while they may be running, while the pool's limits change under them.
 * Totals are checked exactly: every job completes once, in its own context,
 * with its own result or -ECANCELED; a cancelled job never ran, a completed
 * one ran exactly once.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>
#include <aioloop/block-aio.h>
#include <aioloop/thread-pool.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "aio-test.h"
#include "test.h"
#include "thread-pool-internal.h"

#define NTHREADS 4
#define WINDOW 64

typedef struct Job {
    int ran;       /* atomic */
    int cb_runs;   /* owner thread */
    int ret;
    BlockAIOCB *acb;
} Job;

typedef struct Worker {
    int index;
    int n;
    Job *jobs;
    AioContext *ctx;
    int inflight;
    int completed;
    int cancelled;
    int wrong_ctx;
    int next;
    uint64_t seed;
} Worker;

static int job_fn(void *opaque)
{
    Job *j = opaque;
    int ran = __atomic_add_fetch(&j->ran, 1, __ATOMIC_SEQ_CST);

    return ran == 1 ? 7 : -EIO;
}

static void job_cb(void *opaque, int ret);
static void refill(Worker *w);

typedef struct JobRef {
    Worker *w;
    int i;
} JobRef;

static JobRef *refs[NTHREADS];

static void job_cb(void *opaque, int ret)
{
    JobRef *r = opaque;
    Worker *w = r->w;
    Job *j = &w->jobs[r->i];

    j->cb_runs++;
    j->ret = ret;
    j->acb = NULL;
    w->inflight--;
    if (qemu_get_current_aio_context() != w->ctx) {
        w->wrong_ctx++;
    }
    if (ret == -ECANCELED) {
        w->cancelled++;
    } else {
        w->completed++;
    }
    /* Every other completion submits from inside the callback. */
    if (r->i & 1) {
        refill(w);
    }
}

/* Top the window up; called from the loop and from completion callbacks. */
static void refill(Worker *w)
{
    while (w->next < w->n && w->inflight < WINDOW) {
        int next = w->next++;
        Job *j = &w->jobs[next];
        JobRef *r = &refs[w->index][next];

        r->w = w;
        r->i = next;
        w->inflight++;
        j->acb = thread_pool_submit_aio(job_fn, j, job_cb, r);
        w->seed = w->seed * 6364136223846793005ull + 1442695040888963407ull;
        switch ((w->seed >> 33) % 8) {
        case 0:
            /* Most likely still queued (or deferred, from a callback). */
            bdrv_aio_cancel_async(j->acb);
            break;
        case 1: {
            /* An earlier job that may be queued, running or done. */
            int k = next - (int)((w->seed >> 40) % WINDOW);

            if (k >= 0 && w->jobs[k].acb) {
                bdrv_aio_cancel_async(w->jobs[k].acb);
            }
            break;
        }
        case 2:
            if ((next & 1023) == 0) {
                /* Shrink and grow the pool under load. */
                int max = 1 + (int)((w->seed >> 20) % 8);

                aio_context_set_thread_pool_params(w->ctx, max / 2, max,
                                                   &error_abort);
            }
            break;
        default:
            break;
        }
    }
}

static void *worker_main(void *opaque)
{
    Worker *w = opaque;

    w->seed = 0x1234567ull * (uint64_t)(w->index + 1);
    qemu_set_current_aio_context(w->ctx);
    refs[w->index] = calloc((size_t)w->n, sizeof(JobRef));
    while (w->next < w->n || w->inflight) {
        refill(w);
        aio_poll(w->ctx, true);
    }
    qemu_set_current_aio_context(NULL);
    aio_context_unref(w->ctx);
    free(refs[w->index]);
    return NULL;
}

TEST(submit_cancel_complete_counts_exactly)
{
    int n = TEST_SANITIZED ? 5000 : 100000;
    Worker w[NTHREADS];
    pthread_t t[NTHREADS];
    long total_done = 0, total_cancelled = 0;

    for (int i = 0; i < NTHREADS; i++) {
        /* Here: test_aio_context_new() is not thread-safe. */
        w[i] = (Worker){ .index = i, .n = n, .ctx = test_aio_context_new() };
        w[i].jobs = calloc((size_t)n, sizeof(Job));
        ASSERT_NOT_NULL(w[i].jobs);
    }
    for (int i = 0; i < NTHREADS; i++) {
        t[i] = test_thread_start(worker_main, &w[i]);
    }
    for (int i = 0; i < NTHREADS; i++) {
        test_thread_join(t[i]);
    }
    for (int i = 0; i < NTHREADS; i++) {
        int done = 0, cancelled = 0;

        ASSERT_EQ(w[i].wrong_ctx, 0);
        ASSERT_EQ(w[i].inflight, 0);
        for (int k = 0; k < n; k++) {
            Job *j = &w[i].jobs[k];

            ASSERT_EQ(j->cb_runs, 1);
            if (j->ret == -ECANCELED) {
                ASSERT_EQ(j->ran, 0);
                cancelled++;
            } else {
                ASSERT_EQ(j->ran, 1);
                ASSERT_EQ(j->ret, 7);
                done++;
            }
        }
        ASSERT_EQ(done, w[i].completed);
        ASSERT_EQ(cancelled, w[i].cancelled);
        ASSERT_EQ(done + cancelled, n);
        total_done += done;
        total_cancelled += cancelled;
        free(w[i].jobs);
    }
    printf("%ld jobs: %ld completed, %ld cancelled\n",
           (long)NTHREADS * n, total_done, total_cancelled);
    ASSERT_EQ(total_done + total_cancelled, (long)NTHREADS * n);
}

__attribute__((constructor)) static void pool_setup(void)
{
    /* Workers come and go during the run. */
    thread_pool_set_idle_timeout_ns(1000 * 1000);
}

RUN_TESTS(T(submit_cancel_complete_counts_exactly))
