/*
 * W3: 10^6 timers with random deadlines 1-2 hours ahead.
 *
 * Phases, each timed separately, ns per operation:
 *   create  allocate + initialise (aio_timer_new), not armed
 *   arm     first arm (timer_mod_ns)
 *   re-arm  arm again with a new random deadline (timer_mod_ns)
 *   cancel  timer_del on a random half
 * bytes/timer: malloc'd bytes (mallinfo2, chunk headers included) after
 * create + arm, minus before, divided by N: the handle plus the timer
 * queue's share.  Every library allocates each handle with its own malloc.
 *
 * GLib runs with N capped at 10^5 (timeout sources are heavy; see
 * peer-glib.c for what arm/re-arm mean there).  Best of 3 runs per phase.
 */
#include "bench.h"

#include <aioloop/aio.h>
#include <stdio.h>
#include <stdlib.h>

#define REPS 3
#define GLIB_CAP 100000

static void w3_cb(void *opaque)
{
    (void)opaque;
}

static int aio_w3(AioContext *ctx, const W3Input *in, W3Result *r)
{
    long n = in->n;
    QEMUTimer **t = malloc(sizeof(*t) * (size_t)n);
    size_t m0, m1;
    uint64_t t0, t1, t2, t3, t4;
    int64_t now;

    if (!t) {
        return -1;
    }
    m0 = bench_heap_bytes();
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
        t[i] = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS, w3_cb, NULL);
    }
    t1 = now_ns();
    now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    for (long i = 0; i < n; i++) {
        timer_mod_ns(t[i], now + in->arm_rel_ns[i]);
    }
    t2 = now_ns();
    m1 = bench_heap_bytes();
    for (long i = 0; i < n; i++) {
        timer_mod_ns(t[i], now + in->rearm_rel_ns[i]);
    }
    t3 = now_ns();
    for (long j = 0; j < n / 2; j++) {
        timer_del(t[in->cancel_idx[j]]);
    }
    t4 = now_ns();

    r->n = n;
    r->create_ns = (double)(t1 - t0) / n;
    r->arm_ns = (double)(t2 - t1) / n;
    r->rearm_ns = (double)(t3 - t2) / n;
    r->cancel_ns = (double)(t4 - t3) / (n / 2);
    r->bytes_per_timer = (double)(m1 - m0) / n;
    r->handle_size = sizeof(QEMUTimer);

    for (long i = 0; i < n; i++) {
        timer_free(t[i]);
    }
    free(t);
    return 0;
}

static void make_input(W3Input *in, long n, uint64_t seed)
{
    const int64_t hour = 3600LL * 1000000000LL;
    int64_t *arm = malloc(sizeof(*arm) * (size_t)n);
    int64_t *rearm = malloc(sizeof(*rearm) * (size_t)n);
    uint32_t *perm = malloc(sizeof(*perm) * (size_t)n);
    BenchRng rng;

    rng_seed(&rng, seed);
    for (long i = 0; i < n; i++) {
        arm[i] = hour + (int64_t)rng_below(&rng, (uint64_t)hour);
        rearm[i] = hour + (int64_t)rng_below(&rng, (uint64_t)hour);
        perm[i] = (uint32_t)i;
    }
    for (long i = n - 1; i > 0; i--) {
        long j = (long)rng_below(&rng, (uint64_t)i + 1);
        uint32_t tmp = perm[i];

        perm[i] = perm[j];
        perm[j] = tmp;
    }
    in->n = n;
    in->arm_rel_ns = arm;
    in->rearm_rel_ns = rearm;
    in->cancel_idx = perm;
}

static void keep_best(W3Result *best, const W3Result *r, bool *have)
{
    if (!*have) {
        *best = *r;
        *have = true;
        return;
    }
#define MIN_FIELD(f) if (r->f >= 0 && r->f < best->f) best->f = r->f
    MIN_FIELD(create_ns);
    MIN_FIELD(arm_ns);
    MIN_FIELD(rearm_ns);
    MIN_FIELD(cancel_ns);
    MIN_FIELD(bytes_per_timer);
#undef MIN_FIELD
}

int main(void)
{
    long n = bench_n(1000000);
    long n_glib = n < GLIB_CAP ? n : GLIB_CAP;
    W3Input in, in_glib;
    W3Result mine = { 0 }, peer[NPEERS], r;
    bool have_mine = false, have[NPEERS] = { false };
    Error *err = NULL;
    AioContext *ctx;
    double p[NPEERS];
    char label[64], tail[160], g[96];

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("# W3 timers: N=%ld (glib N=%ld), deadlines 1-2 h ahead, "
           "best of %d\n", n, n_glib, REPS);
    bench_init_peers();
    ctx = aio_context_new(&err);
    if (!ctx) {
        fprintf(stderr, "aio_context_new: %s\n", error_get_pretty(err));
        return 1;
    }
    make_input(&in, n, 1);
    make_input(&in_glib, n_glib, 2);

    for (int rep = 0; rep < REPS; rep++) {
        if (aio_w3(ctx, &in, &r) == 0) {
            keep_best(&mine, &r, &have_mine);
        }
        for (int i = 0; i < NPEERS; i++) {
            if (bench_peers[i] &&
                bench_peers[i]->w3_timers(i == PEER_GLIB ? &in_glib : &in,
                                          &r) == 0) {
                keep_best(&peer[i], &r, &have[i]);
            }
        }
    }
    if (!have_mine) {
        fprintf(stderr, "aioloop W3 failed\n");
        return 1;
    }

#define PEERS(f) \
    for (int i = 0; i < NPEERS; i++) p[i] = have[i] ? (double)peer[i].f : -1

    PEERS(create_ns);
    snprintf(label, sizeof(label), "W3 timers create N=%ld", n);
    bench_line(label, "ns/op", mine.create_ns, p,
               "glib: no separate create step");

    PEERS(arm_ns);
    snprintf(label, sizeof(label), "W3 timers arm N=%ld", n);
    snprintf(tail, sizeof(tail), "glib at N=%ld | %s", n_glib,
             bench_goal(g, sizeof(g), mine.arm_ns, 50, "ns/op"));
    bench_line(label, "ns/op", mine.arm_ns, p, tail);

    PEERS(rearm_ns);
    snprintf(label, sizeof(label), "W3 timers re-arm N=%ld", n);
    snprintf(tail, sizeof(tail), "glib at N=%ld | %s", n_glib,
             bench_goal(g, sizeof(g), mine.rearm_ns, 50, "ns/op"));
    bench_line(label, "ns/op", mine.rearm_ns, p, tail);

    PEERS(cancel_ns);
    snprintf(label, sizeof(label), "W3 timers cancel N=%ld", n / 2);
    snprintf(tail, sizeof(tail), "glib at N=%ld | %s", n_glib / 2,
             bench_goal(g, sizeof(g), mine.cancel_ns, 50, "ns/op"));
    bench_line(label, "ns/op", mine.cancel_ns, p, tail);

    PEERS(bytes_per_timer);
    snprintf(label, sizeof(label), "W3 timers bytes/timer");
    snprintf(tail, sizeof(tail), "glib at N=%ld", n_glib);
    bench_line(label, "B", mine.bytes_per_timer, p, tail);

    PEERS(handle_size);
    bench_line("W3 timers sizeof(handle)", "B", (double)mine.handle_size, p,
               NULL);
#undef PEERS

    aio_context_unref(ctx);
    return 0;
}
