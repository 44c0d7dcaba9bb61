/*
 * The control socket: a UNIX socket speaking QMP's shape with jansson.
 *
 *   <- {"QMP": {"version": {...}, "capabilities": []}}
 *   -> {"execute": "query-exports", "id": 1}
 *   <- {"return": [...], "id": 1}
 *
 * Input is a stream of JSON objects (newlines optional); every command gets
 * exactly one reply line.  Commands run in the main loop, outside any
 * coroutine, so export-set-iothread and export-del may wait (AIO_WAIT_WHILE)
 * while the loop keeps serving everything else; a connection's own input
 * is not read while its command runs.
 *
 * Nothing here blocks the loop on a control client: replies go to a
 * per-connection buffer that a write handler empties as the socket takes
 * them.  While more than MON_OUTPUT_HIGH bytes of replies wait, that
 * connection's commands wait too (its input is not read), so a client that
 * does not read its replies costs at most its input buffer, that much
 * output and one reply; a reply that would take the output past
 * MON_MAX_OUTPUT drops the connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include <aioloop/main-loop.h>

#include "daemon.h"

#define MON_MAX_INPUT (1024 * 1024)
#define MON_OUTPUT_HIGH (64 * 1024)
#define MON_MAX_OUTPUT (8 * 1024 * 1024)

typedef struct MonConn {
    int fd;
    char *buf;                /* input not processed yet */
    size_t len;
    char *out;                /* replies not sent yet: out[out_off, out_len) */
    size_t out_off, out_len, out_size;
    bool busy;                /* a command of this connection is running */
    bool closing;             /* read no more; close once the output is out */
    bool dead;                /* close now */
    struct MonConn *next;
} MonConn;

static struct {
    Daemon *d;
    int fd;
    char *path;
    MonConn *conns;
} mon = { .fd = -1 };

static void conn_read(void *opaque);
static void conn_write(void *opaque);

static size_t conn_pending(const MonConn *c)
{
    return c->out_len - c->out_off;
}

/* Watch for what the connection can take now. */
static void conn_update_handler(MonConn *c)
{
    bool rd = !c->busy && !c->closing && !c->dead &&
              conn_pending(c) < MON_OUTPUT_HIGH;
    bool wr = !c->dead && conn_pending(c) > 0;

    aio_set_fd_handler(qemu_get_aio_context(), c->fd,
                       rd ? conn_read : NULL, wr ? conn_write : NULL,
                       NULL, NULL, c);
}

/* Send what the socket takes without waiting. */
static void conn_flush(MonConn *c)
{
    while (conn_pending(c) && !c->dead) {
        ssize_t n = send(c->fd, c->out + c->out_off, conn_pending(c),
                         MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            break;
        } else {
            c->dead = true;
        }
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
    }
}

static void conn_send(MonConn *c, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    size_t len, pending = conn_pending(c);

    if (!s || c->dead) {
        free(s);
        return;
    }
    len = strlen(s);
    if (pending + len + 1 > MON_MAX_OUTPUT) {
        c->dead = true;
        free(s);
        return;
    }
    if (c->out_off) {
        memmove(c->out, c->out + c->out_off, pending);
        c->out_off = 0;
        c->out_len = pending;
    }
    if (c->out_len + len + 1 > c->out_size) {
        /*
         * Doubling, so replies queued behind a slow reader do not cost a
         * realloc each; @need is within MON_MAX_OUTPUT (checked above).
         */
        size_t need = c->out_len + len + 1;
        size_t size = c->out_size * 2 > need ? c->out_size * 2 : need;
        char *out;

        if (size > MON_MAX_OUTPUT) {
            size = MON_MAX_OUTPUT;
        }
        out = realloc(c->out, size);

        if (!out) {
            c->dead = true;
            free(s);
            return;
        }
        c->out = out;
        c->out_size = size;
    }
    memcpy(c->out + c->out_len, s, len);
    c->out[c->out_len + len] = '\n';
    c->out_len += len + 1;
    free(s);
    conn_flush(c);
}

static json_t *error_reply(const char *desc)
{
    return json_pack("{s:{s:s,s:s}}", "error", "class", "GenericError",
                     "desc", desc);
}

