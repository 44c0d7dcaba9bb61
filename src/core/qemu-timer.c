/*
 * Timers and clocks: QEMU's util/qemu-timer.c behaviour on a 4-ary heap.
 *
 * Heap.  Each QEMUTimerList keeps its pending timers in an implicit 4-ary
 * min-heap ordered by (expire time, arm sequence).  The sequence number is
 * taken from a per-list counter every time a timer is armed, so timers with
 * equal expire times run first-armed-first, as in QEMU's sorted list.  Each
 * timer stores its heap position (heap_index), so re-arming a timer
 * anywhere in the heap is O(log n): it re-keys the timer in place and sifts
 * it up or down, half the work of a delete plus an insert.  Deleting is
 * O(1) amortized (see "Lazy cancellation").
 * QEMU's sorted list costs O(n) per insert (37 us per arm at 10,000
 * timers).
 *
 * Heap slots are {expire, timer pointer} pairs (16 bytes) and the expire
 * time lives only there, not in the timer.  With a million timers nearly
 * every access to a random timer is a cache (and, in a VM, TLB) miss; with
 * the key beside the pointer a comparison reads the array only, so moving
 * one level costs one miss instead of two dependent ones, and a sift-down
 * reads four children from one cache line (the array is offset so that
 * sibling groups are line-aligned).  Keeping the key out of the timer makes
 * QEMUTimer 40 bytes, so timer plus slot stays near 56-64 bytes.  The price:
 * timer_expire_time_ns() and timer_expired() take the list lock; the hot
 * timer_pending() stays lock-free (it reads heap_index).
 *
 * Why 4-ary.  A d-ary heap is log2(d) times shallower than a binary one.
 * Sift-up, the common path for arming and deleting (most nodes are leaves,
 * and random deadlines rarely climb), gets cheaper with every level removed;
 * sift-down, used when the earliest timer is popped, compares d children per
 * level, and four 16-byte slots fill exactly one cache line.  libev made
 * the same choice.
 *
 * Locking.  Every list has one pthread mutex guarding its heap, its arm
 * counter and the timers' heap positions, so any thread may arm or delete
 * a timer with one uncontended lock.  The callbacks run in the owner's
 * thread with the mutex dropped, so they may arm, delete or free any timer,
 * their own included.  Two fields are also read lock-free and therefore
 * written with atomic stores under the lock: a timer's heap_index (for
 * timer_pending() and the timer_del() fast path) and the list's cached
 * earliest deadline head_expire (for the deadline and "anything due?"
 * checks the event loop makes on every iteration, which take no lock).
 *
 * Lazy cancellation.  timer_del() of a timer in the middle of the heap does
 * not repair the heap: it empties the timer's slot and marks the timer
 * idle, O(1).  The slot keeps its sort key (its expire time, and the arm
 * order in place of the pointer: slot_make_empty), so the heap order holds
 * without touching anything else.  The timer is as detached as after an
 * eager removal: no slot points to it, so it may be freed or re-armed at
 * once (re-arming takes a new slot).  Empty slots are dropped when they
 * reach the top, which happens at once whenever the head is removed, so
 * heap[0] is always a live timer and the cached deadline stays exact.
 * When empty slots outnumber live ones the heap is compacted and rebuilt
 * bottom-up, O(n) after at least n/2 cancellations, so empty slots never
 * take more than half of the array.  Why: with many timers each heap
 * repair costs a few cache misses on random lines, and the common life of
 * a timeout is to be cancelled long before it is due; this way the caller
 * writes one line it has just read and one slot, and the repair work is
 * batched where it streams through memory.
 *
 * Notify rule.  When arming makes a timer the earliest of its list with a
 * deadline earlier than the list had, the list's notify callback runs
 * (after the mutex is dropped): that is the only change that can make a
 * sleeping event loop's timeout too long.  Nothing else notifies, so
 * re-arming a timer that is not the earliest (the common case with many
 * timers) makes no system call.  QEMU also notifies when the earliest timer
 * moves later; that only costs the loop a spurious wake-up, so we skip it.
 *
 * No-re-run rule.  A callback that re-arms a timer for "now" (or earlier)
 * must not make the same timerlist_run_timers() call run it again, or a
 * fake clock that never advances would loop forever.  The call remembers
 * the arm counter when it starts; a due timer whose sequence is newer was
 * armed during this call, so it is moved aside to a small "deferred" array
 * and put back into the heap when the call ends (or when a nested call
 * starts, so that a nested event loop still sees and runs it).  Deferral is
 * O(log n) like any other move and only happens in that corner case.
 *
 * Clocks.  REALTIME and HOST read CLOCK_MONOTONIC / CLOCK_REALTIME through
 * the vDSO.  VIRTUAL and VIRTUAL_RT read VM time: a raw monotonic source
 * minus the time VIRTUAL spent disabled.  The raw sources (replaceable for
 * tests) and the pause bookkeeping sit behind one sequence lock, so reading
 * a clock takes no lock; writers are serialised by clocks_lock.  Disabling
 * a clock waits until no timer callback of that clock runs anywhere, like
 * QEMU's timers_done_ev, using a per-clock count of running passes.
 */
#include <aioloop/main-loop.h>
#include <aioloop/timer.h>

#include "timer-internal.h"
#include "../util/atomic.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* heap_index values besides a heap position. */
#define IDX_NONE     UINT32_MAX   /* not pending */
#define IDX_DEFERRED 0x80000000u  /* | slot in tl->deferred */
#define HEAP_MAX     0x7fffffffu  /* positions must stay below IDX_DEFERRED */
#define HEAP_MIN_CAP 16u
#define HEAP_PAD     3u           /* spare slots for alignment */
#define PREFAULT_MIN (64 * 1024) /* below this the pages are likely resident */

/* QEMUTimer.order = arm sequence << ORDER_SHIFT | attributes. */
#define ORDER_SHIFT 8
#define ATTR_MASK   0xffu
#define KNOWN_ATTRS QEMU_TIMER_ATTR_EXTERNAL

/* A heap slot: the expire time is kept here, next to the pointer, so that
 * comparisons need not touch the timers. */
