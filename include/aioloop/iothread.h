/*
 * IOThread: a thread that runs one AioContext's event loop, with QEMU's API
 * (include/system/iothread.h, and the short forms of QEMU's
 * tests/unit/iothread.h).
 *
 * iothread_create() makes a new AioContext and a thread named "IO <id>"
 * (truncated to the 15 characters Linux allows) that makes it its current
 * context and loops aio_poll(ctx, true) until stopped.  Work reaches the
 * thread through the context: aio_bh_schedule_oneshot(), fd handlers,
 * timers, the context's thread pool.
 *
 * Properties, as QEMU's -object iothread (all int64, all >= 0, changeable
 * at any time from any thread with iothread_set_param(), applied to the
 * running context at once):
 *   poll-max-ns      longest adaptive polling window (default 32768)
 *   poll-grow        window growth factor, 0 = default (default 0)
 *   poll-shrink      window shrink divisor, 0 = default (default 0)
 *   aio-max-batch    maximum requests per batch, 0 = default (default 0)
 *   thread-pool-min  workers kept alive in the context's pool (default 0)
 *   thread-pool-max  maximum workers, > 0 and >= thread-pool-min (default 64)
 *
 * Threads: every function may be called from any thread, except that an
 * IOThread cannot destroy or join itself (that aborts with a message).
 * iothread_stop() from the IOThread's own thread only asks the loop to end
 * after the current callback returns; another thread must then destroy it.
 *
 * Ownership: the caller owns the IOThread until iothread_destroy() (or
 * iothread_join()); the AioContext belongs to the IOThread: take a
 * reference with aio_context_ref() to keep it longer.  Before destroying,
 * let work queued in the context (BHs, thread-pool jobs) finish: the context
 * is freed with the IOThread and lost work aborts, as in QEMU.
 */
#ifndef AIOLOOP_IOTHREAD_H
#define AIOLOOP_IOTHREAD_H

#include <stdbool.h>
#include <stdint.h>

#include <aioloop/compiler.h>
#include <aioloop/error.h>

AIOLOOP_BEGIN_DECLS

typedef struct AioContext AioContext;
typedef struct IOThread IOThread;

/**
 * iothread_create: Create and start an IOThread.
 * @id: unique name; a letter followed by letters, digits, '-', '.' or '_'
 * @errp: set on an invalid or duplicate id, or when the context or the
 *        thread cannot be created
 *
 * Returns when the thread runs its loop, or NULL on error.
 */
AIOLOOP_API IOThread *iothread_create(const char *id, Error **errp);

/**
 * iothread_stop: Stop @iothread's loop and wait for its thread to exit.
 *
 * Synchronous: schedules a BH in the IOThread that ends the loop, then
 * joins the thread.  Called from the IOThread itself it only sets the stop
 * flag and returns (a thread cannot join itself).  Stopping a stopped
 * IOThread does nothing; concurrent calls are safe.  NULL is a no-op.
 */
AIOLOOP_API void iothread_stop(IOThread *iothread);

/**
 * iothread_destroy: Stop @iothread if it runs, then free it and drop its
 * AioContext reference.  NULL is a no-op.  Not from the IOThread itself.
 */
AIOLOOP_API void iothread_destroy(IOThread *iothread);

/**
 * iothread_by_id: The IOThread created with @id, or NULL.
 */
AIOLOOP_API IOThread *iothread_by_id(const char *id);

/**
 * iothread_get_id: @iothread's id (owned by the IOThread; NULL for the
 * anonymous ones made by iothread_new()).
 */
AIOLOOP_API const char *iothread_get_id(IOThread *iothread);

/**
 * iothread_get_aio_context: The context @iothread runs.
 */
AIOLOOP_API AioContext *iothread_get_aio_context(IOThread *iothread);

/**
 * iothread_get_thread_id: Kernel thread id of @iothread's thread (as QEMU's
 * query-iothreads reports it), or -1 once it stopped.
 */
AIOLOOP_API int iothread_get_thread_id(IOThread *iothread);

/**
 * qemu_in_iothread: True when the caller runs in an IOThread's thread.
 *
 * QEMU answers "not in the main loop"; aioloop's main loop is separate
 * from this service, so this answers "in an IOThread", which agrees for
 * the main thread and for IOThreads.
 */
AIOLOOP_API bool qemu_in_iothread(void);

/**
 * iothread_set_param: Set the property @name (see above) to @value and
 * apply it to the running context.
 *
 * Returns: true, or false with @errp set for an unknown name, a negative
 * value, thread-pool-max == 0, thread-pool-min > thread-pool-max, or a
 * thread-pool value above INT_MAX.  Nothing changes on failure.
 */
AIOLOOP_API bool iothread_set_param(IOThread *iothread, const char *name,
                                    int64_t value, Error **errp);

/**
 * iothread_get_param: The current value of property @name, or -1 with
 * @errp set when the name is unknown.
 */
AIOLOOP_API int64_t iothread_get_param(IOThread *iothread, const char *name,
                                       Error **errp);

/**
 * iothread_new: Create an anonymous IOThread (QEMU's test helper form).
 *
 * Aborts with a message if it cannot be created.
 */
AIOLOOP_API IOThread *iothread_new(void);

/**
 * iothread_join: Stop and destroy @iothread (QEMU's test helper form:
 * the same as iothread_destroy()).
 */
AIOLOOP_API void iothread_join(IOThread *iothread);

AIOLOOP_END_DECLS

#endif
