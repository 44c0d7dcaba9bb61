/*
 * Coroutine core: create, enter, yield, terminate, the stack pool and the
 * sanitizer annotations around each switch.
 *
 * Semantics follow QEMU's util/qemu-coroutine.c.  Enter runs a local FIFO
 * of coroutines starting with the target; when one yields or terminates,
 * the coroutines it woke meanwhile (its co_queue_wakeup) are put at the
 * front, so wake-up chains run depth-first in this loop instead of
 * recursing on the C stack.
 *
 * A finished coroutine keeps its stack and its backend context: its
 * coroutine_main_loop() simply calls the next entry function when the
 * coroutine is reused, so create+enter+terminate from the pool costs two
 * switches and a few list operations.  The pool is per thread with a
 * shared overflow pool; see "pool" below and docs/coroutines.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coroutine-int.h"
#include "aio-internal.h"

#if CONFIG_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

/* ---- thread-local state ----------------------------------------------- */

/*
 * A coroutine may resume in another thread than the one it yielded in, and
 * a compiler may keep the thread pointer in a register across a call,
 * including across a switch (the problem QEMU's coroutine-tls.h describes).
 * Two defences:
 *
 * - A function that switches and may come back in another thread does no
 *   TLS access after the switch (qemu_coroutine_yield), or does it in a
 *   fresh out-of-line call (coroutine_terminate for coroutine_main_loop's
 *   loop).  The enter loop switches too, but the coroutine it enters always
 *   returns to it in the same thread.
 * - The accessors below are out of line and opaque (asm) so that each call
 *   reads the thread pointer afresh, except on x86-64 without sanitizers:
 *   there plain TLS loads and stores go through %fs every time.  Sanitizer
 *   instrumentation materialises TLS addresses, so it gets the safe form.
 */
#if defined(__x86_64__) && !defined(AIOLOOP_ASAN) && !defined(AIOLOOP_TSAN)
#define CO_TLS_ACCESSOR static inline __attribute__((always_inline))
#define CO_TLS_FENCE() do { } while (0)
#else
#define CO_TLS_ACCESSOR static __attribute__((noinline))
#define CO_TLS_FENCE() __asm__ volatile("" ::: "memory")
#endif

typedef struct LocalPool {
    Coroutine *head;
    unsigned size;
    /* Coroutines created minus terminated in this thread (may go < 0). */
    long in_use;
    /* Highest in_use in the previous and in the current decay window. */
    long peak, window_peak;
    /* local_pool_max(), kept current as the peaks change (release is hot). */
    unsigned max;
    unsigned window_left;
    bool registered;           /* thread-exit hook armed */
} LocalPool;

static AIOLOOP_TLS Coroutine *tls_current;
static AIOLOOP_TLS Coroutine tls_leader;
static AIOLOOP_TLS LocalPool tls_pool;

CO_TLS_ACCESSOR Coroutine *get_current(void)
{
    CO_TLS_FENCE();
    return tls_current;
}

CO_TLS_ACCESSOR void set_current(Coroutine *co)
{
    CO_TLS_FENCE();
    tls_current = co;
}

/* Out of line everywhere: it runs right after a switch (switch_finished). */
static __attribute__((noinline)) Coroutine *get_leader(void)
{
    /* Not a pure function to the optimiser: each call is made. */
    __asm__ volatile("" ::: "memory");
    return &tls_leader;
}

CO_TLS_ACCESSOR LocalPool *get_local_pool(void)
{
    CO_TLS_FENCE();
    return &tls_pool;
}

static Coroutine *leader_init(void)
{
    Coroutine *leader = get_leader();

    leader->is_leader = true;
#if CONFIG_COROUTINE_UCONTEXT
    /* The thread's own stack is running: it is resumed with siglongjmp. */
    leader->uc_started = true;
#endif
    QSIMPLEQ_INIT(&leader->co_queue_wakeup);
#ifdef AIOLOOP_TSAN
    leader->tsan_fiber = __tsan_get_current_fiber();
#endif
    set_current(leader);
    return leader;
}

