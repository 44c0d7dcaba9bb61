/*
 * W5: the worker thread pool against libuv's uv_queue_work, same process.
 *
 * - round trip: submit one empty job, wait in the loop for its completion
 *   callback, submit the next (thread_pool_submit_aio + aio_poll(ctx, true)
 *   vs uv_queue_work + uv_run).  aioloop runs twice: context polling off
 *   (a plain aio_context_new()) and on (poll-max-ns 32768, an IOThread's
 *   default).
 * - throughput: 256 empty jobs in flight, each completion submits the next;
 *   ns per job.  aioloop runs with thread-pool-max 4 (libuv's default pool
 *   size) and 64 (the default maximum).
 *
 * Each configuration runs ROUNDS times, interleaved with the others; the
 * median is reported.  The job function is empty, so the figures are the
 * pools' own costs: queueing, waking a worker, handing the result back and
 * waking the loop.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <aioloop/aio.h>
#include <aioloop/coroutine.h>
#include <aioloop/error.h>
#include <aioloop/thread-pool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_LIBUV
#include <uv.h>
#endif

#define ROUNDS 5
#define INFLIGHT 256
#define MIN_INFLIGHT(n) ((n) < INFLIGHT ? (n) : INFLIGHT)

static int empty_job(void *opaque)
{
    (void)opaque;
    return 0;
}

/* ---- aioloop ---------------------------------------------------------- */

static long al_done, al_submitted, al_n;

static void al_rt_cb(void *opaque, int ret)
{
    (void)opaque;
    (void)ret;
    al_done++;
}

static void al_tp_cb(void *opaque, int ret)
{
    (void)ret;
    al_done++;
    if (al_submitted < al_n) {
        al_submitted++;
        thread_pool_submit_aio(empty_job, NULL, al_tp_cb, opaque);
    }
}

static AioContext *al_ctx;

static void al_config(int64_t poll_ns, int64_t pool_max)
{
    aio_context_set_poll_params(al_ctx, poll_ns, 0, 0, &error_abort);
    aio_context_set_thread_pool_params(al_ctx, 0, pool_max, &error_abort);
}

static double al_roundtrip(long n, int64_t poll_ns)
{
    uint64_t t0;

    al_config(poll_ns, 64);
    al_done = 0;
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
        thread_pool_submit_aio(empty_job, NULL, al_rt_cb, NULL);
        while (al_done == i) {
            aio_poll(al_ctx, true);
        }
    }
    return (double)(now_ns() - t0) / n;
}

/* The same round trip from a coroutine, with thread_pool_submit_co(). */
typedef struct CoRt {
    long n;
    bool done;
} CoRt;

static void coroutine_fn al_co_rt_entry(void *opaque)
{
    CoRt *c = opaque;

    for (long i = 0; i < c->n; i++) {
        thread_pool_submit_co(empty_job, NULL);
    }
    c->done = true;
}

static double al_co_roundtrip(long n, int64_t poll_ns)
{
    CoRt c = { .n = n };
    uint64_t t0;

    al_config(poll_ns, 64);
    t0 = now_ns();
    aio_co_enter(al_ctx, qemu_coroutine_create(al_co_rt_entry, &c));
    while (!c.done) {
        aio_poll(al_ctx, true);
    }
    return (double)(now_ns() - t0) / n;
}

/* The context's counters over the last throughput run, per job. */
static AioloopContextStats al_st0, al_st1;
static long al_st_n;

static double al_throughput(long n, int64_t pool_max)
{
    uint64_t t0;
    double ns;

    al_config(32768, pool_max);
    al_done = 0;
    al_n = n;
    al_submitted = MIN_INFLIGHT(n);
    t0 = now_ns();
    for (long i = 0; i < al_submitted; i++) {
        thread_pool_submit_aio(empty_job, NULL, al_tp_cb, NULL);
    }
    aioloop_context_get_stats(al_ctx, &al_st0);
    while (al_done < n) {
        aio_poll(al_ctx, true);
    }
    ns = (double)(now_ns() - t0) / n;
    aioloop_context_get_stats(al_ctx, &al_st1);
    al_st_n = n;
    return ns;
}

