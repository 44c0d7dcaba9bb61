/*
 * Bottom halves: scheduling, cancel, delete, one-shot, idle, nesting,
 * reentrancy guard and misuse aborts.
 *
 * LIFO/FIFO order within one batch is not specified and not tested: every
 * test that involves several BHs in one batch is written so that it passes
 * with any order.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

#include "aio-internal.h"
#include "sanitizer.h"
#include "aio-test.h"
#include "test.h"

#define IDLE_BH_MAX_NS (10 * 1000 * 1000LL)

typedef struct Counter {
    QEMUBH *bh;
    unsigned runs;
    unsigned limit;        /* reschedule itself while runs < limit */
} Counter;

static void count_cb(void *opaque)
{
    Counter *c = opaque;

    c->runs++;
}

static void reschedule_cb(void *opaque)
{
    Counter *c = opaque;

    c->runs++;
    if (c->runs < c->limit) {
        qemu_bh_schedule(c->bh);
    }
}

TEST(bh_runs_once_however_often_scheduled)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { 0 };

    c.bh = aio_bh_new(ctx, count_cb, &c);
    test_aio_drain(ctx);

    for (int i = 0; i < 5; i++) {
        qemu_bh_schedule(c.bh);
    }
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 1);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 1);

    /* Same through aio_bh_poll() directly. */
    for (int i = 0; i < 3; i++) {
        qemu_bh_schedule(c.bh);
    }
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(c.runs, ==, 2);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);
    ASSERT_UINT(c.runs, ==, 2);

    /* And again after it ran: the BH is reusable. */
    qemu_bh_schedule(c.bh);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(c.runs, ==, 3);

    qemu_bh_delete(c.bh);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

TEST(bh_rescheduled_from_own_callback_runs_next_poll)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { .limit = 4 };

    c.bh = aio_bh_new(ctx, reschedule_cb, &c);
    test_aio_drain(ctx);

    qemu_bh_schedule(c.bh);
    for (unsigned i = 1; i <= 4; i++) {
        /* One run per iteration, not a loop inside one aio_poll(). */
        ASSERT_TRUE(aio_poll(ctx, false));
        ASSERT_UINT(c.runs, ==, i);
    }
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 4);

    /* aio_bh_poll(): one run per call as well. */
    c.runs = 0;
    c.limit = 3;
    qemu_bh_schedule(c.bh);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(c.runs, ==, 1);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(c.runs, ==, 2);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(c.runs, ==, 3);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);
    ASSERT_UINT(c.runs, ==, 3);

    qemu_bh_delete(c.bh);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

TEST(bh_cancel)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { 0 };

    c.bh = aio_bh_new(ctx, count_cb, &c);
    test_aio_drain(ctx);

    /* Cancel of a BH that is not scheduled does nothing. */
    qemu_bh_cancel(c.bh);
    ASSERT_FALSE(aio_poll(ctx, false));

    qemu_bh_schedule(c.bh);
    qemu_bh_cancel(c.bh);
    ASSERT_INT(aio_compute_timeout(ctx), !=, 0);
    /* Dequeued without running: not progress. */
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 0);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 0);

    /* Schedule after cancel, while still queued, runs it once. */
    qemu_bh_schedule(c.bh);
    qemu_bh_cancel(c.bh);
    qemu_bh_schedule(c.bh);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 1);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 1);

    /* Cancel through aio_bh_poll(): returns 0. */
    qemu_bh_schedule(c.bh);
    qemu_bh_cancel(c.bh);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);
    ASSERT_UINT(c.runs, ==, 1);

    qemu_bh_delete(c.bh);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

TEST(bh_delete_unscheduled)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { 0 };

    c.bh = aio_bh_new(ctx, count_cb, &c);
    qemu_bh_delete(c.bh);
    qemu_bh_delete(NULL);
    /* Not progress, and the BH is freed here (LeakSanitizer checks it). */
    aio_poll(ctx, false);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 0);

    /* Delete without any aio_poll afterwards: unref frees it, no abort. */
    c.bh = aio_bh_new(ctx, count_cb, &c);
    qemu_bh_delete(c.bh);
    aio_context_unref(ctx);
    aio_context_unref(NULL);
}

TEST(bh_delete_scheduled_never_runs)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { 0 };

    c.bh = aio_bh_new(ctx, count_cb, &c);
    test_aio_drain(ctx);
    qemu_bh_schedule(c.bh);
    qemu_bh_delete(c.bh);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 0);

    /* Same through aio_bh_poll(). */
    c.bh = aio_bh_new(ctx, count_cb, &c);
    qemu_bh_schedule(c.bh);
    qemu_bh_delete(c.bh);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);
    ASSERT_UINT(c.runs, ==, 0);

    aio_context_unref(ctx);
}

typedef struct SelfDelete {
    QEMUBH *bh;
    unsigned runs;
    bool reschedule_first;
} SelfDelete;

static void self_delete_cb(void *opaque)
{
    SelfDelete *s = opaque;

    s->runs++;
    if (s->reschedule_first) {
        /* Scheduled again, then deleted: the delete wins. */
        qemu_bh_schedule(s->bh);
    }
    qemu_bh_delete(s->bh);
    s->bh = NULL;
}