/* JSON arguments to keyval strings, as the command line would give them. */
static int args_to_keyval(json_t *args, KeyVal *kv, Error **errp)
{
    const char *key;
    json_t *val;

    json_object_foreach(args, key, val) {
        char num[64];

        switch (json_typeof(val)) {
        case JSON_STRING:
            keyval_add(kv, key, json_string_value(val));
            break;
        case JSON_TRUE:
            keyval_add(kv, key, "on");
            break;
        case JSON_FALSE:
            keyval_add(kv, key, "off");
            break;
        case JSON_INTEGER:
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(val));
            keyval_add(kv, key, num);
            break;
        case JSON_NULL:
            break;      /* absent */
        default:
            error_setg(errp, "argument '%s': expected a string, number or "
                       "boolean", key);
            return -EINVAL;
        }
    }
    return 0;
}

static void export_to_json(const NBDExportInfo *info, void *opaque)
{
    json_t *list = opaque;

    json_array_append_new(list, json_pack(
        "{s:s,s:s,s:s?,s:s,s:b,s:b,s:s?,s:s,s:I,s:i,s:i,s:I}",
        "id", info->id, "name", info->name, "node-name", info->node_name,
        "file", info->file, "writable", info->writable,
        "direct", info->direct, "iothread", info->iothread,
        "aio", info->engine, "size", (json_int_t)info->size,
        "clients", (int)info->clients, "in-flight", (int)info->in_flight,
        "requests", (json_int_t)info->requests));
}

static json_t *context_stats(AioContext *ctx)
{
    AioloopContextStats st;
    AioloopBlockStats bs;

    aioloop_context_get_stats(ctx, &st);
    aioloop_block_get_stats(ctx, &bs);
    return json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:I,s:I}",
                     "fdmon", aioloop_context_fdmon_name(ctx),
                     "iterations", (json_int_t)st.iterations,
                     "bh-runs", (json_int_t)st.bh_runs,
                     "fd-dispatches", (json_int_t)st.fd_dispatches,
                     "poll-hits", (json_int_t)st.poll_hits,
                     "poll-misses", (json_int_t)st.poll_misses,
                     "blocked-ns", (json_int_t)st.blocked_ns,
                     "wakeups", (json_int_t)st.wakeups,
                     "block-engine", aioloop_block_engine_name(bs.engine),
                     "block-requests", (json_int_t)bs.requests,
                     "block-submits", (json_int_t)bs.submits);
}

static json_t *query_iothreads(Daemon *d)
{
    static const char *const params[] = {
        "poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch",
    };
    json_t *list = json_array();

    for (unsigned i = 0; i < d->niothreads; i++) {
        IOThread *t = d->iothreads[i];
        json_t *o = context_stats(iothread_get_aio_context(t));

        json_object_set_new(o, "id", json_string(iothread_get_id(t)));
        json_object_set_new(o, "thread-id",
                            json_integer(iothread_get_thread_id(t)));
        for (size_t k = 0; k < sizeof(params) / sizeof(params[0]); k++) {
            json_object_set_new(o, params[k], json_integer(
                iothread_get_param(t, params[k], NULL)));
        }
        json_array_append_new(list, o);
    }
    return list;
}

/* The JSON types an argument may have. */
enum {
    ARG_STRING = 1,
    ARG_NULL = 2,
    ARG_ARRAY = 4,
};

typedef struct ArgSpec {
    const char *name;
    unsigned types;           /* ARG_* */
    bool required;
} ArgSpec;

static const ArgSpec no_args[] = {
    { NULL },
};
static const ArgSpec capabilities_args[] = {
    { "enable", ARG_ARRAY, false },
    { NULL },
};
static const ArgSpec export_del_args[] = {
    { "id", ARG_STRING, true },
    { "mode", ARG_STRING, false },
    { NULL },
};
static const ArgSpec set_iothread_args[] = {
    { "id", ARG_STRING, true },
    { "iothread", ARG_STRING | ARG_NULL, true },   /* null: the main loop */
    { NULL },
};

static const struct {
    const char *name;
    const ArgSpec *args;      /* NULL: export-add checks its own keys */
} commands[] = {
    { "qmp_capabilities", capabilities_args },
    { "query-exports", no_args },
    { "query-iothreads", no_args },
    { "query-main-loop", no_args },
    { "export-add", NULL },
    { "export-del", export_del_args },
    { "export-set-iothread", set_iothread_args },
    { "quit", no_args },
};

static bool arg_type_ok(json_t *val, unsigned types)
{
    return ((types & ARG_STRING) && json_is_string(val)) ||
           ((types & ARG_NULL) && json_is_null(val)) ||
           ((types & ARG_ARRAY) && json_is_array(val));
}

/*
 * A misspelt or mistyped argument must fail, not fall back to a default
 * (an export moved to the main loop, a delete in safe mode): QMP's errors.
 */
