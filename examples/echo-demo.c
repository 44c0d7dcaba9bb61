/*
 * echo-demo.c: a TCP echo server and its clients on two AioContexts.
 *
 * The server runs on an AioContext driven by its own thread: that thread
 * makes the context its current one, then loops on aio_poll(ctx, true)
 * until a bottom half scheduled from the main thread sets the stop flag.
 * It listens on 127.0.0.1 on an ephemeral port, echoes every byte back
 * through non-blocking sockets (a read handler while there is room in the
 * connection's buffer, a write handler only while output is pending,
 * partial writes kept for later), and prints a progress line once per
 * second from a timer.
 *
 * The clients run on a second AioContext in the main thread: each sends
 * --messages messages of varying size (a few in flight at a time) and
 * checks every echoed byte against what it sent.  At the end the program
 * prints what happened, with each context's counters and fd monitor, and
 * exits 0 only if every byte came back intact.
 *
 * Only the public API is used: #include <aioloop/aioloop.h>.
 *
 * usage: echo-demo [--connections N] [--messages N] [--max-size BYTES]
 *                  [--timeout SECONDS] [--quiet]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <aioloop/aioloop.h>

/* Messages a client may have sent but not yet seen echoed. */
#define PIPELINE_DEPTH 4
/* Echo buffer per server connection: reading stops while it is full. */
#define SERVER_BUF_SIZE (256 * 1024)
#define CLIENT_READ_SIZE (64 * 1024)

typedef struct Options {
    unsigned connections;
    unsigned messages;
    size_t max_size;
    unsigned timeout_s;
    bool quiet;
} Options;

/* ---- server (runs in the server thread) -------------------------------- */

typedef struct Server Server;

typedef struct ServerConn {
    Server *srv;
    int fd;
    uint8_t *buf; /* pending output is buf[head, tail) */
    size_t head;
    size_t tail;
    bool eof;     /* the peer has closed its side */
    bool reading; /* handlers currently registered */
    bool writing;
    struct ServerConn *next;
    struct ServerConn **pprev;
} ServerConn;

struct Server {
    AioContext *ctx;
    int listen_fd;
    QEMUTimer *progress;
    int64_t start_ms;
    bool quiet;
    bool stop; /* set by stop_bh; the server thread reads it */
    ServerConn *conns;
    /* Written by the server thread; main reads them after pthread_join(). */
    unsigned accepted;
    unsigned open;
    unsigned errors;
    uint64_t bytes_in;
    uint64_t bytes_out;
    /* The clients' count of verified messages (atomic), for progress. */
    const uint64_t *messages_verified;
};

static void server_conn_read(void *opaque);
static void server_conn_write(void *opaque);

static void server_conn_close(ServerConn *c)
{
    Server *srv = c->srv;

    aio_set_fd_handler(srv->ctx, c->fd, NULL, NULL, NULL, NULL, NULL);
    close(c->fd);
    *c->pprev = c->next;
    if (c->next) {
        c->next->pprev = c->pprev;
    }
    srv->open--;
    free(c->buf);
    free(c);
}

static void server_conn_fail(ServerConn *c, const char *what, int err)
{
    fprintf(stderr, "echo-demo: server: %s on fd %d: %s\n", what, c->fd,
            strerror(err));
    c->srv->errors++;
    server_conn_close(c);
}

/*
 * Register exactly the handlers the connection needs now: read while there
 * is room in the buffer and the peer has not closed, write while output is
 * pending.  Closes the connection once the peer is gone and all is sent.
 * Returns false if @c was freed.
 */
static bool server_conn_update(ServerConn *c)
{
    bool want_read = !c->eof && c->tail - c->head < SERVER_BUF_SIZE;
    bool want_write = c->head < c->tail;

    if (!want_read && !want_write) {
        server_conn_close(c);
        return false;
    }
    if (want_read != c->reading || want_write != c->writing) {
        aio_set_fd_handler(c->srv->ctx, c->fd,
                           want_read ? server_conn_read : NULL,
                           want_write ? server_conn_write : NULL, NULL, NULL,
                           c);
        c->reading = want_read;
        c->writing = want_write;
    }
    return true;
}

