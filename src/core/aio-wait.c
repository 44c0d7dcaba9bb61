/*
 * AIO_WAIT_WHILE support: aio_wait_kick() and aio_wait_bh_oneshot()
 * (QEMU's util/aio-wait.c).  The waiting itself is the macro in
 * include/aioloop/aio-wait.h.
 */
#include <aioloop/aio-wait.h>
#include <aioloop/main-loop.h>

#include <stdlib.h>

#include "aio-internal.h"

AioWait global_aio_wait;

AioContext *aioloop_wait_main_context(const char *caller)
{
    AioContext *main_ctx = qemu_get_aio_context();

    if (!main_ctx) {
        error_report("%s: the calling thread is not the AioContext's home "
                     "thread and there is no main loop to run instead "
                     "(qemu_init_main_loop() was not called)", caller);
        abort();
    }
    if (qemu_get_current_aio_context() != main_ctx) {
        error_report("%s: called from a thread that is neither the "
                     "AioContext's home thread nor the main thread", caller);
        abort();
    }
    return main_ctx;
}

static void dummy_bh_cb(void *opaque)
{
    /* Nothing: running it makes the waiter's aio_poll() return. */
    (void)opaque;
}

void aio_wait_kick(void)
{
    AioContext *main_ctx;

    /*
     * Make the caller's change of the condition visible before reading
     * num_waiters.  Pairs with the fence after the increment in
     * AIO_WAIT_WHILE_INTERNAL(): either the waiter sees the new condition,
     * or we see the waiter.
     */
    smp_mb();
    if (!qatomic_read(&global_aio_wait.num_waiters)) {
        return;
    }
    main_ctx = qemu_get_aio_context();
    if (main_ctx) {
        aio_bh_schedule_oneshot(main_ctx, dummy_bh_cb, NULL);
    }
}

typedef struct AioWaitBHData {
    bool done; /* atomic: release store by the BH, acquire by the waiter */
    QEMUBHFunc *cb;
    void *opaque;
} AioWaitBHData;

static void aio_wait_bh(void *opaque)
{
    AioWaitBHData *data = opaque;

    data->cb(data->opaque);
    /* @data lives on the waiter's stack: don't touch it after this store. */
    qatomic_store_release(&data->done, true);
    aio_wait_kick();
}

void aio_wait_bh_oneshot(AioContext *ctx, QEMUBHFunc *cb, void *opaque)
{
    AioWaitBHData data = { .done = false, .cb = cb, .opaque = opaque };

    aioloop_wait_main_context("aio_wait_bh_oneshot");
    aio_bh_schedule_oneshot(ctx, aio_wait_bh, &data);
    AIO_WAIT_WHILE_UNLOCKED(NULL, !qatomic_load_acquire(&data.done));
}
