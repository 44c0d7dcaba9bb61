/*
 * GLib side of every workload.  Each run uses a private GMainContext (GLib
 * always uses poll()).
 */
#include "bench.h"

#include <glib.h>
#include <glib-unix.h>
#include <stdio.h>
#include <stdlib.h>

#define UNUSED __attribute__((unused))

/* ---- W1: an idle source returning G_SOURCE_CONTINUE ----------------------
 * It runs once per g_main_context_iteration(), GLib's "next iteration";
 * every iteration also poll()s the context's wake-up fd with timeout 0.
 */
static long w1_count, w1_n;

static gboolean w1_cb(gpointer data UNUSED)
{
    return ++w1_count < w1_n ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static double glib_w1(long n)
{
    GMainContext *ctx = g_main_context_new();
    GSource *src = g_idle_source_new();
    uint64_t t0, t1;

    g_source_set_callback(src, w1_cb, NULL, NULL);
    g_source_attach(src, ctx);
    g_source_unref(src);
    w1_count = 0;
    w1_n = n;
    t0 = now_ns();
    while (w1_count < n) {
        g_main_context_iteration(ctx, TRUE);
    }
    t1 = now_ns();
    g_main_context_unref(ctx);
    return (double)(t1 - t0) / n;
}

/* ---- W2 --------------------------------------------------------------------
 * An idle source attached to the other thread's GMainContext, which is
 * what g_main_context_invoke() does when called from a foreign thread.
 * g_main_context_invoke() itself is not used: each thread drives its
 * context with g_main_context_iteration(), which releases the context
 * between iterations, and invoke() would then sometimes acquire the other
 * context and run the callback in the calling thread.
 */
typedef struct GlibPP {
    GMainContext *ca, *cb;
    PingPong *pp;
    int stop;   /* atomic: A tells B to leave its loop */
    bool done_a; /* thread A only */
} GlibPP;

static gboolean w2_b_cb(gpointer data);

static void post(GMainContext *ctx, GSourceFunc fn, void *data)
{
    GSource *src = g_idle_source_new();

    g_source_set_callback(src, fn, data, NULL);
    g_source_attach(src, ctx);
    g_source_unref(src);
}

static gboolean w2_a_cb(gpointer data)
{
    GlibPP *s = data;

    if (pp_tick(s->pp)) {
        __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
        s->done_a = true;
    }
    post(s->cb, w2_b_cb, s);
    return G_SOURCE_REMOVE;
}

static gboolean w2_b_cb(gpointer data)
{
    GlibPP *s = data;

    if (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        post(s->ca, w2_a_cb, s);
    }
    return G_SOURCE_REMOVE;
}

static void *w2_thread_a(void *opaque)
{
    PingPong *pp = opaque;
    GlibPP *s = pp->priv;

    g_main_context_push_thread_default(s->ca);
    pp_ready(pp);
    post(s->cb, w2_b_cb, s);
    while (!s->done_a) {
        g_main_context_iteration(s->ca, TRUE);
    }
    g_main_context_pop_thread_default(s->ca);
    return NULL;
}

static void *w2_thread_b(void *opaque)
{
    PingPong *pp = opaque;
    GlibPP *s = pp->priv;

    g_main_context_push_thread_default(s->cb);
    pp_ready(pp);
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        g_main_context_iteration(s->cb, TRUE);
    }
    /* The last ping (the stop message) may still be queued: run it. */
    while (g_main_context_iteration(s->cb, FALSE)) {
    }
    g_main_context_pop_thread_default(s->cb);
    return NULL;
}

static double glib_w2(PingPong *pp)
{
    GlibPP s = { .pp = pp };
    double r;

    s.ca = g_main_context_new();
    s.cb = g_main_context_new();
    pp->priv = &s;
    pp->fn_a = w2_thread_a;
    pp->fn_b = w2_thread_b;
    r = pp_run(pp);
    g_main_context_unref(s.ca);
    g_main_context_unref(s.cb);
    return r;
}

/* ---- W3 --------------------------------------------------------------------
 * g_timeout_source_new() + g_source_attach(); a GLib timeout source cannot
 * be re-armed, so re-arm is destroy + new + attach (what GLib users do);
 * cancel is g_source_destroy().  There is no "create without arming" step.
 */
static gboolean w3_cb(gpointer data UNUSED)
{
    return G_SOURCE_REMOVE;
}

