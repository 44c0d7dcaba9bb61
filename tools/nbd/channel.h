/*
 * A non-blocking socket read and written from coroutines, as QEMU's
 * QIOChannel with qio_channel_yield(): an operation that would block
 * installs an fd handler in the channel's AioContext and yields until the
 * socket is ready.
 *
 * Reads are buffered: one recv() takes whatever the client has sent, so a
 * pipelined client's request headers cost one system call for many.  The
 * read handler is removed lazily (when it fires with nobody waiting), which
 * saves two fd-monitor updates per request while requests keep coming.
 *
 * A channel belongs to one AioContext at a time; chan_detach() in that
 * context's thread removes its handlers so it can move to another.
 */
#ifndef AIOLOOP_NBD_CHANNEL_H
#define AIOLOOP_NBD_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include <aioloop/aioloop.h>

#define CHAN_RBUF_SIZE (64 * 1024)

typedef struct NBDChannel {
    int fd;
    AioContext *ctx;          /* where the handlers are installed */
    Coroutine *read_co;       /* waiting for readable */
    Coroutine *write_co;      /* waiting for writable */
    bool read_handler;        /* installed in ctx */
    bool write_handler;
    bool interrupted;         /* chan_interrupt() woke the reader */
    bool eof;
    bool drained;             /* the last recv() did not fill its buffer */
    uint8_t *rbuf;
    size_t rpos, rend;        /* unread bytes are rbuf[rpos, rend) */
} NBDChannel;

/* @fd must be a connected, non-blocking socket; the channel owns it. */
void chan_init(NBDChannel *c, int fd);
void chan_destroy(NBDChannel *c);

/* Remove the handlers from c->ctx.  Home thread of c->ctx, no waiter. */
void chan_detach(NBDChannel *c);

/* Stop watching for readable (no reader may be waiting).  Home thread. */
void chan_unwatch_read(NBDChannel *c);

/* Bytes received and not consumed yet. */
static inline size_t chan_buffered(const NBDChannel *c)
{
    return c->rend - c->rpos;
}

/*
 * Read exactly @len bytes.  Returns 0, -EPIPE at end of stream (even part
 * way), or -errno.
 */
int coroutine_fn chan_read(NBDChannel *c, void *buf, size_t len);

/*
 * Wait until at least one byte is buffered.  Returns 0, -EPIPE at end of
 * stream, -EINTR if chan_interrupt() woke us, or -errno.
 */
int coroutine_fn chan_fill(NBDChannel *c);

/*
 * Wake a reader waiting in chan_fill()/chan_read() with -EINTR (the
 * caller decides whether to retry).  Runs in c->ctx's thread; the reader
 * is scheduled, not entered, so the caller may hold locks the reader takes.
 */
void chan_interrupt(NBDChannel *c);

/*
 * Shut the socket down (both ways) and wake a writer waiting for room,
 * which then fails with -EPIPE; a reader sees end of stream by itself.
 * Runs in c->ctx's thread; the writer is scheduled, not entered.
 */
void chan_shutdown(NBDChannel *c);

/* True if a reader is waiting for data with nothing buffered. */
static inline bool chan_reader_idle(const NBDChannel *c)
{
    return c->read_co && chan_buffered(c) == 0;
}

/* Write all of @iov (which is consumed).  Returns 0 or -errno. */
int coroutine_fn chan_writev(NBDChannel *c, struct iovec *iov, int niov);
int coroutine_fn chan_write(NBDChannel *c, const void *buf, size_t len);

#endif /* AIOLOOP_NBD_CHANNEL_H */