static int check_args(json_t *args, const ArgSpec *spec, Error **errp)
{
    const char *key;
    json_t *val;

    json_object_foreach(args, key, val) {
        const ArgSpec *a = spec;

        while (a->name && strcmp(a->name, key)) {
            a++;
        }
        if (!a->name) {
            error_setg(errp, "Parameter '%s' is unexpected", key);
            return -EINVAL;
        }
        if (!arg_type_ok(val, a->types)) {
            error_setg(errp, "Invalid parameter type for '%s', expected: %s",
                       key, a->types & ARG_NULL ? "string or null" :
                       a->types & ARG_ARRAY ? "array" : "string");
            return -EINVAL;
        }
    }
    for (const ArgSpec *a = spec; a->name; a++) {
        if (a->required && !json_object_get(args, a->name)) {
            error_setg(errp, "Parameter '%s' is missing", a->name);
            return -EINVAL;
        }
    }
    return 0;
}

static json_t *error_from(Error *err)
{
    json_t *e = error_reply(error_get_pretty(err));

    error_free(err);
    return e;
}

static json_t *run_command(const char *cmd, json_t *args)
{
    Daemon *d = mon.d;
    Error *err = NULL;
    json_t *ret = NULL;
    size_t i;

    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (!strcmp(cmd, commands[i].name)) {
            break;
        }
    }
    if (i == sizeof(commands) / sizeof(commands[0])) {
        error_setg(&err, "unknown command '%s'", cmd);
        return error_from(err);
    }
    if (commands[i].args && check_args(args, commands[i].args, &err) < 0) {
        return error_from(err);
    }
    if (!strcmp(cmd, "qmp_capabilities")) {
        /* We offer none, as the greeting says. */
        if (json_array_size(json_object_get(args, "enable"))) {
            error_setg(&err, "no capability is available");
        }
    } else if (!strcmp(cmd, "query-exports")) {
        ret = json_array();
        nbd_export_foreach(d->srv, export_to_json, ret);
        return ret;
    } else if (!strcmp(cmd, "query-iothreads")) {
        return query_iothreads(d);
    } else if (!strcmp(cmd, "query-main-loop")) {
        return context_stats(qemu_get_aio_context());
    } else if (!strcmp(cmd, "export-add")) {
        KeyVal kv = { 0 };

        if (args_to_keyval(args, &kv, &err) == 0) {
            daemon_export_add(d, &kv, &err);
        }
        keyval_free(&kv);
    } else if (!strcmp(cmd, "export-del")) {
        const char *id = json_string_value(json_object_get(args, "id"));
        const char *mode = json_string_value(json_object_get(args, "mode"));

        if (mode && strcmp(mode, "safe") && strcmp(mode, "hard")) {
            error_setg(&err, "export-del: mode must be 'safe' or 'hard'");
        } else {
            nbd_export_del(d->srv, id, mode && !strcmp(mode, "hard"), &err);
        }
    } else if (!strcmp(cmd, "export-set-iothread")) {
        const char *id = json_string_value(json_object_get(args, "id"));
        json_t *t = json_object_get(args, "iothread");

        nbd_export_set_iothread(d->srv, id, json_string_value(t), &err);
    } else if (!strcmp(cmd, "quit")) {
        daemon_request_quit(d);
    }
    return err ? error_from(err) : json_object();
}

/* Handle one parsed request; returns the reply. */
static json_t *handle(json_t *req)
{
    json_t *exec = json_object_get(req, "execute");
    json_t *args = json_object_get(req, "arguments");
    json_t *reply, *ret;

    if (!json_is_object(req) || !json_is_string(exec)) {
        reply = error_reply("expected {\"execute\": COMMAND, ...}");
    } else if (args && !json_is_object(args)) {
        reply = error_reply("'arguments' must be an object");
    } else {
        json_t *empty = json_object();

        ret = run_command(json_string_value(exec), args ? args : empty);
        json_decref(empty);
        if (json_object_get(ret, "error")) {
            reply = ret;
        } else {
            reply = json_pack("{s:o}", "return", ret);
        }
    }
    if (json_is_object(req) && json_object_get(req, "id")) {
        json_object_set(reply, "id", json_object_get(req, "id"));
    }
    return reply;
}