typedef struct HeapEnt {
    int64_t expire;            /* ns, >= 0 */
    QEMUTimer *t;              /* or an empty slot's tag: slot_empty() */
} HeapEnt;

struct QEMUTimerList {
    /*
     * Earliest expire time of the list's pending timers (the heap's head or
     * a deferred timer), -1 if none.  Written under lock, read lock-free.
     * May be earlier than the true earliest after a deferred timer is
     * deleted: that costs a spurious wake-up at worst.  First, so that
     * timerlistgroup_any_pending() (timer-internal.h) can read it inline.
     */
    int64_t head_expire;
    pthread_mutex_t lock;
    HeapEnt *heap;             /* lock: inside heap_base, see heap_resize */
    void *heap_base;           /* lock: the allocation */
    uint32_t n;                /* lock: slots in use in the heap */
    uint32_t ndead;            /* lock: of which empty (cancelled) */
    uint32_t cap;              /* lock: slots in heap[] */
    uint64_t next_seq;         /* lock: arm counter */
    /* Due timers held back by running passes (see "No-re-run rule"). */
    HeapEnt *deferred;         /* lock; deleted entries have t == NULL */
    uint32_t ndeferred;        /* lock */
    uint32_t deferred_cap;     /* lock */
    int64_t deferred_min;      /* lock: <= every deferred expire time */
    uint32_t passes;           /* lock: timerlist_run_timers() in progress */
    QEMUClockType type;        /* constant */
    QEMUTimerListNotifyCB *notify_cb; /* constant */
    void *notify_opaque;       /* constant */
    /* Lists of the same clock, for qemu_clock_enable/notify. clocks_lock. */
    QEMUTimerList *next;
    QEMUTimerList **pprev;
};

_Static_assert(offsetof(QEMUTimerList, head_expire) == 0,
               "timerlistgroup_any_pending() reads head_expire at offset 0");

typedef struct Clock {
    /* Atomic; changed under clocks_lock.  Seq-cst where it pairs with
     * running (see clock_pass_begin and qemu_clock_enable). */
    bool enabled;
    /* Atomic: run_timers passes of this clock that may run callbacks. */
    unsigned running;
    /* Atomic: threads in qemu_clock_enable(false) waiting for running == 0. */
    unsigned waiters;
    QEMUTimerList *lists;      /* clocks_lock */
} Clock;

static Clock clocks[QEMU_CLOCK_MAX] = {
    [QEMU_CLOCK_REALTIME] = { .enabled = true },
    [QEMU_CLOCK_VIRTUAL] = { .enabled = true },
    [QEMU_CLOCK_HOST] = { .enabled = true },
    [QEMU_CLOCK_VIRTUAL_RT] = { .enabled = true },
};

/* Serialises clock configuration changes and guards Clock.lists. */
static pthread_mutex_t clocks_lock = PTHREAD_MUTEX_INITIALIZER;
/* Where qemu_clock_enable(false) sleeps until running drops to 0. */
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;

/* Raw time sources; VIRTUAL and VIRTUAL_RT share SRC_VM. */
enum { SRC_MONO, SRC_HOST, SRC_VM, SRC_MAX };

/*
 * Clock configuration behind a sequence lock: writers hold clocks_lock and
 * make seq odd while they change the fields; readers retry when seq was odd
 * or changed.  Every field is accessed atomically; qemu_clock_get_ns()
 * explains the ordering.
 */
static struct {
    unsigned seq;
    int64_t (*fn[SRC_MAX])(void *opaque);
    void *opaque[SRC_MAX];
    bool vm_stopped;       /* VIRTUAL disabled: VM time frozen */
    int64_t vm_offset;     /* running: VM time = raw - vm_offset */
    int64_t vm_frozen;     /* stopped: VM time */
} cfg;

/*
 * Bit (1 << type) is set while this thread is inside a timer callback of
 * clock type (possibly nested), so that qemu_clock_enable(type, false) can
 * refuse to wait for itself.
 */
static __thread unsigned running_clocks;

static QEMUTimerListGroup *main_loop_tlg;

static const char *const clock_names[QEMU_CLOCK_MAX] = {
    [QEMU_CLOCK_REALTIME] = "QEMU_CLOCK_REALTIME",
    [QEMU_CLOCK_VIRTUAL] = "QEMU_CLOCK_VIRTUAL",
    [QEMU_CLOCK_HOST] = "QEMU_CLOCK_HOST",
    [QEMU_CLOCK_VIRTUAL_RT] = "QEMU_CLOCK_VIRTUAL_RT",
};

/*
 * Programming errors that cannot be reported to the caller.  The library
 * has no error_report() of its own yet, so this writes to stderr directly.
 */
static void __attribute__((noreturn, cold, format(printf, 1, 2)))
die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("aioloop: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    abort();
}

static inline void check_clock(const char *fn, QEMUClockType type)
{
    if (unlikely((unsigned)type >= QEMU_CLOCK_MAX)) {
        die("%s: invalid clock type %d", fn, (int)type);
    }
}

static inline QEMUTimerList *check_timer(const char *fn, const QEMUTimer *ts)
{
    if (unlikely(!ts)) {
        die("%s: timer is NULL", fn);
    }
    if (unlikely(!ts->timer_list)) {
        die("%s: timer %p is not initialised (timer_init*/timer_new* not "
            "called, or timer_deinit already called)", fn, (const void *)ts);
    }
    return ts->timer_list;
}

static inline int64_t mul_sat(int64_t a, int64_t b)
{
    int64_t r;

    if (unlikely(__builtin_mul_overflow(a, b, &r))) {
        return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX;
    }
    return r;
}

/*
 * Clock reading
 */

static inline int src_of(QEMUClockType type)
{
    switch (type) {
    case QEMU_CLOCK_REALTIME:
        return SRC_MONO;
    case QEMU_CLOCK_HOST:
        return SRC_HOST;
    default:
        return SRC_VM;
    }
}

