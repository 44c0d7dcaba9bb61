/*
 * The io_uring fd monitor (liburing).
 *
 * Design, after QEMU's util/fdmon-io_uring.c:
 *
 * - Each watched handler has one one-shot IORING_OP_POLL_ADD in flight,
 *   with user_data = the node.  Its completion reports the node ready and
 *   queues a new POLL_ADD, which the kernel evaluates when it is submitted
 *   (after the handlers ran), so readiness is level-triggered like poll(2).
 *
 * - update() runs in any thread under list_mutex and never touches the
 *   ring: it only flags the node (FDMON_IO_URING_ADD for a new node,
 *   FDMON_IO_URING_REMOVE for a retired one) and pushes it on
 *   ctx->submit_list with a lock-free push.  FDMON_IO_URING_PENDING says
 *   "on the submit list": whoever sets it links the node, and the home
 *   thread clears it only after unlinking the node, so a node is on the
 *   list at most once and no flag set meanwhile is lost.  Registration is
 *   O(1) and costs no syscall; the home thread turns the list into SQEs at
 *   the start of each wait(), and one io_uring_enter() then submits them
 *   all and waits, with the timeout passed as a timespec (IORING_ENTER_
 *   EXT_ARG; liburing falls back to a TIMEOUT SQE on kernels before 5.11).
 *
 * - Ownership of retired nodes.  Only the home thread knows whether the
 *   kernel still holds a POLL_ADD naming a node, so update() marks every
 *   retired node fdmon_owned and the home thread hands it back with
 *   aio_handler_release() once no completion can name it any more:
 *   . not armed (never submitted, or its last completion already came):
 *     released when the REMOVE is processed;
 *   . armed: a POLL_REMOVE is queued, the node waits on s->zombies, and
 *     the POLL_ADD's final completion (-ECANCELED, or an event that raced
 *     with the removal) releases it.  The POLL_REMOVE's own completion
 *     carries a tag, not a node: nothing follows a pointer from it.
 *   Two home-thread bits of fdmon_flags track this: ARMED (a POLL_ADD
 *   naming the node is queued or in flight) and REMOVED (the REMOVE was
 *   processed).  A node is released exactly when it is REMOVED and not
 *   ARMED, by whichever of the two events comes second.
 *
 * - Tags: nodes are malloc()ed, so their low 3 bits are zero; user_data
 *   with any of them set names no node (our POLL_REMOVE, liburing's own
 *   TIMEOUT, which uses ~0).
 *
 * - Full rings.  The SQ has 128 entries; when it is full while the submit
 *   list is turned into SQEs, the SQEs are submitted and filling goes on.
 *   Re-arms queued while completions are being processed never submit
 *   (which could complete more polls while we are still reaping, without
 *   bound, with fds that stay ready): if the SQ is full they go back on
 *   the submit list and wait() does not block until it is empty.  The CQ
 *   is 4 times the SQ (IORING_SETUP_CQSIZE); when more completions arrive
 *   than it holds (hundreds of handlers removed at once: two completions
 *   each), the kernel keeps the rest on its overflow list
 *   (IORING_FEAT_NODROP, required) and sets IORING_SQ_CQ_OVERFLOW: the
 *   reaper drains the CQ, asks the kernel to flush the overflow list into
 *   it, and repeats until the flag clears.  Older kernels refuse
 *   submissions with -EBUSY while completions are in overflow: we reap and
 *   retry.  Nothing is dropped and nothing waits for a later wake-up.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/aio-internal.h"
#include "../core/thread-pool-internal.h"

#define SQ_ENTRIES 128
/*
 * The kernel sizes its poll-cancel hash from the CQ size: with a small CQ,
 * each POLL_REMOVE walks ~N/16 entries (unregistering 10,000 fds cost
 * 4.9 us each).  8192 CQEs give the largest hash (and cost 128 KiB).
 */
#define CQ_ENTRIES 8192

#define NS_PER_SEC 1000000000LL

/* Home-thread bits of fdmon_flags, next to the shared ones (bits 0-2). */
enum {
    FDMON_IO_URING_ARMED = 1u << 8,
    FDMON_IO_URING_REMOVED = 1u << 9,
    /* The armed request is the notifier's POLL_ADD -> READ chain. */
    FDMON_IO_URING_READ = 1u << 10,
};

/*
 * user_data values that carry no node (see the tags above); the tag mask
 * and UDATA_CQE_HANDLER (a CqeHandler's address | 3) are in aio-internal.h.
 */
#define UDATA_POLL_REMOVE 1u
/* node | UDATA_LINKED_POLL: the POLL_ADD in front of the notifier's READ. */
#define UDATA_LINKED_POLL 2u

