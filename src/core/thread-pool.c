/*
 * The per-AioContext worker pool (QEMU's util/thread-pool.c, reworked so
 * that it does not thrash).  docs/thread-pool.md has the whole story.
 *
 * Where QEMU pays per request (a semaphore post and wait, the pool mutex,
 * a BH schedule that scans every request, a thread woken per submit),
 * this pool pays:
 *  - one mutex section to queue a job (or one per batch, for jobs
 *    submitted from completion callbacks) and one to take it;
 *  - a wake-up only when no worker is already on its way (kick_locked():
 *    one worker in transit at a time, chained), and none at all while an
 *    idle worker spins for the next job;
 *  - one lock-free push of the finished job onto a done list; only the push
 *    that finds the list empty schedules the completion BH, which then runs
 *    every finished job of the batch;
 *  - no malloc/free: requests are recycled.
 * Workers are started one at a time, from the submitting thread or from a
 * worker, so they inherit the context thread's CPU affinity.
 *
 * Every job leaves the request queue (or the deferred list) exactly once,
 * either to a worker or to a cancel; it is then pushed once onto the done
 * list and its completion is popped once from the home thread's batch
 * before its callback runs.  Hence "exactly once" whatever nests.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aioloop/error.h>

#include "aio-internal.h"
#include "thread-pool-internal.h"
#include "thread.h"

#define DEFAULT_IDLE_TIMEOUT_NS (10 * 1000 * 1000 * 1000LL)
#define DEFAULT_SPIN_NS (50 * 1000LL)
#define SPIN_NO_YIELD_NS (5 * 1000LL)

static int64_t idle_timeout_ns = DEFAULT_IDLE_TIMEOUT_NS; /* atomic */
static int64_t spin_ns = DEFAULT_SPIN_NS;                 /* atomic */

enum { JOB_QUEUED, JOB_ACTIVE, JOB_DONE };

typedef struct ThreadPoolElement ThreadPoolElement;
struct ThreadPoolElement {
    BlockAIOCB common;
    ThreadPool *pool;
    ThreadPoolFunc *func;
    void *arg;
    int state; /* pool->lock */
    /*
     * Home thread only: submitted from a completion callback and still on
     * the deferred list, not yet in the queue (see ThreadPool.completing).
     */
    bool deferred;
    /*
     * Written by the thread that moves the job to DONE, before the done-list
     * push that publishes it; read by the home thread after taking the list.
     */
    int ret;
    /* Request queue (pool->lock) or deferred list (home thread). */
    ThreadPoolElement *prev, *next;
    ThreadPoolElement *done_next;   /* done list, then the batch */
};

struct ThreadPool {
    AioContext *ctx;
    QEMUBH *completion_bh;

    pthread_mutex_t lock;
    pthread_cond_t work_cond; /* workers wait for work here */
    pthread_cond_t exit_cond; /* thread_pool_free() waits for workers */

    /* Everything below up to "done" is guarded by lock. */
    ThreadPoolElement *head, *tail; /* jobs not started, FIFO */
    int queued;        /* length of that queue; also read atomically by spinners */
    int cur_threads;   /* live workers, including starting ones */
    int starting;      /* created (or being created), not yet running */
    int idle_threads;  /* in worker_idle(), spinning or waiting */
    int spinning;      /* at most 1 */
    int waiting;       /* blocked in the condition variable */
    int wakeups_pending; /* signals sent that no waiter consumed yet */
    int min_threads;
    int max_threads;
    bool stopping;     /* also read atomically by spinners */
    int64_t spawned;
    /*
     * Workers that have left their loop and wait to be joined, so that no
     * thread outlives the pool (a fork right after aio_context_unref()
     * sees a single-threaded process).  Joined by the next spawn and by
     * thread_pool_free().
     */
    pthread_t *zombies;
    int n_zombies, zombies_alloc;

    /* Finished jobs, LIFO: pushed by any thread, taken by the home thread. */
    ThreadPoolElement *done;

