/*
 * Coroutines: enter/yield/terminate, self and in_coroutine, nesting, the
 * depth-first wake-up queue without C-stack growth, misuse aborts, the
 * pool, stacks with a guard page, aio_co_schedule/wake/enter and
 * aio_co_reschedule_self between two threads.
 */
#define _GNU_SOURCE

#include <aioloop/coroutine.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#include "aio-internal.h"
#include "coroutine-int.h"
#include "aio-test.h"
#include "co-threads.h"
#include "test.h"

/* ---- basics -------------------------------------------------------------- */

typedef struct Basic {
    int step;
    Coroutine *self;
    bool in_co;
    bool entered;
    AioContext *ctx;
} Basic;

static void coroutine_fn basic_fn(void *opaque)
{
    Basic *b = opaque;

    b->self = qemu_coroutine_self();
    b->in_co = qemu_in_coroutine();
    b->entered = qemu_coroutine_entered(b->self);
    b->ctx = qemu_coroutine_get_aio_context(b->self);
    b->step = 1;
    qemu_coroutine_yield();
    b->step = 2;
    qemu_coroutine_yield();
    b->step = 3;
}

TEST(enter_yield_terminate)
{
    Basic b = { 0 };
    Coroutine *co = qemu_coroutine_create(basic_fn, &b);

    ASSERT_FALSE(qemu_in_coroutine());
    ASSERT_NOT_NULL(qemu_coroutine_self());
    ASSERT_FALSE(qemu_coroutine_entered(co));
    qemu_coroutine_enter(co);
    ASSERT_EQ(b.step, 1);
    ASSERT_PTR_EQ(b.self, co);
    ASSERT_TRUE(b.in_co);
    ASSERT_TRUE(b.entered);
    ASSERT_FALSE(qemu_coroutine_entered(co));
    ASSERT_FALSE(qemu_in_coroutine());
    qemu_coroutine_enter(co);
    ASSERT_EQ(b.step, 2);
    qemu_coroutine_enter(co);
    ASSERT_EQ(b.step, 3);
}

TEST(aio_enter_sets_context)
{
    AioContext *ctx = test_aio_context_new();
    Basic b = { 0 };
    Coroutine *co = qemu_coroutine_create(basic_fn, &b);

    qemu_aio_coroutine_enter(ctx, co);
    ASSERT_PTR_EQ(b.ctx, ctx);
    ASSERT_PTR_EQ(qemu_coroutine_get_aio_context(co), ctx);
    qemu_aio_coroutine_enter(ctx, co);
    qemu_aio_coroutine_enter(ctx, co);
    ASSERT_EQ(b.step, 3);
    aio_context_unref(ctx);
}

typedef struct Nest {
    unsigned depth, max, reached;
} Nest;

static void coroutine_fn nest_fn(void *opaque)
{
    Nest *n = opaque;
    Coroutine *self = qemu_coroutine_self();

    if (++n->depth < n->max) {
        Coroutine *child = qemu_coroutine_create(nest_fn, n);

        qemu_coroutine_enter(child);
        /* The child returned to us, not to the leader. */
        ASSERT_PTR_EQ(qemu_coroutine_self(), self);
    }
    if (n->depth > n->reached) {
        n->reached = n->depth;
    }
}

TEST(nesting)
{
    Nest n = { .max = 128 };

    qemu_coroutine_enter(qemu_coroutine_create(nest_fn, &n));
    ASSERT_UINT(n.reached, ==, 128);
    ASSERT_FALSE(qemu_in_coroutine());
}

static void coroutine_fn inactive_fn(void *opaque)
{
    int *runs = opaque;

    (*runs)++;
    /* Running: entering "if inactive" does nothing. */
    qemu_coroutine_enter_if_inactive(qemu_coroutine_self());
    qemu_coroutine_yield();
    (*runs)++;
}

TEST(enter_if_inactive)
{
    int runs = 0;
    Coroutine *co = qemu_coroutine_create(inactive_fn, &runs);

    qemu_coroutine_enter_if_inactive(co);
    ASSERT_EQ(runs, 1);
    qemu_coroutine_enter_if_inactive(co);
    ASSERT_EQ(runs, 2);
}

/* Locals in every coroutine survive switches (callee-saved registers). */
static void coroutine_fn regs_fn(void *opaque)
{
    uint64_t *sum = opaque;
    volatile double d = 1.5;
    uint64_t a = 1, b = 2, c = 3, e = 5, f = 7;

    for (int i = 0; i < 100; i++) {
        a += b; b += c; c += e; e += f; f += a;
        d *= 1.0001;
        qemu_coroutine_yield();
    }
    *sum = a ^ b ^ c ^ e ^ f ^ (uint64_t)(d * 1000);
}

