/*
 * The Linux AIO block engine (libaio), after QEMU's block/linux-aio.c.
 *
 * - One io_context per AioContext.  Every iocb names the state's eventfd
 *   (io_set_eventfd), watched as an EventNotifier whose io_poll peeks the
 *   completion ring the kernel maps into our address space, so adaptive
 *   polling sees completions without a system call, and reaping costs none
 *   either: the ring is read and its head advanced in user space.
 *
 * - Requests queue on s->pending and go to the kernel together: at the end
 *   of the loop iteration (submit_bh), or at once when max_batch of them
 *   are queued.  At most max_events are in flight (the io_context's size);
 *   the rest wait, and so does everything after an -EAGAIN from
 *   io_submit(): completions free room and resubmit.  Nothing is dropped
 *   and nothing spins.
 *
 * - Completion processing may run a coroutine that ends in a nested
 *   aio_poll(), which processes completions again.  As in QEMU, the
 *   progress through the ring (event_idx, event_max) lives in the state,
 *   not in locals, and completion_bh is scheduled before any request is
 *   resolved: the nested call goes on from where the outer one stands, and
 *   when it returns the outer loop sees event_max == 0 and stops.
 *
 * - The request is on the waiting coroutine's stack.  A request resolved
 *   while its own coroutine is still running (an io_submit() failure in the
 *   batch that coroutine submitted) is not woken: the coroutine sees the
 *   result before it yields.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libaio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <aioloop/event-notifier.h>

#include "block-internal.h"

#define MAX_EVENTS 1024
#define DEFAULT_MAX_BATCH 32

typedef struct LaioCB {
    struct iocb iocb;
    LinuxAioState *s;
    Coroutine *co;
    int fd;
    int type;
    uint64_t offset;
    QEMUIOVector *qiov;
    BdrvRequestFlags flags;
    unsigned max_batch;
    size_t done;       /* bytes transferred so far */
    QEMUIOVector rest; /* what is left after a short transfer */
    long res;          /* the kernel's result for the last iocb */
    int ret;           /* -EINPROGRESS until resolved */
    QSIMPLEQ_ENTRY(LaioCB) next;
} LaioCB;

struct LinuxAioState {
    AioContext *ctx;
    io_context_t ioctx;
    unsigned max_events; /* cap on in_flight: the io_context's size */
    EventNotifier e;

    QSIMPLEQ_HEAD(, LaioCB) pending; /* queued, not yet submitted */
    unsigned in_queue;
    unsigned in_flight;
    bool blocked; /* io_submit() said -EAGAIN: wait for a completion */
    /*
     * Depth of process_completions().  Requests queued meanwhile are
     * submitted when it returns, not as soon as a batch is full: with
     * buffered files io_submit() completes them at once, and a completion
     * loop that keeps submitting would keep finding new completions and
     * never give the event loop back.
     */
    unsigned processing;
    unsigned max_batch; /* of the last request queued */
    QEMUBH *submit_bh;

    /* Completion processing; see the top for why these are not locals. */
    QEMUBH *completion_bh;
    unsigned event_idx;
    unsigned event_max;
};

/* The completion ring's header, as fs/aio.c maps it (QEMU reads it too). */
struct aio_ring {
    unsigned id;
    unsigned nr;
    unsigned head;
    unsigned tail;
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;
    struct io_event io_events[];
};

/* Events between head and tail (or the ring's end, when it wraps). */
static unsigned ring_peek(io_context_t ioctx, struct io_event **events)
{
    struct aio_ring *ring = (struct aio_ring *)ioctx;
    unsigned head = qatomic_read(&ring->head);
    unsigned tail = qatomic_read(&ring->tail);
    unsigned nr = tail >= head ? tail - head : ring->nr - head;

    *events = ring->io_events + head;
    /* Read the events only after tail: pairs with aio_complete()'s wmb. */
    smp_rmb();
    return nr;
}

static void ring_commit(io_context_t ioctx, unsigned nr)
{
    struct aio_ring *ring = (struct aio_ring *)ioctx;

    if (nr) {
        /*
         * The events before the new head were read: only now may the kernel
         * reuse their slots (it reads head under its completion lock).
         */
        qatomic_store_release(&ring->head, (ring->head + nr) % ring->nr);
    }
}