typedef struct FDMonIoUring {
    struct io_uring ring;
    /*
     * Retired nodes whose POLL_ADD has not completed yet (REMOVED|ARMED),
     * linked by node_fdmon.  Home thread; destroy() releases what is left.
     */
    AioHandlerList zombies;
    /* Where the notifier's READ puts the eventfd counter (discarded). */
    uint64_t notifier_buf;
    bool cqe_skip; /* IORING_FEAT_CQE_SKIP */
    bool coop_taskrun; /* IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG */
    /*
     * The kernel's SQ flags that mean "enter the kernel before blocking is
     * decided": a CQ overflow, and pending task work with coop_taskrun.
     * One load answers both on the hot path.
     */
    unsigned kflags_wait;
    /*
     * The context's own notifier, when its last READ completed and it was
     * not re-armed (ctx->notifier_blocking only): wait() either reads the
     * eventfd itself or arms it again first, see read_notifier().
     */
    AioHandler *notifier_idle;
    /*
     * Block requests (CqeHandlers): queued in the SQ since the last
     * submit, and submitted but not completed.  Home thread.
     */
    unsigned block_queued;
    unsigned block_inflight;
    /*
     * The last blocking wait() went to sleep with block requests in flight
     * and none of its own submissions completed inline: the device, not
     * this thread, is what the loop waits for.  Until a wait() finds
     * something ready or a submission completes inline, small block
     * requests go to the kernel DEVICE_BATCH at a time (unless
     * aio_max_batch is set).  Home thread.
     */
    bool device_bound;
    /*
     * Below DEVICE_BATCH requests in flight, waits left before the next
     * one probes (see wait()); and how many probes were made, for tests.
     * Home thread.
     */
    unsigned probe_countdown;
    uint64_t probes;
} FDMonIoUring;

/*
 * Block requests queued while the loop is device-bound go out this many at
 * a time instead of all at the end of the iteration.  The completions of
 * one wait are handled in a row, and each resubmission then waits for the
 * whole row: at QD32 on a virtio disk that kept the device idle for the
 * ~100 us of CPU the row takes, and cost 15-20% of fio's IOPS.  Batches of
 * 2, 4 or 8 all recover it (1 does not: a system call per request); 4 is
 * the middle of that plateau.  A CPU-bound loop (page cache, completions
 * ready whenever it looks) keeps one submission per iteration: small
 * batches cost it 25-35% in system calls.
 */
#define DEVICE_BATCH 4

/*
 * With fewer than DEVICE_BATCH block requests in flight, only one blocking
 * wait in this many probes with a submission of its own (see wait()).
 */
#define LOW_QD_PROBE_EVERY 16

static inline FDMonIoUring *state(AioContext *ctx)
{
    return ctx->fdmon_io_uring;
}

/*
 * With COOP_TASKRUN a completion that arrives while we run in user space
 * (busy-polling) waits as task work until we enter the kernel, instead of
 * an IPI that interrupts us: the kernel flags it in the SQ ring.
 */