static inline int64_t raw_default(int src)
{
    struct timespec ts;

    /* glibc serves both from the vDSO: no system call. */
    clock_gettime(src == SRC_HOST ? CLOCK_REALTIME : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * (int64_t)1000000000 + ts.tv_nsec;
}

static inline int64_t raw_read(int src, int64_t (*fn)(void *), void *opaque)
{
    return fn ? fn(opaque) : raw_default(src);
}

int64_t qemu_clock_get_ns(QEMUClockType type)
{
    int src;

    check_clock("qemu_clock_get_ns", type);
    src = src_of(type);
    for (;;) {
        /* Pairs with the store-release that ends a write section. */
        unsigned s = __atomic_load_n(&cfg.seq, __ATOMIC_ACQUIRE);
        int64_t (*fn)(void *);
        void *opaque;
        int64_t val;

        if (unlikely(s & 1)) {
            continue;
        }
        /*
         * Field loads are acquire so that the seq re-check below cannot be
         * reordered before them; a field stored by a writer that has begun
         * since makes the re-check see the odd seq.  No fences: they cost
         * the same on x86 and TSan does not model them.
         */
        fn = __atomic_load_n(&cfg.fn[src], __ATOMIC_ACQUIRE);
        opaque = __atomic_load_n(&cfg.opaque[src], __ATOMIC_ACQUIRE);
        if (src != SRC_VM) {
            val = raw_read(src, fn, opaque);
        } else if (__atomic_load_n(&cfg.vm_stopped, __ATOMIC_ACQUIRE)) {
            val = __atomic_load_n(&cfg.vm_frozen, __ATOMIC_ACQUIRE);
        } else {
            /*
             * Read the raw time inside the section: a resume that happens
             * after the read makes us retry, so VM time never appears to
             * step back below the frozen value.
             */
            val = raw_read(src, fn, opaque) -
                  __atomic_load_n(&cfg.vm_offset, __ATOMIC_ACQUIRE);
        }
        if (likely(__atomic_load_n(&cfg.seq, __ATOMIC_RELAXED) == s)) {
            return val;
        }
    }
}

/*
 * Sequence-lock write side; clocks_lock held.  Fields are written with
 * cfg_set() (store-release, so each is ordered after the odd seq).
 */
#define cfg_set(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELEASE)

static void cfg_write_begin(void)
{
    /*
     * A seq-cst read-modify-write, i.e. a full barrier in practice: the raw
     * clock read that vm_set_stopped() does next cannot move before it.
     */
    __atomic_fetch_add(&cfg.seq, 1, __ATOMIC_SEQ_CST);
}

static void cfg_write_end(void)
{
    /* Pairs with readers' load-acquire of seq. */
    __atomic_store_n(&cfg.seq, cfg.seq + 1, __ATOMIC_RELEASE);
}

/* Freeze or resume VM time.  clocks_lock held. */
static void vm_set_stopped(bool stopped)
{
    int64_t raw;

    cfg_write_begin();
    raw = raw_read(SRC_VM, cfg.fn[SRC_VM], cfg.opaque[SRC_VM]);
    if (stopped) {
        cfg_set(cfg.vm_frozen, raw - cfg.vm_offset);
    } else {
        /* Resume exactly where we froze: no jump. */
        cfg_set(cfg.vm_offset, raw - cfg.vm_frozen);
    }
    cfg_set(cfg.vm_stopped, stopped);
    cfg_write_end();
}

void aioloop_clock_set_source(QEMUClockType type,
                              int64_t (*now_ns)(void *opaque), void *opaque)
{
    int src;
    int64_t raw = 0;

    check_clock("aioloop_clock_set_source", type);
    src = src_of(type);
    if (src == SRC_VM) {
        /* Outside the write section: now_ns may read other clocks. */
        raw = raw_read(src, now_ns, opaque);
    }
    pthread_mutex_lock(&clocks_lock);
    cfg_write_begin();
    cfg_set(cfg.fn[src], now_ns);
    cfg_set(cfg.opaque[src], opaque);
    if (src == SRC_VM) {
        /* VM time restarts from the new source's reading. */
        cfg_set(cfg.vm_offset, 0);
        cfg_set(cfg.vm_frozen, raw);
    }
    cfg_write_end();
    pthread_mutex_unlock(&clocks_lock);
}

/*
 * Clock enable/disable
 */

/*
 * A pass of timerlist_run_timers() that is about to run callbacks registers
 * in clock->running and then re-checks enabled; qemu_clock_enable() clears
 * enabled and then checks running.  Both sides are seq-cst, so either the
 * pass sees the clock disabled or the disabler sees the pass and waits.
 */
static bool clock_pass_begin(Clock *c)
{
    __atomic_fetch_add(&c->running, 1, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&c->enabled, __ATOMIC_SEQ_CST);
}

static void clock_pass_end(Clock *c)
{
    /*
     * Seq-cst decrement then waiters check, against the waiter's seq-cst
     * waiters increment then running check: one of us sees the other.
     */
    if (__atomic_sub_fetch(&c->running, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&c->waiters, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&done_lock);
        pthread_cond_broadcast(&done_cond);
        pthread_mutex_unlock(&done_lock);
    }
}

static void clock_wait_idle(Clock *c)
{
    if (__atomic_load_n(&c->running, __ATOMIC_SEQ_CST) == 0) {
        return;
    }
    pthread_mutex_lock(&done_lock);
    __atomic_fetch_add(&c->waiters, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&c->running, __ATOMIC_SEQ_CST) != 0) {
        pthread_cond_wait(&done_cond, &done_lock);
    }
    __atomic_fetch_sub(&c->waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&done_lock);
}

/* clocks_lock held. */
static void notify_clock_locked(Clock *c)
{
    for (QEMUTimerList *tl = c->lists; tl; tl = tl->next) {
        timerlist_notify(tl);
    }
}

