/*
 * libev (4.x) side of every workload.
 *
 * Loops are created with EVBACKEND_EPOLL: it is what EVFLAG_AUTO picks on
 * Linux (io_uring and linux-aio are not among libev's recommended backends),
 * stated explicitly so the figure cannot silently change meaning.
 */
#include "bench.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>

#define UNUSED __attribute__((unused))

/* ---- W1 ----------------------------------------------------------------
 * libev has no "run this on the next iteration" primitive cheaper than
 * ev_feed_event(): an ev_idle watcher would make every iteration call
 * epoll_wait(0).  A watcher re-fed from its own callback is queued as
 * pending and run by the same ev_invoke_pending() pass, so this measures
 * libev's deferral cost (feed + invoke), without a loop iteration per
 * callback.  An ev_idle watcher only kicks the chain off from inside
 * ev_run() so that the loop drives it.
 */
static long w1_count, w1_n;

static void w1_cb(struct ev_loop *loop, ev_async *w, int revents UNUSED)
{
    if (++w1_count < w1_n) {
        ev_feed_event(loop, w, EV_CUSTOM);
    } else {
        ev_break(loop, EVBREAK_ALL);
    }
}

static void w1_kick(struct ev_loop *loop, ev_idle *w, int revents UNUSED)
{
    ev_idle_stop(loop, w);
    ev_feed_event(loop, w->data, EV_CUSTOM);
}

static double lev_w1(long n)
{
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    ev_async a;
    ev_idle kick;
    uint64_t t0, t1;

    if (!loop) {
        return -1;
    }
    ev_async_init(&a, w1_cb);
    ev_async_start(loop, &a);
    ev_idle_init(&kick, w1_kick);
    kick.data = &a;
    ev_idle_start(loop, &kick);
    w1_count = 0;
    w1_n = n;
    t0 = now_ns();
    ev_run(loop, 0);
    t1 = now_ns();
    ev_async_stop(loop, &a);
    ev_loop_destroy(loop);
    return w1_count == n ? (double)(t1 - t0) / n : -1;
}

/* ---- W2: ev_async_send() to the other thread's loop -------------------- */

typedef struct LevPP {
    struct ev_loop *la, *lb;
    ev_async aa, ab;
    PingPong *pp;
    int stop; /* atomic: A tells B to leave its loop */
} LevPP;

static void w2_a_cb(struct ev_loop *loop, ev_async *w, int revents UNUSED)
{
    LevPP *s = w->data;

    if (pp_tick(s->pp)) {
        __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
        ev_break(loop, EVBREAK_ALL);
    }
    ev_async_send(s->lb, &s->ab);
}

