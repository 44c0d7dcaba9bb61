/*
 * aioloop timers: QEMU's include/qemu/timer.h API on an O(log n) heap.
 *
 * Names, signatures and semantics follow QEMU so that code written against
 * QEMU ports by changing the include.  Differences from QEMU are called out
 * in the comment of the function concerned; the main ones are:
 *
 *  - insertion and re-arming are O(log n), deletion O(1) amortized (QEMU:
 *    O(n));
 *  - every clock starts enabled.  QEMU's VIRTUAL clock starts stopped only
 *    because a QEMU VM starts stopped; a library has no VM;
 *  - there is no icount and no record/replay: VIRTUAL_RT reads the same VM
 *    time as VIRTUAL, QEMU_TIMER_ATTR_EXTERNAL is accepted and stored only;
 *  - aioloop_clock_set_source() (our addition) replaces the raw time source
 *    of a clock so that tests never depend on wall-clock time.
 *
 * Threads.  Timers may be armed and deleted from any thread.  A timer list
 * runs its callbacks in the thread that calls timerlist_run_timers() (or
 * timerlistgroup_run_timers()) for it, normally the thread of the event loop
 * that owns the list; callbacks run without any library lock held, so they
 * may arm, delete or free any timer, their own included.
 *
 * Ownership.  A QEMUTimerList and a QEMUTimerListGroup's lists belong to
 * whoever created them (usually an AioContext).  A timer from timer_new*()
 * is owned by the caller and released with timer_free(); a timer set up with
 * timer_init*() lives in caller-provided memory and is released with
 * timer_del() + timer_deinit().  A timer must not be pending when its list
 * is freed.
 */
#ifndef AIOLOOP_TIMER_H
#define AIOLOOP_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <aioloop/compiler.h>

AIOLOOP_BEGIN_DECLS

/* Multipliers from the unit of a timer or a clock reading to nanoseconds. */
#define SCALE_MS 1000000
#define SCALE_US 1000
#define SCALE_NS 1

/**
 * QEMUClockType:
 * @QEMU_CLOCK_REALTIME: CLOCK_MONOTONIC.  Runs always, also while the VM
 *   (VIRTUAL) clock is stopped.
 * @QEMU_CLOCK_VIRTUAL: "VM time": CLOCK_MONOTONIC minus the total time this
 *   clock spent disabled.  While disabled it stands still and its timers do
 *   not run; when re-enabled it resumes from the frozen value, without a jump.
 * @QEMU_CLOCK_HOST: CLOCK_REALTIME, the wall clock; it may jump when the
 *   system time is set.
 * @QEMU_CLOCK_VIRTUAL_RT: reads the same VM time as QEMU_CLOCK_VIRTUAL (there
 *   is no icount here) but has its own enabled flag.
 * @QEMU_CLOCK_MAX: number of clocks.
 *
 * All clocks start enabled.
 */
typedef enum {
    QEMU_CLOCK_REALTIME = 0,
    QEMU_CLOCK_VIRTUAL = 1,
    QEMU_CLOCK_HOST = 2,
    QEMU_CLOCK_VIRTUAL_RT = 3,
    QEMU_CLOCK_MAX
} QEMUClockType;

/*
 * Timer attributes, OR'ed into the @attributes argument of timer_new_full()
 * and timer_init_full().
 *
 * QEMU_TIMER_ATTR_EXTERNAL: the timer drives an external subsystem and would
 * not be recorded by QEMU's record/replay.  aioloop has no record/replay: the
 * attribute is accepted and stored, nothing more.
 *
 * QEMU_TIMER_ATTR_ALL is a mask for queries, not a valid attribute value.
 */
#define QEMU_TIMER_ATTR_EXTERNAL ((int)(1 << 0))
#define QEMU_TIMER_ATTR_ALL      0xffffffff

typedef void QEMUTimerCB(void *opaque);
typedef void QEMUTimerListNotifyCB(void *opaque, QEMUClockType type);

