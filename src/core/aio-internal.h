/*
 * AioContext internals shared by the core and the fd monitors.
 *
 * Nothing here is exported.  Locking and threading rules for each field are
 * stated next to it; docs/design.md tells the whole story.
 */
#ifndef AIOLOOP_AIO_INTERNAL_H
#define AIOLOOP_AIO_INTERNAL_H

#include <aioloop/aio.h>
#include <aioloop/block-io.h>

#include <poll.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdint.h>

#include "../util/atomic.h"
#include "../util/queue.h"

typedef QLIST_HEAD(AioHandlerList, AioHandler) AioHandlerList;
typedef QSLIST_HEAD(AioHandlerSList, AioHandler) AioHandlerSList;

/* Per-handler adaptive polling state (home thread only). */
typedef struct AioPolledState {
    int64_t ns;          /* current polling window, 0 = not polling */
    unsigned misses;     /* consecutive windows spent without an event */
    unsigned backoff;    /* dispatches left before polling may grow again */
    unsigned backoff_shift;
} AioPolledState;

struct AioHandler {
    int fd;
    short events;        /* POLLIN|POLLHUP|POLLERR and/or POLLOUT|POLLERR */
    short revents;       /* filled by fdmon->wait(), home thread only */
    IOHandler *io_read;
    IOHandler *io_write;
    AioPollFn *io_poll;
    IOHandler *io_poll_ready;
    IOHandler *io_poll_begin;
    IOHandler *io_poll_end;
    void *opaque;
    bool poll_ready;     /* io_poll() succeeded in this iteration */
    /*
     * Set under list_mutex when the handler is removed or replaced; read
     * (atomically) by the home thread before every callback so a removed
     * handler is never called again, not even later in the same iteration.
     */
    bool deleted;
    /*
     * Set by fdmon->update() when the monitor itself will hand the node back
     * with aio_handler_release() once the kernel no longer references it
     * (io_uring: after its POLL_ADD request completed).
     */
    bool fdmon_owned;
    /*
     * Registered by aio_set_event_notifier_drained(): @opaque is the
     * EventNotifier, whose eventfd the io_uring monitor may drain itself
     * (drained flag).  Never for the user's notifiers: their handlers are
     * level-triggered, called again while the eventfd stays set.
     */
    bool kernel_drain;
    AioPolledState poll;
    int64_t poll_idle_deadline;

    QLIST_ENTRY(AioHandler) node;         /* ctx->aio_handlers (list_mutex) */
    QLIST_ENTRY(AioHandler) node_ready;   /* a ready list, home thread */
    QLIST_ENTRY(AioHandler) node_deleted; /* ctx->deleted_aio_handlers */
    QLIST_ENTRY(AioHandler) node_poll;    /* ctx->poll_aio_handlers */

    /* fd monitor private state. */
    QSLIST_ENTRY(AioHandler) node_submitted; /* io_uring submit list */
    unsigned fdmon_flags;                    /* atomic, io_uring */
    int pfd_index;                           /* poll: index in pollfd array */
    /*
     * io_uring: links a removed node whose POLL_ADD is still in flight on
     * the backend's list of such nodes (home thread; see fdmon-io_uring.c).
     */
    QLIST_ENTRY(AioHandler) node_fdmon;
};

/*
 * File descriptor monitor operations (one table per backend).
 *
 * The contract, member by member:
 */
