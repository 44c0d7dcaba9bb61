/* hello.c: a bottom half and a timer on an AioContext (see README.md). */
#include <stdio.h>
#include <aioloop/aioloop.h>

static void bh_cb(void *opaque)
{
    puts("bottom half ran");
    --*(int *)opaque;
}

static void timer_cb(void *opaque)
{
    puts("timer fired");
    --*(int *)opaque;
}

int main(void)
{
    int pending = 2;
    AioContext *ctx = aio_context_new(&error_fatal);
    QEMUTimer *timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_MS,
                                     timer_cb, &pending);

    aio_bh_schedule_oneshot(ctx, bh_cb, &pending); /* runs on the next poll */
    timer_mod(timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + 10);
    while (pending > 0) {
        aio_poll(ctx, true); /* sleep until something is due, then run it */
    }
    timer_free(timer);
    aio_context_unref(ctx);
    return 0;
}
