/*
 * aioloop: coroutines, coroutine locks, sleeping, and running coroutines in
 * an AioContext.
 *
 * The API of QEMU's include/qemu/coroutine.h, coroutine-core.h and the
 * aio_co_* part of include/block/aio.h: same names, signatures and
 * semantics.  A coroutine is a function with its own stack that can yield
 * back to whoever entered it and be entered again later, possibly from
 * another thread.  docs/coroutines.md explains the design (context switch,
 * stacks, pool, sanitizers).
 *
 * Threading: a coroutine runs in one thread at a time.  It may move to
 * another thread between a yield and the next enter (aio_co_schedule(),
 * aio_co_reschedule_self()); do not keep pointers to thread-local variables
 * across a yield.
 */
#ifndef AIOLOOP_COROUTINE_H
#define AIOLOOP_COROUTINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <aioloop/aio.h>
#include <aioloop/compiler.h>
#include <aioloop/lockable.h>
#include <aioloop/timer.h>

AIOLOOP_BEGIN_DECLS

/**
 * Coroutine: an opaque coroutine.
 *
 * Created by qemu_coroutine_create(), freed (returned to the pool)
 * automatically when its entry function returns.
 */
typedef struct Coroutine Coroutine;

/**
 * CoroutineEntry: the function a coroutine runs.
 * @opaque: the argument given to qemu_coroutine_create().
 */
typedef void coroutine_fn CoroutineEntry(void *opaque);

/**
 * qemu_coroutine_create: Create a new coroutine.
 * @entry: the function it runs
 * @opaque: @entry's argument
 *
 * Any thread.  Use qemu_coroutine_enter() (or aio_co_enter()) to start it.
 * The coroutine frees itself when @entry returns; it must not hold a
 * CoMutex then.  Stacks come from a pool (see docs/coroutines.md), so this
 * is cheap.  Aborts with a message if no stack can be mapped.
 *
 * Returns: the coroutine.
 */
AIOLOOP_API Coroutine *qemu_coroutine_create(CoroutineEntry *entry,
                                             void *opaque);

/**
 * qemu_coroutine_enter: Transfer control to a coroutine.
 * @co: the coroutine
 *
 * qemu_aio_coroutine_enter() with the calling thread's current AioContext
 * (qemu_get_current_aio_context(), may be NULL).
 */
AIOLOOP_API void qemu_coroutine_enter(Coroutine *co);

/**
 * qemu_aio_coroutine_enter: Transfer control to a coroutine that runs in @ctx.
 * @ctx: the AioContext it runs in (qemu_coroutine_get_aio_context() returns it)
 * @co: the coroutine
 *
 * Runs @co until it yields or terminates, then every coroutine it woke with
 * aio_co_wake()/qemu_co_queue_next() meanwhile (depth-first, in a loop: a
 * chain of wake-ups does not grow the C stack), then returns.  Aborts with
 * "Co-routine re-entered recursively" if @co is running, and with
 * "Co-routine was already scheduled in '<fn>'" if @co is scheduled (by
 * aio_co_schedule(), a sleep, ...).
 */
AIOLOOP_API void qemu_aio_coroutine_enter(AioContext *ctx, Coroutine *co);

/**
 * qemu_coroutine_enter_if_inactive: Enter @co unless it is already running
 * (between its enter and its yield).
 * @co: the coroutine
 */
AIOLOOP_API void qemu_coroutine_enter_if_inactive(Coroutine *co);

/**
 * qemu_coroutine_yield: Transfer control back to whoever entered the
 * current coroutine.
 *
 * Coroutine context only: outside a coroutine it aborts with "Co-routine is
 * yielding to no one".
 */
AIOLOOP_API void coroutine_fn qemu_coroutine_yield(void);

/**
 * qemu_coroutine_self: Get the currently executing coroutine.
 *
 * Outside a coroutine, returns the thread's "leader" pseudo-coroutine (never
 * NULL); qemu_in_coroutine() tells the two apart.
 */
