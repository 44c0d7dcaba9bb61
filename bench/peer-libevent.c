/*
 * libevent (2.1) side of every workload.  Bases are created with the poll
 * and select methods avoided, so they use epoll like the default does on
 * Linux; the W2 bases are made thread-aware with evthread_use_pthreads().
 */
#include "bench.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNUSED __attribute__((unused))

/*
 * Debian's libev.so exports a libevent emulation with the same names; if the
 * link order let it win, event_get_version() answers libev's "1.4".  Refuse
 * to report libev figures under libevent's name.
 */
static bool levt_bound_ok(void)
{
    return strcmp(event_get_version(), LIBEVENT_VERSION) == 0;
}

static struct event_base *new_epoll_base(void)
{
    struct event_config *cfg;
    struct event_base *base;

    if (!levt_bound_ok()) {
        return NULL;
    }
    cfg = event_config_new();

    event_config_avoid_method(cfg, "select");
    event_config_avoid_method(cfg, "poll");
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

/* ---- W1 ----------------------------------------------------------------
 * event_active() on a persistent, never-added event from its own callback:
 * libevent's deferral primitive.  The re-activated event joins the active
 * queue being processed, so like libev it runs in the same dispatch pass.
 */
static long w1_count, w1_n;
static struct event *w1_ev;

static void w1_cb(evutil_socket_t fd UNUSED, short what UNUSED,
                  void *arg UNUSED)
{
    if (++w1_count < w1_n) {
        event_active(w1_ev, EV_READ, 0);
    }
}

static double lev_w1(long n)
{
    struct event_base *base = new_epoll_base();
    uint64_t t0, t1;

    if (!base) {
        return -1;
    }
    w1_ev = event_new(base, -1, EV_PERSIST, w1_cb, NULL);
    w1_count = 0;
    w1_n = n;
    event_active(w1_ev, EV_READ, 0);
    t0 = now_ns();
    while (w1_count < n) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    t1 = now_ns();
    event_free(w1_ev);
    event_base_free(base);
    return (double)(t1 - t0) / n;
}

/* ---- W2: event_active() from the other thread ---------------------------- */

typedef struct LevtPP {
    struct event_base *ba, *bb;
    struct event *ea, *eb;
    PingPong *pp;
    int stop; /* atomic: A tells B to leave its loop */
} LevtPP;

static void w2_a_cb(evutil_socket_t fd UNUSED, short what UNUSED, void *arg)
{
    LevtPP *s = arg;

    if (pp_tick(s->pp)) {
        __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
        event_base_loopbreak(s->ba);
    }
    event_active(s->eb, EV_READ, 0);
}

static void w2_b_cb(evutil_socket_t fd UNUSED, short what UNUSED, void *arg)
{
    LevtPP *s = arg;

    if (__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        event_base_loopbreak(s->bb);
        return;
    }
    event_active(s->ea, EV_READ, 0);
}

static void *w2_thread_a(void *opaque)
{
    PingPong *pp = opaque;
    LevtPP *s = pp->priv;

    pp_ready(pp);
    event_active(s->eb, EV_READ, 0);
    event_base_loop(s->ba, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void *w2_thread_b(void *opaque)
{
    PingPong *pp = opaque;
    LevtPP *s = pp->priv;

    pp_ready(pp);
    event_base_loop(s->bb, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static double levt_w2(PingPong *pp)
{
    static bool threads_on;
    LevtPP s = { .pp = pp };
    double r;

    if (!threads_on) {
        if (evthread_use_pthreads() != 0) {
            return -1;
        }
        threads_on = true;
    }
    s.ba = new_epoll_base();
    s.bb = new_epoll_base();
    if (!s.ba || !s.bb) {
        return -1;
    }
    s.ea = event_new(s.ba, -1, EV_PERSIST, w2_a_cb, &s);
    s.eb = event_new(s.bb, -1, EV_PERSIST, w2_b_cb, &s);
    pp->priv = &s;
    pp->fn_a = w2_thread_a;
    pp->fn_b = w2_thread_b;
    r = pp_run(pp);
    event_free(s.ea);
    event_free(s.eb);
    event_base_free(s.ba);
    event_base_free(s.bb);
    return r;
}

/* ---- W3: evtimer_add (re-arm = add again) / evtimer_del ------------------ */

static void w3_cb(evutil_socket_t fd UNUSED, short what UNUSED,
                  void *arg UNUSED)
{
}

static inline struct timeval ns_to_tv(int64_t ns)
{
    struct timeval tv = {
        .tv_sec = ns / 1000000000,
        .tv_usec = (ns % 1000000000) / 1000,
    };
    return tv;
}

static int levt_w3(const W3Input *in, W3Result *r)
{
    struct event_base *base = new_epoll_base();
    long n = in->n;
    struct event **t = malloc(sizeof(*t) * (size_t)n);
    size_t evsize = event_get_struct_event_size();
    size_t m0, m1;
    uint64_t t0, t1, t2, t3, t4;

    if (!base || !t) {
        free(t);
        return -1;
    }
    m0 = bench_heap_bytes();
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
        t[i] = malloc(evsize);
        evtimer_assign(t[i], base, w3_cb, NULL);
    }
    t1 = now_ns();
    for (long i = 0; i < n; i++) {
        struct timeval tv = ns_to_tv(in->arm_rel_ns[i]);

        evtimer_add(t[i], &tv);
    }
    t2 = now_ns();
    m1 = bench_heap_bytes();
    for (long i = 0; i < n; i++) {
        struct timeval tv = ns_to_tv(in->rearm_rel_ns[i]);

        evtimer_add(t[i], &tv);
    }
    t3 = now_ns();
    for (long j = 0; j < n / 2; j++) {
        evtimer_del(t[in->cancel_idx[j]]);
    }
    t4 = now_ns();

    r->n = n;
    r->create_ns = (double)(t1 - t0) / n;
    r->arm_ns = (double)(t2 - t1) / n;
    r->rearm_ns = (double)(t3 - t2) / n;
    r->cancel_ns = (double)(t4 - t3) / (n / 2);
    r->bytes_per_timer = (double)(m1 - m0) / n;
    r->handle_size = evsize;

    for (long i = 0; i < n; i++) {
        evtimer_del(t[i]);
        free(t[i]);
    }
    free(t);
    event_base_free(base);
    return 0;
}

/* ---- W4: persistent EV_READ events ---------------------------------------- */

typedef struct LevtW4 {
    struct event_base *base;
    int n;
    const int *fds;
    char *evs; /* n * event_get_struct_event_size() */
    size_t evsize;
    bool registered;
} LevtW4;

static void w4_cb(evutil_socket_t fd, short what UNUSED, void *arg UNUSED)
{
    w4_consume(fd);
}

static void *levt_w4_create(int n, const int *fds, char *why, size_t whylen)
{
    LevtW4 *b = calloc(1, sizeof(*b));

    b->base = new_epoll_base();
    if (!b->base) {
        snprintf(why, whylen, "%s", levt_bound_ok() ? "no epoll event_base"
                 : "event_* symbols bound to libev's emulation (link order)");
        free(b);
        return NULL;
    }
    b->n = n;
    b->fds = fds;
    b->evsize = event_get_struct_event_size();
    b->evs = calloc((size_t)n, b->evsize);
    return b;
}

static struct event *w4_ev(LevtW4 *b, int i)
{
    return (struct event *)(b->evs + (size_t)i * b->evsize);
}

static void levt_w4_register(void *opaque)
{
    LevtW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        event_assign(w4_ev(b, i), b->base, b->fds[i], EV_READ | EV_PERSIST,
                     w4_cb, NULL);
        event_add(w4_ev(b, i), NULL);
    }
    b->registered = true;
    event_base_loop(b->base, EVLOOP_NONBLOCK);
}

static void levt_w4_dispatch(void *opaque, long target)
{
    LevtW4 *b = opaque;

    while (bench_w4_done < target) {
        event_base_loop(b->base, EVLOOP_ONCE);
    }
}

static void levt_w4_unregister(void *opaque)
{
    LevtW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        event_del(w4_ev(b, i));
    }
    b->registered = false;
    event_base_loop(b->base, EVLOOP_NONBLOCK);
}

static void levt_w4_destroy(void *opaque)
{
    LevtW4 *b = opaque;

    if (b->registered) {
        levt_w4_unregister(b);
    }
    event_base_free(b->base);
    free(b->evs);
    free(b);
}

static const W4Backend levt_w4 = {
    .name = "libevent",
    .create = levt_w4_create,
    .register_all = levt_w4_register,
    .dispatch = levt_w4_dispatch,
    .unregister_all = levt_w4_unregister,
    .destroy = levt_w4_destroy,
};

static const char *levt_describe(void)
{
    static char buf[96];
    struct event_base *base = new_epoll_base();

    if (!levt_bound_ok()) {
        snprintf(buf, sizeof(buf), "libevent: BROKEN: event_* symbols bound "
                 "to libev's emulation (version %s), results n/a",
                 event_get_version());
        return buf;
    }
    snprintf(buf, sizeof(buf), "libevent %s, method %s", event_get_version(),
             base ? event_base_get_method(base) : "?");
    if (base) {
        event_base_free(base);
    }
    return buf;
}

extern const PeerOps peer_libevent;
const PeerOps peer_libevent = {
    .name = "libevent",
    .w1_chain = lev_w1,
    .w2_pingpong = levt_w2,
    .w3_timers = levt_w3,
    .w4 = &levt_w4,
    .describe = levt_describe,
};