TEST(bh_delete_from_own_callback)
{
    AioContext *ctx = test_aio_context_new();
    SelfDelete s = { 0 };

    test_aio_drain(ctx);
    s.bh = aio_bh_new(ctx, self_delete_cb, &s);
    qemu_bh_schedule(s.bh);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(s.runs, ==, 1);
    ASSERT_NULL(s.bh);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(s.runs, ==, 1);

    s.reschedule_first = true;
    s.bh = aio_bh_new(ctx, self_delete_cb, &s);
    qemu_bh_schedule(s.bh);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(s.runs, ==, 2);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(s.runs, ==, 2);

    /* Deleted from its callback and never polled again: unref frees it. */
    s.reschedule_first = false;
    s.bh = aio_bh_new(ctx, self_delete_cb, &s);
    qemu_bh_schedule(s.bh);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(s.runs, ==, 3);
    aio_context_unref(ctx);
}

/* Two BHs in one batch; whichever runs first deletes the other. */
typedef struct DeletePair {
    QEMUBH *bh[2];
    unsigned runs[2];
    bool deleted[2];
    bool reschedule;    /* schedule the other again before deleting it */
} DeletePair;

static void pair_cb(DeletePair *p, int me)
{
    int other = !me;

    p->runs[me]++;
    if (!p->deleted[other]) {
        if (p->reschedule) {
            qemu_bh_schedule(p->bh[other]);
        }
        qemu_bh_delete(p->bh[other]);
        p->deleted[other] = true;
    }
}

static void pair_cb0(void *opaque)
{
    pair_cb(opaque, 0);
}

static void pair_cb1(void *opaque)
{
    pair_cb(opaque, 1);
}

TEST(bh_delete_sibling_in_same_batch)
{
    AioContext *ctx = test_aio_context_new();
    DeletePair p = { 0 };

    p.bh[0] = aio_bh_new(ctx, pair_cb0, &p);
    p.bh[1] = aio_bh_new(ctx, pair_cb1, &p);
    qemu_bh_schedule(p.bh[0]);
    qemu_bh_schedule(p.bh[1]);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(p.runs[0] + p.runs[1], ==, 1);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(p.runs[0] + p.runs[1], ==, 1);

    /* The survivor is still usable; delete it too. */
    int alive = p.deleted[0] ? 1 : 0;
    ASSERT_FALSE(p.deleted[alive]);
    qemu_bh_delete(p.bh[alive]);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

/*
 * The same pair, but the first to run schedules the other again before
 * deleting it: the other is still pending in this batch (scheduled from
 * outside, so on the remote list), and the schedule takes the local path,
 * so the deleted BH sits on both lists.  It never runs, and it is freed by
 * the next aio_bh_poll() or, if none comes, when the context goes, not
 * reported as leaked.
 */
static void resched_delete_sibling(bool poll_again)
{
    AioContext *ctx = test_aio_context_new();
    DeletePair p = { .reschedule = true };

    test_aio_drain(ctx);
    p.bh[0] = aio_bh_new(ctx, pair_cb0, &p);
    p.bh[1] = aio_bh_new(ctx, pair_cb1, &p);
    qemu_bh_schedule(p.bh[0]);
    qemu_bh_schedule(p.bh[1]);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(p.runs[0] + p.runs[1], ==, 1);
    qemu_bh_delete(p.bh[p.deleted[0] ? 1 : 0]);
    if (poll_again) {
        ASSERT_FALSE(aio_poll(ctx, false));
        ASSERT_UINT(p.runs[0] + p.runs[1], ==, 1);
    }
    /* Both BHs are deleted: no abort, and LeakSanitizer sees them freed. */
    aio_context_unref(ctx);
}

TEST(bh_rescheduled_then_deleted_while_pending_is_freed)
{
    resched_delete_sibling(true);
    resched_delete_sibling(false);
}

static void *delete_thread(void *opaque)
{
    qemu_bh_delete(opaque);
    return NULL;
}

TEST(bh_delete_from_other_thread)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { 0 };
    pthread_t t;

    test_aio_drain(ctx);
    c.bh = aio_bh_new(ctx, count_cb, &c);
    qemu_bh_schedule(c.bh);
    t = test_thread_start(delete_thread, c.bh);
    test_thread_join(t);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 0);

    /* Unscheduled BH deleted from another thread, freed by unref. */
    c.bh = aio_bh_new(ctx, count_cb, &c);
    t = test_thread_start(delete_thread, c.bh);
    test_thread_join(t);
    aio_context_unref(ctx);
}

static void oneshot_cb(void *opaque)
{
    unsigned *runs = opaque;

    (*runs)++;
}

TEST(bh_oneshot_runs_once_and_frees_itself)
{
    AioContext *ctx = test_aio_context_new();
    unsigned runs[3] = { 0 };

    test_aio_drain(ctx);
    for (int i = 0; i < 3; i++) {
        aio_bh_schedule_oneshot(ctx, oneshot_cb, &runs[i]);
    }
    ASSERT_TRUE(aio_poll(ctx, false));
    for (int i = 0; i < 3; i++) {
        ASSERT_UINT(runs[i], ==, 1);
    }
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_FALSE(aio_poll(ctx, false));
    for (int i = 0; i < 3; i++) {
        ASSERT_UINT(runs[i], ==, 1);
    }

    /* The _full variant. */
    aio_bh_schedule_oneshot_full(ctx, oneshot_cb, &runs[0], "named-oneshot");
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(runs[0], ==, 2);
    aio_context_unref(ctx);
}