TEST(registers_survive_switches)
{
    uint64_t s1 = 0, s2 = 0, expect;
    Coroutine *c1 = qemu_coroutine_create(regs_fn, &s1);
    Coroutine *c2 = qemu_coroutine_create(regs_fn, &s2);
    uint64_t a = 1, b = 2, c = 3, e = 5, f = 7;
    double d = 1.5;

    for (int i = 0; i < 101; i++) {
        qemu_coroutine_enter(c1);
        qemu_coroutine_enter(c2);
    }
    for (int i = 0; i < 100; i++) {
        a += b; b += c; c += e; e += f; f += a;
        d *= 1.0001;
    }
    expect = a ^ b ^ c ^ e ^ f ^ (uint64_t)(d * 1000);
    ASSERT_UINT(s1, ==, expect);
    ASSERT_UINT(s2, ==, expect);
}

/* ---- wake-up queue ------------------------------------------------------- */

typedef struct Order {
    char log[16];
    int n;
    Coroutine *b, *c, *d;
} Order;

static void coroutine_fn order_d(void *opaque)
{
    Order *o = opaque;

    o->log[o->n++] = 'D';
}

static void coroutine_fn order_c(void *opaque)
{
    Order *o = opaque;

    o->log[o->n++] = 'C';
}

static void coroutine_fn order_b(void *opaque)
{
    Order *o = opaque;

    o->log[o->n++] = 'B';
    aio_co_wake(o->d);
    o->log[o->n++] = 'b';
}

static void coroutine_fn order_a(void *opaque)
{
    Order *o = opaque;

    o->log[o->n++] = 'A';
    aio_co_wake(o->b);
    aio_co_wake(o->c);
    /* Woken coroutines run only when we yield or end. */
    o->log[o->n++] = 'a';
}

TEST(wakeups_run_depth_first_after_yield)
{
    Order o = { 0 };

    o.b = qemu_coroutine_create(order_b, &o);
    o.c = qemu_coroutine_create(order_c, &o);
    o.d = qemu_coroutine_create(order_d, &o);
    qemu_coroutine_enter(qemu_coroutine_create(order_a, &o));
    o.log[o.n] = '\0';
    ASSERT_STR_EQ(o.log, "AaBbDC");
}

#define PINGPONG_ROUNDS 25000

typedef struct PingPong {
    Coroutine *co[2];
    unsigned rounds[2];
    uintptr_t sp_min, sp_max;
} PingPong;

static void track_sp(PingPong *p)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);

    if (!p->sp_min || sp < p->sp_min) {
        p->sp_min = sp;
    }
    if (sp > p->sp_max) {
        p->sp_max = sp;
    }
}

static void coroutine_fn pingpong_fn(void *opaque)
{
    PingPong *p = opaque;
    int me = qemu_coroutine_self() == p->co[1];

    while (p->rounds[me] < PINGPONG_ROUNDS) {
        p->rounds[me]++;
        if (me == 0) {
            track_sp(p);
        }
        if (p->rounds[!me] < PINGPONG_ROUNDS) {
            aio_co_wake(p->co[!me]);
        }
        if (p->rounds[me] < PINGPONG_ROUNDS) {
            qemu_coroutine_yield();
        }
    }
}

static void coroutine_fn pingpong_b(void *opaque)
{
    PingPong *p = opaque;

    /* Wait to be woken by A the first time. */
    qemu_coroutine_yield();
    pingpong_fn(p);
}

TEST(mutual_wakeups_do_not_grow_the_stack)
{
    PingPong p = { 0 };

    p.co[0] = qemu_coroutine_create(pingpong_fn, &p);
    p.co[1] = qemu_coroutine_create(pingpong_b, &p);
    qemu_coroutine_enter(p.co[1]);
    qemu_coroutine_enter(p.co[0]);
    ASSERT_UINT(p.rounds[0], ==, PINGPONG_ROUNDS);
    ASSERT_UINT(p.rounds[1], ==, PINGPONG_ROUNDS);
    /* Recursion would have moved the frame by ~100 bytes per round. */
    ASSERT_UINT(p.sp_max - p.sp_min, ==, 0);
}

