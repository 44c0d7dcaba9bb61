/*
 * The server: listening sockets and new connections, in the main context.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <aioloop/aio-wait.h>
#include <aioloop/main-loop.h>

#include "nbd-internal.h"

NBDServer *nbd_server_new(void)
{
    NBDServer *srv = calloc(1, sizeof(*srv));

    if (!srv) {
        abort();
    }
    return srv;
}

void nbd_server_set_max_connections(NBDServer *srv, unsigned max)
{
    srv->max_connections = max;
}

static void handshake_timeout(void *opaque)
{
    NBDClient *client = opaque;

    /* The negotiation coroutine sees end-of-stream and gives up. */
    shutdown(client->chan.fd, SHUT_RDWR);
}

void nbd_server_add_connection(NBDServer *srv, int fd)
{
    AioContext *ctx = qemu_get_aio_context();
    NBDClient *client = calloc(1, sizeof(*client));
    int one = 1;

    if (!client) {
        close(fd);
        return;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    /* Replies go out as soon as they are written (fails on UNIX: fine). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    client->srv = srv;
    chan_init(&client->chan, fd);
    qemu_co_mutex_init(&client->send_lock);
    client->next = srv->negotiating;
    srv->negotiating = client;
    __atomic_fetch_add(&srv->connections, 1, __ATOMIC_SEQ_CST);
    client->handshake_timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME,
                                            SCALE_NS, handshake_timeout,
                                            client);
    timer_mod(client->handshake_timer,
              qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
              NBD_HANDSHAKE_TIMEOUT_NS);
    aio_co_enter(ctx, qemu_coroutine_create(nbd_client_negotiate_co, client));
}

static void listener_accept(void *opaque)
{
    NBDListener *l = opaque;
    NBDServer *srv = l->srv;

    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* EAGAIN: done; EMFILE and friends: try at the next wake. */
            return;
        }
        if (srv->max_connections &&
            __atomic_load_n(&srv->connections, __ATOMIC_SEQ_CST) >=
            srv->max_connections) {
            close(fd);
            continue;
        }
        nbd_server_add_connection(srv, fd);
    }
}

static int listen_inet(const char *hostport, Error **errp)
{
    char host[256];
    const char *port;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    }, *res, *ai;
    int fd = -1, err, saved = 0;

    /* HOST:PORT, HOST may be [v6]. */
    if (hostport[0] == '[') {
        const char *close_br = strchr(hostport, ']');

        if (!close_br || close_br[1] != ':' ||
            (size_t)(close_br - hostport - 1) >= sizeof(host)) {
            error_setg(errp, "bad address '%s' (want [HOST]:PORT)", hostport);
            return -1;
        }
        memcpy(host, hostport + 1, (size_t)(close_br - hostport - 1));
        host[close_br - hostport - 1] = '\0';
        port = close_br + 2;
    } else {
        const char *colon = strrchr(hostport, ':');

        if (!colon || (size_t)(colon - hostport) >= sizeof(host)) {
            error_setg(errp, "bad address '%s' (want HOST:PORT)", hostport);
            return -1;
        }
        memcpy(host, hostport, (size_t)(colon - hostport));
        host[colon - hostport] = '\0';
        port = colon + 1;
    }
    err = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (err) {
        error_setg(errp, "cannot resolve '%s': %s", hostport,
                   gai_strerror(err));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
                    SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 128) == 0) {
            break;
        }
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg_errno(errp, saved, "cannot listen on '%s'", hostport);
    }
    return fd;
}

static int listen_unix(const char *path, Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sun.sun_path, path);
    /* A stale socket from an earlier run; never any other kind of file. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "socket");
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(fd, 128) < 0) {
        error_setg_errno(errp, errno, "cannot listen on '%s'", path);
        close(fd);
        return -1;
    }
    return fd;
}

int nbd_server_listen(NBDServer *srv, const char *addr, Error **errp)
{
    NBDListener *l, *arr;
    bool is_unix = !strncmp(addr, "unix:", 5);
    int fd;

    if (is_unix) {
        fd = listen_unix(addr + 5, errp);
    } else if (!strncmp(addr, "inet:", 5)) {
        fd = listen_inet(addr + 5, errp);
    } else {
        error_setg(errp, "bad listen address '%s' (inet:HOST:PORT or "
                   "unix:PATH)", addr);
        return -EINVAL;
    }
    if (fd < 0) {
        return -EINVAL;
    }
    arr = realloc(srv->listeners, (srv->nlisteners + 1) * sizeof(*arr));
    if (!arr) {
        close(fd);
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    srv->listeners = arr;
    /* The array moved: re-register every handler with its new address. */
    for (unsigned i = 0; i < srv->nlisteners; i++) {
        aio_set_fd_handler(qemu_get_aio_context(), arr[i].fd, listener_accept,
                           NULL, NULL, NULL, &arr[i]);
    }
    l = &arr[srv->nlisteners++];
    *l = (NBDListener) {
        .srv = srv,
        .fd = fd,
        .addr = strdup(addr),
        .unix_path = is_unix ? strdup(addr + 5) : NULL,
    };
    aio_set_fd_handler(qemu_get_aio_context(), fd, listener_accept, NULL,
                       NULL, NULL, l);
    return 0;
}

static void close_listeners(NBDServer *srv)
{
    for (unsigned i = 0; i < srv->nlisteners; i++) {
        NBDListener *l = &srv->listeners[i];

        aio_set_fd_handler(qemu_get_aio_context(), l->fd, NULL, NULL, NULL,
                           NULL, NULL);
        close(l->fd);
        if (l->unix_path) {
            unlink(l->unix_path);
            free(l->unix_path);
        }
        free(l->addr);
    }
    free(srv->listeners);
    srv->listeners = NULL;
    srv->nlisteners = 0;
}

int nbd_server_shutdown(NBDServer *srv)
{
    int ret;

    if (srv->shutting_down) {
        return 0;
    }
    srv->shutting_down = true;
    close_listeners(srv);
    /* Clients still negotiating have nothing in flight: cut them off. */
    for (NBDClient *c = srv->negotiating; c; c = c->next) {
        shutdown(c->chan.fd, SHUT_RDWR);
    }
    ret = nbd_exports_shutdown(srv);
    AIO_WAIT_WHILE(NULL, srv->negotiating != NULL);
    return ret;
}

unsigned nbd_server_connections(NBDServer *srv)
{
    return __atomic_load_n(&srv->connections, __ATOMIC_SEQ_CST);
}

void nbd_server_free(NBDServer *srv)
{
    nbd_server_shutdown(srv);
    nbd_exports_free(srv);
    free(srv);
}