static inline Coroutine *self_or_leader(void)
{
    Coroutine *self = get_current();

    return likely(self) ? self : leader_init();
}

/* ---- stacks ------------------------------------------------------------- */

/*
 * The pool's slow paths (mapping, the shared pool, trimming): kept out of
 * line so that create and terminate, which run per coroutine, save fewer
 * registers.
 */
#define COLD __attribute__((noinline, cold))

#define STACK_SIZE_DEFAULT (1u << 20)
#define STACK_SIZE_MIN (16u << 10)
#define STACK_SIZE_MAX ((size_t)1 << 30)

static size_t stack_size_setting = STACK_SIZE_DEFAULT;  /* atomic */
static uint64_t stats_stack_allocs;                     /* atomic */
static uint64_t stats_stack_frees;                      /* atomic */

static size_t page_size(void)
{
    static size_t cached;  /* atomic; every thread computes the same value */
    size_t p = qatomic_read(&cached);

    if (unlikely(!p)) {
        p = (size_t)sysconf(_SC_PAGESIZE);
        qatomic_set(&cached, p);
    }
    return p;
}

int aioloop_coroutine_set_stack_size(size_t bytes)
{
    size_t page = page_size();

    if (bytes < STACK_SIZE_MIN || bytes > STACK_SIZE_MAX) {
        return -EINVAL;
    }
    qatomic_set(&stack_size_setting, (bytes + page - 1) & ~(page - 1));
    return 0;
}

size_t aioloop_coroutine_get_stack_size(void)
{
    return qatomic_read(&stack_size_setting);
}

uint64_t coroutine_stats_stack_allocs(void)
{
    return qatomic_read(&stats_stack_allocs);
}

uint64_t coroutine_stats_stack_frees(void)
{
    return qatomic_read(&stats_stack_frees);
}

/*
 * One mapping per coroutine: a PROT_NONE guard page at the bottom (an
 * overflow faults instead of overwriting memory), the stack, then the
 * Coroutine itself in the page(s) above the stack.  No malloc.
 */
static COLD Coroutine *stack_alloc(size_t ssize)
{
    size_t page = page_size();
    size_t hdr = (sizeof(Coroutine) + page - 1) & ~(page - 1);
    size_t map_size = page + ssize + hdr;
    char *map;
    Coroutine *co;

    map = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) {
        error_report("qemu_coroutine_create: cannot map a %zu-byte coroutine "
                     "stack: %s", map_size, strerror(errno));
        abort();
    }
    if (mprotect(map, page, PROT_NONE) < 0) {
        error_report("qemu_coroutine_create: cannot protect the stack guard "
                     "page: %s", strerror(errno));
        abort();
    }
#ifdef AIOLOOP_ASAN
    /*
     * The kernel may hand back the range of a stack unmapped earlier, whose
     * shadow still holds the redzones of the frames that were suspended on
     * it: start clean.
     */
    __asan_unpoison_memory_region(map, map_size);
#endif
    co = (Coroutine *)(map + page + ssize);
    co->map = map;
    co->map_size = map_size;
    co->stack = map + page;
    co->stack_size = ssize;
#ifdef AIOLOOP_TSAN
    co->tsan_fiber = __tsan_create_fiber(0);
#endif
#if CONFIG_VALGRIND_H
    co->valgrind_stack_id =
        VALGRIND_STACK_REGISTER(co->stack, (char *)co->stack + ssize);
#endif
    co_backend_init(co);
    qatomic_inc(&stats_stack_allocs);
    return co;
}

static COLD void stack_free(Coroutine *co)
{
    void *map = co->map;
    size_t map_size = co->map_size;

#ifdef AIOLOOP_TSAN
    __tsan_destroy_fiber(co->tsan_fiber);
#endif
#if CONFIG_VALGRIND_H
    VALGRIND_STACK_DEREGISTER(co->valgrind_stack_id);
#endif
    qatomic_inc(&stats_stack_frees);
#ifdef AIOLOOP_ASAN
    /*
     * And leave it clean: the kernel may give this range to an mmap()
     * ASan does not see (liburing's rings), whose memory would then look
     * like a stack redzone.
     */
    __asan_unpoison_memory_region(map, map_size);
#endif
    munmap(map, map_size);
}

