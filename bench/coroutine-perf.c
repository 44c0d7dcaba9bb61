/*
 * C1-C3: coroutine costs.
 *
 *  C1 enter+yield   one coroutine that yields in a loop, entered N times:
 *                   ns per round trip (two switches).  Next to it the floor:
 *                   the same round trip through the bare switch-<arch>.S
 *                   between two stacks, measured in this run; and, as
 *                   "#" lines, the same switch inlined into both loops (no
 *                   call or return: x86-64 only) and glibc swapcontext()
 *                   (a syscall per switch).
 *  C2 create+enter+terminate   qemu_coroutine_create(noop) + enter, N
 *                   times, pool warm: ns per coroutine.
 *  C3 nesting       QEMU's perf/nesting: a coroutine creates and enters a
 *                   child, 1000 deep, repeated 10^4 times: total seconds.
 *
 * Times are thread CPU time (see cpu_ns()); best of 3 runs.  No event-loop peer has coroutines, so the reference
 * figures are QEMU master measured on this kind of machine (issue 3, sec. 6):
 * 57-67 ns, 76-86 ns and 110-160 s; the ratio printed is against the low end.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <aioloop/coroutine.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#ifndef CO_BACKEND
#define CO_BACKEND "?"
#endif

#define REPS 3

/*
 * Thread CPU time, not wall time: these loops never block, and on a
 * shared VM the wall clock also counts the time other jobs hold the CPU
 * (2-3x here under load).  On an idle machine both agree.
 */
static uint64_t cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void coroutine_fn yield_loop(void *opaque)
{
    (void)opaque;
    for (;;) {
        qemu_coroutine_yield();
    }
}

static double c1_enter_yield(long n)
{
    static Coroutine *co;
    uint64_t t0, t1;

    /* Never terminates: one coroutine for the whole program. */
    if (!co) {
        co = qemu_coroutine_create(yield_loop, NULL);
    }
    t0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        qemu_coroutine_enter(co);
    }
    t1 = cpu_ns();
    return (double)(t1 - t0) / n;
}

static ucontext_t uc_main, uc_co;

static void uc_loop(void)
{
    for (;;) {
        swapcontext(&uc_co, &uc_main);
    }
}

static double c1_swapcontext(long n)
{
    static char *stack;
    uint64_t t0, t1;

    if (!stack) {
        stack = malloc(64 * 1024);
        getcontext(&uc_co);
        uc_co.uc_stack.ss_sp = stack;
        uc_co.uc_stack.ss_size = 64 * 1024;
        uc_co.uc_link = NULL;
        makecontext(&uc_co, uc_loop, 0);
    }
    t0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        swapcontext(&uc_main, &uc_co);
    }
    t1 = cpu_ns();
    return (double)(t1 - t0) / n;
}

#ifdef HAVE_ASM_FLOOR
/*
 * The floor: the library's own switch-<arch>.S (compiled into this
 * program too) between two bare stacks, no coroutine bookkeeping.
 */
long aioloop_co_switch(void **save_sp, void *new_sp, long action);
void coroutine_main_loop(void *co);
void coroutine_main_loop(void *co)
{
    (void)co;   /* aioloop_co_start's callee; unused by the floor */
    abort();
}
#if defined(__x86_64__)
void coroutine_enter_finish(void *co, long action);
void coroutine_enter_finish(void *co, long action)
{
    (void)co;   /* aioloop_co_switch_finish's callee; unused likewise */
    (void)action;
    abort();
}
#endif

static void *floor_main_sp, *floor_co_sp;

static void floor_co(void)
{
    for (;;) {
        aioloop_co_switch(&floor_co_sp, floor_main_sp, 1);
    }
}

static double c1_floor(long n)
{
    static char *stack;
    uint64_t t0, t1;

    if (!stack) {
        uintptr_t top, *f;

        stack = malloc(64 * 1024);
        top = ((uintptr_t)stack + 64 * 1024) & ~(uintptr_t)15;
#if defined(__x86_64__)
        f = (uintptr_t *)(top - 8 * sizeof(uintptr_t));
        memset(f, 0, 8 * sizeof(uintptr_t));
        f[6] = (uintptr_t)floor_co;     /* return address after 6 pops */
#else
        f = (uintptr_t *)(top - 160);
        memset(f, 0, 160);
        f[11] = (uintptr_t)floor_co;    /* x30 */
#endif
        floor_co_sp = f;
    }
    t0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        aioloop_co_switch(&floor_main_sp, floor_co_sp, 0);
    }
    t1 = cpu_ns();
    return (double)(t1 - t0) / n;
}
#else
static double c1_floor(long n)
{
    (void)n;
    return -1;
}
#endif

#if defined(__x86_64__)
/*
 * The switch with no call and no return around it: both loops switch
 * with inline asm, so the return-stack predictor never sees a return land
 * on a stack other than its call's.  The bare switch above is called, but
 * ends in a jump, not a return (see switch-x86_64.S), so the gap between
 * the two is the call and the register saves.  On x86-64 enter and yield
 * end in the switch too (tail calls, see coroutine.c), so C1 adds only
 * their bookkeeping to the bare switch.
 */
