/*
 * aioloop-nbd's server: exports, client sessions and listeners.
 *
 * Threads: everything here is called from the main loop thread (the one
 * that called qemu_init_main_loop()), except where noted.  A client is
 * negotiated in the main context; once it picks an export, it is served in
 * the export's context (an IOThread or the main loop) until it leaves.
 */
#ifndef AIOLOOP_NBD_SERVER_H
#define AIOLOOP_NBD_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <aioloop/aioloop.h>
#include <aioloop/block-io.h>

typedef struct NBDServer NBDServer;
typedef struct NBDExport NBDExport;

typedef enum NBDMultiConn {
    NBD_MULTI_CONN_AUTO,
    NBD_MULTI_CONN_ON,
    NBD_MULTI_CONN_OFF,
} NBDMultiConn;

/* One export's settings (--export, --blockdev, export-add). */
typedef struct NBDExportConfig {
    const char *id;           /* unique; required */
    const char *name;         /* export name; NULL = id */
    const char *description;  /* NULL = none */
    const char *node_name;    /* the --blockdev it came from, or NULL */
    const char *file;         /* the image file; required */
    bool writable;
    bool direct;              /* O_DIRECT (cache=none / cache.direct=on) */
    AioloopBlockEngine engine;/* AUTO = the context's engine */
    NBDMultiConn multi_conn;
    const char *iothread;     /* IOThread id, NULL = the main loop */
} NBDExportConfig;

/* One export, as query-exports reports it. */
typedef struct NBDExportInfo {
    const char *id;
    const char *name;
    const char *node_name;
    const char *file;
    const char *iothread;     /* NULL = the main loop */
    const char *engine;
    bool writable;
    bool direct;
    uint64_t size;
    unsigned clients;
    unsigned in_flight;
    uint64_t requests;        /* requests answered since the export was added */
} NBDExportInfo;

NBDServer *nbd_server_new(void);

/*
 * Listen on @addr: "inet:HOST:PORT" (HOST may be a bracketed IPv6 address)
 * or "unix:PATH".  New connections are negotiated in the main context.
 */
int nbd_server_listen(NBDServer *srv, const char *addr, Error **errp);

/* Refuse connections beyond @max open ones (0: no limit). */
void nbd_server_set_max_connections(NBDServer *srv, unsigned max);

/* Serve an already connected socket (the fuzz target's way in). */
void nbd_server_add_connection(NBDServer *srv, int fd);

NBDExport *nbd_export_add(NBDServer *srv, const NBDExportConfig *cfg,
                          Error **errp);

/*
 * Remove export @id.  Without @hard, fails while clients are connected;
 * with it, their in-flight requests finish and they are disconnected.
 */
int nbd_export_del(NBDServer *srv, const char *id, bool hard, Error **errp);

/*
 * Move export @id to IOThread @iothread (NULL: the main loop) while clients
 * keep using it: a drained section stops reading new requests, waits for
 * the in-flight ones, re-attaches the clients to the new context and
 * resumes them.  No request is lost or answered twice.
 */
int nbd_export_set_iothread(NBDServer *srv, const char *id,
                            const char *iothread, Error **errp);

/* Call @fn for each export, in the order they were added. */
void nbd_export_foreach(NBDServer *srv,
                        void (*fn)(const NBDExportInfo *info, void *opaque),
                        void *opaque);

/*
 * Stop accepting, finish in-flight requests, flush writable exports and
 * disconnect every client.  Returns 0, or -errno if a flush failed.
 */
int nbd_server_shutdown(NBDServer *srv);

/* Connections open (negotiating or attached); 0 once all have left. */
unsigned nbd_server_connections(NBDServer *srv);

void nbd_server_free(NBDServer *srv);

#endif /* AIOLOOP_NBD_SERVER_H */
