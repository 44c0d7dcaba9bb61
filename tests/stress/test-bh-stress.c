/*
 * Bottom halves scheduled from many threads into one context.
 *
 * 1. One-shot BHs: 4 producers schedule N one-shot BHs each; every BH
 *    increments its own slot.  The home thread blocks in aio_poll() until
 *    the total reaches 4 * N.  Every slot must be exactly 1: no loss, no
 *    duplicate.
 * 2. One reusable BH per producer, scheduled in batches (1 to 3 schedules
 *    per batch); after each batch the producer waits (handshake) for a run
 *    that read the batch number.  Exact accounting per batch: the runs
 *    observed since the previous handshake are between 1 and the batch's
 *    schedules + 1 (one run may be left pending by the batch before); at
 *    the end at most one run happened after the last handshake, and
 *    batches <= runs <= schedules.
 *
 * The scale is printed; it is the same in sanitizer builds.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>

#include <pthread.h>
#include <stdint.h>

#include "aio-test.h"
#include "test.h"

#define NTHREADS 4

/*
 * Full scale in every build: a few seconds even under TSan on two cores,
 * so nothing is scaled down for sanitizers.
 */
#define ONESHOTS_PER_THREAD 250000
#define BATCHES_PER_THREAD 50000

/* Generous: turns a lost wake-up into a failure instead of a hang. */
#define WATCHDOG_S 240

/* ---- 1. one-shot BHs ------------------------------------------------- */

typedef struct OneshotStress {
    AioContext *ctx;
    pthread_barrier_t start;
    uint8_t *slots[NTHREADS];   /* home thread writes, main reads after */
    uint64_t total;             /* home thread only */
} OneshotStress;

static OneshotStress os;

static void oneshot_cb(void *opaque)
{
    uint8_t *slot = opaque;

    (*slot)++;
    os.total++;
}

static void *oneshot_producer(void *opaque)
{
    uint8_t *slots = opaque;

    pthread_barrier_wait(&os.start);
    for (int i = 0; i < ONESHOTS_PER_THREAD; i++) {
        aio_bh_schedule_oneshot(os.ctx, oneshot_cb, &slots[i]);
    }
    return NULL;
}

TEST(oneshot_bhs_from_many_threads)
{
    const uint64_t want = (uint64_t)NTHREADS * ONESHOTS_PER_THREAD;
    pthread_t t[NTHREADS];
    uint64_t iterations = 0;

    printf("# %d threads x %d one-shot BHs\n", NTHREADS, ONESHOTS_PER_THREAD);
    os.ctx = test_aio_context_new();
    os.total = 0;
    ASSERT_EQ(pthread_barrier_init(&os.start, NULL, NTHREADS + 1), 0);
    for (int i = 0; i < NTHREADS; i++) {
        os.slots[i] = calloc(ONESHOTS_PER_THREAD, 1);
        ASSERT_NOT_NULL(os.slots[i]);
        t[i] = test_thread_start(oneshot_producer, os.slots[i]);
    }
    /* Bind the home thread before the producers start. */
    aio_poll(os.ctx, false);
    test_watchdog("one-shot BH stress: total never reached", WATCHDOG_S);
    pthread_barrier_wait(&os.start);
    while (os.total < want) {
        aio_poll(os.ctx, true);
        iterations++;
    }
    for (int i = 0; i < NTHREADS; i++) {
        test_thread_join(t[i]);
    }
    /* Nothing left, nothing runs twice. */
    test_aio_drain(os.ctx);
    test_watchdog_cancel();
    printf("# %" PRIu64 " BHs in %" PRIu64 " blocking iterations\n", os.total,
           iterations);
    ASSERT_UINT(os.total, ==, want);
    for (int i = 0; i < NTHREADS; i++) {
        for (int j = 0; j < ONESHOTS_PER_THREAD; j++) {
            if (os.slots[i][j] != 1) {
                TEST_FAIL_("thread %d BH %d ran %u times", i, j,
                           os.slots[i][j]);
            }
        }
        free(os.slots[i]);
    }
    pthread_barrier_destroy(&os.start);
    aio_context_unref(os.ctx);
}

/* ---- 2. one reusable BH per producer ------------------------------------ */

typedef struct Producer {
    QEMUBH *bh;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t want;          /* batch number the producer waits for (lock) */
    uint64_t seen;          /* batch number read by the last run (lock) */
    uint64_t runs;          /* BH runs (lock) */
    uint64_t observed;      /* runs the producer saw (producer only) */
    uint64_t schedules;     /* qemu_bh_schedule() calls (producer only) */
    unsigned seed;
} Producer;

