/*
 * Timer functions for other library files and for tests; not exported.
 */
#ifndef AIOLOOP_TIMER_INTERNAL_H
#define AIOLOOP_TIMER_INTERNAL_H

#include <aioloop/timer.h>

/*
 * Install the main loop's group: from then on a NULL group in
 * timer_init_full()/timer_new_full() (and timer_new_ns() & co.) means
 * @tlg.  Called once by the main loop when it starts, before any such
 * timer is created; NULL uninstalls it again (main loop teardown).
 */
void timer_set_main_loop_tlg(QEMUTimerListGroup *tlg);

/*
 * timer_mod_ns() that also says what it replaced: the previous expire time
 * in ns, or -1 if @ts was not pending (this call started a new expiry
 * rather than moving one).  Computed under the list lock, so exact even
 * when the owner is running timers concurrently.
 */
int64_t timer_mod_ns_prev(QEMUTimer *ts, int64_t expire_time);

/*
 * timer_del() that says whether it cancelled an expiry: true iff @ts was
 * pending.  false means the timer was idle or its callback had already
 * been taken off the list to run.  Useful to decide who owns the cleanup
 * when a timer and a canceller race.
 */
bool timer_del_was_pending(QEMUTimer *ts);

/*
 * Is any timer of @tlg pending?  Reads each list's cached earliest
 * deadline lock-free, as timerlistgroup_run_timers() does, but without a
 * call: the event loop asks on every iteration and usually hears no.
 * Relies on QEMUTimerList starting with that deadline (qemu-timer.c
 * asserts it).
 */
static inline bool timerlistgroup_any_pending(QEMUTimerListGroup *tlg)
{
    /* -1 (nothing pending) has the sign bit set, any deadline has not. */
    int64_t all = -1;

#pragma GCC unroll 8
    for (int type = 0; type < QEMU_CLOCK_MAX; type++) {
        all &= __atomic_load_n((const int64_t *)(const void *)tlg->tl[type],
                               __ATOMIC_RELAXED);
    }
    return all >= 0;
}

/*
 * Check the heap of @tl: heap order (expire time, then arm order) between
 * every parent and child, every timer's back-index and list pointer, the
 * count of empty (cancelled) slots, a live head, the cached earliest
 * deadline, and the bookkeeping of timers held back during a run.  Takes the list lock.  Prints the first violation to stderr.
 * Returns true if everything holds.  O(n); for tests and debugging.
 */
bool timerlist_check_invariants(QEMUTimerList *tl);

/* Slots allocated in @tl's heap (tests: the array shrinks again). */
size_t timerlist_heap_capacity(QEMUTimerList *tl);

#endif