static void coroutine_fn pingpong_outer(void *opaque)
{
    PingPong *p = opaque;

    qemu_coroutine_enter(p->co[1]);
    qemu_coroutine_enter(p->co[0]);
}

/*
 * The same, entered from a coroutine with a 32 KiB stack: the enterer's
 * side of each wake-up (entering the woken coroutine once the other has
 * yielded) must not nest on the enterer's stack either, or 25,000 rounds
 * run into its guard page.
 */
TEST(mutual_wakeups_do_not_grow_the_enterers_stack)
{
    PingPong p = { 0 };
    Coroutine *outer;

    ASSERT_EQ(aioloop_coroutine_set_stack_size(32 * 1024), 0);
    outer = qemu_coroutine_create(pingpong_outer, &p);
    ASSERT_EQ(aioloop_coroutine_set_stack_size(1u << 20), 0);
    p.co[0] = qemu_coroutine_create(pingpong_fn, &p);
    p.co[1] = qemu_coroutine_create(pingpong_b, &p);
    qemu_coroutine_enter(outer);
    ASSERT_UINT(p.rounds[0], ==, PINGPONG_ROUNDS);
    ASSERT_UINT(p.rounds[1], ==, PINGPONG_ROUNDS);
}

/* ---- misuse -------------------------------------------------------------- */

static void yield_outside(void *opaque)
{
    (void)opaque;
    qemu_coroutine_yield();
}

static void coroutine_fn enter_self_fn(void *opaque)
{
    (void)opaque;
    qemu_coroutine_enter(qemu_coroutine_self());
}

static void enter_running(void *opaque)
{
    (void)opaque;
    qemu_coroutine_enter(qemu_coroutine_create(enter_self_fn, NULL));
}

static void coroutine_fn yield_once_fn(void *opaque)
{
    (void)opaque;
    qemu_coroutine_yield();
}

static void enter_scheduled(void *opaque)
{
    AioContext *ctx = test_aio_context_new();
    Coroutine *co = qemu_coroutine_create(yield_once_fn, NULL);

    (void)opaque;
    qemu_coroutine_enter(co);
    aio_co_schedule(ctx, co);
    qemu_coroutine_enter(co);
}

static void schedule_twice(void *opaque)
{
    AioContext *ctx = test_aio_context_new();
    Coroutine *co = qemu_coroutine_create(yield_once_fn, NULL);

    (void)opaque;
    qemu_coroutine_enter(co);
    aio_co_schedule(ctx, co);
    aio_co_schedule(ctx, co);
}

static void unref_with_scheduled(void *opaque)
{
    AioContext *ctx = test_aio_context_new();
    Coroutine *co = qemu_coroutine_create(yield_once_fn, NULL);

    (void)opaque;
    qemu_coroutine_enter(co);
    aio_co_schedule(ctx, co);
    aio_context_unref(ctx);
}

static void reschedule_outside(void *opaque)
{
    (void)opaque;
    aio_co_reschedule_self(NULL);
}

static void create_null(void *opaque)
{
    (void)opaque;
    qemu_coroutine_create(NULL, NULL);
}

TEST(misuse_aborts_with_message)
{
    test_expect_abort(yield_outside, NULL, "yielding to no one");
    test_expect_abort(enter_running, NULL, "re-entered recursively");
    test_expect_abort(enter_scheduled, NULL,
                      "already scheduled in 'aio_co_schedule'");
    test_expect_abort(schedule_twice, NULL,
                      "already scheduled in 'aio_co_schedule'");
    test_expect_abort(create_null, NULL, "entry function is NULL");
    test_expect_abort(unref_with_scheduled, NULL,
                      "while coroutines are scheduled");
    test_expect_abort(reschedule_outside, NULL, "outside coroutine context");
}

/* ---- pool and stacks ----------------------------------------------------- */

static void coroutine_fn noop_fn(void *opaque)
{
    (void)opaque;
}

#define POOL_LIVE 1000
/*
 * TSan's fiber switches cost ~100 us with thousands of fibers alive (its
 * vector clocks grow with them): fewer cycles there.
 */
#if TEST_TSAN
#define POOL_CYCLES 2
#else
#define POOL_CYCLES 20
#endif