#define INLINE_SWITCH(save, load)                                            \
    do {                                                                     \
        register void **rdi_ __asm__("rdi") = (save);                        \
        register void **rsi_ __asm__("rsi") = (load);                        \
        __asm__ volatile("leaq 1f(%%rip), %%rcx\n\t"                         \
                         "movq %%rsp, 0(%%rdi)\n\t"                          \
                         "movq %%rbp, 8(%%rdi)\n\t"                          \
                         "movq %%rcx, 16(%%rdi)\n\t"                         \
                         "movq 0(%%rsi), %%rsp\n\t"                          \
                         "movq 8(%%rsi), %%rbp\n\t"                          \
                         "jmpq *16(%%rsi)\n"                                 \
                         "1:\n\t"                                            \
                         : "+r"(rdi_), "+r"(rsi_)                            \
                         :                                                   \
                         : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10",    \
                           "r11", "r12", "r13", "r14", "r15", "memory",      \
                           "cc");                                            \
    } while (0)

static void *inl_main[3], *inl_co[3];

void c1_inline_co(void);
__attribute__((noreturn)) void c1_inline_co(void)
{
    for (;;) {
        INLINE_SWITCH(inl_co, inl_main);
    }
}

/* A fresh stack's first "resume": call c1_inline_co with rsp aligned. */
__asm__(".text\n"
        "c1_inline_start:\n\t"
        "call c1_inline_co\n\t"
        "ud2\n");
extern char c1_inline_start[];

static double c1_inline_floor(long n)
{
    static char *stack;
    uint64_t t0, t1;

    if (!stack) {
        stack = malloc(64 * 1024);
        inl_co[0] = (void *)(((uintptr_t)stack + 64 * 1024) & ~(uintptr_t)15);
        inl_co[1] = NULL;
        inl_co[2] = c1_inline_start;
    }
    t0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        INLINE_SWITCH(inl_main, inl_co);
    }
    t1 = cpu_ns();
    return (double)(t1 - t0) / n;
}
#else
static double c1_inline_floor(long n)
{
    (void)n;
    return -1;
}
#endif

static void coroutine_fn noop(void *opaque)
{
    (void)opaque;
}

static double c2_create_enter(long n)
{
    uint64_t t0, t1;

    t0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        qemu_coroutine_enter(qemu_coroutine_create(noop, NULL));
    }
    t1 = cpu_ns();
    return (double)(t1 - t0) / n;
}

typedef struct NestData {
    unsigned n_enter, n_return, max;
} NestData;

static void coroutine_fn nest(void *opaque)
{
    NestData *nd = opaque;

    nd->n_enter++;
    if (nd->n_enter < nd->max) {
        qemu_coroutine_enter(qemu_coroutine_create(nest, nd));
    }
    nd->n_return++;
}

static double c3_nesting(long cycles, unsigned depth)
{
    uint64_t t0, t1;

    t0 = cpu_ns();
    for (long i = 0; i < cycles; i++) {
        NestData nd = { 0, 0, depth };

        qemu_coroutine_enter(qemu_coroutine_create(nest, &nd));
        if (nd.n_return != depth) {
            fprintf(stderr, "nesting: %u returns, expected %u\n",
                    nd.n_return, depth);
            exit(1);
        }
    }
    t1 = cpu_ns();
    return (double)(t1 - t0) / 1e9;
}

static double best(double a, double b)
{
    return a < 0 || (b >= 0 && b < a) ? b : a;
}

static void line(const char *label, const char *unit, double mine,
                 const char *peer, double peer_v, double qemu_lo,
                 const char *qemu_range, double goal, const char *goal_what)
{
    char a[32], b[32], g[96];

    printf("%-28s aioloop %8s %s", label, bench_fmt(a, sizeof(a), mine), unit);
    if (peer && peer_v > 0) {
        printf(" | %s %s | ratio vs %s %.3f", peer,
               bench_fmt(b, sizeof(b), peer_v), peer, mine / peer_v);
    } else if (peer) {
        printf(" | %s n/a", peer);
    }
    printf(" | QEMU %s | ratio vs QEMU %.3f | %s\n", qemu_range,
           mine / qemu_lo,
           bench_goal(g, sizeof(g), mine, goal, goal_what));
}

int main(void)
{
    long n1 = bench_n(20 * 1000 * 1000);
    long n2 = bench_n(10 * 1000 * 1000);
    long cycles = bench_n(10000);
    double c1 = -1, fl = -1, inl = -1, uc = -1, c2 = -1, c3 = -1;

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("# C1-C3 coroutines: backend %s, stack %zu KiB; best of %d\n",
           CO_BACKEND, aioloop_coroutine_get_stack_size() / 1024, REPS);
    printf("# C1 %ld round trips, C2 %ld coroutines, C3 %ld x 1000 deep\n",
           n1, n2, cycles);

    /* Warm up: fault in the stacks the pool will hand out. */
    c2_create_enter(1000);
    c3_nesting(1, 1000);

    for (int rep = 0; rep < REPS; rep++) {
        c1 = best(c1, c1_enter_yield(n1));
        fl = best(fl, c1_floor(n1));
        inl = best(inl, c1_inline_floor(n1));
        uc = best(uc, c1_swapcontext(n1 / 10));
        c2 = best(c2, c2_create_enter(n2));
        c3 = best(c3, c3_nesting(cycles, 1000));
    }
    if (bench_quick()) {
        /* Scale the quick run back to the full workload. */
        c3 *= 10;
    }
    line("C1 enter+yield", "ns", c1, "bare asm switch", fl, 57, "57-67",
         15, "ns");
    if (inl >= 0) {
        printf("# C1 reference: the same switch with no call/return around "
               "it %.1f ns; the bare switch's excess over it is its call and "
               "register saves\n", inl);
    }
    printf("# C1 reference: glibc swapcontext round trip %.0f ns (a "
           "sigprocmask syscall per switch, which the ucontext backend "
           "avoids with sigsetjmp/siglongjmp)\n", uc);
    line("C2 create+enter+terminate", "ns", c2, NULL, 0, 76, "76-86",
         30, "ns");
    line("C3 nesting 1000x10^4", "s", c3, NULL, 0, 110, "110-160",
         2, "s");
    return 0;
}
