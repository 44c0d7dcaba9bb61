/*
 * yield_until_fd_readable(), as QEMU's util/qemu-coroutine-io.c: a
 * one-shot read handler on the fd in the current AioContext re-enters the
 * coroutine.  Like QEMU's, it replaces any handler already set on the fd
 * and leaves none behind.
 */
#include <stdio.h>
#include <stdlib.h>

#include "coroutine-int.h"
#include "aio-internal.h"

typedef struct FDYieldUntilData {
    AioContext *ctx;
    Coroutine *co;
    int fd;
} FDYieldUntilData;

static void fd_coroutine_enter(void *opaque)
{
    FDYieldUntilData *data = opaque;

    aio_set_fd_handler(data->ctx, data->fd, NULL, NULL, NULL, NULL, NULL);
    qemu_aio_coroutine_enter(data->ctx, data->co);
}

void coroutine_fn yield_until_fd_readable(int fd)
{
    FDYieldUntilData data;

    if (!qemu_in_coroutine()) {
        error_report("yield_until_fd_readable: called outside coroutine "
                     "context");
        abort();
    }
    data.ctx = qemu_get_current_aio_context();
    if (!data.ctx) {
        error_report("yield_until_fd_readable: this thread has no current "
                     "AioContext");
        abort();
    }
    data.co = qemu_coroutine_self();
    data.fd = fd;
    aio_set_fd_handler(data.ctx, fd, fd_coroutine_enter, NULL, NULL, NULL,
                       &data);
    qemu_coroutine_yield();
}