static void unref_with_pending_oneshot(void *opaque)
{
    AioContext *ctx = test_aio_context_new();

    aio_bh_schedule_oneshot(ctx, oneshot_cb, opaque);
    aio_context_unref(ctx);
}

/*
 * aio.h: "The BH frees itself after running (or when @ctx is freed)" and
 * aio_context_unref(): "one-shot BHs that never ran are freed".  Run in a
 * child so that an abort does not take the other cases down.
 */
/*
 * As in QEMU, a one-shot BH still pending when the context goes is lost
 * work: the last unref aborts naming it rather than dropping it silently.
 */
TEST(bh_oneshot_pending_at_unref_aborts)
{
    unsigned runs = 0;

    test_expect_abort(unref_with_pending_oneshot, &runs,
                      "BH 'oneshot_cb' leaked");
}

TEST(bh_idle)
{
    AioContext *ctx = test_aio_context_new();
    Counter normal = { 0 }, idle = { 0 };
    int64_t t;

    normal.bh = aio_bh_new(ctx, count_cb, &normal);
    idle.bh = aio_bh_new(ctx, count_cb, &idle);
    test_aio_drain(ctx);

    /* No BH, no timer: infinite. */
    ASSERT_INT(aio_compute_timeout(ctx), ==, -1);

    qemu_bh_schedule(normal.bh);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 0);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(normal.runs, ==, 1);
    ASSERT_INT(aio_compute_timeout(ctx), ==, -1);

    qemu_bh_schedule_idle(idle.bh);
    t = aio_compute_timeout(ctx);
    ASSERT_INT(t, >, 0);
    ASSERT_INT(t, <=, IDLE_BH_MAX_NS);

    /* A normal BH next to the idle one makes the timeout 0 again. */
    qemu_bh_schedule(normal.bh);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 0);
    /* Both run; the normal one is progress. */
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(normal.runs, ==, 2);
    ASSERT_UINT(idle.runs, ==, 1);

    /* Only the idle BH: it runs but is not progress. */
    test_aio_drain(ctx);
    qemu_bh_schedule_idle(idle.bh);
    ASSERT_FALSE(aio_poll(ctx, true));
    ASSERT_UINT(idle.runs, ==, 2);
    ASSERT_INT(aio_compute_timeout(ctx), ==, -1);

    /*
     * A blocking poll with only an idle BH (and "notified" already
     * consumed, so it really blocks) is bounded: it runs the BH and returns
     * false instead of sleeping forever.
     */
    test_watchdog("blocking aio_poll with only an idle BH never returned", 60);
    qemu_bh_schedule_idle(idle.bh);
    aio_notify_accept(ctx);
    ASSERT_FALSE(aio_poll(ctx, true));
    ASSERT_UINT(idle.runs, ==, 3);
    test_watchdog_cancel();

    /* aio_bh_poll() returns 0 for an idle BH, 1 for a normal one. */
    qemu_bh_schedule_idle(idle.bh);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);
    ASSERT_UINT(idle.runs, ==, 4);
    qemu_bh_schedule(normal.bh);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(normal.runs, ==, 3);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);

    qemu_bh_delete(normal.bh);
    qemu_bh_delete(idle.bh);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

TEST(bh_poll_return_value)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { 0 };

    c.bh = aio_bh_new(ctx, count_cb, &c);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);
    qemu_bh_schedule(c.bh);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(c.runs, ==, 1);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);

    aio_bh_schedule_oneshot(ctx, count_cb, &c);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(c.runs, ==, 2);

    /* A deleted BH being freed is not progress either. */
    qemu_bh_delete(c.bh);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);
    aio_context_unref(ctx);
}

/*
 * Nested aio_poll() inside a BH finishes the parent's slice.  Three BHs are
 * scheduled; the first one to run (whichever: the order is not specified)
 * calls aio_poll(ctx, false).  The other two must run inside that nested
 * call, and none of them again afterwards.
 */
typedef struct Nest {
    AioContext *ctx;
    QEMUBH *bh[3];
    int depth;
    int order[8];
    int depth_at_run[8];
    int n;
    int nested_ret;     /* -1: no nested call made */
    QEMUBH *then;       /* if set, scheduled right before the nested call */
} Nest;

static void nest_cb(Nest *s, int id)
{
    if (s->n < 8) {
        s->order[s->n] = id;
        s->depth_at_run[s->n] = s->depth;
    }
    s->n++;
    if (s->depth == 0 && s->nested_ret == -1) {
        if (s->then) {
            qemu_bh_schedule(s->then);
        }
        s->depth++;
        s->nested_ret = aio_poll(s->ctx, false);
        s->depth--;
    }
}

static void nest_cb0(void *opaque)
{
    nest_cb(opaque, 0);
}

static void nest_cb1(void *opaque)
{
    nest_cb(opaque, 1);
}

static void nest_cb2(void *opaque)
{
    nest_cb(opaque, 2);
}

/* All three ran, the first outside any nested call. */
static void nest_check_three_ran(const Nest *s)
{
    printf("# run order: %d (depth %d), %d (depth %d), %d (depth %d)\n",
           s->order[0], s->depth_at_run[0], s->order[1], s->depth_at_run[1],
           s->order[2], s->depth_at_run[2]);
    ASSERT_INT(s->n, ==, 3);
    ASSERT_INT(s->depth_at_run[0], ==, 0);
}

