/*
 * aioloop: AioContext, bottom halves, fd handlers, event notifiers
 *
 * The API of QEMU's include/block/aio.h: same names, signatures and
 * semantics.  An AioContext is a small event loop that one thread (its
 * "home thread") runs with aio_poll(); any thread may schedule bottom
 * halves, register handlers or arm timers on it.
 *
 * Not provided: the Windows-only calls (aio_set_event_notifier with a
 * HANDLE, qemu_add_wait_object).  AioContext is opaque here, unlike QEMU's
 * header, so the timer helpers below are functions rather than inlines.
 */
#ifndef AIOLOOP_AIO_H
#define AIOLOOP_AIO_H

#include <stdbool.h>
#include <stdint.h>

#include <aioloop/compiler.h>
#include <aioloop/error.h>
#include <aioloop/event-notifier.h>
#include <aioloop/timer.h>

AIOLOOP_BEGIN_DECLS

typedef struct AioContext AioContext;
typedef struct QEMUBH QEMUBH;
typedef struct AioHandler AioHandler;
typedef void QEMUBHFunc(void *opaque);
typedef bool AioPollFn(void *opaque);
typedef void IOHandler(void *opaque);

/**
 * MemReentrancyGuard:
 * @engaged_in_io: true while a bottom half guarded by this structure runs.
 *
 * Owned by the caller (in QEMU, a device).  aio_bh_call() sets
 * @engaged_in_io around a guarded BH's callback and restores the previous
 * value afterwards; the owner checks it to refuse re-entrant accesses.
 */
typedef struct MemReentrancyGuard {
    bool engaged_in_io;
} MemReentrancyGuard;

/**
 * AioloopContextStats: counters kept by aio_poll() (our addition).
 * @iterations: aio_poll() calls.
 * @bh_runs: bottom-half callbacks run.
 * @fd_dispatches: fd handler callbacks run (the context's notifier excluded).
 * @poll_hits: busy-poll windows that found an event.
 * @poll_misses: busy-poll windows that ended without one.
 * @blocked_ns: nanoseconds spent blocked in the fd monitor.
 * @wakeups: times the context's EventNotifier was written by aio_notify().
 */
typedef struct AioloopContextStats {
    uint64_t iterations;
    uint64_t bh_runs;
    uint64_t fd_dispatches;
    uint64_t poll_hits;
    uint64_t poll_misses;
    uint64_t blocked_ns;
    uint64_t wakeups;
} AioloopContextStats;

/**
 * aio_context_new: Allocate a new AioContext.
 * @errp: error object, set on failure.
 *
 * AioContext provide a mini event-loop that can be waited on synchronously.
 * They also provide bottom halves, a service to execute a piece of code
 * as soon as possible.  The fd monitor is chosen at run time: io_uring if the
 * kernel allows it, else poll, which switches itself to epoll once 64 fds are
 * watched (and back to poll if epoll refuses an fd, e.g. a regular file).
 * The environment variable AIOLOOP_FDMON=poll|epoll|io_uring forces one; a
 * forced backend that cannot be set up is an error, not a silent fallback
 * (forced epoll still falls back to poll for an fd epoll refuses, so that
 * the handler keeps working).  AIOLOOP_NO_IO_URING=1 skips io_uring in the
 * automatic choice.
 *
 * May be called from any thread.  The caller owns one reference.
 *
 * Returns: the new context, or NULL with @errp set.
 */
AIOLOOP_API AioContext *aio_context_new(Error **errp);

/**
 * aio_context_ref:
 * @ctx: The AioContext to operate on.
 *
 * Add a reference to an AioContext.  Any thread.
 */
AIOLOOP_API void aio_context_ref(AioContext *ctx);

/**
 * aio_context_unref:
 * @ctx: The AioContext to operate on (NULL is a no-op).
 *
 * Drop a reference to an AioContext.  The last reference frees it: every
 * bottom half created on it must have been deleted with qemu_bh_delete()
 * before, and no one-shot BH may still be pending, otherwise the process
 * aborts with "BH '<name>' leaked" (work would be lost silently).  Deleted
 * BHs still queued are freed; fd handlers still
 * registered are dropped without being called.  Must not be called while
 * aio_poll() runs on @ctx.
 */
AIOLOOP_API void aio_context_unref(AioContext *ctx);

