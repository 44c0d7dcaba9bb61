/*
 * Coroutine locks and sleeping: CoMutex (FIFO hand-off, misuse), CoQueue
 * (any lockable or NULL, next/restart_all/enter_next, WAIT_FRONT), CoRwlock
 * (sharing, fairness, upgrade behind a waiting writer, downgrade),
 * qemu_co_sleep_ns, wakeable sleeps woken early (same thread and another
 * thread), qemu_co_timeout and yield_until_fd_readable.
 */
#define _GNU_SOURCE

#include <aioloop/coroutine.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#include "aio-test.h"
#include "test.h"

static AioContext *ctx;

static void setup(void)
{
    if (!ctx) {
        ctx = test_aio_context_new();
        qemu_set_current_aio_context(ctx);
    }
}

typedef struct Log {
    char s[64];
    int n;
} Log;

static void log_add(Log *l, char c)
{
    l->s[l->n++] = c;
    l->s[l->n] = '\0';
}

/* ---- CoMutex ------------------------------------------------------------- */

typedef struct MutexCo {
    CoMutex *m;
    Log *log;
    char name;
    bool hold_and_yield;
} MutexCo;

static void coroutine_fn mutex_co(void *opaque)
{
    MutexCo *mc = opaque;

    qemu_co_mutex_lock(mc->m);
    qemu_co_mutex_assert_locked(mc->m);
    log_add(mc->log, mc->name);
    if (mc->hold_and_yield) {
        qemu_coroutine_yield();
    }
    log_add(mc->log, (char)(mc->name + 'a' - 'A'));
    qemu_co_mutex_unlock(mc->m);
}

TEST(comutex_hands_off_in_fifo_order)
{
    CoMutex m;
    Log log = { 0 };
    MutexCo a = { &m, &log, 'A', true };
    MutexCo b = { &m, &log, 'B', false };
    MutexCo c = { &m, &log, 'C', false };
    Coroutine *ca;

    setup();
    qemu_co_mutex_init(&m);
    ca = qemu_coroutine_create(mutex_co, &a);
    qemu_coroutine_enter(ca);
    qemu_coroutine_enter(qemu_coroutine_create(mutex_co, &b));
    qemu_coroutine_enter(qemu_coroutine_create(mutex_co, &c));
    ASSERT_STR_EQ(log.s, "A");
    qemu_coroutine_enter(ca);
    ASSERT_STR_EQ(log.s, "AaBbCc");
    ASSERT_UINT(m.locked, ==, 0);
}

static void coroutine_fn unlock_unheld_co(void *opaque)
{
    qemu_co_mutex_unlock(opaque);
}

static void unlock_unheld(void *opaque)
{
    CoMutex m;

    (void)opaque;
    qemu_co_mutex_init(&m);
    qemu_coroutine_enter(qemu_coroutine_create(unlock_unheld_co, &m));
}

static void coroutine_fn end_locked_co(void *opaque)
{
    qemu_co_mutex_lock(opaque);
}

static void end_locked(void *opaque)
{
    CoMutex m;

    (void)opaque;
    qemu_co_mutex_init(&m);
    qemu_coroutine_enter(qemu_coroutine_create(end_locked_co, &m));
}

static void lock_outside(void *opaque)
{
    CoMutex m;

    (void)opaque;
    qemu_co_mutex_init(&m);
    qemu_co_mutex_lock(&m);
}

static void sleep_then_enter(void *opaque);

static void coroutine_fn rw_unlock_unheld_co(void *opaque)
{
    qemu_co_rwlock_unlock(opaque);
}

static void coroutine_fn rw_downgrade_read_co(void *opaque)
{
    qemu_co_rwlock_rdlock(opaque);
    qemu_co_rwlock_downgrade(opaque);
}

static void coroutine_fn rw_upgrade_unheld_co(void *opaque)
{
    qemu_co_rwlock_upgrade(opaque);
}