TEST(bh_nested_aio_poll_finishes_parent_slice)
{
    AioContext *ctx = test_aio_context_new();
    Nest s = { .ctx = ctx, .nested_ret = -1 };
    QEMUBHFunc *cbs[3] = { nest_cb0, nest_cb1, nest_cb2 };

    for (int i = 0; i < 3; i++) {
        s.bh[i] = aio_bh_new_full(ctx, cbs[i], &s, "nest", NULL);
    }
    test_aio_drain(ctx);
    for (int i = 0; i < 3; i++) {
        qemu_bh_schedule(s.bh[i]);
    }
    ASSERT_TRUE(aio_poll(ctx, false));
    nest_check_three_ran(&s);
    /* The two others ran inside the nested aio_poll(), which made progress. */
    ASSERT_INT(s.depth_at_run[1], ==, 1);
    ASSERT_INT(s.depth_at_run[2], ==, 1);
    ASSERT_INT(s.nested_ret, ==, 1);
    /* Each exactly once. */
    ASSERT_INT(s.order[0] + s.order[1] + s.order[2], ==, 0 + 1 + 2);
    ASSERT_NE(s.order[0], s.order[1]);
    ASSERT_NE(s.order[1], s.order[2]);
    ASSERT_NE(s.order[0], s.order[2]);

    /* Not again afterwards. */
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_INT(s.n, ==, 3);

    for (int i = 0; i < 3; i++) {
        qemu_bh_delete(s.bh[i]);
    }
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

/*
 * The same with the BHs scheduled from a callback (the home thread's local
 * list), and the first one to run scheduling one more, alone, before its
 * nested aio_poll(): that call must still finish the parent's slice before
 * it runs the new BH, although the new one is all its own list holds.
 */
static void nest_kick(void *opaque)
{
    Nest *s = opaque;

    qemu_bh_schedule(s->bh[0]);
    qemu_bh_schedule(s->bh[1]);
}

TEST(bh_nested_aio_poll_finishes_parent_slice_before_own_bh)
{
    AioContext *ctx = test_aio_context_new();
    Nest s = { .ctx = ctx, .nested_ret = -1 };
    QEMUBHFunc *cbs[3] = { nest_cb0, nest_cb1, nest_cb2 };
    QEMUBH *kick;

    for (int i = 0; i < 3; i++) {
        s.bh[i] = aio_bh_new_full(ctx, cbs[i], &s, "nest-local", NULL);
    }
    s.then = s.bh[2];
    kick = aio_bh_new_full(ctx, nest_kick, &s, "kick", NULL);
    test_aio_drain(ctx);
    qemu_bh_schedule(kick);
    ASSERT_TRUE(aio_poll(ctx, false)); /* kick: schedules bh[0], bh[1] */
    ASSERT_INT(s.n, ==, 0);
    ASSERT_TRUE(aio_poll(ctx, false));
    nest_check_three_ran(&s);
    /* The parent's other BH first, then the one scheduled in between. */
    ASSERT_INT(s.order[0] + s.order[1], ==, 0 + 1);
    ASSERT_INT(s.depth_at_run[1], ==, 1);
    ASSERT_INT(s.order[2], ==, 2);
    ASSERT_INT(s.depth_at_run[2], ==, 1);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_INT(s.n, ==, 3);
    for (int i = 0; i < 3; i++) {
        qemu_bh_delete(s.bh[i]);
    }
    qemu_bh_delete(kick);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

/* A BH scheduled by another BH during aio_bh_poll() waits for the next one. */
typedef struct Chain {
    QEMUBH *first, *second;
    unsigned first_runs, second_runs;
} Chain;

static void chain_first_cb(void *opaque)
{
    Chain *c = opaque;

    c->first_runs++;
    qemu_bh_schedule(c->second);
}

static void chain_second_cb(void *opaque)
{
    Chain *c = opaque;

    c->second_runs++;
}

TEST(bh_scheduled_inside_bh_waits_for_next_poll)
{
    AioContext *ctx = test_aio_context_new();
    Chain c = { 0 };

    c.first = aio_bh_new(ctx, chain_first_cb, &c);
    c.second = aio_bh_new(ctx, chain_second_cb, &c);
    qemu_bh_schedule(c.first);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(c.first_runs, ==, 1);
    ASSERT_UINT(c.second_runs, ==, 0);
    ASSERT_INT(aio_bh_poll(ctx), ==, 1);
    ASSERT_UINT(c.second_runs, ==, 1);
    ASSERT_INT(aio_bh_poll(ctx), ==, 0);
    ASSERT_UINT(c.first_runs, ==, 1);
    ASSERT_UINT(c.second_runs, ==, 1);

    /* Same through aio_poll(). */
    test_aio_drain(ctx);
    qemu_bh_schedule(c.first);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(c.first_runs, ==, 2);
    ASSERT_UINT(c.second_runs, ==, 1);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(c.second_runs, ==, 2);
    ASSERT_FALSE(aio_poll(ctx, false));

    qemu_bh_delete(c.first);
    qemu_bh_delete(c.second);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

/* Reentrancy guard: engaged during the callback, restored afterwards. */
typedef struct Guarded {
    QEMUBH *bh;
    MemReentrancyGuard *guard;
    unsigned runs;
    bool seen_engaged;
    bool delete_self;
    unsigned reschedules; /* reschedule itself this many times */
} Guarded;

static void guarded_cb(void *opaque)
{
    Guarded *g = opaque;

    g->runs++;
    g->seen_engaged = g->guard->engaged_in_io;
    if (g->reschedules) {
        /* From its own callback: it runs alone off the local list. */
        g->reschedules--;
        qemu_bh_schedule(g->bh);
        return;
    }
    if (g->delete_self) {
        qemu_bh_delete(g->bh);
        g->bh = NULL;
    }
}

static void check_guarded(AioContext *ctx, bool before, bool delete_self)
{
    MemReentrancyGuard guard = { .engaged_in_io = before };
    Guarded g = { .guard = &guard, .delete_self = delete_self };

    g.bh = aio_bh_new_guarded(ctx, guarded_cb, &g, &guard);
    qemu_bh_schedule(g.bh);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(g.runs, ==, 1);
    ASSERT_TRUE(g.seen_engaged);
    ASSERT_INT(guard.engaged_in_io, ==, before);

    if (!delete_self) {
        /* And through aio_bh_call() directly. */
        g.seen_engaged = false;
        aio_bh_call(g.bh);
        ASSERT_UINT(g.runs, ==, 2);
        ASSERT_TRUE(g.seen_engaged);
        ASSERT_INT(guard.engaged_in_io, ==, before);
        qemu_bh_delete(g.bh);
    }
    aio_poll(ctx, false);
}

/* The same for a guarded BH that reschedules itself, run after run. */
static void check_guarded_rescheduled(AioContext *ctx, bool before)
{
    MemReentrancyGuard guard = { .engaged_in_io = before };
    Guarded g = { .guard = &guard, .reschedules = 3 };

    g.bh = aio_bh_new_guarded(ctx, guarded_cb, &g, &guard);
    qemu_bh_schedule(g.bh);
    for (unsigned run = 1; run <= 4; run++) {
        g.seen_engaged = false;
        ASSERT_TRUE(aio_poll(ctx, false));
        ASSERT_UINT(g.runs, ==, run);
        ASSERT_TRUE(g.seen_engaged);
        ASSERT_INT(guard.engaged_in_io, ==, before);
    }
    ASSERT_FALSE(aio_poll(ctx, false));
    qemu_bh_delete(g.bh);
    aio_poll(ctx, false);
}

TEST(bh_guarded)
{
    AioContext *ctx = test_aio_context_new();

    check_guarded(ctx, false, false);
    check_guarded(ctx, true, false);
    check_guarded(ctx, false, true);
    check_guarded(ctx, true, true);
    check_guarded_rescheduled(ctx, false);
    check_guarded_rescheduled(ctx, true);
    aio_context_unref(ctx);
}

/* ---- misuse aborts (in a forked child) --------------------------------- */

static void leaky_bh_cb(void *opaque)
{
    (void)opaque;
}

static void leak_bh_then_unref(void *opaque)
{
    AioContext *ctx = test_aio_context_new();

    (void)opaque;
    aio_bh_new(ctx, leaky_bh_cb, NULL);
    aio_context_unref(ctx);
}

static void leak_scheduled_bh_then_unref(void *opaque)
{
    AioContext *ctx = test_aio_context_new();
    QEMUBH *bh;

    (void)opaque;
    bh = aio_bh_new_full(ctx, leaky_bh_cb, NULL, "my-leaky-bh", NULL);
    qemu_bh_schedule(bh);
    aio_poll(ctx, false);
    qemu_bh_schedule(bh);
    aio_context_unref(ctx);
}

TEST(bh_leaked_at_unref_aborts)
{
    test_expect_abort(leak_bh_then_unref, NULL, "BH 'leaky_bh_cb' leaked");
    test_expect_abort(leak_scheduled_bh_then_unref, NULL,
                      "BH 'my-leaky-bh' leaked");
}

static void delete_twice(void *opaque)
{
    AioContext *ctx = test_aio_context_new();
    QEMUBH *bh;

    (void)opaque;
    bh = aio_bh_new(ctx, leaky_bh_cb, NULL);
    qemu_bh_delete(bh);
    qemu_bh_delete(bh);
}

/*
 * A BH scheduled from a callback of its own context's dispatch takes the
 * home-thread path (no atomic read-modify-write).  These cases mix it with
 * the paths other threads take.  in_dispatch() runs @fn inside dispatch.
 */
typedef struct Dispatch {
    void (*fn)(void *);
    void *arg;
} Dispatch;

static void dispatch_cb(void *opaque)
{
    Dispatch *d = opaque;

    d->fn(d->arg);
}

static void in_dispatch(AioContext *ctx, void (*fn)(void *), void *arg)
{
    Dispatch d = { fn, arg };

    aio_bh_schedule_oneshot(ctx, dispatch_cb, &d);
    ASSERT_TRUE(aio_poll(ctx, false));
}

static void *schedule_thread(void *opaque)
{
    qemu_bh_schedule(opaque);
    return NULL;
}

static void *cancel_thread(void *opaque)
{
    qemu_bh_cancel(opaque);
    return NULL;
}

static void local_then_remote(void *opaque)
{
    Counter *c = opaque;

    qemu_bh_schedule(c->bh);
    test_thread_join(test_thread_start(schedule_thread, c->bh));
}

static void local_then_cancel_elsewhere(void *opaque)
{
    Counter *c = opaque;

    qemu_bh_schedule(c->bh);
    test_thread_join(test_thread_start(cancel_thread, c->bh));
}

static void local_then_delete(void *opaque)
{
    Counter *c = opaque;

    qemu_bh_schedule(c->bh);
    qemu_bh_delete(c->bh);
}

static void local_then_delete_elsewhere(void *opaque)
{
    Counter *c = opaque;

    qemu_bh_schedule(c->bh);
    test_thread_join(test_thread_start(delete_thread, c->bh));
}

static void local_idle_then_normal(void *opaque)
{
    Counter *c = opaque;

    qemu_bh_schedule_idle(c->bh);
    qemu_bh_schedule(c->bh);
}

TEST(bh_local_and_remote_scheduling_mix)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { 0 };

    test_aio_drain(ctx);
    c.bh = aio_bh_new(ctx, count_cb, &c);

    /* Scheduled by the loop itself and by another thread: one run. */
    in_dispatch(ctx, local_then_remote, &c);
    ASSERT_UINT(c.runs, ==, 0);
    ASSERT_INT(aio_compute_timeout(ctx), ==, 0);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 1);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 1);

    /* Cancelled from another thread before it ran: no run. */
    in_dispatch(ctx, local_then_cancel_elsewhere, &c);
    ASSERT_INT(aio_compute_timeout(ctx), ==, -1);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 1);

    /* Scheduled idle, then normally: stays idle, as the flags OR. */
    in_dispatch(ctx, local_idle_then_normal, &c);
    ASSERT_INT(aio_compute_timeout(ctx), ==, IDLE_BH_MAX_NS);
    ASSERT_FALSE(aio_poll(ctx, false)); /* it runs, but is not progress */
    ASSERT_UINT(c.runs, ==, 2);

    /* Scheduled then deleted in the same callback: never runs, freed once. */
    in_dispatch(ctx, local_then_delete, &c);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 2);

    /* Scheduled by the loop, deleted by another thread. */
    c.bh = aio_bh_new(ctx, count_cb, &c);
    in_dispatch(ctx, local_then_delete_elsewhere, &c);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 2);
    aio_context_unref(ctx);
}

