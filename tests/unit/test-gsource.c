/*
 * The AioContext GSource: BHs, event notifiers, fd handlers and timers
 * driven by g_main_context_iteration() / GMainLoop instead of aio_poll().
 * Runs once per fd monitor.  Skipped (77) in a build without GLib.
 */
#define _GNU_SOURCE

#include <aioloop/aio-gsource.h>

#include "aio-test.h"
#include "test.h"


#ifndef AIOLOOP_HAVE_GLIB

int main(void)
{
    test_skip("aioloop was built without GLib");
    return 77;
}

#else

#include <glib.h>

typedef struct Env {
    AioContext *ctx;
    GMainContext *gctx;
    GSource *src;
} Env;

static void env_init(Env *e)
{
    e->ctx = test_aio_context_new();
    e->gctx = g_main_context_new();
    e->src = aio_get_g_source(e->ctx);
    g_source_attach(e->src, e->gctx);
}

static void env_cleanup(Env *e)
{
    /* Run what is left, then detach: the GSource drops its reference. */
    while (g_main_context_iteration(e->gctx, FALSE)) {
        continue;
    }
    g_source_destroy(e->src);
    g_source_unref(e->src);
    g_main_context_unref(e->gctx);
    aio_context_unref(e->ctx);
}

/* Iterate (blocking) until @cond holds. */
#define ITERATE_UNTIL(gctx, cond)                  \
    do {                                           \
        while (!(cond)) {                          \
            g_main_context_iteration((gctx), TRUE); \
        }                                          \
    } while (0)

static void drain(Env *e)
{
    for (int i = 0; i < 10; i++) {
        g_main_context_iteration(e->gctx, FALSE);
    }
}

/* ---- BHs ---------------------------------------------------------------- */

static void count_cb(void *opaque)
{
    __atomic_fetch_add((int *)opaque, 1, __ATOMIC_SEQ_CST);
}

TEST(bh_runs_from_iteration)
{
    Env e;
    int runs = 0;
    QEMUBH *bh;

    env_init(&e);
    bh = aio_bh_new(e.ctx, count_cb, &runs);
    drain(&e);
    qemu_bh_schedule(bh);
    ASSERT_TRUE(g_main_context_iteration(e.gctx, FALSE));
    ASSERT_EQ(runs, 1);
    drain(&e);
    ASSERT_EQ(runs, 1);

    /* An idle BH runs too (within 10 ms when nothing else happens). */
    qemu_bh_schedule_idle(bh);
    ITERATE_UNTIL(e.gctx, runs == 2);

    /* Cancelled: not run. */
    qemu_bh_schedule(bh);
    qemu_bh_cancel(bh);
    drain(&e);
    ASSERT_EQ(runs, 2);
    qemu_bh_delete(bh);
    env_cleanup(&e);
}

static void poke_bh(void *opaque)
{
    qemu_bh_schedule(opaque);
}

TEST(bh_from_thread_wakes_blocking_iteration)
{
    Env e;
    int runs = 0;
    QEMUBH *bh;

    env_init(&e);
    bh = aio_bh_new(e.ctx, count_cb, &runs);
    for (int i = 1; i <= 20; i++) {
        Poker p = { .target = gettid(), .poke = poke_bh, .opaque = bh };
        pthread_t t;

        drain(&e);
        t = test_thread_start(poker_thread, &p);
        ITERATE_UNTIL(e.gctx, __atomic_load_n(&runs, __ATOMIC_SEQ_CST) == i);
        test_thread_join(t);
    }
    qemu_bh_delete(bh);
    env_cleanup(&e);
}

typedef struct QuitData {
    GMainLoop *loop;
    int runs;
} QuitData;

static void quit_bh(void *opaque)
{
    QuitData *q = opaque;

    q->runs++;
    g_main_loop_quit(q->loop);
}