/* ---- pool ----------------------------------------------------------------
 *
 * Each thread keeps finished coroutines on a private list (no lock, no
 * atomic).  Its limit follows demand: max(peak, window peak) * 5/4 + 128,
 * where the peak is the most coroutines this thread had alive at once in
 * the last window of 65536 terminations.  So 1000 coroutines created and
 * destroyed in a loop are recycled from the second round on, and a burst
 * that is over is trimmed after a window.
 *
 * What a thread cannot keep goes in batches of POOL_BATCH to the shared
 * pool (one mutex, taken once per batch); a thread whose list is empty
 * takes a batch from there before mapping new stacks.  The shared pool
 * holds SHARED_POOL_MIN coroutines plus qemu_coroutine_inc_pool_size()
 * additions plus one per stack mapped for lack of a pooled one (demand,
 * halved at the end of every thread's window), all bounded by
 * pool_hard_cap: each pooled stack is two VMAs (stack and
 * guard), and QEMU hit vm.max_map_count with too large a pool.
 */
#define POOL_BATCH 64u
#define LOCAL_POOL_MIN (2 * POOL_BATCH)
#define SHARED_POOL_MIN 1024u
#define POOL_WINDOW 65536u

static struct {
    pthread_mutex_t lock;
    Coroutine *batches;        /* linked by the head's co_scheduled_next */
    unsigned size;             /* pooled coroutines (lock) */
    unsigned extra;            /* inc_pool_size additions (atomic) */
    unsigned demand;           /* stacks mapped on a miss (atomic) */
} shared_pool = { .lock = PTHREAD_MUTEX_INITIALIZER };

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_key_t pool_key;
static unsigned pool_hard_cap;

static void local_pool_flush(void *opaque);

static void pool_init(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long max_map = 65530;

    if (f) {
        if (fscanf(f, "%ld", &max_map) != 1) {
            max_map = 65530;
        }
        fclose(f);
    }
    /* Leave 5000 mappings to the rest of the process, as QEMU does. */
    pool_hard_cap = max_map > 5000 ? (unsigned)((max_map - 5000) / 2) : 0;
    if (pthread_key_create(&pool_key, local_pool_flush) != 0) {
        error_report("coroutine pool: pthread_key_create failed");
        abort();
    }
}

void qemu_coroutine_inc_pool_size(unsigned int additional_pool_size)
{
    __atomic_fetch_add(&shared_pool.extra, additional_pool_size,
                       __ATOMIC_RELAXED);
}

