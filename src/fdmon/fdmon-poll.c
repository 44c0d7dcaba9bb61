/*
 * The poll(2) fd monitor: the portable baseline.
 *
 * Every wait rebuilds a pollfd array from the handler list (the array is
 * kept in the context and only ever touched by the home thread before
 * callbacks run).  Registration costs nothing here; the O(n) scan per wait
 * is why the context switches itself to epoll once EPOLL_ENABLE_THRESHOLD
 * fds are watched, unless AIOLOOP_FDMON=poll forced this backend.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "../core/aio-internal.h"

static void fdmon_poll_update(AioContext *ctx, AioHandler *old_node,
                              AioHandler *new_node)
{
    /* Nothing to do: the next wait rebuilds the array from the list. */
    (void)ctx;
    (void)old_node;
    (void)new_node;
}

static bool grow_arrays(AioContext *ctx, int want)
{
    int n = ctx->pollfds_alloc ? ctx->pollfds_alloc : 16;
    struct pollfd *pfds;
    AioHandler **nodes;

    while (n < want) {
        n *= 2;
    }
    pfds = realloc(ctx->pollfds, (size_t)n * sizeof(*pfds));
    if (!pfds) {
        return false;
    }
    ctx->pollfds = pfds;
    nodes = realloc(ctx->pollfd_nodes, (size_t)n * sizeof(*nodes));
    if (!nodes) {
        return false;
    }
    ctx->pollfd_nodes = nodes;
    ctx->pollfds_alloc = n;
    return true;
}

static int fdmon_poll_wait(AioContext *ctx, AioHandlerList *ready_list,
                           int64_t timeout)
{
    struct timespec ts;
    AioHandler *node;
    int npfd = 0;
    int ret;

    if (!ctx->fdmon_forced &&
        qatomic_read(&ctx->n_handlers) >= EPOLL_ENABLE_THRESHOLD &&
        fdmon_epoll_try_upgrade(ctx, qatomic_read(&ctx->n_handlers))) {
        return ctx->fdmon_ops->wait(ctx, ready_list, timeout);
    }
    if (timeout < 0 && (ret = aio_notifier_read_alone(ctx, ready_list)) >= 0) {
        return ret;
    }

    /* Pairs with the release store of QLIST_INSERT_HEAD_RCU. */
    for (node = __atomic_load_n(&ctx->aio_handlers.lh_first, __ATOMIC_ACQUIRE);
         node; node = __atomic_load_n(&node->node.le_next, __ATOMIC_ACQUIRE)) {
        if (aio_handler_is_deleted(node) || !node->events) {
            continue;
        }
        if (npfd == ctx->pollfds_alloc && !grow_arrays(ctx, npfd + 1)) {
            return -ENOMEM;
        }
        ctx->pollfds[npfd] = (struct pollfd){ .fd = node->fd,
                                              .events = node->events };
        ctx->pollfd_nodes[npfd] = node;
        npfd++;
    }

    if (timeout >= 0) {
        ts.tv_sec = timeout / 1000000000LL;
        ts.tv_nsec = timeout % 1000000000LL;
    }
    ret = ppoll(ctx->pollfds, (nfds_t)npfd, timeout >= 0 ? &ts : NULL, NULL);
    if (ret < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    if (ret > 0) {
        for (int i = 0; i < npfd; i++) {
            int revents = ctx->pollfds[i].revents;

            if (revents) {
                aio_add_ready_handler(ready_list, ctx->pollfd_nodes[i], revents);
            }
        }
    }
    return ret;
}

int fdmon_poll_gsource_fds(AioContext *ctx, struct pollfd *pfds, int max)
{
    AioHandler *node;
    int n = 0;

    /*
     * No upgrade to epoll here: the outer loop's dispatch runs wait(), which
     * upgrades when not nested, as in aio_poll().
     */
    for (node = __atomic_load_n(&ctx->aio_handlers.lh_first, __ATOMIC_ACQUIRE);
         node; node = __atomic_load_n(&node->node.le_next, __ATOMIC_ACQUIRE)) {
        if (aio_handler_is_deleted(node) || !node->events) {
            continue;
        }
        if (n < max) {
            pfds[n] = (struct pollfd){ .fd = node->fd, .events = node->events };
        }
        n++;
    }
    return n;
}

const FDMonOps fdmon_poll_ops = {
    .name = "poll",
    .update = fdmon_poll_update,
    .wait = fdmon_poll_wait,
    .need_wait = aio_poll_disabled,
    .gsource_fds = fdmon_poll_gsource_fds,
};
