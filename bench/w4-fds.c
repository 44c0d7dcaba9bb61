/*
 * W4: fd dispatch and registration with N = 100, 1000, 10000 socketpairs.
 *
 * All N read ends are registered for read.  Each iteration writes one byte
 * into min(100, N) distinct random pairs (not timed), then runs loop
 * iterations until their callbacks have read the bytes (timed): ns per
 * dispatched event.  Registration: register all N handlers plus one
 * non-blocking loop iteration (so lazy backends pay their epoll_ctl), / N;
 * unregistration likewise.
 *
 * aioloop runs once per fd monitor (AIOLOOP_FDMON=poll|epoll|io_uring, set
 * before aio_context_new); the goal is judged on the monitor that
 * aio_context_new() picks by default.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <aioloop/aio.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- aioloop backend ----------------------------------------------------- */

typedef struct AioW4 {
    AioContext *ctx;
    int n;
    const int *fds;
} AioW4;

static void aio_w4_read(void *opaque)
{
    w4_consume((int)(intptr_t)opaque);
}

static void *aio_w4_create_fdmon(const char *fdmon, int n, const int *fds,
                                 char *why, size_t whylen)
{
    Error *err = NULL;
    AioContext *ctx;
    AioW4 *b;

    setenv("AIOLOOP_FDMON", fdmon, 1);
    ctx = aio_context_new(&err);
    unsetenv("AIOLOOP_FDMON");
    if (!ctx) {
        snprintf(why, whylen, "%s", error_get_pretty(err));
        error_free(err);
        return NULL;
    }
    if (strcmp(aioloop_context_fdmon_name(ctx), fdmon) != 0) {
        snprintf(why, whylen, "asked for %s, got %s", fdmon,
                 aioloop_context_fdmon_name(ctx));
        aio_context_unref(ctx);
        return NULL;
    }
    b = calloc(1, sizeof(*b));
    b->ctx = ctx;
    b->n = n;
    b->fds = fds;
    return b;
}

static void *aio_w4_create_poll(int n, const int *fds, char *why, size_t len)
{
    return aio_w4_create_fdmon("poll", n, fds, why, len);
}

static void *aio_w4_create_epoll(int n, const int *fds, char *why, size_t len)
{
    return aio_w4_create_fdmon("epoll", n, fds, why, len);
}

static void *aio_w4_create_io_uring(int n, const int *fds, char *why,
                                    size_t len)
{
    return aio_w4_create_fdmon("io_uring", n, fds, why, len);
}

static void aio_w4_register(void *opaque)
{
    AioW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        aio_set_fd_handler(b->ctx, b->fds[i], aio_w4_read, NULL, NULL, NULL,
                           (void *)(intptr_t)b->fds[i]);
    }
    aio_poll(b->ctx, false);
}

static void aio_w4_dispatch(void *opaque, long target)
{
    AioW4 *b = opaque;

    while (bench_w4_done < target) {
        aio_poll(b->ctx, true);
    }
}

static void aio_w4_unregister(void *opaque)
{
    AioW4 *b = opaque;

    for (int i = 0; i < b->n; i++) {
        aio_set_fd_handler(b->ctx, b->fds[i], NULL, NULL, NULL, NULL, NULL);
    }
    aio_poll(b->ctx, false);
}

static void aio_w4_destroy(void *opaque)
{
    AioW4 *b = opaque;

    /* Idempotent: removing an fd that is not registered is a no-op. */
    aio_w4_unregister(b);
    aio_context_unref(b->ctx);
    free(b);
}

#define AIO_BACKEND(fdmon)                        \
    {                                             \
        .name = "aioloop-" #fdmon,                \
        .create = aio_w4_create_##fdmon,          \
        .register_all = aio_w4_register,          \
        .dispatch = aio_w4_dispatch,              \
        .unregister_all = aio_w4_unregister,      \
        .destroy = aio_w4_destroy,                \
    }

enum { NFDMON = 3 };
static const char *const fdmon_names[NFDMON] = { "poll", "epoll", "io_uring" };
static const W4Backend aio_backends[NFDMON] = {
    AIO_BACKEND(poll),
    AIO_BACKEND(epoll),
    AIO_BACKEND(io_uring),
};

/* ---- driver ----------------------------------------------------------------- */

enum { METRIC_REG, METRIC_DISPATCH, METRIC_UNREG, NMETRIC };
static const char *const metric_names[NMETRIC] = { "register", "dispatch",
                                                   "unregister" };