void qemu_coroutine_dec_pool_size(unsigned int removing_pool_size)
{
    unsigned old = qatomic_read(&shared_pool.extra);
    unsigned new_;

    do {
        new_ = old > removing_pool_size ? old - removing_pool_size : 0;
    } while (!__atomic_compare_exchange_n(&shared_pool.extra, &old, new_,
                                          true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
}

static unsigned shared_pool_max(void)
{
    unsigned long m = (unsigned long)SHARED_POOL_MIN +
                      qatomic_read(&shared_pool.extra) +
                      qatomic_read(&shared_pool.demand);

    return m < pool_hard_cap ? (unsigned)m : pool_hard_cap;
}

static unsigned local_pool_max(const LocalPool *lp)
{
    long peak = MAX(lp->peak, lp->window_peak);
    unsigned long m = LOCAL_POOL_MIN + (unsigned long)MAX(peak, 0) * 5 / 4;

    return m < pool_hard_cap ? (unsigned)m : pool_hard_cap;
}

/* Detach up to POOL_BATCH coroutines from @lp as one list. */
static Coroutine *local_pool_take_batch(LocalPool *lp)
{
    Coroutine *head = lp->head, *tail = head;
    unsigned n = 1;

    while (n < POOL_BATCH && tail->pool_next) {
        tail = tail->pool_next;
        n++;
    }
    lp->head = tail->pool_next;
    tail->pool_next = NULL;
    lp->size -= n;
    return head;
}

static void free_list(Coroutine *co)
{
    while (co) {
        Coroutine *next = co->pool_next;

        stack_free(co);
        co = next;
    }
}

static unsigned list_len(const Coroutine *co)
{
    unsigned n = 0;

    for (; co; co = co->pool_next) {
        n++;
    }
    return n;
}

/* Give a list to the shared pool, or free it if the pool is full. */
static void shared_pool_put(Coroutine *batch)
{
    unsigned n = list_len(batch);

    pthread_mutex_lock(&shared_pool.lock);
    if (shared_pool.size + n <= shared_pool_max()) {
        QSLIST_NEXT(batch, co_scheduled_next) = shared_pool.batches;
        qatomic_set(&shared_pool.batches, batch);
        shared_pool.size += n;
        batch = NULL;
    }
    pthread_mutex_unlock(&shared_pool.lock);
    free_list(batch);
}

/*
 * A thread's decay window ended: halve the demand credit and free what the
 * shared pool holds beyond its (new) capacity, so that the stacks of a
 * burst that is over do not stay mapped forever.  Racy updates of demand
 * only make the heuristic a little less exact.
 */
static COLD void shared_pool_decay(void)
{
    Coroutine *to_free = NULL;

    qatomic_set(&shared_pool.demand, qatomic_read(&shared_pool.demand) / 2);
    pthread_mutex_lock(&shared_pool.lock);
    while (shared_pool.size > shared_pool_max() && shared_pool.batches) {
        Coroutine *batch = shared_pool.batches;

        qatomic_set(&shared_pool.batches,
                    QSLIST_NEXT(batch, co_scheduled_next));
        shared_pool.size -= list_len(batch);
        QSLIST_NEXT(batch, co_scheduled_next) = to_free;
        to_free = batch;
    }
    pthread_mutex_unlock(&shared_pool.lock);
    while (to_free) {
        Coroutine *next = QSLIST_NEXT(to_free, co_scheduled_next);

        free_list(to_free);
        to_free = next;
    }
}

/* Trim @lp to @max, batches first to the shared pool. */
static COLD void local_pool_trim(LocalPool *lp, unsigned max)
{
    while (lp->size > max) {
        shared_pool_put(local_pool_take_batch(lp));
    }
}

/* Thread exit: hand the thread's pool to the shared pool. */
static void local_pool_flush(void *opaque)
{
    LocalPool *lp = opaque;

    local_pool_trim(lp, 0);
    lp->registered = false;
}

/* First pool use in this thread: arm the thread-exit flush. */
static COLD void local_pool_register(LocalPool *lp)
{
    pthread_once(&pool_once, pool_init);
    pthread_setspecific(pool_key, lp);
    lp->registered = true;
    lp->window_left = POOL_WINDOW;
    lp->max = local_pool_max(lp);  /* pool_hard_cap is known from now on */
}

/* The local list is empty: take a batch from the shared pool. */
static COLD void local_pool_refill(LocalPool *lp)
{
    Coroutine *batch;

    if (unlikely(!lp->registered)) {
        local_pool_register(lp);
    }
    /* Unlocked peek: a stale answer only costs a mapping or a lock. */
    if (!qatomic_read(&shared_pool.batches)) {
        return;
    }
    pthread_mutex_lock(&shared_pool.lock);
    batch = shared_pool.batches;
    if (batch) {
        qatomic_set(&shared_pool.batches,
                    QSLIST_NEXT(batch, co_scheduled_next));
        shared_pool.size -= list_len(batch);
    }
    pthread_mutex_unlock(&shared_pool.lock);
    if (batch) {
        lp->head = batch;
        lp->size = list_len(batch);
    }
}

static Coroutine *coroutine_alloc(void)
{
    LocalPool *lp = get_local_pool();
    size_t ssize = qatomic_read(&stack_size_setting);
    Coroutine *co;

    if (unlikely(++lp->in_use > lp->window_peak)) {
        lp->window_peak = lp->in_use;
        lp->max = local_pool_max(lp);
    }
    for (;;) {
        co = lp->head;
        if (unlikely(!co)) {
            local_pool_refill(lp);
            co = lp->head;
            if (!co) {
                /* A miss: let the shared pool keep one more next time. */
                __atomic_fetch_add(&shared_pool.demand, 1, __ATOMIC_RELAXED);
                return stack_alloc(ssize);
            }
        }
        lp->head = co->pool_next;
        lp->size--;
        if (likely(co->stack_size == ssize)) {
            return co;
        }
        /* Stack size changed since this one was made. */
        stack_free(co);
    }
}

static void coroutine_release(Coroutine *co)
{
    LocalPool *lp = get_local_pool();
    unsigned max;

    if (unlikely(!lp->registered)) {
        local_pool_register(lp);
    }
    lp->in_use--;
    if (unlikely(--lp->window_left == 0)) {
        /* The peak of the window that ends becomes the reference. */
        lp->peak = lp->window_peak;
        lp->window_peak = MAX(lp->in_use, 0);
        lp->window_left = POOL_WINDOW;
        lp->max = local_pool_max(lp);
        local_pool_trim(lp, lp->max);
        shared_pool_decay();
    }
    co->pool_next = lp->head;
    lp->head = co;
    lp->size++;
    max = lp->max;
    if (unlikely(lp->size > max)) {
        /* Some slack, so that the next releases do not trim again. */
        local_pool_trim(lp, max > POOL_BATCH / 2 ? max - POOL_BATCH / 2 : 0);
    }
}

/* ---- switch ------------------------------------------------------------ */

static inline __attribute__((always_inline))
void switch_finished(void *fake_stack_save)
{
#ifdef AIOLOOP_ASAN
    const void *bottom_old;
    size_t size_old;
    Coroutine *leader;

    __sanitizer_finish_switch_fiber(fake_stack_save, &bottom_old, &size_old);
    /*
     * The first switch away from a thread's own stack tells us its bounds,
     * which we need when switching back to it.
     */
    leader = get_leader();
    if (!leader->stack) {
        leader->stack = (void *)bottom_old;
        leader->stack_size = size_old;
    }
#else
    (void)fake_stack_save;
#endif
}

/*
 * Inlined only where the TLS accessors are (see CO_TLS_ACCESSOR): callers
 * must not keep TLS addresses computed before the switch.
 */
#if defined(__x86_64__) && !defined(AIOLOOP_ASAN) && !defined(AIOLOOP_TSAN)
static inline __attribute__((always_inline))
#else
static __attribute__((noinline))
#endif
CoroutineAction qemu_coroutine_switch(Coroutine *from, Coroutine *to,
                                      CoroutineAction action)
{
    void *fake_stack_save = NULL;
    CoroutineAction ret;

    set_current(to);
    ret = co_backend_switch(from, to, action, &fake_stack_save);
    switch_finished(fake_stack_save);
    return ret;
}

#if CO_DIRECT_RETURN
/*
 * Switch from @from, entered directly, to its enterer @to, which runs
 * coroutine_enter_finish(@from, @action) before returning to its caller.
 */
static inline __attribute__((always_inline))
void switch_and_finish(Coroutine *from, Coroutine *to, CoroutineAction action)
{
    set_current(to);
    aioloop_co_switch_finish(&from->sp, to->sp, from, action);
}
#endif

/*
 * Out of line so that its TLS accesses use the thread the coroutine ends
 * in, not the one coroutine_main_loop() started in: the entry function may
 * have moved the coroutine, and a reused coroutine loops back here from
 * wherever it was entered.
 */
static __attribute__((noinline)) void coroutine_terminate(Coroutine *co)
{
#if CO_DIRECT_RETURN
    if (co->yield_finishes) {
        switch_and_finish(co, co->caller, COROUTINE_TERMINATE);
        return;
    }
#endif
    qemu_coroutine_switch(co, co->caller, COROUTINE_TERMINATE);
}

void coroutine_main_loop(Coroutine *co)
{
    switch_finished(NULL);
    for (;;) {
        co->entry(co->entry_arg);
        coroutine_terminate(co);
    }
}

/* ---- API ---------------------------------------------------------------- */

Coroutine *qemu_coroutine_create(CoroutineEntry *entry, void *opaque)
{
    Coroutine *co;

    if (unlikely(!entry)) {
        error_report("qemu_coroutine_create: entry function is NULL");
        abort();
    }
    co = coroutine_alloc();
    co->entry = entry;
    co->entry_arg = opaque;
    QSIMPLEQ_INIT(&co->co_queue_wakeup);
    return co;
}

static void coroutine_delete(Coroutine *co)
{
    if (unlikely(co->locks_held)) {
        error_report("coroutine terminated while holding %zu CoMutex "
                     "lock(s)", co->locks_held);
        abort();
    }
    co->caller = NULL;
    co->ctx = NULL;
    coroutine_release(co);
}

/* Put @src's entries in front of @dst's (QEMU's QSIMPLEQ_PREPEND). */
#define QSIMPLEQ_PREPEND_(dst, src)                                          \
    do {                                                                     \
        if (!QSIMPLEQ_EMPTY(src)) {                                          \
            *(src)->sqh_last = (dst)->sqh_first;                             \
            if (QSIMPLEQ_EMPTY(dst)) {                                       \
                (dst)->sqh_last = (src)->sqh_last;                           \
            }                                                                \
            (dst)->sqh_first = (src)->sqh_first;                             \
            QSIMPLEQ_INIT(src);                                              \
        }                                                                    \
    } while (0)

/*
 * Check that @to may be entered and make @from its caller in @ctx.
 */
static inline __attribute__((always_inline)) void
enter_prepare(AioContext *ctx, Coroutine *from, Coroutine *to)
{
    /*
     * Acquire: read @to before to->scheduled; pairs with the CAS in
     * aio_co_schedule() and qemu_co_sleep().
     */
    const char *scheduled = __atomic_load_n(&to->scheduled, __ATOMIC_ACQUIRE);

    /*
     * Entering a scheduled coroutine would enter it twice, possibly after
     * it terminated and was reused.
     */
    if (unlikely(scheduled)) {
        error_report("qemu_aio_coroutine_enter: Co-routine was already "
                     "scheduled in '%s'", scheduled);
        abort();
    }
    if (unlikely(to->caller)) {
        error_report("qemu_aio_coroutine_enter: Co-routine re-entered "
                     "recursively");
        abort();
    }
    to->caller = from;
    qatomic_set(&to->ctx, ctx);
    /*
     * Store to->ctx before anything the coroutine stores (e.g. putting
     * itself on a wait list); pairs with the acquire in aio_co_wake().
     */
    smp_wmb();
}

/*
 * The enterer's side of a yield or termination of @to (@ret says which),
 * back on the enterer's stack: queue what @to woke in front of @pending,
 * free or move @to.  Returns the next coroutine to enter, or NULL.
 */
static inline __attribute__((always_inline)) Coroutine *
enter_after(Coroutine *to, CoroutineAction ret, CoroutineList *pending)
{
    /* What @to woke runs next, before what was pending already. */
    QSIMPLEQ_PREPEND_(pending, &to->co_queue_wakeup);

    if (ret == COROUTINE_TERMINATE) {
        coroutine_delete(to);
    } else if (unlikely(to->move_to)) {
        AioContext *dst = to->move_to;

        /* @to has yielded: it may run elsewhere from now on. */
        to->move_to = NULL;
        aio_co_schedule(dst, to);
    }
    to = QSIMPLEQ_FIRST(pending);
    if (to) {
        QSIMPLEQ_REMOVE_HEAD(pending, co_queue_next);
    }
    return to;
}

/*
 * Enter @to, then each coroutine woken meanwhile, depth-first, in this one
 * loop: a wake-up chain of any length runs without growing the C stack.
 * Coroutines entered here switch back with their action (they see
 * yield_finishes false) and this loop does the enterer's side.
 */
static void enter_loop(AioContext *ctx, Coroutine *to, CoroutineList *pending)
{
    Coroutine *from = self_or_leader();

    do {
        CoroutineAction ret;

        enter_prepare(ctx, from, to);
#if CO_DIRECT_RETURN
        to->yield_finishes = false;
#endif
        ret = qemu_coroutine_switch(from, to, COROUTINE_ENTER);
        to = enter_after(to, ret, pending);
    } while (to);
}

#if CO_DIRECT_RETURN
/*
 * Run by aioloop_co_switch_finish() on the enterer's stack, when @to,
 * entered directly, yielded with work for its enterer (wake-ups, a move)
 * or terminated; then the enterer's own caller resumes.
 */
void coroutine_enter_finish(Coroutine *to, long ret)
{
    CoroutineList pending = QSIMPLEQ_HEAD_INITIALIZER(pending);
    /* Still the enterer's: only an enter writes it, and deletion clears it. */
    AioContext *ctx = to->ctx;

    to = enter_after(to, (CoroutineAction)ret, &pending);
    if (to) {
        enter_loop(ctx, to, &pending);
    }
}
#endif

/*
 * Inlined into both entry points: qemu_coroutine_enter() jumping to
 * qemu_aio_coroutine_enter() cost C1 (enter+yield) about 1 ns in 15.
 *
 * With CO_DIRECT_RETURN the enter ends in the switch itself, a tail call:
 * the coroutine's yield jumps straight back to our caller, and does the
 * enterer's side first (through coroutine_enter_finish()) when there is
 * one.  No return is executed in between, so none can mispredict; see
 * switch-x86_64.S.
 */
static inline __attribute__((always_inline)) void
coroutine_enter(AioContext *ctx, Coroutine *co)
{
#if CO_DIRECT_RETURN
    Coroutine *from = self_or_leader();

    enter_prepare(ctx, from, co);
    co->yield_finishes = true;
    qemu_coroutine_switch(from, co, COROUTINE_ENTER);
#else
    CoroutineList pending = QSIMPLEQ_HEAD_INITIALIZER(pending);

    enter_loop(ctx, co, &pending);
#endif
}

void qemu_aio_coroutine_enter(AioContext *ctx, Coroutine *co)
{
    coroutine_enter(ctx, co);
}

void qemu_coroutine_enter(Coroutine *co)
{
    coroutine_enter(aio_tls_current_ctx, co);
}

void qemu_coroutine_enter_if_inactive(Coroutine *co)
{
    if (!qemu_coroutine_entered(co)) {
        qemu_coroutine_enter(co);
    }
}

void coroutine_fn qemu_coroutine_yield(void)
{
    Coroutine *self = get_current();
    Coroutine *to = self ? self->caller : NULL;

    if (unlikely(!to)) {
        error_report("qemu_coroutine_yield: Co-routine is yielding to no one "
                     "(called outside coroutine context)");
        abort();
    }
    self->caller = NULL;
#if CO_DIRECT_RETURN
    if (self->yield_finishes &&
        unlikely(!QSIMPLEQ_EMPTY(&self->co_queue_wakeup) || self->move_to)) {
        /* Our enterer has wake-ups or a move to do once we are out. */
        switch_and_finish(self, to, COROUTINE_YIELD);
        return;
    }
#endif
    /*
     * With CO_DIRECT_RETURN a tail call: nothing of ours runs once we are
     * resumed, and a direct enterer's caller resumes right away.
     */
    qemu_coroutine_switch(self, to, COROUTINE_YIELD);
}

Coroutine *qemu_coroutine_self(void)
{
    return self_or_leader();
}

bool qemu_in_coroutine(void)
{
    Coroutine *self = get_current();

    return self && self->caller;
}

bool qemu_coroutine_entered(Coroutine *co)
{
    return co->caller;
}

AioContext *qemu_coroutine_get_aio_context(Coroutine *co)
{
    return qatomic_read(&co->ctx);
}
