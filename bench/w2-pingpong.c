/*
 * W2: cross-thread ping-pong between two event loops in two threads.
 *
 * aioloop: two AioContexts, each thread loops aio_poll(ctx, true); every
 * message is a one-shot BH scheduled on the other context
 * (aio_bh_schedule_oneshot).  Run with adaptive polling off
 * (poll_max_ns 0) and on (poll_max_ns 32768, grow/shrink defaults), with
 * both threads pinned to one CPU ("same") and to two CPUs ("split").
 *
 * Floor: two threads doing blocking write/read on two eventfds.
 * Peers: uv_async_send, ev_async_send, event_active from another thread,
 * a GLib idle source attached to the other GMainContext.
 *
 * Then: the run-to-run spread of polling-on split (5 runs), next to a bare
 * cache-line ping-pong measured in the same rounds, and a sweep of
 * poll_max_ns for the plot (data file in $BENCH_RESULTS_DIR, default ".").
 */
#define _GNU_SOURCE
#include "bench.h"

#include <aioloop/aio.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---- aioloop ------------------------------------------------------------ */

typedef struct AioPP {
    AioContext *ca, *cb;
    PingPong *pp;
    bool done_a; /* thread A only */
    bool done_b; /* thread B only */
} AioPP;

static void aio_a_cb(void *opaque);

static void aio_b_cb(void *opaque)
{
    AioPP *s = opaque;

    aio_bh_schedule_oneshot(s->ca, aio_a_cb, s);
}

static void aio_b_stop(void *opaque)
{
    AioPP *s = opaque;

    s->done_b = true;
}

static void aio_a_cb(void *opaque)
{
    AioPP *s = opaque;

    if (pp_tick(s->pp)) {
        s->done_a = true;
        aio_bh_schedule_oneshot(s->cb, aio_b_stop, s);
    } else {
        aio_bh_schedule_oneshot(s->cb, aio_b_cb, s);
    }
}

static void *aio_thread_a(void *opaque)
{
    PingPong *pp = opaque;
    AioPP *s = pp->priv;

    pp_ready(pp);
    aio_bh_schedule_oneshot(s->cb, aio_b_cb, s);
    while (!s->done_a) {
        aio_poll(s->ca, true);
    }
    return NULL;
}

static void *aio_thread_b(void *opaque)
{
    PingPong *pp = opaque;
    AioPP *s = pp->priv;

    pp_ready(pp);
    while (!s->done_b) {
        aio_poll(s->cb, true);
    }
    return NULL;
}

static AioContext *new_ctx(int64_t poll_max_ns)
{
    Error *err = NULL;
    AioContext *ctx = aio_context_new(&err);

    if (!ctx) {
        fprintf(stderr, "aio_context_new: %s\n", error_get_pretty(err));
        exit(1);
    }
    aio_context_set_poll_params(ctx, poll_max_ns, 0, 0, &err);
    if (err) {
        fprintf(stderr, "aio_context_set_poll_params: %s\n",
                error_get_pretty(err));
        exit(1);
    }
    return ctx;
}

/* Counters of both contexts summed over the runs of one configuration. */
typedef struct AioAcc {
    AioloopContextStats st;
    long round_trips; /* warm-up included, like the counters */
} AioAcc;

static void acc_add(AioAcc *acc, AioContext *ctx)
{
    AioloopContextStats st;

    aioloop_context_get_stats(ctx, &st);
    acc->st.iterations += st.iterations;
    acc->st.bh_runs += st.bh_runs;
    acc->st.poll_hits += st.poll_hits;
    acc->st.poll_misses += st.poll_misses;
    acc->st.blocked_ns += st.blocked_ns;
    acc->st.wakeups += st.wakeups;
}

/*
 * ns per round trip; fresh contexts every time (home threads are fixed).
 * @acc (may be NULL) accumulates the contexts' counters.
 */
static double aio_w2_acc(int cpu_a, int cpu_b, long n, int64_t poll_max_ns,
                         AioAcc *acc)
{
    PingPong pp;
    AioPP s = { 0 };
    double r;

    pp_init(&pp, cpu_a, cpu_b, n);
    s.ca = new_ctx(poll_max_ns);
    s.cb = new_ctx(poll_max_ns);
    s.pp = &pp;
    pp.priv = &s;
    pp.fn_a = aio_thread_a;
    pp.fn_b = aio_thread_b;
    r = pp_run(&pp);
    if (acc) {
        acc_add(acc, s.ca);
        acc_add(acc, s.cb);
        acc->round_trips += pp.count;
    }
    aio_context_unref(s.ca);
    aio_context_unref(s.cb);
    return r;
}