void qemu_clock_enable(QEMUClockType type, bool enabled)
{
    Clock *c;

    check_clock("qemu_clock_enable", type);
    c = &clocks[type];
    if (!enabled && (running_clocks & (1u << type))) {
        die("qemu_clock_enable: disabling %s from inside one of its own timer "
            "callbacks would deadlock (it waits for that callback to "
            "return); disable the clock from outside its timers, e.g. from "
            "a bottom half", clock_names[type]);
    }
    pthread_mutex_lock(&clocks_lock);
    if (qatomic_read(&c->enabled) != enabled) {
        if (type == QEMU_CLOCK_VIRTUAL) {
            vm_set_stopped(!enabled);
        }
        __atomic_store_n(&c->enabled, enabled, __ATOMIC_SEQ_CST);
        if (enabled) {
            notify_clock_locked(c);
        }
    }
    pthread_mutex_unlock(&clocks_lock);
    /*
     * Wait with clocks_lock dropped: a callback we wait for may create or
     * free timer lists.  Wait even if the clock was already disabled, so
     * that on return no callback of this clock is running.
     */
    if (!enabled) {
        clock_wait_idle(c);
    }
}

bool qemu_clock_is_enabled(QEMUClockType type)
{
    check_clock("qemu_clock_is_enabled", type);
    return qatomic_read(&clocks[type].enabled);
}

void qemu_clock_notify(QEMUClockType type)
{
    check_clock("qemu_clock_notify", type);
    pthread_mutex_lock(&clocks_lock);
    notify_clock_locked(&clocks[type]);
    pthread_mutex_unlock(&clocks_lock);
}

/*
 * Heap.  All of these run with tl->lock held.  heap_index is also read
 * lock-free (timer_pending, the timer_del fast path), so it is written with
 * atomic stores; a queued timer's index never reads as IDX_NONE, even while
 * it moves.
 */

/*
 * An empty slot (see "Lazy cancellation") must keep its place in the heap
 * order, so it keeps its key: the expire time stays, and the arm order is
 * kept in t as (order << 1) | 1.  Timers are at least 8-byte aligned, so
 * bit 0 tells the two apart.
 */
_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t),
               "empty heap slots keep a 64-bit arm order in the pointer");

static inline bool slot_empty(const HeapEnt *e)
{
    return (uintptr_t)e->t & 1;
}

/* Empty e, which holds t.  Only writes e: its line need not be read. */
static inline void slot_make_empty(HeapEnt *e, const QEMUTimer *t)
{
    e->t = (QEMUTimer *)(uintptr_t)(t->order << 1 | 1);
}

static inline uint64_t slot_order(const HeapEnt *e)
{
    return slot_empty(e) ? (uint64_t)(uintptr_t)e->t >> 1 : e->t->order;
}

static inline bool before(const HeapEnt *a, const HeapEnt *b)
{
    /* Only equal expire times look at the timers themselves. */
    return a->expire < b->expire ||
           (a->expire == b->expire && slot_order(a) < slot_order(b));
}

static inline void set_index(QEMUTimer *t, uint32_t i)
{
    qatomic_set(&t->heap_index, i);
}

/* The slot at i now holds e: tell its timer, if it has one. */
static inline void slot_moved(const HeapEnt *e, uint32_t i)
{
    if (likely(!slot_empty(e))) {
        set_index(e->t, i);
    }
}

/* Place e at or above the hole at i. */
static void sift_up(QEMUTimerList *tl, size_t i, HeapEnt e)
{
    HeapEnt *h = tl->heap;

    while (i > 0) {
        size_t p = (i - 1) / 4;

        if (!before(&e, &h[p])) {
            break;
        }
        h[i] = h[p];
        slot_moved(&h[i], (uint32_t)i);
        i = p;
    }
    h[i] = e;
    slot_moved(&e, (uint32_t)i);
}

/* Place e at or below the hole at i. */
static void sift_down(QEMUTimerList *tl, size_t i, HeapEnt e)
{
    HeapEnt *h = tl->heap;
    size_t n = tl->n;

    for (;;) {
        size_t c = 4 * i + 1;
        size_t end = c + 4;
        size_t bi = c;

        if (c >= n) {
            break;
        }
        if (end > n) {
            end = n;
        }
        for (size_t k = c + 1; k < end; k++) {
            if (before(&h[k], &h[bi])) {
                bi = k;
            }
        }
        if (!before(&h[bi], &e)) {
            break;
        }
        h[i] = h[bi];
        slot_moved(&h[i], (uint32_t)i);
        i = bi;
    }
    h[i] = e;
    slot_moved(&e, (uint32_t)i);
}

/*
 * Fault in the whole pages of [start, end) with one system call.  The heap
 * fills a grown array slot by slot, so without this every new page costs a
 * page fault of its own: at 10^6 timers that is ~4000 faults, and in a VM
 * each one is an exit costing microseconds.  Best effort: kernels before
 * 5.14 lack MADV_POPULATE_WRITE and the pages then fault in as used.
 */
static void prefault(char *start, char *end)
{
#ifdef MADV_POPULATE_WRITE
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t s, e;

    if (end - start < PREFAULT_MIN) {
        return;
    }
    s = ((uintptr_t)start + page - 1) & ~(page - 1);
    e = (uintptr_t)end & ~(page - 1);
    if (e > s) {
        (void)madvise((void *)s, e - s, MADV_POPULATE_WRITE);
    }
#else
    (void)start;
    (void)end;
#endif
}

static void heap_resize(QEMUTimerList *tl, size_t ncap)
{
    size_t old_pad = tl->heap ? (size_t)(tl->heap - (HeapEnt *)tl->heap_base)
                              : 0;
    size_t pad = 0;
    char *base;

    /*
     * realloc(), not an aligned allocation plus a copy: glibc moves large
     * blocks with mremap(), which neither copies nor faults in the pages
     * again (in a VM a page fault costs tens of microseconds).  The
     * alignment is restored by choosing where the array starts in the
     * block: HEAP_PAD spare slots put slot 1, and so every group of four
     * children 4i+1..4i+4, at a 64-byte boundary.
     */
    base = realloc(tl->heap_base, (ncap + HEAP_PAD) * sizeof(HeapEnt));
    if (!base) {
        die("out of memory resizing a timer heap to %zu entries", ncap);
    }
    if (!((uintptr_t)base & 15)) {
        pad = (HEAP_PAD - (((uintptr_t)base >> 4) & 3)) & 3;
    }
    if (pad != old_pad && tl->n) {
        memmove(base + pad * sizeof(HeapEnt), base + old_pad * sizeof(HeapEnt),
                tl->n * sizeof(HeapEnt));
    }
    if (ncap > tl->cap) {
        prefault(base + (tl->cap + HEAP_PAD) * sizeof(HeapEnt),
                 base + (ncap + HEAP_PAD) * sizeof(HeapEnt));
    }
    tl->heap_base = base;
    tl->heap = (HeapEnt *)base + pad;
    tl->cap = (uint32_t)ncap;
}