/* One clock's timers of one event loop.  Opaque. */
typedef struct QEMUTimerList QEMUTimerList;

/* One timer list per clock; an AioContext embeds one of these. */
typedef struct QEMUTimerListGroup {
    QEMUTimerList *tl[QEMU_CLOCK_MAX];
} QEMUTimerListGroup;

typedef struct QEMUTimer QEMUTimer;

/*
 * The timer is defined here only so that users can embed it in their own
 * structures and set it up with timer_init*().  Every field is private to
 * the library: read and change a timer only through the functions below
 * (unlike QEMU's, this struct has no expire_time field).  The layout may
 * change between releases; the size stays at most 64 bytes (40 today).
 */
struct QEMUTimer {
    /* Position in the list's heap, or a "not pending" marker.  Written under
     * the list lock with atomic stores; read lock-free by timer_pending().
     * (The expire time itself is kept in the heap, next to the pointer.) */
    uint32_t heap_index;
    int32_t scale;
    /* Arm sequence number << 8 | attributes; the sequence breaks ties between
     * equal expire times (first armed, first run).  List lock. */
    uint64_t order;
    QEMUTimerList *timer_list;
    QEMUTimerCB *cb;
    void *opaque;
};

#ifdef __cplusplus
static_assert(sizeof(QEMUTimer) <= 64, "QEMUTimer must stay small");
#else
_Static_assert(sizeof(QEMUTimer) <= 64, "QEMUTimer must stay small");
#endif

/*
 * Clocks
 */

/**
 * qemu_clock_get_ns: read a clock
 * @type: the clock
 *
 * Returns the current value of @type in nanoseconds.  REALTIME and HOST are
 * read through the vDSO (no system call); VIRTUAL and VIRTUAL_RT add a
 * lock-free read of the pause bookkeeping.
 *
 * Thread: any.  An invalid @type aborts with a message.
 *
 * Returns: the clock value in ns.
 */
AIOLOOP_API int64_t qemu_clock_get_ns(QEMUClockType type);

/**
 * qemu_clock_get_us: read a clock in microseconds
 * @type: the clock
 *
 * Same as qemu_clock_get_ns() divided by SCALE_US (truncating).
 *
 * Thread: any.
 *
 * Returns: the clock value in us.
 */
static inline int64_t qemu_clock_get_us(QEMUClockType type)
{
    return qemu_clock_get_ns(type) / SCALE_US;
}

/**
 * qemu_clock_get_ms: read a clock in milliseconds
 * @type: the clock
 *
 * Same as qemu_clock_get_ns() divided by SCALE_MS (truncating).
 *
 * Thread: any.
 *
 * Returns: the clock value in ms.
 */
static inline int64_t qemu_clock_get_ms(QEMUClockType type)
{
    return qemu_clock_get_ns(type) / SCALE_MS;
}

/**
 * qemu_clock_enable: start or stop the timers of a clock
 * @type: the clock
 * @enabled: true to enable, false to disable
 *
 * While a clock is disabled its timers do not run and timer lists of that
 * clock report no deadline (-1); timers can still be armed and deleted.
 * Disabling QEMU_CLOCK_VIRTUAL also freezes VM time (and so the reading of
 * VIRTUAL and VIRTUAL_RT); enabling it resumes VM time from the frozen value.
 *
 * Enabling a disabled clock calls the notify callback of every timer list
 * of that clock, so that event loops recompute their deadlines.  Disabling
 * returns only when no timer callback of that clock is running in any
 * thread (timers that became due before the call may still be running when
 * it starts; none runs after it returns, until the clock is enabled again).
 *
 * Thread: any, except from inside a timer callback of the same clock (even
 * through nested event loops): disabling would wait for that very callback
 * to finish.  The library detects that mistake and aborts with a message.
 * Notify callbacks run in the calling thread and must not create or free
 * timer lists.
 */
AIOLOOP_API void qemu_clock_enable(QEMUClockType type, bool enabled);

