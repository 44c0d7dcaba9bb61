/*
 * fd handlers, aio_poll() and adaptive polling.
 *
 * Handlers are kept in a list (for the monitors that scan it) plus a table
 * indexed by fd, so finding, replacing or removing the handler of an fd is
 * O(1) however many fds are watched.  Like QEMU, a change never edits a
 * live node: it links a new node and retires the old one, marking it
 * deleted so no callback of it runs again.  The retired node's memory is
 * freed only when no aio_poll() can still see it (see AioContext.walking).
 *
 * Adaptive polling follows QEMU (per-handler windows that grow from 4 us
 * by poll_grow and shrink by poll_shrink), with four changes that make it
 * learn from outcomes rather than from how long the thread slept:
 * - a wake-up through aio_notify() is judged by when the notification was
 *   sent, not by when this thread got to run again (a blocked thread on
 *   another CPU takes ~30 us to wake, which used to stop polling from ever
 *   starting in cross-thread ping-pong);
 * - windows that keep ending without an event, whatever their size, switch
 *   polling off for an exponentially growing number of dispatches, so two
 *   threads sharing one CPU stop stealing each other's time slice;
 * - a window that caught its event is a hit however the event was seen
 *   (io_poll(), the fd monitor as well, or the fd monitor first), so that
 *   io_uring, whose POLL_ADDs stay armed while we poll, gets hits at all;
 * - waits with block requests in flight have a window of their own
 *   (ctx->poll_io_wait, see try_poll_mode()), so a busy socket's window
 *   does not spin through every wait for a slow disk.
 * docs/design.md walks through one aio_poll() iteration phase by phase.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aio-internal.h"
#include "timer-internal.h"

#include "../util/alloc.h"
/* A polled handler with no success for this long leaves the polled list. */
#define POLL_IDLE_INTERVAL_NS (7LL * 1000 * 1000 * 1000)
/* Poll windows that may miss in a row before polling backs off. */
#define POLL_MISS_LIMIT 4
#define POLL_BACKOFF_MIN 64
#define POLL_BACKOFF_MAX_SHIFT 10

/* RCU-style insertion: a concurrent walker sees the node whole or not at all. */
#define QLIST_INSERT_HEAD_RCU(head, elm, field)                              \
    do {                                                                     \
        (elm)->field.le_prev = &(head)->lh_first;                            \
        (elm)->field.le_next = (head)->lh_first;                             \
        if ((head)->lh_first != NULL) {                                      \
            (head)->lh_first->field.le_prev = &(elm)->field.le_next;         \
        }                                                                    \
        __atomic_store_n(&(head)->lh_first, (elm), __ATOMIC_RELEASE);        \
    } while (0)

bool aio_handler_is_deleted(const AioHandler *node)
{
    return __atomic_load_n(&node->deleted, __ATOMIC_ACQUIRE);
}

bool aio_poll_disabled(AioContext *ctx)
{
    return qatomic_read(&ctx->poll_disable_cnt) != 0;
}

void aio_add_ready_handler(AioHandlerList *ready_list, AioHandler *node,
                           int revents)
{
    /* A nested aio_poll() may take a node off its parent's ready list. */
    QLIST_SAFE_REMOVE(node, node_ready);
    node->revents = (short)revents;
    QLIST_INSERT_HEAD(ready_list, node, node_ready);
}

static void aio_add_poll_ready_handler(AioHandlerList *ready_list,
                                       AioHandler *node)
{
    QLIST_SAFE_REMOVE(node, node_ready);
    node->poll_ready = true;
    QLIST_INSERT_HEAD(ready_list, node, node_ready);
}

static AioHandler *fd_table_get(AioContext *ctx, int fd)
{
    return fd < ctx->fd_table.size ? ctx->fd_table.nodes[fd] : NULL;
}

static void fd_table_set(AioContext *ctx, int fd, AioHandler *node)
{
    AioFdTable *t = &ctx->fd_table;

    if (fd >= t->size) {
        int size = t->size ? t->size : 64;
        AioHandler **nodes;

        if (!node) {
            return;
        }
        while (size <= fd) {
            size *= 2;
        }
        nodes = realloc(t->nodes, (size_t)size * sizeof(*nodes));
        if (!nodes) {
            error_report("aio_set_fd_handler: out of memory for fd %d", fd);
            abort();
        }
        memset(nodes + t->size, 0, (size_t)(size - t->size) * sizeof(*nodes));
        t->nodes = nodes;
        t->size = size;
    }
    t->nodes[fd] = node;
}

/*
 * May a node unlinked now be freed now?  Only in the home thread outside
 * any walk: another thread cannot know, without a barrier on the loop's
 * hot path, whether the home thread is between reading a node pointer and
 * using it.  Called with list_mutex held.
 */
static bool aio_can_free_handler(AioContext *ctx)
{
    return aio_context_is_home(ctx) && ctx->walking == 0;
}

/*
 * Retire @node (list_mutex held).  Returns true if the caller must
 * free it now; otherwise the last walker or the fd monitor frees it.
 */