static const char *const metric_units[NMETRIC] = { "ns/fd", "ns/ev", "ns/fd" };

static double metric(const W4Result *r, int m)
{
    if (!r->ok) {
        return -1;
    }
    switch (m) {
    case METRIC_REG:
        return r->reg_ns;
    case METRIC_DISPATCH:
        return r->dispatch_ns;
    default:
        return r->unreg_ns;
    }
}

static int default_fdmon(void)
{
    Error *err = NULL;
    AioContext *ctx = aio_context_new(&err);
    int idx = -1;

    if (!ctx) {
        fprintf(stderr, "aio_context_new: %s\n", error_get_pretty(err));
        exit(1);
    }
    for (int i = 0; i < NFDMON; i++) {
        if (strcmp(aioloop_context_fdmon_name(ctx), fdmon_names[i]) == 0) {
            idx = i;
        }
    }
    aio_context_unref(ctx);
    return idx;
}

/*
 * Raise RLIMIT_NOFILE so that @n pairs fit (2n + 200 fds).  Without
 * CAP_SYS_RESOURCE the hard limit caps it: then N is reduced to what fits
 * (a multiple of 100) and the caller says so.  Returns the N to use, or 0.
 */
static int fit_nofile(int n, char *why, size_t whylen)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)(2 * n + 200);

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(why, whylen, "getrlimit: %s", strerror(errno));
        return 0;
    }
    if (rl.rlim_cur >= want) {
        return n;
    }
    struct rlimit up = { .rlim_cur = want,
                         .rlim_max = rl.rlim_max < want ? want : rl.rlim_max };
    if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
        return n;
    }
    /* Take what the hard limit allows. */
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(why, whylen, "setrlimit: %s", strerror(errno));
        return 0;
    }
    long fit = ((long)rl.rlim_max - 200) / 2 / 100 * 100;
    snprintf(why, whylen, "RLIMIT_NOFILE hard limit %llu < %llu (%s)",
             (unsigned long long)rl.rlim_max, (unsigned long long)want,
             strerror(errno));
    return fit >= 100 ? (int)fit : 0;
}

static void print_metric(int n, int m, const W4Result aio[NFDMON],
                         const W4Result peer[NPEERS], int deflt, double floor)
{
    char label[64], a[32];
    double best = -1;
    int best_i = -1;

    snprintf(label, sizeof(label), "W4 %s N=%d", metric_names[m], n);
    printf("%-28s aioloop", label);
    for (int f = 0; f < NFDMON; f++) {
        printf(" %s %s", fdmon_names[f], bench_fmt(a, sizeof(a), metric(&aio[f], m)));
        if (f < NFDMON - 1) {
            printf(" |");
        }
    }
    printf(" %s", metric_units[m]);
    if (m == METRIC_DISPATCH) {
        printf(" (read() floor %s)", bench_fmt(a, sizeof(a), floor));
    }
    for (int i = 0; i < NPEERS; i++) {
        double v = bench_peers[i] ? metric(&peer[i], m) : -1;

        printf(" | %s %s", bench_peer_names[i], bench_fmt(a, sizeof(a), v));
        if (v > 0 && (best < 0 || v < best)) {
            best = v;
            best_i = i;
        }
    }
    if (best < 0) {
        printf(" | ratio vs best n/a\n");
        return;
    }
    printf(" | ratio vs best (%s):", bench_peer_names[best_i]);
    for (int f = 0; f < NFDMON; f++) {
        double v = metric(&aio[f], m);

        printf(" %s %s", fdmon_names[f], v < 0 ? "n/a" : bench_fmt(a, sizeof(a), v / best));
    }
    if (deflt >= 0) {
        double v = metric(&aio[deflt], m);
        char g[96], what[48];

        snprintf(what, sizeof(what), "%s (default) / best peer",
                 fdmon_names[deflt]);
        printf(" | %s", bench_goal(g, sizeof(g), v < 0 ? -1 : v / best, 0.7, what));
    }
    printf("\n");
}

