/*
 * The main loop: main_loop_wait(), the iohandler context, the BQL and the
 * legacy main-loop helpers (QEMU's util/main-loop.c).
 *
 * main_loop_wait() waits for two AioContexts without GLib: each is made
 * waitable from outside with aio_source_prepare()/_fds()/_check()/
 * _dispatch() (aio-internal.h; the same primitive the GSource wraps), and
 * one ppoll() covers the fds of both.  The signalfd and the child pidfds
 * are handlers of the iohandler context.  Main-loop timers (timer_new_ns()
 * & co.) live in the iohandler context's timer list group: like QEMU's
 * main_loop_tlg they run only in main_loop_wait(), never in a nested
 * aio_poll(qemu_get_aio_context()).  See docs/main-loop.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "main-loop-internal.h"
#include "../core/aio-internal.h"
#include "../core/timer-internal.h"

/* Written once by qemu_init_main_loop() (release), read anywhere (acquire). */
static AioContext *qemu_aio_context;
static AioContext *iohandler_ctx;
static QEMUBH *qemu_notify_bh;
static int main_tid;

/* main_loop_wait()'s pollfd array (main thread only). */
static struct pollfd *loop_pfds;
static int loop_pfds_alloc;

/* ---- BQL ---------------------------------------------------------------- */

static pthread_mutex_t bql = PTHREAD_MUTEX_INITIALIZER;
static AIOLOOP_TLS bool bql_held;

void bql_lock(void)
{
    if (bql_held) {
        error_report("bql_lock: this thread already holds the BQL (the big "
                     "lock is not recursive; check bql_locked() first)");
        abort();
    }
    pthread_mutex_lock(&bql);
    bql_held = true;
}

void bql_unlock(void)
{
    if (!bql_held) {
        error_report("bql_unlock: this thread does not hold the BQL");
        abort();
    }
    bql_held = false;
    pthread_mutex_unlock(&bql);
}

bool bql_locked(void)
{
    return bql_held;
}

void qemu_mutex_lock_iothread(void)
{
    bql_lock();
}

void qemu_mutex_unlock_iothread(void)
{
    bql_unlock();
}

bool qemu_mutex_iothread_locked(void)
{
    return bql_locked();
}

/* ---- contexts ----------------------------------------------------------- */

AioContext *qemu_get_aio_context(void)
{
    return __atomic_load_n(&qemu_aio_context, __ATOMIC_ACQUIRE);
}

AioContext *iohandler_get_aio_context(void)
{
    return __atomic_load_n(&iohandler_ctx, __ATOMIC_ACQUIRE);
}

static AioContext *require(AioContext **pctx, const char *caller)
{
    AioContext *ctx = __atomic_load_n(pctx, __ATOMIC_ACQUIRE);

    if (!ctx) {
        error_report("%s: called before qemu_init_main_loop()", caller);
        abort();
    }
    return ctx;
}

AioContext *main_loop_iohandler_ctx(const char *caller)
{
    return require(&iohandler_ctx, caller);
}

static void notify_event_cb(void *opaque)
{
    /* Nothing: running it is the point (main_loop_wait() returns). */
    (void)opaque;
}

void qemu_notify_event(void)
{
    if (!qemu_get_aio_context()) {
        return;
    }
    qemu_bh_schedule(qemu_notify_bh);
}

int qemu_init_main_loop(Error **errp)
{
    AioContext *ctx;
    AioContext *io;
    int ret;

    if (qemu_get_aio_context()) {
        error_setg(errp, "qemu_init_main_loop: the main loop is already "
                   "initialised (call it once per process)");
        return -EEXIST;
    }
    if (qemu_get_current_aio_context()) {
        error_setg(errp, "qemu_init_main_loop: this thread already runs "
                   "another AioContext; call it from the main thread");
        return -EBUSY;
    }
    ret = main_loop_signals_init(child_watch_init(), errp);
    if (ret < 0) {
        return ret;
    }
    ctx = aio_context_new(errp);
    io = ctx ? aio_context_new(errp) : NULL;
    if (!io) {
        /* As if never called: a later call may succeed. */
        aio_context_unref(ctx);
        main_loop_signals_cleanup();
        return -ENOMEM;
    }
    qemu_notify_bh = aio_bh_new(ctx, notify_event_cb, NULL);
    qemu_set_current_aio_context(ctx);
    aio_context_bind_home(io, "qemu_init_main_loop");
    main_tid = (int)gettid();
    timer_set_main_loop_tlg(aio_get_timerlistgroup(io));
    main_loop_signals_start(io);

    /* Publish last: the globals above are set once they are visible. */
    __atomic_store_n(&iohandler_ctx, io, __ATOMIC_RELEASE);
    __atomic_store_n(&qemu_aio_context, ctx, __ATOMIC_RELEASE);
    return 0;
}