AIOLOOP_API Coroutine *coroutine_mixed_fn qemu_coroutine_self(void);

/**
 * qemu_in_coroutine: Return true if called in coroutine context.
 */
AIOLOOP_API bool qemu_in_coroutine(void);

/**
 * qemu_coroutine_entered: Is @co running (entered and not yet yielded)?
 * @co: the coroutine
 *
 * Meant for debugging and for qemu_coroutine_enter_if_inactive(); the answer
 * may be stale by the time it is used if another thread can enter @co.
 */
AIOLOOP_API bool qemu_coroutine_entered(Coroutine *co);

/**
 * qemu_coroutine_get_aio_context: the AioContext @co was last entered in
 * (set by qemu_aio_coroutine_enter(); NULL if entered with no current
 * context).
 * @co: the coroutine
 */
AIOLOOP_API AioContext *qemu_coroutine_get_aio_context(Coroutine *co);

/**
 * qemu_coroutine_inc_pool_size: Allow the shared pool to keep @additional_pool_size
 * more finished coroutines (e.g. a device with many queues).
 * @additional_pool_size: number of coroutines
 *
 * Any thread.  The pool also grows by itself with demand (see
 * docs/coroutines.md); this raises its floor.
 */
AIOLOOP_API void qemu_coroutine_inc_pool_size(unsigned int additional_pool_size);

/**
 * qemu_coroutine_dec_pool_size: Undo qemu_coroutine_inc_pool_size().
 * @additional_pool_size: number of coroutines
 */
AIOLOOP_API void qemu_coroutine_dec_pool_size(unsigned int additional_pool_size);

/**
 * aioloop_coroutine_set_stack_size: Stack size of coroutines created from now
 * on (our addition; QEMU's is fixed at 1 MiB).
 * @bytes: usable stack bytes, rounded up to whole pages; between 16 KiB and
 *         1 GiB.  One guard page below the stack is added.
 *
 * Any thread.  Pooled coroutines of the old size are not reused.
 *
 * Returns: 0, or -EINVAL for a size out of range.
 */
AIOLOOP_API int aioloop_coroutine_set_stack_size(size_t bytes);

/**
 * aioloop_coroutine_get_stack_size: the current coroutine stack size in
 * bytes (default 1 MiB).
 */
AIOLOOP_API size_t aioloop_coroutine_get_stack_size(void);

/* ---- running coroutines in an AioContext ------------------------------ */

/**
 * aio_co_schedule:
 * @ctx: the AioContext
 * @co: the coroutine
 *
 * Start a coroutine on a remote AioContext.
 *
 * The coroutine must not be entered by anyone else while aio_co_schedule()
 * is active.  In addition the coroutine must have yielded unless ctx
 * is the context in which the coroutine is running (i.e. the value of
 * qemu_get_current_aio_context() from the coroutine itself).
 *
 * Any thread.  Coroutines scheduled on one context are entered in FIFO
 * order by a bottom half of @ctx.  Scheduling a coroutine that is already
 * scheduled aborts with "Co-routine was already scheduled in '<fn>'".
 */
AIOLOOP_API void aio_co_schedule(AioContext *ctx, Coroutine *co);

/**
 * aio_co_reschedule_self:
 * @new_ctx: the new context
 *
 * Move the currently running coroutine to @new_ctx.  If the coroutine is
 * already running in @new_ctx, do nothing.  Coroutine context only; the
 * calling thread must have a current AioContext.
 */
AIOLOOP_API void coroutine_fn aio_co_reschedule_self(AioContext *new_ctx);

/**
 * aio_co_wake:
 * @co: the coroutine
 *
 * Restart a coroutine on the AioContext where it was running last, thus
 * preventing coroutines from jumping from one context to another when they
 * go to sleep.
 *
 * aio_co_wake may be executed either in coroutine or non-coroutine
 * context.  The coroutine must not be entered by anyone else while
 * aio_co_wake() is active.
 */
AIOLOOP_API void aio_co_wake(Coroutine *co);