static inline bool taskrun_pending(FDMonIoUring *s)
{
    return s->coop_taskrun &&
           (IO_URING_READ_ONCE(*s->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/*
 * Ask the home thread to act on @node (@bits: ADD or REMOVE).  Any thread.
 * The fetch_or and the home thread's fetch_and in fill_sq_ring() are
 * ordered on the same word: either the home thread sees @bits there, or it
 * had already cleared PENDING and we link the node again.  The push's CAS
 * publishes the node's fields to the thread that moves the list.
 */
static void enqueue(AioContext *ctx, AioHandler *node, unsigned bits)
{
    unsigned old = qatomic_fetch_or(&node->fdmon_flags,
                                    bits | FDMON_IO_URING_PENDING);

    if (!(old & FDMON_IO_URING_PENDING)) {
        QSLIST_INSERT_HEAD_ATOMIC(&ctx->submit_list, node, node_submitted);
    }
}

static bool submit_list_empty(AioContext *ctx)
{
    return qatomic_read(&ctx->submit_list.slh_first) == NULL;
}

static void fdmon_io_uring_update(AioContext *ctx, AioHandler *old_node,
                                  AioHandler *new_node)
{
    if (new_node) {
        enqueue(ctx, new_node, FDMON_IO_URING_ADD);
    }
    if (old_node) {
        /*
         * Whether a POLL_ADD naming @old_node is in flight, or about to be
         * submitted, only the home thread knows: it keeps the node and
         * releases it once no completion can name it (see the top).  The
         * release takes list_mutex, so it cannot overtake this update.
         */
        old_node->fdmon_owned = true;
        enqueue(ctx, old_node, FDMON_IO_URING_REMOVE);
    }
}

static void release_node(AioContext *ctx, AioHandler *node)
{
    qatomic_set(&node->fdmon_flags, 0);
    aio_handler_release(ctx, node);
}

/* The SQ went to the kernel: one submit for the block requests it held. */
static void count_block_submit(AioContext *ctx)
{
    FDMonIoUring *s = state(ctx);

    if (s->block_queued) {
        s->block_queued = 0;
        qatomic_set(&ctx->block_stats.submits, ctx->block_stats.submits + 1);
    }
}

/*
 * Every submission but wait()'s submit-and-wait goes through here, so that
 * the block requests it hands over are counted (AioloopBlockStats.submits).
 */
static int ring_submit(AioContext *ctx)
{
    FDMonIoUring *s = state(ctx);
    unsigned block = s->block_queued;
    /*
     * Completions posted by this submit are its own requests completing
     * inline, unless task work (earlier requests' completions) was pending:
     * the system call runs that too.
     */
    bool learn = block && !taskrun_pending(s);
    unsigned before = learn ? io_uring_cq_ready(&s->ring) : 0;
    int ret = io_uring_submit(&s->ring);

    if (ret > 0) {
        count_block_submit(ctx);
        /* Half or more inline: the page cache, not a device, serves them. */
        if (learn && io_uring_cq_ready(&s->ring) - before >= (block + 1) / 2) {
            s->device_bound = false;
        }
    }
    return ret;
}

/* An SQE that make_room() (or the caller's own check) guaranteed. */
static struct io_uring_sqe *reserved_sqe(AioContext *ctx)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&state(ctx)->ring);

    if (unlikely(!sqe)) {
        error_report("fdmon-io_uring: no free SQE after make_room()");
        abort();
    }
    return sqe;
}

/*
 * The library's own eventfds (the context's, linux-aio's; registered with
 * aio_set_event_notifier_drained()) get a POLL_ADD linked to a READ: the
 * kernel consumes the counter when it wakes us, so aio_notify() costs the
 * woken thread one io_uring_enter() instead of io_uring_enter() + read(),
 * the same two syscalls per wake-up as a bare eventfd ping-pong.  (A READ
 * alone would not do: the eventfd is O_NONBLOCK, so it would complete at
 * once with -EAGAIN instead of waiting.)  Not the user's notifiers: their
 * handlers are level-triggered, called again until they clear the eventfd.
 */
static bool is_notifier(AioContext *ctx, AioHandler *node)
{
    EventNotifier *e = node->opaque;

    (void)ctx;
    /* Read only on an eventfd: a pipe's counterpart needs its own read. */
    return node->kernel_drain && node->io_read && node->fd == e->rfd &&
           e->rfd == e->wfd;
}

static unsigned sqes_needed(AioContext *ctx, AioHandler *node)
{
    return is_notifier(ctx, node) ? 2 : 1;
}

/* @sqe, and for the notifier a second SQE, were reserved by the caller. */
static void arm(AioContext *ctx, AioHandler *node, struct io_uring_sqe *sqe)
{
    FDMonIoUring *s = state(ctx);
    unsigned flags = FDMON_IO_URING_ARMED;

    io_uring_prep_poll_add(sqe, node->fd,
                           (unsigned)(unsigned short)node->events);
    if (is_notifier(ctx, node)) {
        io_uring_sqe_set_data64(sqe, (uintptr_t)node | UDATA_LINKED_POLL);
        sqe->flags |= IOSQE_IO_LINK | (s->cqe_skip ? IOSQE_CQE_SKIP_SUCCESS : 0);
        sqe = reserved_sqe(ctx);
        io_uring_prep_read(sqe, node->fd, &s->notifier_buf,
                           sizeof(s->notifier_buf), 0);
        flags |= FDMON_IO_URING_READ;
    }
    io_uring_sqe_set_data(sqe, node);
    qatomic_fetch_or(&node->fdmon_flags, flags);
}

/*
 * Queue the next POLL_ADD of a node that just completed.  Called while
 * reaping, so it must not submit: if the SQ is full the node goes back on
 * the submit list, which wait() empties before it blocks again.
 */
static void rearm(AioContext *ctx, AioHandler *node)
{
    struct io_uring *ring = &state(ctx)->ring;

    if (io_uring_sq_space_left(ring) >= sqes_needed(ctx, node)) {
        arm(ctx, node, reserved_sqe(ctx));
    } else {
        enqueue(ctx, node, FDMON_IO_URING_ADD);
    }
}

/* Returns true if @node was added to @ready_list. */
static bool process_cqe(AioContext *ctx, AioHandlerList *ready_list,
                        uint64_t user_data, int res)
{
    AioHandler *node;
    unsigned flags;

    if ((user_data & UDATA_TAG_MASK) == UDATA_CQE_HANDLER) {
        CqeHandler *handler = (CqeHandler *)(uintptr_t)(user_data &
                                                        ~(uint64_t)UDATA_TAG_MASK);

        /* Run by dispatch(), outside the walk: it may enter a coroutine. */
        handler->res = res;
        QSIMPLEQ_INSERT_TAIL(&ctx->cqe_ready, handler, next);
        state(ctx)->block_inflight--;
        return true;
    }
    if (user_data & UDATA_TAG_MASK) {
        /*
         * A POLL_REMOVE's result (0, or -ENOENT when the POLL_ADD had
         * completed already) or liburing's TIMEOUT: the POLL_ADD's own
         * completion does the work.
         */
        return false;
    }
    node = (AioHandler *)(uintptr_t)user_data;
    flags = qatomic_fetch_and(&node->fdmon_flags,
                              ~(FDMON_IO_URING_ARMED | FDMON_IO_URING_READ));
    assert(flags & FDMON_IO_URING_ARMED);

    if (flags & FDMON_IO_URING_REMOVED) {
        /* The final completion of a retired node: nothing names it now. */
        QLIST_REMOVE(node, node_fdmon);
        release_node(ctx, node);
        return false;
    }
    if ((flags & FDMON_IO_URING_REMOVE) || aio_handler_is_deleted(node)) {
        /* Its REMOVE is queued: fill_sq_ring() releases it, now unarmed. */
        return false;
    }
    if (res < 0) {
        /*
         * -EBADF and the like: the fd was closed under its handler, or
         * cannot be polled.  poll(2) would report POLLNVAL, which runs no
         * callback; re-arming would only spin.  Transient failures and a
         * cancellation we did not ask for are retried.
         */
        if (res == -ECANCELED || res == -EAGAIN || res == -ENOMEM ||
            res == -EINTR) {
            rearm(ctx, node);
        }
        return false;
    }
    if (flags & FDMON_IO_URING_READ) {
        /* The READ emptied the eventfd: its handler must not read again. */
        __atomic_store_n(&((EventNotifier *)node->opaque)->drained, true,
                         __ATOMIC_RELAXED);
        res = POLLIN;
        if (node->opaque == &ctx->notifier && ctx->notifier_blocking) {
            /* wait() decides how to watch it next. */
            aio_add_ready_handler(ready_list, node, res);
            state(ctx)->notifier_idle = node;
            return true;
        }
    }
    aio_add_ready_handler(ready_list, node, res);
    rearm(ctx, node);
    return true;
}

/*
 * Process every completion, including those the kernel kept on its
 * overflow list.  Never submits, so it ends: each completion belongs to a
 * request submitted before.  Returns the number of nodes made ready.
 */
static int reap(AioContext *ctx, AioHandlerList *ready_list)
{
    struct io_uring *ring = &state(ctx)->ring;
    struct io_uring_cqe *cqe;
    bool flushed = false;
    int count = 0;

    if (taskrun_pending(state(ctx))) {
        /* Have the pending task work post its completions. */
        io_uring_get_events(ring);
    }
    for (;;) {
        unsigned head;
        unsigned n = 0;

        io_uring_for_each_cqe(ring, head, cqe) {
            count += process_cqe(ctx, ready_list, cqe->user_data, cqe->res);
            n++;
        }
        io_uring_cq_advance(ring, n);

        if (!io_uring_cq_has_overflow(ring)) {
            break;
        }
        if (n == 0 && flushed) {
            /* The kernel could not flush now; need_wait() brings us back. */
            break;
        }
        /*
         * Completions that did not fit wait on the kernel's overflow list;
         * the CQ has room now: have them copied in (io_uring_enter with
         * IORING_ENTER_GETEVENTS and nothing to wait for).
         */
        io_uring_get_events(ring);
        flushed = true;
    }
    return count;
}

/*
 * Make sure the SQ has a free entry, submitting what it holds if needed.
 * Returns false if the kernel takes nothing right now.
 */
static bool make_room(AioContext *ctx, AioHandlerList *ready_list, int *count,
                      unsigned need)
{
    struct io_uring *ring = &state(ctx)->ring;
    int ret;

    if (io_uring_sq_space_left(ring) >= need) {
        return true;
    }
    ret = ring_submit(ctx);
    if (ret == -EBUSY || ret == -EAGAIN || ret == -EINTR) {
        /* -EBUSY: a kernel that wants its CQ overflow drained first. */
        *count += reap(ctx, ready_list);
        ring_submit(ctx);
    }
    return io_uring_sq_space_left(ring) >= need;
}

/* The retired @node's REMOVE (@flags: its flags before clearing REMOVE). */
static void start_removal(AioContext *ctx, AioHandler *node, unsigned flags)
{
    FDMonIoUring *s = state(ctx);
    struct io_uring_sqe *sqe;

    assert(!(flags & FDMON_IO_URING_REMOVED));
    if (!(flags & FDMON_IO_URING_ARMED)) {
        release_node(ctx, node);
        return;
    }
    qatomic_fetch_or(&node->fdmon_flags, FDMON_IO_URING_REMOVED);
    QLIST_INSERT_HEAD(&s->zombies, node, node_fdmon);
    sqe = reserved_sqe(ctx);
    io_uring_prep_poll_remove(sqe, (uint64_t)(uintptr_t)node |
                              ((flags & FDMON_IO_URING_READ) ?
                               UDATA_LINKED_POLL : 0));
    io_uring_sqe_set_data64(sqe, UDATA_POLL_REMOVE);
}

/* Put back nodes still PENDING (so ours alone to link) on the submit list. */
static void requeue(AioContext *ctx, AioHandlerSList *list)
{
    AioHandler *node;

    while ((node = QSLIST_FIRST(list))) {
        QSLIST_REMOVE_HEAD(list, node_submitted);
        QSLIST_INSERT_HEAD_ATOMIC(&ctx->submit_list, node, node_submitted);
    }
}

/*
 * Turn the submit list into SQEs.  One pass over what was pushed so far:
 * re-arms pushed while this runs wait for the next wait(), so fds that stay
 * ready cannot keep this loop going.
 */
static void fill_sq_ring(AioContext *ctx, AioHandlerList *ready_list,
                         int *count)
{
    AioHandlerSList list;
    AioHandler *node;

    QSLIST_MOVE_ATOMIC(&list, &ctx->submit_list);
    while ((node = QSLIST_FIRST(&list))) {
        unsigned flags;

        if (!make_room(ctx, ready_list, count, 2)) {
            requeue(ctx, &list);
            return;
        }
        QSLIST_REMOVE_HEAD(&list, node_submitted);
        /* Only now that it is unlinked (see enqueue()). */
        flags = qatomic_fetch_and(&node->fdmon_flags,
                                  ~(FDMON_IO_URING_PENDING |
                                    FDMON_IO_URING_ADD |
                                    FDMON_IO_URING_REMOVE));
        if (flags & FDMON_IO_URING_REMOVE) {
            if (node == state(ctx)->notifier_idle) {
                state(ctx)->notifier_idle = NULL;
            }
            start_removal(ctx, node, flags);
        } else if ((flags & FDMON_IO_URING_ADD) &&
                   !(flags & (FDMON_IO_URING_ARMED | FDMON_IO_URING_REMOVED)) &&
                   node->events && !aio_handler_is_deleted(node)) {
            arm(ctx, node, reserved_sqe(ctx));
        }
    }
}

/*
 * Something to report without waiting: completions (posted, overflowed, or
 * pending as task work), reaped completions not yet dispatched, or nodes
 * still on the submit list, whose fds are not watched yet.  Queued SQEs are
 * the caller's business: wait() submits them, need_wait() counts them.
 */
static bool ready_without_waiting(AioContext *ctx)
{
    FDMonIoUring *s = state(ctx);
    struct io_uring *ring = &s->ring;

    /* io_uring_cq_has_overflow() || taskrun_pending(), in one load. */
    return io_uring_cq_ready(ring) ||
           (IO_URING_READ_ONCE(*ring->sq.kflags) & s->kflags_wait) ||
           !submit_list_empty(ctx) || !QSIMPLEQ_EMPTY(&ctx->cqe_ready);
}

/*
 * Should this blocking wait, which has block requests to submit, probe?
 * Device-bound mode only changes anything when DEVICE_BATCH requests or
 * more are queued in one iteration, which needs about that many in flight.
 * Below that the probe bought nothing in steady state and cost a system
 * call per request (aioloop-nbd, O_DIRECT 4 KiB at queue depth 1: 1.9
 * io_uring_enter() per request instead of 1.05), so there one wait in
 * LOW_QD_PROBE_EVERY probes, the first one included, and the others
 * submit and wait in one call and leave device_bound as it was: a burst
 * that arrives at low depth is still batched by what the last probe
 * learnt.
 */
static bool probe_this_wait(FDMonIoUring *s)
{
    if (s->block_inflight < DEVICE_BATCH) {
        if (s->probe_countdown) {
            s->probe_countdown--;
            return false;
        }
        s->probe_countdown = LOW_QD_PROBE_EVERY - 1;
    }
    s->probes++;
    return true;
}

uint64_t fdmon_io_uring_probes(AioContext *ctx)
{
    return state(ctx)->probes;
}

/* Have the idle notifier watched by the ring again (by fill_sq_ring()). */
static void rearm_idle_notifier(AioContext *ctx)
{
    FDMonIoUring *s = state(ctx);

    if (s->notifier_idle) {
        enqueue(ctx, s->notifier_idle, FDMON_IO_URING_ADD);
        s->notifier_idle = NULL;
    }
}

/*
 * Jobs in the thread pool, or block requests of the threads engine: their
 * completions come from other threads, often within a few microseconds.
 * Then io_uring_enter() is the better wait: arming the notifier's POLL_ADD
 * as it submits takes long enough that the completion's aio_notify() often
 * lands before the thread sleeps, and then it does not sleep at all.  W5's
 * thread-pool round trip with polling off: 0.13-0.18 sleeps per job and
 * 5.4-7.2 us with io_uring_enter(), 0.96 and 17-21 us with the read().
 */
static bool work_in_other_threads(AioContext *ctx)
{
    ThreadPool *pool = qatomic_read(&ctx->thread_pool);

    return qatomic_read(&ctx->block_stats.inflight) != 0 ||
           (pool && thread_pool_inflight(pool) != 0);
}

/*
 * Can a wait without a timeout be a read() of the idle notifier?  Only if
 * nothing but aio_notify() can end it: the notifier is the one handler,
 * no request of any kind is queued or in flight (so no completion, and
 * with COOP_TASKRUN no task work either, can consume the counter or need
 * reaping meanwhile), and nothing is ready already.  Whatever another
 * thread changes after this check it announces with aio_notify(), whose
 * write ends the read(): a handler added (aio_set_fd_handler()), a BH, a
 * timer armed.
 */
static bool can_read_notifier(AioContext *ctx)
{
    FDMonIoUring *s = state(ctx);

    return s->notifier_idle && qatomic_read(&ctx->n_handlers) == 1 &&
           QLIST_EMPTY(&s->zombies) && s->block_inflight == 0 &&
           !io_uring_sq_ready(&s->ring) && !ready_without_waiting(ctx) &&
           !work_in_other_threads(ctx);
}

/* aio_notifier_read() of the idle notifier; on failure, arm it again. */
static int read_notifier(AioContext *ctx, AioHandlerList *ready_list)
{
    int ret = aio_notifier_read(ctx, state(ctx)->notifier_idle, ready_list);

    if (ret < 0) {
        rearm_idle_notifier(ctx);
        return 0;
    }
    return ret;
}

static int fdmon_io_uring_wait(AioContext *ctx, AioHandlerList *ready_list,
                               int64_t timeout)
{
    FDMonIoUring *s = state(ctx);
    struct io_uring *ring = &s->ring;
    struct __kernel_timespec ts;
    struct io_uring_cqe *cqe;
    bool probe;
    int count = 0;
    int ret = 0;

    if (s->notifier_idle && timeout != 0) {
        if (timeout < 0 && can_read_notifier(ctx)) {
            return read_notifier(ctx, ready_list);
        }
        rearm_idle_notifier(ctx);
    }
    fill_sq_ring(ctx, ready_list, &count);

    /* Don't block when there is something to report already. */
    if (count || ready_without_waiting(ctx)) {
        timeout = 0;
        s->device_bound = false;
    }
    /*
     * About to block with block requests to submit: probe, i.e. submit
     * them alone first, to see whether they complete inline (then there is
     * no need to block) or leave the loop waiting for the device.  The
     * extra system call is made while the device works on the requests.
     */
    probe = timeout != 0 && s->block_queued && probe_this_wait(s);
    if (probe) {
        ret = ring_submit(ctx);
        if (ret >= 0 && ready_without_waiting(ctx)) {
            timeout = 0;
            s->device_bound = false;
        }
    }
    if (timeout != 0 && (probe || !s->block_queued)) {
        /* Going to sleep: on the device if block requests are in flight. */
        s->device_bound = s->block_inflight != 0;
    }
    if (timeout == 0) {
        if (io_uring_sq_ready(ring)) {
            ret = ring_submit(ctx);
        }
    } else {
        if (timeout > 0) {
            ts.tv_sec = timeout / NS_PER_SEC;
            ts.tv_nsec = timeout % NS_PER_SEC;
        }
        /* Submits everything queued and waits, in one io_uring_enter(). */
        ret = io_uring_submit_and_wait_timeout(ring, &cqe, 1,
                                               timeout > 0 ? &ts : NULL,
                                               NULL);
        if (ret >= 0 || ret == -ETIME) {
            count_block_submit(ctx);
        }
    }
    count += reap(ctx, ready_list);

    /*
     * -ETIME: timed out.  -EINTR: a signal.  -EBUSY/-EAGAIN: the kernel
     * could not take the SQEs now; they stay queued and need_wait() is
     * true, so the next iteration retries without blocking.
     */
    if (ret < 0 && count == 0 && ret != -ETIME && ret != -EINTR &&
        ret != -EBUSY && ret != -EAGAIN) {
        return ret;
    }
    return count;
}

/*
 * Arm what the submit list holds without waiting, so that busy-polling can
 * go on: otherwise need_wait() stays true after every wake-up (the
 * one-shot POLL_ADD of the fd that woke us is queued for re-arming) and
 * aio_poll() would block without polling.  Errors are left for wait().
 */
static int fdmon_io_uring_flush(AioContext *ctx, AioHandlerList *ready_list)
{
    struct io_uring *ring = &state(ctx)->ring;
    int count = 0;

    if (submit_list_empty(ctx) && !io_uring_sq_ready(ring) &&
        !taskrun_pending(state(ctx))) {
        return 0;
    }
    fill_sq_ring(ctx, ready_list, &count);
    if (io_uring_sq_ready(ring)) {
        ring_submit(ctx);
    }
    return count + reap(ctx, ready_list);
}

static bool fdmon_io_uring_need_wait(AioContext *ctx)
{
    return io_uring_sq_ready(&state(ctx)->ring) || ready_without_waiting(ctx);
}

/*
 * Block requests in flight read into or write from their callers' memory,
 * and their coroutines wait for the results: wait for every one of them
 * before the ring goes.  Fd readiness reaped meanwhile is dropped; the
 * handlers are level-triggered and the next monitor reports them again.
 */
static void drain_block_requests(AioContext *ctx)
{
    FDMonIoUring *s = state(ctx);
    AioHandlerList ready_list = { NULL };
    struct io_uring_cqe *cqe;

    while (s->block_inflight) {
        int ret = io_uring_submit_and_wait(&s->ring, 1);

        if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN &&
            ret != -ETIME) {
            error_report("fdmon-io_uring: %u block request(s) lost at "
                         "teardown: %s", s->block_inflight, strerror(-ret));
            break;
        }
        if (io_uring_peek_cqe(&s->ring, &cqe) == 0 || ret >= 0) {
            reap(ctx, &ready_list);
            aio_discard_ready(&ready_list);
        }
    }
}