/* Write as much pending output as the socket takes.  False if @c failed. */
static bool server_conn_flush(ServerConn *c)
{
    while (c->head < c->tail) {
        ssize_t n = send(c->fd, c->buf + c->head, c->tail - c->head,
                         MSG_NOSIGNAL);

        if (n > 0) {
            c->head += (size_t)n;
            c->srv->bytes_out += (uint64_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break; /* partial write: the write handler finishes it */
        } else {
            server_conn_fail(c, "send", n < 0 ? errno : EIO);
            return false;
        }
    }
    if (c->head == c->tail) {
        c->head = c->tail = 0;
    }
    return true;
}

static void server_conn_read(void *opaque)
{
    ServerConn *c = opaque;
    ssize_t n;

    /* Make room at the end of the buffer. */
    if (c->head > 0 && c->tail == SERVER_BUF_SIZE) {
        memmove(c->buf, c->buf + c->head, c->tail - c->head);
        c->tail -= c->head;
        c->head = 0;
    }
    if (c->tail < SERVER_BUF_SIZE) {
        n = recv(c->fd, c->buf + c->tail, SERVER_BUF_SIZE - c->tail, 0);
        if (n > 0) {
            c->tail += (size_t)n;
            c->srv->bytes_in += (uint64_t)n;
        } else if (n == 0) {
            c->eof = true;
        } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
            server_conn_fail(c, "recv", errno);
            return;
        }
    }
    /* Echo right away; the write handler only covers what does not fit. */
    if (server_conn_flush(c)) {
        server_conn_update(c);
    }
}

static void server_conn_write(void *opaque)
{
    ServerConn *c = opaque;

    if (server_conn_flush(c)) {
        server_conn_update(c);
    }
}

static void server_accept(void *opaque)
{
    Server *srv = opaque;

    for (;;) {
        int fd = accept4(srv->listen_fd, NULL, NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        int one = 1;
        ServerConn *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                fprintf(stderr, "echo-demo: server: accept: %s\n",
                        strerror(errno));
                srv->errors++;
            }
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = calloc(1, sizeof(*c));
        if (!c || !(c->buf = malloc(SERVER_BUF_SIZE))) {
            fprintf(stderr, "echo-demo: server: out of memory\n");
            free(c);
            close(fd);
            srv->errors++;
            return;
        }
        c->srv = srv;
        c->fd = fd;
        c->next = srv->conns;
        c->pprev = &srv->conns;
        if (srv->conns) {
            srv->conns->pprev = &c->next;
        }
        srv->conns = c;
        srv->accepted++;
        srv->open++;
        server_conn_update(c);
    }
}

static void server_progress(void *opaque)
{
    Server *srv = opaque;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    printf("echo-demo: [%5.1f s] %u connections open, %" PRIu64
           " messages verified, %.1f MiB echoed\n",
           (double)(now - srv->start_ms) / 1000.0, srv->open,
           __atomic_load_n(srv->messages_verified, __ATOMIC_RELAXED),
           (double)srv->bytes_out / (1024.0 * 1024.0));
    fflush(stdout);
    timer_mod(srv->progress, now + 1000);
}

/* Runs in the server thread, scheduled from the main thread. */
static void server_stop_bh(void *opaque)
{
    Server *srv = opaque;

    srv->stop = true;
}

static void *server_thread(void *opaque)
{
    Server *srv = opaque;

    /* This thread becomes the context's home thread. */
    qemu_set_current_aio_context(srv->ctx);

    aio_set_fd_handler(srv->ctx, srv->listen_fd, server_accept, NULL, NULL,
                       NULL, srv);
    if (!srv->quiet) {
        srv->progress = aio_timer_new(srv->ctx, QEMU_CLOCK_REALTIME, SCALE_MS,
                                      server_progress, srv);
        timer_mod(srv->progress, srv->start_ms + 1000);
    }

    while (!srv->stop) {
        aio_poll(srv->ctx, true);
    }

    if (srv->progress) {
        timer_free(srv->progress);
        srv->progress = NULL;
    }
    aio_set_fd_handler(srv->ctx, srv->listen_fd, NULL, NULL, NULL, NULL, NULL);
    close(srv->listen_fd);
    srv->listen_fd = -1;
    while (srv->conns) {
        server_conn_close(srv->conns);
    }
    qemu_set_current_aio_context(NULL);
    return NULL;
}

/* ---- clients (run in the main thread) ---------------------------------- */

typedef struct Demo Demo;

typedef struct Client {
    Demo *demo;
    unsigned id;
    int fd;
    unsigned sent;     /* messages completely written */
    unsigned verified; /* messages completely echoed and checked */
    size_t send_off;   /* bytes of message "sent" already written */
    size_t recv_off;   /* bytes of message "verified" already checked */
    uint8_t *msg;      /* message "sent", built when its first byte goes */
    bool writing;      /* the write handler is registered */
    bool done;
} Client;

