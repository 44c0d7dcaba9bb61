/*
 * Options in qemu-storage-daemon's shape: --object iothread,...,
 * --blockdev driver=file,..., --export type=nbd,..., --nbd-server addr.*.
 * The control socket turns its JSON arguments into the same KeyVal, so
 * both paths share one parser per object.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <aioloop/main-loop.h>

#include "daemon.h"

void keyval_add(KeyVal *kv, const char *key, const char *val)
{
    kv->kv = realloc(kv->kv, (kv->n + 1) * sizeof(*kv->kv));
    if (!kv->kv) {
        abort();
    }
    kv->kv[kv->n].key = strdup(key);
    kv->kv[kv->n].val = strdup(val);
    kv->kv[kv->n].used = false;
    kv->n++;
}

int keyval_parse(KeyVal *kv, const char *str, const char *implied_key,
                 Error **errp)
{
    size_t len = strlen(str);
    char *item = malloc(len + 1);
    const char *p = str;
    bool first = true;

    if (!item) {
        abort();
    }
    while (*p) {
        size_t n = 0;
        char *eq;

        /* One item up to an unescaped comma; ",," is a literal comma. */
        while (*p) {
            if (*p == ',') {
                if (p[1] == ',') {
                    item[n++] = ',';
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            item[n++] = *p++;
        }
        item[n] = '\0';
        eq = strchr(item, '=');
        if (!eq) {
            if (!first || !implied_key || !n) {
                error_setg(errp, "'%s': expected key=value in '%s'", item,
                           str);
                free(item);
                return -EINVAL;
            }
            keyval_add(kv, implied_key, item);
        } else {
            *eq = '\0';
            if (!item[0]) {
                error_setg(errp, "empty key in '%s'", str);
                free(item);
                return -EINVAL;
            }
            if (keyval_get(kv, item)) {
                error_setg(errp, "'%s' given twice in '%s'", item, str);
                free(item);
                return -EINVAL;
            }
            keyval_add(kv, item, eq + 1);
        }
        first = false;
    }
    free(item);
    /* keyval_get() above marked keys as used while checking duplicates. */
    for (unsigned i = 0; i < kv->n; i++) {
        kv->kv[i].used = false;
    }
    return 0;
}

void keyval_free(KeyVal *kv)
{
    for (unsigned i = 0; i < kv->n; i++) {
        free(kv->kv[i].key);
        free(kv->kv[i].val);
    }
    free(kv->kv);
    kv->kv = NULL;
    kv->n = 0;
}

const char *keyval_get(KeyVal *kv, const char *key)
{
    for (unsigned i = 0; i < kv->n; i++) {
        if (!strcmp(kv->kv[i].key, key)) {
            kv->kv[i].used = true;
            return kv->kv[i].val;
        }
    }
    return NULL;
}

int keyval_check_unused(KeyVal *kv, const char *what, Error **errp)
{
    for (unsigned i = 0; i < kv->n; i++) {
        if (!kv->kv[i].used) {
            error_setg(errp, "%s: unknown parameter '%s'", what,
                       kv->kv[i].key);
            return -EINVAL;
        }
    }
    return 0;
}

static int get_bool(KeyVal *kv, const char *key, bool def, bool *out,
                    Error **errp)
{
    const char *v = keyval_get(kv, key);

    if (!v) {
        *out = def;
    } else if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "false") ||
               !strcmp(v, "no")) {
        *out = false;
    } else {
        error_setg(errp, "%s: '%s' is not on/off", key, v);
        return -EINVAL;
    }
    return 0;
}

static int get_engine(KeyVal *kv, const char *key, AioloopBlockEngine *out,
                      Error **errp)
{
    const char *v = keyval_get(kv, key);

    if (!v || !strcmp(v, "auto")) {
        *out = AIOLOOP_BLOCK_ENGINE_AUTO;
    } else if (!strcmp(v, "io_uring")) {
        *out = AIOLOOP_BLOCK_ENGINE_IO_URING;
    } else if (!strcmp(v, "native") || !strcmp(v, "linux-aio")) {
        *out = AIOLOOP_BLOCK_ENGINE_LINUX_AIO;
    } else if (!strcmp(v, "threads")) {
        *out = AIOLOOP_BLOCK_ENGINE_THREADS;
    } else {
        error_setg(errp, "%s: '%s' is not threads, native, io_uring or auto",
                   key, v);
        return -EINVAL;
    }
    return 0;
}

