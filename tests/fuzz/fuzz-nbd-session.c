/*
 * libFuzzer target: a whole aioloop-nbd client session, in-process.
 *
 * Once: the main loop, an NBDServer, a writable export "rw" (the default
 * export, being the first), a read-only export "ro" and a writable O_DIRECT
 * export "direct" (if the file system allows O_DIRECT), each on a 1 MiB
 * file under $TMPDIR (default /var/tmp), removed at exit.
 *
 * Per input: a socketpair; the server serves one end
 * (nbd_server_add_connection); a client thread writes the input, byte for
 * byte what a client would send from the start of the handshake, into the
 * other end, shuts down its write side and reads and discards whatever the
 * server answers until EOF.  The main thread runs main_loop_wait() until
 * the server has no connection left.  A session that is not over within
 * FUZZ_SESSION_TIMEOUT_MS, or that needs more than FUZZ_SESSION_MAX_ITERS
 * loop iterations, is a hang: abort().
 *
 * The client thread reads while it writes, so a server that stops reading
 * until its replies are consumed cannot deadlock against it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <aioloop/aioloop.h>
#include <aioloop/main-loop.h>
#include <aioloop/timer.h>

#include "nbd-server.h"

#define FUZZ_EXPORT_SIZE          (1024 * 1024)
#define FUZZ_SESSION_TIMEOUT_MS   5000
#define FUZZ_SESSION_MAX_ITERS    1000000
#define FUZZ_TICK_MS              20

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static NBDServer *srv;
static char file_rw[4096], file_ro[4096], file_direct[4096];
static QEMUTimer *tick;

static void cleanup(void)
{
    if (file_rw[0]) {
        unlink(file_rw);
    }
    if (file_ro[0]) {
        unlink(file_ro);
    }
    if (file_direct[0]) {
        unlink(file_direct);
    }
}

static void make_file(char *path, size_t size, const char *tag)
{
    const char *dir = getenv("TMPDIR");
    uint8_t block[4096];
    int fd;

    if (!dir || !dir[0]) {
        dir = "/var/tmp";
    }
    snprintf(path, size, "%s/fuzz-nbd-%s-XXXXXX", dir, tag);
    fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "fuzz-nbd-session: mkstemp %s: %s\n", path,
                strerror(errno));
        path[0] = 0;
        abort();
    }
    /* Some data, some hole: BLOCK_STATUS and READ have both to report. */
    for (size_t i = 0; i < sizeof(block); i++) {
        block[i] = (uint8_t)(i * 7 + 1);
    }
    for (off_t off = 0; off < FUZZ_EXPORT_SIZE / 2; off += sizeof(block)) {
        if (pwrite(fd, block, sizeof(block), off) != (ssize_t)sizeof(block)) {
            fprintf(stderr, "fuzz-nbd-session: pwrite: %s\n", strerror(errno));
            abort();
        }
    }
    if (ftruncate(fd, FUZZ_EXPORT_SIZE) < 0) {
        fprintf(stderr, "fuzz-nbd-session: ftruncate: %s\n", strerror(errno));
        abort();
    }
    close(fd);
}

/* Keeps main_loop_wait() from blocking forever, so a hang is noticed. */
static void tick_cb(void *opaque)
{
    (void)opaque;
    timer_mod(tick, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + FUZZ_TICK_MS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;

    /* As aioloop-nbd's main(): a client that goes away is not a crash. */
    signal(SIGPIPE, SIG_IGN);
    qemu_init_main_loop(&error_abort);
    atexit(cleanup);
    make_file(file_rw, sizeof(file_rw), "rw");
    make_file(file_ro, sizeof(file_ro), "ro");

    srv = nbd_server_new();
    NBDExportConfig rw = {
        .id = "rw",
        .file = file_rw,
        .writable = true,
        .description = "fuzz: writable",
    };
    NBDExportConfig ro = {
        .id = "ro",
        .file = file_ro,
        .writable = false,
    };
    nbd_export_add(srv, &rw, &error_abort);
    nbd_export_add(srv, &ro, &error_abort);

    /* O_DIRECT (4 KiB blocks: the alignment checks), if $TMPDIR can. */
    make_file(file_direct, sizeof(file_direct), "direct");
    NBDExportConfig direct = {
        .id = "direct",
        .file = file_direct,
        .writable = true,
        .direct = true,
    };
    Error *err = NULL;
    if (!nbd_export_add(srv, &direct, &err)) {
        fprintf(stderr, "fuzz-nbd-session: no O_DIRECT export: %s\n",
                error_get_pretty(err));
        error_free(err);
    }

    tick = timer_new_ms(QEMU_CLOCK_REALTIME, tick_cb, NULL);
    tick_cb(NULL);
    return 0;
}

typedef struct Client {
    int fd;
    const uint8_t *data;
    size_t size;
} Client;

/* Write the input, then read until EOF, reading all along. */
static void *client_thread(void *opaque)
{
    Client *c = opaque;
    size_t off = 0;
    bool wr_open = true;
    uint8_t buf[65536];

    for (;;) {
        if (wr_open && off == c->size) {
            shutdown(c->fd, SHUT_WR);
            wr_open = false;
        }
        struct pollfd pfd = {
            .fd = c->fd,
            .events = POLLIN | (wr_open ? POLLOUT : 0),
        };
        if (poll(&pfd, 1, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            abort();
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n == 0) {
                break;                          /* the server closed */
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                break;                          /* ECONNRESET & co. */
            }
        }
        if (wr_open && (pfd.revents & POLLOUT)) {
            ssize_t n = send(c->fd, c->data + off, c->size - off,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                /* The server hung up on us: stop writing, drain. */
                shutdown(c->fd, SHUT_WR);
                wr_open = false;
            }
        }
    }
    return NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    pthread_t th;
    Client c = { .data = data, .size = size };
    int64_t deadline;
    unsigned long iters = 0;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("fuzz-nbd-session: socketpair");
        abort();
    }
    c.fd = sv[1];
    if (pthread_create(&th, NULL, client_thread, &c) != 0) {
        abort();
    }
    nbd_server_add_connection(srv, sv[0]);

    deadline = now_ms() + FUZZ_SESSION_TIMEOUT_MS;
    while (nbd_server_connections(srv) > 0) {
        if (++iters > FUZZ_SESSION_MAX_ITERS || now_ms() > deadline) {
            fprintf(stderr, "fuzz-nbd-session: session of %zu bytes still "
                    "connected after %lu loop iterations: hang\n",
                    size, iters);
            abort();
        }
        main_loop_wait(false);
    }
    pthread_join(th, NULL);
    close(sv[1]);
    return 0;
}
