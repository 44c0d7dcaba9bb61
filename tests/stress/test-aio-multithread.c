/*
 * fd handlers and timers changed from several threads while the home
 * thread blocks in aio_poll().
 *
 * Each of 4 workers owns 2 eventfds.  In a random sequence it
 *   - sets an fd (eventfd write) while a handler is registered,
 *   - replaces the handler (new callbacks, new opaque: a new "generation"),
 *   - removes it, and sometimes writes to the fd while it is unwatched,
 *   - registers a handler again on a removed fd,
 *   - arms a timer for "now" and waits for it to fire.
 * Before replacing or removing a handler the worker waits until the
 * handler consumed every event sent to its generation, so the accounting
 * is exact: for every generation, events received == events sent.  Events
 * written while no handler is registered must still be in the eventfd when
 * the worker registers again (nobody consumed them).  A callback invoked
 * with a generation whose replacement/removal had returned, or through the
 * wrong callback function, is counted as a violation.  Timers: fired ==
 * armed exactly, each arm waited for (cross-thread timer_mod wakes the
 * loop).
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>

#include <pthread.h>
#include <stdint.h>

#include "aio-internal.h"
#include "aio-test.h"
#include "test.h"

#define NTHREADS 4
#define FDS_PER_THREAD 2
#define TIMER_EVERY 16

/* Halved under TSan, which slows the hand-offs most; printed. */
#if TEST_TSAN
#define ROUNDS 50000
#else
#define ROUNDS 100000
#endif

/* Generous: turns a lost wake-up into a failure instead of a hang. */
#define WATCHDOG_S 240

typedef struct Worker Worker;
typedef struct Slot Slot;

/* One registration of a handler on a slot's fd. */
typedef struct Gen {
    Slot *slot;
    unsigned id;
    int tag;                /* 0: read_a, 1: read_b */
    uint64_t sent;          /* worker->lock */
    uint64_t received;      /* worker->lock */
    bool dead;              /* atomic: its replacement/removal returned */
} Gen;

struct Slot {
    Worker *w;
    int fd;
    Gen *gens;              /* ROUNDS + 2 entries */
    unsigned ngens;
    Gen *cur;               /* worker only; NULL when removed */
    uint64_t unwatched;     /* written while removed, not yet drained */
};

struct Worker {
    int index;
    AioContext *ctx;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    Slot slots[FDS_PER_THREAD];
    QEMUTimer *timer;
    uint64_t timer_armed;   /* lock */
    uint64_t timer_fired;   /* lock */
    unsigned seed;
    uint64_t n_set, n_replace, n_remove, n_add, n_timer;
};

static Worker workers[NTHREADS];
static unsigned finished;          /* home thread only */
static unsigned violations_dead;   /* atomic */
static unsigned violations_tag;    /* atomic */
static unsigned violations_excess; /* atomic */
static pthread_barrier_t start;

