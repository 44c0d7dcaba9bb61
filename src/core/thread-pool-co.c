/*
 * thread_pool_submit_co(): the coroutine form of thread_pool_submit_aio().
 *
 * Kept apart from thread-pool.c so the pool itself does not depend on
 * coroutines: the coroutine yields, and the completion (which always runs in
 * the submitting context) wakes it with aio_co_wake().
 */
#include <aioloop/coroutine.h>
#include <aioloop/thread-pool.h>

#include <errno.h>
#include <stdlib.h>

#include "aio-internal.h"

typedef struct ThreadPoolCo {
    Coroutine *co;
    int ret;
} ThreadPoolCo;

static void thread_pool_co_cb(void *opaque, int ret)
{
    ThreadPoolCo *tpc = opaque;

    tpc->ret = ret;
    aio_co_wake(tpc->co);
}

int coroutine_fn thread_pool_submit_co(ThreadPoolFunc *func, void *arg)
{
    ThreadPoolCo tpc = { .co = qemu_coroutine_self(), .ret = -EINPROGRESS };

    if (!qemu_in_coroutine()) {
        error_report("thread_pool_submit_co: called outside a coroutine "
                     "(use thread_pool_submit_aio() with a callback)");
        abort();
    }
    thread_pool_submit_aio(func, arg, thread_pool_co_cb, &tpc);
    qemu_coroutine_yield();
    return tpc.ret;
}
