/*
 * The main loop: QEMU's include/qemu/main-loop.h.
 *
 * qemu_init_main_loop() creates two AioContexts in the calling thread (the
 * "main thread"): qemu_aio_context, returned by qemu_get_aio_context(),
 * and the iohandler context, returned by iohandler_get_aio_context().
 * main_loop_wait() waits for both, plus the signals the main loop traps
 * and the watched child processes.  A nested aio_poll(qemu_get_aio_context())
 * does not run iohandler handlers: that is why the second context exists.
 *
 * The big lock (BQL, "main loop mutex") is an ordinary mutex that
 * main_loop_wait() drops while it blocks when the calling thread holds it.
 *
 * Not provided: qemu_add_wait_object() / qemu_del_wait_object(), which
 * wait for Win32 HANDLEs and exist only on Windows.  docs/main-loop.md
 * documents the design and the differences from QEMU.
 */
#ifndef AIOLOOP_MAIN_LOOP_H
#define AIOLOOP_MAIN_LOOP_H

#include <aioloop/compiler.h>
#include <aioloop/aio.h>
#include <aioloop/error.h>
#include <aioloop/event-notifier.h>
#include <aioloop/timer.h>

#include <stdbool.h>
#include <sys/types.h>

AIOLOOP_BEGIN_DECLS

/**
 * qemu_init_main_loop: set up the main loop in the calling thread
 * @errp: error object
 *
 * Blocks SIGIO, SIGALRM and SIGBUS in the calling thread and reads them from
 * a signalfd in the main loop, which calls the handler installed for them
 * with sigaction() (sa_handler, or sa_sigaction with a siginfo_t filled
 * from the signalfd record) from main_loop_wait().  Call it before any other
 * thread is created, so that threads inherit the blocked mask (a thread
 * that unblocks these signals may receive them asynchronously instead).
 *
 * Creates the main AioContext, makes it the calling thread's current
 * context (qemu_set_current_aio_context()), creates the iohandler context,
 * and installs the main loop's timer list group, so that timer_new_ns() &
 * co. work from then on.  SIGINT, SIGTERM, SIGHUP keep their asynchronous
 * handlers.
 *
 * Thread: the thread that will run main_loop_wait(); call it once per
 * process.
 *
 * Returns: 0, or -errno with @errp set (called twice: -EEXIST; the
 * signalfd or a context could not be created).
 */
AIOLOOP_API int qemu_init_main_loop(Error **errp);

/**
 * main_loop_wait: run one iteration of the main loop
 * @nonblocking: true to only look for events that are ready, false to
 *   suspend until one actually occurs
 *
 * Waits for the fds, bottom halves and timers of the main AioContext and
 * of the iohandler context, for the trapped signals and for watched
 * children, then dispatches what is ready: BHs, fd handlers, then timers,
 * for each context.  Main-loop timers (timer_new_ms() & co.) run here.
 * Registered polling callbacks (qemu_add_polling_cb()) run first.
 *
 * If the calling thread holds the BQL, it is released while the loop
 * blocks and re-taken before any callback runs; callbacks therefore run
 * with the BQL held exactly when the caller held it.
 *
 * Thread: the thread that called qemu_init_main_loop(); aborts with a
 * message before qemu_init_main_loop() or from another thread.
 */
AIOLOOP_API void main_loop_wait(int nonblocking);

/**
 * qemu_get_aio_context: the main AioContext
 *
 * Thread: any.
 *
 * Returns: qemu_aio_context, or NULL before qemu_init_main_loop().
 */
AIOLOOP_API AioContext *qemu_get_aio_context(void);

/**
 * iohandler_get_aio_context: the iohandler AioContext
 *
 * The context of qemu_set_fd_handler() and event_notifier_set_handler():
 * run only by main_loop_wait(), never by aio_poll(qemu_get_aio_context()).
 *
 * Thread: any.
 *
 * Returns: the iohandler context, or NULL before qemu_init_main_loop().
 */
AIOLOOP_API AioContext *iohandler_get_aio_context(void);