typedef struct FDMonOps {
    const char *name;
    /*
     * update: @old_node is the handler being replaced or removed (NULL when
     * @new_node->fd is new), @new_node the replacement (NULL on removal).
     * Called with ctx->list_mutex held, from any thread.  A backend
     * whose kernel object still references @old_node after this call sets
     * old_node->fdmon_owned and later passes it to aio_handler_release().
     */
    void (*update)(AioContext *ctx, AioHandler *old_node, AioHandler *new_node);
    /*
     * wait: wait up to @timeout ns (-1 = forever, 0 = don't block) and add
     * ready handlers with aio_add_ready_handler().  Home thread only, called
     * inside a walk (ctx->walking > 0).  Returns the number of ready
     * handlers or -errno.
     */
    int (*wait)(AioContext *ctx, AioHandlerList *ready_list, int64_t timeout);
    /*
     * need_wait: true when ->wait() should be called even though userspace
     * polling could go on (events already known to be ready, or handlers
     * that cannot be polled from userspace).
     */
    bool (*need_wait)(AioContext *ctx);
    /*
     * flush (optional): hand queued registrations to the kernel without
     * waiting, adding any handler found ready (as wait() would) to
     * @ready_list; returns how many.  Called before busy-polling, so that
     * pending registrations alone don't make need_wait() end the polling.
     * Home thread, inside a walk.
     */
    int (*flush)(AioContext *ctx, AioHandlerList *ready_list);
    /*
     * dispatch (optional): run backend-level completions (io_uring CQE
     * handlers), queued on ctx->cqe_ready; called only when that queue is
     * not empty.  Returns true on progress.  Home thread.
     */
    bool (*dispatch)(AioContext *ctx);
    /*
     * destroy (optional): release the backend's kernel objects and hand
     * back every node it still owns with aio_handler_release().  Handlers
     * stay registered in ctx->aio_handlers.  Called WITHOUT list_mutex,
     * with no aio_poll() running on ctx, from the thread
     * tearing the backend down; the caller then sets ctx->fdmon_ops to
     * &fdmon_poll_ops.
     */
    void (*destroy)(AioContext *ctx);
    /*
     * The next three let an outer loop (main_loop_wait(), the GSource) wait
     * for the context instead of aio_poll(); see aio_source_prepare().
     *
     * gsource_prepare (optional): called just before the outer loop polls
     * the fds from gsource_fds.  Bring the kernel's view up to date (io_uring:
     * submit the queued POLL_ADD/POLL_REMOVE requests).  Returns true when
     * events are already known to be pending, so the outer loop must not
     * block.  Home thread, inside a walk.
     */
    bool (*gsource_prepare)(AioContext *ctx);
    /*
     * gsource_fds: store up to @max pollfds (fd and events) that become
     * ready whenever a handler of @ctx may be ready: the epoll fd, the ring
     * fd, or (poll) every handler's own fd.  Returns how many are needed,
     * which may be more than @max (the caller grows the array and asks
     * again).  Home thread, inside a walk.
     */
    int (*gsource_fds)(AioContext *ctx, struct pollfd *pfds, int max);
    /*
     * gsource_check (optional): true if events are pending that the
     * revents of the gsource_fds do not show (io_uring: CQEs already in the
     * ring, requests not submitted yet; epoll: a broken set).  Home thread.
     */
    bool (*gsource_check)(AioContext *ctx);
} FDMonOps;

/* Bits of the io_uring backend's per-handler fdmon_flags. */
enum {
    FDMON_IO_URING_PENDING = 1u << 0,
    FDMON_IO_URING_ADD = 1u << 1,
    FDMON_IO_URING_REMOVE = 1u << 2,
};

/*
 * A request on an io_uring that wants its completion as a callback: its
 * user_data is the handler's address | UDATA_CQE_HANDLER.  The reaper
 * copies the result in and queues the handler on ctx->cqe_ready; the
 * dispatch phase runs it (never the reaper: it may enter a coroutine).
 */
typedef struct CqeHandler CqeHandler;
struct CqeHandler {
    void (*cb)(CqeHandler *handler);
    int32_t res;
    uint32_t cqe_flags;
    QSIMPLEQ_ENTRY(CqeHandler) next;
};
/* Tag in the low bits of user_data (handlers are 8-byte aligned). */
#define UDATA_TAG_MASK 7u
#define UDATA_CQE_HANDLER 3u

/*
 * Run the CqeHandlers on ctx->cqe_ready, one at a time (a callback may
 * run a nested aio_poll(), which then goes on with the rest).  Returns
 * true if any ran.  Home thread.
 */
bool aio_run_cqe_handlers(AioContext *ctx);