/**
 * qemu_clock_is_enabled: is a clock enabled?
 * @type: the clock
 *
 * Thread: any; the answer may be stale by the time it is used if another
 * thread toggles the clock.
 *
 * Returns: true if the timers of @type may run.
 */
AIOLOOP_API bool qemu_clock_is_enabled(QEMUClockType type);

/**
 * qemu_clock_notify: wake every event loop that has timers on a clock
 * @type: the clock
 *
 * Calls timerlist_notify() on every timer list of @type.
 *
 * Thread: any.  Notify callbacks run in the calling thread and must not
 * create or free timer lists.
 */
AIOLOOP_API void qemu_clock_notify(QEMUClockType type);

/**
 * aioloop_clock_set_source: replace the raw time source of a clock
 * @type: the clock
 * @now_ns: function returning the raw time in ns, or NULL for the default
 *   (CLOCK_MONOTONIC for REALTIME, VIRTUAL and VIRTUAL_RT; CLOCK_REALTIME
 *   for HOST)
 * @opaque: argument for @now_ns
 *
 * An aioloop addition for tests: with a fake source, timer tests control
 * time exactly and never sleep.  VIRTUAL and VIRTUAL_RT share one raw source
 * (VM time), so setting either sets both; VIRTUAL's pause logic applies on
 * top of it.  Changing the VM source restarts the pause bookkeeping: VM time
 * then equals the new source's reading (frozen at that reading if VIRTUAL is
 * disabled).  Timers already armed keep their absolute expire times.
 *
 * @now_ns may be called from any thread that reads the clock, possibly more
 * than once per reading, and must be thread-safe.  It must not read aioloop
 * clocks itself (it runs inside the clock's update section when VIRTUAL is
 * paused or resumed).  It must stay callable until another source is
 * installed and no thread still reads the clock.
 *
 * Thread: any.  Event loops are not notified: arm or run timers afterwards.
 */
AIOLOOP_API void aioloop_clock_set_source(QEMUClockType type,
                                          int64_t (*now_ns)(void *opaque),
                                          void *opaque);

/*
 * Timer lists
 */

/**
 * timerlist_new: create a timer list
 * @type: the clock of the list's timers
 * @cb: called when a timer change needs the list's event loop to recompute
 *   its deadline (QEMU: aio_notify), or NULL to notify the main loop with
 *   qemu_notify_event() (a no-op before qemu_init_main_loop()).
 * @opaque: first argument of @cb
 *
 * @cb runs in whichever thread armed the timer (or enabled the clock), after
 * the list's lock is released; it must be thread-safe and cheap.
 *
 * Thread: any.  Allocation failure aborts (as QEMU's g_malloc).
 *
 * Returns: the new list, owned by the caller; release it with
 * timerlist_free().
 */
AIOLOOP_API QEMUTimerList *timerlist_new(QEMUClockType type,
                                         QEMUTimerListNotifyCB *cb,
                                         void *opaque);

/**
 * timerlist_free: free a timer list
 * @timer_list: the list, or NULL (then nothing happens)
 *
 * The list must have no pending timer and no timerlist_run_timers() in
 * progress; otherwise the call aborts with a message (QEMU asserts).
 * Timers initialised on the list must not be armed afterwards.
 *
 * Thread: the owner's, with no other thread using the list.
 */
AIOLOOP_API void timerlist_free(QEMUTimerList *timer_list);

/**
 * timerlist_has_timers: does a timer list have pending timers?
 * @timer_list: the list
 *
 * Lock-free.  Thread: any (the answer may be stale if other threads arm or
 * delete timers).
 *
 * Returns: true if at least one timer of @timer_list is pending.
 */
AIOLOOP_API bool timerlist_has_timers(QEMUTimerList *timer_list);

/**
 * timerlist_expired: is the earliest timer of a list due?
 * @timer_list: the list
 *
 * Compares the earliest expire time with the clock, whether or not the
 * clock is enabled (as QEMU).  Thread: any.
 *
 * Returns: true if a timer of @timer_list has expired.
 */
