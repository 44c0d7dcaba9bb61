/*
 * The epoll(7) fd monitor.
 *
 * Design:
 * - The epoll set mirrors the live handlers: update() turns each change
 *   into one epoll_ctl() (ADD, MOD or DEL) right away, with data.ptr naming
 *   the node, level-triggered.  Handlers with no events (only io_poll) are
 *   left out of the set, as the poll backend leaves them out of its array.
 * - A node pointer reported by epoll_wait() is always safe to follow: a
 *   node leaves the set (DEL, or MOD to its replacement) under list_mutex
 *   before it is retired, and a retired node is freed only once no
 *   aio_poll() walks the list, and wait() runs inside aio_poll().
 * - Contexts start on poll (registration is free there) and the poll
 *   backend calls fdmon_epoll_try_upgrade() once EPOLL_ENABLE_THRESHOLD
 *   fds are watched, as QEMU does.
 * - Some fds cannot be in an epoll set (regular files and directories:
 *   EPERM) although poll(2) handles them.  When epoll_ctl() fails, update()
 *   (any thread) only clears epoll_enabled: the home thread may be blocked
 *   in epoll_wait() on the set right now, so closing the fd or switching
 *   backends under it would race.  The home thread's next wait() sees the
 *   flag, switches the context to poll and closes the epoll fd (under
 *   list_mutex, so no update() uses the fd meanwhile), and the
 *   handler keeps working.  Such a failure also sets epoll_failed so the
 *   context does not upgrade again and fail again at every wait; a failed
 *   DEL does not (it happens when a handler's fd was closed before the
 *   handler was removed: the set is rebuilt from scratch, dropping the
 *   stale registration, at the next upgrade).
 * - Waits keep nanosecond timeouts: epoll_pwait2() where the kernel has it
 *   (5.11+), else ppoll() on the epoll fd followed by a non-blocking
 *   epoll_wait(), as QEMU did before epoll_pwait2 existed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/time_types.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../core/aio-internal.h"
#include "../util/sanitizer.h"

/*
 * Events fetched per wait.  More ready fds stay queued in the kernel and,
 * being level-triggered, are reported by the next wait.
 */
#define EPOLL_BATCH 128

#define NS_PER_SEC 1000000000LL

/* epoll_pwait2() returned ENOSYS (or EPERM from a seccomp filter). Atomic. */
static bool epoll_pwait2_missing;

static uint32_t epoll_events_from_pfd(int pfd_events)
{
    return (pfd_events & POLLIN ? EPOLLIN : 0) |
           (pfd_events & POLLPRI ? EPOLLPRI : 0) |
           (pfd_events & POLLOUT ? EPOLLOUT : 0) |
           (pfd_events & POLLRDHUP ? EPOLLRDHUP : 0) |
           (pfd_events & POLLERR ? EPOLLERR : 0) |
           (pfd_events & POLLHUP ? EPOLLHUP : 0);
}

static int pfd_events_from_epoll(uint32_t events)
{
    return (events & EPOLLIN ? POLLIN : 0) |
           (events & EPOLLPRI ? POLLPRI : 0) |
           (events & EPOLLOUT ? POLLOUT : 0) |
           (events & EPOLLRDHUP ? POLLRDHUP : 0) |
           (events & EPOLLERR ? POLLERR : 0) |
           (events & EPOLLHUP ? POLLHUP : 0);
}

void fdmon_epoll_disable(AioContext *ctx)
{
    if (ctx->epollfd >= 0) {
        close(ctx->epollfd);
        ctx->epollfd = -1;
    }
    qatomic_set(&ctx->epoll_enabled, false);
    if (ctx->fdmon_ops == &fdmon_epoll_ops) {
        qatomic_set(&ctx->fdmon_ops, &fdmon_poll_ops);
    }
}

/*
 * The set no longer mirrors the handler list.  Any thread, list_mutex
 * held; see the comment at the top for why nothing else happens here.
 * The caller of update() calls aio_notify() next, which wakes a home thread
 * blocked in epoll_wait() (the notifier's eventfd is still in the set).
 */
static void epoll_mark_broken(AioContext *ctx, bool no_retry)
{
    if (no_retry) {
        qatomic_set(&ctx->epoll_failed, true);
    }
    qatomic_set(&ctx->epoll_enabled, false);
}