/*
 * Give memory back after mass deletion, with hysteresis so that
 * alternating arm/delete at a boundary does not thrash.  Not while a pass
 * runs: popping is a burst of deletions that the timers re-armed by the
 * callbacks usually refill; the pass calls this when it ends, or a list
 * whose timers only ever fire would keep its peak size for good.
 */
static void heap_maybe_shrink(QEMUTimerList *tl)
{
    while (unlikely(tl->n < tl->cap / 4 && tl->cap > HEAP_MIN_CAP &&
                    !tl->passes)) {
        heap_resize(tl, tl->cap / 2);
    }
}

static inline void heap_reserve(QEMUTimerList *tl)
{
    if (likely(tl->n < tl->cap)) {
        return;
    }
    if (tl->cap >= HEAP_MAX) {
        die("too many timers on one timer list (%u)", tl->cap);
    }
    /*
     * Grow by half: at most 1.5 slots per timer while growing, so a timer
     * costs at most 40 + 1.5 * 16 = 64 bytes.
     */
    heap_resize(tl, tl->cap ? ((size_t)tl->cap * 3 / 2 > HEAP_MAX
                               ? HEAP_MAX : (size_t)tl->cap * 3 / 2)
                            : HEAP_MIN_CAP);
}

static inline void heap_push(QEMUTimerList *tl, HeapEnt e)
{
    heap_reserve(tl);
    sift_up(tl, tl->n++, e);
}

/* Remove the entry at i; the caller re-labels the removed timer. */
static void heap_remove_at(QEMUTimerList *tl, size_t i)
{
    HeapEnt last = tl->heap[--tl->n];

    if (i != tl->n) {
        if (i > 0 && before(&last, &tl->heap[(i - 1) / 4])) {
            sift_up(tl, i, last);
        } else {
            sift_down(tl, i, last);
        }
    }
    heap_maybe_shrink(tl);
}

/* Drop empty slots from the top, so that heap[0] is a live timer. */
static inline void heap_pop_dead(QEMUTimerList *tl)
{
    while (unlikely(tl->n && slot_empty(&tl->heap[0]))) {
        tl->ndead--;
        heap_remove_at(tl, 0);
    }
}

/*
 * Rebuild the heap without its empty slots: copy the live ones down in
 * array order, then restore the heap order bottom-up (Floyd), O(n).
 */
static void heap_compact(QEMUTimerList *tl)
{
    HeapEnt *h = tl->heap;
    uint32_t n = 0;

    for (uint32_t i = 0; i < tl->n; i++) {
        if (!slot_empty(&h[i])) {
            h[n] = h[i];
            set_index(h[n].t, n);
            n++;
        }
    }
    tl->n = n;
    tl->ndead = 0;
    for (size_t i = n > 1 ? (n - 2) / 4 + 1 : 0; i-- > 0;) {
        sift_down(tl, i, h[i]);
    }
    heap_maybe_shrink(tl);
}

/*
 * After every change: keep heap[0] live and empty slots no more than live
 * ones (see "Lazy cancellation"), then refresh the cached deadline.
 */
static inline void head_update(QEMUTimerList *tl)
{
    int64_t h;

    heap_pop_dead(tl);
    if (unlikely(tl->ndead > tl->n - tl->ndead)) {
        heap_compact(tl);
    }
    h = tl->n ? tl->heap[0].expire : -1;

    if (unlikely(tl->ndeferred) && (h < 0 || tl->deferred_min < h)) {
        h = tl->deferred_min;
    }
    if (h != tl->head_expire) {
        qatomic_set(&tl->head_expire, h);
    }
}

/* Put every deferred timer back into the heap. */
static void deferred_flush(QEMUTimerList *tl)
{
    for (uint32_t i = 0; i < tl->ndeferred; i++) {
        if (tl->deferred[i].t) {
            heap_push(tl, tl->deferred[i]);
        }
    }
    tl->ndeferred = 0;
    tl->deferred_min = INT64_MAX;
}

static bool deferred_push(QEMUTimerList *tl, HeapEnt e)
{
    if (tl->ndeferred == tl->deferred_cap) {
        uint32_t ncap = tl->deferred_cap ? tl->deferred_cap * 2 : 8;
        HeapEnt *d;

        if (ncap > HEAP_MAX) {
            return false;
        }
        d = realloc(tl->deferred, ncap * sizeof(*d));
        if (!d) {
            return false;
        }
        tl->deferred = d;
        tl->deferred_cap = ncap;
    }
    tl->deferred[tl->ndeferred] = e;
    set_index(e.t, IDX_DEFERRED | tl->ndeferred);
    tl->ndeferred++;
    if (e.expire < tl->deferred_min) {
        tl->deferred_min = e.expire;
    }
    return true;
}

/* The expire time of t, -1 if it is not pending. */
static int64_t expire_locked(QEMUTimerList *tl, const QEMUTimer *t)
{
    uint32_t idx = t->heap_index;

    if (idx == IDX_NONE) {
        return -1;
    }
    if (idx & IDX_DEFERRED) {
        return tl->deferred[idx & ~IDX_DEFERRED].expire;
    }
    return tl->heap[idx].expire;
}

/* Take t out of wherever it is queued.  Returns false if it was idle. */
static bool unqueue(QEMUTimerList *tl, QEMUTimer *t)
{
    uint32_t idx = t->heap_index;

    if (idx == IDX_NONE) {
        return false;
    }
    if (idx & IDX_DEFERRED) {
        tl->deferred[idx & ~IDX_DEFERRED].t = NULL;
    } else if (idx == 0 || idx == tl->n - 1) {
        /* The head must stay live; the last slot leaves no hole. */
        heap_remove_at(tl, idx);
    } else {
        /* Lazy: the caller's head_update() compacts when due. */
        slot_make_empty(&tl->heap[idx], t);
        tl->ndead++;
    }
    set_index(t, IDX_NONE);
    return true;
}