TEST(gmainloop_runs_context)
{
    Env e;
    QuitData q = { 0 };

    env_init(&e);
    q.loop = g_main_loop_new(e.gctx, FALSE);
    aio_bh_schedule_oneshot(e.ctx, quit_bh, &q);
    g_main_loop_run(q.loop);
    ASSERT_EQ(q.runs, 1);
    g_main_loop_unref(q.loop);
    env_cleanup(&e);
}

typedef struct NestData {
    GMainContext *gctx;
    QEMUBH *inner;
    int inner_runs;
    bool inner_ran_nested;
} NestData;

static void inner_bh(void *opaque)
{
    NestData *n = opaque;

    n->inner_runs++;
}

static void outer_bh(void *opaque)
{
    NestData *n = opaque;

    qemu_bh_schedule(n->inner);
    /* The GSource can recurse: a nested iteration runs the inner BH. */
    while (n->inner_runs == 0) {
        g_main_context_iteration(n->gctx, TRUE);
    }
    n->inner_ran_nested = true;
}

TEST(nested_iteration_from_callback)
{
    Env e;
    NestData n = { 0 };

    env_init(&e);
    n.gctx = e.gctx;
    n.inner = aio_bh_new(e.ctx, inner_bh, &n);
    aio_bh_schedule_oneshot(e.ctx, outer_bh, &n);
    ITERATE_UNTIL(e.gctx, n.inner_ran_nested);
    ASSERT_EQ(n.inner_runs, 1);
    qemu_bh_delete(n.inner);
    env_cleanup(&e);
}

/* ---- event notifiers and fd handlers ------------------------------------- */

typedef struct NotifierData {
    EventNotifier e;
    int runs;   /* atomic */
} NotifierData;

static void notifier_cb(EventNotifier *e)
{
    NotifierData *d = container_of(e, NotifierData, e);

    event_notifier_test_and_clear(e);
    __atomic_fetch_add(&d->runs, 1, __ATOMIC_SEQ_CST);
}

static void poke_notifier(void *opaque)
{
    event_notifier_set(opaque);
}

TEST(event_notifier_from_iteration)
{
    Env e;
    NotifierData d = { 0 };
    Poker p = { .poke = poke_notifier, .opaque = &d.e };
    pthread_t t;

    env_init(&e);
    ASSERT_EQ(event_notifier_init(&d.e, false), 0);
    aio_set_event_notifier(e.ctx, &d.e, notifier_cb, NULL, NULL);
    event_notifier_set(&d.e);
    ITERATE_UNTIL(e.gctx, d.runs == 1);

    drain(&e);
    p.target = gettid();
    t = test_thread_start(poker_thread, &p);
    ITERATE_UNTIL(e.gctx, __atomic_load_n(&d.runs, __ATOMIC_SEQ_CST) == 2);
    test_thread_join(t);

    aio_set_event_notifier(e.ctx, &d.e, NULL, NULL, NULL);
    event_notifier_set(&d.e);
    drain(&e);
    ASSERT_EQ(d.runs, 2);
    event_notifier_cleanup(&d.e);
    env_cleanup(&e);
}

/*
 * A polled handler whose io_poll() sees work that no fd reports (a queue
 * filled while notifications were off): the GSource's prepare leaves poll
 * mode and polls once, and what that finds must be dispatched.  It was
 * dropped, so prepare said "ready" on every iteration and the handler
 * never ran: a busy loop.
 */
typedef struct PolledData {
    EventNotifier e;
    bool work;
    int reads, readies;
} PolledData;

static PolledData pd;

static bool polled_poll(void *opaque)
{
    (void)opaque;
    return pd.work;
}

static void polled_ready(EventNotifier *n)
{
    (void)n;
    pd.readies++;
    pd.work = false;
}

static void polled_read(EventNotifier *n)
{
    pd.reads += event_notifier_test_and_clear(n);
}