AIOLOOP_API bool timerlist_expired(QEMUTimerList *timer_list);

/**
 * timerlist_deadline_ns: time until the earliest timer of a list
 * @timer_list: the list
 *
 * Thread: any; normally the owner's event loop, before blocking.  The
 * deadline can change right after the call; a change that makes it earlier
 * calls the list's notify callback, so the owner cannot miss it as long as
 * it makes itself notifiable (with a full barrier) before calling this.
 *
 * Returns: -1 if the list has no pending timer or its clock is disabled,
 * 0 if the earliest timer has expired, otherwise the ns until it expires.
 */
AIOLOOP_API int64_t timerlist_deadline_ns(QEMUTimerList *timer_list);

/**
 * timerlist_get_clock: the clock of a timer list
 * @timer_list: the list
 *
 * Thread: any.
 *
 * Returns: the clock type given to timerlist_new().
 */
AIOLOOP_API QEMUClockType timerlist_get_clock(QEMUTimerList *timer_list);

/**
 * timerlist_run_timers: run the expired timers of a list
 * @timer_list: the list
 *
 * Reads the clock once, then calls, in expire-time order (first armed first
 * among equal expire times), the callback of every timer whose expire time
 * is at or before that reading.  Each timer stops being pending before its
 * callback runs, so a callback may re-arm it.  A timer (re-)armed during
 * this call for a time at or before the reading does not run again in this
 * call: it runs in the next one (this keeps a callback that re-arms itself
 * "now" from looping forever).  Callbacks run with no library lock held.
 * Nothing runs while the clock is disabled; if the clock is disabled during
 * the call, the remaining timers wait for it to be enabled again.
 *
 * Thread: the owner's (one thread at a time per list).  Callbacks may call
 * it again (nested event loops).
 *
 * Returns: true if at least one callback ran.
 */
AIOLOOP_API bool timerlist_run_timers(QEMUTimerList *timer_list);

/**
 * timerlist_notify: call a timer list's notify callback
 * @timer_list: the list
 *
 * Does nothing if the list has no callback.  Thread: any.
 */
AIOLOOP_API void timerlist_notify(QEMUTimerList *timer_list);

/**
 * timerlistgroup_init: create one timer list per clock
 * @tlg: the group to fill in (caller-owned memory)
 * @cb: notify callback for every list (see timerlist_new()), or NULL
 * @opaque: first argument of @cb
 *
 * Thread: any.  Allocation failure aborts.  Release with
 * timerlistgroup_deinit().
 */
AIOLOOP_API void timerlistgroup_init(QEMUTimerListGroup *tlg,
                                     QEMUTimerListNotifyCB *cb, void *opaque);

/**
 * timerlistgroup_deinit: free the timer lists of a group
 * @tlg: the group
 *
 * Frees each list with timerlist_free() (so every timer must have been
 * deleted) and sets its slot to NULL.  Accepts a group whose slots are NULL
 * (zeroed, half-initialised or already deinitialised).
 *
 * Thread: the owner's, with no other thread using the lists.
 */
AIOLOOP_API void timerlistgroup_deinit(QEMUTimerListGroup *tlg);

/**
 * timerlistgroup_run_timers: run the expired timers of every clock
 * @tlg: the group
 *
 * timerlist_run_timers() on each list, in clock order.
 *
 * Thread: the owner's.
 *
 * Returns: true if at least one callback ran.
 */
AIOLOOP_API bool timerlistgroup_run_timers(QEMUTimerListGroup *tlg);

/**
 * timerlistgroup_deadline_ns: time until the earliest timer of a group
 * @tlg: the group
 *
 * Thread: any; see timerlist_deadline_ns().
 *
 * Returns: the soonest of timerlist_deadline_ns() over the group's lists
 * (-1 = no deadline, 0 = a timer has expired, else ns).
 */
