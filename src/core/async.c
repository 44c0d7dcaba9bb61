/*
 * AioContext lifecycle, bottom halves and the notify protocol.
 *
 * Bottom halves follow QEMU's design: scheduling ORs flags into the BH and,
 * if the BH was not already queued, pushes it onto a lock-free list with
 * one CAS, then calls aio_notify().  aio_bh_poll() takes the whole list with
 * one exchange ("a slice"); slices of nested aio_bh_poll() calls are chained
 * so that an inner call finishes the outer call's BHs first.
 *
 * aio_notify() writes the context's eventfd only when notify_me says a
 * poller may be blocking; otherwise it just sets "notified", which a busy
 * poller sees without a syscall.  The protocol is model-checked in
 * tests/model/aio-notify.pml and explained in docs/design.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aio-internal.h"
#include "thread-pool-internal.h"

#include "../util/alloc.h"
#include "../util/sanitizer.h"
#include "../util/under-valgrind.h"

/*
 * Two ways to schedule a BH.  From any thread: the atomic flags below, and
 * the lock-free list ctx->bh_list ("remote").  From a callback that the
 * BH's own context is dispatching (so in its home thread): bh->local and
 * the home-thread list ctx->bh_local, with plain loads and stores and no
 * read-modify-write at all, which is what a BH rescheduling itself or a
 * handler kicking a BH does on the hot path.  A BH may sit on both lists at
 * once; it runs once for both, and whichever list lets go of it last frees
 * it when it is deleted (or one-shot).
 *
 * A signal handler in the home thread is the one "other" user of the local
 * state: during dispatch it sees aio_tls_dispatch_ctx == ctx too.  The home
 * thread therefore pushes onto and takes bh_local only inside a
 * local_state_begin() / local_state_end() window, see there, and orders
 * its other accesses so that a handler may come in between any two.
 */
enum {
    BH_PENDING = 1 << 0,   /* queued on the remote list (or a slice's) */
    BH_SCHEDULED = 1 << 1, /* the callback should run */
    BH_DELETED = 1 << 2,   /* free at the next aio_bh_poll() */
    BH_ONESHOT = 1 << 3,   /* free after running */
    BH_IDLE = 1 << 4,      /* may wait up to 10 ms, not progress */
};

/* An idle BH runs within this long even if nothing else happens. */
#define IDLE_BH_TIMEOUT_NS (10 * 1000 * 1000)

struct QEMUBH {
    /*
     * What the home thread reads of a BH another thread scheduled, first
     * and together: usually one cache line to pull from the scheduler's CPU.
     */
    QSLIST_ENTRY(QEMUBH) next;       /* bh_list or a slice's remote list */
    unsigned flags;                  /* atomic */
    /*
     * BH_LOCAL_*: scheduled from the home thread's dispatch.  Relaxed
     * atomic: the home thread writes it, qemu_bh_cancel() may clear it from
     * any thread.
     */
    unsigned local;
    QEMUBHFunc *cb;
    void *opaque;
    AioContext *ctx;
    MemReentrancyGuard *reentrancy_guard;
    bool in_local_list;              /* home thread */
    QSLIST_ENTRY(QEMUBH) local_next; /* bh_local or a slice's local list */
    QLIST_ENTRY(QEMUBH) all;         /* ctx->bh_all (not one-shots) */
    const char *name;
};

enum {
    BH_LOCAL_SCHEDULED = 1 << 0,
    BH_LOCAL_IDLE = 1 << 1,
};

AIOLOOP_TLS AioContext *aio_tls_current_ctx;
AIOLOOP_TLS int aio_tls_tid;

/*
 * The context whose aio_poll() is dispatching callbacks in this thread.  A
 * BH scheduled (or a timer armed) from such a callback needs no wake-up:
 * the loop recomputes its timeout before it can block again.
 */
AIOLOOP_TLS AioContext *aio_tls_dispatch_ctx;

static int current_tid(void)
{
    if (unlikely(!aio_tls_tid)) {
        aio_tls_tid = (int)gettid();
    }
    return aio_tls_tid;
}

int64_t aio_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- notify protocol -------------------------------------------------- */

void aio_notify(AioContext *ctx)
{
    /*
     * Write e.g. the BH flags before ctx->notified.  Pairs with smp_mb() in
     * aio_notify_accept().
     */
    smp_wmb();
    qatomic_set(&ctx->notified, true);

    /*
     * Write ctx->notified (and the BH list) before reading notify_me.
     * Pairs with smp_mb() in aio_poll() after notify_me is incremented.
     * The event must be written whenever notify_me is set, even if
     * "notified" already was: see BUG2 in tests/model/aio-notify.pml.
     */
    smp_mb();
    if (qatomic_read(&ctx->notify_me)) {
        qatomic_set(&ctx->notify_ts, aio_clock_ns());
        event_notifier_set(&ctx->notifier);
        __atomic_fetch_add(&ctx->stats.wakeups, 1, __ATOMIC_RELAXED);
    }
}

void aio_notify_accept(AioContext *ctx)
{
    aio_notify_accept_inline(ctx);
}

static void aio_timerlist_notify(void *opaque, QEMUClockType type)
{
    AioContext *ctx = opaque;

    (void)type;
    if (aio_tls_dispatch_ctx != ctx) {
        aio_notify(ctx);
    }
}

static void aio_context_notifier_cb(EventNotifier *e)
{
    AioContext *ctx = container_of(e, AioContext, notifier);

    /* Returns at once if the io_uring monitor drained it (e->drained). */
    if (ctx->notifier_blocking) {
        event_notifier_test_and_clear_nowait(e);
    } else {
        event_notifier_test_and_clear(e);
    }
}