static void fdmon_epoll_update(AioContext *ctx, AioHandler *old_node,
                               AioHandler *new_node)
{
    bool old_in = old_node && old_node->events;
    bool new_in = new_node && new_node->events;
    struct epoll_event event = { 0 };
    int op;

    if (!qatomic_read(&ctx->epoll_enabled)) {
        /* Broken set: the home thread is about to switch to poll. */
        return;
    }
    if (new_in) {
        op = old_in ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        event.events = epoll_events_from_pfd(new_node->events);
        event.data.ptr = new_node;
    } else if (old_in) {
        op = EPOLL_CTL_DEL;
    } else {
        return;
    }
    if (epoll_ctl(ctx->epollfd, op, new_in ? new_node->fd : old_node->fd,
                  &event) < 0) {
        epoll_mark_broken(ctx, op != EPOLL_CTL_DEL);
    }
}

/* Switch to poll from the home thread; see epoll_mark_broken(). */
static int epoll_fall_back_to_poll(AioContext *ctx, AioHandlerList *ready_list,
                                   int64_t timeout)
{
    pthread_mutex_lock(&ctx->list_mutex);
    if (!qatomic_read(&ctx->epoll_enabled) &&
        ctx->fdmon_ops == &fdmon_epoll_ops) {
        fdmon_epoll_disable(ctx);
    }
    pthread_mutex_unlock(&ctx->list_mutex);
    return ctx->fdmon_ops->wait(ctx, ready_list, timeout);
}

/* A positive timeout with nanosecond resolution. */
static int epoll_wait_ns(int epfd, struct epoll_event *events, int64_t timeout)
{
    struct pollfd pfd = { .fd = epfd, .events = POLLIN };
    struct timespec ts = {
        .tv_sec = timeout / NS_PER_SEC,
        .tv_nsec = timeout % NS_PER_SEC,
    };
    int ret;

#ifdef __NR_epoll_pwait2
    if (!qatomic_read(&epoll_pwait2_missing)) {
        /* The raw syscall: glibc has a wrapper only since 2.35. */
        struct __kernel_timespec kts = {
            .tv_sec = ts.tv_sec,
            .tv_nsec = ts.tv_nsec,
        };

        ret = (int)syscall(__NR_epoll_pwait2, epfd, events, EPOLL_BATCH, &kts,
                           NULL, 0);
        if (ret >= 0 || (errno != ENOSYS && errno != EPERM)) {
            return ret;
        }
        qatomic_set(&epoll_pwait2_missing, true);
    }
#endif
    /* The epoll fd is readable while any fd in the set is ready. */
    ret = ppoll(&pfd, 1, &ts, NULL);
    if (ret <= 0) {
        return ret;
    }
    return epoll_wait(epfd, events, EPOLL_BATCH, 0);
}

static int fdmon_epoll_wait(AioContext *ctx, AioHandlerList *ready_list,
                            int64_t timeout)
{
    struct epoll_event events[EPOLL_BATCH];
    int count = 0;
    int ret;

    if (unlikely(!qatomic_read(&ctx->epoll_enabled))) {
        return epoll_fall_back_to_poll(ctx, ready_list, timeout);
    }
    if (timeout < 0 && (ret = aio_notifier_read_alone(ctx, ready_list)) >= 0) {
        return ret;
    }

    if (timeout > 0) {
        ret = epoll_wait_ns(ctx->epollfd, events, timeout);
    } else {
        ret = epoll_wait(ctx->epollfd, events, EPOLL_BATCH,
                         timeout < 0 ? -1 : 0);
    }
    if (ret < 0) {
        return errno == EINTR ? 0 : -errno;
    }
#ifdef AIOLOOP_TSAN
    /*
     * The node pointers came through the kernel, which orders them after
     * the epoll_ctl() that registered them; TSan cannot see that edge.  The
     * registering thread held list_mutex around epoll_ctl(), so
     * taking it once gives TSan the same happens-before.
     */
    if (ret > 0) {
        pthread_mutex_lock(&ctx->list_mutex);
        pthread_mutex_unlock(&ctx->list_mutex);
    }
#endif
    for (int i = 0; i < ret; i++) {
        AioHandler *node = events[i].data.ptr;

        /* Replaced or removed since the kernel reported it. */
        if (aio_handler_is_deleted(node)) {
            continue;
        }
        aio_add_ready_handler(ready_list, node,
                              pfd_events_from_epoll(events[i].events));
        count++;
    }
    return count;
}

