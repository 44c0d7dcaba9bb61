/*
 * W1: a self-rescheduling deferred callback, 2*10^6 callbacks.
 *
 * aioloop: a BH whose callback calls qemu_bh_schedule() on itself, driven by
 * aio_poll(ctx, true) until the count is reached.  Each callback therefore
 * costs one aio_poll() iteration (a BH scheduled while aio_bh_poll() runs
 * waits for the next call).  Peers: see the W1 comment in each peer-*.c.
 *
 * Output: ns per callback; each library is run 3 times, interleaved, and
 * the best run is kept (a peer slower than 200 ns/cb after its first run,
 * i.e. paying a syscall per callback, is run once).
 */
#include "bench.h"

#include <aioloop/aio.h>
#include <stdio.h>
#include <stdlib.h>

#define REPS 3

static long w1_count, w1_n;
static QEMUBH *w1_bh;

static void w1_cb(void *opaque)
{
    (void)opaque;
    if (++w1_count < w1_n) {
        qemu_bh_schedule(w1_bh);
    }
}

static double aio_w1(AioContext *ctx, long n)
{
    uint64_t t0, t1;

    w1_bh = aio_bh_new(ctx, w1_cb, NULL);
    w1_count = 0;
    w1_n = n;
    qemu_bh_schedule(w1_bh);
    t0 = now_ns();
    while (w1_count < n) {
        aio_poll(ctx, true);
    }
    t1 = now_ns();
    qemu_bh_delete(w1_bh);
    aio_poll(ctx, false);
    return (double)(t1 - t0) / n;
}

int main(void)
{
    long n = bench_n(2000000);
    Error *err = NULL;
    AioContext *ctx;
    double mine = -1, peers[NPEERS];
    char goal[96];

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("# W1 BH self-rescheduling chain: %ld callbacks, best of %d "
           "(peers slower than 200 ns/cb: 1 run)\n", n, REPS);
    bench_init_peers();
    for (int i = 0; i < NPEERS; i++) {
        peers[i] = -1;
    }
    ctx = aio_context_new(&err);
    if (!ctx) {
        fprintf(stderr, "aio_context_new: %s\n", error_get_pretty(err));
        return 1;
    }
    printf("# aioloop fdmon %s\n", aioloop_context_fdmon_name(ctx));

    for (int rep = 0; rep < REPS; rep++) {
        double v = aio_w1(ctx, n);

        if (v > 0 && (mine < 0 || v < mine)) {
            mine = v;
        }
        for (int i = 0; i < NPEERS; i++) {
            /* A peer paying a syscall per callback is 100x off any goal;
             * one run is enough for it (keeps the run short). */
            if (!bench_peers[i] || peers[i] > 200) {
                continue;
            }
            v = bench_peers[i]->w1_chain(n);
            if (v > 0 && (peers[i] < 0 || v < peers[i])) {
                peers[i] = v;
            }
        }
    }
    bench_line("W1 bh-chain", "ns/cb", mine, peers,
               bench_goal(goal, sizeof(goal), mine, 10, "ns/cb"));
    aio_context_unref(ctx);
    return 0;
}