TEST(pool_recycles_1000_live_coroutines)
{
    static Coroutine *cos[POOL_LIVE];
    uint64_t after_first = 0;

    for (int cycle = 0; cycle < POOL_CYCLES; cycle++) {
        for (int i = 0; i < POOL_LIVE; i++) {
            cos[i] = qemu_coroutine_create(yield_once_fn, NULL);
            qemu_coroutine_enter(cos[i]);
        }
        for (int i = 0; i < POOL_LIVE; i++) {
            qemu_coroutine_enter(cos[i]);
        }
        if (cycle == 0) {
            after_first = coroutine_stats_stack_allocs();
        }
    }
    /* Every cycle after the first is served from the pool. */
    ASSERT_UINT(coroutine_stats_stack_allocs(), ==, after_first);
}

/*
 * After a burst, two decay windows (65536 terminations each) of little
 * demand give most of the burst's stacks back to the kernel.
 */
TEST(pool_trims_after_a_burst)
{
    enum { BURST = 3000, WINDOW = 65536 };
    static Coroutine *cos[BURST];
    uint64_t frees;

    if (TEST_TSAN) {
        /* 200,000 fiber switch pairs take minutes under TSan; the policy is
         * single-threaded and checked by the other builds. */
        printf("# skipped under TSan (too slow there)\n");
        return;
    }

    for (int i = 0; i < BURST; i++) {
        cos[i] = qemu_coroutine_create(yield_once_fn, NULL);
        qemu_coroutine_enter(cos[i]);
    }
    for (int i = 0; i < BURST; i++) {
        qemu_coroutine_enter(cos[i]);
    }
    frees = coroutine_stats_stack_frees();
    for (int i = 0; i < 3 * WINDOW; i++) {
        qemu_coroutine_enter(qemu_coroutine_create(noop_fn, NULL));
    }
    ASSERT_UINT(coroutine_stats_stack_frees() - frees, >=, BURST / 2);
}

static void *pool_thread(void *arg)
{
    for (int i = 0; i < 100; i++) {
        qemu_coroutine_enter(qemu_coroutine_create(noop_fn, NULL));
    }
    (void)arg;
    return NULL;
}

TEST(thread_exit_hands_pool_over)
{
    uint64_t before;

    /* A thread's pool goes to the shared pool when it exits ... */
    test_thread_join(test_thread_start(pool_thread, NULL));
    before = coroutine_stats_stack_allocs();
    /* ... so the next thread does not map new stacks. */
    test_thread_join(test_thread_start(pool_thread, NULL));
    ASSERT_UINT(coroutine_stats_stack_allocs(), ==, before);
}

TEST(pool_size_adjustment)
{
    qemu_coroutine_inc_pool_size(1000);
    qemu_coroutine_dec_pool_size(1000);
    qemu_coroutine_dec_pool_size(5);   /* below zero: clamps */
    qemu_coroutine_enter(qemu_coroutine_create(noop_fn, NULL));
}

static void coroutine_fn stack_use_fn(void *opaque)
{
    volatile char buf[48 * 1024];
    size_t *used = opaque;

    memset((char *)buf, 0x5a, sizeof(buf));
    *used = sizeof(buf) + (buf[100] == 0x5a ? 0 : 1);
}

TEST(stack_size_is_configurable)
{
    size_t used = 0;

    ASSERT_UINT(aioloop_coroutine_get_stack_size(), ==, 1u << 20);
    ASSERT_EQ(aioloop_coroutine_set_stack_size(100), -EINVAL);
    ASSERT_EQ(aioloop_coroutine_set_stack_size((size_t)1 << 40), -EINVAL);
    ASSERT_EQ(aioloop_coroutine_set_stack_size(64 * 1024), 0);
    ASSERT_UINT(aioloop_coroutine_get_stack_size(), ==, 64 * 1024);
    qemu_coroutine_enter(qemu_coroutine_create(stack_use_fn, &used));
    ASSERT_UINT(used, ==, 48 * 1024);
    ASSERT_EQ(aioloop_coroutine_set_stack_size(1u << 20), 0);
    /* A pooled 64 KiB coroutine is not handed out as a 1 MiB one. */
    used = 0;
    qemu_coroutine_enter(qemu_coroutine_create(stack_use_fn, &used));
    ASSERT_UINT(used, ==, 48 * 1024);
}

/*
 * Walks down the stack 1 KiB at a time, touching every page.  The asm
 * keeps buf alive after the call, so no compiler can turn the recursion
 * into a loop.
 */
static __attribute__((noinline)) int overflow_recurse(int depth)
{
    volatile char buf[1024];

    buf[0] = (char)depth;
    buf[sizeof(buf) - 1] = (char)depth;
    if (depth > 0) {
        overflow_recurse(depth - 1);
    }
    __asm__ volatile("" : : "r"(buf) : "memory");
    return buf[0];
}