/* cache=none|directsync → O_DIRECT; writeback|writethrough|unsafe → not. */
static int get_cache(KeyVal *kv, bool *direct, Error **errp)
{
    const char *v = keyval_get(kv, "cache");

    if (!v) {
        return get_bool(kv, "cache.direct", false, direct, errp);
    }
    if (!strcmp(v, "none") || !strcmp(v, "directsync")) {
        *direct = true;
    } else if (!strcmp(v, "writeback") || !strcmp(v, "writethrough") ||
               !strcmp(v, "unsafe")) {
        *direct = false;
    } else {
        error_setg(errp, "cache: '%s' is not none or writeback", v);
        return -EINVAL;
    }
    return 0;
}

int daemon_object_add(Daemon *d, KeyVal *kv, Error **errp)
{
    static const char *const params[] = {
        "poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch",
        "thread-pool-min", "thread-pool-max",
    };
    const char *type = keyval_get(kv, "qom-type");
    const char *id = keyval_get(kv, "id");
    IOThread *iothread;

    if (!type || strcmp(type, "iothread")) {
        error_setg(errp, "--object: only 'iothread' objects exist here");
        return -EINVAL;
    }
    if (!id || !id[0]) {
        error_setg(errp, "iothread: 'id' is required");
        return -EINVAL;
    }
    if (iothread_by_id(id)) {
        error_setg(errp, "iothread '%s' exists already", id);
        return -EEXIST;
    }
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        keyval_get(kv, params[i]);
    }
    if (keyval_check_unused(kv, "iothread", errp) < 0) {
        return -EINVAL;
    }
    iothread = iothread_create(id, errp);
    if (!iothread) {
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        const char *v = keyval_get(kv, params[i]);
        char *end;
        long long n;

        if (!v) {
            continue;
        }
        errno = 0;
        n = strtoll(v, &end, 0);
        if (errno || *end || end == v) {
            error_setg(errp, "iothread '%s': %s: '%s' is not a number", id,
                       params[i], v);
            iothread_destroy(iothread);
            return -EINVAL;
        }
        if (!iothread_set_param(iothread, params[i], n, errp)) {
            iothread_destroy(iothread);
            return -EINVAL;
        }
    }
    d->iothreads = realloc(d->iothreads,
                           (d->niothreads + 1) * sizeof(*d->iothreads));
    if (!d->iothreads) {
        abort();
    }
    d->iothreads[d->niothreads++] = iothread;
    return 0;
}

int daemon_blockdev_add(Daemon *d, KeyVal *kv, Error **errp)
{
    const char *driver = keyval_get(kv, "driver");
    const char *node = keyval_get(kv, "node-name");
    const char *file = keyval_get(kv, "filename");
    BlockdevConf b = { 0 };

    if (!driver || (strcmp(driver, "file") && strcmp(driver, "host_device"))) {
        error_setg(errp, "--blockdev: driver must be 'file' or "
                   "'host_device'");
        return -EINVAL;
    }
    if (!node || !file) {
        error_setg(errp, "--blockdev: 'node-name' and 'filename' are "
                   "required");
        return -EINVAL;
    }
    for (unsigned i = 0; i < d->nblockdevs; i++) {
        if (!strcmp(d->blockdevs[i].node_name, node)) {
            error_setg(errp, "node name '%s' is already in use", node);
            return -EEXIST;
        }
    }
    if (get_cache(kv, &b.direct, errp) < 0 ||
        get_bool(kv, "read-only", false, &b.read_only, errp) < 0 ||
        get_engine(kv, "aio", &b.engine, errp) < 0 ||
        keyval_check_unused(kv, "blockdev", errp) < 0) {
        return -EINVAL;
    }
    b.node_name = strdup(node);
    b.filename = strdup(file);
    d->blockdevs = realloc(d->blockdevs,
                           (d->nblockdevs + 1) * sizeof(*d->blockdevs));
    if (!d->blockdevs) {
        abort();
    }
    d->blockdevs[d->nblockdevs++] = b;
    return 0;
}