static bool aio_remove_fd_handler(AioContext *ctx, AioHandler *node)
{
    /* Pairs with aio_handler_is_deleted(): no callback of @node runs after. */
    __atomic_store_n(&node->deleted, true, __ATOMIC_RELEASE);
    if (node->fdmon_owned) {
        return false;
    }
    if (!aio_can_free_handler(ctx)) {
        QLIST_INSERT_HEAD_RCU(&ctx->deleted_aio_handlers, node, node_deleted);
        return false;
    }
    /*
     * The home thread, not walking: nobody else walks without the mutex,
     * so the node can go for real, including from the home thread's lists.
     */
    QLIST_SAFE_REMOVE(node, node_ready);
    QLIST_SAFE_REMOVE(node, node_poll);
    QLIST_REMOVE(node, node);
    return true;
}

void aio_handler_release(AioContext *ctx, AioHandler *node)
{
    bool free_now = false;

    pthread_mutex_lock(&ctx->list_mutex);
    node->fdmon_owned = false;
    if (!aio_can_free_handler(ctx)) {
        QLIST_INSERT_HEAD_RCU(&ctx->deleted_aio_handlers, node, node_deleted);
    } else {
        QLIST_SAFE_REMOVE(node, node_ready);
        QLIST_SAFE_REMOVE(node, node_poll);
        QLIST_REMOVE(node, node);
        free_now = true;
    }
    pthread_mutex_unlock(&ctx->list_mutex);
    if (free_now) {
        free(node);
    }
}

static void aio_set_fd_handler_full(AioContext *ctx, int fd,
                                    IOHandler *io_read, IOHandler *io_write,
                                    AioPollFn *io_poll,
                                    IOHandler *io_poll_ready, void *opaque,
                                    bool kernel_drain)
{
    AioHandler *node;
    AioHandler *new_node = NULL;
    bool free_old = false;
    int disable_delta = 0;

    if (fd < 0) {
        error_report("aio_set_fd_handler: invalid fd %d", fd);
        abort();
    }
    /* Polling only works when there is something to call on success. */
    if (!io_poll_ready) {
        io_poll = NULL;
    }

    if (io_read || io_write || io_poll) {
        new_node = aio_alloc0(sizeof(*new_node), "aio_set_fd_handler");
        new_node->fd = fd;
        new_node->io_read = io_read;
        new_node->io_write = io_write;
        new_node->io_poll = io_poll;
        new_node->io_poll_ready = io_poll_ready;
        new_node->opaque = opaque;
        new_node->kernel_drain = kernel_drain;
        new_node->pfd_index = -1;
        if (io_read) {
            new_node->events |= POLLIN | POLLHUP | POLLERR;
        }
        if (io_write) {
            new_node->events |= POLLOUT | POLLERR;
        }
        if (!io_poll) {
            disable_delta++;
        }
    }

    pthread_mutex_lock(&ctx->list_mutex);
    node = fd_table_get(ctx, fd);
    if (!node && !new_node) {
        pthread_mutex_unlock(&ctx->list_mutex);
        return;
    }
    if (node && !node->io_poll) {
        disable_delta--;
    }
    qatomic_set(&ctx->poll_disable_cnt, ctx->poll_disable_cnt + disable_delta);
    qatomic_set(&ctx->n_handlers,
                ctx->n_handlers + (new_node != NULL) - (node != NULL));

    if (new_node) {
        QLIST_INSERT_HEAD_RCU(&ctx->aio_handlers, new_node, node);
    }
    fd_table_set(ctx, fd, new_node);
    ctx->fdmon_ops->update(ctx, node, new_node);
    if (node) {
        free_old = aio_remove_fd_handler(ctx, node);
    }
    pthread_mutex_unlock(&ctx->list_mutex);
    aio_notify(ctx);

    if (free_old) {
        free(node);
    }
}

void aio_set_fd_handler(AioContext *ctx, int fd, IOHandler *io_read,
                        IOHandler *io_write, AioPollFn *io_poll,
                        IOHandler *io_poll_ready, void *opaque)
{
    aio_set_fd_handler_full(ctx, fd, io_read, io_write, io_poll,
                            io_poll_ready, opaque, false);
}

static void aio_set_notifier(AioContext *ctx, EventNotifier *notifier,
                             EventNotifierHandler *io_read, AioPollFn *io_poll,
                             EventNotifierHandler *io_poll_ready,
                             bool kernel_drain)
{
    /* The callbacks receive @notifier as their opaque argument. */
    aio_set_fd_handler_full(ctx, event_notifier_get_fd(notifier),
                            (IOHandler *)(void (*)(void))io_read, NULL,
                            io_poll,
                            (IOHandler *)(void (*)(void))io_poll_ready,
                            notifier, kernel_drain);
}

void aio_set_event_notifier(AioContext *ctx, EventNotifier *notifier,
                            EventNotifierHandler *io_read, AioPollFn *io_poll,
                            EventNotifierHandler *io_poll_ready)
{
    aio_set_notifier(ctx, notifier, io_read, io_poll, io_poll_ready, false);
}

void aio_set_event_notifier_drained(AioContext *ctx, EventNotifier *notifier,
                                    EventNotifierHandler *io_read,
                                    AioPollFn *io_poll,
                                    EventNotifierHandler *io_poll_ready)
{
    aio_set_notifier(ctx, notifier, io_read, io_poll, io_poll_ready, true);
}