static void fdmon_io_uring_destroy(AioContext *ctx)
{
    FDMonIoUring *s = state(ctx);
    AioHandlerSList list;
    AioHandler *node;
    AioHandler *next;

    if (!s) {
        return;
    }
    drain_block_requests(ctx);
    /*
     * Closing the ring ends every request.  The kernel never dereferences
     * user_data and we never read this CQ again, so from here no
     * completion can name any node.
     */
    io_uring_queue_exit(&s->ring);

    /*
     * Under the mutex, so an update() racing with us goes to the poll
     * backend, not to a submit list nobody reads any more.
     */
    pthread_mutex_lock(&ctx->list_mutex);
    qatomic_set(&ctx->fdmon_ops, &fdmon_poll_ops);
    ctx->fdmon_io_uring = NULL;
    QSLIST_MOVE_ATOMIC(&list, &ctx->submit_list);
    /* Live nodes forget ARMED and PENDING: a later setup re-arms them. */
    QLIST_FOREACH(node, &ctx->aio_handlers, node) {
        if (!aio_handler_is_deleted(node)) {
            qatomic_set(&node->fdmon_flags, 0);
        }
    }
    pthread_mutex_unlock(&ctx->list_mutex);

    /* aio_handler_release() takes the mutex itself. */
    while ((node = QSLIST_FIRST(&list))) {
        QSLIST_REMOVE_HEAD(&list, node_submitted);
        if (qatomic_xchg(&node->fdmon_flags, 0) & FDMON_IO_URING_REMOVE) {
            aio_handler_release(ctx, node);
        }
    }
    QLIST_FOREACH_SAFE(node, &s->zombies, node_fdmon, next) {
        QLIST_REMOVE(node, node_fdmon);
        release_node(ctx, node);
    }
    free(s);
    /* Completions of the drained requests: resume their coroutines. */
    aio_run_cqe_handlers(ctx);
}

