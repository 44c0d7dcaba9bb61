/*
 * CoMutex across threads: 4 threads, each running its own AioContext, 4
 * coroutines per thread, each taking one shared CoMutex OPS times.  In the
 * critical section a plain counter and an atomic counter are incremented;
 * every 8th time the holder yields to its loop while holding the lock, so
 * that contenders in other threads queue and the unlock hands the lock to
 * a coroutine in another thread.  At the end the plain counter must equal
 * the atomic one and threads x coroutines x OPS.  (TSan also checks that
 * the CoMutex orders the plain accesses.)
 */
#define _GNU_SOURCE

#include <aioloop/coroutine.h>

#include <stdint.h>

#include "co-threads.h"
#include "test.h"

#define NTHREADS 4
#define COS_PER_THREAD 4
#if TEST_SANITIZED
#define OPS 3000
#else
#define OPS 20000
#endif

static CoMutex mutex;
static uint64_t plain_counter;
static uint64_t atomic_counter;
static unsigned long contended_unlocks;
static bool go; /* atomic: every coroutine has been scheduled */
static sem_t finished;

static void coroutine_fn counter_co(void *opaque)
{
    (void)opaque;
    /*
     * Start together: otherwise, on a loaded machine, the first coroutine
     * of a thread can finish all its rounds before the next one exists,
     * and the lock is never contended (seen under ASan).  With all four
     * of a thread queued, the holder's yield lets the next one contend.
     */
    while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) {
        co_yield_to_loop();
    }
    for (int i = 0; i < OPS; i++) {
        qemu_co_mutex_lock(&mutex);
        plain_counter++;
        __atomic_fetch_add(&atomic_counter, 1, __ATOMIC_RELAXED);
        if ((i & 7) == 0) {
            co_yield_to_loop();
        }
        if (__atomic_load_n(&mutex.locked, __ATOMIC_RELAXED) > 1) {
            __atomic_fetch_add(&contended_unlocks, 1, __ATOMIC_RELAXED);
        }
        qemu_co_mutex_unlock(&mutex);
        if ((i & 3) == 0) {
            co_yield_to_loop();
        }
    }
    sem_post(&finished);
}

TEST(comutex_counter_4_threads)
{
    LoopThread t[NTHREADS];

    test_watchdog("comutex_counter_4_threads", 120);
    qemu_co_mutex_init(&mutex);
    sem_init(&finished, 0, 0);
    for (int i = 0; i < NTHREADS; i++) {
        loop_thread_start(&t[i]);
    }
    for (int i = 0; i < NTHREADS; i++) {
        for (int j = 0; j < COS_PER_THREAD; j++) {
            aio_co_schedule(t[i].ctx, qemu_coroutine_create(counter_co, NULL));
        }
    }
    __atomic_store_n(&go, true, __ATOMIC_RELEASE);
    for (int i = 0; i < NTHREADS * COS_PER_THREAD; i++) {
        sem_wait(&finished);
    }
    for (int i = 0; i < NTHREADS; i++) {
        loop_thread_stop(&t[i]);
    }
    printf("# %d ops, %lu unlocks with waiters\n",
           NTHREADS * COS_PER_THREAD * OPS, contended_unlocks);
    ASSERT_UINT(atomic_counter, ==,
                (uint64_t)NTHREADS * COS_PER_THREAD * OPS);
    ASSERT_UINT(plain_counter, ==, atomic_counter);
    ASSERT_UINT(mutex.locked, ==, 0);
    /* The test is meaningless if the lock was never contended. */
    ASSERT_UINT(contended_unlocks, >, 0);
    sem_destroy(&finished);
    test_watchdog_cancel();
}

RUN_TESTS(T(comutex_counter_4_threads))