static void rw_misuse(void *opaque)
{
    CoRwlock l;

    qemu_co_rwlock_init(&l);
    qemu_coroutine_enter(qemu_coroutine_create(opaque, &l));
}

TEST(misuse_aborts_with_message)
{
    test_expect_abort(unlock_unheld, NULL, "mutex not held by this coroutine");
    test_expect_abort(end_locked, NULL, "terminated while holding 1 CoMutex");
    test_expect_abort(lock_outside, NULL, "outside coroutine context");
    test_expect_abort(sleep_then_enter, NULL,
                      "already scheduled in 'qemu_co_sleep_ns'");
    test_expect_abort(rw_misuse, rw_unlock_unheld_co,
                      "qemu_co_rwlock_unlock: lock is not held");
    test_expect_abort(rw_misuse, rw_downgrade_read_co,
                      "not held for writing");
    test_expect_abort(rw_misuse, rw_upgrade_unheld_co,
                      "not held for reading");
}

/* ---- CoQueue ------------------------------------------------------------- */

typedef struct QueueCo {
    CoQueue *q;
    Log *log;
    char name;
    CoQueueWaitFlags flags;
    CoMutex *m;
    pthread_mutex_t *pm;
} QueueCo;

static void coroutine_fn queue_wait_co(void *opaque)
{
    QueueCo *qc = opaque;

    if (qc->m) {
        qemu_co_mutex_lock(qc->m);
        qemu_co_queue_wait_flags(qc->q, qc->m, qc->flags);
        qemu_co_mutex_assert_locked(qc->m);
        log_add(qc->log, qc->name);
        qemu_co_mutex_unlock(qc->m);
    } else if (qc->pm) {
        pthread_mutex_lock(qc->pm);
        qemu_co_queue_wait(qc->q, qc->pm);
        log_add(qc->log, qc->name);
        pthread_mutex_unlock(qc->pm);
    } else {
        qemu_co_queue_wait_flags(qc->q, NULL, qc->flags);
        log_add(qc->log, qc->name);
    }
}

typedef struct Kicker {
    CoQueue *q;
    Log *log;
    bool all;
} Kicker;

static void coroutine_fn kicker_co(void *opaque)
{
    Kicker *k = opaque;

    if (k->all) {
        qemu_co_queue_restart_all(k->q);
    } else {
        ASSERT_TRUE(qemu_co_queue_next(k->q));
    }
    /* The woken coroutines run after this one ends. */
    log_add(k->log, 'k');
}

TEST(coqueue_next_restart_all_front)
{
    CoQueue q;
    Log log = { 0 };
    QueueCo a = { &q, &log, 'A', 0, NULL, NULL };
    QueueCo b = { &q, &log, 'B', 0, NULL, NULL };
    QueueCo c = { &q, &log, 'C', CO_QUEUE_WAIT_FRONT, NULL, NULL };
    Kicker k1 = { &q, &log, false }, kall = { &q, &log, true };

    setup();
    qemu_co_queue_init(&q);
    ASSERT_TRUE(qemu_co_queue_empty(&q));
    qemu_coroutine_enter(qemu_coroutine_create(queue_wait_co, &a));
    qemu_coroutine_enter(qemu_coroutine_create(queue_wait_co, &b));
    qemu_coroutine_enter(qemu_coroutine_create(queue_wait_co, &c));
    ASSERT_FALSE(qemu_co_queue_empty(&q));
    /* C queued at the front. */
    qemu_coroutine_enter(qemu_coroutine_create(kicker_co, &k1));
    ASSERT_STR_EQ(log.s, "kC");
    qemu_coroutine_enter(qemu_coroutine_create(kicker_co, &kall));
    ASSERT_STR_EQ(log.s, "kCkAB");
    ASSERT_TRUE(qemu_co_queue_empty(&q));
    ASSERT_FALSE(qemu_co_enter_next(&q, NULL));
}

