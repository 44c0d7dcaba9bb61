/*
 * IOThread: a named thread running one AioContext (QEMU's iothread.c
 * without QOM and without the GLib main context).
 *
 * Stopping follows QEMU: a BH running in the IOThread sets the stop flag,
 * so the flag is only written by the thread that reads it, and the stopper
 * then joins the thread.  The BH is created with the IOThread (not a
 * one-shot) so that a stop racing with the loop's exit cannot leave a
 * pending one-shot BH behind in a context nobody polls any more.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aioloop/iothread.h>
#include <aioloop/thread-pool.h>

#include "aio-internal.h"
#include "thread.h"

enum {
    P_POLL_MAX_NS,
    P_POLL_GROW,
    P_POLL_SHRINK,
    P_AIO_MAX_BATCH,
    P_THREAD_POOL_MIN,
    P_THREAD_POOL_MAX,
    NPARAMS
};

static const char *const param_names[NPARAMS] = {
    [P_POLL_MAX_NS] = "poll-max-ns",
    [P_POLL_GROW] = "poll-grow",
    [P_POLL_SHRINK] = "poll-shrink",
    [P_AIO_MAX_BATCH] = "aio-max-batch",
    [P_THREAD_POOL_MIN] = "thread-pool-min",
    [P_THREAD_POOL_MAX] = "thread-pool-max",
};

static const int64_t param_defaults[NPARAMS] = {
    [P_POLL_MAX_NS] = 32768,
    [P_THREAD_POOL_MAX] = 64,
};

struct IOThread {
    char *id;           /* NULL for iothread_new() */
    AioContext *ctx;
    QEMUBH *stop_bh;
    pthread_t thread;
    int thread_id;      /* atomic; -1 once the thread left its loop */
    bool stopping;      /* written in the IOThread only (stop BH, self-stop) */

    /* Serializes stoppers; joined is guarded by it. */
    pthread_mutex_t stop_lock;
    bool joined;

    /* Start-up hand-shake: the creator waits until the loop is ready. */
    pthread_mutex_t init_lock;
    pthread_cond_t init_cond;
    bool init_done;

    /* Serializes property writers; values are read atomically. */
    pthread_mutex_t param_lock;
    int64_t params[NPARAMS];

    QLIST_ENTRY(IOThread) link; /* registry, registry_lock */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static QLIST_HEAD(, IOThread) registry = QLIST_HEAD_INITIALIZER(registry);

static AIOLOOP_TLS IOThread *tls_iothread;

static void iothread_stop_bh(void *opaque)
{
    IOThread *iothread = opaque;

    qatomic_set(&iothread->stopping, true);
}

static void *iothread_run(void *opaque)
{
    IOThread *iothread = opaque;
    char name[16];

    /* Linux limits thread names to 15 bytes: truncate, as QEMU does. */
    snprintf(name, sizeof(name), "IO %s",
             iothread->id ? iothread->id : "iothread");
    pthread_setname_np(pthread_self(), name);
    tls_iothread = iothread;
    qemu_set_current_aio_context(iothread->ctx);

    pthread_mutex_lock(&iothread->init_lock);
    qatomic_set(&iothread->thread_id, (int)gettid());
    iothread->init_done = true;
    pthread_cond_signal(&iothread->init_cond);
    pthread_mutex_unlock(&iothread->init_lock);

    while (!qatomic_read(&iothread->stopping)) {
        aio_poll(iothread->ctx, true);
    }

    /* Let the destroying thread own the context from now on. */
    qemu_set_current_aio_context(NULL);
    tls_iothread = NULL;
    qatomic_set(&iothread->thread_id, -1);
    return NULL;
}

static bool id_valid(const char *id)
{
    if (!isalpha((unsigned char)id[0])) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' &&
            *p != '_') {
            return false;
        }
    }
    return true;
}

static IOThread *find_locked(const char *id)
{
    IOThread *iothread;

    QLIST_FOREACH(iothread, &registry, link) {
        if (iothread->id && strcmp(iothread->id, id) == 0) {
            return iothread;
        }
    }
    return NULL;
}