AIOLOOP_API int64_t timerlistgroup_deadline_ns(QEMUTimerListGroup *tlg);

/*
 * Timers
 */

/**
 * timer_init_full: set up a timer in caller-provided memory
 * @ts: the timer to initialise
 * @timer_list_group: the group whose list of @type will run the timer, or
 *   NULL for the main loop's group
 * @type: the clock
 * @scale: ns per unit of the expire times given to timer_mod() and
 *   timer_mod_anticipate() (SCALE_NS, SCALE_US, SCALE_MS or any positive
 *   value)
 * @attributes: 0 or QEMU_TIMER_ATTR_* values OR'ed together
 * @cb: the callback, run in the list owner's thread when the timer expires
 * @opaque: the argument of @cb
 *
 * The timer starts not pending.  It must not be pending or running its
 * callback when re-initialised.  A NULL @timer_list_group means the main
 * loop's (run by main_loop_wait()); before qemu_init_main_loop() it aborts
 * with a message.
 * An invalid @type, a @scale <= 0, unknown attribute bits or a NULL @cb
 * also abort with a message.
 *
 * Thread: any.  The timer's memory is the caller's; release with
 * timer_del() (if armed) and timer_deinit().
 */
AIOLOOP_API void timer_init_full(QEMUTimer *ts,
                                 QEMUTimerListGroup *timer_list_group,
                                 QEMUClockType type, int scale, int attributes,
                                 QEMUTimerCB *cb, void *opaque);

/**
 * timer_new_full: allocate and set up a timer
 * @timer_list_group: the group, or NULL for the main loop's (see
 *   timer_init_full())
 * @type: the clock
 * @scale: ns per unit of expire times (see timer_init_full())
 * @attributes: 0 or QEMU_TIMER_ATTR_* values OR'ed together
 * @cb: the callback
 * @opaque: the argument of @cb
 *
 * Thread: any.  Allocation failure and invalid arguments abort (see
 * timer_init_full()).
 *
 * Returns: a new, not pending timer owned by the caller; release it with
 * timer_free().
 */
AIOLOOP_API QEMUTimer *timer_new_full(QEMUTimerListGroup *timer_list_group,
                                      QEMUClockType type, int scale,
                                      int attributes, QEMUTimerCB *cb,
                                      void *opaque);

/**
 * timer_init: set up a timer on the main loop
 * @ts: the timer
 * @type: the clock
 * @scale: ns per unit of expire times
 * @cb: the callback
 * @opaque: the argument of @cb
 *
 * timer_init_full() with the main loop's group and no attributes: the
 * timer runs in main_loop_wait().  Aborts before qemu_init_main_loop().
 */
static inline void timer_init(QEMUTimer *ts, QEMUClockType type, int scale,
                              QEMUTimerCB *cb, void *opaque)
{
    timer_init_full(ts, NULL, type, scale, 0, cb, opaque);
}

/**
 * timer_init_ns: timer_init() with SCALE_NS
 * @ts: the timer
 * @type: the clock
 * @cb: the callback
 * @opaque: the argument of @cb
 */
static inline void timer_init_ns(QEMUTimer *ts, QEMUClockType type,
                                 QEMUTimerCB *cb, void *opaque)
{
    timer_init(ts, type, SCALE_NS, cb, opaque);
}

/**
 * timer_init_us: timer_init() with SCALE_US
 * @ts: the timer
 * @type: the clock
 * @cb: the callback
 * @opaque: the argument of @cb
 */
static inline void timer_init_us(QEMUTimer *ts, QEMUClockType type,
                                 QEMUTimerCB *cb, void *opaque)
{
    timer_init(ts, type, SCALE_US, cb, opaque);
}

/**
 * timer_init_ms: timer_init() with SCALE_MS
 * @ts: the timer
 * @type: the clock
 * @cb: the callback
 * @opaque: the argument of @cb
 */