struct Demo {
    Options opt;
    AioContext *ctx;
    Client *clients;
    unsigned finished; /* clients done or failed */
    unsigned failed;
    bool timed_out;
    uint64_t bytes_sent;
    uint64_t bytes_verified;
    uint64_t messages_verified; /* atomic: the server's progress reads it */
    uint8_t *rbuf;
};

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* A small hash, so that sizes and contents differ per client and message. */
static uint32_t mix(uint32_t a, uint32_t b)
{
    uint32_t h = a * 0x9e3779b1u ^ (b + 0x7f4a7c15u + (a << 6) + (a >> 2));

    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    return h;
}

/* Mostly small messages, one in four up to max_size. */
static size_t msg_size(const Demo *d, unsigned id, unsigned i)
{
    uint32_t h = mix(id, i);
    size_t small = d->opt.max_size < 512 ? d->opt.max_size : 512;

    if ((h & 3) == 0) {
        return 1 + (h >> 2) % d->opt.max_size;
    }
    return 1 + (h >> 2) % small;
}

static uint8_t msg_byte(unsigned id, unsigned i, size_t off)
{
    return (uint8_t)(off * 7 + (off >> 8) + i * 13 + id * 101);
}

static void client_read(void *opaque);
static void client_write(void *opaque);

static void client_finish(Client *c, bool ok)
{
    Demo *d = c->demo;

    aio_set_fd_handler(d->ctx, c->fd, NULL, NULL, NULL, NULL, NULL);
    close(c->fd);
    c->fd = -1;
    c->done = true;
    d->finished++;
    if (!ok) {
        d->failed++;
    }
}

static bool client_wants_write(const Client *c)
{
    return c->sent < c->demo->opt.messages &&
           c->sent - c->verified < PIPELINE_DEPTH;
}

static void client_update(Client *c)
{
    bool want_write = client_wants_write(c);

    if (want_write != c->writing) {
        aio_set_fd_handler(c->demo->ctx, c->fd, client_read,
                           want_write ? client_write : NULL, NULL, NULL, c);
        c->writing = want_write;
    }
}

static void client_write(void *opaque)
{
    Client *c = opaque;
    Demo *d = c->demo;

    while (client_wants_write(c)) {
        size_t len = msg_size(d, c->id, c->sent);
        ssize_t n;

        if (c->send_off == 0) {
            for (size_t off = 0; off < len; off++) {
                c->msg[off] = msg_byte(c->id, c->sent, off);
            }
        }
        n = send(c->fd, c->msg + c->send_off, len - c->send_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break; /* partial message: continue when writable */
            }
            fprintf(stderr, "echo-demo: client %u: send: %s\n", c->id,
                    strerror(errno));
            client_finish(c, false);
            return;
        }
        c->send_off += (size_t)n;
        d->bytes_sent += (uint64_t)n;
        if (c->send_off == len) {
            c->send_off = 0;
            c->sent++;
        }
    }
    client_update(c);
}

static void client_read(void *opaque)
{
    Client *c = opaque;
    Demo *d = c->demo;
    ssize_t n = recv(c->fd, d->rbuf, CLIENT_READ_SIZE, 0);
    size_t pos = 0;

    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        }
        fprintf(stderr, "echo-demo: client %u: recv: %s\n", c->id,
                strerror(errno));
        client_finish(c, false);
        return;
    }
    if (n == 0) {
        fprintf(stderr,
                "echo-demo: client %u: server closed the connection "
                "after %u of %u messages\n",
                c->id, c->verified, d->opt.messages);
        client_finish(c, false);
        return;
    }

    /* The echo is a byte stream: walk it across message boundaries. */
    while (pos < (size_t)n) {
        size_t len = msg_size(d, c->id, c->verified);
        size_t chunk;

        if (c->verified >= c->sent &&
            !(c->verified == c->sent && c->send_off > c->recv_off)) {
            fprintf(stderr,
                    "echo-demo: client %u: %zu bytes echoed that "
                    "were never sent\n",
                    c->id, (size_t)n - pos);
            client_finish(c, false);
            return;
        }
        chunk = min_size(len - c->recv_off, (size_t)n - pos);
        if (c->verified == c->sent) {
            /* Only what has been sent of the message being written. */
            chunk = min_size(chunk, c->send_off - c->recv_off);
        }
        for (size_t k = 0; k < chunk; k++) {
            uint8_t want = msg_byte(c->id, c->verified, c->recv_off + k);

            if (d->rbuf[pos + k] != want) {
                fprintf(stderr,
                        "echo-demo: client %u: message %u byte %zu: "
                        "got 0x%02x, expected 0x%02x\n",
                        c->id, c->verified, c->recv_off + k, d->rbuf[pos + k],
                        want);
                client_finish(c, false);
                return;
            }
        }
        pos += chunk;
        c->recv_off += chunk;
        d->bytes_verified += chunk;
        if (c->recv_off == len) {
            c->recv_off = 0;
            c->verified++;
            __atomic_fetch_add(&d->messages_verified, 1, __ATOMIC_RELAXED);
        }
    }

    if (c->verified == d->opt.messages) {
        client_finish(c, true);
        return;
    }
    /* Room in the pipeline again: send more now rather than next turn. */
    if (client_wants_write(c)) {
        client_write(c);
    }
}