/* Threads of this process (the pool's workers plus ours and libuv's). */
static int bench_threads(void)
{
    char buf[64];
    FILE *f = fopen("/proc/self/status", "r");
    int n = -1;

    while (f && fgets(buf, sizeof(buf), f)) {
        if (sscanf(buf, "Threads: %d", &n) == 1) {
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return n;
}

static void al_print_stats(const char *what)
{
    double n = (double)al_st_n;

    printf("# aioloop %s, per job: %.3f loop iterations, %.3f BH runs "
           "(completion batches), %.3f eventfd wake-ups, %.3f poll hits, "
           "%.1f ns blocked; %d threads in the process\n", what,
           (al_st1.iterations - al_st0.iterations) / n,
           (al_st1.bh_runs - al_st0.bh_runs) / n,
           (al_st1.wakeups - al_st0.wakeups) / n,
           (al_st1.poll_hits - al_st0.poll_hits) / n,
           (al_st1.blocked_ns - al_st0.blocked_ns) / n, bench_threads());
}

/* ---- libuv ------------------------------------------------------------ */

#ifdef HAVE_LIBUV
static uv_loop_t uv_l;
static long uv_done, uv_submitted, uv_n;
static uv_work_t uv_reqs[INFLIGHT];

static void uv_work(uv_work_t *req)
{
    (void)req;
}

static void uv_rt_after(uv_work_t *req, int status)
{
    (void)status;
    if (++uv_done < uv_n) {
        uv_queue_work(&uv_l, req, uv_work, uv_rt_after);
    }
}

static void uv_tp_after(uv_work_t *req, int status)
{
    (void)status;
    uv_done++;
    if (uv_submitted < uv_n) {
        uv_submitted++;
        uv_queue_work(&uv_l, req, uv_work, uv_tp_after);
    }
}

static double uv_roundtrip(long n)
{
    uint64_t t0;

    uv_done = 0;
    uv_n = n;
    t0 = now_ns();
    uv_queue_work(&uv_l, &uv_reqs[0], uv_work, uv_rt_after);
    uv_run(&uv_l, UV_RUN_DEFAULT);
    return uv_done == n ? (double)(now_ns() - t0) / n : -1;
}

static double uv_throughput(long n)
{
    uint64_t t0;

    uv_done = 0;
    uv_n = n;
    uv_submitted = MIN_INFLIGHT(n);
    t0 = now_ns();
    for (long i = 0; i < uv_submitted; i++) {
        uv_queue_work(&uv_l, &uv_reqs[i], uv_work, uv_tp_after);
    }
    uv_run(&uv_l, UV_RUN_DEFAULT);
    return uv_done == n ? (double)(now_ns() - t0) / n : -1;
}
#endif

/* ---- driver ----------------------------------------------------------- */

static bool run_libuv(void)
{
#ifdef HAVE_LIBUV
    const char *only = getenv("BENCH_PEERS");

    return !only || !*only || strstr(only, "libuv") != NULL;
#else
    return false;
#endif
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[n / 2];
}

enum { C_RT_OFF, C_RT_ON, C_RT_CO_OFF, C_RT_CO_ON, C_RT_UV, C_TP_NCPU, C_TP_4, C_TP_64, C_TP_UV, NCONF };

static void line(const char *label, double mine, double uv, double goal_ratio,
                 const char *qemu)
{
    double peers[NPEERS];
    char tail[160], g[64];

    for (int i = 0; i < NPEERS; i++) {
        peers[i] = -1;
    }
    peers[PEER_LIBUV] = uv > 0 ? uv / 1000.0 : -1;
    if (uv > 0) {
        snprintf(tail, sizeof(tail), "%s | %s", qemu,
                 bench_goal(g, sizeof(g), mine / uv, goal_ratio,
                            "ratio vs libuv"));
    } else {
        snprintf(tail, sizeof(tail), "%s | goal: n/a (libuv not run)", qemu);
    }
    bench_line(label, "us/job", mine / 1000.0, peers, tail);
}

int main(void)
{
    long n_rt = bench_n(20000), n_tp = bench_n(200000);
    double r[NCONF][ROUNDS];
    int cpus[256];
    int ncpus = bench_cpus(cpus, 256);
    char label[64];
    bool uv = run_libuv();
    Error *err = NULL;

    if (ncpus < 1) {
        ncpus = 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    al_ctx = aio_context_new(&err);
    if (!al_ctx) {
        printf("skipped: W5: aio_context_new: %s\n", error_get_pretty(err));
        return 0;
    }
    qemu_set_current_aio_context(al_ctx);
#ifdef HAVE_LIBUV
    if (uv) {
        uv_loop_init(&uv_l);
        printf("# libuv %s, uv_queue_work, UV_THREADPOOL_SIZE=%s\n",
               uv_version_string(),
               getenv("UV_THREADPOOL_SIZE") ? getenv("UV_THREADPOOL_SIZE")
                                            : "4 (default)");
    }
#endif
    if (!uv) {
        printf("skipped: libuv not found or not in BENCH_PEERS\n");
    }
    printf("# W5 thread pool: round trip %ld jobs, throughput %ld jobs with "
           "%d in flight; median of %d interleaved rounds; empty jobs; "
           "callback form, and the round trip from a coroutine\n",
           n_rt, n_tp, INFLIGHT, ROUNDS);

    /* Warm-up: start the workers of both pools. */
    al_throughput(MIN_INFLIGHT(n_tp), 64);
#ifdef HAVE_LIBUV
    if (uv) {
        uv_throughput(MIN_INFLIGHT(n_tp));
    }
#endif
    for (int k = 0; k < ROUNDS; k++) {
        r[C_RT_OFF][k] = al_roundtrip(n_rt, 0);
        r[C_RT_ON][k] = al_roundtrip(n_rt, 32768);
        r[C_RT_CO_OFF][k] = al_co_roundtrip(n_rt, 0);
        r[C_RT_CO_ON][k] = al_co_roundtrip(n_rt, 32768);
        r[C_TP_NCPU][k] = al_throughput(n_tp, ncpus);
        r[C_TP_4][k] = al_throughput(n_tp, 4);
        if (k == ROUNDS - 1) {
            al_print_stats("256-inflight max=4 (last round)");
        }
        r[C_TP_64][k] = al_throughput(n_tp, 64);
        if (k == ROUNDS - 1) {
            al_print_stats("256-inflight max=64 (last round)");
        }
        r[C_RT_UV][k] = r[C_TP_UV][k] = -1;
#ifdef HAVE_LIBUV
        if (uv) {
            r[C_RT_UV][k] = uv_roundtrip(n_rt);
            r[C_TP_UV][k] = uv_throughput(n_tp);
        }
#endif
    }

    double m[NCONF];
    for (int c = 0; c < NCONF; c++) {
        m[c] = median(r[c], ROUNDS);
    }
    line("W5 pool roundtrip poll-off", m[C_RT_OFF], m[C_RT_UV], 0.5,
         "QEMU 33 us");
    line("W5 pool roundtrip poll-on", m[C_RT_ON], m[C_RT_UV], 0.5,
         "QEMU 33 us");
    line("W5 pool co-roundtrip poll-off", m[C_RT_CO_OFF], m[C_RT_UV], 0.5,
         "QEMU 33 us | thread_pool_submit_co");
    line("W5 pool co-roundtrip poll-on", m[C_RT_CO_ON], m[C_RT_UV], 0.5,
         "QEMU 33 us | thread_pool_submit_co");
    snprintf(label, sizeof(label), "W5 pool 256-inflight max=%d", ncpus);
    line(label, m[C_TP_NCPU], m[C_TP_UV], 0.5, "QEMU 0.5-7.6 us | max = CPUs");
    line("W5 pool 256-inflight max=4", m[C_TP_4], m[C_TP_UV], 0.5,
         "QEMU 0.5-7.6 us");
    line("W5 pool 256-inflight max=64", m[C_TP_64], m[C_TP_UV], 0.5,
         "QEMU 0.5-7.6 us");

    qemu_set_current_aio_context(NULL);
    aio_context_unref(al_ctx);
#ifdef HAVE_LIBUV
    if (uv) {
        uv_loop_close(&uv_l);
    }
#endif
    return 0;
}