typedef struct BHListSlice BHListSlice;
typedef QSLIST_HEAD(BHList, QEMUBH) BHList;
struct BHListSlice {
    BHList bh_list;        /* taken from ctx->bh_local (local_next) */
    BHList bh_list_remote; /* taken from ctx->bh_list */
    QSIMPLEQ_ENTRY(BHListSlice) next;
};

typedef struct AioFdTable {
    AioHandler **nodes; /* indexed by fd: the live handler, or NULL */
    int size;
} AioFdTable;

/* aio_context_new() allocates the context with this alignment. */
#define AIO_CACHELINE 64
#define AIO_CACHELINE_ALIGNED __attribute__((aligned(AIO_CACHELINE)))

struct AioContext {
    unsigned refcnt; /* atomic */

    /* Legacy aio_context_acquire/release lock (recursive). */
    pthread_mutex_t lock;

    /*
     * Kernel thread id of the thread that runs aio_poll(), 0 while unbound.
     * Bound by the first aio_poll() or by qemu_set_current_aio_context();
     * atomic because other threads read it.
     */
    int home_tid;

    /* Handlers, and the fd -> live handler table; both under list_mutex. */
    AioHandlerList aio_handlers;
    AioHandlerList deleted_aio_handlers;
    AioFdTable fd_table;
    int n_handlers;        /* live handlers (list_mutex) */
    /*
     * notifier's eventfd is blocking (event_notifier_make_blocking()): a
     * wait that nothing but aio_notify() can end may be a plain read() of
     * it (aio_notifier_read()).
     */
    bool notifier_blocking;
    uint64_t notifier_reads; /* waits that were such a read(); home thread */

    /*
     * What another thread touches to hand us work (aio_bh_enqueue(),
     * aio_notify()) shares one cache line, and nothing the home thread
     * writes on every iteration does: a cross-thread message then moves
     * one line to the sender and back, not two.  (W2 split CPUs with
     * polling: 1.88-1.93 -> 1.70-1.76 us per round trip, medians of 12
     * runs.)
     *
     * notify_me: bits 1-31 count aio_poll() calls that may block (+2 each),
     * bit 0 is reserved for the GSource.  Written by the home thread, read
     * by any thread in aio_notify().  See docs/design.md, "notify protocol",
     * and tests/model/aio-notify.pml.
     */
    unsigned notify_me AIO_CACHELINE_ALIGNED;
    bool notified;         /* atomic */
    EventNotifier notifier;
    /* CLOCK_MONOTONIC ns of the last aio_notify() that wrote the eventfd. */
    int64_t notify_ts;
    BHList bh_list;                               /* atomic push/move */

    /*
     * Handler lifetime.  Only the home thread walks the handler lists
     * without list_mutex (aio_poll and friends), so the walker count is a
     * plain home-thread counter, not an atomic one: the loop pays no
     * atomic operation for it.  Writers hold list_mutex.  A removed node
     * is freed at once only by the home thread while it is not walking;
     * any other thread leaves it on deleted_aio_handlers (still linked, with
     * ->deleted set) for the home thread to free when its outermost walk
     * ends, or for finalize.  Other threads never unlink, so a walk under
     * list_mutex (fdmon setup/teardown) is safe from any thread.
     */
    pthread_mutex_t list_mutex AIO_CACHELINE_ALIGNED;
    unsigned walking; /* home thread only */

    /*
     * BHs scheduled by this context's own callbacks while it dispatches,
     * linked by local_next: home thread only, plain pushes, and their
     * state in bh->local rather than in the atomic flags (async.c).
     */
    BHList bh_local;
    QSIMPLEQ_HEAD(, BHListSlice) bh_slice_list;   /* home thread */
    /* Every BH that is not one-shot, to report leaks at finalize. */
    pthread_mutex_t bh_all_lock;
    QLIST_HEAD(, QEMUBH) bh_all;

    int64_t thread_pool_min;
    int64_t thread_pool_max;
    /* Created on first use (CAS), freed at finalize; thread-pool.c. */
    struct ThreadPool *thread_pool;

    QEMUTimerListGroup tlg;

    /* Number of live handlers without io_poll (list_mutex). */
    int poll_disable_cnt;