static bool aio_context_notifier_poll(void *opaque)
{
    AioContext *ctx = container_of(opaque, AioContext, notifier);

    /*
     * No need for load-acquire: aio_notify_accept() has the barrier, and the
     * poll phase only uses this to stop spinning.
     */
    return qatomic_read(&ctx->notified);
}

static void aio_context_notifier_poll_ready(EventNotifier *e)
{
    /* Nothing to do: aio_notify_accept() clears "notified". */
    (void)e;
}

/* ---- bottom halves ---------------------------------------------------- */

/* Out of line: the local path of qemu_bh_schedule() then needs no frame. */
static __attribute__((noinline)) void aio_bh_enqueue(QEMUBH *bh,
                                                     unsigned new_flags)
{
    AioContext *ctx = bh->ctx;
    unsigned old_flags;

    /*
     * The seq_cst RMW orders the caller's writes (what the callback will
     * read) before the BH becomes visible, and loads ctx before the BH can
     * run and be freed by the home thread.
     */
    old_flags = qatomic_fetch_or(&bh->flags, BH_PENDING | new_flags);
    if (!(old_flags & BH_PENDING)) {
        QSLIST_INSERT_HEAD_ATOMIC(&ctx->bh_list, bh, next);
    }
    /* From our own dispatch (a delete, say) the loop will look anyway. */
    if (aio_tls_dispatch_ctx != ctx) {
        aio_notify(ctx);
    }
}

/*
 * Open a window in which the home thread read-modify-writes, with plain
 * loads and stores, what a signal handler's local schedule does too: the
 * bh_local head and a BH's in_local_list (pushing a BH, taking the list).
 * A handler that interrupted such an update and took the local path would
 * interleave its own with ours: a BH it pushed between our read of the
 * bh_local head and our write of it is lost, with in_local_list set so
 * that it never runs again, and a BH both of us push ends up linked to
 * itself.  Hiding the dispatch context makes such a handler take the
 * atomic path (aio_bh_enqueue()), which is safe against anything the home
 * thread does, so qemu_bh_schedule() stays async-signal-safe and still
 * costs no atomic read-modify-write.
 *
 * The signal fences are compiler barriers only: they keep the accesses
 * inside the window, and the NULL store from being dropped as dead.  The
 * handler runs in this thread, which sees its own accesses in program
 * order, so no CPU fence is needed.
 */
static inline AioContext *local_state_begin(void)
{
    AioContext *saved = aio_tls_dispatch_ctx;

    aio_tls_dispatch_ctx = NULL;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    return saved;
}

static inline void local_state_end(AioContext *saved)
{
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    aio_tls_dispatch_ctx = saved;
}

/*
 * Schedule from a callback dispatched by the BH's own context: the loop
 * recomputes its timeout before it can block again, so no wake-up, and the
 * home thread alone uses these fields, so no atomic read-modify-write.
 */
static void aio_bh_schedule_local(QEMUBH *bh, unsigned local)
{
    AioContext *saved = local_state_begin();

    /* OR, as the flags do: an idle BH scheduled again stays idle. */
    local |= __atomic_load_n(&bh->local, __ATOMIC_RELAXED);
    __atomic_store_n(&bh->local, local, __ATOMIC_RELAXED);
    if (!bh->in_local_list) {
        bh->in_local_list = true;
        QSLIST_INSERT_HEAD(&bh->ctx->bh_local, bh, local_next);
    }
    local_state_end(saved);
}

static bool aio_bh_dispatching_own(QEMUBH *bh)
{
    return aio_tls_dispatch_ctx == bh->ctx;
}

/*
 * Home thread: take the first BH of a slice's local list; *local gets its
 * state.  No window is needed: a signal handler never touches a slice, and
 * it pushes the BH (rewriting local_next) only once in_local_list is
 * clear, so local_next is read before.  A handler's schedule that lands
 * before we clear bh->local is run by our caller right after (the entry it
 * may have pushed will not run it again); one that lands after stays
 * queued for the next aio_bh_poll().
 */
static QEMUBH *aio_bh_dequeue_local(BHList *head, unsigned *local)
{
    QEMUBH *bh = QSLIST_FIRST(head);

    if (!bh) {
        return NULL;
    }
    QSLIST_REMOVE_HEAD(head, local_next);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    bh->in_local_list = false;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    *local = __atomic_load_n(&bh->local, __ATOMIC_RELAXED);
    if (*local) {
        __atomic_store_n(&bh->local, 0, __ATOMIC_RELAXED);
    }
    return bh;
}

/* Only the home thread removes BHs from a list, one consumer at a time. */
static QEMUBH *aio_bh_dequeue(BHList *head, unsigned *flags)
{
    QEMUBH *bh = QSLIST_FIRST(head);

    if (!bh) {
        return NULL;
    }
    /*
     * Another CPU wrote it last: fetch the line for writing now, or the
     * read of ->next gets it shared and the fetch_and below pays a second
     * transfer to upgrade it.
     */
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)bh));
#else
    __builtin_prefetch(bh, 1);
#endif
    QSLIST_REMOVE_HEAD(head, next);

    /*
     * The fetch_and's barrier makes sure the removal completes before
     * BH_PENDING is cleared, so a concurrent aio_bh_enqueue() that sees
     * PENDING clear re-inserts the BH into a consistent list.
     */
    *flags = qatomic_fetch_and(&bh->flags,
                               ~(BH_PENDING | BH_SCHEDULED | BH_IDLE));
    return bh;
}

