/* Built instead of fdmon-io_uring.c when liburing is not available. */
#include <errno.h>

#include "../core/aio-internal.h"

int fdmon_io_uring_setup(AioContext *ctx)
{
    (void)ctx;
    return -ENOSYS;
}

uint64_t fdmon_io_uring_probes(AioContext *ctx)
{
    (void)ctx;
    return 0;
}