/* Frees a half-built IOThread too (no thread started). */
static void iothread_free(IOThread *iothread)
{
    pthread_mutex_lock(&registry_lock);
    if (QLIST_IS_INSERTED(iothread, link)) {
        QLIST_REMOVE(iothread, link);
    }
    pthread_mutex_unlock(&registry_lock);
    if (iothread->stop_bh) {
        qemu_bh_delete(iothread->stop_bh);
    }
    aio_context_unref(iothread->ctx);
    pthread_mutex_destroy(&iothread->param_lock);
    pthread_cond_destroy(&iothread->init_cond);
    pthread_mutex_destroy(&iothread->init_lock);
    pthread_mutex_destroy(&iothread->stop_lock);
    free(iothread->id);
    free(iothread);
}

static IOThread *iothread_create_common(const char *id, Error **errp)
{
    IOThread *iothread;
    int ret;

    if (id && !id_valid(id)) {
        error_setg(errp, "iothread_create: invalid id '%s' (a letter "
                   "followed by letters, digits, '-', '.' or '_')", id);
        return NULL;
    }
    iothread = calloc(1, sizeof(*iothread));
    if (!iothread || (id && !(iothread->id = strdup(id)))) {
        free(iothread);
        error_setg(errp, "iothread_create: out of memory");
        return NULL;
    }
    pthread_mutex_init(&iothread->stop_lock, NULL);
    pthread_mutex_init(&iothread->init_lock, NULL);
    pthread_cond_init(&iothread->init_cond, NULL);
    pthread_mutex_init(&iothread->param_lock, NULL);
    memcpy(iothread->params, param_defaults, sizeof(iothread->params));
    iothread->thread_id = -1;
    /* Stopped until the thread runs: iothread_stop() has nothing to join. */
    iothread->joined = true;

    /* Reserve the id before the expensive part. */
    pthread_mutex_lock(&registry_lock);
    if (id && find_locked(id)) {
        pthread_mutex_unlock(&registry_lock);
        error_setg(errp, "iothread_create: an IOThread with id '%s' already "
                   "exists", id);
        iothread_free(iothread);
        return NULL;
    }
    QLIST_INSERT_HEAD(&registry, iothread, link);
    pthread_mutex_unlock(&registry_lock);

    iothread->ctx = aio_context_new(errp);
    if (!iothread->ctx) {
        iothread_free(iothread);
        return NULL;
    }
    aio_context_set_poll_params(iothread->ctx,
                                iothread->params[P_POLL_MAX_NS],
                                iothread->params[P_POLL_GROW],
                                iothread->params[P_POLL_SHRINK], NULL);
    aio_context_set_aio_params(iothread->ctx,
                               iothread->params[P_AIO_MAX_BATCH]);
    aio_context_set_thread_pool_params(iothread->ctx,
                                       iothread->params[P_THREAD_POOL_MIN],
                                       iothread->params[P_THREAD_POOL_MAX],
                                       NULL);
    iothread->stop_bh = aio_bh_new(iothread->ctx, iothread_stop_bh, iothread);

    ret = aio_thread_create(&iothread->thread, iothread_run, iothread);
    if (ret != 0) {
        error_setg_errno(errp, ret, "iothread_create: cannot start thread");
        iothread_free(iothread);
        return NULL;
    }
    iothread->joined = false;

    pthread_mutex_lock(&iothread->init_lock);
    while (!iothread->init_done) {
        pthread_cond_wait(&iothread->init_cond, &iothread->init_lock);
    }
    pthread_mutex_unlock(&iothread->init_lock);
    return iothread;
}

IOThread *iothread_create(const char *id, Error **errp)
{
    if (!id) {
        error_setg(errp, "iothread_create: id must not be NULL");
        return NULL;
    }
    return iothread_create_common(id, errp);
}

IOThread *iothread_new(void)
{
    Error *err = NULL;
    IOThread *iothread = iothread_create_common(NULL, &err);

    if (!iothread) {
        error_report("iothread_new: %s", error_get_pretty(err));
        abort();
    }
    return iothread;
}