/*
 * Arm t for expire (already clamped).  Returns whether the list's owner must
 * be notified; *prev gets the replaced expire time (-1 if t was idle).
 */
static bool mod_locked(QEMUTimerList *tl, QEMUTimer *t, int64_t expire,
                       int64_t *prev)
{
    int64_t old_head = tl->head_expire;
    uint32_t idx = t->heap_index;
    HeapEnt e = { expire, t };

    t->order = (tl->next_seq++ << ORDER_SHIFT) | (t->order & ATTR_MASK);
    if (idx < IDX_DEFERRED) {
        /* Re-key in place; the new sequence is larger than the old one. */
        *prev = tl->heap[idx].expire;
        if (expire < *prev) {
            sift_up(tl, idx, e);
        } else {
            sift_down(tl, idx, e);
        }
    } else {
        *prev = -1;
        if (idx != IDX_NONE) {
            *prev = tl->deferred[idx & ~IDX_DEFERRED].expire;
            tl->deferred[idx & ~IDX_DEFERRED].t = NULL;
        }
        heap_push(tl, e);
    }
    head_update(tl);
    return tl->heap[0].t == t && (old_head < 0 || expire < old_head);
}

/*
 * Timer lists
 */

QEMUTimerList *timerlist_new(QEMUClockType type, QEMUTimerListNotifyCB *cb,
                             void *opaque)
{
    QEMUTimerList *tl;
    Clock *c;
    int ret;

    check_clock("timerlist_new", type);
    tl = calloc(1, sizeof(*tl));
    if (!tl) {
        die("timerlist_new: out of memory");
    }
    /*
     * A plain mutex: glibc's adaptive one (spin before sleeping) measured
     * 5-12 ns slower per uncontended operation, and uncontended is the
     * common case.
     */
    ret = pthread_mutex_init(&tl->lock, NULL);
    if (ret) {
        die("timerlist_new: pthread_mutex_init failed (errno %d)", ret);
    }
    tl->head_expire = -1;
    tl->deferred_min = INT64_MAX;
    tl->type = type;
    tl->notify_cb = cb;
    tl->notify_opaque = opaque;

    c = &clocks[type];
    pthread_mutex_lock(&clocks_lock);
    tl->next = c->lists;
    if (tl->next) {
        tl->next->pprev = &tl->next;
    }
    tl->pprev = &c->lists;
    c->lists = tl;
    pthread_mutex_unlock(&clocks_lock);
    return tl;
}

void timerlist_free(QEMUTimerList *tl)
{
    if (!tl) {
        return;
    }
    pthread_mutex_lock(&tl->lock);
    if (tl->n > tl->ndead || tl->ndeferred || tl->passes) {
        die("timerlist_free: the %s list %p still has %s; timer_del every "
            "timer and leave timerlist_run_timers first",
            clock_names[tl->type], (void *)tl,
            tl->passes ? "a timerlist_run_timers() in progress"
                       : "pending timers");
    }
    pthread_mutex_unlock(&tl->lock);

    pthread_mutex_lock(&clocks_lock);
    *tl->pprev = tl->next;
    if (tl->next) {
        tl->next->pprev = tl->pprev;
    }
    pthread_mutex_unlock(&clocks_lock);

    pthread_mutex_destroy(&tl->lock);
    free(tl->heap_base);
    free(tl->deferred);
    free(tl);
}

bool timerlist_has_timers(QEMUTimerList *tl)
{
    return qatomic_read(&tl->head_expire) >= 0;
}

bool timerlist_expired(QEMUTimerList *tl)
{
    int64_t head = qatomic_read(&tl->head_expire);

    return head >= 0 && head <= qemu_clock_get_ns(tl->type);
}

int64_t timerlist_deadline_ns(QEMUTimerList *tl)
{
    int64_t head = qatomic_read(&tl->head_expire);
    int64_t delta;

    if (head < 0 || !qatomic_read(&clocks[tl->type].enabled)) {
        return -1;
    }
    /*
     * Lock-free: if the earliest timer changes after this read, the arming
     * thread updates head_expire before calling the notify callback.
     */
    if (__builtin_sub_overflow(head, qemu_clock_get_ns(tl->type), &delta)) {
        return INT64_MAX;
    }
    return delta <= 0 ? 0 : delta;
}

QEMUClockType timerlist_get_clock(QEMUTimerList *tl)
{
    return tl->type;
}

void timerlist_notify(QEMUTimerList *tl)
{
    if (tl->notify_cb) {
        tl->notify_cb(tl->notify_opaque, tl->type);
    } else {
        /* As QEMU: a list without a callback belongs to the main loop. */
        qemu_notify_event();
    }
}

bool timerlist_run_timers(QEMUTimerList *tl)
{
    Clock *c = &clocks[tl->type];
    int64_t head = qatomic_read(&tl->head_expire);
    unsigned saved_clocks;
    uint64_t limit;
    bool progress = false;
    int64_t now;

    /* Cheap exits first: the event loop calls this every iteration. */
    if (head < 0 || !qatomic_read(&c->enabled)) {
        return false;
    }
    now = qemu_clock_get_ns(tl->type);
    if (head > now) {
        return false;
    }
    if (!clock_pass_begin(c)) {
        clock_pass_end(c);
        return false;
    }
    saved_clocks = running_clocks;
    running_clocks = saved_clocks | (1u << tl->type);

    pthread_mutex_lock(&tl->lock);
    /* A nested pass must see (and may run) what outer passes held back. */
    if (tl->ndeferred) {
        deferred_flush(tl);
    }
    tl->passes++;
    limit = tl->next_seq;
    while ((heap_pop_dead(tl), tl->n)) {
        HeapEnt e = tl->heap[0];
        QEMUTimerCB *cb;
        void *opaque;

        if (e.expire > now || !qatomic_read(&c->enabled)) {
            break;
        }
        heap_remove_at(tl, 0);
        if ((e.t->order >> ORDER_SHIFT) >= limit) {
            /* Armed during this pass: its turn is the next pass. */
            if (!deferred_push(tl, e)) {
                /* No memory to hold it back: stop here instead. */
                heap_push(tl, e);
                break;
            }
            continue;
        }
        set_index(e.t, IDX_NONE);
        head_update(tl);
        /* The timer may be freed by anyone once the lock is dropped. */
        cb = e.t->cb;
        opaque = e.t->opaque;
        pthread_mutex_unlock(&tl->lock);
        cb(opaque);
        progress = true;
        pthread_mutex_lock(&tl->lock);
    }
    if (tl->ndeferred) {
        deferred_flush(tl);
    }
    tl->passes--;
    heap_maybe_shrink(tl);
    head_update(tl);
    pthread_mutex_unlock(&tl->lock);

    running_clocks = saved_clocks;
    clock_pass_end(c);
    return progress;
}