static void w2_b_cb(struct ev_loop *loop, ev_async *w, int revents UNUSED)
{
    LevPP *s = w->data;

    if (__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    ev_async_send(s->la, &s->aa);
}

static void *w2_thread_a(void *opaque)
{
    PingPong *pp = opaque;
    LevPP *s = pp->priv;

    pp_ready(pp);
    ev_async_send(s->lb, &s->ab);
    ev_run(s->la, 0);
    return NULL;
}

static void *w2_thread_b(void *opaque)
{
    PingPong *pp = opaque;
    LevPP *s = pp->priv;

    pp_ready(pp);
    ev_run(s->lb, 0);
    return NULL;
}

static double lev_w2(PingPong *pp)
{
    LevPP s = { .pp = pp };
    double r;

    s.la = ev_loop_new(EVBACKEND_EPOLL);
    s.lb = ev_loop_new(EVBACKEND_EPOLL);
    if (!s.la || !s.lb) {
        return -1;
    }
    ev_async_init(&s.aa, w2_a_cb);
    ev_async_init(&s.ab, w2_b_cb);
    s.aa.data = s.ab.data = &s;
    ev_async_start(s.la, &s.aa);
    ev_async_start(s.lb, &s.ab);
    pp->priv = &s;
    pp->fn_a = w2_thread_a;
    pp->fn_b = w2_thread_b;
    r = pp_run(pp);
    ev_async_stop(s.la, &s.aa);
    ev_async_stop(s.lb, &s.ab);
    ev_loop_destroy(s.la);
    ev_loop_destroy(s.lb);
    return r;
}

/* ---- W3: ev_timer_start / ev_timer_again / ev_timer_stop ---------------- */

static void w3_cb(struct ev_loop *loop UNUSED, ev_timer *w UNUSED,
                  int revents UNUSED)
{
}

static int lev_w3(const W3Input *in, W3Result *r)
{
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    long n = in->n;
    ev_timer **t = malloc(sizeof(*t) * (size_t)n);
    size_t m0, m1;
    uint64_t t0, t1, t2, t3, t4;

    if (!loop || !t) {
        return -1;
    }
    ev_now_update(loop);
    m0 = bench_heap_bytes();
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
        t[i] = malloc(sizeof(ev_timer));
        ev_timer_init(t[i], w3_cb, 0., 0.);
    }
    t1 = now_ns();
    for (long i = 0; i < n; i++) {
        ev_timer_set(t[i], (double)in->arm_rel_ns[i] * 1e-9, 0.);
        ev_timer_start(loop, t[i]);
    }
    t2 = now_ns();
    m1 = bench_heap_bytes();
    /* The idiomatic re-arm: set the repeat value, ev_timer_again(). */
    for (long i = 0; i < n; i++) {
        t[i]->repeat = (double)in->rearm_rel_ns[i] * 1e-9;
        ev_timer_again(loop, t[i]);
    }
    t3 = now_ns();
    for (long j = 0; j < n / 2; j++) {
        ev_timer_stop(loop, t[in->cancel_idx[j]]);
    }
    t4 = now_ns();

    r->n = n;
    r->create_ns = (double)(t1 - t0) / n;
    r->arm_ns = (double)(t2 - t1) / n;
    r->rearm_ns = (double)(t3 - t2) / n;
    r->cancel_ns = (double)(t4 - t3) / (n / 2);
    r->bytes_per_timer = (double)(m1 - m0) / n;
    r->handle_size = sizeof(ev_timer);

    for (long i = 0; i < n; i++) {
        ev_timer_stop(loop, t[i]);
        free(t[i]);
    }
    free(t);
    ev_loop_destroy(loop);
    return 0;
}

/* ---- W4: ev_io --------------------------------------------------------- */

typedef struct LevW4 {
    struct ev_loop *loop;
    int n;
    const int *fds;
    ev_io *w;
} LevW4;

static void w4_cb(struct ev_loop *loop UNUSED, ev_io *w, int revents UNUSED)
{
    w4_consume(w->fd);
}

static void *lev_w4_create(int n, const int *fds, char *why, size_t whylen)
{
    LevW4 *b = calloc(1, sizeof(*b));

    b->loop = ev_loop_new(EVBACKEND_EPOLL);
    if (!b->loop) {
        snprintf(why, whylen, "ev_loop_new(EVBACKEND_EPOLL) failed");
        free(b);
        return NULL;
    }
    b->n = n;
    b->fds = fds;
    b->w = calloc((size_t)n, sizeof(ev_io));
    return b;
}

static void lev_w4_register(void *opaque)
{
    LevW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        ev_io_init(&b->w[i], w4_cb, b->fds[i], EV_READ);
        ev_io_start(b->loop, &b->w[i]);
    }
    ev_run(b->loop, EVRUN_NOWAIT);
}

static void lev_w4_dispatch(void *opaque, long target)
{
    LevW4 *b = opaque;

    while (bench_w4_done < target) {
        ev_run(b->loop, EVRUN_ONCE);
    }
}

static void lev_w4_unregister(void *opaque)
{
    LevW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        ev_io_stop(b->loop, &b->w[i]);
    }
    ev_run(b->loop, EVRUN_NOWAIT);
}

static void lev_w4_destroy(void *opaque)
{
    LevW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        ev_io_stop(b->loop, &b->w[i]);
    }
    ev_loop_destroy(b->loop);
    free(b->w);
    free(b);
}

static const W4Backend lev_w4 = {
    .name = "libev",
    .create = lev_w4_create,
    .register_all = lev_w4_register,
    .dispatch = lev_w4_dispatch,
    .unregister_all = lev_w4_unregister,
    .destroy = lev_w4_destroy,
};

static const char *lev_describe(void)
{
    static char buf[96];

    snprintf(buf, sizeof(buf), "libev %d.%d, backend epoll", ev_version_major(),
             ev_version_minor());
    return buf;
}

extern const PeerOps peer_libev;
const PeerOps peer_libev = {
    .name = "libev",
    .w1_chain = lev_w1,
    .w2_pingpong = lev_w2,
    .w3_timers = lev_w3,
    .w4 = &lev_w4,
    .describe = lev_describe,
};