TEST(poll_hit_in_prepare_is_dispatched)
{
    Env e;
    Error *err = NULL;
    int iterations = 0;

    memset(&pd, 0, sizeof(pd));
    env_init(&e);
    aio_context_set_poll_params(e.ctx, 32768, 0, 0, &err);
    ASSERT_NULL(err);
    ASSERT_EQ(event_notifier_init(&pd.e, false), 0);
    aio_set_event_notifier(e.ctx, &pd.e, polled_read, polled_poll,
                           polled_ready);
    /* A dispatch through aio_poll() puts the handler on the polled list. */
    event_notifier_set(&pd.e);
    while (!pd.reads) {
        aio_poll(e.ctx, true);
    }
    drain(&e);

    pd.work = true;
    while (!pd.readies && iterations < 100) {
        g_main_context_iteration(e.gctx, FALSE);
        iterations++;
    }
    ASSERT_EQ(pd.readies, 1);
    ASSERT_FALSE(pd.work);
    ASSERT_INT(iterations, <=, 2);

    aio_set_event_notifier(e.ctx, &pd.e, NULL, NULL, NULL);
    event_notifier_cleanup(&pd.e);
    env_cleanup(&e);
}

typedef struct FdData {
    int fd;
    int reads;
} FdData;

static void fd_read_cb(void *opaque)
{
    FdData *d = opaque;
    char buf[16];

    d->reads++;
    while (read(d->fd, buf, sizeof(buf)) > 0) {
        continue;
    }
}

#define MANY_FDS 100

TEST(many_fd_handlers)
{
    Env e;
    int fds[MANY_FDS][2];
    FdData d[MANY_FDS];
    int total;

    env_init(&e);
    /* More than the poll backend's threshold: it upgrades under us. */
    for (int i = 0; i < MANY_FDS; i++) {
        if (pipe2(fds[i], O_NONBLOCK | O_CLOEXEC) < 0) {
            TEST_FAIL_("pipe2: %s", strerror(errno));
        }
        d[i] = (FdData){ .fd = fds[i][0] };
        aio_set_fd_handler(e.ctx, fds[i][0], fd_read_cb, NULL, NULL, NULL,
                           &d[i]);
    }
    for (int round = 1; round <= 3; round++) {
        for (int i = 0; i < MANY_FDS; i++) {
            ASSERT_EQ(write(fds[i][1], "x", 1), 1);
        }
        do {
            g_main_context_iteration(e.gctx, TRUE);
            total = 0;
            for (int i = 0; i < MANY_FDS; i++) {
                total += d[i].reads;
            }
        } while (total < round * MANY_FDS);
        for (int i = 0; i < MANY_FDS; i++) {
            ASSERT_EQ(d[i].reads, round);
        }
    }
    printf("# fdmon after: %s\n", aioloop_context_fdmon_name(e.ctx));
    for (int i = 0; i < MANY_FDS; i++) {
        aio_set_fd_handler(e.ctx, fds[i][0], NULL, NULL, NULL, NULL, NULL);
        close(fds[i][0]);
        close(fds[i][1]);
    }
    env_cleanup(&e);
}

static void file_read_cb(void *opaque)
{
    __atomic_fetch_add((int *)opaque, 1, __ATOMIC_SEQ_CST);
}

TEST(regular_file_handler)
{
    Env e;
    FILE *f = tmpfile();
    int runs = 0;

    ASSERT_NOT_NULL(f);
    env_init(&e);
    /*
     * epoll refuses regular files (EPERM): the set breaks and the context
     * must fall back to poll without the GSource sleeping through it.
     */
    aio_set_fd_handler(e.ctx, fileno(f), file_read_cb, NULL, NULL, NULL,
                       &runs);
    ITERATE_UNTIL(e.gctx, runs >= 3);
    aio_set_fd_handler(e.ctx, fileno(f), NULL, NULL, NULL, NULL, NULL);
    fclose(f);
    env_cleanup(&e);
}

