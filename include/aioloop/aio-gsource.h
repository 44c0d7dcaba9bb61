/*
 * GLib integration: run an AioContext inside a GMainContext.
 *
 * QEMU's aio_get_g_source() and aio_context_use_g_source().  This header
 * does not include <glib.h>: it names GSource by its struct tag, so
 * programs without GLib can include the umbrella header.  The functions
 * exist in every build; without GLib (meson -Dglib=disabled, or GLib not
 * found), aio_get_g_source() aborts with a message saying so.
 */
#ifndef AIOLOOP_AIO_GSOURCE_H
#define AIOLOOP_AIO_GSOURCE_H

#include <aioloop/compiler.h>
#include <aioloop/aio.h>

AIOLOOP_BEGIN_DECLS

struct _GSource;

/**
 * aio_get_g_source: a GSource that runs @ctx in a GLib main loop
 * @ctx: the context
 *
 * Attach it with g_source_attach(); each g_main_context_iteration() of
 * that GMainContext then runs @ctx's ready BHs, fd handlers and timers,
 * like aio_poll(@ctx, false) after waiting for them (no adaptive polling).
 * The GSource is created on the first call and shared by later ones; it
 * holds a reference to @ctx until it is finalized.  The thread iterating
 * the GMainContext must be @ctx's home thread (the first to run it becomes
 * it); aio_poll(@ctx) in that same thread may be mixed with it.  Every fd
 * monitor (poll, epoll, io_uring) works under the GSource.
 *
 * Thread: any.  Aborts with a message in a build without GLib.
 *
 * Returns: a new reference to the GSource (release with g_source_unref()).
 */
AIOLOOP_API struct _GSource *aio_get_g_source(AioContext *ctx);

/**
 * aio_context_use_g_source: prepare @ctx for use under a GSource
 * @ctx: the context
 *
 * QEMU switched a context away from io_uring here, because its GSource
 * could not submit io_uring requests.  aioloop's GSource submits them in
 * its prepare callback, so every fd monitor stays in use and this does
 * nothing; it is kept so that QEMU code compiles unchanged.
 *
 * Thread: any.
 */
AIOLOOP_API void aio_context_use_g_source(AioContext *ctx);

AIOLOOP_END_DECLS

#endif