static inline void timer_init_ms(QEMUTimer *ts, QEMUClockType type,
                                 QEMUTimerCB *cb, void *opaque)
{
    timer_init(ts, type, SCALE_MS, cb, opaque);
}

/**
 * timer_new: allocate a timer on the main loop
 * @type: the clock
 * @scale: ns per unit of expire times
 * @cb: the callback
 * @opaque: the argument of @cb
 *
 * timer_new_full() with the main loop's group and no attributes: the timer
 * runs in main_loop_wait().  Aborts before qemu_init_main_loop().
 *
 * Returns: the new timer; release it with timer_free().
 */
static inline QEMUTimer *timer_new(QEMUClockType type, int scale,
                                   QEMUTimerCB *cb, void *opaque)
{
    return timer_new_full(NULL, type, scale, 0, cb, opaque);
}

/**
 * timer_new_ns: timer_new() with SCALE_NS
 * @type: the clock
 * @cb: the callback
 * @opaque: the argument of @cb
 *
 * Returns: the new timer; release it with timer_free().
 */
static inline QEMUTimer *timer_new_ns(QEMUClockType type, QEMUTimerCB *cb,
                                      void *opaque)
{
    return timer_new(type, SCALE_NS, cb, opaque);
}

/**
 * timer_new_us: timer_new() with SCALE_US
 * @type: the clock
 * @cb: the callback
 * @opaque: the argument of @cb
 *
 * Returns: the new timer; release it with timer_free().
 */
static inline QEMUTimer *timer_new_us(QEMUClockType type, QEMUTimerCB *cb,
                                      void *opaque)
{
    return timer_new(type, SCALE_US, cb, opaque);
}

/**
 * timer_new_ms: timer_new() with SCALE_MS
 * @type: the clock
 * @cb: the callback
 * @opaque: the argument of @cb
 *
 * Returns: the new timer; release it with timer_free().
 */
static inline QEMUTimer *timer_new_ms(QEMUClockType type, QEMUTimerCB *cb,
                                      void *opaque)
{
    return timer_new(type, SCALE_MS, cb, opaque);
}

/**
 * timer_deinit: undo timer_init*()
 * @ts: the timer
 *
 * The timer must not be pending (call timer_del() first); a pending timer
 * aborts with a message (QEMU asserts).  Afterwards @ts may be freed or
 * initialised again.
 *
 * Thread: any, once no other thread uses @ts and its callback is not
 * running.
 */
AIOLOOP_API void timer_deinit(QEMUTimer *ts);

/**
 * timer_free: delete and free a timer from timer_new*()
 * @ts: the timer, or NULL (then nothing happens)
 *
 * Deletes the timer if pending, then frees it.  The callback must not be
 * running in another thread (a callback may free its own timer).
 *
 * Thread: any.
 */
AIOLOOP_API void timer_free(QEMUTimer *ts);

/**
 * timer_del: stop a timer
 * @ts: the timer
 *
 * After the call the timer is not pending; its callback will not run
 * unless it is armed again.  If the list owner has already taken the timer
 * off the list to run it (the callback is about to run or running in the
 * owner's thread), the callback still runs: use the owner's thread to
 * avoid that race.  Does not notify the event loop (a deadline can only
 * become later).  Cheap (no lock) when the timer is not pending.  O(1)
 * amortized: unless the timer is the earliest, its place in the heap is
 * only marked empty; the library never touches @ts again, so it may be
 * freed or reused at once.
 *
 * Thread: any.
 */
AIOLOOP_API void timer_del(QEMUTimer *ts);

/**
 * timer_mod_ns: arm or re-arm a timer, in nanoseconds
 * @ts: the timer
 * @expire_time: absolute expire time in ns on the timer's clock; negative
 *   values count as 0
 *
 * Replaces any previous expire time.  Among timers with equal expire times,
 * the one armed first runs first.  If the call makes @ts the earliest timer
 * of its list with an earlier deadline than the list had before, the list's
 * notify callback is called (after the lock is dropped) so a sleeping event
 * loop recomputes its timeout; otherwise nobody is notified.  O(log n).
 *
 * Thread: any.
 */
