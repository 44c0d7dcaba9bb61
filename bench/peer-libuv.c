/*
 * libuv side of every workload (epoll on Linux; libuv has no run-time
 * backend choice).
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#define UNUSED __attribute__((unused))

/* ---- W1 ----------------------------------------------------------------
 * An active uv_idle_t runs once per loop iteration and forces a zero poll
 * timeout; keeping it active is libuv's cheapest faithful "run this again
 * on the next iteration" (uv_async_t would add an eventfd write + read per
 * callback; uv_check_t/uv_prepare_t do not keep the loop from blocking; a
 * 0 ms uv_timer_t re-armed from its callback is a heap push/pop per call
 * and runs inside one uv__run_timers() pass, not per iteration).  libuv
 * 1.44 still calls epoll_wait(fd, .., 0) on every iteration, which is
 * most of the figure.
 */
static long w1_count, w1_n;

static void w1_cb(uv_idle_t *h)
{
    if (++w1_count >= w1_n) {
        uv_idle_stop(h);
    }
}

static double luv_w1(long n)
{
    uv_loop_t loop;
    uv_idle_t idle;
    uint64_t t0, t1;

    if (uv_loop_init(&loop) != 0) {
        return -1;
    }
    uv_idle_init(&loop, &idle);
    w1_count = 0;
    w1_n = n;
    uv_idle_start(&idle, w1_cb);
    t0 = now_ns();
    uv_run(&loop, UV_RUN_DEFAULT);
    t1 = now_ns();
    uv_close((uv_handle_t *)&idle, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return w1_count == n ? (double)(t1 - t0) / n : -1;
}

/* ---- W2: uv_async_send() to the other thread's loop --------------------- */

typedef struct LuvPP {
    uv_loop_t la, lb;
    uv_async_t aa, ab;
    PingPong *pp;
    int stop; /* atomic: A tells B to leave its loop */
} LuvPP;

static void w2_a_cb(uv_async_t *h)
{
    LuvPP *s = h->data;

    if (pp_tick(s->pp)) {
        __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
        uv_stop(&s->la);
    }
    uv_async_send(&s->ab);
}

static void w2_b_cb(uv_async_t *h)
{
    LuvPP *s = h->data;

    if (__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        uv_stop(&s->lb);
        return;
    }
    uv_async_send(&s->aa);
}

static void *w2_thread_a(void *opaque)
{
    PingPong *pp = opaque;
    LuvPP *s = pp->priv;

    pp_ready(pp);
    uv_async_send(&s->ab);
    uv_run(&s->la, UV_RUN_DEFAULT);
    return NULL;
}

static void *w2_thread_b(void *opaque)
{
    PingPong *pp = opaque;
    LuvPP *s = pp->priv;

    pp_ready(pp);
    uv_run(&s->lb, UV_RUN_DEFAULT);
    return NULL;
}

static double luv_w2(PingPong *pp)
{
    LuvPP *s = calloc(1, sizeof(*s));
    double r;

    s->pp = pp;
    if (uv_loop_init(&s->la) || uv_loop_init(&s->lb)) {
        free(s);
        return -1;
    }
    uv_async_init(&s->la, &s->aa, w2_a_cb);
    uv_async_init(&s->lb, &s->ab, w2_b_cb);
    s->aa.data = s->ab.data = s;
    pp->priv = s;
    pp->fn_a = w2_thread_a;
    pp->fn_b = w2_thread_b;
    r = pp_run(pp);
    uv_close((uv_handle_t *)&s->aa, NULL);
    uv_close((uv_handle_t *)&s->ab, NULL);
    uv_run(&s->la, UV_RUN_DEFAULT);
    uv_run(&s->lb, UV_RUN_DEFAULT);
    uv_loop_close(&s->la);
    uv_loop_close(&s->lb);
    free(s);
    return r;
}

/* ---- W3: uv_timer_start (re-arm = start again) / uv_timer_stop ---------- */

static void w3_cb(uv_timer_t *h UNUSED)
{
}

static void w3_free(uv_handle_t *h)
{
    free(h);
}

static int luv_w3(const W3Input *in, W3Result *r)
{
    uv_loop_t loop;
    long n = in->n;
    uv_timer_t **t = malloc(sizeof(*t) * (size_t)n);
    size_t m0, m1;
    uint64_t t0, t1, t2, t3, t4;

    if (!t || uv_loop_init(&loop) != 0) {
        free(t);
        return -1;
    }
    uv_update_time(&loop);
    m0 = bench_heap_bytes();
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
        t[i] = malloc(sizeof(uv_timer_t));
        uv_timer_init(&loop, t[i]);
    }
    t1 = now_ns();
    for (long i = 0; i < n; i++) {
        uv_timer_start(t[i], w3_cb, (uint64_t)in->arm_rel_ns[i] / 1000000, 0);
    }
    t2 = now_ns();
    m1 = bench_heap_bytes();
    for (long i = 0; i < n; i++) {
        uv_timer_start(t[i], w3_cb, (uint64_t)in->rearm_rel_ns[i] / 1000000, 0);
    }
    t3 = now_ns();
    for (long j = 0; j < n / 2; j++) {
        uv_timer_stop(t[in->cancel_idx[j]]);
    }
    t4 = now_ns();

    r->n = n;
    r->create_ns = (double)(t1 - t0) / n;
    r->arm_ns = (double)(t2 - t1) / n;
    r->rearm_ns = (double)(t3 - t2) / n;
    r->cancel_ns = (double)(t4 - t3) / (n / 2);
    r->bytes_per_timer = (double)(m1 - m0) / n;
    r->handle_size = sizeof(uv_timer_t);

    for (long i = 0; i < n; i++) {
        uv_close((uv_handle_t *)t[i], w3_free);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(t);
    return 0;
}

/* ---- W4: uv_poll_t --------------------------------------------------------
 * Registration is uv_poll_init() + uv_poll_start(): libuv checks the fd with
 * epoll_ctl ADD+DEL, sets O_NONBLOCK (ioctl) and applies the real ADD at the
 * next uv_run(), included by the harness.
 */
typedef struct LuvW4 {
    uv_loop_t loop;
    int n;
    const int *fds;
    uv_poll_t *p;
    bool registered;
} LuvW4;

static void w4_cb(uv_poll_t *h, int status UNUSED, int events UNUSED)
{
    w4_consume((int)(intptr_t)h->data);
}

static void *luv_w4_create(int n, const int *fds, char *why, size_t whylen)
{
    LuvW4 *b = calloc(1, sizeof(*b));

    if (uv_loop_init(&b->loop) != 0) {
        snprintf(why, whylen, "uv_loop_init failed");
        free(b);
        return NULL;
    }
    b->n = n;
    b->fds = fds;
    b->p = calloc((size_t)n, sizeof(uv_poll_t));
    return b;
}

static void luv_w4_register(void *opaque)
{
    LuvW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        if (uv_poll_init(&b->loop, &b->p[i], b->fds[i]) != 0) {
            fprintf(stderr, "uv_poll_init failed on fd %d\n", b->fds[i]);
            abort();
        }
        b->p[i].data = (void *)(intptr_t)b->fds[i];
        uv_poll_start(&b->p[i], UV_READABLE, w4_cb);
    }
    b->registered = true;
    uv_run(&b->loop, UV_RUN_NOWAIT);
}

