/*
 * AioContext: lifecycle, current context and home thread, legacy lock,
 * parameter validation, the notify protocol, fd monitor name, timers.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#include "aio-test.h"
#include "test.h"

/* Generous: only turns a lost wake-up into a failure instead of a hang. */
#define WATCHDOG_S 60
#define MS (1000 * 1000LL)

static void count_cb(void *opaque)
{
    unsigned *n = opaque;

    (*n)++;
}

/* ---- lifecycle ----------------------------------------------------------- */

TEST(context_new_ref_unref)
{
    AioContext *ctx = test_aio_context_new();
    AioContext *other = test_aio_context_new();
    unsigned runs = 0;
    QEMUBH *bh;

    ASSERT_PTR_NE(ctx, other);
    aio_context_ref(ctx);
    aio_context_unref(ctx);
    /* Still alive after ref + unref: usable. */
    bh = aio_bh_new(ctx, count_cb, &runs);
    qemu_bh_schedule(bh);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(runs, ==, 1);
    qemu_bh_delete(bh);

    /* The last of several references frees it (ASan/LSan check). */
    aio_context_ref(ctx);
    aio_context_ref(ctx);
    aio_context_unref(ctx);
    aio_context_unref(ctx);
    aio_context_unref(ctx);
    aio_context_unref(NULL);

    /* A fresh context has nothing to do. */
    test_aio_drain(other);
    ASSERT_FALSE(aio_poll(other, false));
    ASSERT_INT(aio_compute_timeout(other), ==, -1);
    aio_context_unref(other);
}

/* ---- current context, home thread --------------------------------------- */

typedef struct Foreign {
    AioContext *ctx;
    AioContext *current_seen;
    bool in_home;
    bool own_ok;
} Foreign;

static void *foreign_thread(void *opaque)
{
    Foreign *f = opaque;
    AioContext *own;

    f->current_seen = qemu_get_current_aio_context();
    f->in_home = in_aio_context_home_thread(f->ctx);

    /* A context of its own, current in this thread only. */
    own = test_aio_context_new();
    qemu_set_current_aio_context(own);
    f->own_ok = qemu_get_current_aio_context() == own &&
                in_aio_context_home_thread(own) &&
                !in_aio_context_home_thread(f->ctx);
    aio_poll(own, false);
    qemu_set_current_aio_context(NULL);
    f->own_ok = f->own_ok && qemu_get_current_aio_context() == NULL;
    aio_context_unref(own);
    return NULL;
}

TEST(current_context_and_home_thread)
{
    AioContext *ctx = test_aio_context_new();
    AioContext *unbound = test_aio_context_new();
    Foreign f = { .ctx = ctx };
    pthread_t t;

    ASSERT_NULL(qemu_get_current_aio_context());
    /* No thread has run it or claimed it: nobody's home thread. */
    ASSERT_FALSE(in_aio_context_home_thread(unbound));

    qemu_set_current_aio_context(ctx);
    ASSERT_PTR_EQ(qemu_get_current_aio_context(), ctx);
    ASSERT_TRUE(in_aio_context_home_thread(ctx));
    ASSERT_FALSE(in_aio_context_home_thread(unbound));

    t = test_thread_start(foreign_thread, &f);
    test_thread_join(t);
    ASSERT_NULL(f.current_seen);
    ASSERT_FALSE(f.in_home);
    ASSERT_TRUE(f.own_ok);

    /* The main thread runs ctx as its home thread. */
    aio_poll(ctx, false);
    ASSERT_TRUE(in_aio_context_home_thread(ctx));
    qemu_set_current_aio_context(NULL);
    ASSERT_NULL(qemu_get_current_aio_context());

    /* Running aio_poll() binds the home thread too. */
    aio_poll(unbound, false);
    ASSERT_TRUE(in_aio_context_home_thread(unbound));
    ASSERT_NULL(qemu_get_current_aio_context());

    aio_context_unref(unbound);
    aio_context_unref(ctx);
}

static void *poll_from_thread(void *opaque)
{
    aio_poll(opaque, false);
    return NULL;
}

static void poll_from_non_home_thread(void *opaque)
{
    AioContext *ctx = test_aio_context_new();
    pthread_t t;

    (void)opaque;
    aio_poll(ctx, false);
    t = test_thread_start(poll_from_thread, ctx);
    test_thread_join(t);
}