/**
 * aio_co_enter:
 * @ctx: the context to run the coroutine
 * @co: the coroutine to run
 *
 * Enter a coroutine in the specified AioContext: scheduled there if @ctx is
 * not the caller's current context; queued to run when the calling
 * coroutine yields if called from a coroutine; entered at once otherwise.
 */
AIOLOOP_API void aio_co_enter(AioContext *ctx, Coroutine *co);

/* ---- CoQueue ---------------------------------------------------------- */

/**
 * CoQueue: a FIFO of coroutines waiting for something.  Fields are private.
 */
typedef struct CoQueue {
    struct {
        Coroutine *sqh_first;
        Coroutine **sqh_last;
    } entries;
} CoQueue;

/* Flags of qemu_co_queue_wait_flags(). */
typedef enum {
    /* Enqueue at the front of the queue instead of the back. */
    CO_QUEUE_WAIT_FRONT = 0x1,
} CoQueueWaitFlags;

/**
 * qemu_co_queue_init: Initialise a CoQueue.  It needs no destruction.
 * @queue: the queue
 */
AIOLOOP_API void qemu_co_queue_init(CoQueue *queue);

/**
 * qemu_co_queue_wait_impl: see qemu_co_queue_wait().
 * @queue: the queue
 * @lock: the lock to drop while waiting, or NULL
 * @flags: CoQueueWaitFlags
 */
AIOLOOP_API void coroutine_fn qemu_co_queue_wait_impl(CoQueue *queue,
                                                      QemuLockable *lock,
                                                      CoQueueWaitFlags flags);

#ifndef __cplusplus
/**
 * qemu_co_queue_wait: Add the current coroutine to @queue and yield until it
 * is woken, dropping @lock meanwhile.
 * @queue: the queue
 * @lock: a CoMutex *, a pthread_mutex_t *, a QemuLockable * or NULL
 *
 * Coroutine context only.  @lock is dropped after the coroutine is queued
 * and taken again before this returns.
 */
#define qemu_co_queue_wait(queue, lock)                                      \
    qemu_co_queue_wait_impl(queue, QEMU_MAKE_LOCKABLE(lock), 0)
#define qemu_co_queue_wait_flags(queue, lock, flags)                         \
    qemu_co_queue_wait_impl(queue, QEMU_MAKE_LOCKABLE(lock), (flags))

/**
 * qemu_co_enter_next: Enter the first coroutine of @queue, dropping @lock
 * around the wake-up.
 * @queue: the queue
 * @lock: a lock the caller holds (as for qemu_co_queue_wait()) or NULL
 *
 * Returns: true if a coroutine was woken.
 */
#define qemu_co_enter_next(queue, lock)                                      \
    qemu_co_enter_next_impl(queue, QEMU_MAKE_LOCKABLE(lock))
#define qemu_co_enter_all(queue, lock)                                       \
    qemu_co_enter_all_impl(queue, QEMU_MAKE_LOCKABLE(lock))
#endif

/**
 * qemu_co_queue_next: Wake the first coroutine of @queue.
 * @queue: the queue
 *
 * Coroutine context: the woken coroutine runs when the caller yields or
 * terminates.  Outside coroutines it is entered before this returns.
 *
 * Returns: true if a coroutine was woken.
 */
AIOLOOP_API bool qemu_co_queue_next(CoQueue *queue);

/**
 * qemu_co_queue_restart_all: Wake every coroutine of @queue (as
 * qemu_co_queue_next(), in FIFO order).
 * @queue: the queue
 */
AIOLOOP_API void qemu_co_queue_restart_all(CoQueue *queue);

/**
 * qemu_co_enter_next_impl: see qemu_co_enter_next().
 * @queue: the queue
 * @lock: the lock to drop around the wake-up, or NULL
 *
 * Returns: true if a coroutine was woken.
 */
AIOLOOP_API bool qemu_co_enter_next_impl(CoQueue *queue, QemuLockable *lock);

/**
 * qemu_co_enter_all_impl: qemu_co_enter_next_impl() until @queue is empty.
 * @queue: the queue
 * @lock: the lock to drop around each wake-up, or NULL
 */