typedef struct LocalOneshot {
    AioContext *ctx;
    unsigned runs;
} LocalOneshot;

static void local_oneshot(void *opaque)
{
    LocalOneshot *l = opaque;

    aio_bh_schedule_oneshot(l->ctx, oneshot_cb, &l->runs);
}

static void unref_with_local_oneshot(void *opaque)
{
    LocalOneshot l = { .ctx = test_aio_context_new() };

    (void)opaque;
    test_aio_drain(l.ctx);
    in_dispatch(l.ctx, local_oneshot, &l);
    aio_context_unref(l.ctx);
}

/* A one-shot scheduled by the loop itself: runs once, or leaks loudly. */
TEST(bh_local_oneshot_runs_once_or_leaks_loudly)
{
    LocalOneshot l = { .ctx = test_aio_context_new() };

    test_aio_drain(l.ctx);
    in_dispatch(l.ctx, local_oneshot, &l);
    ASSERT_UINT(l.runs, ==, 0);
    ASSERT_TRUE(aio_poll(l.ctx, false));
    ASSERT_UINT(l.runs, ==, 1);
    ASSERT_FALSE(aio_poll(l.ctx, false));
    ASSERT_UINT(l.runs, ==, 1);
    aio_context_unref(l.ctx);
    test_expect_abort(unref_with_local_oneshot, NULL, "BH 'oneshot_cb' leaked");
}