static void ioq_submit(LinuxAioState *s);

static void laio_resolve(LaioCB *cb, int ret)
{
    cb->ret = ret;
    if (!qemu_coroutine_entered(cb->co)) {
        aio_co_wake(cb->co);
    }
}

/* (Re)build the iocb for what is left of @cb's transfer and queue it. */
static void laio_queue(LaioCB *cb)
{
    LinuxAioState *s = cb->s;
    QEMUIOVector *qiov = cb->done ? &cb->rest : cb->qiov;
    uint64_t offset = cb->offset + cb->done;
    struct iocb *iocb = &cb->iocb;

    switch (cb->type) {
    case QEMU_AIO_READ:
        io_prep_preadv(iocb, cb->fd, qiov->iov, qiov->niov, (long long)offset);
        break;
    case QEMU_AIO_WRITE:
        io_prep_pwritev(iocb, cb->fd, qiov->iov, qiov->niov, (long long)offset);
        if (cb->flags & BDRV_REQ_FUA) {
            iocb->aio_rw_flags |= RWF_DSYNC;
        }
        break;
    case QEMU_AIO_FLUSH:
        io_prep_fdsync(iocb, cb->fd);
        break;
    default: /* AIOLOOP_AIO_FSYNC */
        io_prep_fsync(iocb, cb->fd);
        break;
    }
    io_set_eventfd(iocb, event_notifier_get_fd(&s->e));

    QSIMPLEQ_INSERT_TAIL(&s->pending, cb, next);
    s->in_queue++;
    s->max_batch = cb->max_batch;
    if (s->processing) {
        /*
         * process_completions_and_submit() submits when the processing
         * ends.  The BH is for a callback that waits in a nested aio_poll()
         * for a request queued meanwhile: that request must not wait for
         * the end of the processing the callback is part of.
         */
        qemu_bh_schedule(s->submit_bh);
        return;
    }
    if (!s->blocked && s->in_queue >= cb->max_batch) {
        ioq_submit(s);
    } else if (s->in_queue == 1) {
        qemu_bh_schedule(s->submit_bh);
    }
}

/* The kernel finished @cb's iocb with @res: resolve or go on. */
static void laio_complete(LaioCB *cb, long res)
{
    int ret = block_rw_step(cb->type, cb->qiov, &cb->done, &cb->rest, res);

    if (ret == BLOCK_RW_AGAIN) {
        laio_queue(cb);
    } else {
        laio_resolve(cb, ret);
    }
}

static void process_completions(LinuxAioState *s)
{
    struct io_event *events;

    /* A nested aio_poll() must see the completions still in the ring. */
    qemu_bh_schedule(s->completion_bh);
    s->processing++;

    for (;;) {
        ring_commit(s->ioctx, s->event_idx);
        s->event_idx = 0;
        s->event_max = ring_peek(s->ioctx, &events);
        if (!s->event_max) {
            break;
        }
        while (s->event_idx < s->event_max) {
            struct io_event *ev = &events[s->event_idx];
            LaioCB *cb = container_of(ev->obj, LaioCB, iocb);

            /* One at a time: a nested call may go on from here. */
            s->in_flight--;
            s->event_idx++;
            s->blocked = false;
            laio_complete(cb, (long)ev->res);
        }
    }
    qemu_bh_cancel(s->completion_bh);
    /* Tell an outer call, if we are nested, that the ring is done. */
    s->event_max = 0;
    s->event_idx = 0;
    s->processing--;
}

static void process_completions_and_submit(LinuxAioState *s)
{
    process_completions(s);
    if (!s->processing && !QSIMPLEQ_EMPTY(&s->pending)) {
        ioq_submit(s);
        if (QSIMPLEQ_EMPTY(&s->pending)) {
            /* Scheduled by laio_queue() while processing: nothing left. */
            qemu_bh_cancel(s->submit_bh);
        }
    }
}