/*
 * Each thread keeps up to BH_CACHE_MAX freed BHs for its next ones.  A
 * one-shot BH sent to another thread is freed there, and that thread's
 * next one-shot reuses it, so message traffic between two threads stops
 * going through malloc() and free(): their chunk headers and per-thread
 * bookkeeping were extra cache lines crossing between the CPUs with every
 * message (W2 split CPUs, polling on: 0.49 -> 0.35 us per round trip, and
 * 1.42-1.65 -> 1.05-1.12 us while the machine was slow).  A thread that
 * only frees keeps BH_CACHE_MAX and hands the rest to free().
 */
enum { BH_CACHE_UNREGISTERED, BH_CACHE_ON, BH_CACHE_OFF };

static AIOLOOP_TLS QEMUBH *bh_cache; /* linked by next, the first field */
static AIOLOOP_TLS unsigned bh_cache_len;
static AIOLOOP_TLS unsigned char bh_cache_state;
static pthread_once_t bh_cache_once = PTHREAD_ONCE_INIT;
static pthread_key_t bh_cache_key;
static bool bh_cache_key_ok;

/* What ASan poisons of a cached BH: all but the link. */
_Static_assert(offsetof(QEMUBH, next) == 0, "the cache links BHs by next");
#define BH_CACHE_BODY_SIZE (sizeof(QEMUBH) - sizeof(QEMUBH *))

static inline void *bh_cache_body(QEMUBH *bh)
{
    return (char *)bh + sizeof(QEMUBH *);
}

/* Thread exit: give the cache back, and cache nothing from now on. */
static void bh_cache_drain(void *unused)
{
    QEMUBH *bh;

    (void)unused;
    bh_cache_state = BH_CACHE_OFF;
    while ((bh = bh_cache)) {
        AIOLOOP_ASAN_UNPOISON(bh_cache_body(bh), BH_CACHE_BODY_SIZE);
        bh_cache = QSLIST_NEXT(bh, next);
        free(bh);
    }
    bh_cache_len = 0;
}

static void bh_cache_key_init(void)
{
    bh_cache_key_ok = pthread_key_create(&bh_cache_key, bh_cache_drain) == 0;
}

/* Whether this thread may cache; registers the exit hook the first time. */
static bool bh_cache_usable(void)
{
    if (likely(bh_cache_state == BH_CACHE_ON)) {
        return true;
    }
    if (bh_cache_state == BH_CACHE_OFF) {
        return false;
    }
    pthread_once(&bh_cache_once, bh_cache_key_init);
    /* The key's value only has to be non-NULL for the destructor to run. */
    if (bh_cache_key_ok && pthread_setspecific(bh_cache_key, &bh_cache) == 0) {
        bh_cache_state = BH_CACHE_ON;
        return true;
    }
    bh_cache_state = BH_CACHE_OFF;
    return false;
}

unsigned aio_bh_cache_len(void)
{
    return bh_cache_len;
}

static void aio_bh_free(QEMUBH *bh)
{
    AioContext *ctx = bh->ctx;

    if (QLIST_IS_INSERTED(bh, all)) {
        pthread_mutex_lock(&ctx->bh_all_lock);
        QLIST_REMOVE(bh, all);
        pthread_mutex_unlock(&ctx->bh_all_lock);
    }
    if (bh_cache_len < BH_CACHE_MAX && bh_cache_usable()) {
        QSLIST_NEXT(bh, next) = bh_cache;
        /* A use after free still trips AddressSanitizer (but the link). */
        AIOLOOP_ASAN_POISON(bh_cache_body(bh), BH_CACHE_BODY_SIZE);
        bh_cache = bh;
        bh_cache_len++;
        return;
    }
    free(bh);
}

static QEMUBH *bh_alloc(AioContext *ctx, QEMUBHFunc *cb, void *opaque,
                        const char *name, MemReentrancyGuard *guard)
{
    QEMUBH *bh = bh_cache;

    if (bh) {
        AIOLOOP_ASAN_UNPOISON(bh_cache_body(bh), BH_CACHE_BODY_SIZE);
        bh_cache = QSLIST_NEXT(bh, next);
        bh_cache_len--;
        memset(bh, 0, sizeof(*bh));
    } else {
        bh = aio_alloc0(sizeof(*bh), "aio_bh_new");
    }
    bh->ctx = ctx;
    bh->cb = cb;
    bh->opaque = opaque;
    bh->name = name ? name : "(unnamed)";
    bh->reentrancy_guard = guard;
    return bh;
}

void aio_bh_schedule_oneshot_full(AioContext *ctx, QEMUBHFunc *cb,
                                  void *opaque, const char *name)
{
    QEMUBH *bh = bh_alloc(ctx, cb, opaque, name, NULL);

    if (aio_bh_dispatching_own(bh)) {
        bh->flags = BH_ONESHOT; /* not published yet */
        aio_bh_schedule_local(bh, BH_LOCAL_SCHEDULED);
        return;
    }
    aio_bh_enqueue(bh, BH_SCHEDULED | BH_ONESHOT);
}

QEMUBH *aio_bh_new_full(AioContext *ctx, QEMUBHFunc *cb, void *opaque,
                        const char *name, MemReentrancyGuard *reentrancy_guard)
{
    QEMUBH *bh = bh_alloc(ctx, cb, opaque, name, reentrancy_guard);

    pthread_mutex_lock(&ctx->bh_all_lock);
    QLIST_INSERT_HEAD(&ctx->bh_all, bh, all);
    pthread_mutex_unlock(&ctx->bh_all_lock);
    return bh;
}