    /* Home thread only: finished jobs whose callbacks have not run, FIFO. */
    ThreadPoolElement *batch_head, *batch_tail;
    /* Submitted, callback not yet run; home thread writes, atomic reads. */
    int inflight;
    /*
     * Home thread only.  bh_armed: the completion BH was scheduled by
     * completion_bh() itself and has not run or been cancelled since.
     * free_elems: requests nobody references any more, kept for reuse
     * (linked through done_next) so a job costs no malloc/free.
     */
    bool bh_armed;
    ThreadPoolElement *free_elems;
    int n_free_elems;
    /*
     * Home thread only.  Jobs submitted while completion_bh() runs wait on
     * the deferred list and join the queue in one lock section when the
     * batch ends, or when DEFER_MAX piled up, or when flush_bh runs (a
     * callback that waits in a nested aio_poll() for a job it submitted).
     */
    int completing;
    ThreadPoolElement *defer_head, *defer_tail;
    int n_deferred;
    QEMUBH *flush_bh;
};

#define DEFER_MAX 64

#define MAX_FREE_ELEMS 1024

void thread_pool_set_idle_timeout_ns(int64_t ns)
{
    qatomic_set(&idle_timeout_ns, ns > 0 ? ns : DEFAULT_IDLE_TIMEOUT_NS);
}