static void poll_from_non_home_thread_set_current(void *opaque)
{
    AioContext *ctx = test_aio_context_new();
    pthread_t t;

    (void)opaque;
    qemu_set_current_aio_context(ctx);
    t = test_thread_start(poll_from_thread, ctx);
    test_thread_join(t);
}

TEST(aio_poll_from_non_home_thread_aborts)
{
    test_expect_abort(poll_from_non_home_thread, NULL, "home thread");
    test_expect_abort(poll_from_non_home_thread_set_current, NULL,
                      "home thread");
}

static void *set_current_from_thread(void *opaque)
{
    qemu_set_current_aio_context(opaque);
    return NULL;
}

static void set_current_of_other_home(void *opaque)
{
    AioContext *ctx = test_aio_context_new();
    pthread_t t;

    (void)opaque;
    aio_poll(ctx, false);
    t = test_thread_start(set_current_from_thread, ctx);
    test_thread_join(t);
}

static void set_current_twice(void *opaque)
{
    AioContext *a = test_aio_context_new();
    AioContext *b = test_aio_context_new();

    (void)opaque;
    qemu_set_current_aio_context(a);
    qemu_set_current_aio_context(b);
}

TEST(set_current_context_misuse_aborts)
{
    test_expect_abort(set_current_of_other_home, NULL, "home thread");
    test_expect_abort(set_current_twice, NULL, "");
}

/* ---- legacy recursive lock -------------------------------------------- */

typedef struct Contender {
    AioContext *ctx;
    pid_t tid;              /* published before it tries to acquire */
    bool acquired;
} Contender;

static void *contender_thread(void *opaque)
{
    Contender *c = opaque;

    __atomic_store_n(&c->tid, test_gettid(), __ATOMIC_RELEASE);
    aio_context_acquire(c->ctx);
    __atomic_store_n(&c->acquired, true, __ATOMIC_RELEASE);
    aio_context_release(c->ctx);
    return NULL;
}

TEST(legacy_acquire_release_recursive)
{
    AioContext *ctx = test_aio_context_new();
    Contender c = { .ctx = ctx };
    pthread_t t;
    pid_t tid;

    aio_context_acquire(ctx);
    aio_context_acquire(ctx);   /* recursive: must not deadlock */

    t = test_thread_start(contender_thread, &c);
    while ((tid = __atomic_load_n(&c.tid, __ATOMIC_ACQUIRE)) == 0) {
        sched_yield();
    }
    /* Wait until it sleeps on the lock (or wrongly got it and moved on). */
    while (!__atomic_load_n(&c.acquired, __ATOMIC_ACQUIRE) &&
           test_thread_state(tid) != 'S') {
        sched_yield();
    }
    ASSERT_FALSE(__atomic_load_n(&c.acquired, __ATOMIC_ACQUIRE));

    aio_context_release(ctx);
    /* Still held once: the contender stays blocked. */
    ASSERT_FALSE(__atomic_load_n(&c.acquired, __ATOMIC_ACQUIRE));

    aio_context_release(ctx);
    test_thread_join(t);
    ASSERT_TRUE(c.acquired);

    /* Free again for this thread. */
    aio_context_acquire(ctx);
    aio_context_release(ctx);
    aio_context_unref(ctx);
}

/* ---- parameters ------------------------------------------------------- */

static void expect_poll_params(AioContext *ctx, int64_t max_ns, int64_t grow,
                               int64_t shrink, bool ok)
{
    Error *err = NULL;

    aio_context_set_poll_params(ctx, max_ns, grow, shrink, &err);
    if (ok && err) {
        TEST_FAIL_("set_poll_params(%" PRId64 ", %" PRId64 ", %" PRId64
                   ") failed: %s", max_ns, grow, shrink,
                   error_get_pretty(err));
    }
    if (!ok && !err) {
        TEST_FAIL_("set_poll_params(%" PRId64 ", %" PRId64 ", %" PRId64
                   ") accepted", max_ns, grow, shrink);
    }
    error_free(err);
}

