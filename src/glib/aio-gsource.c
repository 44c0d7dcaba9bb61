/*
 * The AioContext GSource (QEMU's aio_source_funcs in util/async.c).
 *
 * A thin wrapper over aio_source_prepare()/_fds()/_check()/_dispatch()
 * (aio-internal.h), the primitive main_loop_wait() also uses.  The fds to
 * poll (the epoll fd, the io_uring ring fd, or each handler's fd with the
 * poll backend) are re-read at every prepare and handed to GLib as
 * GPollFDs; they are replaced only when they changed.
 *
 * The only file of the library that uses GLib: built when meson finds it.
 */
#define _GNU_SOURCE
#include <aioloop/aio-gsource.h>

#include <glib.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#include "../core/aio-internal.h"

typedef struct AioGSource {
    GSource source;
    AioContext *ctx;          /* a reference, dropped at finalize */
    /* What GLib polls: registered with g_source_add_poll(). */
    GPollFD *gfds;
    int n_gfds;
    /* Scratch for aio_source_fds(). */
    struct pollfd *pfds;
    int pfds_alloc;
} AioGSource;

/* Guards ctx->gsource (the weak pointer to a context's GSource). */
static pthread_mutex_t gsource_lock = PTHREAD_MUTEX_INITIALIZER;

static void oom(void)
{
    error_report("aio_get_g_source: out of memory");
    abort();
}

static bool same_fds(AioGSource *s, int n)
{
    if (n != s->n_gfds) {
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (s->gfds[i].fd != s->pfds[i].fd ||
            s->gfds[i].events != (gushort)s->pfds[i].events) {
            return false;
        }
    }
    return true;
}

static void sync_fds(AioGSource *s)
{
    int n;

    for (;;) {
        n = aio_source_fds(s->ctx, s->pfds, s->pfds_alloc);
        if (n <= s->pfds_alloc) {
            break;
        }
        s->pfds_alloc = n * 2;
        s->pfds = realloc(s->pfds, (size_t)s->pfds_alloc * sizeof(*s->pfds));
        if (!s->pfds) {
            oom();
        }
    }
    if (same_fds(s, n)) {
        return;
    }
    /* GLib keeps pointers to the GPollFDs: remove them all before realloc. */
    for (int i = 0; i < s->n_gfds; i++) {
        g_source_remove_poll(&s->source, &s->gfds[i]);
    }
    free(s->gfds);
    s->gfds = NULL;
    s->n_gfds = 0;
    if (n == 0) {
        return;
    }
    s->gfds = calloc((size_t)n, sizeof(*s->gfds));
    if (!s->gfds) {
        oom();
    }
    s->n_gfds = n;
    for (int i = 0; i < n; i++) {
        s->gfds[i].fd = s->pfds[i].fd;
        s->gfds[i].events = (gushort)s->pfds[i].events;
        g_source_add_poll(&s->source, &s->gfds[i]);
    }
}

static gboolean aio_gsource_prepare(GSource *source, gint *timeout)
{
    AioGSource *s = (AioGSource *)source;
    int64_t ns = aio_source_prepare(s->ctx);

    sync_fds(s);
    if (ns < 0) {
        *timeout = -1;
    } else {
        /* Round up, as qemu_timeout_ns_to_ms(): never wake too early. */
        int64_t ms = (ns + 999999) / 1000000;

        *timeout = ms > INT_MAX ? INT_MAX : (gint)ms;
    }
    return ns == 0;
}

static bool fds_ready(AioGSource *s)
{
    for (int i = 0; i < s->n_gfds; i++) {
        if (s->gfds[i].revents) {
            return true;
        }
    }
    return false;
}

static gboolean aio_gsource_check(GSource *source)
{
    AioGSource *s = (AioGSource *)source;

    return aio_source_check(s->ctx, fds_ready(s));
}

static gboolean aio_gsource_dispatch(GSource *source, GSourceFunc callback,
                                     gpointer user_data)
{
    AioGSource *s = (AioGSource *)source;

    (void)callback;
    (void)user_data;
    /*
     * GLib skips check when prepare returned TRUE: clear notify_me bit 0
     * and accept the notification here too (check is idempotent).
     */
    aio_source_check(s->ctx, false);
    /* GLib fills revents for every source, also when check was skipped. */
    aio_source_dispatch(s->ctx, fds_ready(s));
    return G_SOURCE_CONTINUE;
}

static void aio_gsource_finalize(GSource *source)
{
    AioGSource *s = (AioGSource *)source;

    pthread_mutex_lock(&gsource_lock);
    if (s->ctx->gsource == s) {
        s->ctx->gsource = NULL;
    }
    pthread_mutex_unlock(&gsource_lock);
    /* GLib has already dropped the GPollFDs with the source. */
    free(s->gfds);
    free(s->pfds);
    aio_context_unref(s->ctx);
}

static GSourceFuncs aio_gsource_funcs = {
    .prepare = aio_gsource_prepare,
    .check = aio_gsource_check,
    .dispatch = aio_gsource_dispatch,
    .finalize = aio_gsource_finalize,
};

GSource *aio_get_g_source(AioContext *ctx)
{
    AioGSource *s;

    pthread_mutex_lock(&gsource_lock);
    s = ctx->gsource;
    if (s) {
        g_source_ref(&s->source);
    } else {
        s = (AioGSource *)g_source_new(&aio_gsource_funcs, sizeof(*s));
        g_source_set_name(&s->source, "aioloop AioContext");
        /*
         * As QEMU: a callback may iterate the GMainContext again, and GLib
         * does not have to block (remove and re-add the fds of) the source
         * around each dispatch, which costs two wake-up writes.
         */
        g_source_set_can_recurse(&s->source, TRUE);
        aio_context_ref(ctx);
        s->ctx = ctx;
        ctx->gsource = s;
    }
    pthread_mutex_unlock(&gsource_lock);
    return &s->source;
}

void aio_context_use_g_source(AioContext *ctx)
{
    /* Every fd monitor works under the GSource; see the header. */
    (void)ctx;
}