typedef struct Signaller {
    CoQueue *q;
    CoMutex *m;
    Log *log;
} Signaller;

static void coroutine_fn signal_co(void *opaque)
{
    Signaller *s = opaque;

    /* The waiter dropped the mutex while waiting: we can take it. */
    qemu_co_mutex_lock(s->m);
    log_add(s->log, 's');
    qemu_co_queue_next(s->q);
    qemu_co_mutex_unlock(s->m);
}

TEST(coqueue_wait_drops_and_retakes_comutex)
{
    CoQueue q;
    CoMutex m;
    Log log = { 0 };
    QueueCo w = { &q, &log, 'W', 0, &m, NULL };
    Signaller s = { &q, &m, &log };

    setup();
    qemu_co_queue_init(&q);
    qemu_co_mutex_init(&m);
    qemu_coroutine_enter(qemu_coroutine_create(queue_wait_co, &w));
    qemu_coroutine_enter(qemu_coroutine_create(signal_co, &s));
    ASSERT_STR_EQ(log.s, "sW");
    ASSERT_UINT(m.locked, ==, 0);
}

TEST(coqueue_wait_with_pthread_mutex_and_enter_next)
{
    CoQueue q;
    pthread_mutex_t pm = PTHREAD_MUTEX_INITIALIZER;
    Log log = { 0 };
    QueueCo w = { &q, &log, 'W', 0, NULL, &pm };

    setup();
    qemu_co_queue_init(&q);
    qemu_coroutine_enter(qemu_coroutine_create(queue_wait_co, &w));
    /* Dropped while waiting ... */
    ASSERT_EQ(pthread_mutex_trylock(&pm), 0);
    /* ... and qemu_co_enter_next drops ours around the wake-up. */
    ASSERT_TRUE(qemu_co_enter_next(&q, &pm));
    ASSERT_STR_EQ(log.s, "W");
    ASSERT_EQ(pthread_mutex_unlock(&pm), 0);
    ASSERT_EQ(pthread_mutex_trylock(&pm), 0);
    pthread_mutex_unlock(&pm);
}

TEST(coqueue_enter_all_outside_coroutines)
{
    CoQueue q;
    Log log = { 0 };
    QueueCo a = { &q, &log, 'A', 0, NULL, NULL };
    QueueCo b = { &q, &log, 'B', 0, NULL, NULL };

    setup();
    qemu_co_queue_init(&q);
    qemu_coroutine_enter(qemu_coroutine_create(queue_wait_co, &a));
    qemu_coroutine_enter(qemu_coroutine_create(queue_wait_co, &b));
    qemu_co_enter_all(&q, NULL);
    ASSERT_STR_EQ(log.s, "AB");
}

/* ---- CoRwlock ------------------------------------------------------------ */

typedef enum { RD, WR, UPGRADE, DOWNGRADE_THEN_READ } RwKind;

typedef struct RwCo {
    CoRwlock *l;
    Log *log;
    char name;
    RwKind kind;
    Coroutine *co;
} RwCo;

/* Take the lock, log the name, yield holding it, log lower case, unlock. */
static void coroutine_fn rw_co(void *opaque)
{
    RwCo *r = opaque;

    switch (r->kind) {
    case RD:
        qemu_co_rwlock_rdlock(r->l);
        break;
    case WR:
    case DOWNGRADE_THEN_READ:
        qemu_co_rwlock_wrlock(r->l);
        break;
    case UPGRADE:
        qemu_co_rwlock_rdlock(r->l);
        log_add(r->log, 'r');
        qemu_coroutine_yield();
        qemu_co_rwlock_upgrade(r->l);
        break;
    }
    log_add(r->log, r->name);
    qemu_coroutine_yield();
    if (r->kind == DOWNGRADE_THEN_READ) {
        qemu_co_rwlock_downgrade(r->l);
        log_add(r->log, 'd');
        qemu_coroutine_yield();
    }
    log_add(r->log, (char)(r->name + 'a' - 'A'));
    qemu_co_rwlock_unlock(r->l);
}