/**
 * aio_context_acquire: (legacy) Take the context's recursive lock.
 * @ctx: the AioContext
 *
 * QEMU 9.0 removed this lock; aioloop keeps it for code written against
 * older releases.  It protects nothing inside aioloop: every aioloop
 * function is thread-safe as documented without it.  Use it only to
 * serialise your own code the way that older code expects.
 */
AIOLOOP_API void aio_context_acquire(AioContext *ctx);

/**
 * aio_context_release: (legacy) Release the lock taken by
 * aio_context_acquire().
 * @ctx: the AioContext
 */
AIOLOOP_API void aio_context_release(AioContext *ctx);

/**
 * aio_bh_schedule_oneshot_full: Allocate a new bottom half structure that will
 * run only once and as soon as possible.
 * @ctx: the context that runs it
 * @cb: the callback
 * @opaque: its argument
 * @name: A human-readable identifier for debugging purposes.
 *
 * Any thread.  The BH frees itself after running; @ctx must run it before
 * its last reference goes.
 */
AIOLOOP_API void aio_bh_schedule_oneshot_full(AioContext *ctx, QEMUBHFunc *cb,
                                              void *opaque, const char *name);

/**
 * aio_bh_schedule_oneshot: Allocate a new bottom half structure that will run
 * only once and as soon as possible.
 *
 * A convenience wrapper for aio_bh_schedule_oneshot_full() that uses cb as the
 * name string.
 */
#define aio_bh_schedule_oneshot(ctx, cb, opaque) \
    aio_bh_schedule_oneshot_full((ctx), (cb), (opaque), (stringify(cb)))

/**
 * aio_bh_new_full: Allocate a new bottom half structure.
 * @ctx: the context that runs it
 * @cb: the callback
 * @opaque: its argument
 * @name: A human-readable identifier for debugging purposes (not copied: it
 *        must outlive the BH; string literals do).
 * @reentrancy_guard: A guard set when entering a cb to prevent
 *        device-reentrancy issues, or NULL.
 *
 * Bottom halves are lightweight callbacks whose invocation is guaranteed
 * to be wait-free, thread-safe and signal-safe.  The caller owns the BH and
 * must free it with qemu_bh_delete() before @ctx is freed.
 */
AIOLOOP_API QEMUBH *aio_bh_new_full(AioContext *ctx, QEMUBHFunc *cb,
                                    void *opaque, const char *name,
                                    MemReentrancyGuard *reentrancy_guard);

/**
 * aio_bh_new: Allocate a new bottom half structure
 *
 * A convenience wrapper for aio_bh_new_full() that uses the cb as the name
 * string.
 */
#define aio_bh_new(ctx, cb, opaque) \
    aio_bh_new_full((ctx), (cb), (opaque), (stringify(cb)), NULL)

/**
 * aio_bh_new_guarded: Allocate a new bottom half structure with a
 * reentrancy_guard
 *
 * A convenience wrapper for aio_bh_new_full() that uses the cb as the name
 * string.
 */
#define aio_bh_new_guarded(ctx, cb, opaque, guard) \
    aio_bh_new_full((ctx), (cb), (opaque), (stringify(cb)), guard)

/**
 * aio_notify: Force processing of pending events.
 * @ctx: the context
 *
 * Similar to signaling a condition variable, aio_notify forces
 * aio_poll to exit, so that the next call will re-examine pending events.
 * The eventfd is written only when a poller may be blocking (notify_me),
 * so a call is a couple of atomic operations when nobody sleeps.
 *
 * Calling aio_notify is rarely necessary, because for example scheduling
 * a bottom half calls it already.  Any thread.
 */
AIOLOOP_API void aio_notify(AioContext *ctx);

/**
 * aio_notify_accept: Acknowledge receiving an aio_notify.
 * @ctx: the context
 *
 * Clears the "notified" flag before events are processed.  Used internally
 * by aio_poll(); home thread only.
 */
AIOLOOP_API void aio_notify_accept(AioContext *ctx);

/**
 * aio_bh_call: Executes callback function of the specified BH.
 * @bh: the bottom half
 *
 * Sets the BH's reentrancy guard (if any) around the callback and restores
 * it afterwards; the callback may delete @bh.  Home thread.
 */
AIOLOOP_API void aio_bh_call(QEMUBH *bh);