    /*
     * Polling parameters: written by any thread, a stale read is harmless.
     * poll_params_gen changes on every aio_context_set_poll_params(); the
     * home thread then resets the per-handler windows it alone writes.
     */
    unsigned poll_params_gen;
    unsigned poll_params_seen; /* home thread */
    /*
     * The window for waits with block requests in flight (home thread):
     * the handlers' own windows say how soon *their* next event comes, not
     * how long the disk takes (see try_poll_mode()).
     */
    AioPolledState poll_io_wait;
    int64_t poll_start_ns;     /* start of the current aio_poll(), home thread */
    int64_t poll_max_ns;
    int64_t poll_grow;
    int64_t poll_shrink;
    int64_t aio_max_batch;

    AioHandlerList poll_aio_handlers; /* home thread (see design.md) */
    bool poll_started;                /* home thread */
    /* Idle time after which a handler leaves the polled list; 0: 7 s. */
    int64_t poll_idle_ns;             /* home thread; tests shorten it */
    /*
     * Handlers aio_prepare()'s last poll found ready (home thread): the
     * next dispatch runs them.  Dropping them spun a GSource: prepare said
     * "ready" on every iteration and nothing ever ran the handler.
     */
    AioHandlerList prepared_ready;

    const FDMonOps *fdmon_ops;
    /* True when AIOLOOP_FDMON named the backend: no silent fallback. */
    bool fdmon_forced;

    /* poll backend: pollfd array rebuilt per wait (home thread). */
    struct pollfd *pollfds;
    AioHandler **pollfd_nodes;
    int pollfds_alloc;

    /* epoll backend. */
    int epollfd;
    bool epoll_enabled;
    /*
     * epoll refused an fd (EPERM for a regular file, ENOSPC, ...): stay on
     * poll, no automatic upgrade.  Atomic; written under list_mutex.
     */
    bool epoll_failed;

    /* io_uring backend: opaque state owned by fdmon-io_uring.c. */
    void *fdmon_io_uring;
    AioHandlerSList submit_list; /* atomic push, home thread pops */

    AioloopContextStats stats; /* home thread writes, relaxed */

    /*
     * aio_co_schedule(): coroutines to enter here, pushed lock-free by any
     * thread, taken whole by co_schedule_bh (src/core/async-co.c).
     */
    QSLIST_HEAD(, Coroutine) scheduled_coroutines;
    QEMUBH *co_schedule_bh;
    /* The GSource of aio_get_g_source() (weak; src/glib/aio-gsource.c). */
    void *gsource;

    /*
     * Block I/O (src/block/).  The states are created once (CAS, any
     * thread) and freed at finalize; the engine pointer and the counters
     * belong to the home thread (counters read relaxed by stats).
     */
    struct LinuxAioState *linux_aio;
    struct LuringState *linux_io_uring;
    const struct BlockEngineOps *block_engine;
    AioloopBlockStats block_stats;
    /*
     * io_uring completions for CqeHandlers (block requests on the fd
     * monitor's ring, or on the block engine's own ring), waiting for the
     * dispatch phase.  Home thread.
     */
    QSIMPLEQ_HEAD(, CqeHandler) cqe_ready;
};

/*
 * initial-exec: the library is loaded at start-up, not dlopen()ed late, so
 * TLS is reached without a __tls_get_addr call on the hot path.
 */
#define AIOLOOP_TLS __thread __attribute__((tls_model("initial-exec")))

/* async.c */
/* This thread's kernel tid once known, else 0 (async.c). */
extern AIOLOOP_TLS int aio_tls_tid;
void aio_context_bind_home_slow(AioContext *ctx, const char *caller);

/*
 * Bind @ctx to the calling thread, or abort if another thread owns it.
 * Inline: every aio_poll() starts with it.
 */
static inline void aio_context_bind_home(AioContext *ctx, const char *caller)
{
    int me = aio_tls_tid;

    if (likely(me && __atomic_load_n(&ctx->home_tid, __ATOMIC_RELAXED) == me)) {
        return;
    }
    aio_context_bind_home_slow(ctx, caller);
}
/* True in @ctx's home thread (bound by aio_context_bind_home()). */
bool aio_context_is_home(AioContext *ctx);
/* The context dispatching callbacks in this thread (see aio_bh_enqueue). */
extern AIOLOOP_TLS AioContext *aio_tls_dispatch_ctx;
/*
 * qemu_get_current_aio_context()'s variable, for the library's hot callers
 * (qemu_coroutine_enter()), which then read it without a call.
 */