/**
 * qemu_notify_event: force main_loop_wait() to look at pending events
 *
 * Like signalling a condition variable: a main_loop_wait() blocked now, or
 * the next one, returns after one iteration.  Rarely needed, because BHs,
 * timers and fd handler changes notify the loop themselves.  A no-op
 * before qemu_init_main_loop().
 *
 * Thread: any; async-signal-safe.
 */
AIOLOOP_API void qemu_notify_event(void);

/**
 * qemu_set_fd_handler: watch an fd from the main loop
 * @fd: the file descriptor (>= 0)
 * @fd_read: level-triggered, called when @fd is readable, or NULL
 * @fd_write: level-triggered, called when @fd is writable, or NULL
 * @opaque: argument of the callbacks
 *
 * Registers @fd in the iohandler context: the callbacks run from
 * main_loop_wait() only.  Both NULL removes the handler.  Callbacks that do
 * not drain @fd are called again at the next iteration.
 *
 * Thread: any (QEMU: with the BQL held).  Aborts with a message before
 * qemu_init_main_loop() or for a negative @fd.
 */
AIOLOOP_API void qemu_set_fd_handler(int fd, IOHandler *fd_read,
                                     IOHandler *fd_write, void *opaque);

/**
 * event_notifier_set_handler: watch an EventNotifier from the main loop
 * @e: the notifier
 * @handler: level-triggered callback, receives @e; NULL removes it
 *
 * As qemu_set_fd_handler(), in the iohandler context.  The handler usually
 * calls event_notifier_test_and_clear(@e).
 *
 * Thread: any.  Aborts with a message before qemu_init_main_loop().
 */
AIOLOOP_API void event_notifier_set_handler(EventNotifier *e,
                                            EventNotifierHandler *handler);

/**
 * qemu_add_child_watch: reap a child process when it exits
 * @pid: a child of this process
 *
 * The main loop calls waitpid() on @pid as soon as it exits (the exit
 * status is discarded) and then drops the watch.  A child that exited
 * before the call is reaped too.  Only watched pids are reaped: other
 * children stay for their owner to wait for.  Uses a pidfd per child where
 * the kernel has pidfd_open() (5.3+), else SIGCHLD through the signalfd.
 *
 * Thread: any.  Aborts with a message before qemu_init_main_loop().
 *
 * Returns: 0 when the watch was added, 1 when @pid was already watched,
 * -EINVAL for @pid <= 0, -ECHILD when @pid is not a child of this process,
 * another -errno when the pidfd cannot be opened.
 */
AIOLOOP_API int qemu_add_child_watch(pid_t pid);

/*
 * The big QEMU lock (BQL), a.k.a. the main loop mutex or iothread mutex.
 * Not recursive: taking it twice in one thread aborts.
 */

/**
 * bql_lock: take the BQL
 *
 * Blocks until the BQL is free.  Must be taken outside every other lock.
 *
 * Thread: any.  Aborts with a message if the calling thread holds it.
 */
AIOLOOP_API void bql_lock(void);

/**
 * bql_unlock: release the BQL
 *
 * Thread: the holder.  Aborts with a message if the calling thread does
 * not hold it.
 */
AIOLOOP_API void bql_unlock(void);

/**
 * bql_locked: does the calling thread hold the BQL?
 *
 * Thread: any; answers for the calling thread only.
 *
 * Returns: true if the calling thread holds the BQL.
 */
AIOLOOP_API bool bql_locked(void);

/**
 * qemu_mutex_lock_iothread: older name of bql_lock()
 *
 * Thread: any; see bql_lock().
 */
AIOLOOP_API void qemu_mutex_lock_iothread(void);

/**
 * qemu_mutex_unlock_iothread: older name of bql_unlock()
 *
 * Thread: the holder; see bql_unlock().
 */
AIOLOOP_API void qemu_mutex_unlock_iothread(void);

/**
 * qemu_mutex_iothread_locked: older name of bql_locked()
 *
 * Returns: true if the calling thread holds the BQL.
 */