static GSource *w3_arm(GMainContext *ctx, int64_t rel_ns)
{
    GSource *src = g_timeout_source_new((guint)(rel_ns / 1000000));

    g_source_set_callback(src, w3_cb, NULL, NULL);
    g_source_attach(src, ctx);
    return src;
}

static int glib_w3(const W3Input *in, W3Result *r)
{
    GMainContext *ctx = g_main_context_new();
    long n = in->n;
    GSource **t = malloc(sizeof(*t) * (size_t)n);
    size_t m0, m1;
    uint64_t t1, t2, t3, t4;

    m0 = bench_heap_bytes();
    t1 = now_ns();
    for (long i = 0; i < n; i++) {
        t[i] = w3_arm(ctx, in->arm_rel_ns[i]);
    }
    t2 = now_ns();
    m1 = bench_heap_bytes();
    for (long i = 0; i < n; i++) {
        g_source_destroy(t[i]);
        g_source_unref(t[i]);
        t[i] = w3_arm(ctx, in->rearm_rel_ns[i]);
    }
    t3 = now_ns();
    for (long j = 0; j < n / 2; j++) {
        g_source_destroy(t[in->cancel_idx[j]]);
    }
    t4 = now_ns();

    r->n = n;
    r->create_ns = -1;
    r->arm_ns = (double)(t2 - t1) / n;
    r->rearm_ns = (double)(t3 - t2) / n;
    r->cancel_ns = (double)(t4 - t3) / (n / 2);
    r->bytes_per_timer = (double)(m1 - m0) / n;
    /* GTimeoutSource: a GSource plus interval and a flag. */
    r->handle_size = sizeof(GSource) + 2 * sizeof(guint);

    for (long i = 0; i < n; i++) {
        g_source_destroy(t[i]);
        g_source_unref(t[i]);
    }
    free(t);
    g_main_context_unref(ctx);
    return 0;
}

/* ---- W4: one g_unix_fd_source per fd ---------------------------------------- */

typedef struct GlibW4 {
    GMainContext *ctx;
    int n;
    const int *fds;
    GSource **src;
} GlibW4;

static gboolean w4_cb(gint fd, GIOCondition cond UNUSED, gpointer data UNUSED)
{
    w4_consume(fd);
    return G_SOURCE_CONTINUE;
}

static void *glib_w4_create(int n, const int *fds, char *why UNUSED,
                            size_t whylen UNUSED)
{
    GlibW4 *b = calloc(1, sizeof(*b));

    b->ctx = g_main_context_new();
    b->n = n;
    b->fds = fds;
    b->src = calloc((size_t)n, sizeof(GSource *));
    return b;
}

static void glib_w4_register(void *opaque)
{
    GlibW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        GSource *src = g_unix_fd_source_new(b->fds[i], G_IO_IN);

        g_source_set_callback(src, (GSourceFunc)(void (*)(void))w4_cb, NULL,
                              NULL);
        g_source_attach(src, b->ctx);
        b->src[i] = src;
    }
    g_main_context_iteration(b->ctx, FALSE);
}

static void glib_w4_dispatch(void *opaque, long target)
{
    GlibW4 *b = opaque;

    while (bench_w4_done < target) {
        g_main_context_iteration(b->ctx, TRUE);
    }
}

static void glib_w4_unregister(void *opaque)
{
    GlibW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        g_source_destroy(b->src[i]);
        g_source_unref(b->src[i]);
        b->src[i] = NULL;
    }
    g_main_context_iteration(b->ctx, FALSE);
}

static void glib_w4_destroy(void *opaque)
{
    GlibW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        if (b->src[i]) {
            g_source_destroy(b->src[i]);
            g_source_unref(b->src[i]);
        }
    }
    g_main_context_unref(b->ctx);
    free(b->src);
    free(b);
}

static const W4Backend glib_w4 = {
    .name = "glib",
    .create = glib_w4_create,
    .register_all = glib_w4_register,
    .dispatch = glib_w4_dispatch,
    .unregister_all = glib_w4_unregister,
    .destroy = glib_w4_destroy,
};

static const char *glib_describe(void)
{
    static char buf[96];

    snprintf(buf, sizeof(buf), "glib %u.%u.%u, poll()", glib_major_version,
             glib_minor_version, glib_micro_version);
    return buf;
}

extern const PeerOps peer_glib;
const PeerOps peer_glib = {
    .name = "glib",
    .w1_chain = glib_w1,
    .w2_pingpong = glib_w2,
    .w3_timers = glib_w3,
    .w4 = &glib_w4,
    .describe = glib_describe,
};