AIOLOOP_API void qemu_co_enter_all_impl(CoQueue *queue, QemuLockable *lock);

/**
 * qemu_co_queue_empty: Is @queue empty?
 * @queue: the queue
 */
AIOLOOP_API bool qemu_co_queue_empty(CoQueue *queue);

/* ---- CoMutex ---------------------------------------------------------- */

typedef struct CoWaitRecord CoWaitRecord;

/**
 * CoMutex: a mutex for coroutines, possibly running in different threads.
 * Fields are private.
 *
 * Uncontended lock/unlock is one compare-and-swap / one atomic decrement.
 * Waiters sleep (yield) and are handed the lock in FIFO order through
 * aio_co_wake(), i.e. in the AioContext they last ran in.
 */
struct CoMutex {
    /* Count of coroutines holding or waiting for the lock (atomic). */
    unsigned locked;
    /* Context of the holder; a contender in another context spins briefly. */
    AioContext *ctx;
    /* Waiters push here (lock-free); the unlocker moves them to to_pop. */
    struct {
        CoWaitRecord *slh_first;
    } from_push, to_pop;
    /* Wake-up responsibility hand-off between unlock and a racing lock. */
    unsigned handoff, sequence;
    Coroutine *holder;
};

/**
 * qemu_co_mutex_init: Initialise a CoMutex (unlocked).  It needs no
 * destruction.
 * @mutex: the mutex
 */
AIOLOOP_API void qemu_co_mutex_init(CoMutex *mutex);

/**
 * qemu_co_mutex_lock: Take @mutex, yielding while another coroutine holds it.
 * @mutex: the mutex
 *
 * Coroutine context only.  Not recursive.
 */
AIOLOOP_API void coroutine_fn qemu_co_mutex_lock(CoMutex *mutex);

/**
 * qemu_co_mutex_unlock: Release @mutex and wake the next waiter, if any.
 * @mutex: the mutex
 *
 * Coroutine context only, by the holder: otherwise it aborts with
 * "qemu_co_mutex_unlock: mutex not held by this coroutine".
 */
AIOLOOP_API void coroutine_fn qemu_co_mutex_unlock(CoMutex *mutex);

/**
 * qemu_co_mutex_assert_locked: Abort unless the current coroutine holds
 * @mutex.
 * @mutex: the mutex
 */
AIOLOOP_API void coroutine_fn qemu_co_mutex_assert_locked(CoMutex *mutex);

/* ---- CoRwlock --------------------------------------------------------- */

typedef struct CoRwTicket CoRwTicket;

/**
 * CoRwlock: a fair readers-writer lock for coroutines.  Fields are private.
 *
 * Requests are served in FIFO order: a reader queues behind a waiting
 * writer, so writers do not starve.
 */
typedef struct CoRwlock {
    CoMutex mutex;
    /* Number of readers, or -1 when a writer holds the lock (under mutex). */
    int owners;
    struct {
        CoRwTicket *sqh_first;
        CoRwTicket **sqh_last;
    } tickets;
} CoRwlock;

/**
 * qemu_co_rwlock_init: Initialise a CoRwlock (unlocked).
 * @lock: the lock
 */
AIOLOOP_API void qemu_co_rwlock_init(CoRwlock *lock);

/**
 * qemu_co_rwlock_rdlock: Take @lock for reading.  Several readers may hold it
 * at once; waits behind a writer holding or waiting for it.
 * @lock: the lock
 *
 * Coroutine context only.
 */
AIOLOOP_API void coroutine_fn qemu_co_rwlock_rdlock(CoRwlock *lock);

/**
 * qemu_co_rwlock_wrlock: Take @lock for writing (exclusive).
 * @lock: the lock
 *
 * Coroutine context only.
 */
AIOLOOP_API void coroutine_fn qemu_co_rwlock_wrlock(CoRwlock *lock);