/*
 * Submit the queued POLL_ADD/POLL_REMOVE requests, so that the ring fd the
 * outer loop polls covers every handler (QEMU's gsource_prepare).
 */
static bool fdmon_io_uring_gsource_prepare(AioContext *ctx)
{
    AioHandlerList ready_list = { NULL };
    int count;

    /* The outer loop polls the ring's fd: the notifier must be on it. */
    rearm_idle_notifier(ctx);
    count = fdmon_io_uring_flush(ctx, &ready_list);

    /*
     * flush() may have reaped completions: the dispatch's wait() sees
     * their nodes again (see aio_discard_ready()).
     */
    aio_discard_ready(&ready_list);
    return count || fdmon_io_uring_need_wait(ctx);
}

static int fdmon_io_uring_gsource_fds(AioContext *ctx, struct pollfd *pfds,
                                      int max)
{
    /* The ring fd is readable while the CQ holds completions. */
    if (max >= 1) {
        pfds[0] = (struct pollfd){ .fd = state(ctx)->ring.ring_fd,
                                   .events = POLLIN };
    }
    return 1;
}

bool aio_run_cqe_handlers(AioContext *ctx)
{
    CqeHandler *handler;
    bool progress = false;

    while ((handler = QSIMPLEQ_FIRST(&ctx->cqe_ready))) {
        QSIMPLEQ_REMOVE_HEAD(&ctx->cqe_ready, next);
        handler->cb(handler);
        progress = true;
    }
    return progress;
}