static bool fdmon_epoll_need_wait(AioContext *ctx)
{
    /* A broken set needs wait() to switch to poll. */
    return aio_poll_disabled(ctx) || !qatomic_read(&ctx->epoll_enabled);
}

/* list_mutex held (or @ctx not shared yet), no epoll_wait() running. */
static int epoll_setup_locked(AioContext *ctx)
{
    AioHandler *node;
    int epfd;

    if (ctx->fdmon_ops == &fdmon_epoll_ops &&
        qatomic_read(&ctx->epoll_enabled)) {
        return 0;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        return -errno;
    }
    QLIST_FOREACH(node, &ctx->aio_handlers, node) {
        struct epoll_event event = {
            .events = epoll_events_from_pfd(node->events),
            .data.ptr = node,
        };

        if (aio_handler_is_deleted(node) || !node->events) {
            continue;
        }
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, node->fd, &event) < 0) {
            int ret = -errno;

            close(epfd);
            return ret;
        }
    }
    /* A set left over from an earlier epoll period may hold stale nodes. */
    if (ctx->epollfd >= 0) {
        close(ctx->epollfd);
    }
    ctx->epollfd = epfd;
    qatomic_set(&ctx->epoll_enabled, true);
    qatomic_set(&ctx->fdmon_ops, &fdmon_epoll_ops);
    return 0;
}

int fdmon_epoll_setup(AioContext *ctx)
{
    int ret;

    pthread_mutex_lock(&ctx->list_mutex);
    ret = epoll_setup_locked(ctx);
    pthread_mutex_unlock(&ctx->list_mutex);
    return ret;
}

bool fdmon_epoll_try_upgrade(AioContext *ctx, int npfd)
{
    bool ok;

    if (npfd < EPOLL_ENABLE_THRESHOLD || ctx->fdmon_forced ||
        qatomic_read(&ctx->epoll_failed)) {
        return false;
    }
    /*
     * Only the outermost aio_poll() may switch: with the count at zero and
     * the mutex held, nobody walks or changes the list while it is copied
     * into the epoll set, and no parent iteration holds a ready list built
     * by the poll backend.  Nested: stay on poll, try again later.
     */
    if (ctx->walking != 1) {
        return false;
    }
    pthread_mutex_lock(&ctx->list_mutex);
    ok = epoll_setup_locked(ctx) == 0;
    if (!ok) {
        /* An fd epoll refuses: don't pay for a failed attempt every wait. */
        qatomic_set(&ctx->epoll_failed, true);
    }
    pthread_mutex_unlock(&ctx->list_mutex);
    return ok;
}

static void fdmon_epoll_destroy(AioContext *ctx)
{
    /* The mutex keeps a concurrent update() off the fd being closed. */
    pthread_mutex_lock(&ctx->list_mutex);
    fdmon_epoll_disable(ctx);
    pthread_mutex_unlock(&ctx->list_mutex);
}

/*
 * A broken set (see epoll_mark_broken()) is not to be waited on: prepare
 * and check both say "dispatch now", and the dispatch's wait() switches the
 * context to poll.
 */
static bool fdmon_epoll_gsource_broken(AioContext *ctx)
{
    return !qatomic_read(&ctx->epoll_enabled);
}

static int fdmon_epoll_gsource_fds(AioContext *ctx, struct pollfd *pfds,
                                   int max)
{
    /* The epoll fd is readable while any fd in the set is ready. */
    if (!qatomic_read(&ctx->epoll_enabled) || ctx->epollfd < 0) {
        return fdmon_poll_gsource_fds(ctx, pfds, max);
    }
    if (max >= 1) {
        pfds[0] = (struct pollfd){ .fd = ctx->epollfd, .events = POLLIN };
    }
    return 1;
}

const FDMonOps fdmon_epoll_ops = {
    .name = "epoll",
    .update = fdmon_epoll_update,
    .wait = fdmon_epoll_wait,
    .need_wait = fdmon_epoll_need_wait,
    .destroy = fdmon_epoll_destroy,
    .gsource_prepare = fdmon_epoll_gsource_broken,
    .gsource_fds = fdmon_epoll_gsource_fds,
    .gsource_check = fdmon_epoll_gsource_broken,
};