TEST(set_poll_params_validation)
{
    AioContext *ctx = test_aio_context_new();

    expect_poll_params(ctx, -1, 0, 0, false);
    expect_poll_params(ctx, 0, -1, 0, false);
    expect_poll_params(ctx, 0, 0, -1, false);
    expect_poll_params(ctx, INT64_MIN, 2, 2, false);
    expect_poll_params(ctx, 0, 0, 0, true);
    expect_poll_params(ctx, 32768, 0, 0, true);
    expect_poll_params(ctx, 1000000, 2, 2, true);
    expect_poll_params(ctx, INT64_MAX, 4, 8, true);
    /* NULL errp is allowed either way. */
    aio_context_set_poll_params(ctx, -5, 0, 0, NULL);
    aio_context_set_poll_params(ctx, 0, 0, 0, NULL);
    aio_context_unref(ctx);
}

static void expect_pool_params(AioContext *ctx, int64_t min, int64_t max,
                               bool ok)
{
    Error *err = NULL;

    aio_context_set_thread_pool_params(ctx, min, max, &err);
    if (ok && err) {
        TEST_FAIL_("set_thread_pool_params(%" PRId64 ", %" PRId64
                   ") failed: %s", min, max, error_get_pretty(err));
    }
    if (!ok && !err) {
        TEST_FAIL_("set_thread_pool_params(%" PRId64 ", %" PRId64
                   ") accepted", min, max);
    }
    error_free(err);
}

TEST(set_thread_pool_params_validation)
{
    AioContext *ctx = test_aio_context_new();

    expect_pool_params(ctx, 5, 4, false);           /* min > max */
    expect_pool_params(ctx, 0, 0, false);           /* max <= 0 */
    expect_pool_params(ctx, 0, -1, false);
    expect_pool_params(ctx, -1, 4, false);          /* min < 0 */
    expect_pool_params(ctx, 0, (int64_t)INT_MAX + 1, false);
    expect_pool_params(ctx, (int64_t)INT_MAX + 1, (int64_t)INT_MAX + 2,
                       false);
    expect_pool_params(ctx, 0, INT64_MAX, false);
    expect_pool_params(ctx, 0, 64, true);
    expect_pool_params(ctx, 4, 4, true);
    expect_pool_params(ctx, 0, 1, true);
    expect_pool_params(ctx, 0, INT_MAX, true);
    expect_pool_params(ctx, INT_MAX, INT_MAX, true);
    aio_context_unref(ctx);
}

/*
 * Parameter changes call aio_notify(): a following blocking aio_poll()
 * returns (without progress) instead of waiting forever.
 */
TEST(set_params_notify)
{
    AioContext *ctx = test_aio_context_new();

    test_watchdog("aio_poll after a parameter change did not return",
                  WATCHDOG_S);
    test_aio_drain(ctx);
    aio_context_set_aio_params(ctx, 0);
    ASSERT_FALSE(aio_poll(ctx, true));
    aio_context_set_aio_params(ctx, 32);
    ASSERT_FALSE(aio_poll(ctx, true));
    aio_context_set_poll_params(ctx, 1000, 2, 2, &error_abort);
    ASSERT_FALSE(aio_poll(ctx, true));
    aio_context_set_poll_params(ctx, 0, 0, 0, &error_abort);
    ASSERT_FALSE(aio_poll(ctx, true));
    test_watchdog_cancel();
    aio_context_unref(ctx);
}

/* ---- notify ------------------------------------------------------------- */

/* Pokes for poker_thread() (aio-test.h). */
static void poke_notify(void *opaque)
{
    aio_notify(opaque);
}

static void poke_schedule(void *opaque)
{
    qemu_bh_schedule(opaque);
}

TEST(notify_wakes_blocking_poll_without_progress)
{
    AioContext *ctx = test_aio_context_new();
    Poker p = { .target = test_gettid(), .poke = poke_notify, .opaque = ctx };
    AioloopContextStats st0, st1;
    pthread_t t;
    bool ret;

    test_aio_drain(ctx);
    aioloop_context_get_stats(ctx, &st0);
    test_watchdog("aio_notify from another thread did not wake aio_poll",
                  WATCHDOG_S);
    t = test_thread_start(poker_thread, &p);
    ret = aio_poll(ctx, true);
    test_thread_join(t);
    test_watchdog_cancel();
    /* The notifier's own dispatch is not progress. */
    ASSERT_FALSE(ret);
    aioloop_context_get_stats(ctx, &st1);
    /* Somebody was blocking: the eventfd was written. */
    ASSERT_UINT(st1.wakeups, >, st0.wakeups);
    aio_context_unref(ctx);
}