static bool fdmon_io_uring_dispatch(AioContext *ctx)
{
    if (QSIMPLEQ_EMPTY(&ctx->cqe_ready)) {
        return false;
    }
    return aio_run_cqe_handlers(ctx);
}

struct io_uring_sqe *fdmon_io_uring_get_sqe(AioContext *ctx)
{
    FDMonIoUring *s = state(ctx);
    AioHandlerList ready_list = { NULL };
    struct io_uring_sqe *sqe;

    /*
     * A full SQ is submitted, never a reason to drop the request.  A
     * kernel that refuses new SQEs until its CQ overflow is drained
     * (-EBUSY) gets it drained; completions reaped here wait on
     * cqe_ready, fd readiness comes back (level-triggered).
     */
    while (!(sqe = io_uring_get_sqe(&s->ring))) {
        int ret = ring_submit(ctx);

        if (ret == -EBUSY || ret == -EAGAIN || ret == -EINTR) {
            reap(ctx, &ready_list);
            aio_discard_ready(&ready_list);
        } else if (ret < 0) {
            return NULL;
        }
    }
    return sqe;
}

void fdmon_io_uring_sqe_queued(AioContext *ctx, struct io_uring_sqe *sqe,
                               CqeHandler *handler, unsigned max_batch)
{
    FDMonIoUring *s = state(ctx);

    io_uring_sqe_set_data64(sqe, (uintptr_t)handler | UDATA_CQE_HANDLER);
    s->block_inflight++;
    if (!max_batch) {
        max_batch = s->device_bound ? DEVICE_BATCH : UINT_MAX;
    }
    /* Otherwise the next wait() or flush() submits it with the rest. */
    if (++s->block_queued >= max_batch) {
        ring_submit(ctx);
    }
}