/*
 * qemu_bh_schedule() is async-signal-safe (aio.h).  A signal handler that
 * runs in the home thread while the context dispatches sees the same
 * dispatch context as the callbacks do; it must not interleave with the
 * loop's own plain updates of the local BH state.  Here a timer signal
 * interrupts the home thread at random points of a loop made of BHs
 * rescheduling themselves (each reschedule and each aio_bh_poll() updates
 * that state), and its handler schedules BHs of the same context.  Every
 * so often the signal is blocked for a few iterations: by then each BH the
 * handler scheduled must have run, and each self-rescheduling BH must be
 * running still.  A lost BH stays "queued" forever, so at the end a BH
 * scheduled from a callback must run too.
 */
/* glibc before 2.41 names SIGEV_THREAD_ID's field only internally. */
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

enum {
    SIGNAL_BHS = 4,
    SELF_BHS = 8,
    SIGNAL_INTERVAL_NS = 50000,
};

typedef struct SignalBH {
    QEMUBH *bh;
    unsigned requested; /* schedules so far (relaxed: this thread only) */
    unsigned seen;      /* requested, as its last run found it */
} SignalBH;

typedef struct SignalTest {
    AioContext *ctx;
    SignalBH sig[SIGNAL_BHS];
    Counter self[SELF_BHS];
    bool stop;        /* the self BHs stop rescheduling */
    unsigned signals; /* handled so far */
} SignalTest;

/* The handler's view of the test (a handler gets no argument). */
static SignalTest *signal_test;