static void rw_start(RwCo *r, CoRwlock *l, Log *log, char name, RwKind kind)
{
    *r = (RwCo){ l, log, name, kind, NULL };
    r->co = qemu_coroutine_create(rw_co, r);
    qemu_coroutine_enter(r->co);
}

TEST(corwlock_readers_share_writer_waits)
{
    CoRwlock l;
    Log log = { 0 };
    RwCo r1, r2, w;

    setup();
    qemu_co_rwlock_init(&l);
    rw_start(&r1, &l, &log, 'R', RD);
    rw_start(&r2, &l, &log, 'S', RD);
    ASSERT_STR_EQ(log.s, "RS");
    rw_start(&w, &l, &log, 'W', WR);
    ASSERT_STR_EQ(log.s, "RS");
    qemu_coroutine_enter(r1.co);
    ASSERT_STR_EQ(log.s, "RSr");
    qemu_coroutine_enter(r2.co);
    ASSERT_STR_EQ(log.s, "RSrsW");
    qemu_coroutine_enter(w.co);
    ASSERT_STR_EQ(log.s, "RSrsWw");
}

TEST(corwlock_reader_queues_behind_waiting_writer)
{
    CoRwlock l;
    Log log = { 0 };
    RwCo r1, w, r2;

    setup();
    qemu_co_rwlock_init(&l);
    rw_start(&r1, &l, &log, 'R', RD);
    rw_start(&w, &l, &log, 'W', WR);
    rw_start(&r2, &l, &log, 'S', RD);
    /* S did not overtake the waiting writer. */
    ASSERT_STR_EQ(log.s, "R");
    qemu_coroutine_enter(r1.co);
    ASSERT_STR_EQ(log.s, "RrW");
    qemu_coroutine_enter(w.co);
    ASSERT_STR_EQ(log.s, "RrWwS");
    qemu_coroutine_enter(r2.co);
    ASSERT_STR_EQ(log.s, "RrWwSs");
}

TEST(corwlock_upgrade_queues_behind_waiting_writer)
{
    CoRwlock l;
    Log log = { 0 };
    RwCo u, r2, w;

    setup();
    qemu_co_rwlock_init(&l);
    rw_start(&u, &l, &log, 'U', UPGRADE);   /* holds a read lock */
    rw_start(&r2, &l, &log, 'S', RD);       /* second reader */
    rw_start(&w, &l, &log, 'W', WR);        /* waits */
    ASSERT_STR_EQ(log.s, "rS");
    qemu_coroutine_enter(u.co);             /* upgrade: must queue */
    ASSERT_STR_EQ(log.s, "rS");
    qemu_coroutine_enter(r2.co);            /* last reader leaves: W first */
    ASSERT_STR_EQ(log.s, "rSsW");
    qemu_coroutine_enter(w.co);             /* then the upgrade */
    ASSERT_STR_EQ(log.s, "rSsWwU");
    qemu_coroutine_enter(u.co);
    ASSERT_STR_EQ(log.s, "rSsWwUu");
    ASSERT_EQ(l.owners, 0);
}

TEST(corwlock_sole_reader_upgrades_at_once)
{
    CoRwlock l;
    Log log = { 0 };
    RwCo u, r;

    setup();
    qemu_co_rwlock_init(&l);
    rw_start(&u, &l, &log, 'U', UPGRADE);
    qemu_coroutine_enter(u.co);
    ASSERT_STR_EQ(log.s, "rU");
    ASSERT_EQ(l.owners, -1);
    rw_start(&r, &l, &log, 'R', RD);        /* waits for the writer */
    qemu_coroutine_enter(u.co);
    ASSERT_STR_EQ(log.s, "rUuR");
    qemu_coroutine_enter(r.co);
    ASSERT_EQ(l.owners, 0);
}