TEST(notify_without_waiter_does_not_write_eventfd)
{
    AioContext *ctx = test_aio_context_new();
    AioloopContextStats st;

    aioloop_context_get_stats(ctx, &st);
    ASSERT_UINT(st.wakeups, ==, 0);
    for (int i = 0; i < 10; i++) {
        aio_notify(ctx);
    }
    aioloop_context_get_stats(ctx, &st);
    ASSERT_UINT(st.wakeups, ==, 0);
    ASSERT_FALSE(aio_poll(ctx, false));

    /* A pending notification makes a blocking poll return at once. */
    test_watchdog("aio_poll after aio_notify did not return", WATCHDOG_S);
    aio_notify(ctx);
    ASSERT_FALSE(aio_poll(ctx, true));
    test_watchdog_cancel();

    /* Scheduling a BH notifies too, still without any write. */
    unsigned runs = 0;
    QEMUBH *bh = aio_bh_new(ctx, count_cb, &runs);
    qemu_bh_schedule(bh);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(runs, ==, 1);
    qemu_bh_delete(bh);
    aio_poll(ctx, false);

    aioloop_context_get_stats(ctx, &st);
    ASSERT_UINT(st.wakeups, ==, 0);
    aio_context_unref(ctx);
}

TEST(cross_thread_bh_schedule_wakes_blocking_poll)
{
    AioContext *ctx = test_aio_context_new();
    unsigned runs = 0;
    QEMUBH *bh = aio_bh_new(ctx, count_cb, &runs);
    Poker p = { .target = test_gettid(), .poke = poke_schedule, .opaque = bh };
    pthread_t t;
    bool ret;

    test_aio_drain(ctx);
    test_watchdog("qemu_bh_schedule from another thread did not wake aio_poll",
                  WATCHDOG_S);
    t = test_thread_start(poker_thread, &p);
    ret = aio_poll(ctx, true);
    test_thread_join(t);
    test_watchdog_cancel();
    ASSERT_TRUE(ret);
    ASSERT_UINT(runs, ==, 1);

    /* Many rounds: no lost wake-up. */
    test_watchdog("repeated cross-thread schedule: lost wake-up", WATCHDOG_S);
    for (unsigned i = 2; i <= 50; i++) {
        t = test_thread_start(poker_thread, &p);
        while (runs < i) {
            aio_poll(ctx, true);
        }
        test_thread_join(t);
        ASSERT_UINT(runs, ==, i);
    }
    test_watchdog_cancel();

    qemu_bh_delete(bh);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

/* ---- fd monitor name ---------------------------------------------------- */

TEST(fdmon_name)
{
    AioContext *ctx = test_aio_context_new();
    const char *name = aioloop_context_fdmon_name(ctx);
    const char *forced = getenv("AIOLOOP_FDMON");

    ASSERT_NOT_NULL(name);
    printf("# fdmon %s, AIOLOOP_FDMON=%s\n", name, forced ? forced : "");
    ASSERT_TRUE(!strcmp(name, "poll") || !strcmp(name, "epoll") ||
                !strcmp(name, "io_uring"));
    if (forced && forced[0]) {
        ASSERT_STR_EQ(name, forced);
    }
    aio_context_unref(ctx);
}

/* ---- timers ------------------------------------------------------------ */

/* A fake VIRTUAL clock, so that timeouts are exact and nothing sleeps. */
static int64_t fake_now;

static int64_t fake_clock(void *opaque)
{
    (void)opaque;
    return __atomic_load_n(&fake_now, __ATOMIC_ACQUIRE);
}

static void fake_clock_set(int64_t t)
{
    __atomic_store_n(&fake_now, t, __ATOMIC_RELEASE);
}

static void fake_clock_install(void)
{
    fake_clock_set(1000 * MS);
    aioloop_clock_set_source(QEMU_CLOCK_VIRTUAL, fake_clock, NULL);
    ASSERT_INT(qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL), ==, 1000 * MS);
}

static void fake_clock_remove(void)
{
    aioloop_clock_set_source(QEMU_CLOCK_VIRTUAL, NULL, NULL);
}