const FDMonOps fdmon_io_uring_ops = {
    .name = "io_uring",
    .update = fdmon_io_uring_update,
    .wait = fdmon_io_uring_wait,
    .need_wait = fdmon_io_uring_need_wait,
    .flush = fdmon_io_uring_flush,
    .dispatch = fdmon_io_uring_dispatch,
    .destroy = fdmon_io_uring_destroy,
    .gsource_prepare = fdmon_io_uring_gsource_prepare,
    .gsource_fds = fdmon_io_uring_gsource_fds,
    .gsource_check = fdmon_io_uring_need_wait,
};

static int ring_init(struct io_uring *ring, unsigned *features,
                     unsigned *flags)
{
    /*
     * A CQ larger than the SQ (5.5+); SUBMIT_ALL (5.18+) so that an SQE
     * failing at submission does not hold back the ones after it;
     * COOP_TASKRUN with TASKRUN_FLAG (5.19+) so that a completion does not
     * IPI a thread that is busy-polling: on a VM the IPI is a VM exit
     * paid by whoever completes the request (for a socket: the client
     * that sent the data), which halved a QD1 NBD client's IOPS.  Older
     * kernels refuse unknown flags with EINVAL: drop them one by one.
     */
    static const unsigned tries[] = {
        IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL |
            IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_CQSIZE,
    };
    struct io_uring_params params;
    int ret = -EINVAL;

    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        memset(&params, 0, sizeof(params));
        params.flags = tries[i];
        params.cq_entries = CQ_ENTRIES;
        ret = io_uring_queue_init_params(SQ_ENTRIES, ring, &params);
        if (ret != -EINVAL) {
            break;
        }
    }
    if (ret < 0) {
        return ret;
    }
    *flags = params.flags;
    if (!(params.features & IORING_FEAT_NODROP)) {
        /*
         * Before 5.5 a full CQ drops completions: a lost POLL_ADD
         * completion would leave its fd unwatched for good and its node
         * unfreeable.
         */
        io_uring_queue_exit(ring);
        return -ENOSYS;
    }
    *features = params.features;
    return 0;
}