TEST(corwlock_downgrade_lets_readers_in)
{
    CoRwlock l;
    Log log = { 0 };
    RwCo w, r;

    setup();
    qemu_co_rwlock_init(&l);
    rw_start(&w, &l, &log, 'W', DOWNGRADE_THEN_READ);
    rw_start(&r, &l, &log, 'R', RD);
    ASSERT_STR_EQ(log.s, "W");
    qemu_coroutine_enter(w.co);             /* downgrade: R joins */
    ASSERT_STR_EQ(log.s, "WdR");
    ASSERT_EQ(l.owners, 2);
    qemu_coroutine_enter(w.co);
    qemu_coroutine_enter(r.co);
    ASSERT_STR_EQ(log.s, "WdRwr");
    ASSERT_EQ(l.owners, 0);
}

/* ---- sleep --------------------------------------------------------------- */

typedef struct Sleeper {
    QemuCoSleep w;
    int64_t ns;
    int64_t t0, t1;
    bool done;
} Sleeper;

static void coroutine_fn sleep_co(void *opaque)
{
    Sleeper *s = opaque;

    s->t0 = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    qemu_co_sleep_ns_wakeable(&s->w, QEMU_CLOCK_REALTIME, s->ns);
    s->t1 = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    s->done = true;
}

static bool no_timer_armed(void)
{
    return timerlistgroup_deadline_ns(aio_get_timerlistgroup(ctx)) == -1;
}

TEST(co_sleep_ns_never_wakes_early)
{
    Sleeper s = { .ns = 2 * 1000 * 1000 };

    setup();
    qemu_coroutine_enter(qemu_coroutine_create(sleep_co, &s));
    ASSERT_FALSE(s.done);
    while (!s.done) {
        aio_poll(ctx, true);
    }
    ASSERT_INT(s.t1 - s.t0, >=, s.ns);
    ASSERT_TRUE(no_timer_armed());
}

static void wake_bh(void *opaque)
{
    qemu_co_sleep_wake(opaque);
}

TEST(co_sleep_wakes_early_when_woken)
{
    Sleeper s = { .ns = 3600LL * 1000 * 1000 * 1000 };

    setup();
    test_watchdog("co_sleep_wakes_early_when_woken", 60);
    qemu_coroutine_enter(qemu_coroutine_create(sleep_co, &s));
    ASSERT_FALSE(s.done);
    aio_bh_schedule_oneshot(ctx, wake_bh, &s.w);
    while (!s.done) {
        aio_poll(ctx, true);
    }
    ASSERT_NULL(s.w.to_wake);
    /* The hour-long timer was cancelled. */
    ASSERT_TRUE(no_timer_armed());
    /* Waking an idle handle does nothing. */
    qemu_co_sleep_wake(&s.w);
    test_watchdog_cancel();
}

static void *wake_thread(void *opaque)
{
    qemu_co_sleep_wake(opaque);
    return NULL;
}

TEST(co_sleep_woken_from_another_thread)
{
    Sleeper s = { .ns = 3600LL * 1000 * 1000 * 1000 };

    setup();
    test_watchdog("co_sleep_woken_from_another_thread", 60);
    qemu_coroutine_enter(qemu_coroutine_create(sleep_co, &s));
    test_thread_join(test_thread_start(wake_thread, &s.w));
    while (!s.done) {
        aio_poll(ctx, true);
    }
    ASSERT_TRUE(no_timer_armed());
    test_watchdog_cancel();
}

static void sleep_then_enter(void *opaque)
{
    Sleeper s = { .ns = 3600LL * 1000 * 1000 * 1000 };
    Coroutine *co;

    (void)opaque;
    setup();
    co = qemu_coroutine_create(sleep_co, &s);
    qemu_coroutine_enter(co);
    qemu_coroutine_enter(co);
}

/* ---- qemu_co_timeout ------------------------------------------------------ */

typedef struct TimeoutJob {
    int64_t sleep_ns;
    bool finished, cleaned;
    int ret;
    bool done;
} TimeoutJob;