TEST(timer_in_the_past_runs_on_next_poll)
{
    AioContext *ctx = test_aio_context_new();
    unsigned fired = 0;
    QEMUTimer *t = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS,
                                 count_cb, &fired);

    test_aio_drain(ctx);
    timer_mod_ns(t, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - 1000);
    ASSERT_TRUE(timer_pending(t));
    ASSERT_INT(aio_compute_timeout(ctx), ==, 0);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(fired, ==, 1);
    ASSERT_FALSE(timer_pending(t));
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(fired, ==, 1);

    /* Same through a blocking poll (timeout is 0). */
    timer_mod_ns(t, 0);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(fired, ==, 2);

    /* Deleted before it ran: never. */
    timer_mod_ns(t, 0);
    timer_del(t);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(fired, ==, 2);

    /* A caller-allocated timer, ms scale. */
    QEMUTimer ts;
    aio_timer_init(ctx, &ts, QEMU_CLOCK_REALTIME, SCALE_MS, count_cb, &fired);
    timer_mod(&ts, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) - 1);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(fired, ==, 3);
    timer_del(&ts);
    timer_deinit(&ts);

    timer_free(t);
    aio_context_unref(ctx);
}

typedef struct Armer {
    QEMUTimer *timer;
    pid_t home_tid;
} Armer;

static void *armer_thread(void *opaque)
{
    Armer *a = opaque;

    test_wait_thread_sleeping(a->home_tid, NULL);
    timer_mod_ns(a->timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
    return NULL;
}

TEST(timer_armed_from_other_thread_wakes_poll)
{
    AioContext *ctx = test_aio_context_new();
    unsigned fired = 0;
    QEMUTimer *t = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS,
                                 count_cb, &fired);
    Armer a = { .timer = t, .home_tid = test_gettid() };
    pthread_t th;
    bool ret;

    test_aio_drain(ctx);
    ASSERT_INT(aio_compute_timeout(ctx), ==, -1);
    test_watchdog("timer armed from another thread did not wake aio_poll",
                  WATCHDOG_S);
    th = test_thread_start(armer_thread, &a);
    ret = aio_poll(ctx, true);
    test_thread_join(th);
    test_watchdog_cancel();
    ASSERT_TRUE(ret);
    ASSERT_UINT(fired, ==, 1);

    timer_free(t);
    aio_context_unref(ctx);
}

TEST(compute_timeout_reflects_nearest_timer)
{
    AioContext *ctx = test_aio_context_new();
    unsigned fired_a = 0, fired_b = 0, runs = 0;
    QEMUTimer *a, *b;
    QEMUBH *bh;

    fake_clock_install();
    a = aio_timer_new(ctx, QEMU_CLOCK_VIRTUAL, SCALE_NS, count_cb, &fired_a);
    b = aio_timer_new(ctx, QEMU_CLOCK_VIRTUAL, SCALE_MS, count_cb, &fired_b);
    bh = aio_bh_new(ctx, count_cb, &runs);
    test_aio_drain(ctx);

    ASSERT_INT(aio_compute_timeout(ctx), ==, -1);
    timer_mod_ns(a, 1000 * MS + 5 * MS);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 5 * MS);
    /* A nearer timer on another scale wins. */
    timer_mod(b, 1000 + 2);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 2 * MS);
    /* A scheduled BH: 0. */
    qemu_bh_schedule(bh);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 0);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(runs, ==, 1);
    ASSERT_UINT(fired_a + fired_b, ==, 0);

    /* Time passes: the deadline shrinks, nothing fires early. */
    fake_clock_set(1000 * MS + 1 * MS);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 1 * MS);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(fired_a + fired_b, ==, 0);

    fake_clock_set(1000 * MS + 2 * MS);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 0);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(fired_b, ==, 1);
    ASSERT_UINT(fired_a, ==, 0);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 3 * MS);

    /* Deleting the remaining timer: infinite again. */
    timer_del(a);
    ASSERT_INT(aio_compute_timeout(ctx), ==, -1);
    fake_clock_set(1000 * MS + 10 * MS);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(fired_a, ==, 0);

    /* A disabled clock contributes no deadline. */
    timer_mod_ns(a, 0);
    qemu_clock_enable(QEMU_CLOCK_VIRTUAL, false);
    ASSERT_INT(aio_compute_timeout(ctx), ==, -1);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(fired_a, ==, 0);
    qemu_clock_enable(QEMU_CLOCK_VIRTUAL, true);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 0);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(fired_a, ==, 1);

    timer_free(a);
    timer_free(b);
    qemu_bh_delete(bh);
    aio_poll(ctx, false);
    fake_clock_remove();
    aio_context_unref(ctx);
}

/*
 * Timer A re-arms itself and deletes timer B, which is also due in the same
 * run: B must not run.
 */