/*
 * Timer list groups
 */

void timerlistgroup_init(QEMUTimerListGroup *tlg, QEMUTimerListNotifyCB *cb,
                         void *opaque)
{
    for (int type = 0; type < QEMU_CLOCK_MAX; type++) {
        tlg->tl[type] = timerlist_new((QEMUClockType)type, cb, opaque);
    }
}

void timerlistgroup_deinit(QEMUTimerListGroup *tlg)
{
    for (int type = 0; type < QEMU_CLOCK_MAX; type++) {
        timerlist_free(tlg->tl[type]);
        tlg->tl[type] = NULL;
    }
}

bool timerlistgroup_run_timers(QEMUTimerListGroup *tlg)
{
    bool progress = false;

    /* Test the heads here, call only when armed. */
    for (int type = 0; type < QEMU_CLOCK_MAX; type++) {
        QEMUTimerList *tl = tlg->tl[type];

        if (qatomic_read(&tl->head_expire) >= 0) {
            progress |= timerlist_run_timers(tl);
        }
    }
    return progress;
}

int64_t timerlistgroup_deadline_ns(QEMUTimerListGroup *tlg)
{
    int64_t deadline = -1;

    /* QEMU skips VIRTUAL under icount; there is no icount here. */
    for (int type = 0; type < QEMU_CLOCK_MAX; type++) {
        deadline = qemu_soonest_timeout(deadline,
                                        timerlist_deadline_ns(tlg->tl[type]));
    }
    return deadline;
}

/*
 * Timers
 */

void timer_set_main_loop_tlg(QEMUTimerListGroup *tlg)
{
    __atomic_store_n(&main_loop_tlg, tlg, __ATOMIC_RELEASE);
}

void timer_init_full(QEMUTimer *ts, QEMUTimerListGroup *timer_list_group,
                     QEMUClockType type, int scale, int attributes,
                     QEMUTimerCB *cb, void *opaque)
{
    QEMUTimerListGroup *tlg = timer_list_group;

    check_clock("timer_init_full", type);
    if (!ts) {
        die("timer_init_full: timer is NULL");
    }
    if (scale <= 0) {
        die("timer_init_full: invalid scale %d (use SCALE_NS, SCALE_US or "
            "SCALE_MS)", scale);
    }
    if (attributes & ~KNOWN_ATTRS) {
        die("timer_init_full: unknown attribute bits 0x%x (only "
            "QEMU_TIMER_ATTR_EXTERNAL exists)", (unsigned)attributes);
    }
    if (!cb) {
        die("timer_init_full: callback is NULL");
    }
    if (!tlg) {
        tlg = __atomic_load_n(&main_loop_tlg, __ATOMIC_ACQUIRE);
        if (!tlg) {
            die("timer_init_full/timer_new: a NULL timer list group means "
                "the main loop's, and there is no main loop yet: call "
                "qemu_init_main_loop() first, or pass an AioContext's "
                "group with aio_timer_init() or aio_timer_new()");
        }
    }
    if (!tlg->tl[type]) {
        die("timer_init_full: timer list group %p is not initialised "
            "(timerlistgroup_init not called or already deinitialised)",
            (void *)tlg);
    }
    ts->order = (uint64_t)attributes & ATTR_MASK;
    ts->timer_list = tlg->tl[type];
    ts->cb = cb;
    ts->opaque = opaque;
    ts->heap_index = IDX_NONE;
    ts->scale = scale;
}

QEMUTimer *timer_new_full(QEMUTimerListGroup *timer_list_group,
                          QEMUClockType type, int scale, int attributes,
                          QEMUTimerCB *cb, void *opaque)
{
    QEMUTimer *ts = malloc(sizeof(*ts));

    if (!ts) {
        die("timer_new_full: out of memory");
    }
    timer_init_full(ts, timer_list_group, type, scale, attributes, cb, opaque);
    return ts;
}

void timer_deinit(QEMUTimer *ts)
{
    check_timer("timer_deinit", ts);
    if (qatomic_read(&ts->heap_index) != IDX_NONE) {
        die("timer_deinit: timer %p is still pending; call timer_del first",
            (void *)ts);
    }
    ts->timer_list = NULL;
}

void timer_free(QEMUTimer *ts)
{
    if (!ts) {
        return;
    }
    timer_del(ts);
    free(ts);
}

bool timer_del_was_pending(QEMUTimer *ts)
{
    QEMUTimerList *tl = check_timer("timer_del", ts);
    bool was;

    /*
     * Not pending: nothing to take off the list, no lock needed.  An arm
     * that happened-before this call is seen by this load.
     */
    if (qatomic_read(&ts->heap_index) == IDX_NONE) {
        return false;
    }
    pthread_mutex_lock(&tl->lock);
    was = unqueue(tl, ts);
    if (was) {
        head_update(tl);
    }
    pthread_mutex_unlock(&tl->lock);
    return was;
}

void timer_del(QEMUTimer *ts)
{
    timer_del_was_pending(ts);
}

int64_t timer_mod_ns_prev(QEMUTimer *ts, int64_t expire_time)
{
    QEMUTimerList *tl = check_timer("timer_mod", ts);
    int64_t prev;
    bool notify;

    if (expire_time < 0) {
        expire_time = 0;
    }
    pthread_mutex_lock(&tl->lock);
    notify = mod_locked(tl, ts, expire_time, &prev);
    pthread_mutex_unlock(&tl->lock);
    if (notify) {
        timerlist_notify(tl);
    }
    return prev;
}