void aio_bh_call(QEMUBH *bh)
{
    bool last_engaged_in_io = false;
    /* Copy the guard pointer: the callback may free the BH. */
    MemReentrancyGuard *reentrancy_guard = bh->reentrancy_guard;

    if (reentrancy_guard) {
        last_engaged_in_io = reentrancy_guard->engaged_in_io;
        reentrancy_guard->engaged_in_io = true;
    }
    bh->cb(bh->opaque);
    if (reentrancy_guard) {
        reentrancy_guard->engaged_in_io = last_engaged_in_io;
    }
}

/*
 * What to do with @bh, taken off a home-thread list with @local its local
 * state: run it (once, for its local and any remote request), as idle, and
 * free it afterwards?
 */
static inline void bh_local_verdict(QEMUBH *bh, unsigned local, bool *run,
                                    bool *idle, bool *free_it)
{
    unsigned flags = qatomic_read(&bh->flags);

    if (likely(local == BH_LOCAL_SCHEDULED && flags == 0)) {
        /* The common case: scheduled here only, nothing else to weigh. */
        *run = true;
        *idle = false;
        *free_it = false;
        return;
    }
    *run = (local & BH_LOCAL_SCHEDULED) && !(flags & BH_DELETED);
    *idle = local & BH_LOCAL_IDLE;
    if (*run && (flags & BH_SCHEDULED)) {
        /* Also scheduled from elsewhere: both ask for one run. */
        qatomic_fetch_and(&bh->flags, ~(BH_SCHEDULED | BH_IDLE));
        *idle = *idle && (flags & BH_IDLE);
    }
    /* A remote list still holding it frees it (PENDING). */
    *free_it = (flags & (BH_DELETED | BH_ONESHOT)) && !(flags & BH_PENDING);
}

/* Returns 1 for progress: a run, idle BHs not counted. */
static inline int bh_run(QEMUBH *bh, bool run, bool idle, bool free_it,
                         uint64_t *runs)
{
    int ret = 0;

    if (run) {
        ret = !idle;
        (*runs)++;
        aio_bh_call(bh);
    }
    if (free_it) {
        aio_bh_free(bh);
    }
    return ret;
}

/*
 * The general case: take everything scheduled into a slice on
 * ctx->bh_slice_list and run it, outer calls' slices first.  @saved is
 * what local_state_begin() returned; the window is still open.
 */
static __attribute__((noinline)) int aio_bh_poll_slices(AioContext *ctx,
                                                        QEMUBH *remote,
                                                        AioContext *saved)
{
    BHListSlice slice;
    BHListSlice *s;
    int ret = 0;
    uint64_t runs = 0;

    slice.bh_list = ctx->bh_local;
    QSLIST_INIT(&ctx->bh_local);
    local_state_end(saved);
    QSLIST_INIT(&slice.bh_list_remote);
    if (remote) {
        /* Pairs with QSLIST_INSERT_HEAD_ATOMIC() in aio_bh_enqueue(). */
        QSLIST_MOVE_ATOMIC(&slice.bh_list_remote, &ctx->bh_list);
    }
    QSIMPLEQ_INSERT_TAIL(&ctx->bh_slice_list, &slice, next);

    /*
     * The outermost slice comes first: a nested call finishes the BHs of
     * the calls it is nested in before its own.
     */
    while ((s = QSIMPLEQ_FIRST(&ctx->bh_slice_list))) {
        QEMUBH *bh;
        unsigned flags, local;
        bool run, idle, free_it;

        bh = aio_bh_dequeue_local(&s->bh_list, &local);
        if (bh) {
            bh_local_verdict(bh, local, &run, &idle, &free_it);
        } else if ((bh = aio_bh_dequeue(&s->bh_list_remote, &flags))) {
            local = __atomic_load_n(&bh->local, __ATOMIC_RELAXED);
            run = ((flags & BH_SCHEDULED) || (local & BH_LOCAL_SCHEDULED)) &&
                  !(flags & BH_DELETED);
            /* Idle only if no non-idle request is among the two. */
            idle = !(((flags & BH_SCHEDULED) && !(flags & BH_IDLE)) ||
                     ((local & BH_LOCAL_SCHEDULED) && !(local & BH_LOCAL_IDLE)));
            if (run && local) {
                /*
                 * Its local entry, if still queued, must not run it again
                 * (a signal handler's schedule since the load is run now).
                 */
                __atomic_store_n(&bh->local, 0, __ATOMIC_RELAXED);
            }
            /* A local list still holding it frees it. */
            free_it = (flags & (BH_DELETED | BH_ONESHOT)) &&
                      !bh->in_local_list;
        } else {
            QSIMPLEQ_REMOVE_HEAD(&ctx->bh_slice_list, next);
            continue;
        }
        ret |= bh_run(bh, run, idle, free_it, &runs);
    }
    if (runs) {
        qatomic_set(&ctx->stats.bh_runs, ctx->stats.bh_runs + runs);
    }
    return ret;
}

/* aio_bh_poll()'s single local BH, any case but the plainest. */
static __attribute__((noinline)) int aio_bh_run_one(AioContext *ctx,
                                                    QEMUBH *bh, bool run,
                                                    bool idle, bool free_it)
{
    if (run) {
        /* Counted first: less to keep across the call. */
        qatomic_set(&ctx->stats.bh_runs, ctx->stats.bh_runs + 1);
        aio_bh_call(bh);
    }
    if (free_it) {
        aio_bh_free(bh);
    }
    return run && !idle;
}

