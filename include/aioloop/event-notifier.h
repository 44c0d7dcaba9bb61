/*
 * EventNotifier: a level-triggered, coalescing wake-up flag backed by a file
 * descriptor, with QEMU's API (include/qemu/event_notifier.h).
 *
 * One side calls event_notifier_set(); the other waits for the read fd
 * (event_notifier_get_fd()) to become readable in poll/epoll/io_uring and
 * then calls event_notifier_test_and_clear().  Any number of sets between
 * two clears collapse into one event.  The backing object is an eventfd
 * (one fd, rfd == wfd) or, when eventfd is unavailable or the environment
 * variable AIOLOOP_EVENTFD is "0", a non-blocking pipe (rfd != wfd).  Both
 * fds are non-blocking and close-on-exec.
 *
 * Threads: set and test_and_clear may run concurrently from any threads,
 * and both are async-signal-safe (each is a read(2) or write(2)).  A set
 * that completes before a test_and_clear starts is always seen by it; the
 * kernel's locking of the fd gives the ordering, so data written before
 * event_notifier_set() is visible to the thread whose test_and_clear (or
 * poll) observes the event.  Init and cleanup must not race with any other
 * call on the same notifier.
 *
 * Ownership: the caller owns the EventNotifier storage (usually embedded in
 * a larger object); the notifier owns its fds from a successful init until
 * cleanup.
 */
#ifndef AIOLOOP_EVENT_NOTIFIER_H
#define AIOLOOP_EVENT_NOTIFIER_H

#include <stdbool.h>

#include <aioloop/compiler.h>

AIOLOOP_BEGIN_DECLS

/*
 * Public so that users can embed it.  Treat the fields as read-only and go
 * through the accessors.  A zero-filled EventNotifier is "not initialized":
 * cleanup on it is a no-op.
 */
typedef struct EventNotifier {
    int rfd;            /* read side; the fd to poll */
    int wfd;            /* write side; equals rfd for eventfd */
    bool initialized;
    /*
     * Set by the io_uring fd monitor when the kernel already read the
     * eventfd for us (a POLL_ADD linked to a READ): the next
     * event_notifier_test_and_clear() returns true without a read().
     */
    bool drained;
} EventNotifier;

typedef void EventNotifierHandler(EventNotifier *);

/**
 * event_notifier_init:
 * @e: storage for the notifier; its previous contents are ignored
 * @active: non-zero to create the notifier already set
 *
 * Open an eventfd with EFD_NONBLOCK|EFD_CLOEXEC; if that fails, or if the
 * environment variable AIOLOOP_EVENTFD is "0" (for testing the fallback),
 * open a pipe with O_NONBLOCK|O_CLOEXEC instead.  Any thread.
 *
 * Must not be called on a notifier that is still initialized: its fds would
 * leak.
 *
 * Returns: 0 on success.  On failure a negative errno (-EINVAL if @e is
 * NULL; -EMFILE, -ENFILE, -ENOMEM from the kernel), no fd is left open, and
 * @e is left not initialized (rfd = wfd = -1), so event_notifier_cleanup()
 * on it is harmless.
 */
AIOLOOP_API int event_notifier_init(EventNotifier *e, int active);

/**
 * event_notifier_init_fd:
 * @e: storage for the notifier
 * @fd: an eventfd (or anything with eventfd read/write semantics) to use
 *      for both reading and writing
 *
 * Wrap an existing fd, for example one received from another process.
 * Ownership of @fd passes to @e: event_notifier_cleanup() closes it.  The
 * fd should be non-blocking; a blocking fd makes test_and_clear block when
 * nothing is pending.  Does nothing if @e is NULL.  Any thread.
 */
AIOLOOP_API void event_notifier_init_fd(EventNotifier *e, int fd);

/**
 * event_notifier_cleanup:
 * @e: a notifier, or NULL
 *
 * Close the notifier's fds (one fd for eventfd, two for a pipe) and mark it
 * not initialized.  Idempotent: a second call, a call on a zero-filled
 * notifier or on one whose init failed, does nothing.  Remove the fd from
 * every poll set before calling this; no other call on @e may run
 * concurrently.
 */
AIOLOOP_API void event_notifier_cleanup(EventNotifier *e);

/**
 * event_notifier_get_fd:
 * @e: a notifier
 *
 * Returns: the fd to watch for readability (POLLIN), owned by @e; -1 if @e
 * is not initialized, -EINVAL if @e is NULL.  Any thread.
 */
AIOLOOP_API int event_notifier_get_fd(const EventNotifier *e);

/**
 * event_notifier_get_wfd:
 * @e: a notifier
 *
 * Returns: the fd that event_notifier_set() writes to, owned by @e (the
 * same as event_notifier_get_fd() for an eventfd); -1 if @e is not
 * initialized, -EINVAL if @e is NULL.  Any thread.
 */
AIOLOOP_API int event_notifier_get_wfd(const EventNotifier *e);

/**
 * event_notifier_set:
 * @e: an initialized notifier
 *
 * Make the notifier pending: write an 8-byte 1 to the eventfd or one byte
 * to the pipe.  A full pipe (or saturated eventfd counter) means an event
 * is already pending, so EAGAIN counts as success; EINTR is retried.  Any
 * thread, and from signal handlers.
 *
 * Returns: 0 on success; -EINVAL if @e is NULL, -EBADF if it is not
 * initialized, or the negative errno of the failed write.
 */
AIOLOOP_API int event_notifier_set(EventNotifier *e);

/**
 * event_notifier_test_and_clear:
 * @e: an initialized notifier
 *
 * Consume every pending set: one 8-byte read for an eventfd (which resets
 * its counter), 512-byte reads for a pipe until it is empty.  Sets that
 * happen after the drain stay pending.  Usually called by the thread that
 * polls the fd, after poll reported it readable, but any thread may call
 * it; async-signal-safe.
 *
 * Returns: 1 if anything was pending, 0 if not (also when @e is NULL or not
 * initialized).
 */
AIOLOOP_API int event_notifier_test_and_clear(EventNotifier *e);

AIOLOOP_END_DECLS

#endif