int daemon_export_add(Daemon *d, KeyVal *kv, Error **errp)
{
    const char *type = keyval_get(kv, "type");
    const char *node = keyval_get(kv, "node-name");
    const char *mc = keyval_get(kv, "multi-conn");
    NBDExportConfig cfg = {
        .id = keyval_get(kv, "id"),
        .name = keyval_get(kv, "name"),
        .description = keyval_get(kv, "description"),
        .file = keyval_get(kv, "file"),
        .iothread = keyval_get(kv, "iothread"),
        .node_name = node,
    };
    bool read_only = false;

    if (type && strcmp(type, "nbd")) {
        error_setg(errp, "--export: only type=nbd exists here");
        return -EINVAL;
    }
    if (get_bool(kv, "writable", false, &cfg.writable, errp) < 0) {
        return -EINVAL;
    }
    if (node) {
        BlockdevConf *b = NULL;

        if (cfg.file) {
            error_setg(errp, "export: give 'node-name' or 'file', not both");
            return -EINVAL;
        }
        for (unsigned i = 0; i < d->nblockdevs; i++) {
            if (!strcmp(d->blockdevs[i].node_name, node)) {
                b = &d->blockdevs[i];
            }
        }
        if (!b) {
            error_setg(errp, "export: no block node '%s'", node);
            return -ENOENT;
        }
        cfg.file = b->filename;
        cfg.direct = b->direct;
        cfg.engine = b->engine;
        read_only = b->read_only;
    } else if (get_cache(kv, &cfg.direct, errp) < 0 ||
               get_engine(kv, "aio", &cfg.engine, errp) < 0) {
        return -EINVAL;
    }
    if (cfg.writable && read_only) {
        error_setg(errp, "export '%s': node '%s' is read-only", cfg.id,
                   node);
        return -EINVAL;
    }
    if (!mc || !strcmp(mc, "auto")) {
        cfg.multi_conn = NBD_MULTI_CONN_AUTO;
    } else if (!strcmp(mc, "on")) {
        cfg.multi_conn = NBD_MULTI_CONN_ON;
    } else if (!strcmp(mc, "off")) {
        cfg.multi_conn = NBD_MULTI_CONN_OFF;
    } else {
        error_setg(errp, "multi-conn: '%s' is not on, off or auto", mc);
        return -EINVAL;
    }
    if (keyval_check_unused(kv, "export", errp) < 0) {
        return -EINVAL;
    }
    return nbd_export_add(d->srv, &cfg, errp) ? 0 : -EINVAL;
}

int daemon_nbd_server_add(Daemon *d, KeyVal *kv, Error **errp)
{
    const char *type = keyval_get(kv, "addr.type");
    const char *max = keyval_get(kv, "max-connections");
    char addr[4200];

    if (max) {
        char *end;
        unsigned long n = strtoul(max, &end, 10);

        if (*end || end == max || n > 1000000) {
            error_setg(errp, "max-connections: '%s' is not a number", max);
            return -EINVAL;
        }
        nbd_server_set_max_connections(d->srv, (unsigned)n);
    }
    if (!type || !strcmp(type, "inet")) {
        const char *host = keyval_get(kv, "addr.host");
        const char *port = keyval_get(kv, "addr.port");

        host = host ? host : "127.0.0.1";
        port = port ? port : "10809";
        snprintf(addr, sizeof(addr), strchr(host, ':') ? "inet:[%s]:%s" :
                 "inet:%s:%s", host, port);
    } else if (!strcmp(type, "unix")) {
        const char *path = keyval_get(kv, "addr.path");

        if (!path) {
            error_setg(errp, "--nbd-server: addr.type=unix needs addr.path");
            return -EINVAL;
        }
        snprintf(addr, sizeof(addr), "unix:%s", path);
    } else {
        error_setg(errp, "--nbd-server: addr.type must be inet or unix");
        return -EINVAL;
    }
    if (keyval_check_unused(kv, "nbd-server", errp) < 0) {
        return -EINVAL;
    }
    return nbd_server_listen(d->srv, addr, errp);
}

void daemon_request_quit(Daemon *d)
{
    d->quit = 1;
    qemu_notify_event();
}