/* ---- polling callbacks -------------------------------------------------- */

typedef struct PollingEntry {
    PollingFunc *func;
    void *opaque;
    uint64_t id;
} PollingEntry;

static pthread_mutex_t polling_lock = PTHREAD_MUTEX_INITIALIZER;
static PollingEntry *polling;     /* polling_lock */
static int polling_n;             /* polling_lock; atomic read for a peek */
static int polling_alloc;
static uint64_t polling_next_id;

int qemu_add_polling_cb(PollingFunc *func, void *opaque)
{
    int ret = 0;

    pthread_mutex_lock(&polling_lock);
    if (polling_n == polling_alloc) {
        int n = polling_alloc ? polling_alloc * 2 : 4;
        PollingEntry *p = realloc(polling, (size_t)n * sizeof(*p));

        if (!p) {
            ret = -ENOMEM;
            goto out;
        }
        polling = p;
        polling_alloc = n;
    }
    polling[polling_n] = (PollingEntry){ func, opaque, ++polling_next_id };
    __atomic_store_n(&polling_n, polling_n + 1, __ATOMIC_RELAXED);
out:
    pthread_mutex_unlock(&polling_lock);
    qemu_notify_event();
    return ret;
}

void qemu_del_polling_cb(PollingFunc *func, void *opaque)
{
    pthread_mutex_lock(&polling_lock);
    /* The oldest registration of the pair, as QEMU's list walk. */
    for (int i = 0; i < polling_n; i++) {
        if (polling[i].func == func && polling[i].opaque == opaque) {
            memmove(&polling[i], &polling[i + 1],
                    (size_t)(polling_n - i - 1) * sizeof(*polling));
            __atomic_store_n(&polling_n, polling_n - 1, __ATOMIC_RELAXED);
            break;
        }
    }
    pthread_mutex_unlock(&polling_lock);
}

/*
 * Call every callback once, without the lock (they may add or delete
 * callbacks).  Each call is preceded by a look-up by id, so one deleted by
 * an earlier callback of this round is not called.  Returns the OR of the
 * results.
 */
static int run_polling_cbs(void)
{
    uint64_t last = 0;
    int ret = 0;

    if (!__atomic_load_n(&polling_n, __ATOMIC_RELAXED)) {
        return 0;
    }
    for (;;) {
        PollingEntry e = { NULL, NULL, 0 };

        pthread_mutex_lock(&polling_lock);
        /* Ids grow in array order: the next one after @last. */
        for (int i = 0; i < polling_n; i++) {
            if (polling[i].id > last) {
                e = polling[i];
                break;
            }
        }
        pthread_mutex_unlock(&polling_lock);
        if (!e.func) {
            return ret;
        }
        last = e.id;
        ret |= e.func(e.opaque);
    }
}

/* ---- main_loop_wait ----------------------------------------------------- */

static void grow_pfds(int want)
{
    int n = loop_pfds_alloc ? loop_pfds_alloc : 16;
    struct pollfd *p;

    while (n < want) {
        n *= 2;
    }
    p = realloc(loop_pfds, (size_t)n * sizeof(*p));
    if (!p) {
        error_report("main_loop_wait: out of memory for %d pollfds", n);
        abort();
    }
    loop_pfds = p;
    loop_pfds_alloc = n;
}

static bool any_revents(const struct pollfd *pfds, int n)
{
    for (int i = 0; i < n; i++) {
        if (pfds[i].revents) {
            return true;
        }
    }
    return false;
}