int main(void)
{
    static const int sizes[] = { 100, 1000, 10000 };
    enum { NSIZES = sizeof(sizes) / sizeof(sizes[0]) };
    long iters = bench_n(2000);
    uint64_t budget = bench_quick() ? 100000000ull : 1000000000ull;
    double disp_aio[NSIZES][NFDMON], disp_peer[NSIZES][NPEERS];
    int deflt;
    char a[32];

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("# W4 fds: up to %ld iterations (or %.1f s) of 100 random "
           "writes + dispatch per N\n", iters, budget / 1e9);
    bench_init_peers();
    deflt = default_fdmon();
    printf("# aioloop default fdmon: %s\n", deflt >= 0 ? fdmon_names[deflt] : "?");

    int used[NSIZES];

    for (int s = 0; s < NSIZES; s++) {
        int n = sizes[s];
        int *rfds, *wfds;
        W4Result aio[NFDMON], peer[NPEERS];
        char why[160];
        double floor;

        for (int f = 0; f < NFDMON; f++) {
            disp_aio[s][f] = -1;
        }
        for (int i = 0; i < NPEERS; i++) {
            disp_peer[s][i] = -1;
        }
        used[s] = n = fit_nofile(n, why, sizeof(why));
        if (n == 0) {
            printf("skipped: W4 N=%d: %s\n", sizes[s], why);
            continue;
        }
        if (n != sizes[s]) {
            printf("# note: W4 N=%d reduced to N=%d: %s\n", sizes[s], n, why);
        }
        rfds = malloc(sizeof(int) * (size_t)n);
        wfds = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++) {
            int sv[2];

            if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                           0, sv) != 0) {
                perror("socketpair");
                return 1;
            }
            rfds[i] = sv[0];
            wfds[i] = sv[1];
        }

        floor = w4_read_floor(n, rfds, wfds, iters < 200 ? iters : 200);
        for (int f = 0; f < NFDMON; f++) {
            w4_run(&aio_backends[f], n, rfds, wfds, iters, budget, &aio[f]);
            if (!aio[f].ok) {
                printf("skipped: W4 N=%d aioloop fdmon %s: %s\n", n,
                       fdmon_names[f], aio[f].why);
            }
            disp_aio[s][f] = metric(&aio[f], METRIC_DISPATCH);
        }
        for (int i = 0; i < NPEERS; i++) {
            if (!bench_peers[i]) {
                continue;
            }
            w4_run(bench_peers[i]->w4, n, rfds, wfds, iters, budget, &peer[i]);
            if (!peer[i].ok) {
                printf("skipped: W4 N=%d %s: %s\n", n, bench_peer_names[i],
                       peer[i].why);
            }
            disp_peer[s][i] = metric(&peer[i], METRIC_DISPATCH);
        }
        /* Again after the backends (caches and CPU now warm); keep the lower. */
        double floor2 = w4_read_floor(n, rfds, wfds, iters < 200 ? iters : 200);
        if (floor2 > 0 && (floor < 0 || floor2 < floor)) {
            floor = floor2;
        }
        for (int m = 0; m < NMETRIC; m++) {
            print_metric(n, m, aio, peer, deflt, floor);
        }
        for (int i = 0; i < n; i++) {
            close(rfds[i]);
            close(wfds[i]);
        }
        free(rfds);
        free(wfds);
    }

    /* Flatness: dispatch cost at the largest N over the smallest. */
    printf("%-28s aioloop", "W4 flatness dispatch");
    for (int f = 0; f < NFDMON; f++) {
        double lo = disp_aio[0][f], hi = disp_aio[NSIZES - 1][f];

        printf(" %s %s", fdmon_names[f],
               lo > 0 && hi > 0 ? bench_fmt(a, sizeof(a), hi / lo) : "n/a");
        if (f < NFDMON - 1) {
            printf(" |");
        }
    }
    printf(" (N=%d / N=%d)", used[NSIZES - 1], used[0]);
    for (int i = 0; i < NPEERS; i++) {
        double lo = disp_peer[0][i], hi = disp_peer[NSIZES - 1][i];

        printf(" | %s %s", bench_peer_names[i],
               lo > 0 && hi > 0 ? bench_fmt(a, sizeof(a), hi / lo) : "n/a");
    }
    if (deflt >= 0) {
        double lo = disp_aio[0][deflt], hi = disp_aio[NSIZES - 1][deflt];
        char g[96], what[48];

        snprintf(what, sizeof(what), "flat: %s N=%d/N=%d", fdmon_names[deflt],
                 used[NSIZES - 1], used[0]);
        printf(" | %s", bench_goal(g, sizeof(g), lo > 0 && hi > 0 ? hi / lo : -1,
                                     1.25, what));
    }
    printf("\n");
    return 0;
}