typedef struct ReuseStress {
    AioContext *ctx;
    pthread_barrier_t start;
    Producer p[NTHREADS];
    unsigned finished;      /* home thread only */
} ReuseStress;

static ReuseStress rs;

static void reuse_cb(void *opaque)
{
    Producer *p = opaque;

    pthread_mutex_lock(&p->lock);
    p->runs++;
    p->seen = p->want;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void finished_cb(void *opaque)
{
    (void)opaque;
    rs.finished++;
}

static void *reuse_producer(void *opaque)
{
    Producer *p = opaque;
    uint64_t last_runs = 0;

    pthread_barrier_wait(&rs.start);
    for (uint64_t batch = 1; batch <= BATCHES_PER_THREAD; batch++) {
        unsigned n = 1 + (rand_r(&p->seed) % 3);

        /*
         * A run that reads want == batch dequeued the BH after this store;
         * the schedules below then cause at least one more run if that run
         * had already been dequeued before them.  Either way a run reading
         * this batch number happens.
         */
        pthread_mutex_lock(&p->lock);
        p->want = batch;
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < n; i++) {
            qemu_bh_schedule(p->bh);
            p->schedules++;
        }
        pthread_mutex_lock(&p->lock);
        while (p->seen != batch) {
            pthread_cond_wait(&p->cond, &p->lock);
        }
        /*
         * Runs since the previous handshake: at most one per schedule of
         * this batch, plus two the previous batches still owed at that
         * handshake.  A BH is queued at most once however often it is
         * scheduled, and the home thread takes it off the queue (clearing
         * PENDING) before it calls it, so two can be owed: one taken and
         * waiting in reuse_cb() for the lock we held, and one queued again
         * by a schedule that came after it was taken.
         */
        if (p->runs - last_runs > n + 2) {
            TEST_FAIL_("batch %" PRIu64 ": %" PRIu64 " runs for %u schedules",
                       batch, p->runs - last_runs, n);
        }
        p->observed += p->runs - last_runs;
        last_runs = p->runs;
        pthread_mutex_unlock(&p->lock);
    }
    aio_bh_schedule_oneshot(rs.ctx, finished_cb, NULL);
    return NULL;
}

TEST(reusable_bh_per_thread)
{
    pthread_t t[NTHREADS];
    uint64_t total_runs = 0, total_sched = 0;

    printf("# %d threads x %d batches of 1-3 schedules\n", NTHREADS,
           BATCHES_PER_THREAD);
    rs.ctx = test_aio_context_new();
    rs.finished = 0;
    ASSERT_EQ(pthread_barrier_init(&rs.start, NULL, NTHREADS + 1), 0);
    for (int i = 0; i < NTHREADS; i++) {
        Producer *p = &rs.p[i];

        memset(p, 0, sizeof(*p));
        p->seed = 1234 + i;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->bh = aio_bh_new(rs.ctx, reuse_cb, p);
        t[i] = test_thread_start(reuse_producer, p);
    }
    aio_poll(rs.ctx, false);
    test_watchdog("reusable BH stress: a batch never ran", WATCHDOG_S);
    pthread_barrier_wait(&rs.start);
    /* Runs still pending from the last batches happen at the end. */
    test_run_until_finished(rs.ctx, &rs.finished, NTHREADS, t);
    test_watchdog_cancel();

    for (int i = 0; i < NTHREADS; i++) {
        Producer *p = &rs.p[i];
        uint64_t late;

        pthread_mutex_lock(&p->lock);
        late = p->runs - p->observed;
        ASSERT_UINT(p->seen, ==, BATCHES_PER_THREAD);
        pthread_mutex_unlock(&p->lock);
        ASSERT_UINT(p->runs, >=, BATCHES_PER_THREAD);
        ASSERT_UINT(p->runs, <=, p->schedules);
        /*
         * After the last handshake at most two runs can still have been
         * owed: one taken off the queue, one queued again (see above).
         */
        ASSERT_UINT(late, <=, 2);
        printf("# thread %d: %" PRIu64 " schedules, %" PRIu64 " runs\n", i,
               p->schedules, p->runs);
        total_runs += p->runs;
        total_sched += p->schedules;
        qemu_bh_delete(p->bh);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
    }
    ASSERT_UINT(total_runs, <=, total_sched);
    ASSERT_UINT(total_runs, >=, (uint64_t)NTHREADS * BATCHES_PER_THREAD);
    aio_poll(rs.ctx, false);
    pthread_barrier_destroy(&rs.start);
    aio_context_unref(rs.ctx);
}

RUN_TESTS(T(oneshot_bhs_from_many_threads), T(reusable_bh_per_thread))