void thread_pool_set_spin_ns(int64_t ns)
{
    qatomic_set(&spin_ns, ns > 0 ? ns : 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* ---- completion ------------------------------------------------------- */

/* Returns true when the list was empty: the caller must kick the BH. */
static bool done_push(ThreadPool *pool, ThreadPoolElement *elem)
{
    ThreadPoolElement *old = __atomic_load_n(&pool->done, __ATOMIC_RELAXED);

    do {
        elem->done_next = old;
        /* Release: publishes elem->ret; pairs with the take's exchange. */
    } while (!__atomic_compare_exchange_n(&pool->done, &old, elem, true,
                                          __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return old == NULL;
}

/* Move the done list, oldest first, to the end of the batch. */
static void take_done(ThreadPool *pool)
{
    ThreadPoolElement *list = __atomic_exchange_n(&pool->done, NULL,
                                                  __ATOMIC_SEQ_CST);
    ThreadPoolElement *rev = NULL, *last = list;

    if (!list) {
        return;
    }
    while (list) {
        ThreadPoolElement *next = list->done_next;

        list->done_next = rev;
        rev = list;
        list = next;
    }
    if (pool->batch_tail) {
        pool->batch_tail->done_next = rev;
    } else {
        pool->batch_head = rev;
    }
    pool->batch_tail = last;
}

static void elem_release(ThreadPool *pool, ThreadPoolElement *elem)
{
    /* Recycle unless someone still holds a qemu_aio_ref() reference. */
    if (elem->common.refcnt == 1 && pool->n_free_elems < MAX_FREE_ELEMS) {
        elem->common.refcnt = 0;
        elem->done_next = pool->free_elems;
        pool->free_elems = elem;
        pool->n_free_elems++;
        return;
    }
    qemu_aio_unref(elem);
}

static bool kick_locked(ThreadPool *pool);
static void spawn_thread(ThreadPool *pool);

/* Move the deferred jobs to the queue.  Home thread. */
static void flush_deferred(ThreadPool *pool)
{
    bool spawn;

    if (!pool->defer_head) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    for (ThreadPoolElement *e = pool->defer_head; e; e = e->next) {
        e->deferred = false;
    }
    pool->defer_head->prev = pool->tail;
    if (pool->tail) {
        pool->tail->next = pool->defer_head;
    } else {
        pool->head = pool->defer_head;
    }
    pool->tail = pool->defer_tail;
    qatomic_set(&pool->queued, pool->queued + pool->n_deferred);
    spawn = kick_locked(pool);
    pthread_mutex_unlock(&pool->lock);
    pool->defer_head = pool->defer_tail = NULL;
    pool->n_deferred = 0;
    if (spawn) {
        spawn_thread(pool);
    }
}

static void flush_bh(void *opaque)
{
    flush_deferred(opaque);
}

static void completion_bh(void *opaque)
{
    ThreadPool *pool = opaque;

    /* Running means aio_bh_poll() took the BH: it is no longer scheduled. */
    pool->bh_armed = false;
    pool->completing++;
    for (;;) {
        ThreadPoolElement *elem;

        take_done(pool);
        elem = pool->batch_head;
        if (!elem) {
            break;
        }
        pool->batch_head = elem->done_next;
        if (!pool->batch_head) {
            pool->batch_tail = NULL;
        } else if (!pool->bh_armed) {
            /*
             * A callback that runs a nested aio_poll() to wait for a sibling
             * must see the rest of the batch complete (QEMU re-schedules
             * before every callback; once is enough until a nested run
             * consumes it, which clears bh_armed).
             */
            pool->bh_armed = true;
            qemu_bh_schedule(pool->completion_bh);
        }
        if (elem->common.cb) {
            elem->common.cb(elem->common.opaque, elem->ret);
        }
        qatomic_set(&pool->inflight, pool->inflight - 1);
        elem_release(pool, elem);
    }
    if (pool->bh_armed) {
        /*
         * A worker may have pushed onto the empty done list and scheduled
         * the BH since our last take_done(); if its schedule came before
         * this cancel, its push came before it too (both seq_cst), and the
         * take_done() below sees the job.  A later schedule survives.
         */
        pool->bh_armed = false;
        qemu_bh_cancel(pool->completion_bh);
        take_done(pool);
        if (pool->batch_head) {
            qemu_bh_schedule(pool->completion_bh);
        }
    }
    if (--pool->completing == 0) {
        flush_deferred(pool);
        qemu_bh_cancel(pool->flush_bh);
    }
}

/* ---- workers ---------------------------------------------------------- */

static void *worker_thread(void *opaque);

/* Join the workers that exited.  Never called by a zombie itself. */
static void reap_zombies(ThreadPool *pool)
{
    pthread_t *z;
    int n;

    pthread_mutex_lock(&pool->lock);
    z = pool->zombies;
    n = pool->n_zombies;
    pool->zombies = NULL;
    pool->zombies_alloc = 0;
    qatomic_set(&pool->n_zombies, 0);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < n; i++) {
        pthread_join(z[i], NULL);
    }
    free(z);
}

static void spawn_thread(ThreadPool *pool)
{
    pthread_t tid;
    int ret;

    if (qatomic_read(&pool->n_zombies)) {
        reap_zombies(pool);
    }

    /* Workers never take signals meant for the application's threads. */
    ret = aio_thread_create(&tid, worker_thread, pool);
    if (ret != 0) {
        /* QEMU aborts too: queued jobs could otherwise wait forever. */
        error_report("thread pool: cannot start a worker thread: %s",
                     strerror(ret));
        abort();
    }
}

/*
 * Get one more worker onto the queue: wake a waiting one, or start one.
 *
 * Only one worker is "in transit" (spinning, signalled but not yet
 * running, or starting) at a time.  Once it has taken a job it calls this
 * again, so the wake-ups form a chain that goes on only while jobs are
 * still waiting when the previous worker arrives.  Short jobs are drained
 * by the workers already running and the chain stops by itself, instead of
 * waking (on two CPUs: thrashing) a thread per submitted job; jobs that
 * block keep the queue full, and the chain grows the pool to its maximum
 * one worker at a time, as QEMU's spawn chain does.  Busy workers do not
 * count: a job may block for long.
 *
 * Called with the lock held.  Returns true when the caller must call
 * spawn_thread() after unlocking.
 */
static bool kick_locked(ThreadPool *pool)
{
    if (!pool->queued ||
        pool->spinning + pool->wakeups_pending + pool->starting) {
        return false;
    }
    if (pool->waiting > 0) {
        pool->wakeups_pending++;
        pthread_cond_signal(&pool->work_cond);
        return false;
    }
    if (pool->cur_threads < pool->max_threads) {
        pool->cur_threads++;
        pool->starting++;
        pool->spawned++;
        return true;
    }
    return false;
}

/*
 * Spin until a job is queued, the pool stops, or @ns have passed.  The
 * first few microseconds are a pure spin (a burst of jobs refills the
 * queue that fast); after that the spinner yields its CPU between checks:
 * when threads outnumber CPUs (two vCPUs, or a loaded host) the thread that
 * will submit the next job, often the event loop waking up for the
 * previous completion, needs that CPU more than we need to spin on it.
 * A yield with nothing else runnable returns at once.
 */
static void spin_for_work(ThreadPool *pool, int64_t ns)
{
    int64_t start = aio_clock_ns();

    for (unsigned i = 1;; i++) {
        if (qatomic_read(&pool->queued) || qatomic_read(&pool->stopping)) {
            return;
        }
        cpu_relax();
        if ((i & 63) == 0) {
            int64_t elapsed = aio_clock_ns() - start;

            if (elapsed > ns) {
                return;
            }
            if (elapsed > SPIN_NO_YIELD_NS) {
                sched_yield();
            }
        }
    }
}

/* Called with the lock held and no job queued; false: the worker exits. */
static bool worker_idle(ThreadPool *pool)
{
    int64_t spin = qatomic_read(&spin_ns);
    struct timespec ts;
    int ret;

    pool->idle_threads++;
    /* One spinner is enough: it covers the next job (see kick_locked). */
    if (spin > 0 && pool->spinning == 0) {
        pool->spinning++;
        pthread_mutex_unlock(&pool->lock);
        spin_for_work(pool, spin);
        pthread_mutex_lock(&pool->lock);
        pool->spinning--;
        if (pool->head || pool->stopping ||
            pool->cur_threads > pool->max_threads) {
            pool->idle_threads--;
            return true;
        }
    }

    clock_gettime(CLOCK_MONOTONIC, &ts);
    {
        int64_t t = ts.tv_nsec + qatomic_read(&idle_timeout_ns);

        ts.tv_sec += t / 1000000000LL;
        ts.tv_nsec = t % 1000000000LL;
    }
    pool->waiting++;
    ret = pthread_cond_timedwait(&pool->work_cond, &pool->lock, &ts);
    pool->waiting--;
    if (pool->wakeups_pending > 0) {
        pool->wakeups_pending--;
    }
    pool->idle_threads--;
    return !(ret == ETIMEDOUT && !pool->head &&
             pool->cur_threads > pool->min_threads);
}

static void *worker_thread(void *opaque)
{
    ThreadPool *pool = opaque;
    /*
     * True while this worker is in transit (just started, woken, or done
     * spinning): once it has taken a job it continues the chain of
     * kick_locked().  Taking the job first matters: a worker still busy
     * starting its successor must not leave its own job looking uncovered.
     */
    bool chain = true;

    pthread_setname_np(pthread_self(), "worker");
    pthread_mutex_lock(&pool->lock);
    pool->starting--;

    while (!pool->stopping && pool->cur_threads <= pool->max_threads) {
        ThreadPoolElement *req = pool->head;
        bool spawn;
        int ret;

        if (!req) {
            if (!worker_idle(pool)) {
                break;
            }
            chain = true;
            continue;
        }
        pool->head = req->next;
        if (pool->head) {
            pool->head->prev = NULL;
        } else {
            pool->tail = NULL;
        }
        qatomic_set(&pool->queued, pool->queued - 1);
        req->state = JOB_ACTIVE;
        spawn = chain && kick_locked(pool);
        chain = false;
        pthread_mutex_unlock(&pool->lock);

        if (spawn) {
            spawn_thread(pool);
        }
        ret = req->func(req->arg);
        req->ret = ret;
        /*
         * The schedule runs outside the lock; thread_pool_free() waits for
         * this worker to exit, so the BH is still alive here.
         */
        if (done_push(pool, req)) {
            qemu_bh_schedule(pool->completion_bh);
        }

        pthread_mutex_lock(&pool->lock);
    }
    pool->cur_threads--;
    if (pool->n_zombies == pool->zombies_alloc) {
        int alloc = pool->zombies_alloc ? 2 * pool->zombies_alloc : 8;
        pthread_t *z = realloc(pool->zombies, sizeof(*z) * (size_t)alloc);

        if (!z) {
            error_report("thread pool: out of memory recording an exited "
                         "worker");
            abort();
        }
        pool->zombies = z;
        pool->zombies_alloc = alloc;
    }
    pool->zombies[pool->n_zombies] = pthread_self();
    qatomic_set(&pool->n_zombies, pool->n_zombies + 1);
    /*
     * Leaving above a lowered maximum with jobs queued: hand them to an
     * idle worker (cur_threads >= max_threads here, so nothing is started).
     */
    if (!pool->stopping && pool->head) {
        kick_locked(pool);
    }
    if (pool->stopping) {
        pthread_cond_signal(&pool->exit_cond);
    }
    /* Last touch of @pool: thread_pool_free() joins us, then frees it. */
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* ---- public API ------------------------------------------------------- */

static void thread_pool_cancel(BlockAIOCB *acb)
{
    ThreadPoolElement *elem = (ThreadPoolElement *)acb;
    ThreadPool *pool = elem->pool;
    bool kick = false;

    if (elem->deferred) {
        /* Only the home thread, which we are in, touches this list. */
        if (elem->prev) {
            elem->prev->next = elem->next;
        } else {
            pool->defer_head = elem->next;
        }
        if (elem->next) {
            elem->next->prev = elem->prev;
        } else {
            pool->defer_tail = elem->prev;
        }
        pool->n_deferred--;
        elem->deferred = false;
        elem->state = JOB_DONE;
        elem->ret = -ECANCELED;
        if (done_push(pool, elem)) {
            qemu_bh_schedule(pool->completion_bh);
        }
        return;
    }
    pthread_mutex_lock(&pool->lock);
    if (elem->state == JOB_QUEUED) {
        if (elem->prev) {
            elem->prev->next = elem->next;
        } else {
            pool->head = elem->next;
        }
        if (elem->next) {
            elem->next->prev = elem->prev;
        } else {
            pool->tail = elem->prev;
        }
        qatomic_set(&pool->queued, pool->queued - 1);
        elem->state = JOB_DONE;
        elem->ret = -ECANCELED;
        kick = done_push(pool, elem);
    }
    pthread_mutex_unlock(&pool->lock);
    if (kick) {
        qemu_bh_schedule(pool->completion_bh);
    }
}

static AioContext *thread_pool_get_aio_context(BlockAIOCB *acb)
{
    return ((ThreadPoolElement *)acb)->pool->ctx;
}

static const AIOCBInfo thread_pool_aiocb_info = {
    .aiocb_size = sizeof(ThreadPoolElement),
    .cancel_async = thread_pool_cancel,
    .get_aio_context = thread_pool_get_aio_context,
};

static ThreadPool *thread_pool_new(AioContext *ctx)
{
    ThreadPool *pool = calloc(1, sizeof(*pool));
    pthread_mutexattr_t mattr;
    pthread_condattr_t cattr;

    if (!pool) {
        error_report("aio_get_thread_pool: out of memory");
        abort();
    }
    pool->ctx = ctx;
    pool->completion_bh = aio_bh_new(ctx, completion_bh, pool);
    pool->flush_bh = aio_bh_new(ctx, flush_bh, pool);
    pthread_mutexattr_init(&mattr);
    /* Critical sections are a few pointer moves: spin briefly, then sleep. */
    pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&pool->lock, &mattr);
    pthread_mutexattr_destroy(&mattr);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->work_cond, &cattr);
    pthread_cond_init(&pool->exit_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    pool->min_threads = 0;
    pool->max_threads = 64;
    return pool;
}

ThreadPool *aio_get_thread_pool(AioContext *ctx)
{
    ThreadPool *pool = __atomic_load_n(&ctx->thread_pool, __ATOMIC_ACQUIRE);
    ThreadPool *expected = NULL;

    if (likely(pool)) {
        return pool;
    }
    pool = thread_pool_new(ctx);
    if (!__atomic_compare_exchange_n(&ctx->thread_pool, &expected, pool, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {
        thread_pool_free(pool);
        return expected;
    }
    /*
     * Read the parameters after publishing the pool: pairs with smp_mb() in
     * aio_context_set_thread_pool_params(), so a concurrent update is
     * applied by one side or the other.
     */
    smp_mb();
    thread_pool_update_params(pool, ctx);
    return pool;
}

void thread_pool_update_params(ThreadPool *pool, AioContext *ctx)
{
    int n_spawn = 0;

    if (!pool || !ctx) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->min_threads = (int)qatomic_read(&ctx->thread_pool_min);
    pool->max_threads = (int)qatomic_read(&ctx->thread_pool_max);
    if (pool->cur_threads < pool->min_threads) {
        n_spawn = pool->min_threads - pool->cur_threads;
        pool->cur_threads += n_spawn;
        pool->starting += n_spawn;
        pool->spawned += n_spawn;
    }
    if (pool->cur_threads > pool->max_threads) {
        /* Idle workers above the maximum exit now, busy ones after a job. */
        pthread_cond_broadcast(&pool->work_cond);
    }
    pthread_mutex_unlock(&pool->lock);
    while (n_spawn-- > 0) {
        spawn_thread(pool);
    }
}

BlockAIOCB *thread_pool_submit_aio(ThreadPoolFunc *func, void *arg,
                                   BlockCompletionFunc *cb, void *opaque)
{
    AioContext *ctx = qemu_get_current_aio_context();
    ThreadPoolElement *elem;
    ThreadPool *pool;
    bool spawn;

    if (!ctx) {
        error_report("thread_pool_submit_aio: this thread has no current "
                     "AioContext; call qemu_set_current_aio_context() first "
                     "(completions run in the submitting context)");
        abort();
    }
    if (!func) {
        error_report("thread_pool_submit_aio: func is NULL");
        abort();
    }
    pool = aio_get_thread_pool(ctx);
    elem = pool->free_elems;
    if (elem) {
        pool->free_elems = elem->done_next;
        pool->n_free_elems--;
        memset(elem, 0, sizeof(*elem));
        elem->common.aiocb_info = &thread_pool_aiocb_info;
        elem->common.cb = cb;
        elem->common.opaque = opaque;
        elem->common.refcnt = 1;
    } else {
        elem = qemu_aio_get(&thread_pool_aiocb_info, NULL, cb, opaque);
    }
    elem->pool = pool;
    elem->func = func;
    elem->arg = arg;
    qatomic_set(&pool->inflight, pool->inflight + 1);

    elem->state = JOB_QUEUED;
    if (pool->completing) {
        /*
         * Submitted from a completion callback, likely one of many in this
         * batch: queue them all in one lock section when the batch ends.
         */
        elem->deferred = true;
        elem->prev = pool->defer_tail;
        if (pool->defer_tail) {
            pool->defer_tail->next = elem;
        } else {
            pool->defer_head = elem;
            qemu_bh_schedule(pool->flush_bh);
        }
        pool->defer_tail = elem;
        if (++pool->n_deferred >= DEFER_MAX) {
            flush_deferred(pool);
        }
        return &elem->common;
    }
    pthread_mutex_lock(&pool->lock);
    elem->prev = pool->tail;
    if (pool->tail) {
        pool->tail->next = elem;
    } else {
        pool->head = elem;
    }
    pool->tail = elem;
    qatomic_set(&pool->queued, pool->queued + 1);
    spawn = kick_locked(pool);
    pthread_mutex_unlock(&pool->lock);
    if (spawn) {
        spawn_thread(pool);
    }
    return &elem->common;
}

void thread_pool_submit(ThreadPoolFunc *func, void *arg)
{
    thread_pool_submit_aio(func, arg, NULL, NULL);
}

int thread_pool_inflight(ThreadPool *pool)
{
    return qatomic_read(&pool->inflight);
}

void thread_pool_get_stats(ThreadPool *pool, ThreadPoolStats *stats)
{
    pthread_mutex_lock(&pool->lock);
    stats->cur_threads = pool->cur_threads;
    stats->idle_threads = pool->idle_threads;
    stats->min_threads = pool->min_threads;
    stats->max_threads = pool->max_threads;
    stats->queued = pool->queued;
    stats->spawned = pool->spawned;
    stats->inflight = qatomic_read(&pool->inflight);
    pthread_mutex_unlock(&pool->lock);
}

void thread_pool_free(ThreadPool *pool)
{
    int inflight;

    if (!pool) {
        return;
    }
    inflight = qatomic_read(&pool->inflight);
    if (inflight) {
        error_report("aio_context_unref: AioContext %p freed with %d thread "
                     "pool job(s) outstanding; wait for their completions "
                     "first", (void *)pool->ctx, inflight);
        abort();
    }
    pthread_mutex_lock(&pool->lock);
    qatomic_set(&pool->stopping, true);
    pthread_cond_broadcast(&pool->work_cond);
    while (pool->cur_threads > 0) {
        pthread_cond_wait(&pool->exit_cond, &pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    reap_zombies(pool);

    qemu_bh_delete(pool->completion_bh);
    qemu_bh_delete(pool->flush_bh);
    while (pool->free_elems) {
        ThreadPoolElement *elem = pool->free_elems;

        pool->free_elems = elem->done_next;
        free(elem);
    }
    pthread_cond_destroy(&pool->exit_cond);
    pthread_cond_destroy(&pool->work_cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}
