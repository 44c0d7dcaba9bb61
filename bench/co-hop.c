/*
 * C4: a coroutine hopping between two IOThreads with aio_co_reschedule_self().
 *
 * One coroutine moves A -> B -> A ... N times; the figure is wall time per
 * hop (each hop is a cross-thread aio_co_schedule(): a BH-style wake-up of
 * the other IOThread and an enter there).  Three placements:
 *
 *   same-cpu poll-off   both IOThreads pinned to one CPU, poll-max-ns 0
 *   same-cpu poll-on    the same with poll-max-ns 32768 (IOThread default)
 *   split poll-on       one CPU each, poll-max-ns 32768
 *
 * No event-loop peer has coroutines: the reference is QEMU master measured
 * on this kind of machine (issue 3, section 6): 4.0 us per hop, 10.2 us with
 * polling on.  Those figures are quoted, not measured in this run.
 * Goals: <= 2 us sharing a CPU, <= 1 us polled on separate CPUs.
 * Median of 5 runs.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <aioloop/coroutine.h>
#include <aioloop/iothread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNS 5
#define QEMU_HOP_US 4.0
#define QEMU_HOP_POLL_US 10.2

typedef struct Hop {
    AioContext *ctx[2];
    long n;
    uint64_t t0, t1;
    sem_t done;
} Hop;

static void coroutine_fn hop_co(void *opaque)
{
    Hop *h = opaque;
    long warm = h->n / 10;

    for (long i = 0; i < warm; i++) {
        aio_co_reschedule_self(h->ctx[(i + 1) & 1]);
    }
    /* warm is even or odd: end in ctx[0] or ctx[1], either way time now. */
    h->t0 = now_ns();
    for (long i = 0; i < h->n; i++) {
        aio_co_reschedule_self(h->ctx[(warm + i + 1) & 1]);
    }
    h->t1 = now_ns();
    sem_post(&h->done);
}

static void pin(IOThread *iot, int cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(iothread_get_thread_id(iot), sizeof(set), &set)) {
        perror("sched_setaffinity");
    }
}

/* Both contexts' counters summed over the runs of one placement. */
static AioloopContextStats acc;
static long acc_hops;

static void acc_add(AioContext *ctx)
{
    AioloopContextStats st;

    aioloop_context_get_stats(ctx, &st);
    acc.iterations += st.iterations;
    acc.poll_hits += st.poll_hits;
    acc.poll_misses += st.poll_misses;
    acc.wakeups += st.wakeups;
}

/* us per hop, or -1 */
static double hop_run(int cpu_a, int cpu_b, int64_t poll_ns, long n)
{
    Error *err = NULL;
    IOThread *iot[2];
    Hop h = { .n = n };

    for (int i = 0; i < 2; i++) {
        iot[i] = iothread_create(i ? "hop-b" : "hop-a", &err);
        if (!iot[i] || !iothread_set_param(iot[i], "poll-max-ns", poll_ns,
                                           &err)) {
            fprintf(stderr, "iothread: %s\n", error_get_pretty(err));
            exit(1);
        }
        h.ctx[i] = iothread_get_aio_context(iot[i]);
    }
    pin(iot[0], cpu_a);
    pin(iot[1], cpu_b);
    sem_init(&h.done, 0, 0);
    aio_co_enter(h.ctx[0], qemu_coroutine_create(hop_co, &h));
    sem_wait(&h.done);
    acc_add(h.ctx[0]);
    acc_add(h.ctx[1]);
    acc_hops += n + n / 10;
    iothread_destroy(iot[0]);
    iothread_destroy(iot[1]);
    sem_destroy(&h.done);
    return (double)(h.t1 - h.t0) / n / 1000.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void placement(const char *label, int cpu_a, int cpu_b, int64_t poll_ns,
                      long n, double goal, double qemu)
{
    double v[RUNS], line[RUNS];
    char a[32], b[32], c[32], d[32], g[96];

    memset(&acc, 0, sizeof(acc));
    acc_hops = 0;
    for (int r = 0; r < RUNS; r++) {
        v[r] = hop_run(cpu_a, cpu_b, poll_ns, n);
        /*
         * The machine's own floor in the same run: polled and split, a
         * cache line's round trip; on one CPU, where each hop hands the
         * CPU from one sleeping thread to the other, a futex wake-up.
         */
        if (cpu_a == cpu_b) {
            line[r] = bench_futex_pingpong(cpu_a, cpu_b, n / 10) / 2000.0;
        } else {
            line[r] = poll_ns ? bench_line_pingpong(cpu_a, cpu_b, n / 10)
                                / 1000.0 : -1;
        }
    }
    if (cpu_a == cpu_b) {
        bench_print_floor(label, "us/hop", v,
                          "futex wake-up between two threads us/direction",
                          line, RUNS);
    } else if (line[0] >= 0) {
        bench_print_floor(label, "us/hop", v, "cache-line ping-pong us/rt",
                          line, RUNS);
    }
    qsort(v, RUNS, sizeof(v[0]), cmp_double);
    printf("%-28s aioloop %8s us/hop | QEMU %s (quoted) | ratio vs QEMU %.2f "
           "| runs %s..%s | %s\n", label, bench_fmt(a, sizeof(a), v[RUNS / 2]),
           bench_fmt(b, sizeof(b), qemu), v[RUNS / 2] / qemu,
           bench_fmt(c, sizeof(c), v[0]), bench_fmt(d, sizeof(d), v[RUNS - 1]),
           goal > 0 ? bench_goal(g, sizeof(g), v[RUNS / 2], goal, "us/hop")
                    : "no goal");
    printf("# %s, per hop (both threads, warm-up included): %.2f loop "
           "iterations, poll hits %.2f, poll misses %.2f, eventfd wake-ups "
           "%.2f\n", label + 3, (double)acc.iterations / acc_hops,
           (double)acc.poll_hits / acc_hops, (double)acc.poll_misses / acc_hops,
           (double)acc.wakeups / acc_hops);
}

int main(void)
{
    int cpus[2];
    int ncpus = bench_cpus(cpus, 2);
    long n = bench_n(200000);

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("# C4 coroutine hop between two IOThreads (aio_co_reschedule_self),"
           " %ld hops per run, median of %d runs\n", n, RUNS);
    placement("C4 co-hop same-cpu poll-off", cpus[0], cpus[0], 0, n, 2.0,
              QEMU_HOP_US);
    placement("C4 co-hop same-cpu poll-on", cpus[0], cpus[0], 32768, n, 2.0,
              QEMU_HOP_POLL_US);
    if (ncpus < 2) {
        printf("skipped: C4 split (one CPU available)\n");
        return 0;
    }
    placement("C4 co-hop split poll-on", cpus[0], cpus[1], 32768, n, 1.0,
              QEMU_HOP_POLL_US);
    placement("C4 co-hop split poll-off", cpus[0], cpus[1], 0, n, -1,
              QEMU_HOP_US);
    return 0;
}