static void ioq_submit(LinuxAioState *s)
{
    struct iocb *iocbs[MAX_EVENTS];
    LaioCB *cb;
    int ret;
    int len;

    while (!QSIMPLEQ_EMPTY(&s->pending) && s->in_flight < s->max_events) {
        len = 0;
        QSIMPLEQ_FOREACH(cb, &s->pending, next) {
            iocbs[len++] = &cb->iocb;
            if (s->in_flight + (unsigned)len >= s->max_events ||
                (unsigned)len >= s->max_batch) {
                break;
            }
        }
        ret = io_submit(s->ioctx, len, iocbs);
        if (ret == -EINTR) {
            continue;
        }
        if (ret == -EAGAIN) {
            /* The kernel is out of resources: a completion retries. */
            s->blocked = true;
            break;
        }
        if (ret < 0) {
            /* The first iocb is bad (-EBADF, -EINVAL): fail it alone. */
            cb = QSIMPLEQ_FIRST(&s->pending);
            QSIMPLEQ_REMOVE_HEAD(&s->pending, next);
            s->in_queue--;
            laio_resolve(cb, ret);
            continue;
        }
        block_count_submit(s->ctx);
        block_count_requests(s->ctx, (unsigned)ret);
        s->in_flight += (unsigned)ret;
        s->in_queue -= (unsigned)ret;
        for (int i = 0; i < ret; i++) {
            QSIMPLEQ_REMOVE_HEAD(&s->pending, next);
        }
        if (ret < len) {
            /* The kernel took part of it: it is full, as for -EAGAIN. */
            s->blocked = true;
            break;
        }
    }
    if (s->in_flight == 0 && !QSIMPLEQ_EMPTY(&s->pending)) {
        /*
         * -EAGAIN with nothing in flight: no completion will come to retry.
         * Try again next iteration rather than never.
         */
        qemu_bh_schedule(s->submit_bh);
    }
    /*
     * Buffered requests often complete inside io_submit(): take them now,
     * as QEMU does, rather than one loop iteration later (at QD 1 that
     * halves the iterations per request).  Not while completions are being
     * processed (that loop takes them), and requests queued by the
     * coroutines resumed here wait for the submit BH, so submitting and
     * completing cannot chase each other without end.  Not from a
     * coroutine either: it submitted a full batch and is about to yield;
     * the loop it yields to takes the completions (io_poll first).
     */
    if (s->in_flight && !s->processing && !qemu_in_coroutine()) {
        process_completions(s);
    }
}

static void submit_bh_cb(void *opaque)
{
    LinuxAioState *s = opaque;

    if (!QSIMPLEQ_EMPTY(&s->pending)) {
        s->blocked = false;
        ioq_submit(s);
    }
}

static void completion_bh_cb(void *opaque)
{
    process_completions_and_submit(opaque);
}

static void laio_completion_cb(EventNotifier *e)
{
    LinuxAioState *s = container_of(e, LinuxAioState, e);

    if (event_notifier_test_and_clear(&s->e)) {
        process_completions_and_submit(s);
    }
}

static bool laio_poll_cb(void *opaque)
{
    LinuxAioState *s = container_of((EventNotifier *)opaque, LinuxAioState,
                                    e);
    struct io_event *events;

    return ring_peek(s->ioctx, &events) != 0;
}

static void laio_poll_ready(EventNotifier *e)
{
    process_completions_and_submit(container_of(e, LinuxAioState, e));
}

static int coroutine_fn laio_co_submit_ctx(AioContext *ctx, int fd,
                                           uint64_t offset, QEMUIOVector *qiov,
                                           int type, BdrvRequestFlags flags,
                                           uint64_t dev_max_batch)
{
    LinuxAioState *s = aio_get_linux_aio(ctx);
    LaioCB cb = {
        .s = s,
        .co = qemu_coroutine_self(),
        .fd = fd,
        .type = type,
        .offset = offset,
        .qiov = qiov,
        .flags = flags,
        .ret = -EINPROGRESS,
    };

    cb.max_batch = MIN(block_max_batch(ctx, DEFAULT_MAX_BATCH, dev_max_batch),
                       s->max_events);
    laio_queue(&cb);
    if (cb.ret == -EINPROGRESS) {
        qemu_coroutine_yield();
    }
    if (cb.rest.iov) {
        qemu_iovec_destroy(&cb.rest);
    }
    return cb.ret;
}

/* ---- state -------------------------------------------------------------- */

/*
 * Knobs for the tests, read at set-up: AIOLOOP_LAIO_MAX_EVENTS asks
 * io_setup() for fewer events (and caps the requests in flight to match),
 * so requests wait for free slots; AIOLOOP_LAIO_MAX_INFLIGHT sets the cap
 * on its own, above what the io_context holds, so the kernel's partial
 * io_submit() and -EAGAIN are what stops the submission.  1..1024, else
 * ignored.
 */