/* ---- timers ------------------------------------------------------------------ */

static void timer_cb(void *opaque)
{
    __atomic_fetch_add((int *)opaque, 1, __ATOMIC_SEQ_CST);
}

TEST(timer_from_iteration)
{
    Env e;
    int fired = 0;
    QEMUTimer *t;
    int64_t expire;

    env_init(&e);
    t = aio_timer_new(e.ctx, QEMU_CLOCK_REALTIME, SCALE_NS, timer_cb, &fired);
    for (int i = 1; i <= 3; i++) {
        /* Sub-millisecond: GLib's ms timeout must round up, not spin. */
        expire = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + 300 * 1000;
        timer_mod(t, expire);
        ITERATE_UNTIL(e.gctx, fired == i);
        ASSERT_INT(qemu_clock_get_ns(QEMU_CLOCK_REALTIME), >=, expire);
    }
    timer_free(t);
    env_cleanup(&e);
}

static void poke_timer(void *opaque)
{
    timer_mod(opaque, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
}

TEST(timer_armed_from_thread_wakes_iteration)
{
    Env e;
    int fired = 0;
    QEMUTimer *t;
    Poker p = { .poke = poke_timer };
    pthread_t th;

    env_init(&e);
    t = aio_timer_new(e.ctx, QEMU_CLOCK_REALTIME, SCALE_NS, timer_cb, &fired);
    p.opaque = t;
    p.target = gettid();
    drain(&e);
    th = test_thread_start(poker_thread, &p);
    ITERATE_UNTIL(e.gctx, __atomic_load_n(&fired, __ATOMIC_SEQ_CST) == 1);
    test_thread_join(th);
    timer_free(t);
    env_cleanup(&e);
}

/* ---- mixing, sharing, lifetime ------------------------------------------------ */

TEST(mixed_with_aio_poll)
{
    Env e;
    int runs = 0;
    QEMUBH *bh;
    const char *fdmon;

    env_init(&e);
    fdmon = aioloop_context_fdmon_name(e.ctx);
    aio_context_use_g_source(e.ctx);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(e.ctx), fdmon);
    bh = aio_bh_new(e.ctx, count_cb, &runs);
    for (int i = 1; i <= 10; i++) {
        qemu_bh_schedule(bh);
        if (i % 2) {
            ASSERT_TRUE(aio_poll(e.ctx, true));
        } else {
            ITERATE_UNTIL(e.gctx, runs == i);
        }
        ASSERT_EQ(runs, i);
    }
    qemu_bh_delete(bh);
    env_cleanup(&e);
}

TEST(one_gsource_per_context)
{
    AioContext *ctx = test_aio_context_new();
    GSource *a = aio_get_g_source(ctx);
    GSource *b = aio_get_g_source(ctx);

    ASSERT_PTR_EQ(a, b);
    g_source_unref(b);
    /* The GSource keeps the context alive after the caller's unref. */
    aio_context_unref(ctx);
    ASSERT_NOT_NULL(g_source_get_name(a));
    g_source_unref(a); /* frees both (ASan checks) */

    /* A fresh one after the old one died. */
    ctx = test_aio_context_new();
    a = aio_get_g_source(ctx);
    g_source_unref(a);
    b = aio_get_g_source(ctx);
    g_source_unref(b);
    aio_context_unref(ctx);
}

RUN_TESTS(
    T(bh_runs_from_iteration),
    T(bh_from_thread_wakes_blocking_iteration),
    T(gmainloop_runs_context),
    T(nested_iteration_from_callback),
    T(event_notifier_from_iteration),
    T(poll_hit_in_prepare_is_dispatched),
    T(many_fd_handlers),
    T(regular_file_handler),
    T(timer_from_iteration),
    T(timer_armed_from_thread_wakes_iteration),
    T(mixed_with_aio_poll),
    T(one_gsource_per_context),
)

#endif
