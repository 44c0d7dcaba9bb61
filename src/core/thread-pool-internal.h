/*
 * Thread pool internals used by the AioContext core and by the tests.
 *
 * Nothing here is exported; the tests link the static library and reach
 * these through the private include path.
 */
#ifndef AIOLOOP_THREAD_POOL_INTERNAL_H
#define AIOLOOP_THREAD_POOL_INTERNAL_H

#include <aioloop/thread-pool.h>

#include <stdint.h>

/*
 * Stop every worker and free @pool (NULL is a no-op).  Called by the
 * AioContext finalize path; aborts with a message if jobs are outstanding.
 */
void thread_pool_free(ThreadPool *pool);

/*
 * How long a worker above the minimum waits for work before exiting
 * (default 10 s, as QEMU), and how long an idle worker spins before it
 * sleeps (default 50 us; 0 disables spinning).  Process-wide, read when a
 * worker becomes idle: tests shorten the first so they need not wait.
 */
void thread_pool_set_idle_timeout_ns(int64_t ns);
void thread_pool_set_spin_ns(int64_t ns);

typedef struct ThreadPoolStats {
    int cur_threads;   /* live workers, including ones being started */
    int idle_threads;  /* workers waiting or spinning for work */
    int min_threads;
    int max_threads;
    int queued;        /* jobs not yet started */
    int64_t spawned;   /* workers started since the pool was created */
    int inflight;      /* submitted, completion callback not yet run */
} ThreadPoolStats;

/* A consistent snapshot (taken under the pool lock); any thread. */
void thread_pool_get_stats(ThreadPool *pool, ThreadPoolStats *stats);

/* Jobs submitted whose completion callback has not run yet; no lock. */
int thread_pool_inflight(ThreadPool *pool);

#endif
