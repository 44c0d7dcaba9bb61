/*
 * EventNotifier on eventfd, with a pipe fallback.
 */
#define _GNU_SOURCE

#include <aioloop/event-notifier.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "aio-internal.h"

/* Lets the test suite run the pipe code on kernels that have eventfd. */
static bool eventfd_disabled(void)
{
    const char *v = getenv("AIOLOOP_EVENTFD");

    return v && strcmp(v, "0") == 0;
}

static bool is_eventfd(const EventNotifier *e)
{
    return e->rfd == e->wfd;
}

int event_notifier_init(EventNotifier *e, int active)
{
    int fds[2];
    int fd = -1;
    int ret;

    if (!e) {
        return -EINVAL;
    }
    e->rfd = -1;
    e->wfd = -1;
    e->initialized = false;

    if (!eventfd_disabled()) {
        fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
    if (fd >= 0) {
        fds[0] = fds[1] = fd;
    } else if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        /*
         * Whatever made eventfd fail (most likely the fd limit) made the
         * pipe fail too; the pipe's errno is the one that describes the
         * state we ended in.
         */
        return -errno;
    }

    e->rfd = fds[0];
    e->wfd = fds[1];
    e->initialized = true;
    e->drained = false;
    if (active) {
        ret = event_notifier_set(e);
        if (ret < 0) {
            event_notifier_cleanup(e);
            return ret;
        }
    }
    return 0;
}

void event_notifier_init_fd(EventNotifier *e, int fd)
{
    if (!e) {
        return;
    }
    e->rfd = fd;
    e->wfd = fd;
    e->initialized = true;
    e->drained = false;
}

void event_notifier_cleanup(EventNotifier *e)
{
    if (!e || !e->initialized) {
        return;
    }
    /*
     * No retry on EINTR: on Linux the fd is released even when close()
     * reports EINTR, and a retry could close an fd another thread just got.
     */
    if (e->rfd != e->wfd) {
        close(e->rfd);
    }
    close(e->wfd);
    e->rfd = -1;
    e->wfd = -1;
    e->initialized = false;
}

int event_notifier_get_fd(const EventNotifier *e)
{
    if (!e) {
        return -EINVAL;
    }
    return e->initialized ? e->rfd : -1;
}

int event_notifier_get_wfd(const EventNotifier *e)
{
    if (!e) {
        return -EINVAL;
    }
    return e->initialized ? e->wfd : -1;
}

int event_notifier_set(EventNotifier *e)
{
    static const uint64_t one = 1;
    const void *buf;
    size_t len;
    ssize_t ret;

    if (!e) {
        return -EINVAL;
    }
    if (!e->initialized) {
        return -EBADF;
    }

    /*
     * eventfd only accepts 8-byte writes.  For a pipe one byte suffices:
     * writes this small are atomic, and fewer bytes per set means the
     * pipe holds more sets before EAGAIN (which is harmless anyway).
     */
    if (is_eventfd(e)) {
        buf = &one;
        len = sizeof(one);
    } else {
        buf = "";
        len = 1;
    }

    do {
        ret = write(e->wfd, buf, len);
    } while (ret < 0 && errno == EINTR);

    /* EAGAIN: the fd is full, so an event is pending and a reader will run. */
    if (ret < 0 && errno != EAGAIN) {
        return -errno;
    }
    return 0;
}

static int test_and_clear(EventNotifier *e, bool nowait)
{
    char buf[512];
    bool pending = false;
    ssize_t len;

    if (!e || !e->initialized) {
        return 0;
    }

    if (__atomic_load_n(&e->drained, __ATOMIC_RELAXED)) {
        /* The io_uring fd monitor's READ emptied the counter already. */
        __atomic_store_n(&e->drained, false, __ATOMIC_RELAXED);
        return 1;
    }
    if (is_eventfd(e)) {
        /* One read returns the whole counter and resets it to zero. */
        uint64_t value;
        struct iovec iov = { &value, sizeof(value) };

        do {
            len = nowait ? preadv2(e->rfd, &iov, 1, -1, RWF_NOWAIT)
                         : read(e->rfd, &value, sizeof(value));
        } while (len < 0 && errno == EINTR);
        return len > 0;
    }

    /*
     * A pipe read returns what is available up to the buffer size, so a
     * short read means the pipe was empty at that instant: stop there
     * rather than pay for one more read that would only return EAGAIN.  A
     * set racing with this loop either gets drained or stays pending for
     * the next poll, so no wake-up is lost.
     */
    for (;;) {
        len = read(e->rfd, buf, sizeof(buf));
        if (len < 0 && errno == EINTR) {
            continue;
        }
        if (len > 0) {
            pending = true;
        }
        if (len != (ssize_t)sizeof(buf)) {
            break;
        }
    }
    return pending;
}

int event_notifier_test_and_clear(EventNotifier *e)
{
    return test_and_clear(e, false);
}

int event_notifier_test_and_clear_nowait(EventNotifier *e)
{
    return test_and_clear(e, true);
}

bool event_notifier_make_blocking(EventNotifier *e)
{
    uint64_t value;
    struct iovec iov = { &value, sizeof(value) };
    int flags;

    if (!e || !e->initialized || !is_eventfd(e)) {
        return false;
    }
    /*
     * Only if a read can still be made non-blocking one at a time: on an
     * empty counter, RWF_NOWAIT must give EAGAIN (kernels whose eventfd
     * lacks FMODE_NOWAIT refuse the flag with EOPNOTSUPP).  A set racing
     * with the probe makes it read the counter: put the event back.
     */
    if (preadv2(e->rfd, &iov, 1, -1, RWF_NOWAIT) == (ssize_t)sizeof(value)) {
        event_notifier_set(e);
    } else if (errno != EAGAIN) {
        return false;
    }
    flags = fcntl(e->rfd, F_GETFL);
    return flags >= 0 && fcntl(e->rfd, F_SETFL, flags & ~O_NONBLOCK) == 0;
}