static void signal_bh_cb(void *opaque)
{
    SignalBH *s = opaque;
    unsigned requested = __atomic_load_n(&s->requested, __ATOMIC_RELAXED);

    __atomic_store_n(&s->seen, requested, __ATOMIC_RELAXED);
}

static void signal_bh_schedule(SignalBH *s)
{
    /* Counted first: a run that follows the schedule must see it. */
    __atomic_store_n(&s->requested, s->requested + 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    qemu_bh_schedule(s->bh);
}

static void self_bh_cb(void *opaque)
{
    Counter *c = opaque;

    c->runs++;
    if (!__atomic_load_n(&signal_test->stop, __ATOMIC_RELAXED)) {
        qemu_bh_schedule(c->bh);
    }
}

static void bh_signal_handler(int sig)
{
    SignalTest *t = signal_test;
    unsigned n = t->signals++;
    int saved_errno = errno;

    (void)sig;
    /* BHs only the handler schedules, and the self BHs, in turn. */
    if (n & 1) {
        qemu_bh_schedule(t->self[(n / 2) % SELF_BHS].bh);
    } else {
        signal_bh_schedule(&t->sig[(n / 2) % SIGNAL_BHS]);
    }
    errno = saved_errno;
}

static void signal_block(int how)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    ASSERT_EQ(pthread_sigmask(how, &set, NULL), 0);
}

/* With the signal blocked: everything scheduled runs, the chain goes on. */
static void signal_check_quiet(SignalTest *t, const char *when)
{
    unsigned runs[SELF_BHS];

    for (int i = 0; i < SELF_BHS; i++) {
        runs[i] = t->self[i].runs;
    }
    /*
     * Outside aio_poll(), whatever was scheduled is on bh_local or bh_list:
     * one iteration runs it all.
     */
    aio_poll(t->ctx, false);
    for (int i = 0; i < SIGNAL_BHS; i++) {
        if (t->sig[i].seen != t->sig[i].requested) {
            TEST_FAIL_("%s, after %u signals: BH %d scheduled %u times, "
                       "last ran for schedule %u: lost",
                       when, t->signals, i, t->sig[i].requested,
                       t->sig[i].seen);
        }
    }
    if (!t->stop) {
        for (int i = 0; i < SELF_BHS; i++) {
            if (t->self[i].runs == runs[i]) {
                TEST_FAIL_("%s, after %u signals: self-rescheduling BH %d "
                           "stopped at %u runs",
                           when, t->signals, i, runs[i]);
            }
        }
    }
}

static void schedule_signal_bhs(void *opaque)
{
    SignalTest *t = opaque;

    for (int i = 0; i < SIGNAL_BHS; i++) {
        signal_bh_schedule(&t->sig[i]);
    }
}

TEST(bh_schedule_from_signal_handler)
{
    /* Sanitizers slow the loop, not the timer: fewer, longer checks. */
    const int64_t run_ns = TEST_SANITIZED ? 250000000LL : 500000000LL;
    SignalTest t = { .ctx = test_aio_context_new() };
    struct sigaction sa = { .sa_handler = bh_signal_handler,
                            .sa_flags = SA_RESTART };
    struct sigaction old_sa;
    struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID,
                            .sigev_signo = SIGUSR1 };
    struct itimerspec its = {
        .it_value = { 0, SIGNAL_INTERVAL_NS },
        .it_interval = { 0, SIGNAL_INTERVAL_NS },
    };
    int64_t start, next_check;
    timer_t timer;
    unsigned checks = 0;

    signal_test = &t;
    for (int i = 0; i < SIGNAL_BHS; i++) {
        t.sig[i].bh = aio_bh_new(t.ctx, signal_bh_cb, &t.sig[i]);
    }
    for (int i = 0; i < SELF_BHS; i++) {
        t.self[i].bh = aio_bh_new(t.ctx, self_bh_cb, &t.self[i]);
        qemu_bh_schedule(t.self[i].bh);
    }
    test_watchdog("a BH list corrupted by a signal handler", 10);
    signal_block(SIG_BLOCK);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old_sa), 0);
    /* This thread, not the process: the handler must run in the home. */
    sev.sigev_notify_thread_id = test_gettid();
    ASSERT_EQ(timer_create(CLOCK_MONOTONIC, &sev, &timer), 0);
    ASSERT_EQ(timer_settime(timer, 0, &its, NULL), 0);

    start = aio_clock_ns();
    next_check = start;
    for (;;) {
        int64_t now = aio_clock_ns();

        if (now >= next_check) {
            signal_block(SIG_BLOCK);
            signal_check_quiet(&t, "while signals come");
            if (now - start >= run_ns) {
                break;
            }
            checks++;
            next_check = now + run_ns / 20;
            signal_block(SIG_UNBLOCK);
        }
        for (int i = 0; i < 64; i++) {
            aio_poll(t.ctx, false);
        }
    }
    ASSERT_EQ(timer_delete(timer), 0);
    printf("# %u signals, %u checks\n", t.signals, checks);
    /* Not much of a test if signals never interrupted the loop. */
    ASSERT_UINT(t.signals, >, 100);

    /* A BH that was lost would never run from the local path again. */
    in_dispatch(t.ctx, schedule_signal_bhs, &t);
    signal_check_quiet(&t, "scheduled from a callback");

    __atomic_store_n(&t.stop, true, __ATOMIC_RELAXED);
    test_aio_drain(t.ctx);
    test_watchdog_cancel();
    for (int i = 0; i < SIGNAL_BHS; i++) {
        qemu_bh_delete(t.sig[i].bh);
    }
    for (int i = 0; i < SELF_BHS; i++) {
        qemu_bh_delete(t.self[i].bh);
    }
    aio_context_unref(t.ctx);
    /* Ignoring discards a signal still pending, which would kill us. */
    sa.sa_handler = SIG_IGN;
    ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
    signal_block(SIG_UNBLOCK);
    ASSERT_EQ(sigaction(SIGUSR1, &old_sa, NULL), 0);
    signal_test = NULL;
}