static unsigned env_events(const char *name, unsigned dflt)
{
    const char *env = getenv(name);
    long n = env ? strtol(env, NULL, 10) : 0;

    return n > 0 && n <= MAX_EVENTS ? (unsigned)n : dflt;
}

/* A new state in *ps: 0, or -errno (the block engine's setup() returns it). */
static int laio_new(AioContext *ctx, LinuxAioState **ps, Error **errp)
{
    LinuxAioState *s = calloc(1, sizeof(*s));
    unsigned n;
    int ret;

    if (!s) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    ret = event_notifier_init(&s->e, false);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "linux-aio: event notifier");
        free(s);
        return ret;
    }
    /*
     * io_setup() fails with -EAGAIN when fs.aio-max-nr would be exceeded:
     * a smaller context still works.
     */
    for (n = env_events("AIOLOOP_LAIO_MAX_EVENTS", MAX_EVENTS); ; n /= 2) {
        ret = io_setup((int)n, &s->ioctx);
        if (ret != -EAGAIN || n <= 16) {
            break;
        }
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "linux-aio: io_setup");
        event_notifier_cleanup(&s->e);
        free(s);
        return ret;
    }
    s->max_events = env_events("AIOLOOP_LAIO_MAX_INFLIGHT", n);
    s->ctx = ctx;
    QSIMPLEQ_INIT(&s->pending);
    s->submit_bh = aio_bh_new_full(ctx, submit_bh_cb, s, "laio_submit", NULL);
    s->completion_bh = aio_bh_new_full(ctx, completion_bh_cb, s,
                                       "laio_completion", NULL);
    *ps = s;
    return 0;
}

static void laio_free(LinuxAioState *s)
{
    qemu_bh_delete(s->submit_bh);
    qemu_bh_delete(s->completion_bh);
    io_destroy(s->ioctx);
    event_notifier_cleanup(&s->e);
    free(s);
}

/*
 * aio_setup_linux_aio() with the reason of a failure kept: 0 and *ps set,
 * or -errno.
 */
static int laio_state_setup(AioContext *ctx, LinuxAioState **ps, Error **errp)
{
    LinuxAioState *s = qatomic_load_acquire(&ctx->linux_aio);
    LinuxAioState *expected = NULL;
    int ret;

    if (s) {
        *ps = s;
        return 0;
    }
    ret = laio_new(ctx, &s, errp);
    if (ret < 0) {
        return ret;
    }
    if (!__atomic_compare_exchange_n(&ctx->linux_aio, &expected, s, false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        laio_free(s);
        *ps = expected;
        return 0;
    }
    /* Registered by the winner only: the handler names the state. */
    aio_set_event_notifier_drained(ctx, &s->e, laio_completion_cb,
                                   laio_poll_cb, laio_poll_ready);
    *ps = s;
    return 0;
}

LinuxAioState *aio_setup_linux_aio(AioContext *ctx, Error **errp)
{
    LinuxAioState *s;

    return laio_state_setup(ctx, &s, errp) < 0 ? NULL : s;
}

LinuxAioState *aio_get_linux_aio(AioContext *ctx)
{
    LinuxAioState *s = qatomic_load_acquire(&ctx->linux_aio);

    if (!s) {
        error_report("aio_get_linux_aio: aio_setup_linux_aio() has not "
                     "succeeded on AioContext %p", (void *)ctx);
        abort();
    }
    return s;
}

void laio_cleanup_ctx(AioContext *ctx)
{
    LinuxAioState *s = ctx->linux_aio;

    if (!s) {
        return;
    }
    aio_set_event_notifier(ctx, &s->e, NULL, NULL, NULL);
    ctx->linux_aio = NULL;
    laio_free(s);
}

static int laio_setup(AioContext *ctx, Error **errp)
{
    LinuxAioState *s;

    return laio_state_setup(ctx, &s, errp);
}

const BlockEngineOps block_engine_linux_aio = {
    .name = "linux-aio",
    .id = AIOLOOP_BLOCK_ENGINE_LINUX_AIO,
    .setup = laio_setup,
    .co_submit = laio_co_submit_ctx,
};