void main_loop_wait(int nonblocking)
{
    AioContext *ctx = require(&qemu_aio_context, "main_loop_wait");
    AioContext *io = iohandler_get_aio_context();
    struct timespec ts;
    int64_t timeout = nonblocking ? 0 : -1;
    int n_main;
    int n_io;
    int ret;
    bool locked;
    bool main_ready;
    bool io_ready;

    /* Only the main thread has the main context as its current one. */
    if (unlikely(qemu_get_current_aio_context() != ctx)) {
        error_report("main_loop_wait: called from thread %d, but the main "
                     "loop belongs to thread %d (the one that called "
                     "qemu_init_main_loop)", (int)gettid(), main_tid);
        abort();
    }
    if (run_polling_cbs()) {
        timeout = 0;
    }

    timeout = qemu_soonest_timeout(timeout, aio_source_prepare(ctx));
    timeout = qemu_soonest_timeout(timeout, aio_source_prepare(io));
    if (!loop_pfds) {
        /* Never NULL below: NULL + n is undefined even for n == 0. */
        grow_pfds(16);
    }
    for (;;) {
        n_main = aio_source_fds(ctx, loop_pfds, loop_pfds_alloc);
        n_io = aio_source_fds(io, loop_pfds + MIN(n_main, loop_pfds_alloc),
                              MAX(loop_pfds_alloc - n_main, 0));
        if (n_main + n_io <= loop_pfds_alloc) {
            break;
        }
        grow_pfds(n_main + n_io);
    }
    for (int i = 0; i < n_main + n_io; i++) {
        loop_pfds[i].revents = 0;
    }
    if (timeout >= 0) {
        ts.tv_sec = timeout / 1000000000LL;
        ts.tv_nsec = timeout % 1000000000LL;
    }

    /* Let other threads take the BQL while we sleep, as QEMU does. */
    locked = bql_locked();
    if (locked) {
        bql_unlock();
    }
    ret = ppoll(loop_pfds, (nfds_t)(n_main + n_io), timeout >= 0 ? &ts : NULL,
                NULL);
    if (ret < 0 && errno != EINTR) {
        error_report("main_loop_wait: ppoll: %s", strerror(errno));
    }
    if (locked) {
        bql_lock();
    }
    if (ret <= 0) {
        n_main = n_io = 0; /* no revents to look at */
    }

    main_ready = any_revents(loop_pfds, n_main);
    io_ready = any_revents(loop_pfds + n_main, n_io);
    if (aio_source_check(ctx, main_ready)) {
        aio_source_dispatch(ctx, main_ready);
    }
    if (aio_source_check(io, io_ready)) {
        aio_source_dispatch(io, io_ready);
    }
}

/* ---- legacy helpers ----------------------------------------------------- */

void qemu_set_fd_handler(int fd, IOHandler *fd_read, IOHandler *fd_write,
                         void *opaque)
{
    AioContext *io = require(&iohandler_ctx, "qemu_set_fd_handler");

    if (fd < 0) {
        error_report("qemu_set_fd_handler: invalid fd %d", fd);
        abort();
    }
    aio_set_fd_handler(io, fd, fd_read, fd_write, NULL, NULL, opaque);
}

void event_notifier_set_handler(EventNotifier *e, EventNotifierHandler *handler)
{
    AioContext *io = require(&iohandler_ctx, "event_notifier_set_handler");

    aio_set_event_notifier(io, e, handler, NULL, NULL);
}

QEMUBH *qemu_bh_new_full(QEMUBHFunc *cb, void *opaque, const char *name,
                         MemReentrancyGuard *reentrancy_guard)
{
    AioContext *ctx = require(&qemu_aio_context, "qemu_bh_new");

    return aio_bh_new_full(ctx, cb, opaque, name, reentrancy_guard);
}

void qemu_aio_set_fd_handler(int fd, IOHandler *io_read, IOHandler *io_write,
                             void *opaque)
{
    AioContext *ctx = require(&qemu_aio_context, "qemu_aio_set_fd_handler");

    aio_set_fd_handler(ctx, fd, io_read, io_write, NULL, NULL, opaque);
}

void qemu_aio_set_event_notifier(EventNotifier *notifier,
                                 EventNotifierHandler *io_read)
{
    AioContext *ctx = require(&qemu_aio_context,
                              "qemu_aio_set_event_notifier");

    aio_set_event_notifier(ctx, notifier, io_read, NULL, NULL);
}

bool qemu_aio_wait(void)
{
    return aio_poll(require(&qemu_aio_context, "qemu_aio_wait"), true);
}