int aio_bh_poll(AioContext *ctx)
{
    QEMUBH *remote;
    QEMUBH *only;
    AioContext *saved;

    /*
     * Nothing new and no outer slice left unfinished: skip the exchange.
     * A BH enqueued right after this load has set "notified" (or is our
     * own, from this thread's dispatch), so the next aio_poll() won't block.
     */
    remote = __atomic_load_n(&ctx->bh_list.slh_first, __ATOMIC_ACQUIRE);
    if (!remote && QSLIST_EMPTY(&ctx->bh_local) &&
        QSIMPLEQ_EMPTY(&ctx->bh_slice_list)) {
        return 0;
    }

    /* A BH that a signal handler pushed in between would be lost. */
    saved = local_state_begin();
    only = QSLIST_FIRST(&ctx->bh_local);
    if (!remote && only && !QSLIST_NEXT(only, local_next) &&
        QSIMPLEQ_EMPTY(&ctx->bh_slice_list)) {
        BHList one = { only };
        unsigned local;
        bool run, idle, free_it;

        /*
         * One BH scheduled from the last dispatch, nothing else (a BH
         * rescheduling itself, a handler kicking one): once it is taken,
         * no slice would hold anything for a nested aio_bh_poll() to
         * finish, so skip the slice.
         */
        QSLIST_INIT(&ctx->bh_local);
        local_state_end(saved);
        aio_bh_dequeue_local(&one, &local);
        bh_local_verdict(only, local, &run, &idle, &free_it);
        if (likely(run && !idle && !free_it && !only->reentrancy_guard)) {
            /*
             * The W1 chain's case: nothing to do after the callback but
             * return 1, so nothing is kept across the call and the fast
             * path needs no stack frame.  (Without a guard aio_bh_call()
             * is just the call, but calling it here re-reads the guard
             * after the callback and brings the frame back.)
             */
            qatomic_set(&ctx->stats.bh_runs, ctx->stats.bh_runs + 1);
            only->cb(only->opaque);
            return 1;
        }
        return aio_bh_run_one(ctx, only, run, idle, free_it);
    }
    return aio_bh_poll_slices(ctx, remote, saved);
}

void qemu_bh_schedule_idle(QEMUBH *bh)
{
    if (aio_bh_dispatching_own(bh)) {
        aio_bh_schedule_local(bh, BH_LOCAL_SCHEDULED | BH_LOCAL_IDLE);
        return;
    }
    aio_bh_enqueue(bh, BH_SCHEDULED | BH_IDLE);
}

void qemu_bh_schedule(QEMUBH *bh)
{
    if (aio_bh_dispatching_own(bh)) {
        aio_bh_schedule_local(bh, BH_LOCAL_SCHEDULED);
        return;
    }
    aio_bh_enqueue(bh, BH_SCHEDULED);
}

void qemu_bh_cancel(QEMUBH *bh)
{
    qatomic_fetch_and(&bh->flags, ~BH_SCHEDULED);
    __atomic_store_n(&bh->local, 0, __ATOMIC_RELAXED);
}

void qemu_bh_delete(QEMUBH *bh)
{
    if (!bh) {
        return;
    }
    if (qatomic_read(&bh->flags) & BH_DELETED) {
        error_report("qemu_bh_delete: BH '%s' deleted twice", bh->name);
        abort();
    }
    aio_bh_enqueue(bh, BH_DELETED);
}

/* Like bh_list_timeout(), for a home-thread list. */
static int64_t bh_local_timeout(BHList *head)
{
    int64_t timeout = -1;
    QEMUBH *bh;

    QSLIST_FOREACH(bh, head, local_next) {
        unsigned local = __atomic_load_n(&bh->local, __ATOMIC_RELAXED);

        if ((local & BH_LOCAL_SCHEDULED) &&
            !(qatomic_read(&bh->flags) & BH_DELETED)) {
            if (!(local & BH_LOCAL_IDLE)) {
                return 0;
            }
            timeout = IDLE_BH_TIMEOUT_NS;
        }
    }
    return timeout;
}

static int64_t bh_list_timeout(BHList *head)
{
    int64_t timeout = -1;
    QEMUBH *bh;

    /*
     * Other threads only push at the head, and the home thread is the only
     * one removing, so walking from an acquire load of the head is safe.
     */
    for (bh = __atomic_load_n(&head->slh_first, __ATOMIC_ACQUIRE); bh;
         bh = QSLIST_NEXT(bh, next)) {
        unsigned flags = qatomic_read(&bh->flags);

        if ((flags & (BH_SCHEDULED | BH_DELETED)) == BH_SCHEDULED) {
            if (!(flags & BH_IDLE)) {
                return 0;
            }
            timeout = IDLE_BH_TIMEOUT_NS;
        }
    }
    return timeout;
}

bool aio_bh_scheduled(AioContext *ctx)
{
    BHListSlice *s;

    /* Scheduled, idle or not: the lists' timeouts say it (-1 = none). */
    if (bh_list_timeout(&ctx->bh_list) >= 0 ||
        bh_local_timeout(&ctx->bh_local) >= 0) {
        return true;
    }
    /* Slices of aio_bh_poll() calls this dispatch is nested in. */
    QSIMPLEQ_FOREACH(s, &ctx->bh_slice_list, next) {
        if (bh_local_timeout(&s->bh_list) >= 0 ||
            bh_list_timeout(&s->bh_list_remote) >= 0) {
            return true;
        }
    }
    return false;
}

