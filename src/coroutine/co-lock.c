/*
 * Coroutine locks: CoQueue, CoMutex, CoRwlock, and the QemuLockable glue.
 *
 * As QEMU's util/qemu-coroutine-lock.c.  CoMutex is the lock-free mutex
 * QEMU took from OSv's lfmutex: "locked" counts holders plus waiters, the
 * uncontended path is one CAS; waiters push a record on a lock-free stack
 * and sleep; unlock pops one (FIFO, the stack is reversed into to_pop) and
 * wakes it with aio_co_wake(), in its own AioContext.  When unlock sees
 * locked > 1 but no record yet, the "responsibility hand-off" lets the
 * racing locker pick up the duty of waking somebody.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coroutine-int.h"
#include "aio-internal.h"

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#else
    __asm__ volatile("" ::: "memory");
#endif
}

static void co_lock_misuse(const char *fn, const char *what)
{
    error_report("%s: %s", fn, what);
    abort();
}

static Coroutine *self_in_coroutine(const char *fn)
{
    if (!qemu_in_coroutine()) {
        co_lock_misuse(fn, "called outside coroutine context");
    }
    return qemu_coroutine_self();
}

/* ---- QemuLockable ------------------------------------------------------ */

void aioloop_lockable_co_mutex_lock(void *mutex)
{
    qemu_co_mutex_lock(mutex);
}

void aioloop_lockable_co_mutex_unlock(void *mutex)
{
    qemu_co_mutex_unlock(mutex);
}

void aioloop_lockable_pthread_mutex_lock(void *mutex)
{
    int ret = pthread_mutex_lock(mutex);

    if (ret) {
        error_report("QemuLockable: pthread_mutex_lock: %s", strerror(ret));
        abort();
    }
}

void aioloop_lockable_pthread_mutex_unlock(void *mutex)
{
    int ret = pthread_mutex_unlock(mutex);

    if (ret) {
        error_report("QemuLockable: pthread_mutex_unlock: %s", strerror(ret));
        abort();
    }
}

/* ---- CoQueue ------------------------------------------------------------ */

void qemu_co_queue_init(CoQueue *queue)
{
    QSIMPLEQ_INIT(&queue->entries);
}

void coroutine_fn qemu_co_queue_wait_impl(CoQueue *queue, QemuLockable *lock,
                                          CoQueueWaitFlags flags)
{
    Coroutine *self = self_in_coroutine("qemu_co_queue_wait");

    if (flags & CO_QUEUE_WAIT_FRONT) {
        self->co_queue_next.sqe_next = queue->entries.sqh_first;
        if (!queue->entries.sqh_first) {
            queue->entries.sqh_last = &self->co_queue_next.sqe_next;
        }
        queue->entries.sqh_first = self;
    } else {
        QSIMPLEQ_INSERT_TAIL(&queue->entries, self, co_queue_next);
    }

    qemu_lockable_unlock(lock);

    /*
     * No race: a waker in another thread schedules us on our AioContext,
     * whose loop can enter us only after this yield.
     */
    qemu_coroutine_yield();

    /* No wait morphing (as in QEMU): retake the lock like anybody else. */
    qemu_lockable_lock(lock);
}

bool qemu_co_enter_next_impl(CoQueue *queue, QemuLockable *lock)
{
    Coroutine *next = QSIMPLEQ_FIRST(&queue->entries);

    if (!next) {
        return false;
    }
    QSIMPLEQ_REMOVE_HEAD(&queue->entries, co_queue_next);
    qemu_lockable_unlock(lock);
    aio_co_wake(next);
    qemu_lockable_lock(lock);
    return true;
}

bool coroutine_fn qemu_co_queue_next(CoQueue *queue)
{
    /* In coroutine context the wake-up is deferred: no unlock needed. */
    return qemu_co_enter_next_impl(queue, NULL);
}

void coroutine_fn qemu_co_queue_restart_all(CoQueue *queue)
{
    while (qemu_co_queue_next(queue)) {
        ;
    }
}

void qemu_co_enter_all_impl(CoQueue *queue, QemuLockable *lock)
{
    while (qemu_co_enter_next_impl(queue, lock)) {
        ;
    }
}