extern AIOLOOP_TLS AioContext *aio_tls_current_ctx;

/* Home-thread walks of the handler lists (see AioContext.walking). */
static inline void aio_walk_begin(AioContext *ctx)
{
    ctx->walking++;
}

static inline void aio_walk_end(AioContext *ctx)
{
    ctx->walking--;
}

/* aio_notify_accept(), for aio_poll() without a call. */
static inline void aio_notify_accept_inline(AioContext *ctx)
{
    /*
     * Clear "notified" before looking at BHs, fds and timers.  Skipping the
     * store and barrier when it is already clear is safe: a concurrent
     * aio_notify() then leaves it set, and the next aio_poll() will not
     * block (a false positive, which the protocol allows).
     */
    if (qatomic_read(&ctx->notified)) {
        qatomic_set(&ctx->notified, false);
        /* Pairs with smp_wmb() in aio_notify(). */
        smp_mb();
    }
}

/* async-co.c: the BH that enters scheduled_coroutines in FIFO order. */
void co_schedule_bh_cb(void *opaque);
/*
 * Waiting for a context from an outer loop (main_loop_wait(), the GSource),
 * after QEMU's aio_ctx_prepare/check/dispatch.  One iteration, home thread:
 *
 *   timeout = aio_source_prepare(ctx);        notify_me bit 0 set
 *   n = aio_source_fds(ctx, pfds, max);       fds to poll
 *   ... the outer loop polls them (and others) for up to timeout ns ...
 *   if (aio_source_check(ctx, any_revents))   notify_me bit 0 cleared
 *       aio_source_dispatch(ctx, any_revents);
 *
 * A prepare not followed by check only costs extra eventfd writes until the
 * next check (bit 0 stays set); check may be called more than once.  The
 * context never busy-polls this way: adaptive polling is aio_poll()'s.
 */
int64_t aio_source_prepare(AioContext *ctx);
int aio_source_fds(AioContext *ctx, struct pollfd *pfds, int max);
bool aio_source_check(AioContext *ctx, bool fds_ready);
void aio_source_dispatch(AioContext *ctx, bool fds_ready);

/* async.c: true if a BH (idle ones included) is scheduled. */
bool aio_bh_scheduled(AioContext *ctx);

/*
 * src/block/block-io.c: run @ctx's loop until no block request is in
 * flight (returns whether anything ran), and free the engines' state.
 */
bool aio_block_drain(AioContext *ctx);
void aio_block_cleanup(AioContext *ctx);

/* aio-posix.c */
void aio_add_ready_handler(AioHandlerList *ready_list, AioHandler *node,
                           int revents);
/*
 * Forget a ready list that nobody will dispatch.  The handlers are
 * level-triggered and their fds report them again, except a kernel-drained
 * notifier (io_uring) whose eventfd is empty now: its event is put back.
 */
void aio_discard_ready(AioHandlerList *ready_list);
/*
 * Make @e's eventfd blocking, for a thread that waits on it with read(),
 * provided single reads can still be made non-blocking (RWF_NOWAIT):
 * every other read of it must then be event_notifier_test_and_clear_nowait().
 * False, and @e unchanged, if not (a pipe, an old kernel).
 */
bool event_notifier_make_blocking(EventNotifier *e);
/* event_notifier_test_and_clear(), non-blocking on a blocking eventfd. */
int event_notifier_test_and_clear_nowait(EventNotifier *e);
/*
 * Wait for aio_notify() with a blocking read() of the context's eventfd,
 * @node being its notifier's handler: the cheapest wake-up Linux offers,
 * one system call as with any other wait, and less kernel work (W2).  The
 * read empties the counter, so the handler is told that it is drained.
 * Only when nothing but aio_notify() can end the wait: no timeout, and no
 * other handler or request the kernel could report meanwhile; whatever
 * another thread changes during the read() it announces with
 * aio_notify(), whose write ends it.  Returns 1 (the notifier is on
 * @ready_list), 0 (a signal), or -1 (the read failed: wait otherwise).
 */