static void coroutine_fn overflow_fn(void *opaque)
{
    (void)opaque;
    /* 512 KiB of frames on a 64 KiB stack. */
    printf("%d\n", overflow_recurse(512));
}

static void stack_overflow(void *opaque)
{
    (void)opaque;
    aioloop_coroutine_set_stack_size(64 * 1024);
    qemu_coroutine_enter(qemu_coroutine_create(overflow_fn, NULL));
    printf("overflow not detected\n");
}

TEST(stack_overflow_faults)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);

        /* Sanitizers report the overflow themselves: keep it quiet. */
        dup2(devnull, STDERR_FILENO);
        stack_overflow(NULL);
        _exit(0);
    }
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    /* Killed by SIGSEGV, or a sanitizer caught it and exited non-zero. */
    if (WIFSIGNALED(status)) {
        ASSERT_TRUE(WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS);
    } else {
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    }
}

/* ---- aio_co_* ------------------------------------------------------------ */

typedef struct Fifo {
    int log[16];
    int n;
} Fifo;

typedef struct FifoCo {
    Fifo *f;
    int id;
} FifoCo;

static void coroutine_fn fifo_fn(void *opaque)
{
    FifoCo *fc = opaque;

    fc->f->log[fc->f->n++] = fc->id;
}

TEST(aio_co_schedule_runs_in_fifo_order_and_keeps_ref)
{
    AioContext *ctx = test_aio_context_new();
    Fifo f = { 0 };
    FifoCo fc[10];
    unsigned refs = qatomic_read(&ctx->refcnt);

    for (int i = 0; i < 10; i++) {
        fc[i] = (FifoCo){ &f, i };
        aio_co_schedule(ctx, qemu_coroutine_create(fifo_fn, &fc[i]));
    }
    ASSERT_UINT(qatomic_read(&ctx->refcnt), ==, refs);
    ASSERT_EQ(f.n, 0);
    while (f.n < 10) {
        aio_poll(ctx, true);
    }
    for (int i = 0; i < 10; i++) {
        ASSERT_EQ(f.log[i], i);
    }
    aio_context_unref(ctx);
}

typedef struct Waker {
    Coroutine *target;
    int phase;
} Waker;

static void coroutine_fn waker_fn(void *opaque)
{
    Waker *w = opaque;

    /* Same context, in a coroutine: deferred until we end. */
    aio_co_enter(qemu_get_current_aio_context(), w->target);
    ASSERT_EQ(w->phase, 1);
    w->phase = 2;
}

static void coroutine_fn sleeper_fn(void *opaque)
{
    Waker *w = opaque;

    w->phase = 1;
    qemu_coroutine_yield();
    ASSERT_EQ(w->phase, 2);
    w->phase = 3;
}

TEST(aio_co_enter_from_coroutine_is_deferred)
{
    AioContext *ctx = test_aio_context_new();
    Waker w = { 0 };

    qemu_set_current_aio_context(ctx);
    w.target = qemu_coroutine_create(sleeper_fn, &w);
    aio_co_enter(ctx, w.target);  /* outside coroutines: entered at once */
    ASSERT_EQ(w.phase, 1);
    qemu_coroutine_enter(qemu_coroutine_create(waker_fn, &w));
    ASSERT_EQ(w.phase, 3);
    qemu_set_current_aio_context(NULL);
    aio_context_unref(ctx);
}

/* Two threads, each running its own context; a coroutine hops between. */
typedef struct Hopper {
    LoopThread *t[2];
    int hops;
    int wrong_ctx;
    sem_t done;
} Hopper;

static void coroutine_fn hopper_fn(void *opaque)
{
    Hopper *h = opaque;

    for (int i = 0; i < h->hops; i++) {
        AioContext *to = h->t[i & 1]->ctx;

        aio_co_reschedule_self(to);
        if (qemu_get_current_aio_context() != to ||
            qemu_coroutine_get_aio_context(qemu_coroutine_self()) != to) {
            h->wrong_ctx++;
        }
    }
    sem_post(&h->done);
}

TEST(aio_co_reschedule_self_between_threads)
{
    LoopThread t[2];
    Hopper h = { .t = { &t[0], &t[1] }, .hops = 2000 };

    loop_thread_start(&t[0]);
    loop_thread_start(&t[1]);
    sem_init(&h.done, 0, 0);
    /* From this thread (no context): scheduled in t[0]. */
    aio_co_schedule(t[0].ctx, qemu_coroutine_create(hopper_fn, &h));
    sem_wait(&h.done);
    ASSERT_EQ(h.wrong_ctx, 0);
    loop_thread_stop(&t[0]);
    loop_thread_stop(&t[1]);
    sem_destroy(&h.done);
}