bool qemu_co_queue_empty(CoQueue *queue)
{
    return QSIMPLEQ_FIRST(&queue->entries) == NULL;
}

/* ---- CoMutex ------------------------------------------------------------ */

struct CoWaitRecord {
    Coroutine *co;
    QSLIST_ENTRY(CoWaitRecord) next;
};

void qemu_co_mutex_init(CoMutex *mutex)
{
    memset(mutex, 0, sizeof(*mutex));
}

static void push_waiter(CoMutex *mutex, CoWaitRecord *w)
{
    w->co = qemu_coroutine_self();
    QSLIST_INSERT_HEAD_ATOMIC(&mutex->from_push, w, next);
}

/*
 * to_pop is touched only by whoever holds the wake-up responsibility (an
 * unlocker, or a locker that took the hand-off), one at a time; its head
 * is still accessed atomically because has_waiters() peeks at it.
 */
static void move_waiters(CoMutex *mutex)
{
    QSLIST_HEAD(, CoWaitRecord) reversed;
    CoWaitRecord *head = qatomic_read(&mutex->to_pop.slh_first);

    QSLIST_MOVE_ATOMIC(&reversed, &mutex->from_push);
    while (!QSLIST_EMPTY(&reversed)) {
        CoWaitRecord *w = QSLIST_FIRST(&reversed);

        QSLIST_REMOVE_HEAD(&reversed, next);
        w->next.sle_next = head;
        head = w;
    }
    qatomic_set(&mutex->to_pop.slh_first, head);
}

static CoWaitRecord *pop_waiter(CoMutex *mutex)
{
    CoWaitRecord *w;

    if (!qatomic_read(&mutex->to_pop.slh_first)) {
        move_waiters(mutex);
    }
    w = qatomic_read(&mutex->to_pop.slh_first);
    if (w) {
        qatomic_set(&mutex->to_pop.slh_first, w->next.sle_next);
    }
    return w;
}

static bool has_waiters(CoMutex *mutex)
{
    return qatomic_read(&mutex->to_pop.slh_first) ||
           __atomic_load_n(&mutex->from_push.slh_first, __ATOMIC_ACQUIRE);
}

static void coroutine_fn qemu_co_mutex_wake(CoMutex *mutex, Coroutine *co)
{
    /* The new holder's context, for contenders deciding whether to spin. */
    qatomic_set(&mutex->ctx, __atomic_load_n(&co->ctx, __ATOMIC_ACQUIRE));
    aio_co_wake(co);
}

static void coroutine_fn qemu_co_mutex_lock_slowpath(AioContext *ctx,
                                                     CoMutex *mutex)
{
    Coroutine *self = qemu_coroutine_self();
    CoWaitRecord w;
    unsigned old_handoff;

    push_waiter(mutex, &w);

    /*
     * Add waiter before reading mutex->handoff (the push is a seq_cst CAS).
     * Pairs with the seq_cst store of handoff in qemu_co_mutex_unlock().
     *
     * This is the "Responsibility Hand-Off" protocol: a lock() picks from a
     * concurrent unlock() the responsibility of waking somebody up.
     */
    old_handoff = __atomic_load_n(&mutex->handoff, __ATOMIC_SEQ_CST);
    if (old_handoff &&
        has_waiters(mutex) &&
        qatomic_cmpxchg(&mutex->handoff, old_handoff, 0) == old_handoff) {
        /* No concurrent pops: only one hand-off is active at a time. */
        CoWaitRecord *to_wake = pop_waiter(mutex);
        Coroutine *co = to_wake->co;

        if (co == self) {
            /* We got the lock ourselves! */
            qatomic_set(&mutex->ctx, ctx);
            return;
        }
        qemu_co_mutex_wake(mutex, co);
    }

    qemu_coroutine_yield();
}