int aio_notifier_read(AioContext *ctx, AioHandler *node,
                      AioHandlerList *ready_list);
/*
 * For the poll and epoll monitors: if @ctx's own notifier is its only
 * handler, wait with aio_notifier_read(), else return -1.  No timeout.
 */
int aio_notifier_read_alone(AioContext *ctx, AioHandlerList *ready_list);
/*
 * aio_set_event_notifier() for the library's own notifiers (the context's,
 * linux-aio's), whose handler starts with event_notifier_test_and_clear()
 * and reads the eventfd for nothing else: the io_uring monitor may then
 * have the kernel read it as it wakes us, saving a read() per wake-up.
 */
void aio_set_event_notifier_drained(AioContext *ctx, EventNotifier *notifier,
                                    EventNotifierHandler *io_read,
                                    AioPollFn *io_poll,
                                    EventNotifierHandler *io_poll_ready);
/*
 * Hand back a node whose fdmon_owned was set: it is freed now if nobody walks
 * the handler list, else at the end of the outermost aio_poll().  Takes
 * list_mutex itself, so call it without holding that mutex.
 */
void aio_handler_release(AioContext *ctx, AioHandler *node);
bool aio_handler_is_deleted(const AioHandler *node);
bool aio_poll_disabled(AioContext *ctx);
void aio_handlers_cleanup(AioContext *ctx);
int64_t aio_clock_ns(void);

/* fdmon-poll.c */
extern const FDMonOps fdmon_poll_ops;
/* The live handlers' fds and events (gsource_fds of poll). */
int fdmon_poll_gsource_fds(AioContext *ctx, struct pollfd *pfds, int max);

/* fdmon-epoll.c */
/* Switch from poll to epoll; returns false (and stays on poll) on failure. */
bool fdmon_epoll_try_upgrade(AioContext *ctx, int npfd);
/* Create the epoll fd and register every handler; 0 or -errno. */
int fdmon_epoll_setup(AioContext *ctx);
void fdmon_epoll_disable(AioContext *ctx);
extern const FDMonOps fdmon_epoll_ops;

/* fdmon-io_uring.c: 0 or -errno (e.g. -EPERM, -ENOSYS). */
int fdmon_io_uring_setup(AioContext *ctx);
/*
 * Block requests on the fd monitor's ring (src/block/io_uring.c).  While
 * ctx->fdmon_ops is &fdmon_io_uring_ops, in the home thread:
 * fdmon_io_uring_get_sqe() returns a free SQE of the monitor's ring
 * (submitting what the SQ holds if it is full, so a request is never
 * dropped), and fdmon_io_uring_sqe_queued() marks it as @handler's; the
 * SQE goes to the kernel with the next wait() or flush(), or at once when
 * @max_batch block SQEs are queued.  Completions run handler->cb from the
 * dispatch phase.  aio_context_destroy() waits for the requests in flight
 * and runs their handlers before it closes the ring.
 */
struct io_uring_sqe;
struct io_uring_sqe *fdmon_io_uring_get_sqe(AioContext *ctx);
void fdmon_io_uring_sqe_queued(AioContext *ctx, struct io_uring_sqe *sqe,
                               CqeHandler *handler, unsigned max_batch);
extern const FDMonOps fdmon_io_uring_ops;
/*
 * For tests: how many blocking waits of the io_uring monitor submitted
 * their block requests alone first, to learn whether they complete inline.
 */
uint64_t fdmon_io_uring_probes(AioContext *ctx);

/* Freed BHs a thread keeps for its next ones (async.c), at most. */
#define BH_CACHE_MAX 64
/* For tests: how many it keeps now. */
unsigned aio_bh_cache_len(void);

/* Threshold at which the poll backend upgrades itself to epoll. */
#define EPOLL_ENABLE_THRESHOLD 64

#endif