/**
 * aio_bh_poll: Poll bottom halves for an AioContext.
 * @ctx: the context
 *
 * Runs the BHs scheduled so far.  BHs scheduled while it runs (including a
 * BH rescheduling itself) wait for the next call.  A nested call (from a
 * callback) first finishes the slices of the calls it is nested in.  Frees
 * deleted and one-shot BHs.  Home thread only; not concurrently with itself.
 *
 * Returns: 1 if a BH other than an idle BH ran, else 0.
 */
AIOLOOP_API int aio_bh_poll(AioContext *ctx);

/**
 * qemu_bh_schedule: Schedule a bottom half.
 * @bh: The bottom half to be scheduled.
 *
 * The callback runs once in the next aio_bh_poll() of the BH's context, no
 * matter how many times it was scheduled before that.  Wait-free,
 * thread-safe and async-signal-safe.
 */
AIOLOOP_API void qemu_bh_schedule(QEMUBH *bh);

/**
 * qemu_bh_schedule_idle: Schedule a bottom half to run within 10 ms.
 * @bh: The bottom half to be scheduled.
 *
 * Like qemu_bh_schedule(), but a blocking aio_poll() may sleep up to 10 ms
 * before running it, and running it does not count as progress.
 */
AIOLOOP_API void qemu_bh_schedule_idle(QEMUBH *bh);

/**
 * qemu_bh_cancel: Cancel execution of a bottom half.
 * @bh: The bottom half to be canceled.
 *
 * Canceling execution of a bottom half undoes the effect of calls to
 * qemu_bh_schedule without freeing its resources yet.  Wait-free and
 * thread-safe, but from another thread it races with a concurrent run.
 */
AIOLOOP_API void qemu_bh_cancel(QEMUBH *bh);

/**
 * qemu_bh_delete: Cancel execution of a bottom half and free its resources.
 * @bh: The bottom half to be deleted (NULL is a no-op).
 *
 * Asynchronous: the BH will not run again and is freed by the next
 * aio_bh_poll() of its context.  Safe from the BH's own callback and from
 * any thread.  Deleting a BH twice aborts.
 */
AIOLOOP_API void qemu_bh_delete(QEMUBH *bh);

/**
 * aio_prepare: Return whether there are any pending callbacks from the
 * GSource attached to the AioContext, before g_poll is invoked.
 * @ctx: the context
 *
 * Runs one userspace poll of the polled handlers.  Home thread: like
 * aio_poll(), binds an unbound @ctx to the caller and aborts elsewhere.
 */
AIOLOOP_API bool aio_prepare(AioContext *ctx);

/**
 * aio_pending: Return whether there are any pending callbacks from the
 * GSource attached to the AioContext, after g_poll is invoked.
 * @ctx: the context
 *
 * True if a BH is scheduled or a handler has a ready event.  Home thread,
 * as for aio_prepare().
 */
AIOLOOP_API bool aio_pending(AioContext *ctx);

/**
 * aio_dispatch: Dispatch any pending callbacks.
 * @ctx: the context
 *
 * Runs scheduled BHs, ready fd handlers (checked without blocking) and
 * expired timers.  Home thread.
 */
AIOLOOP_API void aio_dispatch(AioContext *ctx);

/**
 * aio_poll: Make progress on the AioContext.
 * @ctx: the context
 * @blocking: wait for an event if none is ready
 *
 * One loop iteration: busy-poll the pollable handlers when adaptive polling
 * is on, wait for fds (unless @blocking is false), then run scheduled BHs,
 * ready fd handlers and expired timers.  See docs/design.md for the phases.
 *
 * Home thread only: the first thread to call it (or to pass the context to
 * qemu_set_current_aio_context()) becomes the home thread, and a call from
 * any other thread aborts.
 *
 * Returns: true if a BH, fd handler or timer callback ran.  The context's own
 * notifier and idle BHs are not progress, so a blocking call may return
 * false after a bare aio_notify().
 */
AIOLOOP_API bool no_coroutine_fn aio_poll(AioContext *ctx, bool blocking);

/**
 * aio_set_fd_handler: Register, change or remove the handlers of an fd.
 * @ctx: the context
 * @fd: the file descriptor
 * @io_read: called while @fd is readable (POLLIN, POLLHUP or POLLERR)
 * @io_write: called while @fd is writable (POLLOUT or POLLERR)
 * @io_poll: userspace check for readiness, used by adaptive polling; it must
 *           not have side effects.  Dropped if @io_poll_ready is NULL.
 * @io_poll_ready: called instead of @io_read/@io_write when @io_poll found
 *                 the fd ready
 * @opaque: argument for every callback
 *
 * Level-triggered and "replace" semantics: the new set of callbacks replaces
 * the old; all callbacks NULL removes the fd.  O(1) however many fds are
 * registered.  Any thread, including from inside callbacks.  A handler
 * removed or replaced during dispatch is never called again, not even later
 * in the same iteration.
 */