void timer_mod_ns(QEMUTimer *ts, int64_t expire_time)
{
    timer_mod_ns_prev(ts, expire_time);
}

void timer_mod(QEMUTimer *ts, int64_t expire_timer)
{
    check_timer("timer_mod", ts);
    timer_mod_ns_prev(ts, mul_sat(expire_timer, ts->scale));
}

void timer_mod_anticipate_ns(QEMUTimer *ts, int64_t expire_time)
{
    QEMUTimerList *tl = check_timer("timer_mod_anticipate", ts);
    int64_t prev;
    bool notify = false;

    if (expire_time < 0) {
        expire_time = 0;
    }
    pthread_mutex_lock(&tl->lock);
    prev = expire_locked(tl, ts);
    if (prev < 0 || prev > expire_time) {
        notify = mod_locked(tl, ts, expire_time, &prev);
    }
    pthread_mutex_unlock(&tl->lock);
    if (notify) {
        timerlist_notify(tl);
    }
}

void timer_mod_anticipate(QEMUTimer *ts, int64_t expire_time)
{
    check_timer("timer_mod_anticipate", ts);
    timer_mod_anticipate_ns(ts, mul_sat(expire_time, ts->scale));
}

bool timer_pending(const QEMUTimer *ts)
{
    return qatomic_read(&ts->heap_index) != IDX_NONE;
}

uint64_t timer_expire_time_ns(const QEMUTimer *ts)
{
    QEMUTimerList *tl;
    int64_t expire;

    /* The expire time lives in the heap entry, under the list lock. */
    if (qatomic_read(&ts->heap_index) == IDX_NONE) {
        return (uint64_t)-1;
    }
    tl = ts->timer_list;
    pthread_mutex_lock(&tl->lock);
    expire = expire_locked(tl, ts);
    pthread_mutex_unlock(&tl->lock);
    return (uint64_t)expire;
}

bool timer_expired(const QEMUTimer *timer_head, int64_t current_time)
{
    /* -1 (not pending) is below any time: QEMU counts it as expired. */
    return (int64_t)timer_expire_time_ns(timer_head) <=
           mul_sat(current_time, timer_head->scale);
}

int qemu_timeout_ns_to_ms(int64_t ns)
{
    int64_t ms;

    if (ns < 0) {
        return -1;
    }
    if (!ns) {
        return 0;
    }
    /* Round up: better to wait too long than to busy-wait. */
    ms = ns / SCALE_MS + (ns % SCALE_MS != 0);
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/*
 * Debugging
 */

size_t timerlist_heap_capacity(QEMUTimerList *tl)
{
    size_t cap;

    pthread_mutex_lock(&tl->lock);
    cap = tl->cap;
    pthread_mutex_unlock(&tl->lock);
    return cap;
}

bool timerlist_check_invariants(QEMUTimerList *tl)
{
    bool ok = false;
    uint32_t dead = 0;
    int64_t head;

    pthread_mutex_lock(&tl->lock);
    if (tl->n > tl->cap || tl->ndeferred > tl->deferred_cap) {
        fprintf(stderr, "timer heap: n %u cap %u ndeferred %u/%u heap %p\n",
                tl->n, tl->cap, tl->ndeferred, tl->deferred_cap,
                (void *)tl->heap);
        goto out;
    }
    /* head_update() keeps both after every change. */
    if (tl->ndead > tl->n - tl->ndead ||
        (tl->n && slot_empty(&tl->heap[0]))) {
        fprintf(stderr, "timer heap: %u of %u slots empty, head %s\n",
                tl->ndead, tl->n, tl->n && slot_empty(&tl->heap[0])
                                  ? "empty" : "live");
        goto out;
    }
    for (uint32_t i = 0; i < tl->n; i++) {
        const HeapEnt *e = &tl->heap[i];

        if (e->expire < 0) {
            fprintf(stderr, "timer heap: slot %u expire %" PRId64 "\n", i,
                    e->expire);
            goto out;
        }
        if (i > 0 && before(e, &tl->heap[(i - 1) / 4])) {
            fprintf(stderr, "timer heap: slot %u sorts before its parent\n",
                    i);
            goto out;
        }
        if (slot_empty(e)) {
            dead++;
            continue;
        }
        if (e->t->heap_index != i || e->t->timer_list != tl) {
            fprintf(stderr, "timer heap: slot %u holds %p with index %u, "
                    "list %p\n", i, (void *)e->t, e->t->heap_index,
                    (void *)e->t->timer_list);
            goto out;
        }
        if ((e->t->order >> ORDER_SHIFT) >= tl->next_seq) {
            fprintf(stderr, "timer heap: slot %u seq %" PRIu64 " (next %"
                    PRIu64 ")\n", i, e->t->order >> ORDER_SHIFT,
                    tl->next_seq);
            goto out;
        }
    }
    if (dead != tl->ndead) {
        fprintf(stderr, "timer heap: %u empty slots, %u counted\n", dead,
                tl->ndead);
        goto out;
    }
    for (uint32_t i = 0; i < tl->ndeferred; i++) {
        const HeapEnt *e = &tl->deferred[i];

        if (e->t && (e->t->heap_index != (IDX_DEFERRED | i) ||
                     e->expire < 0 || e->expire < tl->deferred_min)) {
            fprintf(stderr, "timer heap: deferred slot %u inconsistent\n", i);
            goto out;
        }
    }
    if (tl->ndeferred && !tl->passes) {
        fprintf(stderr, "timer heap: deferred timers outside a pass\n");
        goto out;
    }
    head = tl->n ? tl->heap[0].expire : -1;
    if (tl->ndeferred && (head < 0 || tl->deferred_min < head)) {
        head = tl->deferred_min;
    }
    if (head != tl->head_expire) {
        fprintf(stderr, "timer heap: cached head %" PRId64 " != %" PRId64
                "\n", tl->head_expire, head);
        goto out;
    }
    ok = true;
out:
    pthread_mutex_unlock(&tl->lock);
    return ok;
}