/**
 * qemu_co_rwlock_upgrade: Turn a read lock into a write lock.
 * @lock: the lock, held for reading by the caller
 *
 * If the caller is not the only reader, or somebody is already waiting, it
 * waits in the queue like any other writer (behind a waiting writer).
 * Coroutine context only.
 */
AIOLOOP_API void coroutine_fn qemu_co_rwlock_upgrade(CoRwlock *lock);

/**
 * qemu_co_rwlock_downgrade: Turn a write lock into a read lock, without
 * waiting; readers queued right behind are let in.
 * @lock: the lock, held for writing by the caller
 */
AIOLOOP_API void coroutine_fn qemu_co_rwlock_downgrade(CoRwlock *lock);

/**
 * qemu_co_rwlock_unlock: Release a read or write lock.
 * @lock: the lock
 */
AIOLOOP_API void coroutine_fn qemu_co_rwlock_unlock(CoRwlock *lock);

/* ---- sleeping --------------------------------------------------------- */

/**
 * QemuCoSleep: a handle to wake a sleeping coroutine early.  Zero-initialise
 * it; fields are private.
 */
typedef struct QemuCoSleep {
    Coroutine *to_wake;
} QemuCoSleep;

/**
 * qemu_co_sleep_ns_wakeable: Yield for @ns nanoseconds of @type's clock, or
 * until qemu_co_sleep_wake(@w).
 * @w: the wake-up handle (not in use by another sleep)
 * @type: the clock
 * @ns: how long
 *
 * Coroutine context only, in a thread with a current AioContext: the timer
 * runs there.  While it sleeps the coroutine counts as scheduled: entering
 * it by other means aborts.
 */
AIOLOOP_API void coroutine_fn qemu_co_sleep_ns_wakeable(QemuCoSleep *w,
                                                        QEMUClockType type,
                                                        int64_t ns);

/**
 * qemu_co_sleep: Yield until qemu_co_sleep_wake(@w), no timeout.
 * @w: the wake-up handle
 */
AIOLOOP_API void coroutine_fn qemu_co_sleep(QemuCoSleep *w);

/**
 * qemu_co_sleep_ns: Yield for @ns nanoseconds of @type's clock.
 * @type: the clock
 * @ns: how long
 */
AIOLOOP_API void coroutine_fn qemu_co_sleep_ns(QEMUClockType type, int64_t ns);

/**
 * qemu_co_sleep_wake: Wake the coroutine sleeping on @w now, if any.
 * @w: the wake-up handle
 *
 * Any thread; a no-op when nothing sleeps on @w (e.g. the timer already
 * fired).  The coroutine resumes in the context it sleeps in.
 */
AIOLOOP_API void qemu_co_sleep_wake(QemuCoSleep *w);

/**
 * yield_until_fd_readable: Yield until @fd is readable (or hung up, or in
 * error).
 * @fd: the file descriptor
 *
 * Coroutine context only, in a thread with a current AioContext.  Replaces
 * any handler set on @fd in that context, and removes its own before the
 * coroutine resumes.
 */
AIOLOOP_API void coroutine_fn yield_until_fd_readable(int fd);

/**
 * CleanupFunc: frees what a timed-out qemu_co_timeout() entry still uses.
 */
typedef void CleanupFunc(void *opaque);

/**
 * qemu_co_timeout: Run @entry(@opaque) in a new coroutine, waiting at most
 * @timeout_ns for it.
 * @entry: the function
 * @opaque: @entry's argument
 * @timeout_ns: the limit, QEMU_CLOCK_REALTIME nanoseconds; 0 means no limit
 *              (@entry is called directly)
 * @clean: called with @opaque when @entry finishes after the timeout
 *         (may be NULL)
 *
 * Coroutine context only, with a current AioContext.  @entry is not
 * cancelled on timeout: it goes on and @clean runs when it ends.
 *
 * Returns: 0, or -ETIMEDOUT.
 */
AIOLOOP_API int coroutine_fn qemu_co_timeout(CoroutineEntry *entry,
                                             void *opaque, uint64_t timeout_ns,
                                             CleanupFunc clean);

AIOLOOP_END_DECLS

#endif
