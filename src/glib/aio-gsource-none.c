/*
 * Built instead of aio-gsource.c when GLib is not available: the symbols
 * exist in every build, so the ABI does not depend on the build options.
 */
#include <aioloop/aio-gsource.h>

#include <stdlib.h>

#include "../core/aio-internal.h"

struct _GSource *aio_get_g_source(AioContext *ctx)
{
    (void)ctx;
    error_report("aio_get_g_source: aioloop was built without GLib "
                 "(meson option -Dglib=enabled needs libglib2.0-dev)");
    abort();
}

void aio_context_use_g_source(AioContext *ctx)
{
    (void)ctx;
}