static void coroutine_fn timeout_job(void *opaque)
{
    TimeoutJob *j = opaque;

    if (j->sleep_ns) {
        qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, j->sleep_ns);
    }
    j->finished = true;
}

static void timeout_clean(void *opaque)
{
    TimeoutJob *j = opaque;

    j->cleaned = true;
}

static void coroutine_fn timeout_co(void *opaque)
{
    TimeoutJob *j = opaque;

    j->ret = qemu_co_timeout(timeout_job, j, 1000 * 1000 * 1000,
                             timeout_clean);
    j->done = true;
}

static void coroutine_fn timeout_short_co(void *opaque)
{
    TimeoutJob *j = opaque;

    j->ret = qemu_co_timeout(timeout_job, j, 1000 * 1000, timeout_clean);
    j->done = true;
}

TEST(co_timeout)
{
    TimeoutJob fast = { 0 };
    TimeoutJob slow = { .sleep_ns = 50 * 1000 * 1000 };

    setup();
    test_watchdog("co_timeout", 60);
    qemu_coroutine_enter(qemu_coroutine_create(timeout_co, &fast));
    while (!fast.done) {
        aio_poll(ctx, true);
    }
    ASSERT_EQ(fast.ret, 0);
    ASSERT_TRUE(fast.finished);
    ASSERT_FALSE(fast.cleaned);

    /* 1 ms limit, 50 ms job: times out, the job goes on, then cleans up. */
    qemu_coroutine_enter(qemu_coroutine_create(timeout_short_co, &slow));
    while (!slow.done) {
        aio_poll(ctx, true);
    }
    ASSERT_EQ(slow.ret, -ETIMEDOUT);
    ASSERT_FALSE(slow.finished);
    while (!slow.cleaned) {
        aio_poll(ctx, true);
    }
    ASSERT_TRUE(slow.finished);
    test_watchdog_cancel();
}

/* ---- yield_until_fd_readable ---------------------------------------------- */

typedef struct FdWaiter {
    int fd;
    bool done;
} FdWaiter;

static void coroutine_fn fd_wait_co(void *opaque)
{
    FdWaiter *w = opaque;

    yield_until_fd_readable(w->fd);
    w->done = true;
}

TEST(yield_until_fd_readable_resumes_on_data)
{
    FdWaiter w = { .fd = test_eventfd() };

    setup();
    test_watchdog("yield_until_fd_readable_resumes_on_data", 60);
    qemu_coroutine_enter(qemu_coroutine_create(fd_wait_co, &w));
    ASSERT_FALSE(w.done);
    /* Nothing to read: the coroutine keeps waiting. */
    aio_poll(ctx, false);
    ASSERT_FALSE(w.done);
    test_eventfd_write(w.fd);
    while (!w.done) {
        aio_poll(ctx, true);
    }
    /* Its handler is gone: more data does not enter anything. */
    test_eventfd_write(w.fd);
    aio_poll(ctx, false);
    close(w.fd);
    test_watchdog_cancel();
}

RUN_TESTS(
    T(misuse_aborts_with_message),
    T(comutex_hands_off_in_fifo_order),
    T(coqueue_next_restart_all_front),
    T(coqueue_wait_drops_and_retakes_comutex),
    T(coqueue_wait_with_pthread_mutex_and_enter_next),
    T(coqueue_enter_all_outside_coroutines),
    T(corwlock_readers_share_writer_waits),
    T(corwlock_reader_queues_behind_waiting_writer),
    T(corwlock_upgrade_queues_behind_waiting_writer),
    T(corwlock_sole_reader_upgrades_at_once),
    T(corwlock_downgrade_lets_readers_in),
    T(co_sleep_ns_never_wakes_early),
    T(co_sleep_wakes_early_when_woken),
    T(co_sleep_woken_from_another_thread),
    T(co_timeout),
    T(yield_until_fd_readable_resumes_on_data),
)