static void luv_w4_dispatch(void *opaque, long target)
{
    LuvW4 *b = opaque;

    while (bench_w4_done < target) {
        uv_run(&b->loop, UV_RUN_ONCE);
    }
}

static void luv_w4_unregister(void *opaque)
{
    LuvW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        uv_poll_stop(&b->p[i]);
        uv_close((uv_handle_t *)&b->p[i], NULL);
    }
    b->registered = false;
    uv_run(&b->loop, UV_RUN_NOWAIT);
}

static void luv_w4_destroy(void *opaque)
{
    LuvW4 *b = opaque;

    if (b->registered) {
        luv_w4_unregister(b);
    }
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
    free(b->p);
    free(b);
}

static const W4Backend luv_w4 = {
    .name = "libuv",
    .create = luv_w4_create,
    .register_all = luv_w4_register,
    .dispatch = luv_w4_dispatch,
    .unregister_all = luv_w4_unregister,
    .destroy = luv_w4_destroy,
};

static const char *luv_describe(void)
{
    static char buf[96];

    snprintf(buf, sizeof(buf), "libuv %s, epoll", uv_version_string());
    return buf;
}

extern const PeerOps peer_libuv;
const PeerOps peer_libuv = {
    .name = "libuv",
    .w1_chain = luv_w1,
    .w2_pingpong = luv_w2,
    .w3_timers = luv_w3,
    .w4 = &luv_w4,
    .describe = luv_describe,
};