void aio_set_event_notifier_poll(AioContext *ctx, EventNotifier *notifier,
                                 EventNotifierHandler *io_poll_begin,
                                 EventNotifierHandler *io_poll_end)
{
    AioHandler *node;

    pthread_mutex_lock(&ctx->list_mutex);
    node = fd_table_get(ctx, event_notifier_get_fd(notifier));
    if (node) {
        __atomic_store_n(&node->io_poll_begin,
                         (IOHandler *)(void (*)(void))io_poll_begin,
                         __ATOMIC_RELAXED);
        __atomic_store_n(&node->io_poll_end,
                         (IOHandler *)(void (*)(void))io_poll_end,
                         __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&ctx->list_mutex);
}

/* Free retired handlers; only the outermost walker can. */
static void aio_free_deleted_handlers(AioContext *ctx)
{
    AioHandler *node;

    /*
     * Unlocked peek; other threads insert with a release store under the
     * mutex, and a node missed here is freed by the next aio_poll().
     */
    if (!__atomic_load_n(&ctx->deleted_aio_handlers.lh_first,
                         __ATOMIC_RELAXED)) {
        return;
    }
    if (ctx->walking != 1) {
        return; /* nested: the parent frees them */
    }
    pthread_mutex_lock(&ctx->list_mutex);
    while ((node = QLIST_FIRST(&ctx->deleted_aio_handlers))) {
        QLIST_REMOVE(node, node_deleted);
        QLIST_SAFE_REMOVE(node, node_ready); /* ctx->prepared_ready */
        QLIST_SAFE_REMOVE(node, node_poll);
        QLIST_REMOVE(node, node);
        free(node);
    }
    pthread_mutex_unlock(&ctx->list_mutex);
}

void aio_handlers_cleanup(AioContext *ctx)
{
    AioHandler *node;
    AioHandler *next;

    QLIST_FOREACH_SAFE(node, &ctx->aio_handlers, node, next) {
        free(node);
    }
    QLIST_INIT(&ctx->aio_handlers);
    QLIST_INIT(&ctx->deleted_aio_handlers);
    QLIST_INIT(&ctx->poll_aio_handlers);
    QLIST_INIT(&ctx->prepared_ready);
    free(ctx->fd_table.nodes);
    ctx->fd_table.nodes = NULL;
    ctx->fd_table.size = 0;
    free(ctx->pollfds);
    free(ctx->pollfd_nodes);
    ctx->pollfds = NULL;
    ctx->pollfd_nodes = NULL;
}

/* ---- adaptive polling ------------------------------------------------- */

static bool node_is_notifier(AioContext *ctx, AioHandler *node)
{
    return node->opaque == &ctx->notifier;
}

/*
 * Call io_poll_begin or io_poll_end on the polled handlers when the mode
 * changes.  When leaving poll mode, poll each handler one last time: the
 * event may have raced with io_poll_end().  Returns true if that found one.
 */
static bool poll_set_started(AioContext *ctx, AioHandlerList *ready_list,
                             bool started, bool *progress)
{
    AioHandler *node;
    bool found = false;

    if (started == ctx->poll_started) {
        return false;
    }
    ctx->poll_started = started;

    QLIST_FOREACH(node, &ctx->poll_aio_handlers, node_poll) {
        IOHandler *fn;

        if (aio_handler_is_deleted(node)) {
            continue;
        }
        fn = __atomic_load_n(started ? &node->io_poll_begin
                                     : &node->io_poll_end, __ATOMIC_RELAXED);
        if (fn) {
            fn(node->opaque);
        }
        if (!started && !aio_handler_is_deleted(node) &&
            node->io_poll(node->opaque)) {
            aio_add_poll_ready_handler(ready_list, node);
            found = true;
            if (!node_is_notifier(ctx, node)) {
                *progress = true;
            }
        }
    }
    return found;
}

static int64_t poll_idle_interval(AioContext *ctx)
{
    return ctx->poll_idle_ns ? ctx->poll_idle_ns : POLL_IDLE_INTERVAL_NS;
}

static bool run_poll_handlers_once(AioContext *ctx, AioHandlerList *ready_list,
                                   int64_t now, bool *progress)
{
    AioHandler *node;
    bool found = false;

    QLIST_FOREACH(node, &ctx->poll_aio_handlers, node_poll) {
        if (!aio_handler_is_deleted(node) && node->io_poll(node->opaque)) {
            aio_add_poll_ready_handler(ready_list, node);
            node->poll_idle_deadline = now + poll_idle_interval(ctx);
            found = true;
            if (!node_is_notifier(ctx, node)) {
                *progress = true;
            }
        }
    }
    return found;
}

/* Returns true if the last poll of a dropped handler found an event. */
static bool remove_idle_poll_handlers(AioContext *ctx,
                                      AioHandlerList *ready_list, int64_t now,
                                      bool *progress)
{
    AioHandler *node;
    AioHandler *tmp;
    bool found = false;

    QLIST_FOREACH_SAFE(node, &ctx->poll_aio_handlers, node_poll, tmp) {
        if (node->poll_idle_deadline == 0) {
            node->poll_idle_deadline = now + poll_idle_interval(ctx);
        } else if (now >= node->poll_idle_deadline) {
            IOHandler *end = __atomic_load_n(&node->io_poll_end,
                                             __ATOMIC_RELAXED);

            node->poll_idle_deadline = 0;
            QLIST_REMOVE(node, node_poll);
            if (ctx->poll_started && end && !aio_handler_is_deleted(node)) {
                end(node->opaque);
                /*
                 * One last poll: an event that came just before io_poll_end()
                 * re-enabled notifications would send none (QEMU does it).
                 */
                if (!aio_handler_is_deleted(node) &&
                    node->io_poll(node->opaque)) {
                    aio_add_poll_ready_handler(ready_list, node);
                    found = true;
                    if (!node_is_notifier(ctx, node)) {
                        *progress = true;
                    }
                }
            }
        }
    }
    return found;
}

/*
 * Busy-poll for up to the largest handler window (capped by *timeout).
 * Returns true when a handler's io_poll() found an event; then *timeout is 0.
 * *@woken: the window ended because the fd monitor had something.
 *
 * @io_wait: block requests are in flight, so the window is also capped by
 * ctx->poll_io_wait.  A handler's window only learns from the events that
 * handler gets: a server's socket, whose next request comes a few
 * microseconds after each reply, keeps a full window, and without the cap
 * every wait for a disk that answers in 100 us spun that window in vain
 * (nobody counted the miss: the socket was not what ended the wait).
 * With the cap, waits on a slow disk stop spinning and waits on a fast one
 * (or with requests arriving meanwhile) keep it.
 *
 * *@clock: the caller's latest clock reading, updated if we spin.  A hit
 * does not read the clock again: the event is handled one reading (~27 ns
 * on kvm-clock) sooner, and *@clock is at most one pass stale.
 */
static bool try_poll_mode(AioContext *ctx, AioHandlerList *ready_list,
                          int64_t *timeout, bool *progress, bool *missed,
                          bool *woken, bool io_wait, int64_t *clock)
{
    AioHandler *node;
    int64_t max_ns = 0;
    int64_t start;
    int64_t now;
    bool found;

    if (QLIST_EMPTY(&ctx->poll_aio_handlers)) {
        return false;
    }
    QLIST_FOREACH(node, &ctx->poll_aio_handlers, node_poll) {
        max_ns = MAX(max_ns, node->poll.ns);
    }
    max_ns = qemu_soonest_timeout(*timeout, max_ns);
    if (io_wait) {
        max_ns = MIN(max_ns, ctx->poll_io_wait.ns);
    }
    if (max_ns == 0) {
        return false;
    }
    if (ctx->fdmon_ops->flush && ctx->fdmon_ops->flush(ctx, ready_list)) {
        /* Events are ready already: no polling, and no miss either. */
        *timeout = 0;
        return false;
    }
    if (ctx->fdmon_ops->need_wait(ctx)) {
        return false;
    }

    poll_set_started(ctx, ready_list, true, progress);
    start = now = aio_clock_ns();
    for (;;) {
        found = run_poll_handlers_once(ctx, ready_list, now, progress);
        if (found) {
            break;
        }
        now = aio_clock_ns();
        if (now - start >= max_ns ||
            (*woken = ctx->fdmon_ops->need_wait(ctx))) {
            break;
        }
    }
    /*
     * The fd monitor has something (io_uring: a block request's completion
     * in the shared CQ, or an armed POLL_ADD that saw the data land before
     * io_poll() did): the polling found an event, just not through a
     * handler's io_poll.
     */
    found |= *woken;
    *clock = now;

    found |= remove_idle_poll_handlers(ctx, ready_list, now, progress);
    if (found) {
        qatomic_set(&ctx->stats.poll_hits, ctx->stats.poll_hits + 1);
        *timeout = 0;
        return true;
    }
    qatomic_set(&ctx->stats.poll_misses, ctx->stats.poll_misses + 1);
    *missed = true;
    if (*timeout != -1) {
        *timeout -= MIN(*timeout, now - start);
    }
    return false;
}

static void poll_reset_windows(AioContext *ctx)
{
    AioHandler *node;

    QLIST_FOREACH(node, &ctx->poll_aio_handlers, node_poll) {
        memset(&node->poll, 0, sizeof(node->poll));
    }
    memset(&ctx->poll_io_wait, 0, sizeof(ctx->poll_io_wait));
}

/*
 * @event_ns: how long after the start of aio_poll() the event arrived, as
 * far as we can tell.  @hit: the window caught it; @missed: a poll window
 * was spent without finding anything.
 */
static void adjust_polling_time(AioContext *ctx, AioPolledState *poll,
                                int64_t event_ns, bool hit, bool missed)
{
    int64_t max_ns = qatomic_read(&ctx->poll_max_ns);

    if (hit) {
        poll->misses = 0;
        poll->backoff_shift = 0;
    } else if (missed) {
        /*
         * Any window size counts: growing by doubling from 4 us, the window
         * can stop just short of the maximum (32000 vs 32768 ns) and a
         * "misses at the maximum" rule would then never fire.
         */
        if (++poll->misses >= POLL_MISS_LIMIT) {
            /*
             * Spinning keeps not paying (typically: the thread that would
             * produce the event shares our CPU and cannot run while we
             * spin).  Stop, and retry after a growing number of events.
             */
            poll->ns = 0;
            poll->misses = 0;
            poll->backoff = POLL_BACKOFF_MIN << poll->backoff_shift;
            if (poll->backoff_shift < POLL_BACKOFF_MAX_SHIFT) {
                poll->backoff_shift++;
            }
            return;
        }
    }
    if (poll->backoff) {
        if (--poll->backoff == 0) {
            /*
             * We know polling did not pay here: the window that grows from
             * now on is a probe, and one miss backs off again (for longer)
             * instead of four growing windows.  A hit resets everything.
             */
            poll->misses = POLL_MISS_LIMIT - 1;
        }
        return;
    }

    if (event_ns <= poll->ns) {
        /* The sweet spot: the window caught or would have caught it. */
    } else if (event_ns > max_ns) {
        /* We'd have to poll for too long: poll less. */
        int64_t shrink = qatomic_read(&ctx->poll_shrink);

        poll->ns = shrink ? poll->ns / shrink : 0;
    } else if (poll->ns < max_ns) {
        /*
         * There is room to grow: poll longer, and at least long enough to
         * have caught this event (with a quarter to spare).  Doubling from
         * 4 us alone needs four windows to reach a 30 us gap (a request
         * from a client on the other CPU), and those four misses trip the
         * back-off before a window ever catches one.  A producer that
         * shares our CPU still backs us off: it only runs once we stop
         * spinning, so every window misses however long it is.
         */
        int64_t grow = qatomic_read(&ctx->poll_grow);
        int64_t cover = event_ns + event_ns / 4;

        if (grow == 0) {
            grow = 2;
        }
        poll->ns = poll->ns ? poll->ns * grow : 4000;
        if (poll->ns < cover) {
            poll->ns = cover;
        }
        if (poll->ns > max_ns) {
            poll->ns = max_ns;
        }
    }
}

/*
 * A wake-up through the context's eventfd: polling would have caught it if
 * the window covered the time at which aio_notify() wrote the eventfd.
 * How long the kernel then took to run us is no reason to poll longer.
 */
static void adjust_notifier_event_ns(AioContext *ctx, int64_t *event_ns)
{
    int64_t ts = qatomic_read(&ctx->notify_ts);

    if (ts >= ctx->poll_start_ns && ts - ctx->poll_start_ns < *event_ns) {
        *event_ns = ts - ctx->poll_start_ns;
    }
}

/* ---- dispatch --------------------------------------------------------- */

static bool aio_dispatch_handler(AioContext *ctx, AioHandler *node)
{
    bool progress = false;
    bool poll_ready = node->poll_ready;
    int revents = node->revents & node->events;

    node->revents = 0;
    node->poll_ready = false;

    /*
     * Start polling a handler when it becomes ready: activity is likely to
     * continue.
     */
    if (!aio_handler_is_deleted(node) && node->io_poll &&
        !QLIST_IS_INSERTED(node, node_poll) && qatomic_read(&ctx->poll_max_ns)) {
        IOHandler *begin = __atomic_load_n(&node->io_poll_begin,
                                           __ATOMIC_RELAXED);

        if (ctx->poll_started && begin) {
            begin(node->opaque);
        }
        node->poll_idle_deadline = 0;
        QLIST_INSERT_HEAD(&ctx->poll_aio_handlers, node, node_poll);
    }

    if (!aio_handler_is_deleted(node) && poll_ready && revents == 0 &&
        node->io_poll_ready) {
        /*
         * Off the polled list while it runs, as in QEMU: io_poll_ready()
         * may run a nested aio_poll() before clearing what made io_poll()
         * true, which would find the node ready again and recurse without
         * end.
         */
        QLIST_SAFE_REMOVE(node, node_poll);
        node->io_poll_ready(node->opaque);
        if (!aio_handler_is_deleted(node) &&
            !QLIST_IS_INSERTED(node, node_poll)) {
            QLIST_INSERT_HEAD(&ctx->poll_aio_handlers, node, node_poll);
        }
        /* The context's own notifier is never progress. */
        if (!node_is_notifier(ctx, node)) {
            progress = true;
        }
        return progress;
    }
    if (!aio_handler_is_deleted(node) &&
        (revents & (POLLIN | POLLHUP | POLLERR)) && node->io_read) {
        node->io_read(node->opaque);
        if (!node_is_notifier(ctx, node)) {
            progress = true;
        }
    }
    /* Re-check: io_read may have removed this handler. */
    if (!aio_handler_is_deleted(node) && (revents & (POLLOUT | POLLERR)) &&
        node->io_write) {
        node->io_write(node->opaque);
        progress = true;
    }
    return progress;
}

/*
 * @fdmon_woke: polling ended because the fd monitor saw an event, so what
 * the handlers that were being polled report now came inside their window.
 */
static bool aio_dispatch_ready_handlers(AioContext *ctx,
                                        AioHandlerList *ready_list,
                                        int64_t block_ns, bool missed,
                                        bool fdmon_woke)
{
    bool progress = false;
    uint64_t n = 0;
    AioHandler *node;

    while ((node = QLIST_FIRST(ready_list))) {
        /*
         * The window caught the event if io_poll() saw it, even when the
         * fd monitor reports the fd too (io_uring's POLL_ADD stays armed
         * while we poll), or if polling ended because the fd monitor saw
         * it first (the POLL_ADD completes as the data lands, often before
         * io_poll() looks again).  Anything less lets the odd real miss
         * pile up into a back-off that switches polling off for good: a
         * QD1 client's every request then costs a wake-up.
         */
        bool hit = node->poll_ready ||
                   (fdmon_woke && QLIST_IS_INSERTED(node, node_poll));
        bool p;

        QLIST_REMOVE(node, node_ready);
        p = aio_dispatch_handler(ctx, node);
        n += p;
        progress |= p;

        /* After dispatch, which may have put the node on the polled list. */
        if (block_ns >= 0 && QLIST_IS_INSERTED(node, node_poll)) {
            int64_t event_ns = block_ns;

            if (node_is_notifier(ctx, node) && !hit) {
                adjust_notifier_event_ns(ctx, &event_ns);
            }
            adjust_polling_time(ctx, &node->poll, event_ns, hit, missed);
        }
    }
    if (n) {
        qatomic_set(&ctx->stats.fd_dispatches, ctx->stats.fd_dispatches + n);
    }
    return progress;
}

/* Move every node of ready list @from onto @to. */
static void ready_list_splice(AioHandlerList *to, AioHandlerList *from)
{
    AioHandler *node;

    while ((node = QLIST_FIRST(from))) {
        QLIST_REMOVE(node, node_ready);
        QLIST_INSERT_HEAD(to, node, node_ready);
    }
}

/* The monitor's own completions (io_uring block requests), if any. */
static inline bool fdmon_dispatch(AioContext *ctx)
{
    return !QSIMPLEQ_EMPTY(&ctx->cqe_ready) && ctx->fdmon_ops->dispatch &&
           ctx->fdmon_ops->dispatch(ctx);
}

/*
 * One dispatch pass: BHs, ready fds (the fd monitor asked with a zero
 * timeout, only if @ask_fdmon), timers.  Shared by aio_dispatch() and the
 * outer-loop dispatch (aio_source_dispatch()).
 */
static void aio_dispatch_pass(AioContext *ctx, const char *caller,
                              bool ask_fdmon)
{
    AioHandlerList ready_list = { NULL };
    AioContext *saved = aio_tls_dispatch_ctx;

    aio_context_bind_home(ctx, caller);
    aio_tls_dispatch_ctx = ctx;
    aio_walk_begin(ctx);
    aio_notify_accept(ctx);
    /* Asked after the accept, as QEMU's aio_ctx_check() orders it. */
    ask_fdmon = ask_fdmon || (ctx->fdmon_ops->gsource_check &&
                              ctx->fdmon_ops->gsource_check(ctx));
    fdmon_dispatch(ctx);
    aio_bh_poll(ctx);
    ready_list_splice(&ready_list, &ctx->prepared_ready);
    if (ask_fdmon) {
        ctx->fdmon_ops->wait(ctx, &ready_list, 0);
    }
    if (!QLIST_EMPTY(&ready_list)) {
        aio_dispatch_ready_handlers(ctx, &ready_list, -1, false, false);
    }
    if (ask_fdmon) {
        /* Completions that wait() just reaped (io_uring block requests). */
        fdmon_dispatch(ctx);
    }
    aio_free_deleted_handlers(ctx);
    aio_walk_end(ctx);
    timerlistgroup_run_timers(&ctx->tlg);
    aio_tls_dispatch_ctx = saved;
}

void aio_dispatch(AioContext *ctx)
{
    aio_dispatch_pass(ctx, "aio_dispatch", true);
}

bool aio_prepare(AioContext *ctx)
{
    AioHandlerList ready_list = { NULL };
    bool progress = false;

    aio_context_bind_home(ctx, "aio_prepare");
    aio_walk_begin(ctx);
    /*
     * Leave poll mode (the outer loop will block on the fds) and poll each
     * handler once.  What that finds is kept for the next dispatch: QEMU
     * drops it ("TODO what to do with this list?"), and an event that came
     * while notifications were off then waits for another one.
     */
    poll_set_started(ctx, &ready_list, false, &progress);
    run_poll_handlers_once(ctx, &ready_list, aio_clock_ns(), &progress);
    ready_list_splice(&ctx->prepared_ready, &ready_list);
    aio_walk_end(ctx);
    return !QLIST_EMPTY(&ctx->prepared_ready);
}

int aio_notifier_read(AioContext *ctx, AioHandler *node,
                      AioHandlerList *ready_list)
{
    uint64_t value;
    ssize_t len;

    ctx->notifier_reads++;
    len = read(node->fd, &value, sizeof(value));
    if (len != (ssize_t)sizeof(value)) {
        /* EINTR: a signal ends the wait, as it ends the monitors' own. */
        return len < 0 && errno == EINTR ? 0 : -1;
    }
    __atomic_store_n(&((EventNotifier *)node->opaque)->drained, true,
                     __ATOMIC_RELAXED);
    aio_add_ready_handler(ready_list, node, POLLIN);
    return 1;
}

int aio_notifier_read_alone(AioContext *ctx, AioHandlerList *ready_list)
{
    AioHandler *node;

    if (!ctx->notifier_blocking || qatomic_read(&ctx->n_handlers) != 1) {
        return -1;
    }
    /*
     * The one live handler.  One registered since the count was read is
     * at the head, is not the notifier, and we wait as usual; one
     * registered later ends the read() with its aio_notify().  Pairs
     * with the release store of QLIST_INSERT_HEAD_RCU.
     */
    for (node = __atomic_load_n(&ctx->aio_handlers.lh_first, __ATOMIC_ACQUIRE);
         node && aio_handler_is_deleted(node);
         node = __atomic_load_n(&node->node.le_next, __ATOMIC_ACQUIRE)) {
    }
    if (!node || !node_is_notifier(ctx, node) || !(node->events & POLLIN)) {
        return -1;
    }
    return aio_notifier_read(ctx, node, ready_list);
}

void aio_discard_ready(AioHandlerList *ready_list)
{
    AioHandler *node;

    while ((node = QLIST_FIRST(ready_list))) {
        QLIST_REMOVE(node, node_ready);
        node->revents = 0;
        node->poll_ready = false;
        if (node->kernel_drain) {
            EventNotifier *e = node->opaque;

            /* Only that the counter was non-zero matters, not its value. */
            if (__atomic_exchange_n(&e->drained, false, __ATOMIC_RELAXED)) {
                event_notifier_set(e);
            }
        }
    }
}

bool aio_pending(AioContext *ctx)
{
    AioHandlerList ready_list = { NULL };
    bool result;

    aio_context_bind_home(ctx, "aio_pending");
    if (aio_compute_timeout(ctx) == 0 || !QLIST_EMPTY(&ctx->prepared_ready)) {
        return true;
    }
    aio_walk_begin(ctx);
    result = ctx->fdmon_ops->wait(ctx, &ready_list, 0) > 0;
    /* A question, not a dispatch: what wait() took must stay pending. */
    aio_discard_ready(&ready_list);
    aio_walk_end(ctx);
    return result;
}

/*
 * Phases 2-7 of aio_poll(), inlined twice with @polling a constant: the
 * copy for contexts that do not poll (the plain loop, W1's BH chain) keeps
 * none of the polling state live and tests none of it.
 */
static inline __attribute__((always_inline)) bool
aio_poll_phases(AioContext *ctx, bool blocking, const bool polling,
                AioContext *saved_dispatch)
{
    AioHandlerList ready_list = { NULL };
    bool progress = false;
    bool use_notify_me;
    bool missed = false;
    bool fdmon_woke = false;
    bool poll_hit = false;
    bool io_wait = false;
    int64_t timeout;
    int64_t start = 0;
    int64_t clock = 0; /* the latest clock reading, when polling */
    int64_t block_ns = -1;

    if (polling) {
        start = clock = aio_clock_ns();
    }

    /* Phase 2: how long may we wait? */
    timeout = blocking ? aio_compute_timeout(ctx) : 0;

    /* Phase 3: busy-poll the pollable handlers. */
    if (polling) {
        /* Only a wait we were prepared to make teaches the io_wait window. */
        io_wait = timeout != 0 && ctx->block_stats.inflight != 0;
        poll_hit = try_poll_mode(ctx, &ready_list, &timeout, &progress,
                                 &missed, &fdmon_woke, io_wait, &clock);
    }

    /*
     * Phase 4: announce that we may block.  Write notify_me before reading
     * "notified" and the BH list; pairs with smp_mb() in aio_notify().
     */
    use_notify_me = timeout != 0;
    if (use_notify_me) {
        qatomic_set(&ctx->notify_me, qatomic_read(&ctx->notify_me) + 2);
        smp_mb();
        /* Don't block if aio_notify() was called since the timeout was computed. */
        if (qatomic_read(&ctx->notified)) {
            timeout = 0;
        }
    }

    /* Phase 5: wait for fds (only when needed). */
    if (timeout || ctx->fdmon_ops->need_wait(ctx)) {
        int64_t wait_start = 0;

        /*
         * Leave poll mode only now, just before blocking, so io_poll_end()
         * re-enables notifications that can wake us; one last poll closes
         * the race with an event that arrived meanwhile.
         */
        if (timeout) {
            /* Not &progress: its address would keep it out of a register. */
            bool polled = false;

            if (poll_set_started(ctx, &ready_list, false, &polled)) {
                timeout = 0;
            }
            progress |= polled;
        }
        /*
         * Clock readings cost ~27 ns each here (kvm-clock): with polling on,
         * reuse the last one rather than pay two more per blocking wait
         * than with polling off (blocked_ns is a statistic), and the
         * reading after the wait serves block_ns below.
         */
        if (timeout) {
            wait_start = polling ? clock : aio_clock_ns();
        }
        ctx->fdmon_ops->wait(ctx, &ready_list, timeout);
        if (timeout) {
            clock = aio_clock_ns();
            qatomic_set(&ctx->stats.blocked_ns,
                        ctx->stats.blocked_ns + (clock - wait_start));
        }
    }

    /* Phase 6: done waiting; accept the notification before dispatching. */
    if (use_notify_me) {
        /* Finish the poll before clearing the flag. */
        qatomic_store_release(&ctx->notify_me,
                              qatomic_read(&ctx->notify_me) - 2);
    }
    aio_notify_accept_inline(ctx);
    if (polling) {
        /*
         * After a wait, when it ended; after a poll hit, the last reading
         * of the busy-poll (not a fresh one: the BHs and handlers the hit
         * found run sooner).
         */
        block_ns = clock - start;
        ctx->poll_start_ns = start;
        if (io_wait) {
            /*
             * The threads engine's completions come through aio_notify():
             * judge them by when they were sent, as for the notifier node.
             */
            int64_t event_ns = block_ns;

            if (!poll_hit) {
                adjust_notifier_event_ns(ctx, &event_ns);
            }
            adjust_polling_time(ctx, &ctx->poll_io_wait, event_ns, poll_hit,
                                missed);
        }
    }

    /* Phase 7: dispatch. */
    aio_tls_dispatch_ctx = ctx;
    progress |= fdmon_dispatch(ctx);
    progress |= aio_bh_poll(ctx);
    if (unlikely(!QLIST_EMPTY(&ctx->prepared_ready))) {
        /* aio_prepare() was called since the last dispatch. */
        ready_list_splice(&ready_list, &ctx->prepared_ready);
    }
    if (!QLIST_EMPTY(&ready_list)) {
        progress |= aio_dispatch_ready_handlers(ctx, &ready_list, block_ns,
                                                missed, fdmon_woke);
    }
    aio_free_deleted_handlers(ctx);
    aio_walk_end(ctx);
    if (timerlistgroup_any_pending(&ctx->tlg)) {
        progress |= timerlistgroup_run_timers(&ctx->tlg);
    }
    aio_tls_dispatch_ctx = saved_dispatch;

    qatomic_set(&ctx->stats.iterations, ctx->stats.iterations + 1);
    return progress;
}

bool aio_poll(AioContext *ctx, bool blocking)
{
    AioContext *saved_dispatch;
    unsigned gen;

    aio_context_bind_home(ctx, "aio_poll");

    /*
     * Callbacks that run before we block (io_poll, io_poll_begin/end) must
     * notify normally: the timeout is already computed.  Only the dispatch
     * phase may skip the wake-up (see aio_bh_enqueue()).
     */
    saved_dispatch = aio_tls_dispatch_ctx;
    aio_tls_dispatch_ctx = NULL;

    /* Phase 1: become a walker of the handler list. */
    aio_walk_begin(ctx);
    gen = __atomic_load_n(&ctx->poll_params_gen, __ATOMIC_ACQUIRE);
    if (unlikely(gen != ctx->poll_params_seen)) {
        ctx->poll_params_seen = gen;
        poll_reset_windows(ctx);
    }
    if (qatomic_read(&ctx->poll_max_ns) != 0) {
        return aio_poll_phases(ctx, blocking, true, saved_dispatch);
    }
    return aio_poll_phases(ctx, blocking, false, saved_dispatch);
}

int64_t aioloop_context_get_poll_ns(AioContext *ctx)
{
    AioHandler *node;
    int64_t max_ns = 0;

    /* Home thread (documented), so the list cannot change under us. */
    QLIST_FOREACH(node, &ctx->poll_aio_handlers, node_poll) {
        max_ns = MAX(max_ns, node->poll.ns);
    }
    return max_ns;
}

/* ---- waiting from an outer loop (main loop, GSource) ------------------- */

int64_t aio_source_prepare(AioContext *ctx)
{
    int64_t timeout;

    aio_context_bind_home(ctx, "main_loop_wait/GSource prepare");

    /*
     * Bit 0 of notify_me: from now until check, aio_notify() must write
     * the eventfd because the outer loop may block on it.  Only the home
     * thread writes notify_me, so the plain read-modify-write is safe.
     * Write notify_me before reading "notified" and the BH list; pairs
     * with smp_mb() in aio_notify().
     */
    qatomic_set(&ctx->notify_me, qatomic_read(&ctx->notify_me) | 1);
    smp_mb();

    timeout = aio_compute_timeout(ctx);
    /* Leaves poll mode (io_poll_end) and polls each handler once. */
    if (aio_prepare(ctx)) {
        timeout = 0;
    }
    aio_walk_begin(ctx);
    if (ctx->fdmon_ops->gsource_prepare &&
        ctx->fdmon_ops->gsource_prepare(ctx)) {
        timeout = 0;
    }
    aio_walk_end(ctx);
    /*
     * An aio_notify() made while bit 0 was clear did not write the
     * eventfd; don't sleep through it (as aio_poll() re-reads "notified").
     */
    if (qatomic_read(&ctx->notified)) {
        timeout = 0;
    }
    return timeout;
}

int aio_source_fds(AioContext *ctx, struct pollfd *pfds, int max)
{
    int n;

    aio_walk_begin(ctx);
    n = ctx->fdmon_ops->gsource_fds(ctx, pfds, max);
    aio_walk_end(ctx);
    return n;
}

bool aio_source_check(AioContext *ctx, bool fds_ready)
{
    /*
     * Finish the outer poll before clearing bit 0 (store-release), then
     * accept the notification before looking at BHs, fds and timers, as
     * aio_poll() does after its wait.
     */
    qatomic_store_release(&ctx->notify_me, qatomic_read(&ctx->notify_me) & ~1u);
    aio_notify_accept(ctx);

    if (fds_ready || aio_bh_scheduled(ctx) ||
        !QLIST_EMPTY(&ctx->prepared_ready)) {
        return true;
    }
    if (ctx->fdmon_ops->gsource_check && ctx->fdmon_ops->gsource_check(ctx)) {
        return true;
    }
    return timerlistgroup_deadline_ns(&ctx->tlg) == 0;
}

void aio_source_dispatch(AioContext *ctx, bool fds_ready)
{
    /*
     * aio_dispatch(), except that the fd monitor is asked (with a zero
     * timeout) only when the outer loop saw one of its fds ready or it has
     * completions pending: a BH or a timer alone costs no extra syscall.
     * Readiness is level-triggered, so asking again loses nothing, and the
     * poll backend may upgrade itself to epoll there.
     */
    aio_dispatch_pass(ctx, "main_loop_wait/GSource dispatch", fds_ready);
}