typedef struct CrossWake {
    Coroutine *co;
    AioContext *ran_in;
    sem_t yielded, done;
} CrossWake;

static void coroutine_fn cross_wake_fn(void *opaque)
{
    CrossWake *c = opaque;

    qemu_coroutine_yield();
    c->ran_in = qemu_get_current_aio_context();
    sem_post(&c->done);
}

static void cross_wake_start_bh(void *opaque)
{
    CrossWake *c = opaque;

    qemu_coroutine_enter(c->co);
    sem_post(&c->yielded);
}

TEST(aio_co_wake_from_another_thread_runs_in_home_context)
{
    LoopThread t;
    CrossWake c;

    loop_thread_start(&t);
    sem_init(&c.yielded, 0, 0);
    sem_init(&c.done, 0, 0);
    c.co = qemu_coroutine_create(cross_wake_fn, &c);
    aio_bh_schedule_oneshot(t.ctx, cross_wake_start_bh, &c);
    sem_wait(&c.yielded);
    aio_co_wake(c.co);
    sem_wait(&c.done);
    ASSERT_PTR_EQ(c.ran_in, t.ctx);
    loop_thread_stop(&t);
    sem_destroy(&c.yielded);
    sem_destroy(&c.done);
}

/* ---- signal masks ------------------------------------------------------- */

typedef struct MaskCheck {
    Coroutine *co;
    bool blocked_inside;
    bool blocked_after;
} MaskCheck;

static bool sigusr1_blocked(void)
{
    sigset_t set;

    pthread_sigmask(SIG_SETMASK, NULL, &set);
    return sigismember(&set, SIGUSR1);
}

static void coroutine_fn mask_co(void *opaque)
{
    MaskCheck *m = opaque;

    m->blocked_inside = sigusr1_blocked();
    qemu_coroutine_yield();
}

static void *mask_thread(void *opaque)
{
    MaskCheck *m = opaque;
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    qemu_coroutine_enter(m->co);
    qemu_coroutine_enter(m->co);
    m->blocked_after = sigusr1_blocked();
    return NULL;
}

/*
 * A coroutine created where SIGUSR1 is not blocked runs with the mask of
 * the thread that enters it, and leaves that thread's mask alone.
 */
TEST(coroutines_use_the_thread_signal_mask)
{
    MaskCheck m = { 0 };

    ASSERT_FALSE(sigusr1_blocked());
    /* A fresh stack, made here with SIGUSR1 unblocked. */
    aioloop_coroutine_set_stack_size(96 * 1024);
    m.co = qemu_coroutine_create(mask_co, &m);
    aioloop_coroutine_set_stack_size(1u << 20);
    test_thread_join(test_thread_start(mask_thread, &m));
    ASSERT_TRUE(m.blocked_inside);
    ASSERT_TRUE(m.blocked_after);
    ASSERT_FALSE(sigusr1_blocked());
}

TEST(backend_name)
{
    printf("# coroutine backend: %s\n", co_backend_name);
}

/*
 * The misuse cases fork: they run first so that the children do not
 * inherit pooled coroutines whose TSan fibers belong to the parent.
 */
RUN_TESTS(
    T(misuse_aborts_with_message),
    T(backend_name),
    T(enter_yield_terminate),
    T(aio_enter_sets_context),
    T(nesting),
    T(enter_if_inactive),
    T(registers_survive_switches),
    T(wakeups_run_depth_first_after_yield),
    T(mutual_wakeups_do_not_grow_the_stack),
    T(pool_recycles_1000_live_coroutines),
    T(thread_exit_hands_pool_over),
    T(pool_trims_after_a_burst),
    T(pool_size_adjustment),
    T(stack_size_is_configurable),
    /* After the pool tests: a stack size change empties the pools. */
    T(mutual_wakeups_do_not_grow_the_enterers_stack),
    T(stack_overflow_faults),
    T(aio_co_schedule_runs_in_fifo_order_and_keeps_ref),
    T(aio_co_enter_from_coroutine_is_deferred),
    T(aio_co_reschedule_self_between_threads),
    T(aio_co_wake_from_another_thread_runs_in_home_context),
    T(coroutines_use_the_thread_signal_mask),
)
