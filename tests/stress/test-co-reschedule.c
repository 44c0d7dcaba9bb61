/*
 * Coroutines moving between threads.  4 threads, each running its own
 * AioContext:
 *  - hoppers: 16 coroutines, each hopping HOPS times to a pseudo-random
 *    context with aio_co_reschedule_self(); after every hop it must run in
 *    that context's thread.  Total hops are counted exactly.
 *  - ping-pong: pairs of coroutines in different threads waking each other
 *    with aio_co_wake() right before yielding (the cross-context case that
 *    is allowed before the target has yielded), ROUNDS times each.
 * A coroutine entered or scheduled twice would abort ("already scheduled"
 * / "re-entered recursively").
 */
#define _GNU_SOURCE

#include <aioloop/coroutine.h>

#include <stdint.h>

#include "co-threads.h"
#include "test.h"

#define NTHREADS 4
#define NHOPPERS 16
#define NPAIRS 2
#if TEST_SANITIZED
#define HOPS 1500
#define ROUNDS 3000
#else
#define HOPS 10000
#define ROUNDS 20000
#endif

static LoopThread threads[NTHREADS];
static unsigned long total_hops;
static unsigned long wrong_thread;
static sem_t finished;

static void coroutine_fn hopper_co(void *opaque)
{
    uint64_t rng = (uintptr_t)opaque * 0x9e3779b97f4a7c15ull + 1;

    for (int i = 0; i < HOPS; i++) {
        LoopThread *to;

        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        to = &threads[rng % NTHREADS];
        aio_co_reschedule_self(to->ctx);
        if (qemu_get_current_aio_context() != to->ctx ||
            qemu_coroutine_get_aio_context(qemu_coroutine_self()) != to->ctx) {
            __atomic_fetch_add(&wrong_thread, 1, __ATOMIC_RELAXED);
        }
        __atomic_fetch_add(&total_hops, 1, __ATOMIC_RELAXED);
    }
    sem_post(&finished);
}

typedef struct Pair {
    Coroutine *co[2];
    unsigned rounds[2];   /* each written by its own coroutine only */
    AioContext *home[2];
    unsigned long misplaced;
} Pair;

static Pair pairs[NPAIRS];

static void coroutine_fn pong_co(void *opaque)
{
    Pair *p = opaque;
    int me = qemu_coroutine_self() == p->co[1];

    if (me == 1) {
        qemu_coroutine_yield();  /* wait for the first ping */
    }
    for (;;) {
        if (qemu_get_current_aio_context() != p->home[me]) {
            __atomic_fetch_add(&p->misplaced, 1, __ATOMIC_RELAXED);
        }
        p->rounds[me]++;
        if (me == 0 && p->rounds[0] > ROUNDS) {
            break;
        }
        aio_co_wake(p->co[!me]);
        if (me == 1 && p->rounds[1] == ROUNDS) {
            break;
        }
        qemu_coroutine_yield();
    }
    sem_post(&finished);
}

static void start_pair_bh(void *opaque)
{
    Pair *p = opaque;

    /* Both enter in their home thread; side 1 first, it waits. */
    qemu_coroutine_enter(p->co[1]);
}

static void start_pair_a_bh(void *opaque)
{
    Pair *p = opaque;

    qemu_coroutine_enter(p->co[0]);
}

TEST(coroutines_reschedule_each_other_across_threads)
{
    test_watchdog("coroutines_reschedule_each_other_across_threads", 120);
    sem_init(&finished, 0, 0);
    for (int i = 0; i < NTHREADS; i++) {
        loop_thread_start(&threads[i]);
    }
    for (int i = 0; i < NPAIRS; i++) {
        Pair *p = &pairs[i];

        p->co[0] = qemu_coroutine_create(pong_co, p);
        p->co[1] = qemu_coroutine_create(pong_co, p);
        p->home[0] = threads[(2 * i) % NTHREADS].ctx;
        p->home[1] = threads[(2 * i + 1) % NTHREADS].ctx;
        aio_bh_schedule_oneshot(p->home[1], start_pair_bh, p);
        /* Side 1 must have yielded before side 0 wakes it. */
        while (!qemu_coroutine_get_aio_context(p->co[1])) {
            sched_yield();
        }
    }
    for (int i = 0; i < NPAIRS; i++) {
        aio_bh_schedule_oneshot(pairs[i].home[0], start_pair_a_bh, &pairs[i]);
    }
    for (uintptr_t i = 0; i < NHOPPERS; i++) {
        aio_co_schedule(threads[i % NTHREADS].ctx,
                        qemu_coroutine_create(hopper_co, (void *)(i + 1)));
    }
    for (int i = 0; i < NHOPPERS + 2 * NPAIRS; i++) {
        sem_wait(&finished);
    }
    for (int i = 0; i < NTHREADS; i++) {
        loop_thread_stop(&threads[i]);
    }
    ASSERT_UINT(total_hops, ==, (unsigned long)NHOPPERS * HOPS);
    ASSERT_UINT(wrong_thread, ==, 0);
    for (int i = 0; i < NPAIRS; i++) {
        ASSERT_UINT(pairs[i].rounds[0], ==, ROUNDS + 1);
        ASSERT_UINT(pairs[i].rounds[1], ==, ROUNDS);
        ASSERT_UINT(pairs[i].misplaced, ==, 0);
    }
    sem_destroy(&finished);
    test_watchdog_cancel();
}

RUN_TESTS(T(coroutines_reschedule_each_other_across_threads))
