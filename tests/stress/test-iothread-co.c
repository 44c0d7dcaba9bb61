/*
 * Coroutines rescheduling each other across IOThreads, for a fixed time
 * (10 s under TSan, 2 s otherwise; AIOLOOP_STRESS_SECONDS overrides).
 *
 * RINGS rings of RING_SIZE coroutines are spread over NTHREADS IOThreads.
 * Each ring has one token.  Its holder hops to a pseudo-random IOThread
 * with aio_co_reschedule_self(), checks that it now runs there, then hands
 * the token to the next coroutine of its ring and yields.  The hand-over is
 * a one-shot BH in the holder's own context, so it runs only once the
 * holder has yielded: every wake-up then targets a yielded coroutine, and
 * a coroutine woken twice (a double schedule) aborts ("already scheduled").
 *
 * Counted exactly: the wake-ups sent in a ring equal the wake-ups its
 * coroutines received (none lost, none duplicated), and no coroutine ever
 * ran outside the context it hopped to.
 */
#define _GNU_SOURCE

#include <aioloop/coroutine.h>
#include <aioloop/iothread.h>

#include <semaphore.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "aio-test.h"
#include "test.h"

#define NTHREADS 3
#define RINGS 4
#define RING_SIZE 6

typedef struct Ring Ring;

typedef struct Member {
    Ring *ring;
    int index;
    Coroutine *co;
    unsigned long received; /* written by the token holder only */
} Member;

struct Ring {
    Member members[RING_SIZE];
    unsigned long sent;     /* likewise */
    int alive;              /* likewise */
};

static IOThread *iothreads[NTHREADS];
static Ring rings[RINGS];
static bool stop;               /* atomic */
static unsigned long wrong_ctx; /* atomic */
static unsigned parked;         /* atomic */
static sem_t finished;

static void wake_bh(void *opaque)
{
    Member *m = opaque;

    m->ring->sent++;
    aio_co_wake(m->co);
}

static void coroutine_fn member_co(void *opaque)
{
    Member *m = opaque;
    Ring *r = m->ring;
    uint64_t rng = (uintptr_t)m * 0x9e3779b97f4a7c15ull + 1;

    if (m->index > 0) {
        /* Park until the token comes round. */
        __atomic_fetch_add(&parked, 1, __ATOMIC_RELEASE);
        qemu_coroutine_yield();
        m->received++;
    }
    for (;;) {
        Member *next = &r->members[(m->index + 1) % RING_SIZE];
        AioContext *to;

        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        to = iothread_get_aio_context(iothreads[rng % NTHREADS]);
        aio_co_reschedule_self(to);
        if (qemu_get_current_aio_context() != to ||
            qemu_coroutine_get_aio_context(qemu_coroutine_self()) != to) {
            __atomic_fetch_add(&wrong_ctx, 1, __ATOMIC_RELAXED);
        }
        if (__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
            /* Members end in token order, so the next one is still alive. */
            if (--r->alive > 0) {
                aio_bh_schedule_oneshot(to, wake_bh, next);
            } else {
                sem_post(&finished);
            }
            return;
        }
        aio_bh_schedule_oneshot(to, wake_bh, next);
        qemu_coroutine_yield();
        m->received++;
    }
}

static unsigned stress_seconds(void)
{
    const char *s = getenv("AIOLOOP_STRESS_SECONDS");

    if (s && *s) {
        return (unsigned)strtoul(s, NULL, 10);
    }
    return TEST_TSAN ? 10 : 2;
}

TEST(iothreads_reschedule_coroutines)
{
    Error *err = NULL;
    unsigned seconds = stress_seconds();
    unsigned long sent = 0;

    sem_init(&finished, 0, 0);
    for (int i = 0; i < NTHREADS; i++) {
        char id[16];

        snprintf(id, sizeof(id), "co%d", i);
        iothreads[i] = iothread_create(id, &err);
        ASSERT_NULL(err);
    }
    for (int k = 0; k < RINGS; k++) {
        Ring *r = &rings[k];

        r->alive = RING_SIZE;
        for (int i = 0; i < RING_SIZE; i++) {
            r->members[i] = (Member) { .ring = r, .index = i };
            r->members[i].co = qemu_coroutine_create(member_co,
                                                     &r->members[i]);
        }
        /* The waiters first, each in an IOThread of its own choice. */
        for (int i = 1; i < RING_SIZE; i++) {
            aio_co_enter(iothread_get_aio_context(iothreads[i % NTHREADS]),
                         r->members[i].co);
        }
    }
    test_watchdog("waiters parking", 60);
    while (__atomic_load_n(&parked, __ATOMIC_ACQUIRE) <
           RINGS * (RING_SIZE - 1)) {
        usleep(1000);
    }
    test_watchdog_cancel();

    printf("# %d rings of %d coroutines over %d IOThreads for %u s\n", RINGS,
           RING_SIZE, NTHREADS, seconds);
    for (int k = 0; k < RINGS; k++) {
        aio_co_enter(iothread_get_aio_context(iothreads[k % NTHREADS]),
                     rings[k].members[0].co);
    }
    sleep(seconds);
    __atomic_store_n(&stop, true, __ATOMIC_RELAXED);
    test_watchdog("rings finishing", 60);
    for (int k = 0; k < RINGS; k++) {
        sem_wait(&finished);
    }
    test_watchdog_cancel();

    /* Stopping joins the threads: everything they wrote is visible. */
    for (int i = 0; i < NTHREADS; i++) {
        iothread_destroy(iothreads[i]);
    }
    for (int k = 0; k < RINGS; k++) {
        unsigned long received = 0;

        for (int i = 0; i < RING_SIZE; i++) {
            received += rings[k].members[i].received;
        }
        ASSERT_UINT(received, ==, rings[k].sent);
        ASSERT_INT(rings[k].alive, ==, 0);
        sent += rings[k].sent;
    }
    printf("# %lu wake-ups, each after a cross-thread reschedule\n", sent);
    ASSERT_UINT(sent, >=, (unsigned long)RINGS * RING_SIZE);
    ASSERT_UINT(__atomic_load_n(&wrong_ctx, __ATOMIC_RELAXED), ==, 0);
    sem_destroy(&finished);
}

RUN_TESTS(T(iothreads_reschedule_coroutines));