static void on_read(Gen *g, int tag)
{
    Worker *w = g->slot->w;
    uint64_t v = 0;

    if (__atomic_load_n(&g->dead, __ATOMIC_ACQUIRE)) {
        __atomic_fetch_add(&violations_dead, 1, __ATOMIC_RELAXED);
    }
    if (g->tag != tag) {
        __atomic_fetch_add(&violations_tag, 1, __ATOMIC_RELAXED);
    }
    if (read(g->slot->fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
        v = 0;
    }
    pthread_mutex_lock(&w->lock);
    g->received += v;
    if (g->received > g->sent) {
        __atomic_fetch_add(&violations_excess, 1, __ATOMIC_RELAXED);
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void read_a(void *opaque)
{
    on_read(opaque, 0);
}

static void read_b(void *opaque)
{
    on_read(opaque, 1);
}

static void timer_cb(void *opaque)
{
    Worker *w = opaque;

    pthread_mutex_lock(&w->lock);
    w->timer_fired++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void finished_cb(void *opaque)
{
    (void)opaque;
    finished++;
}

/* Wait until the current generation consumed everything sent to it. */
static void wait_consumed(Worker *w, Gen *g)
{
    pthread_mutex_lock(&w->lock);
    while (g->received < g->sent) {
        pthread_cond_wait(&w->cond, &w->lock);
    }
    if (g->received != g->sent) {
        TEST_FAIL_("worker %d fd %d gen %u: received %" PRIu64 " > sent %"
                   PRIu64, w->index, g->slot->fd, g->id, g->received, g->sent);
    }
    pthread_mutex_unlock(&w->lock);
}

static void register_gen(Worker *w, Slot *s, int tag)
{
    Gen *g = &s->gens[s->ngens];

    g->slot = s;
    g->id = s->ngens++;
    g->tag = tag;
    aio_set_fd_handler(w->ctx, s->fd, tag ? read_b : read_a, NULL, NULL, NULL,
                       g);
    if (s->cur) {
        __atomic_store_n(&s->cur->dead, true, __ATOMIC_RELEASE);
    }
    s->cur = g;
}

static void *worker_thread(void *opaque)
{
    Worker *w = opaque;

    pthread_barrier_wait(&start);
    for (int round = 0; round < ROUNDS; round++) {
        Slot *s = &w->slots[rand_r(&w->seed) % FDS_PER_THREAD];
        unsigned op = rand_r(&w->seed) % 100;

        if (round % TIMER_EVERY == TIMER_EVERY - 1) {
            uint64_t want;

            pthread_mutex_lock(&w->lock);
            want = ++w->timer_armed;
            pthread_mutex_unlock(&w->lock);
            timer_mod_ns(w->timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
            pthread_mutex_lock(&w->lock);
            while (w->timer_fired < want) {
                pthread_cond_wait(&w->cond, &w->lock);
            }
            if (w->timer_fired != want) {
                TEST_FAIL_("worker %d: timer fired %" PRIu64 " times for %"
                           PRIu64 " arms", w->index, w->timer_fired, want);
            }
            pthread_mutex_unlock(&w->lock);
            w->n_timer++;
            continue;
        }

        if (!s->cur) {
            /* Events written while unwatched are still there, unconsumed. */
            uint64_t v = 0;

            if (read(s->fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
                v = 0;
            }
            if (v != s->unwatched) {
                TEST_FAIL_("worker %d fd %d: %" PRIu64 " events written while "
                           "unwatched, %" PRIu64 " left in the eventfd",
                           w->index, s->fd, s->unwatched, v);
            }
            s->unwatched = 0;
            register_gen(w, s, (int)(op & 1));
            w->n_add++;
        } else if (op < 60) {
            uint64_t n = 1 + op % 2;

            pthread_mutex_lock(&w->lock);
            s->cur->sent += n;
            pthread_mutex_unlock(&w->lock);
            if (write(s->fd, &n, sizeof(n)) != (ssize_t)sizeof(n)) {
                TEST_FAIL_("eventfd write: %s", strerror(errno));
            }
            w->n_set++;
        } else if (op < 85) {
            wait_consumed(w, s->cur);
            register_gen(w, s, !s->cur->tag);
            w->n_replace++;
        } else {
            wait_consumed(w, s->cur);
            aio_set_fd_handler(w->ctx, s->fd, NULL, NULL, NULL, NULL, NULL);
            __atomic_store_n(&s->cur->dead, true, __ATOMIC_RELEASE);
            s->cur = NULL;
            if (op & 1) {
                uint64_t one = 1;

                if (write(s->fd, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
                    TEST_FAIL_("eventfd write: %s", strerror(errno));
                }
                s->unwatched++;
            }
            w->n_remove++;
        }
    }
    /* Leave every fd removed and consumed. */
    for (int i = 0; i < FDS_PER_THREAD; i++) {
        Slot *s = &w->slots[i];

        if (s->cur) {
            wait_consumed(w, s->cur);
            aio_set_fd_handler(w->ctx, s->fd, NULL, NULL, NULL, NULL, NULL);
            __atomic_store_n(&s->cur->dead, true, __ATOMIC_RELEASE);
            s->cur = NULL;
        }
    }
    aio_bh_schedule_oneshot(w->ctx, finished_cb, NULL);
    return NULL;
}

TEST(concurrent_handlers_and_timers)
{
    AioContext *ctx = test_aio_context_new();
    pthread_t t[NTHREADS];
    uint64_t total_sent = 0, total_received = 0, total_gens = 0;

    printf("# %d threads x %d rounds, %d eventfds each\n", NTHREADS, ROUNDS,
           FDS_PER_THREAD);
    ASSERT_EQ(pthread_barrier_init(&start, NULL, NTHREADS + 1), 0);
    for (int i = 0; i < NTHREADS; i++) {
        Worker *w = &workers[i];

        memset(w, 0, sizeof(*w));
        w->index = i;
        w->ctx = ctx;
        w->seed = 777 + i;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        w->timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS, timer_cb,
                                 w);
        for (int j = 0; j < FDS_PER_THREAD; j++) {
            Slot *s = &w->slots[j];

            s->w = w;
            s->fd = test_eventfd();
            s->gens = calloc(ROUNDS + 2, sizeof(Gen));
            ASSERT_NOT_NULL(s->gens);
        }
        t[i] = test_thread_start(worker_thread, w);
    }
    aio_poll(ctx, false);
    test_watchdog("multithread handler stress: a worker never finished",
                  WATCHDOG_S);
    pthread_barrier_wait(&start);
    test_run_until_finished(ctx, &finished, NTHREADS, t);
    test_watchdog_cancel();

    ASSERT_UINT(violations_dead, ==, 0);
    ASSERT_UINT(violations_tag, ==, 0);
    ASSERT_UINT(violations_excess, ==, 0);
    for (int i = 0; i < NTHREADS; i++) {
        Worker *w = &workers[i];

        printf("# worker %d: %" PRIu64 " sets, %" PRIu64 " replaces, %" PRIu64
               " removes, %" PRIu64 " adds, %" PRIu64 " timers\n", i,
               w->n_set, w->n_replace, w->n_remove, w->n_add, w->n_timer);
        ASSERT_UINT(w->timer_fired, ==, w->timer_armed);
        ASSERT_UINT(w->timer_armed, ==, w->n_timer);
        for (int j = 0; j < FDS_PER_THREAD; j++) {
            Slot *s = &w->slots[j];
            uint64_t v = test_eventfd_drain(s->fd);

            ASSERT_UINT(v, ==, s->unwatched);
            for (unsigned g = 0; g < s->ngens; g++) {
                if (s->gens[g].received != s->gens[g].sent) {
                    TEST_FAIL_("worker %d fd %d gen %u: sent %" PRIu64
                               " received %" PRIu64, i, s->fd, g,
                               s->gens[g].sent, s->gens[g].received);
                }
                total_sent += s->gens[g].sent;
                total_received += s->gens[g].received;
            }
            total_gens += s->ngens;
            close(s->fd);
            free(s->gens);
        }
        timer_free(w->timer);
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
    }
    printf("# %" PRIu64 " events over %" PRIu64 " generations; "
           "%s, %" PRIu64 " waits a read() of the notifier alone\n",
           total_sent, total_gens, aioloop_context_fdmon_name(ctx),
           ctx->notifier_reads);
    ASSERT_UINT(total_received, ==, total_sent);
    ASSERT_UINT(total_sent, >, 0);
    pthread_barrier_destroy(&start);
    aio_context_unref(ctx);
}

RUN_TESTS(T(concurrent_handlers_and_timers))