static void conn_free(MonConn *c)
{
    for (MonConn **pp = &mon.conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    aio_set_fd_handler(qemu_get_aio_context(), c->fd, NULL, NULL, NULL, NULL,
                       NULL);
    close(c->fd);
    free(c->buf);
    free(c->out);
    free(c);
}

/* After a handler: free a connection that is done, else watch it. */
static void conn_settle(MonConn *c)
{
    if (c->closing && !conn_pending(c)) {
        c->dead = true;
    }
    if (c->dead && !c->busy) {
        conn_free(c);
        return;
    }
    conn_update_handler(c);
}

/*
 * Run the complete JSON values at the start of the buffer, until replies
 * back up.  The caller settles the connection afterwards.
 */
static void conn_process(MonConn *c)
{
    while (c->len && !c->dead && !c->closing &&
           conn_pending(c) < MON_OUTPUT_HIGH) {
        json_error_t jerr;
        size_t skip = 0;
        json_t *req, *reply;

        while (skip < c->len && strchr(" \t\r\n", c->buf[skip])) {
            skip++;
        }
        memmove(c->buf, c->buf + skip, c->len - skip);
        c->len -= skip;
        if (!c->len) {
            return;
        }
        req = json_loadb(c->buf, c->len, JSON_DISABLE_EOF_CHECK, &jerr);
        if (!req) {
            if ((size_t)jerr.position >= c->len) {
                return;     /* incomplete: wait for the rest */
            }
            reply = error_reply(jerr.text);
            conn_send(c, reply);
            json_decref(reply);
            /* Cannot find the next value reliably: answer, then close. */
            c->closing = true;
            return;
        }
        memmove(c->buf, c->buf + jerr.position, c->len - (size_t)jerr.position);
        c->len -= (size_t)jerr.position;
        /*
         * Our own input stays unread while the command polls the loop;
         * earlier replies still go out.
         */
        c->busy = true;
        conn_update_handler(c);
        reply = handle(req);
        c->busy = false;
        conn_send(c, reply);
        json_decref(reply);
        json_decref(req);
    }
}

static void conn_read(void *opaque)
{
    MonConn *c = opaque;
    ssize_t n;

    if (c->len == MON_MAX_INPUT) {
        c->dead = true;
    } else {
        n = recv(c->fd, c->buf + c->len, MON_MAX_INPUT - c->len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        if (n == 0) {
            c->closing = true;  /* it may still read what we owe it */
        } else if (n < 0) {
            c->dead = true;
        } else {
            c->len += (size_t)n;
            conn_process(c);
        }
    }
    conn_settle(c);
}

static void conn_write(void *opaque)
{
    MonConn *c = opaque;

    conn_flush(c);
    if (!c->busy) {
        conn_process(c);    /* commands that waited for the replies to go */
    }
    conn_settle(c);
}

static void mon_accept(void *opaque)
{
    (void)opaque;
    for (;;) {
        int fd = accept4(mon.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        MonConn *c;
        json_t *greeting;

        if (fd < 0) {
            return;
        }
        c = calloc(1, sizeof(*c));
        if (!c || !(c->buf = malloc(MON_MAX_INPUT))) {
            free(c);
            close(fd);
            return;
        }
        c->fd = fd;
        c->next = mon.conns;
        mon.conns = c;
        greeting = json_pack("{s:{s:{s:s,s:s},s:[]}}", "QMP", "version",
                             "package", "aioloop-nbd", "version",
                             AIOLOOP_NBD_VERSION, "capabilities");
        conn_send(c, greeting);
        json_decref(greeting);
        conn_settle(c);
    }
}

int monitor_start(Daemon *d, const char *path, Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;

    if (mon.fd >= 0) {
        error_setg(errp, "only one monitor socket");
        return -EEXIST;
    }
    if (strlen(path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "monitor path '%s' is too long", path);
        return -EINVAL;
    }
    strcpy(sun.sun_path, path);
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        unlink(path);
    }
    mon.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (mon.fd < 0 || bind(mon.fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(mon.fd, 16) < 0) {
        error_setg_errno(errp, errno, "cannot listen on '%s'", path);
        if (mon.fd >= 0) {
            close(mon.fd);
        }
        mon.fd = -1;
        return -EINVAL;
    }
    mon.d = d;
    mon.path = strdup(path);
    aio_set_fd_handler(qemu_get_aio_context(), mon.fd, mon_accept, NULL, NULL,
                       NULL, NULL);
    return 0;
}

void monitor_stop(void)
{
    if (mon.fd < 0) {
        return;
    }
    aio_set_fd_handler(qemu_get_aio_context(), mon.fd, NULL, NULL, NULL, NULL,
                       NULL);
    close(mon.fd);
    mon.fd = -1;
    unlink(mon.path);
    free(mon.path);
    mon.path = NULL;
    /* A connection whose command is running is freed when it returns. */
    for (MonConn *c = mon.conns, *next; c; c = next) {
        next = c->next;
        if (!c->busy) {
            conn_flush(c);  /* the reply to quit, if the socket takes it */
            conn_free(c);
        }
    }
}