AIOLOOP_API bool qemu_mutex_iothread_locked(void);

/*
 * Legacy main-loop helpers.
 */

/**
 * qemu_bh_new_full: allocate a bottom half in the main AioContext
 * @cb: the callback
 * @opaque: its argument
 * @name: a name for error messages (the macros pass the callback's name)
 * @reentrancy_guard: see aio_bh_new_full(), or NULL
 *
 * aio_bh_new_full(qemu_get_aio_context(), ...).  The BH therefore also runs
 * in nested aio_poll(qemu_get_aio_context()) calls.
 *
 * Thread: any.  Aborts with a message before qemu_init_main_loop().
 *
 * Returns: the BH; free it with qemu_bh_delete().
 */
AIOLOOP_API QEMUBH *qemu_bh_new_full(QEMUBHFunc *cb, void *opaque,
                                     const char *name,
                                     MemReentrancyGuard *reentrancy_guard);

#define qemu_bh_new(cb, opaque) \
    qemu_bh_new_full((cb), (opaque), (stringify(cb)), NULL)
#define qemu_bh_new_guarded(cb, opaque, guard) \
    qemu_bh_new_full((cb), (opaque), (stringify(cb)), (guard))

/**
 * qemu_aio_set_fd_handler: aio_set_fd_handler() on the main AioContext
 * @fd: the file descriptor
 * @io_read: read callback or NULL
 * @io_write: write callback or NULL
 * @opaque: argument of the callbacks
 *
 * QEMU 1.x API: unlike qemu_set_fd_handler(), these callbacks also run in
 * aio_poll(qemu_get_aio_context()) and qemu_aio_wait().
 *
 * Thread: any.  Aborts with a message before qemu_init_main_loop().
 */
AIOLOOP_API void qemu_aio_set_fd_handler(int fd, IOHandler *io_read,
                                         IOHandler *io_write, void *opaque);

/**
 * qemu_aio_set_event_notifier: aio_set_event_notifier() on the main context
 * @notifier: the notifier
 * @io_read: callback receiving @notifier, or NULL to remove
 *
 * Thread: any.  Aborts with a message before qemu_init_main_loop().
 */
AIOLOOP_API void qemu_aio_set_event_notifier(EventNotifier *notifier,
                                             EventNotifierHandler *io_read);

/**
 * qemu_aio_wait: aio_poll(qemu_get_aio_context(), true)
 *
 * Thread: the main thread.  Aborts with a message before
 * qemu_init_main_loop().
 *
 * Returns: whether progress was made (see aio_poll()).
 */
AIOLOOP_API bool qemu_aio_wait(void);

/**
 * PollingFunc: a polling callback
 * @opaque: the pointer given to qemu_add_polling_cb()
 *
 * Returns: non-zero to make the current main_loop_wait() not block.
 */
typedef int PollingFunc(void *opaque);

/**
 * qemu_add_polling_cb: call @func at the start of every main_loop_wait()
 * @func: the callback
 * @opaque: its argument
 *
 * A hack (QEMU keeps it for Windows): nothing guarantees when @func runs,
 * since the main loop may block for a long time; a thread that does a
 * blocking wait and calls qemu_notify_event() is better.  If any callback
 * returns non-zero, that main_loop_wait() does not block.  Callbacks run in
 * the main thread, in the order they were added; the same pair may be added
 * more than once.
 *
 * Thread: any.
 *
 * Returns: 0, or -ENOMEM.
 */
AIOLOOP_API int qemu_add_polling_cb(PollingFunc *func, void *opaque);

/**
 * qemu_del_polling_cb: remove a callback added with qemu_add_polling_cb()
 * @func: the callback
 * @opaque: its argument
 *
 * Removes the oldest registration of the (@func, @opaque) pair, as QEMU
 * does (a pair added twice needs two calls); nothing happens if there is
 * none.  May be called from a polling callback.
 *
 * Thread: any.
 */
AIOLOOP_API void qemu_del_polling_cb(PollingFunc *func, void *opaque);

AIOLOOP_END_DECLS

#endif