static int client_connect(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;

    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void watchdog(void *opaque)
{
    Demo *d = opaque;

    d->timed_out = true;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: echo-demo [--connections N] [--messages N] "
               "[--max-size BYTES]\n"
               "                 [--timeout SECONDS] [--quiet]\n"
               "A TCP echo server on an AioContext in its own thread, and N "
               "clients on\nanother AioContext that verify every echoed byte.  "
               "Defaults: 8 connections,\n20000 messages each, up to 65536 "
               "bytes, 120 s timeout.\n");
}

static bool parse_uint(const char *s, unsigned long min, unsigned long max,
                       unsigned long *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_options(int argc, char **argv, Options *opt)
{
    *opt = (Options){
        .connections = 8, .messages = 20000, .max_size = 65536, .timeout_s = 120
    };

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        unsigned long v;

        if (!strcmp(a, "--quiet")) {
            opt->quiet = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (i + 1 < argc && !strcmp(a, "--connections") &&
                   parse_uint(argv[i + 1], 1, 1000, &v)) {
            opt->connections = (unsigned)v;
            i++;
        } else if (i + 1 < argc && !strcmp(a, "--messages") &&
                   parse_uint(argv[i + 1], 1, 10000000, &v)) {
            opt->messages = (unsigned)v;
            i++;
        } else if (i + 1 < argc && !strcmp(a, "--max-size") &&
                   parse_uint(argv[i + 1], 1, 16 << 20, &v)) {
            opt->max_size = v;
            i++;
        } else if (i + 1 < argc && !strcmp(a, "--timeout") &&
                   parse_uint(argv[i + 1], 1, 86400, &v)) {
            opt->timeout_s = (unsigned)v;
            i++;
        } else {
            fprintf(stderr, "echo-demo: bad argument '%s'\n", a);
            usage(stderr);
            return false;
        }
    }
    return true;
}

static int open_listener(struct sockaddr_in *addr)
{
    socklen_t len = sizeof(*addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        return -1;
    }
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr->sin_port = 0; /* ephemeral */
    if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 ||
        listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void print_stats(const char *who, AioContext *ctx)
{
    AioloopContextStats s;

    aioloop_context_get_stats(ctx, &s);
    printf("  %s AioContext (fd monitor: %s)\n"
           "    iterations %" PRIu64 ", BH runs %" PRIu64
           ", fd dispatches %" PRIu64 "\n"
           "    blocked %.3f s, wake-ups %" PRIu64
           ", busy-poll hits/misses %" PRIu64 "/%" PRIu64 "\n",
           who, aioloop_context_fdmon_name(ctx), s.iterations, s.bh_runs,
           s.fd_dispatches, (double)s.blocked_ns / 1e9, s.wakeups, s.poll_hits,
           s.poll_misses);
}

int main(int argc, char **argv)
{
    Demo d = { 0 };
    Server srv = { 0 };
    struct sockaddr_in addr;
    pthread_t thread;
    QEMUTimer *dog;
    uint64_t expect_bytes = 0;
    int64_t start_ns;
    double elapsed;
    bool ok;
    int ret;

    if (!parse_options(argc, argv, &d.opt)) {
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    for (unsigned id = 0; id < d.opt.connections; id++) {
        for (unsigned i = 0; i < d.opt.messages; i++) {
            expect_bytes += msg_size(&d, id, i);
        }
    }

    /* The server: its own context, listener and thread. */
    srv.ctx = aio_context_new(&error_fatal);
    srv.quiet = d.opt.quiet;
    srv.messages_verified = &d.messages_verified;
    srv.listen_fd = open_listener(&addr);
    if (srv.listen_fd < 0) {
        perror("echo-demo: listen on 127.0.0.1");
        return 1;
    }
    printf("echo-demo: server on 127.0.0.1:%u, %u connections x %u messages "
           "(1..%zu bytes, %.1f MiB each way)\n",
           ntohs(addr.sin_port), d.opt.connections, d.opt.messages,
           d.opt.max_size, (double)expect_bytes / (1024.0 * 1024.0));
    fflush(stdout);
    srv.start_ms = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    ret = pthread_create(&thread, NULL, server_thread, &srv);
    if (ret) {
        fprintf(stderr, "echo-demo: pthread_create: %s\n", strerror(ret));
        return 1;
    }

    /* The clients: a context of their own, run by this thread. */
    d.ctx = aio_context_new(&error_fatal);
    qemu_set_current_aio_context(d.ctx);
    d.clients = calloc(d.opt.connections, sizeof(*d.clients));
    d.rbuf = malloc(CLIENT_READ_SIZE);
    if (!d.clients || !d.rbuf) {
        fprintf(stderr, "echo-demo: out of memory\n");
        return 1;
    }
    dog = aio_timer_new(d.ctx, QEMU_CLOCK_REALTIME, SCALE_MS, watchdog, &d);
    timer_mod(dog, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                       (int64_t)d.opt.timeout_s * 1000);

    start_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    for (unsigned id = 0; id < d.opt.connections; id++) {
        Client *c = &d.clients[id];

        c->demo = &d;
        c->id = id;
        c->msg = malloc(d.opt.max_size);
        c->fd = client_connect(&addr);
        if (!c->msg || c->fd < 0) {
            fprintf(stderr, "echo-demo: client %u: connect: %s\n", id,
                    strerror(errno));
            c->done = true;
            d.finished++;
            d.failed++;
            continue;
        }
        aio_set_fd_handler(d.ctx, c->fd, client_read, client_write, NULL, NULL,
                           c);
        c->writing = true;
    }

    while (d.finished < d.opt.connections && !d.timed_out) {
        aio_poll(d.ctx, true);
    }
    elapsed = (double)(qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - start_ns) / 1e9;
    if (d.timed_out) {
        fprintf(stderr,
                "echo-demo: timed out after %u s with %u of %u "
                "clients finished\n",
                d.opt.timeout_s, d.finished, d.opt.connections);
    }

    /* Stop the server from its own thread: a BH sets the flag its loop tests. */
    aio_bh_schedule_oneshot(srv.ctx, server_stop_bh, &srv);
    pthread_join(thread, NULL);

    ok = !d.timed_out && d.failed == 0 && srv.errors == 0 &&
         d.bytes_verified == expect_bytes && srv.bytes_in == expect_bytes &&
         srv.bytes_out == expect_bytes;

    printf("echo-demo: %s in %.2f s\n", ok ? "done" : "FAILED", elapsed);
    printf("  connections: %u opened, %u accepted by the server, %u failed\n",
           d.opt.connections, srv.accepted, d.failed);
    printf("  messages:    %" PRIu64 " of %" PRIu64 " verified, %.0f msg/s\n",
           d.messages_verified, (uint64_t)d.opt.connections * d.opt.messages,
           elapsed > 0 ? (double)d.messages_verified / elapsed : 0.0);
    printf("  bytes:       %" PRIu64 " sent, %" PRIu64 " echoed by the server,"
           " %" PRIu64 " verified (%.1f MiB/s)\n",
           d.bytes_sent, srv.bytes_out, d.bytes_verified,
           elapsed > 0 ? (double)d.bytes_verified / elapsed / 1048576.0 : 0.0);
    print_stats("server", srv.ctx);
    print_stats("client", d.ctx);
    printf("echo-demo: %s\n", ok ? "OK: every echoed byte verified"
                                 : "FAILED: see the messages above");

    for (unsigned id = 0; id < d.opt.connections; id++) {
        Client *c = &d.clients[id];

        if (!c->done) {
            aio_set_fd_handler(d.ctx, c->fd, NULL, NULL, NULL, NULL, NULL);
            close(c->fd);
        }
        free(c->msg);
    }
    timer_free(dog);
    qemu_set_current_aio_context(NULL);
    aio_context_unref(d.ctx);
    aio_context_unref(srv.ctx);
    free(d.clients);
    free(d.rbuf);
    return ok ? 0 : 1;
}
