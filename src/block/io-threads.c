/*
 * The thread-pool block engine: what works everywhere.
 *
 * Each request is one job on the context's thread pool (thread-pool.c):
 * the worker loops preadv()/pwritev2() until block_rw_step() resolves the
 * transfer, so short transfers, -EINTR and -EAGAIN never reach the caller,
 * and the job's completion wakes the coroutine in its own context.  There is no batching
 * to do: the pool hands jobs to idle workers as they come.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include <aioloop/thread-pool.h>

#include "block-internal.h"

typedef struct ThreadsReq {
    int fd;
    int type;
    uint64_t offset;
    QEMUIOVector *qiov;
    BdrvRequestFlags flags;
} ThreadsReq;

static ssize_t rw_once(ThreadsReq *req, const struct iovec *iov, int niov,
                       uint64_t offset)
{
    if (req->type == QEMU_AIO_READ) {
        return preadv(req->fd, iov, niov, (off_t)offset);
    }
    return pwritev2(req->fd, iov, niov, (off_t)offset,
                    (req->flags & BDRV_REQ_FUA) ? RWF_DSYNC : 0);
}

static int threads_rw(ThreadsReq *req)
{
    QEMUIOVector *qiov = req->qiov;
    QEMUIOVector rest = { 0 };
    size_t done = 0;
    int ret;

    do {
        QEMUIOVector *left = done ? &rest : qiov;
        ssize_t n = rw_once(req, left->iov, left->niov, req->offset + done);

        ret = block_rw_step(req->type, qiov, &done, &rest, n < 0 ? -errno : n);
    } while (ret == BLOCK_RW_AGAIN);
    if (rest.iov) {
        qemu_iovec_destroy(&rest);
    }
    return ret;
}

static int threads_worker(void *opaque)
{
    ThreadsReq *req = opaque;
    int ret;

    switch (req->type) {
    case QEMU_AIO_READ:
    case QEMU_AIO_WRITE:
        return threads_rw(req);
    case QEMU_AIO_FLUSH:
        ret = fdatasync(req->fd);
        break;
    default: /* AIOLOOP_AIO_FSYNC */
        ret = fsync(req->fd);
        break;
    }
    return ret < 0 ? -errno : 0;
}

static int coroutine_fn threads_co_submit(AioContext *ctx, int fd,
                                          uint64_t offset, QEMUIOVector *qiov,
                                          int type, BdrvRequestFlags flags,
                                          uint64_t dev_max_batch)
{
    ThreadsReq req = {
        .fd = fd,
        .type = type,
        .offset = offset,
        .qiov = qiov,
        .flags = flags,
    };

    (void)dev_max_batch;
    block_count_requests(ctx, 1);
    block_count_submit(ctx);
    return thread_pool_submit_co(threads_worker, &req);
}

static int threads_setup(AioContext *ctx, Error **errp)
{
    (void)ctx;
    (void)errp;
    return 0;
}

const BlockEngineOps block_engine_threads = {
    .name = "threads",
    .id = AIOLOOP_BLOCK_ENGINE_THREADS,
    .setup = threads_setup,
    .co_submit = threads_co_submit,
};