static __attribute__((noinline)) int64_t compute_timeout(AioContext *ctx)
{
    BHListSlice *s;
    int64_t timeout;
    int64_t deadline;

    /*
     * Home thread only: bh_local and the slices are its own.  bh_local
     * first: it is where a BH rescheduling itself, or kicked by a handler,
     * waits.
     */
    timeout = bh_local_timeout(&ctx->bh_local);
    if (timeout == 0) {
        return 0;
    }
    timeout = qemu_soonest_timeout(timeout, bh_list_timeout(&ctx->bh_list));
    if (timeout == 0) {
        return 0;
    }
    QSIMPLEQ_FOREACH(s, &ctx->bh_slice_list, next) {
        int64_t t = qemu_soonest_timeout(bh_local_timeout(&s->bh_list),
                                         bh_list_timeout(&s->bh_list_remote));

        if (t == 0) {
            return 0;
        }
        timeout = qemu_soonest_timeout(timeout, t);
    }
    deadline = timerlistgroup_deadline_ns(&ctx->tlg);
    if (deadline == 0) {
        return 0;
    }
    return qemu_soonest_timeout(timeout, deadline);
}

int64_t aio_compute_timeout(AioContext *ctx)
{
    QEMUBH *first = QSLIST_FIRST(&ctx->bh_local);

    /* A BH scheduled here, plainly (the W1 chain): no frame to set up. */
    if (first && !(qatomic_read(&first->flags) & BH_DELETED) &&
        __atomic_load_n(&first->local, __ATOMIC_RELAXED) ==
            BH_LOCAL_SCHEDULED) {
        return 0;
    }
    return compute_timeout(ctx);
}

/* ---- current context and home thread ---------------------------------- */

AioContext *qemu_get_current_aio_context(void)
{
    return aio_tls_current_ctx;
}