void coroutine_fn qemu_co_mutex_lock(CoMutex *mutex)
{
    AioContext *ctx = qemu_get_current_aio_context();
    Coroutine *self = self_in_coroutine("qemu_co_mutex_lock");
    unsigned waiters;
    int i = 0;

    /*
     * A short critical section held by a coroutine in another thread ends
     * sooner than a sleep/wake-up round trip: spin a little first (only
     * when exactly one holder and no waiter exists, and it runs elsewhere).
     */
retry_fast_path:
    waiters = qatomic_cmpxchg(&mutex->locked, 0, 1);
    if (waiters != 0) {
        while (waiters == 1 && ++i < 1000) {
            if (qatomic_read(&mutex->ctx) == ctx) {
                break;
            }
            if (qatomic_read(&mutex->locked) == 0) {
                goto retry_fast_path;
            }
            cpu_relax();
        }
        waiters = qatomic_fetch_add(&mutex->locked, 1);
    }

    if (waiters == 0) {
        /* Uncontended. */
        qatomic_set(&mutex->ctx, ctx);
    } else {
        qemu_co_mutex_lock_slowpath(ctx, mutex);
    }
    mutex->holder = self;
    self->locks_held++;
}

void coroutine_fn qemu_co_mutex_unlock(CoMutex *mutex)
{
    Coroutine *self = self_in_coroutine("qemu_co_mutex_unlock");

    if (!qatomic_read(&mutex->locked) || mutex->holder != self) {
        co_lock_misuse("qemu_co_mutex_unlock",
                       "mutex not held by this coroutine");
    }

    qatomic_set(&mutex->ctx, NULL);
    mutex->holder = NULL;
    self->locks_held--;
    if (qatomic_fetch_sub(&mutex->locked, 1) == 1) {
        /* No waiting qemu_co_mutex_lock().  Pfew, that was easy! */
        return;
    }

    for (;;) {
        CoWaitRecord *to_wake = pop_waiter(mutex);
        unsigned our_handoff;

        if (to_wake) {
            qemu_co_mutex_wake(mutex, to_wake->co);
            break;
        }

        /*
         * Some concurrent lock() is in progress (locked was > 1) but it has
         * not put itself on the wait list yet.  Pick a sequence number for
         * the hand-off protocol (not 0).
         */
        if (++mutex->sequence == 0) {
            mutex->sequence = 1;
        }

        our_handoff = mutex->sequence;
        /* Set handoff before checking for waiters. */
        __atomic_store_n(&mutex->handoff, our_handoff, __ATOMIC_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (!has_waiters(mutex)) {
            /*
             * The concurrent lock has not added itself yet, so it will be
             * able to pick our handoff.
             */
            break;
        }

        /*
         * Try to do the handoff protocol ourselves; if somebody else has
         * already taken it, however, we're done and they're responsible.
         */
        if (qatomic_cmpxchg(&mutex->handoff, our_handoff, 0) != our_handoff) {
            break;
        }
    }
}

void coroutine_fn qemu_co_mutex_assert_locked(CoMutex *mutex)
{
    /*
     * holder is written by the holder only, so reading it here is safe
     * when the caller is the holder; anybody else gets an abort anyway.
     */
    if (!qatomic_read(&mutex->locked) ||
        mutex->holder != qemu_coroutine_self()) {
        co_lock_misuse("qemu_co_mutex_assert_locked",
                       "mutex not held by this coroutine");
    }
}

/* ---- CoRwlock ----------------------------------------------------------- */

/*
 * A fair FIFO of tickets (QEMU's 2021 rework): every request that cannot
 * be granted at once queues, and a reader queues if anybody is queued, so
 * a waiting writer is not overtaken.  owners: readers, or -1 for a writer;
 * all fields are protected by the CoMutex.
 */
struct CoRwTicket {
    bool read;
    Coroutine *co;
    QSIMPLEQ_ENTRY(CoRwTicket) next;
};

void qemu_co_rwlock_init(CoRwlock *lock)
{
    qemu_co_mutex_init(&lock->mutex);
    lock->owners = 0;
    QSIMPLEQ_INIT(&lock->tickets);
}

/*
 * Grant the first ticket if it can be granted, then release the internal
 * CoMutex.  Setting owners here, before the wake-up, keeps rdlock and
 * wrlock from sneaking in between.
 */
static void coroutine_fn qemu_co_rwlock_maybe_wake_one(CoRwlock *lock)
{
    CoRwTicket *tkt = QSIMPLEQ_FIRST(&lock->tickets);
    Coroutine *co = NULL;

    if (tkt) {
        if (tkt->read) {
            if (lock->owners >= 0) {
                lock->owners++;
                co = tkt->co;
            }
        } else if (lock->owners == 0) {
            lock->owners = -1;
            co = tkt->co;
        }
    }

    if (co) {
        QSIMPLEQ_REMOVE_HEAD(&lock->tickets, next);
        qemu_co_mutex_unlock(&lock->mutex);
        aio_co_wake(co);
    } else {
        qemu_co_mutex_unlock(&lock->mutex);
    }
}

void coroutine_fn qemu_co_rwlock_rdlock(CoRwlock *lock)
{
    Coroutine *self = self_in_coroutine("qemu_co_rwlock_rdlock");

    qemu_co_mutex_lock(&lock->mutex);
    /* For fairness, wait if a writer is in line. */
    if (lock->owners == 0 ||
        (lock->owners > 0 && QSIMPLEQ_EMPTY(&lock->tickets))) {
        lock->owners++;
        qemu_co_mutex_unlock(&lock->mutex);
    } else {
        CoRwTicket my_ticket = { .read = true, .co = self };

        QSIMPLEQ_INSERT_TAIL(&lock->tickets, &my_ticket, next);
        qemu_co_mutex_unlock(&lock->mutex);
        qemu_coroutine_yield();

        /* Possibly wake another reader, which will wake the next in line. */
        qemu_co_mutex_lock(&lock->mutex);
        qemu_co_rwlock_maybe_wake_one(lock);
    }
    self->locks_held++;
}

void coroutine_fn qemu_co_rwlock_unlock(CoRwlock *lock)
{
    Coroutine *self = self_in_coroutine("qemu_co_rwlock_unlock");

    qemu_co_mutex_lock(&lock->mutex);
    if (lock->owners > 0) {
        lock->owners--;
    } else if (lock->owners == -1) {
        lock->owners = 0;
    } else {
        co_lock_misuse("qemu_co_rwlock_unlock", "lock is not held");
    }
    self->locks_held--;
    qemu_co_rwlock_maybe_wake_one(lock);
}

void coroutine_fn qemu_co_rwlock_downgrade(CoRwlock *lock)
{
    self_in_coroutine("qemu_co_rwlock_downgrade");
    qemu_co_mutex_lock(&lock->mutex);
    if (lock->owners != -1) {
        co_lock_misuse("qemu_co_rwlock_downgrade",
                       "lock is not held for writing");
    }
    lock->owners = 1;
    /* Possibly wake another reader, which will wake the next in line. */
    qemu_co_rwlock_maybe_wake_one(lock);
}

void coroutine_fn qemu_co_rwlock_wrlock(CoRwlock *lock)
{
    Coroutine *self = self_in_coroutine("qemu_co_rwlock_wrlock");

    qemu_co_mutex_lock(&lock->mutex);
    if (lock->owners == 0) {
        lock->owners = -1;
        qemu_co_mutex_unlock(&lock->mutex);
    } else {
        CoRwTicket my_ticket = { .read = false, .co = self };

        QSIMPLEQ_INSERT_TAIL(&lock->tickets, &my_ticket, next);
        qemu_co_mutex_unlock(&lock->mutex);
        qemu_coroutine_yield();
    }
    self->locks_held++;
}

void coroutine_fn qemu_co_rwlock_upgrade(CoRwlock *lock)
{
    Coroutine *self = self_in_coroutine("qemu_co_rwlock_upgrade");

    qemu_co_mutex_lock(&lock->mutex);
    if (lock->owners <= 0) {
        co_lock_misuse("qemu_co_rwlock_upgrade",
                       "lock is not held for reading");
    }
    /* For fairness, wait if a writer is in line. */
    if (lock->owners == 1 && QSIMPLEQ_EMPTY(&lock->tickets)) {
        lock->owners = -1;
        qemu_co_mutex_unlock(&lock->mutex);
    } else {
        CoRwTicket my_ticket = { .read = false, .co = self };

        lock->owners--;
        QSIMPLEQ_INSERT_TAIL(&lock->tickets, &my_ticket, next);
        qemu_co_rwlock_maybe_wake_one(lock);
        qemu_coroutine_yield();
    }
}