TEST(bh_delete_twice_aborts)
{
    test_expect_abort(delete_twice, NULL, "twice");
}

/*
 * A freed BH goes to its thread's cache and the thread's next BH reuses it
 * (the memory behind one-shot message traffic between two threads).  Under
 * AddressSanitizer a cached BH stays poisoned past its first word (the
 * cache's link, which LeakSanitizer must be able to follow), so a use
 * after free still trips.
 */
TEST(bh_memory_reused_by_the_freeing_thread)
{
    AioContext *ctx = test_aio_context_new();
    Counter c = { 0 };
    QEMUBH *old;

    test_aio_drain(ctx);
    c.bh = aio_bh_new(ctx, count_cb, &c);
    old = c.bh;
    qemu_bh_delete(c.bh);
    ASSERT_FALSE(aio_poll(ctx, false));
    ASSERT_UINT(aio_bh_cache_len(), >=, 1);
#ifdef AIOLOOP_ASAN
    ASSERT_TRUE(__asan_address_is_poisoned((char *)old + sizeof(void *)));
#endif
    c.bh = aio_bh_new(ctx, count_cb, &c);
    ASSERT_PTR_EQ(c.bh, old);
#ifdef AIOLOOP_ASAN
    ASSERT_FALSE(__asan_address_is_poisoned((char *)old + sizeof(void *)));
#endif
    /* Reused memory starts clean: not scheduled, not deleted. */
    ASSERT_FALSE(aio_poll(ctx, false));
    qemu_bh_schedule(c.bh);
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(c.runs, ==, 1);
    qemu_bh_delete(c.bh);
    aio_context_unref(ctx);
}

typedef struct Receiver {
    AioContext *ctx;
    unsigned runs;    /* atomic */
    unsigned cached;  /* the thread's cache once all ran */
} Receiver;

enum { RECEIVED_ONESHOTS = 1000 };

static void *receiver_thread(void *opaque)
{
    Receiver *r = opaque;

    while (__atomic_load_n(&r->runs, __ATOMIC_RELAXED) < RECEIVED_ONESHOTS) {
        aio_poll(r->ctx, true);
    }
    r->cached = aio_bh_cache_len();
    /*
     * Exits with a full cache: the thread-exit hook frees it (a leak here
     * fails this test under LeakSanitizer, in the asan flavour).
     */
    return NULL;
}

static void receiver_cb(void *opaque)
{
    Receiver *r = opaque;

    __atomic_store_n(&r->runs, r->runs + 1, __ATOMIC_RELAXED);
}

/* A thread that only frees BHs keeps BH_CACHE_MAX of them. */
TEST(bh_cache_bounded_and_freed_at_thread_exit)
{
    /*
     * Ours to free after the join: the sender may still be in aio_notify()
     * when the receiver has run everything.
     */
    Receiver r = { .ctx = test_aio_context_new() };
    pthread_t t;

    t = test_thread_start(receiver_thread, &r);
    for (unsigned i = 0; i < RECEIVED_ONESHOTS; i++) {
        aio_bh_schedule_oneshot(r.ctx, receiver_cb, &r);
    }
    test_thread_join(t);
    ASSERT_UINT(r.runs, ==, RECEIVED_ONESHOTS);
    /* It allocates none itself: the cache is full and no fuller. */
    ASSERT_UINT(r.cached, ==, BH_CACHE_MAX);
    aio_context_unref(r.ctx);
}

RUN_TESTS(T(bh_runs_once_however_often_scheduled),
          T(bh_rescheduled_from_own_callback_runs_next_poll),
          T(bh_cancel),
          T(bh_delete_unscheduled),
          T(bh_delete_scheduled_never_runs),
          T(bh_delete_from_own_callback),
          T(bh_delete_sibling_in_same_batch),
          T(bh_rescheduled_then_deleted_while_pending_is_freed),
          T(bh_delete_from_other_thread),
          T(bh_oneshot_runs_once_and_frees_itself),
          T(bh_idle),
          T(bh_poll_return_value),
          T(bh_nested_aio_poll_finishes_parent_slice),
          T(bh_nested_aio_poll_finishes_parent_slice_before_own_bh),
          T(bh_scheduled_inside_bh_waits_for_next_poll),
          T(bh_guarded),
          T(bh_leaked_at_unref_aborts),
          T(bh_delete_twice_aborts),
          T(bh_oneshot_pending_at_unref_aborts),
          T(bh_local_and_remote_scheduling_mix),
          T(bh_local_oneshot_runs_once_or_leaks_loudly),
          T(bh_schedule_from_signal_handler),
          T(bh_memory_reused_by_the_freeing_thread),
          T(bh_cache_bounded_and_freed_at_thread_exit))
