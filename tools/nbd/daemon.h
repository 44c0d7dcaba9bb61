/*
 * aioloop-nbd's daemon state and the option syntax it shares between the
 * command line and the control socket (qemu-storage-daemon's keyval:
 * "iothread,id=io0,poll-max-ns=0", a ",," stands for a comma in a value).
 */
#ifndef AIOLOOP_NBD_DAEMON_H
#define AIOLOOP_NBD_DAEMON_H

#include <stdbool.h>

#include <aioloop/aioloop.h>
#include <aioloop/iothread.h>

#include "nbd-server.h"

typedef struct KeyVal {
    unsigned n;
    struct {
        char *key;
        char *val;
        bool used;
    } *kv;
} KeyVal;

/* Parse "a=1,b=2"; a first item without '=' is @implied_key's value. */
int keyval_parse(KeyVal *kv, const char *str, const char *implied_key,
                 Error **errp);
void keyval_add(KeyVal *kv, const char *key, const char *val);
void keyval_free(KeyVal *kv);
const char *keyval_get(KeyVal *kv, const char *key);
/* Error if a key was never looked at: a typo must not pass silently. */
int keyval_check_unused(KeyVal *kv, const char *what, Error **errp);

typedef struct BlockdevConf {
    char *node_name;
    char *filename;
    bool direct;
    bool read_only;
    AioloopBlockEngine engine;
} BlockdevConf;

typedef struct Daemon {
    NBDServer *srv;
    IOThread **iothreads;
    unsigned niothreads;
    BlockdevConf *blockdevs;
    unsigned nblockdevs;
    volatile int quit;        /* set by signals and the quit command */
} Daemon;

int daemon_object_add(Daemon *d, KeyVal *kv, Error **errp);
int daemon_blockdev_add(Daemon *d, KeyVal *kv, Error **errp);
int daemon_export_add(Daemon *d, KeyVal *kv, Error **errp);
/* "inet:HOST:PORT" or "unix:PATH" from addr.type=... keys. */
int daemon_nbd_server_add(Daemon *d, KeyVal *kv, Error **errp);
void daemon_request_quit(Daemon *d);

/* The control socket (monitor.c). */
int monitor_start(Daemon *d, const char *path, Error **errp);
void monitor_stop(void);

#endif /* AIOLOOP_NBD_DAEMON_H */