AIOLOOP_API void aio_set_fd_handler(AioContext *ctx, int fd,
                                    IOHandler *io_read, IOHandler *io_write,
                                    AioPollFn *io_poll,
                                    IOHandler *io_poll_ready, void *opaque);

/**
 * aio_set_event_notifier: Register an event notifier and its callbacks.
 * @ctx: the context
 * @notifier: the notifier (its read fd is monitored)
 * @io_read: called while the notifier is set, with @notifier as argument
 * @io_poll: userspace readiness check, called with @notifier
 * @io_poll_ready: called when @io_poll succeeded
 *
 * Same as aio_set_fd_handler() on event_notifier_get_fd(@notifier).
 */
AIOLOOP_API void aio_set_event_notifier(AioContext *ctx,
                                        EventNotifier *notifier,
                                        EventNotifierHandler *io_read,
                                        AioPollFn *io_poll,
                                        EventNotifierHandler *io_poll_ready);

/**
 * aio_set_event_notifier_poll: Set polling begin/end callbacks.
 * @ctx: the context
 * @notifier: an event notifier already registered on @ctx
 * @io_poll_begin: called when the loop starts busy-polling
 * @io_poll_end: called when it stops
 *
 * Does nothing if the event notifier is not registered.  If io_poll_end (or
 * the whole notifier) is removed during polling, it is not called, so an
 * io_poll_begin() is not always followed by an io_poll_end().
 */
AIOLOOP_API void aio_set_event_notifier_poll(AioContext *ctx,
                                             EventNotifier *notifier,
                                             EventNotifierHandler *io_poll_begin,
                                             EventNotifierHandler *io_poll_end);

/**
 * aio_poll_disabled: Is userspace polling disabled?
 * @ctx: the context
 *
 * Returns: true if some registered handler has no io_poll callback.
 */
AIOLOOP_API bool aio_poll_disabled(AioContext *ctx);

/**
 * aio_timer_new_with_attrs: Allocate a timer attached to @ctx.
 * @ctx: the aio context
 * @type: the clock type
 * @scale: the scale (SCALE_NS, SCALE_US, SCALE_MS)
 * @attributes: 0, or one to multiple OR'ed QEMU_TIMER_ATTR_<id> values
 * @cb: the callback to call on timer expiry, in @ctx's home thread
 * @opaque: the opaque pointer to pass to the callback
 *
 * Returns: a timer to free with timer_free().
 */
AIOLOOP_API QEMUTimer *aio_timer_new_with_attrs(AioContext *ctx,
                                                QEMUClockType type, int scale,
                                                int attributes,
                                                QEMUTimerCB *cb, void *opaque);

/**
 * aio_timer_new: Allocate a timer attached to @ctx.
 *
 * aio_timer_new_with_attrs() with no attributes.
 */
AIOLOOP_API QEMUTimer *aio_timer_new(AioContext *ctx, QEMUClockType type,
                                     int scale, QEMUTimerCB *cb, void *opaque);

/**
 * aio_timer_init_with_attrs: Initialise a caller-allocated timer attached to
 * @ctx.  Parameters as for aio_timer_new_with_attrs(); undo with
 * timer_deinit() after timer_del().
 */
AIOLOOP_API void aio_timer_init_with_attrs(AioContext *ctx, QEMUTimer *ts,
                                           QEMUClockType type, int scale,
                                           int attributes, QEMUTimerCB *cb,
                                           void *opaque);

/**
 * aio_timer_init: aio_timer_init_with_attrs() with no attributes.
 */
AIOLOOP_API void aio_timer_init(AioContext *ctx, QEMUTimer *ts,
                                QEMUClockType type, int scale,
                                QEMUTimerCB *cb, void *opaque);

/**
 * aio_get_timerlistgroup: The timer lists of @ctx (our addition; QEMU code
 * reads ctx->tlg, which is private here).
 */
AIOLOOP_API QEMUTimerListGroup *aio_get_timerlistgroup(AioContext *ctx);

