/*
 * Wake-ups of a context that keeps switching between "nothing to wait for
 * but aio_notify()" and "fds and timers to wait for".
 *
 * The first state makes the home thread wait in a read() of its eventfd
 * (aio_notifier_read()), the second in the monitor's own wait: ppoll(),
 * epoll_wait(), or io_uring_enter() with the notifier armed on the ring
 * again.  Each of NTHREADS
 * workers, in a random sequence, and waiting for each to take effect
 * before the next:
 *   - registers a handler on its eventfd, writes the eventfd, waits until
 *     the handler read it, removes the handler;
 *   - schedules its BH; schedules a one-shot BH;
 *   - arms its timer for now.
 * Most of the time no worker has a handler registered, so the home thread
 * keeps entering and leaving the read() wait while handlers come and go
 * from other threads.  Counts are exact: events read == events written,
 * one BH run per schedule, one timer expiry per arm.  A lost wake-up is a
 * watchdog failure, not a hang.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aio-internal.h"
#include "aio-test.h"
#include "test.h"

#define NTHREADS 3

#if TEST_TSAN
#define ROUNDS 30000
#else
#define ROUNDS 100000
#endif

#define WATCHDOG_S 240

typedef struct Worker {
    AioContext *ctx;
    int fd;
    QEMUBH *bh;
    QEMUTimer *timer;
    unsigned seed;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Under lock: what the home thread did, the worker waits for it. */
    uint64_t received;      /* eventfd counts read by the handler */
    uint64_t bh_runs;
    uint64_t oneshot_runs;
    uint64_t fired;
    /* Worker only. */
    uint64_t sent, bh_scheds, oneshots, armed;
} Worker;

static unsigned finished; /* home thread only */

static void bump(Worker *w, uint64_t *counter, uint64_t by)
{
    pthread_mutex_lock(&w->lock);
    *counter += by;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Wait until *@counter (under lock) reaches @want. */
static void await(Worker *w, const uint64_t *counter, uint64_t want)
{
    pthread_mutex_lock(&w->lock);
    while (*counter < want) {
        pthread_cond_wait(&w->cond, &w->lock);
    }
    if (*counter != want) {
        TEST_FAIL_("%" PRIu64 " runs for %" PRIu64 " requests", *counter,
                   want);
    }
    pthread_mutex_unlock(&w->lock);
}

static void fd_read_cb(void *opaque)
{
    Worker *w = opaque;
    uint64_t v;

    if (read(w->fd, &v, sizeof(v)) == (ssize_t)sizeof(v)) {
        bump(w, &w->received, v);
    }
}

static void bh_cb(void *opaque)
{
    Worker *w = opaque;

    bump(w, &w->bh_runs, 1);
}

static void oneshot_cb(void *opaque)
{
    Worker *w = opaque;

    bump(w, &w->oneshot_runs, 1);
}

static void timer_cb(void *opaque)
{
    Worker *w = opaque;

    bump(w, &w->fired, 1);
}

static void finished_cb(void *opaque)
{
    (void)opaque;
    finished++;
}

static void *worker_thread(void *opaque)
{
    Worker *w = opaque;

    for (int i = 0; i < ROUNDS; i++) {
        switch (rand_r(&w->seed) % 4) {
        case 0:
            aio_set_fd_handler(w->ctx, w->fd, fd_read_cb, NULL, NULL, NULL,
                               w);
            test_eventfd_write(w->fd);
            w->sent++;
            await(w, &w->received, w->sent);
            aio_set_fd_handler(w->ctx, w->fd, NULL, NULL, NULL, NULL, NULL);
            break;
        case 1:
            qemu_bh_schedule(w->bh);
            await(w, &w->bh_runs, ++w->bh_scheds);
            break;
        case 2:
            aio_bh_schedule_oneshot(w->ctx, oneshot_cb, w);
            await(w, &w->oneshot_runs, ++w->oneshots);
            break;
        default:
            timer_mod(w->timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
            await(w, &w->fired, ++w->armed);
            break;
        }
    }
    aio_bh_schedule_oneshot(w->ctx, finished_cb, NULL);
    return NULL;
}

TEST(notifier_wait_switches_under_cross_thread_changes)
{
    AioContext *ctx = test_aio_context_new();
    Worker w[NTHREADS];
    pthread_t t[NTHREADS];
    uint64_t direct;

    printf("# %d threads x %d rounds, fdmon %s\n", NTHREADS, ROUNDS,
           aioloop_context_fdmon_name(ctx));
    finished = 0;
    for (int i = 0; i < NTHREADS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].ctx = ctx;
        w[i].fd = test_eventfd();
        w[i].seed = 4321 + i;
        w[i].bh = aio_bh_new(ctx, bh_cb, &w[i]);
        w[i].timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS,
                                   timer_cb, &w[i]);
        pthread_mutex_init(&w[i].lock, NULL);
        pthread_cond_init(&w[i].cond, NULL);
    }
    test_aio_drain(ctx);
    test_watchdog("notifier wait stress: lost wake-up", WATCHDOG_S);
    for (int i = 0; i < NTHREADS; i++) {
        t[i] = test_thread_start(worker_thread, &w[i]);
    }
    test_run_until_finished(ctx, &finished, NTHREADS, t);
    test_watchdog_cancel();

    direct = ctx->notifier_reads;
    for (int i = 0; i < NTHREADS; i++) {
        printf("# worker %d: %" PRIu64 " events, %" PRIu64 " BHs, %" PRIu64
               " one-shots, %" PRIu64 " timers\n", i, w[i].sent,
               w[i].bh_scheds, w[i].oneshots, w[i].armed);
        /* Nothing ran twice, nothing late. */
        ASSERT_UINT(w[i].received, ==, w[i].sent);
        ASSERT_UINT(w[i].bh_runs, ==, w[i].bh_scheds);
        ASSERT_UINT(w[i].oneshot_runs, ==, w[i].oneshots);
        ASSERT_UINT(w[i].fired, ==, w[i].armed);
        ASSERT_UINT(w[i].sent + w[i].bh_scheds + w[i].oneshots + w[i].armed,
                    ==, ROUNDS);
        timer_free(w[i].timer);
        qemu_bh_delete(w[i].bh);
        close(w[i].fd);
        pthread_mutex_destroy(&w[i].lock);
        pthread_cond_destroy(&w[i].cond);
    }
    printf("# %" PRIu64 " waits were a read() of the notifier\n", direct);
    if (ctx->notifier_blocking) {
        /* The path under test was taken (thousands of times). */
        ASSERT_UINT(direct, >, 0);
    }
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

RUN_TESTS(T(notifier_wait_switches_under_cross_thread_changes))