void iothread_stop(IOThread *iothread)
{
    if (!iothread) {
        return;
    }
    if (tls_iothread == iothread) {
        /* Ends the loop after the current callback; nobody to join. */
        qatomic_set(&iothread->stopping, true);
        return;
    }
    pthread_mutex_lock(&iothread->stop_lock);
    if (!iothread->joined) {
        qemu_bh_schedule(iothread->stop_bh);
        pthread_join(iothread->thread, NULL);
        iothread->joined = true;
    }
    pthread_mutex_unlock(&iothread->stop_lock);
}

void iothread_destroy(IOThread *iothread)
{
    if (!iothread) {
        return;
    }
    if (tls_iothread == iothread) {
        error_report("iothread_destroy: IOThread '%s' cannot destroy itself; "
                     "call iothread_stop() in it and destroy it from another "
                     "thread", iothread->id ? iothread->id : "(anonymous)");
        abort();
    }
    iothread_stop(iothread);
    iothread_free(iothread);
}

void iothread_join(IOThread *iothread)
{
    iothread_destroy(iothread);
}

IOThread *iothread_by_id(const char *id)
{
    IOThread *iothread;

    if (!id) {
        return NULL;
    }
    pthread_mutex_lock(&registry_lock);
    iothread = find_locked(id);
    pthread_mutex_unlock(&registry_lock);
    return iothread;
}

const char *iothread_get_id(IOThread *iothread)
{
    return iothread ? iothread->id : NULL;
}

AioContext *iothread_get_aio_context(IOThread *iothread)
{
    return iothread ? iothread->ctx : NULL;
}

int iothread_get_thread_id(IOThread *iothread)
{
    return iothread ? qatomic_read(&iothread->thread_id) : -1;
}

bool qemu_in_iothread(void)
{
    return tls_iothread != NULL;
}

static int param_index(const char *name)
{
    for (int i = 0; i < NPARAMS; i++) {
        if (name && strcmp(name, param_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

bool iothread_set_param(IOThread *iothread, const char *name, int64_t value,
                        Error **errp)
{
    Error *local_err = NULL;
    int64_t p[NPARAMS];
    int i = param_index(name);

    if (!iothread) {
        error_setg(errp, "iothread_set_param: iothread is NULL");
        return false;
    }
    if (i < 0) {
        error_setg(errp, "IOThread property '%s' does not exist (expected "
                   "poll-max-ns, poll-grow, poll-shrink, aio-max-batch, "
                   "thread-pool-min or thread-pool-max)",
                   name ? name : "(null)");
        return false;
    }
    if (value < 0) {
        error_setg(errp, "%s value must be in range [0, %" PRId64 "], got %"
                   PRId64, name, INT64_MAX, value);
        return false;
    }
    pthread_mutex_lock(&iothread->param_lock);
    memcpy(p, iothread->params, sizeof(p));
    p[i] = value;
    switch (i) {
    case P_POLL_MAX_NS:
    case P_POLL_GROW:
    case P_POLL_SHRINK:
        aio_context_set_poll_params(iothread->ctx, p[P_POLL_MAX_NS],
                                    p[P_POLL_GROW], p[P_POLL_SHRINK],
                                    &local_err);
        break;
    case P_AIO_MAX_BATCH:
        aio_context_set_aio_params(iothread->ctx, value);
        break;
    default:
        aio_context_set_thread_pool_params(iothread->ctx,
                                           p[P_THREAD_POOL_MIN],
                                           p[P_THREAD_POOL_MAX], &local_err);
        break;
    }
    if (!local_err) {
        qatomic_set(&iothread->params[i], value);
    }
    pthread_mutex_unlock(&iothread->param_lock);
    if (local_err) {
        error_propagate(errp, local_err);
        return false;
    }
    return true;
}

int64_t iothread_get_param(IOThread *iothread, const char *name, Error **errp)
{
    int i = param_index(name);

    if (!iothread || i < 0) {
        error_setg(errp, "IOThread property '%s' does not exist",
                   name ? name : "(null)");
        return -1;
    }
    return qatomic_read(&iothread->params[i]);
}