AIOLOOP_API void timer_mod_ns(QEMUTimer *ts, int64_t expire_time);

/**
 * timer_mod: arm or re-arm a timer, in the timer's scale
 * @ts: the timer
 * @expire_timer: absolute expire time in units of the timer's scale;
 *   negative values count as 0, values too big for ns saturate
 *
 * timer_mod_ns() with @expire_timer * scale.  Thread: any.
 */
AIOLOOP_API void timer_mod(QEMUTimer *ts, int64_t expire_timer);

/**
 * timer_mod_anticipate_ns: make a timer expire no later than a time
 * @ts: the timer
 * @expire_time: absolute expire time in ns (negative values count as 0)
 *
 * Arms @ts for @expire_time if it is not pending or pending for a later
 * time; leaves it alone otherwise.  Notifies as timer_mod_ns().
 *
 * Thread: any.
 */
AIOLOOP_API void timer_mod_anticipate_ns(QEMUTimer *ts, int64_t expire_time);

/**
 * timer_mod_anticipate: make a timer expire no later than a time, in scale
 * @ts: the timer
 * @expire_time: absolute expire time in units of the timer's scale
 *
 * timer_mod_anticipate_ns() with @expire_time * scale.  Thread: any.
 */
AIOLOOP_API void timer_mod_anticipate(QEMUTimer *ts, int64_t expire_time);

/**
 * timer_pending: is a timer armed?
 * @ts: the timer
 *
 * Lock-free (one load).  A timer stops being pending just before its
 * callback runs.
 * Thread: any (stale if other threads change the timer).
 *
 * Returns: true if @ts is armed and has not run or been deleted since.
 */
AIOLOOP_API bool timer_pending(const QEMUTimer *ts);

/**
 * timer_expired: has a timer's time come?
 * @timer_head: the timer
 * @current_time: a time in units of the timer's scale
 *
 * As in QEMU, a timer that is not pending (never armed, deleted, or already
 * run) counts as expired.  Takes the list lock if the timer is pending.
 * Thread: any.
 *
 * Returns: true if @timer_head is not pending or its expire time is at or
 * before @current_time.
 */
AIOLOOP_API bool timer_expired(const QEMUTimer *timer_head,
                               int64_t current_time);

/**
 * timer_expire_time_ns: when a timer will expire
 * @ts: the timer
 *
 * The expire time is kept in the list's heap, so this takes the list lock
 * when the timer is pending (not when it is idle).  Thread: any.
 *
 * Returns: the expire time in ns, or (uint64_t)-1 if @ts is not pending.
 */
AIOLOOP_API uint64_t timer_expire_time_ns(const QEMUTimer *ts);

/*
 * Timeouts
 */

/**
 * qemu_soonest_timeout: the earlier of two timeouts
 * @timeout1: a timeout in ns, -1 meaning "infinite"
 * @timeout2: a timeout in ns, -1 meaning "infinite"
 *
 * An unsigned comparison makes -1 larger than every other value.
 *
 * Returns: the smaller timeout, -1 only if both are -1.
 */
static inline int64_t qemu_soonest_timeout(int64_t timeout1, int64_t timeout2)
{
    return ((uint64_t)timeout1 < (uint64_t)timeout2) ? timeout1 : timeout2;
}

/**
 * qemu_timeout_ns_to_ms: convert a timeout for poll()-style calls
 * @ns: timeout in ns; negative means infinite
 *
 * Rounds up (waiting a little too long beats busy-waiting) and caps at
 * INT32_MAX ms (about 25 days).  Thread: any.
 *
 * Returns: -1 for a negative @ns, 0 for 0, otherwise ceil(@ns / 1e6)
 * capped at INT32_MAX.
 */
AIOLOOP_API int qemu_timeout_ns_to_ms(int64_t ns);

AIOLOOP_END_DECLS

#endif
