/*
 * Coroutine socket I/O for the NBD server (channel.h).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"

static void chan_read_ready(void *opaque);
static void chan_write_ready(void *opaque);

/*
 * Adaptive polling's check: is there something to read?  With it, a
 * context that polls (an IOThread's poll-max-ns) catches the next request
 * while spinning instead of sleeping and being woken, which costs ~30 us
 * on a VM (../shared/PERFORMANCE-NOTES.md).  A peek is a system call, but
 * only made while the context spins anyway; end-of-stream counts as
 * readable so the reader sees it.
 */
static bool chan_read_poll(void *opaque)
{
    NBDChannel *c = opaque;
    char byte;

    return recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
}

static void chan_update_handlers(NBDChannel *c)
{
    aio_set_fd_handler(c->ctx, c->fd,
                       c->read_handler ? chan_read_ready : NULL,
                       c->write_handler ? chan_write_ready : NULL,
                       c->read_handler ? chan_read_poll : NULL,
                       c->read_handler ? chan_read_ready : NULL, c);
}

static void chan_read_ready(void *opaque)
{
    NBDChannel *c = opaque;
    Coroutine *co = c->read_co;

    if (!co) {
        /* Nobody waits: stop watching until somebody does. */
        c->read_handler = false;
        chan_update_handlers(c);
        return;
    }
    c->read_co = NULL;
    aio_co_wake(co);
}

static void chan_write_ready(void *opaque)
{
    NBDChannel *c = opaque;
    Coroutine *co = c->write_co;

    /* Writes rarely block: no point keeping POLLOUT watched. */
    c->write_handler = false;
    chan_update_handlers(c);
    if (co) {
        c->write_co = NULL;
        aio_co_wake(co);
    }
}

void chan_init(NBDChannel *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->rbuf = malloc(CHAN_RBUF_SIZE);
    if (!c->rbuf) {
        abort();
    }
}

void chan_detach(NBDChannel *c)
{
    assert(!c->read_co && !c->write_co);
    if (c->read_handler || c->write_handler) {
        c->read_handler = c->write_handler = false;
        aio_set_fd_handler(c->ctx, c->fd, NULL, NULL, NULL, NULL, NULL);
    }
    c->ctx = NULL;
}

void chan_unwatch_read(NBDChannel *c)
{
    assert(!c->read_co);
    if (c->read_handler) {
        c->read_handler = false;
        chan_update_handlers(c);
    }
}

void chan_destroy(NBDChannel *c)
{
    chan_detach(c);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    free(c->rbuf);
    c->rbuf = NULL;
}

/* Install the handler for one direction in the current context. */
static void chan_watch(NBDChannel *c, bool write)
{
    AioContext *ctx = qemu_get_current_aio_context();

    if (!c->read_handler && !c->write_handler) {
        c->ctx = ctx;
    }
    assert(c->ctx == ctx);
    if (write ? c->write_handler : c->read_handler) {
        return;
    }
    if (write) {
        c->write_handler = true;
    } else {
        c->read_handler = true;
    }
    chan_update_handlers(c);
}

static int coroutine_fn chan_wait_readable(NBDChannel *c)
{
    chan_watch(c, false);
    c->read_co = qemu_coroutine_self();
    qemu_coroutine_yield();
    if (c->interrupted) {
        c->interrupted = false;
        return -EINTR;
    }
    return 0;
}

void chan_interrupt(NBDChannel *c)
{
    Coroutine *co = c->read_co;

    if (co) {
        c->read_co = NULL;
        c->interrupted = true;
        aio_co_schedule(c->ctx, co);
    }
}

void chan_shutdown(NBDChannel *c)
{
    Coroutine *co = c->write_co;

    shutdown(c->fd, SHUT_RDWR);
    /*
     * A full socket whose peer does not read may never report POLLOUT,
     * even shut down: retry the send now, it fails at once.
     */
    if (co) {
        c->write_co = NULL;
        aio_co_schedule(c->ctx, co);
    }
}

/* One recv() into @buf; 0 on data, -EAGAIN, -EPIPE, -errno. */
static ssize_t chan_recv(NBDChannel *c, void *buf, size_t len)
{
    ssize_t n;

    if (c->eof) {
        return -EPIPE;
    }
    do {
        n = recv(c->fd, buf, len, 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
        c->eof = true;
        return -EPIPE;
    }
    return n < 0 ? -errno : n;
}

int coroutine_fn chan_fill(NBDChannel *c)
{
    for (;;) {
        ssize_t n;

        if (chan_buffered(c)) {
            return 0;
        }
        c->rpos = c->rend = 0;
        /*
         * The last recv() left room in the buffer: the socket was empty
         * then, and most likely still is.  Wait for readable first and save
         * the recv() that would say EAGAIN (one per request at QD1); the
         * handler is level-triggered, so data that came meanwhile wakes us
         * at once.
         */
        if (c->drained) {
            c->drained = false;
            n = chan_wait_readable(c);
            if (n < 0) {
                return (int)n;
            }
        }
        n = chan_recv(c, c->rbuf, CHAN_RBUF_SIZE);
        if (n > 0) {
            c->rend = (size_t)n;
            c->drained = n < CHAN_RBUF_SIZE;
            return 0;
        }
        if (n != -EAGAIN) {
            return (int)n;
        }
        n = chan_wait_readable(c);
        if (n < 0) {
            return (int)n;
        }
    }
}

int coroutine_fn chan_read(NBDChannel *c, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        size_t have = chan_buffered(c);
        ssize_t n;

        if (have) {
            size_t take = have < len ? have : len;

            memcpy(p, c->rbuf + c->rpos, take);
            c->rpos += take;
            p += take;
            len -= take;
            continue;
        }
        if (len < CHAN_RBUF_SIZE / 2) {
            /* Small: through the buffer, taking what follows too. */
            n = chan_fill(c);
            if (n == -EINTR) {
                continue;       /* part way through: finish the message */
            }
            if (n < 0) {
                return (int)n;
            }
            continue;
        }
        /* Large payload: straight into the caller's buffer. */
        n = chan_recv(c, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n == -EAGAIN) {
            chan_wait_readable(c);  /* -EINTR: keep going, as above */
        } else {
            return (int)n;
        }
    }
    return 0;
}

int coroutine_fn chan_writev(NBDChannel *c, struct iovec *iov, int niov)
{
    while (niov > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)niov };
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                return -errno;
            }
            chan_watch(c, true);
            c->write_co = qemu_coroutine_self();
            qemu_coroutine_yield();
            continue;
        }
        while (niov > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            niov--;
        }
        if (niov > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

int coroutine_fn chan_write(NBDChannel *c, const void *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

    return chan_writev(c, &iov, 1);
}