void qemu_set_current_aio_context(AioContext *ctx)
{
    if (!ctx) {
        AioContext *old = aio_tls_current_ctx;

        /* Let another thread take over the context after this one exits. */
        if (old) {
            int me = current_tid();
            __atomic_compare_exchange_n(&old->home_tid, &me, 0, false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
        }
        aio_tls_current_ctx = NULL;
        return;
    }
    if (aio_tls_current_ctx) {
        error_report("qemu_set_current_aio_context: this thread already runs "
                     "AioContext %p; call it once per thread",
                     (void *)aio_tls_current_ctx);
        abort();
    }
    aio_context_bind_home(ctx, "qemu_set_current_aio_context");
    aio_tls_current_ctx = ctx;
}

void aio_context_bind_home_slow(AioContext *ctx, const char *caller)
{
    int me = current_tid();
    int home = qatomic_read(&ctx->home_tid);

    if (home == me) {
        return;
    }
    if (home == 0) {
        home = 0;
        if (__atomic_compare_exchange_n(&ctx->home_tid, &home, me, false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            return;
        }
    }
    error_report("%s: called from thread %d, but AioContext %p belongs to "
                 "home thread %d; only the home thread may run its loop",
                 caller, me, (void *)ctx, home);
    abort();
}

bool aio_context_is_home(AioContext *ctx)
{
    return qatomic_read(&ctx->home_tid) == current_tid();
}

bool in_aio_context_home_thread(AioContext *ctx)
{
    return ctx == aio_tls_current_ctx ||
           qatomic_read(&ctx->home_tid) == current_tid();
}

/* ---- lifecycle -------------------------------------------------------- */

/* The monitors AIOLOOP_FDMON may name; poll needs no setup. */
static const struct {
    const char *name;
    int (*setup)(AioContext *ctx);
} fdmon_backends[] = {
    { "poll", NULL },
    { "epoll", fdmon_epoll_setup },
    { "io_uring", fdmon_io_uring_setup },
};

static int fdmon_select(AioContext *ctx, Error **errp)
{
    const char *env = getenv("AIOLOOP_FDMON");
    int ret;

    ctx->fdmon_ops = &fdmon_poll_ops;
    if (env && *env) {
        ctx->fdmon_forced = true;
        for (size_t i = 0; i < ARRAY_SIZE(fdmon_backends); i++) {
            if (strcmp(env, fdmon_backends[i].name) != 0) {
                continue;
            }
            ret = fdmon_backends[i].setup ? fdmon_backends[i].setup(ctx) : 0;
            if (ret < 0) {
                error_setg_errno(errp, -ret, "AIOLOOP_FDMON=%s: cannot set "
                                 "up %s", env, fdmon_backends[i].name);
            }
            return ret;
        }
        error_setg(errp, "AIOLOOP_FDMON=%s: unknown fd monitor "
                   "(expected poll, epoll or io_uring)", env);
        return -EINVAL;
    }
    /*
     * io_uring first; if the kernel refuses (EPERM in containers, ENOSYS),
     * stay on poll, which upgrades itself to epoll once 64 fds are watched.
     * Not under valgrind: it runs one thread at a time and lets no other
     * run while one waits in io_uring_enter() (3.19), so a context blocked
     * there would never be woken by another thread; AIOLOOP_FDMON=io_uring
     * still forces it.
     */
    if (!getenv("AIOLOOP_NO_IO_URING") && !UNDER_VALGRIND()) {
        fdmon_io_uring_setup(ctx);
    }
    return 0;
}

AioContext *aio_context_new(Error **errp)
{
    pthread_mutexattr_t attr;
    AioContext *ctx;
    int ret;

    if (posix_memalign((void **)&ctx, AIO_CACHELINE, sizeof(*ctx)) != 0) {
        error_setg(errp, "Failed to allocate AioContext");
        return NULL;
    }
    memset(ctx, 0, sizeof(*ctx));
    ctx->refcnt = 1;
    ctx->epollfd = -1;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&ctx->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    pthread_mutex_init(&ctx->bh_all_lock, NULL);
    pthread_mutex_init(&ctx->list_mutex, NULL);
    QLIST_INIT(&ctx->aio_handlers);
    QLIST_INIT(&ctx->deleted_aio_handlers);
    QLIST_INIT(&ctx->poll_aio_handlers);
    QLIST_INIT(&ctx->bh_all);
    QSLIST_INIT(&ctx->bh_list);
    QSLIST_INIT(&ctx->bh_local);
    QSLIST_INIT(&ctx->submit_list);
    QSIMPLEQ_INIT(&ctx->bh_slice_list);
    QSIMPLEQ_INIT(&ctx->cqe_ready);
    ctx->thread_pool_min = 0;
    ctx->thread_pool_max = 64;
    timerlistgroup_init(&ctx->tlg, aio_timerlist_notify, ctx);

    ret = event_notifier_init(&ctx->notifier, false);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to initialize event notifier");
        ctx->notifier.initialized = false;
        goto fail;
    }
    if (fdmon_select(ctx, errp) < 0) {
        goto fail;
    }
    /*
     * For aio_notifier_read(), the wake-up of a context with nothing but
     * BHs and timers to wait for.
     */
    ctx->notifier_blocking = event_notifier_make_blocking(&ctx->notifier);
    ctx->co_schedule_bh = aio_bh_new(ctx, co_schedule_bh_cb, ctx);
    aio_set_event_notifier_drained(ctx, &ctx->notifier,
                                   aio_context_notifier_cb,
                                   aio_context_notifier_poll,
                                   aio_context_notifier_poll_ready);
    return ctx;

fail:
    aio_context_unref(ctx);
    return NULL;
}

void aio_context_ref(AioContext *ctx)
{
    qatomic_inc(&ctx->refcnt);
}

static void bh_leaked(QEMUBH *bh)
{
    error_report("aio_context_unref: BH '%s' leaked, aborting (every BH "
                 "must be freed with qemu_bh_delete() before its AioContext)",
                 bh->name);
    abort();
}

static void aio_context_finalize(AioContext *ctx)
{
    QEMUBH *bh;
    unsigned flags;

    /* Drained by aio_context_unref(): the engines have nothing in flight. */
    aio_block_cleanup(ctx);

    if (!QSIMPLEQ_EMPTY(&ctx->bh_slice_list)) {
        error_report("aio_context_unref: last reference dropped while "
                     "aio_bh_poll() runs on AioContext %p", (void *)ctx);
        abort();
    }
    if (ctx->co_schedule_bh) {
        if (qatomic_read(&ctx->scheduled_coroutines.slh_first)) {
            error_report("aio_context_unref: last reference dropped while "
                         "coroutines are scheduled on AioContext %p",
                         (void *)ctx);
            abort();
        }
        qemu_bh_delete(ctx->co_schedule_bh);
    }
    /* Stops the workers and deletes the pool's BH before the leak check. */
    thread_pool_free(ctx->thread_pool);
    /*
     * A pending BH that is not deleted (one-shots included) is lost work.
     * A deleted or one-shot BH is freed by the last list that holds it, as
     * in aio_bh_poll(): here if it is not PENDING on bh_list too (say, it
     * was scheduled locally and then deleted after its remote entry had
     * been taken), else by the bh_list loop below.  Any other BH is on
     * bh_all, and reported there.
     */
    while ((bh = QSLIST_FIRST(&ctx->bh_local))) {
        QSLIST_REMOVE_HEAD(&ctx->bh_local, local_next);
        bh->in_local_list = false;
        flags = qatomic_read(&bh->flags);
        if ((flags & BH_ONESHOT) && (bh->local & BH_LOCAL_SCHEDULED)) {
            bh_leaked(bh);
        }
        if ((flags & (BH_DELETED | BH_ONESHOT)) && !(flags & BH_PENDING)) {
            aio_bh_free(bh);
        }
    }
    while ((bh = aio_bh_dequeue(&ctx->bh_list, &flags))) {
        if (!(flags & BH_DELETED)) {
            bh_leaked(bh);
        }
        aio_bh_free(bh);
    }
    bh = QLIST_FIRST(&ctx->bh_all);
    if (bh) {
        bh_leaked(bh);
    }

    if (ctx->fdmon_ops) {
        aio_set_event_notifier(ctx, &ctx->notifier, NULL, NULL, NULL);
        aio_context_destroy(ctx);
    }
    aio_handlers_cleanup(ctx);
    timerlistgroup_deinit(&ctx->tlg);
    event_notifier_cleanup(&ctx->notifier);
    pthread_mutex_destroy(&ctx->list_mutex);
    pthread_mutex_destroy(&ctx->bh_all_lock);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

/*
 * The last reference is gone but block requests are in flight: their
 * coroutines wait to be resumed in @ctx.  Run its loop here until they
 * have been, holding a temporary reference so that the loop's own
 * ref/unref pairs (aio_co_schedule()) cannot finalize it under us.  Whoever
 * dropped the last reference may no longer use the context, so its loop is
 * ours now: take over the home binding (the old home thread is gone or
 * done with it).  Returns false if a resumed coroutine kept a reference:
 * the context lives on, and is finalized when that one is dropped.
 */
static bool aio_context_drain_last(AioContext *ctx)
{
    if (likely(!ctx->block_stats.inflight)) {
        return true;
    }
    qatomic_set(&ctx->refcnt, 1);
    qatomic_set(&ctx->home_tid, current_tid());
    aio_block_drain(ctx);
    return qatomic_fetch_sub(&ctx->refcnt, 1) == 1;
}

void aio_context_unref(AioContext *ctx)
{
    if (!ctx) {
        return;
    }
    if (qatomic_fetch_sub(&ctx->refcnt, 1) == 1 &&
        aio_context_drain_last(ctx)) {
        aio_context_finalize(ctx);
    }
}

void aio_context_acquire(AioContext *ctx)
{
    pthread_mutex_lock(&ctx->lock);
}

void aio_context_release(AioContext *ctx)
{
    pthread_mutex_unlock(&ctx->lock);
}

void aio_context_setup(AioContext *ctx)
{
    Error *local_err = NULL;

    if (ctx->fdmon_ops != &fdmon_poll_ops || ctx->epoll_enabled) {
        return;
    }
    if (fdmon_select(ctx, &local_err) < 0) {
        ctx->fdmon_ops = &fdmon_poll_ops;
        error_report_err(local_err);
    }
}

void aio_context_destroy(AioContext *ctx)
{
    if (ctx->fdmon_ops->destroy) {
        ctx->fdmon_ops->destroy(ctx);
    }
    ctx->fdmon_ops = &fdmon_poll_ops;
}

/* ---- parameters ------------------------------------------------------- */

void aio_context_set_poll_params(AioContext *ctx, int64_t max_ns,
                                 int64_t grow, int64_t shrink, Error **errp)
{
    if (max_ns < 0) {
        error_setg(errp, "poll-max-ns must be >= 0, got %" PRId64, max_ns);
        return;
    }
    if (grow < 0) {
        error_setg(errp, "poll-grow must be >= 0, got %" PRId64, grow);
        return;
    }
    if (shrink < 0) {
        error_setg(errp, "poll-shrink must be >= 0, got %" PRId64, shrink);
        return;
    }
    qatomic_set(&ctx->poll_max_ns, max_ns);
    qatomic_set(&ctx->poll_grow, grow);
    qatomic_set(&ctx->poll_shrink, shrink);
    /* The home thread resets the per-handler windows when it sees this. */
    __atomic_fetch_add(&ctx->poll_params_gen, 1, __ATOMIC_RELEASE);
    aio_notify(ctx);
}

void aio_context_set_aio_params(AioContext *ctx, int64_t max_batch)
{
    qatomic_set(&ctx->aio_max_batch, max_batch);
    aio_notify(ctx);
}

void aio_context_set_thread_pool_params(AioContext *ctx, int64_t min,
                                        int64_t max, Error **errp)
{
    if (min > max || max <= 0 || min < 0 || min > INT_MAX || max > INT_MAX) {
        error_setg(errp, "bad thread-pool-min/thread-pool-max values: "
                   "min %" PRId64 ", max %" PRId64 " (need 0 <= min <= max, "
                   "0 < max <= INT_MAX)", min, max);
        return;
    }
    qatomic_set(&ctx->thread_pool_min, min);
    qatomic_set(&ctx->thread_pool_max, max);
    /* Pairs with smp_mb() in aio_get_thread_pool(). */
    smp_mb();
    thread_pool_update_params(qatomic_load_acquire(&ctx->thread_pool), ctx);
}

/* ---- timers and misc -------------------------------------------------- */

QEMUTimerListGroup *aio_get_timerlistgroup(AioContext *ctx)
{
    return &ctx->tlg;
}

QEMUTimer *aio_timer_new_with_attrs(AioContext *ctx, QEMUClockType type,
                                    int scale, int attributes,
                                    QEMUTimerCB *cb, void *opaque)
{
    return timer_new_full(&ctx->tlg, type, scale, attributes, cb, opaque);
}

QEMUTimer *aio_timer_new(AioContext *ctx, QEMUClockType type, int scale,
                         QEMUTimerCB *cb, void *opaque)
{
    return timer_new_full(&ctx->tlg, type, scale, 0, cb, opaque);
}

void aio_timer_init_with_attrs(AioContext *ctx, QEMUTimer *ts,
                               QEMUClockType type, int scale, int attributes,
                               QEMUTimerCB *cb, void *opaque)
{
    timer_init_full(ts, &ctx->tlg, type, scale, attributes, cb, opaque);
}

void aio_timer_init(AioContext *ctx, QEMUTimer *ts, QEMUClockType type,
                    int scale, QEMUTimerCB *cb, void *opaque)
{
    timer_init_full(ts, &ctx->tlg, type, scale, 0, cb, opaque);
}

const char *aioloop_context_fdmon_name(AioContext *ctx)
{
    /* The home thread may switch monitors (poll <-> epoll) at any time. */
    return qatomic_read(&ctx->fdmon_ops)->name;
}

void aioloop_context_get_stats(AioContext *ctx, AioloopContextStats *stats)
{
    stats->iterations = qatomic_read(&ctx->stats.iterations);
    stats->bh_runs = qatomic_read(&ctx->stats.bh_runs);
    stats->fd_dispatches = qatomic_read(&ctx->stats.fd_dispatches);
    stats->poll_hits = qatomic_read(&ctx->stats.poll_hits);
    stats->poll_misses = qatomic_read(&ctx->stats.poll_misses);
    stats->blocked_ns = qatomic_read(&ctx->stats.blocked_ns);
    stats->wakeups = qatomic_read(&ctx->stats.wakeups);
}