int fdmon_io_uring_setup(AioContext *ctx)
{
    FDMonIoUring *s;
    AioHandler *node;
    unsigned features;
    unsigned flags;
    int ret;

    s = calloc(1, sizeof(*s));
    if (!s) {
        return -ENOMEM;
    }
    ret = ring_init(&s->ring, &features, &flags);
    if (ret < 0) {
        free(s);
        return ret;
    }
    s->cqe_skip = features & IORING_FEAT_CQE_SKIP;
    s->coop_taskrun = flags & IORING_SETUP_TASKRUN_FLAG;
    s->kflags_wait = IORING_SQ_CQ_OVERFLOW |
                     (s->coop_taskrun ? IORING_SQ_TASKRUN : 0);
    QLIST_INIT(&s->zombies);

    pthread_mutex_lock(&ctx->list_mutex);
    ctx->fdmon_io_uring = s;
    /* Registered by the home thread's first wait(). */
    QLIST_FOREACH(node, &ctx->aio_handlers, node) {
        if (!aio_handler_is_deleted(node)) {
            enqueue(ctx, node, FDMON_IO_URING_ADD);
        }
    }
    qatomic_set(&ctx->fdmon_ops, &fdmon_io_uring_ops);
    pthread_mutex_unlock(&ctx->list_mutex);
    return 0;
}