static double aio_w2(int cpu_a, int cpu_b, long n, int64_t poll_max_ns)
{
    return aio_w2_acc(cpu_a, cpu_b, n, poll_max_ns, NULL);
}

/* ---- raw eventfd floor ----------------------------------------------------- */

typedef struct EfdPP {
    int e_ab, e_ba;
    int stop; /* atomic */
} EfdPP;

static void efd_put(int fd)
{
    uint64_t one = 1;

    if (write(fd, &one, sizeof(one)) != sizeof(one)) {
        perror("eventfd write");
        exit(1);
    }
}

static void efd_get(int fd)
{
    uint64_t v;

    if (read(fd, &v, sizeof(v)) != sizeof(v)) {
        perror("eventfd read");
        exit(1);
    }
}

static void *efd_thread_a(void *opaque)
{
    PingPong *pp = opaque;
    EfdPP *s = pp->priv;

    pp_ready(pp);
    for (;;) {
        efd_put(s->e_ab);
        efd_get(s->e_ba);
        if (pp_tick(pp)) {
            __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
            efd_put(s->e_ab);
            return NULL;
        }
    }
}

static void *efd_thread_b(void *opaque)
{
    PingPong *pp = opaque;
    EfdPP *s = pp->priv;

    pp_ready(pp);
    for (;;) {
        efd_get(s->e_ab);
        if (__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
            return NULL;
        }
        efd_put(s->e_ba);
    }
}

static double efd_w2(int cpu_a, int cpu_b, long n)
{
    PingPong pp;
    EfdPP s = { 0 };
    double r;

    pp_init(&pp, cpu_a, cpu_b, n);
    s.e_ab = eventfd(0, EFD_CLOEXEC);
    s.e_ba = eventfd(0, EFD_CLOEXEC);
    if (s.e_ab < 0 || s.e_ba < 0) {
        perror("eventfd");
        exit(1);
    }
    pp.priv = &s;
    pp.fn_a = efd_thread_a;
    pp.fn_b = efd_thread_b;
    r = pp_run(&pp);
    close(s.e_ab);
    close(s.e_ba);
    return r;
}

/* ---- driver ------------------------------------------------------------------
 * Every configuration is run in ROUNDS interleaved rounds of n / ROUNDS
 * round trips and the median round is reported: on a shared VM the cost of
 * waking a blocked vCPU changes by 5x from one second to the next, and
 * interleaving keeps the configurations compared under the same conditions.
 */
#define ROUNDS 5

enum { CFG_EVENTFD, CFG_AIO_OFF, CFG_AIO_ON, CFG_PEER0, NCFG = CFG_PEER0 + NPEERS };

static double peer_w2(int i, int cpu_a, int cpu_b, long n)
{
    PingPong pp;

    pp_init(&pp, cpu_a, cpu_b, n);
    return bench_peers[i]->w2_pingpong(&pp);
}