/**
 * aio_compute_timeout:
 * @ctx: the aio context
 *
 * Compute the timeout that a blocking aio_poll should use: 0 if a BH is
 * scheduled, at most 10 ms if only idle BHs are, else the nearest timer
 * deadline, or -1 (forever).  Home thread.
 */
AIOLOOP_API int64_t aio_compute_timeout(AioContext *ctx);

/**
 * qemu_get_current_aio_context: Return the AioContext whose event loop runs
 * in the current thread, as set by qemu_set_current_aio_context(), or NULL.
 *
 * Unlike QEMU, a thread holding the BQL that is not the main loop's thread
 * gets NULL (or its own context), not the main context: only a context's
 * home thread may run its loop (docs/main-loop.md, section 5).
 */
AIOLOOP_API AioContext *qemu_get_current_aio_context(void);

/**
 * qemu_set_current_aio_context: Make @ctx the current thread's context.
 * @ctx: the context; the thread becomes its home thread.
 *
 * May be called once per thread (with NULL to clear it before the thread
 * exits).  Aborts if @ctx already has another home thread.
 */
AIOLOOP_API void qemu_set_current_aio_context(AioContext *ctx);

/**
 * in_aio_context_home_thread: Is the caller @ctx's home thread?
 * @ctx: the context
 *
 * The home thread is the one that set @ctx as its current context or first
 * ran its loop.  Holding the BQL does not count (QEMU counts it for the
 * main context; see qemu_get_current_aio_context()).
 */
AIOLOOP_API bool in_aio_context_home_thread(AioContext *ctx);

/**
 * aio_context_setup:
 * @ctx: the aio context
 *
 * Choose the context's fd monitor (done by aio_context_new(); calling it
 * again after aio_context_destroy() sets the monitor up again with every
 * registered handler).  Not while aio_poll() runs on @ctx.
 */
AIOLOOP_API void aio_context_setup(AioContext *ctx);

/**
 * aio_context_destroy:
 * @ctx: the aio context
 *
 * Release the fd monitor's kernel objects (epoll fd, io_uring ring) and fall
 * back to the poll monitor.  Registered handlers stay registered.  Called by
 * the last aio_context_unref().  Not while aio_poll() runs on @ctx.
 */
AIOLOOP_API void aio_context_destroy(AioContext *ctx);

/**
 * aio_context_set_poll_params:
 * @ctx: the aio context
 * @max_ns: how long to busy poll for, in nanoseconds (0 disables polling)
 * @grow: polling time growth factor (0 means 2)
 * @shrink: polling time shrink factor (0 means reset to 0)
 * @errp: set when a value is negative
 *
 * Resets every handler's polling window.  Any thread.
 */
AIOLOOP_API void aio_context_set_poll_params(AioContext *ctx, int64_t max_ns,
                                             int64_t grow, int64_t shrink,
                                             Error **errp);

/**
 * aio_context_set_aio_params:
 * @ctx: the aio context
 * @max_batch: maximum number of requests in a batch, 0 means that the
 *             engine will use its default
 */
AIOLOOP_API void aio_context_set_aio_params(AioContext *ctx, int64_t max_batch);

/**
 * aio_context_set_thread_pool_params:
 * @ctx: the aio context
 * @min: min number of threads to have readily available in the thread pool
 * @max: max number of threads the thread pool can contain
 * @errp: set when min > max, max <= 0, min < 0, or a value exceeds INT_MAX
 *
 * The values apply to the context's worker pool.
 */
AIOLOOP_API void aio_context_set_thread_pool_params(AioContext *ctx,
                                                    int64_t min, int64_t max,
                                                    Error **errp);

/**
 * aioloop_context_fdmon_name: Name of @ctx's fd monitor: "poll", "epoll"
 * or "io_uring" (our addition).
 */
AIOLOOP_API const char *aioloop_context_fdmon_name(AioContext *ctx);

/**
 * aioloop_context_get_stats: Copy @ctx's counters into @stats (our addition).
 *
 * Any thread; values read from another thread may be slightly stale.
 */
AIOLOOP_API void aioloop_context_get_stats(AioContext *ctx,
                                           AioloopContextStats *stats);

/**
 * aioloop_context_get_poll_ns: The largest current polling window among
 * @ctx's handlers, in ns (our addition, for tests and monitoring).  Home
 * thread only.
 */
AIOLOOP_API int64_t aioloop_context_get_poll_ns(AioContext *ctx);

AIOLOOP_END_DECLS

#endif
