/*
 * aioloop-nbd internals shared by export.c and session.c.
 *
 * Who touches what:
 *  - NBDServer: the main loop thread only, except @connections (atomic).
 *  - NBDExport: settings are fixed after creation.  @ctx changes only in a
 *    drained section; @clients, @quiescing and @deleting change under
 *    @lock; @busy, @in_flight and @requests are atomics; @refs and @next
 *    belong to the main loop thread.
 *  - NBDClient: while attached and not parked, only the export's context
 *    thread touches it (its coroutines and BHs); while negotiating, the
 *    main loop; while parked (drained), whoever holds the export's lock.
 */
#ifndef AIOLOOP_NBD_INTERNAL_H
#define AIOLOOP_NBD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <aioloop/aioloop.h>
#include <aioloop/coroutine.h>
#include <aioloop/iothread.h>

#include "channel.h"
#include "nbd-proto.h"
#include "nbd-server.h"

/*
 * Requests one client may have in flight, and their payload bytes.  Replies
 * wait for the socket, so payload read ahead of it only ages out of the CPU
 * cache: a few MiB keep a disk busy without that (docs/nbd.md, "Limits").
 */
#define NBD_CLIENT_MAX_REQUESTS 64
#define NBD_CLIENT_MAX_BYTES    (4u * 1024 * 1024)
/*
 * A drain waits this long for clients in the middle of sending a request
 * or not reading their replies, then disconnects them, and looks for more
 * every NBD_DRAIN_RECHECK_NS while it still waits (export.c).
 */
#define NBD_DRAIN_STALL_NS (5 * 1000000000LL)
#define NBD_DRAIN_RECHECK_NS (1000000000LL)
/* A client must finish the handshake within this time. */
#define NBD_HANDSHAKE_TIMEOUT_NS (10 * 1000000000LL)

typedef struct NBDClient NBDClient;

struct NBDClient {
    NBDServer *srv;
    NBDExport *exp;           /* NULL while negotiating */
    NBDChannel chan;
    NBDClient *next;          /* in exp->clients or srv->negotiating */

    /* Negotiation results. */
    bool no_zeroes;
    bool structured;
    char *meta_export;        /* SET_META_CONTEXT selected base:allocation */
    NBDExportLimits lim;
    QEMUTimer *handshake_timer;

    /* Transmission (the export's context thread). */
    CoMutex send_lock;
    unsigned nb_requests;
    uint64_t inflight_bytes;
    Coroutine *mem_waiter;    /* a reader waiting for payload budget */
    bool recv_running;        /* a coroutine is reading the next request */
    bool parked;              /* drained: no coroutine, no fd handler */
    bool closing;             /* no more requests are read */
    unsigned refs;            /* coroutines running for this client */
};

struct NBDExport {
    NBDServer *srv;
    NBDExport *next;
    /*
     * The server's list holds one reference, and a handshake holds one
     * across every socket write it makes about the export: a write may
     * yield, and export-del may run meanwhile (it counts only attached
     * clients).  The last reference frees the export.
     */
    unsigned refs;
    uint64_t serial;          /* order of creation, for NBD_OPT_LIST */
    char *id, *name, *description, *node_name, *file;
    int fd;
    uint64_t size;
    bool writable, direct;
    AioloopBlockEngine engine;
    uint16_t tx_flags;
    uint32_t min_block;

    IOThread *iothread;       /* NULL: the main loop */
    AioContext *ctx;

    pthread_mutex_t lock;
    NBDClient *clients;
    unsigned nclients;
    bool quiescing;
    bool deleting;
    bool moving;              /* a drained section is open (main thread) */
    QEMUTimer *stall_timer;   /* the drain's, in the main context */
    unsigned stall_cuts;      /* stalled-client cuts scheduled, not run (atomic) */
    int flush_ret;            /* the final flush's result (main thread) */

    unsigned busy;            /* coroutines of attached clients (atomic) */
    unsigned in_flight;       /* requests being served (atomic) */
    uint64_t requests;        /* requests answered (atomic) */
};

typedef struct NBDListener {
    NBDServer *srv;
    int fd;
    char *addr;
    char *unix_path;          /* unlinked at shutdown */
} NBDListener;

struct NBDServer {
    NBDExport *exports;
    NBDClient *negotiating;
    NBDListener *listeners;
    unsigned nlisteners;
    uint64_t next_serial;     /* of the next export added */
    unsigned connections;     /* atomic */
    unsigned max_connections; /* 0: no limit */
    bool shutting_down;
    unsigned flushes_pending; /* final flushes in the thread pool (main thread) */
};

/* export.c */
NBDExport *nbd_export_find(NBDServer *srv, const char *name);
NBDExport *nbd_export_by_id(NBDServer *srv, const char *id);
/* The first listed export added after @serial (any serial: 0), or NULL. */
NBDExport *nbd_export_after(NBDServer *srv, uint64_t serial);
/* Keep @exp's memory (not its image) alive across a yield.  Main thread. */
void nbd_export_ref(NBDExport *exp);
/* Drop a reference; NULL is a no-op. */
void nbd_export_unref(NBDExport *exp);
/*
 * Attach a negotiated client; false if the export is going away.  If the
 * export is not drained, the client's first trip is counted as running and
 * *ctx is where it must run; otherwise the client is parked.
 */
bool nbd_export_attach(NBDExport *exp, NBDClient *client, AioContext **ctx);
/* Take a client off its export's list (any thread). */
void nbd_export_detach(NBDExport *exp, NBDClient *client);
void nbd_export_busy_dec(NBDExport *exp);
/*
 * Drain every export (all at once: the wait is the slowest export's, not
 * the sum), flush it, free its clients; the first flush error.
 */
int nbd_exports_shutdown(NBDServer *srv);
void nbd_exports_free(NBDServer *srv);

/* session.c */
void coroutine_fn nbd_client_negotiate_co(void *opaque);
void coroutine_fn nbd_client_trip_co(void *opaque);
/* Start a coroutine reading the next request if the client may (ctx). */
void nbd_client_next_request(NBDClient *client);
/* Free a client nobody runs for (parked, or refs dropped to 0). */
void nbd_client_free(NBDClient *client);

#endif /* AIOLOOP_NBD_INTERNAL_H */