static double run_cfg(int cfg, int cpu_a, int cpu_b, long n, AioAcc acc[2])
{
    switch (cfg) {
    case CFG_EVENTFD:
        return efd_w2(cpu_a, cpu_b, n);
    case CFG_AIO_OFF:
        return aio_w2_acc(cpu_a, cpu_b, n, 0, &acc[0]);
    case CFG_AIO_ON:
        return aio_w2_acc(cpu_a, cpu_b, n, 32768, &acc[1]);
    default:
        return bench_peers[cfg - CFG_PEER0]
            ? peer_w2(cfg - CFG_PEER0, cpu_a, cpu_b, n) : -1;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Sorts @v[0..n) and returns its median (negative values = failed runs). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
    return v[0] < 0 ? -1 : v[n / 2];
}

#define US(ns) ((ns) < 0 ? -1.0 : (ns) / 1000.0)

/*
 * Polling on, split CPUs, round by round next to the cache-line floor of
 * the same round: when the spread above is the host's, the ratio stays put.
 */
static void print_line_floor(const double on[ROUNDS], const double line[ROUNDS])
{
    double ratio[ROUNDS], lo = -1, hi = -1;
    char a[32], b[32];

    bench_print_floor("W2 split poll-on", "us/rt", on,
                      "cache-line ping-pong us/rt", line, ROUNDS);
    for (int r = 0; r < ROUNDS; r++) {
        ratio[r] = on[r] > 0 && line[r] > 0 ? on[r] / line[r] : -1;
        if (ratio[r] < 0) {
            return;
        }
        lo = lo < 0 || ratio[r] < lo ? ratio[r] : lo;
        hi = ratio[r] > hi ? ratio[r] : hi;
    }
    printf("%-28s aioloop  poll-on / cache-line round trip: min %s max %s | "
           "max/min %.2f (no goal: shows how much of the spread is the "
           "machine's)\n", "W2 spread vs line floor",
           bench_fmt(a, sizeof(a), lo), bench_fmt(b, sizeof(b), hi), hi / lo);
}

static void placement(const char *where, int cpu_a, int cpu_b, long n)
{
    double runs[NCFG][ROUNDS], med[NCFG], peers[NPEERS];
    double line[ROUNDS], on_by_round[ROUNDS];
    char label[64], tail[256], g[96], a[32], b[32], c[32];
    bool split = cpu_a != cpu_b;
    int capped0 = bench_pp_capped;
    AioAcc acc[2] = { 0 };

    for (int r = 0; r < ROUNDS; r++) {
        for (int cfg = 0; cfg < NCFG; cfg++) {
            runs[cfg][r] = US(run_cfg(cfg, cpu_a, cpu_b, n / ROUNDS, acc));
        }
        /* Spinning threads sharing one CPU would only measure the tick. */
        line[r] = split ? US(bench_line_pingpong(cpu_a, cpu_b, n / ROUNDS)) : -1;
        on_by_round[r] = runs[CFG_AIO_ON][r];
    }
    for (int cfg = 0; cfg < NCFG; cfg++) {
        med[cfg] = median(runs[cfg], ROUNDS);
    }
    if (bench_pp_capped > capped0) {
        printf("# note: %d of %d %s runs hit the %.1f s cap and report fewer "
               "round trips\n", bench_pp_capped - capped0, ROUNDS * NCFG, where,
               (bench_quick() ? 0.3 : 1.5));
    }
    for (int i = 0; i < NPEERS; i++) {
        peers[i] = med[CFG_PEER0 + i];
    }

    snprintf(label, sizeof(label), "W2 eventfd-floor %s", where);
    printf("%-28s eventfd  %8s us/rt (blocking write/read; runs %s..%s)\n",
           label, bench_fmt(a, sizeof(a), med[CFG_EVENTFD]),
           bench_fmt(b, sizeof(b), runs[CFG_EVENTFD][0]),
           bench_fmt(c, sizeof(c), runs[CFG_EVENTFD][ROUNDS - 1]));

    double floor = med[CFG_EVENTFD], off = med[CFG_AIO_OFF], on = med[CFG_AIO_ON];
    double r_floor = off > 0 && floor > 0 ? off / floor : -1;

    snprintf(label, sizeof(label), "W2 xthread %s poll-off", where);
    snprintf(tail, sizeof(tail), "vs eventfd %.2f | runs %s..%s | %s", r_floor,
             bench_fmt(a, sizeof(a), runs[CFG_AIO_OFF][0]),
             bench_fmt(b, sizeof(b), runs[CFG_AIO_OFF][ROUNDS - 1]),
             bench_goal(g, sizeof(g), r_floor, 1.1, "ratio vs eventfd"));
    bench_line(label, "us/rt", off, peers, tail);

    snprintf(label, sizeof(label), "W2 xthread %s poll-on", where);
    if (!split) {
        double r_off = on > 0 && off > 0 ? on / off : -1;

        snprintf(tail, sizeof(tail), "vs poll-off %.2f | runs %s..%s | %s",
                 r_off, bench_fmt(a, sizeof(a), runs[CFG_AIO_ON][0]),
                 bench_fmt(b, sizeof(b), runs[CFG_AIO_ON][ROUNDS - 1]),
                 bench_goal(g, sizeof(g), r_off, 1.0, "poll-on/poll-off"));
    } else {
        snprintf(tail, sizeof(tail), "vs eventfd %.2f | %s",
                 on > 0 && floor > 0 ? on / floor : -1,
                 bench_goal(g, sizeof(g), on, 1.0, "us/rt"));
    }
    bench_line(label, "us/rt", on, peers, tail);

    if (split) {
        /* The ROUNDS polling-on runs are the spread the goal asks about. */
        double *v = runs[CFG_AIO_ON];
        double r = v[0] > 0 ? v[ROUNDS - 1] / v[0] : -1;

        printf("%-28s aioloop  min %s median %s max %s us/rt over %dx%ld | "
               "max/min %.2f | %s\n",
               "W2 spread split poll-on", bench_fmt(a, sizeof(a), v[0]),
               bench_fmt(b, sizeof(b), v[ROUNDS / 2]),
               bench_fmt(c, sizeof(c), v[ROUNDS - 1]), ROUNDS, n / ROUNDS, r,
               bench_goal(g, sizeof(g), r, 1.5, "stable: max/min"));
        print_line_floor(on_by_round, line);
    }

    /* Why a configuration costs what it costs: the loop's own counters. */
    for (int i = 0; i < 2; i++) {
        double rt = acc[i].round_trips > 0 ? (double)acc[i].round_trips : 1;
        const AioloopContextStats *st = &acc[i].st;

        printf("# aioloop %s %s, per round trip (both threads): %.2f "
               "iterations, poll hits %.2f, poll misses %.2f, eventfd "
               "wake-ups %.2f, blocked %.2f us\n", where,
               i ? "poll-on" : "poll-off", st->iterations / rt,
               st->poll_hits / rt, st->poll_misses / rt, st->wakeups / rt,
               st->blocked_ns / rt / 1000.0);
    }
}

static void sweep(int cpus[2], int ncpus, long n)
{
    static const int64_t windows[] = { 0, 1000, 2000, 4000, 8000, 16000,
                                       32768, 65536, 131072 };
    enum { NW = sizeof(windows) / sizeof(windows[0]), SWEEP_ROUNDS = 3 };
    const char *dir = getenv("BENCH_RESULTS_DIR");
    double split[NW][SWEEP_ROUNDS], same[NW][SWEEP_ROUNDS];
    char path[512], label[64], a[32], b[32];
    FILE *f;

    snprintf(path, sizeof(path), "%s/w2-poll-window.dat",
             dir && *dir ? dir : ".");
    f = fopen(path, "w");
    if (!f) {
        printf("# W2 sweep: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    for (int r = 0; r < SWEEP_ROUNDS; r++) {
        for (int w = 0; w < NW; w++) {
            split[w][r] = ncpus >= 2
                ? US(aio_w2(cpus[0], cpus[1], n / SWEEP_ROUNDS, windows[w])) : -1;
            same[w][r] = US(aio_w2(cpus[0], cpus[0], n / SWEEP_ROUNDS, windows[w]));
        }
    }
    fprintf(f, "# poll_max_ns split_us same_us  (median of %d runs of %ld "
            "round trips; -1 = not run)\n", SWEEP_ROUNDS, n / SWEEP_ROUNDS);
    for (int w = 0; w < NW; w++) {
        double s = median(split[w], SWEEP_ROUNDS);
        double m = median(same[w], SWEEP_ROUNDS);

        fprintf(f, "%lld %.4f %.4f\n", (long long)windows[w], s, m);
        snprintf(label, sizeof(label), "W2 sweep poll_max_ns=%lld",
                 (long long)windows[w]);
        printf("%-28s aioloop  split %s same %s us/rt\n", label,
               bench_fmt(a, sizeof(a), s), bench_fmt(b, sizeof(b), m));
    }
    fclose(f);
    printf("# W2 sweep data: %s\n", path);
}

int main(void)
{
    long n = bench_n(100000);
    long n_sweep = bench_n(9000);
    int cpus[2], ncpus;

    setvbuf(stdout, NULL, _IOLBF, 0);
    ncpus = bench_cpus(cpus, 2);
    printf("# W2 cross-thread ping-pong: %ld round trips per config (median "
           "of %d interleaved rounds of %ld), us per round trip\n", n, ROUNDS,
           n / ROUNDS);
    bench_init_peers();
    if (ncpus < 1) {
        printf("skipped: W2: sched_getaffinity failed\n");
        return 0;
    }

    placement("same", cpus[0], cpus[0], n);
    if (ncpus >= 2) {
        placement("split", cpus[0], cpus[1], n);
    } else {
        printf("skipped: W2 split: only 1 CPU available to this process\n");
    }
    sweep(cpus, ncpus, n_sweep);
    return 0;
}