typedef struct Rearm {
    QEMUTimer *a, *b;
    unsigned a_runs, b_runs;
    unsigned limit;
} Rearm;

static void rearm_a_cb(void *opaque)
{
    Rearm *r = opaque;

    r->a_runs++;
    timer_del(r->b);
    if (r->a_runs < r->limit) {
        timer_mod_ns(r->a, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + 1 * MS);
    }
}

static void rearm_b_cb(void *opaque)
{
    Rearm *r = opaque;

    r->b_runs++;
}

TEST(timer_rearms_itself_and_deletes_another)
{
    AioContext *ctx = test_aio_context_new();
    Rearm r = { .limit = 3 };
    int64_t t0;

    fake_clock_install();
    t0 = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
    r.a = aio_timer_new(ctx, QEMU_CLOCK_VIRTUAL, SCALE_NS, rearm_a_cb, &r);
    r.b = aio_timer_new(ctx, QEMU_CLOCK_VIRTUAL, SCALE_NS, rearm_b_cb, &r);
    test_aio_drain(ctx);

    /* A due first, B due too at the time the timers run. */
    timer_mod_ns(r.a, t0 + 1 * MS);
    timer_mod_ns(r.b, t0 + 2 * MS);
    fake_clock_set(t0 + 5 * MS);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(r.a_runs, ==, 1);
    ASSERT_UINT(r.b_runs, ==, 0);
    ASSERT_FALSE(timer_pending(r.b));
    /* A re-armed itself for now + 1 ms: pending, not run again yet. */
    ASSERT_TRUE(timer_pending(r.a));
    ASSERT_INT(timer_expire_time_ns(r.a), ==, t0 + 6 * MS);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 1 * MS);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(r.a_runs, ==, 1);

    fake_clock_set(t0 + 6 * MS);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(r.a_runs, ==, 2);
    fake_clock_set(t0 + 7 * MS);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(r.a_runs, ==, 3);
    /* Limit reached: not re-armed. */
    ASSERT_FALSE(timer_pending(r.a));
    fake_clock_set(t0 + 100 * MS);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(r.a_runs, ==, 3);
    ASSERT_UINT(r.b_runs, ==, 0);

    /* B alone still works. */
    timer_mod_ns(r.b, 0);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(r.b_runs, ==, 1);

    timer_free(r.a);
    timer_free(r.b);
    fake_clock_remove();
    aio_context_unref(ctx);
}

/* A re-arm to "now" from the callback runs in the next iteration only. */
typedef struct SelfNow {
    QEMUTimer *t;
    unsigned runs;
} SelfNow;

static void self_now_cb(void *opaque)
{
    SelfNow *s = opaque;

    s->runs++;
    if (s->runs < 3) {
        timer_mod_ns(s->t, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL));
    }
}

TEST(timer_rearmed_now_runs_next_iteration)
{
    AioContext *ctx = test_aio_context_new();
    SelfNow s = { 0 };

    fake_clock_install();
    s.t = aio_timer_new(ctx, QEMU_CLOCK_VIRTUAL, SCALE_NS, self_now_cb, &s);
    test_aio_drain(ctx);
    timer_mod_ns(s.t, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL));
    for (unsigned i = 1; i <= 3; i++) {
        ASSERT_TRUE(aio_poll(ctx, false));
        ASSERT_UINT(s.runs, ==, i);
    }
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(s.runs, ==, 3);
    timer_free(s.t);
    fake_clock_remove();
    aio_context_unref(ctx);
}

RUN_TESTS(T(context_new_ref_unref),
          T(current_context_and_home_thread),
          T(aio_poll_from_non_home_thread_aborts),
          T(set_current_context_misuse_aborts),
          T(legacy_acquire_release_recursive),
          T(set_poll_params_validation),
          T(set_thread_pool_params_validation),
          T(set_params_notify),
          T(notify_wakes_blocking_poll_without_progress),
          T(notify_without_waiter_does_not_write_eventfd),
          T(cross_thread_bh_schedule_wakes_blocking_poll),
          T(fdmon_name),
          T(timer_in_the_past_runs_on_next_poll),
          T(timer_armed_from_other_thread_wakes_poll),
          T(compute_timeout_reflects_nearest_timer),
          T(timer_rearms_itself_and_deletes_another),
          T(timer_rearmed_now_runs_next_iteration))
