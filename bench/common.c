/*
 * Shared benchmark helpers; see bench.h.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

const char *const bench_peer_names[NPEERS] = {
    [PEER_LIBEV] = "libev",
    [PEER_LIBUV] = "libuv",
    [PEER_LIBEVENT] = "libevent",
    [PEER_GLIB] = "glib",
};

bool bench_quick(void)
{
    const char *q = getenv("BENCH_QUICK");

    return q && *q && strcmp(q, "0") != 0;
}

long bench_n(long n)
{
    if (bench_quick()) {
        n /= 10;
    }
    return n > 0 ? n : 1;
}

int bench_cpus(int *cpus, int max)
{
    cpu_set_t set;
    int n = 0;

    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        return 0;
    }
    for (int i = 0; i < CPU_SETSIZE && n < max; i++) {
        if (CPU_ISSET(i, &set)) {
            cpus[n++] = i;
        }
    }
    return n;
}

size_t bench_heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

void bench_init_peers(void)
{
    const char *only = getenv("BENCH_PEERS");

    for (int i = 0; i < NPEERS; i++) {
        if (!bench_peers[i]) {
            printf("skipped: %s not found\n", bench_peer_names[i]);
            continue;
        }
        if (only && *only) {
            size_t len = strlen(bench_peer_names[i]);
            const char *p = only;
            bool wanted = false;

            while ((p = strstr(p, bench_peer_names[i])) != NULL) {
                if ((p == only || p[-1] == ',') &&
                    (p[len] == ',' || p[len] == '\0')) {
                    wanted = true;
                    break;
                }
                p += len;
            }
            if (!wanted) {
                printf("skipped: %s (not in BENCH_PEERS)\n",
                       bench_peer_names[i]);
                bench_peers[i] = NULL;
                continue;
            }
        }
        printf("# %s\n", bench_peers[i]->describe());
    }
}

const char *bench_fmt(char *buf, size_t len, double v)
{
    if (v < 0) {
        snprintf(buf, len, "n/a");
    } else if (v >= 1000) {
        snprintf(buf, len, "%.0f", v);
    } else if (v >= 100) {
        snprintf(buf, len, "%.1f", v);
    } else if (v >= 10) {
        snprintf(buf, len, "%.2f", v);
    } else {
        snprintf(buf, len, "%.3f", v);
    }
    return buf;
}

const char *bench_goal(char *buf, size_t len, double value, double limit,
                       const char *what)
{
    char a[32];

    if (value < 0) {
        snprintf(buf, len, "goal %s <= %s: not measured", what,
                 bench_fmt(a, sizeof(a), limit));
    } else {
        snprintf(buf, len, "goal %s <= %s: %s", what,
                 bench_fmt(a, sizeof(a), limit),
                 value <= limit ? "met" : "NOT met");
    }
    return buf;
}

double bench_line(const char *label, const char *unit, double mine,
                  const double peers[NPEERS], const char *tail)
{
    char a[32];
    double best = -1;
    int best_i = -1;

    printf("%-28s aioloop %8s %s", label, bench_fmt(a, sizeof(a), mine), unit);
    for (int i = 0; i < NPEERS; i++) {
        printf(" | %s %s", bench_peer_names[i],
               bench_fmt(a, sizeof(a), peers[i]));
        if (peers[i] > 0 && (best < 0 || peers[i] < best)) {
            best = peers[i];
            best_i = i;
        }
    }
    double ratio = -1;
    if (best > 0 && mine >= 0) {
        ratio = mine / best;
        printf(" | ratio vs best %.2f (%s)", ratio, bench_peer_names[best_i]);
    } else {
        printf(" | ratio vs best n/a");
    }
    if (tail && *tail) {
        printf(" | %s", tail);
    }
    printf("\n");
    fflush(stdout);
    return ratio;
}

/* ---- W2 ---------------------------------------------------------------- */

void pp_init(PingPong *pp, int cpu_a, int cpu_b, long n)
{
    memset(pp, 0, sizeof(*pp));
    pp->cpu_a = cpu_a;
    pp->cpu_b = cpu_b;
    pp->n = n;
    pp->warm = n / 20 < 1000 ? (n < 1000 ? n / 10 + 1 : 1000) : n / 20;
    /* Keeps a pathological peer (or a regression) from eating the budget. */
    pp->cap_ns = bench_quick() ? 300000000ull : 1500000000ull;
}

void pp_ready(PingPong *pp)
{
    pthread_barrier_wait(&pp->barrier);
}

static int start_pinned(pthread_t *t, int cpu, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    cpu_set_t set;
    int ret;

    pthread_attr_init(&attr);
    if (cpu >= 0) {
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        ret = pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
        if (ret) {
            pthread_attr_destroy(&attr);
            return ret;
        }
    }
    ret = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return ret;
}

int bench_pp_capped;

double pp_run(PingPong *pp)
{
    pthread_t ta, tb;
    int ret;

    pp->count = 0;
    pp->capped = false;
    pp->t_start = pp->t_end = 0;
    pthread_barrier_init(&pp->barrier, NULL, 2);
    ret = start_pinned(&tb, pp->cpu_b, pp->fn_b, pp);
    if (ret) {
        fprintf(stderr, "pthread_create: %s\n", strerror(ret));
        pthread_barrier_destroy(&pp->barrier);
        return -1;
    }
    ret = start_pinned(&ta, pp->cpu_a, pp->fn_a, pp);
    if (ret) {
        /* B is stuck at the barrier: cannot recover cleanly. */
        fprintf(stderr, "pthread_create: %s\n", strerror(ret));
        exit(1);
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&pp->barrier);
    if (pp->capped) {
        bench_pp_capped++;
    }
    long done = pp->count - pp->warm;
    if (done <= 0 || pp->t_end <= pp->t_start) {
        return -1;
    }
    return (double)(pp->t_end - pp->t_start) / (double)done;
}

/* ---- the cache-line floor ------------------------------------------ */

/*
 * The figure follows the host: the same pinned pair of vCPUs measured
 * 100-110 ns and 400-470 ns per round trip minutes apart.
 */
static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

typedef struct LinePP {
    _Alignas(64) long v; /* 2k + 1: ping k; 2k + 2: its pong; -1: stop */
} LinePP;

static void *line_thread_a(void *opaque)
{
    PingPong *pp = opaque;
    LinePP *s = pp->priv;

    pp_ready(pp);
    for (long k = 0;; k++) {
        __atomic_store_n(&s->v, 2 * k + 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&s->v, __ATOMIC_ACQUIRE) != 2 * k + 2) {
            spin_pause();
        }
        if (pp_tick(pp)) {
            __atomic_store_n(&s->v, -1, __ATOMIC_RELEASE);
            return NULL;
        }
    }
}

static void *line_thread_b(void *opaque)
{
    PingPong *pp = opaque;
    LinePP *s = pp->priv;

    pp_ready(pp);
    for (long k = 0;; k++) {
        long v;

        while ((v = __atomic_load_n(&s->v, __ATOMIC_ACQUIRE)) != 2 * k + 1) {
            if (v == -1) {
                return NULL;
            }
            spin_pause();
        }
        __atomic_store_n(&s->v, 2 * k + 2, __ATOMIC_RELEASE);
    }
}

double bench_line_pingpong(int cpu_a, int cpu_b, long n)
{
    PingPong pp;
    LinePP s = { 0 };

    pp_init(&pp, cpu_a, cpu_b, n);
    pp.priv = &s;
    pp.fn_a = line_thread_a;
    pp.fn_b = line_thread_b;
    return pp_run(&pp);
}

void bench_print_floor(const char *label, const char *unit,
                       const double *v, const char *floor_name,
                       const double *line, int n)
{
    char a[32];

    printf("# %s, run by run: %s", label, unit);
    for (int r = 0; r < n; r++) {
        printf(" %s", bench_fmt(a, sizeof(a), v[r]));
    }
    printf("; %s", floor_name);
    for (int r = 0; r < n; r++) {
        printf(" %s", bench_fmt(a, sizeof(a), line[r]));
    }
    printf("\n");
}

/* ---- the wake-up floor --------------------------------------------- */

/*
 * Two threads hand a turn back and forth through two futex words, each
 * sleeping in FUTEX_WAIT until woken: the cheapest kernel wake-up and
 * thread switch there is (no fd, no poll).  With both threads on one CPU
 * every direction is a wake-up plus a switch.
 */
typedef struct FutexPP {
    _Alignas(64) int turn[2];  /* 1: thread i may go; -1: stop */
} FutexPP;

static void futex_give(FutexPP *s, int i, int v)
{
    __atomic_store_n(&s->turn[i], v, __ATOMIC_RELEASE);
    syscall(SYS_futex, &s->turn[i], FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Wait for thread @i's turn; false when told to stop. */
static bool futex_take(FutexPP *s, int i)
{
    int v;

    while (!(v = __atomic_exchange_n(&s->turn[i], 0, __ATOMIC_ACQUIRE))) {
        syscall(SYS_futex, &s->turn[i], FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    }
    return v > 0;
}

static void *futex_thread_a(void *opaque)
{
    PingPong *pp = opaque;
    FutexPP *s = pp->priv;

    pp_ready(pp);
    for (;;) {
        futex_give(s, 1, 1);
        futex_take(s, 0);
        if (pp_tick(pp)) {
            futex_give(s, 1, -1);
            return NULL;
        }
    }
}

static void *futex_thread_b(void *opaque)
{
    PingPong *pp = opaque;
    FutexPP *s = pp->priv;

    pp_ready(pp);
    while (futex_take(s, 1)) {
        futex_give(s, 0, 1);
    }
    return NULL;
}

double bench_futex_pingpong(int cpu_a, int cpu_b, long n)
{
    PingPong pp;
    FutexPP s = { { 0, 0 } };

    pp_init(&pp, cpu_a, cpu_b, n);
    pp.priv = &s;
    pp.fn_a = futex_thread_a;
    pp.fn_b = futex_thread_b;
    return pp_run(&pp);
}

/* ---- W4 ---------------------------------------------------------------- */

long bench_w4_done;

void w4_consume(int fd)
{
    char c;

    if (read(fd, &c, 1) == 1) {
        bench_w4_done++;
    }
}

/* Partial Fisher-Yates: perm[0..k) becomes k distinct random indices. */
static void pick(BenchRng *rng, int *perm, int n, int k)
{
    for (int j = 0; j < k; j++) {
        int x = j + (int)rng_below(rng, (uint64_t)(n - j));
        int tmp = perm[j];

        perm[j] = perm[x];
        perm[x] = tmp;
    }
}

static bool write_bytes(const int *wfds, const int *perm, int k, char *why,
                        size_t whylen)
{
    for (int j = 0; j < k; j++) {
        if (write(wfds[perm[j]], "x", 1) != 1) {
            snprintf(why, whylen, "write: %s", strerror(errno));
            return false;
        }
    }
    return true;
}

#define W4_REG_REPS 3
#define W4_WARM 5

void w4_run(const W4Backend *be, int n, const int *rfds, const int *wfds,
            long iters, uint64_t budget_ns, W4Result *r)
{
    int k = n < 100 ? n : 100;
    int *perm = malloc(sizeof(int) * (size_t)n);
    BenchRng rng;
    void *b;
    uint64_t t0, t1, t2, busy = 0;
    long it;

    memset(r, 0, sizeof(*r));
    b = be->create(n, rfds, r->why, sizeof(r->why));
    if (!b) {
        free(perm);
        return;
    }
    for (int i = 0; i < n; i++) {
        perm[i] = i;
    }
    rng_seed(&rng, 42 + (uint64_t)n);

    /* Best of a few register/unregister cycles: one cycle is short enough
     * for a page fault or a preemption to dominate it. */
    r->reg_ns = r->unreg_ns = -1;
    for (int rep = 0; rep < W4_REG_REPS; rep++) {
        t0 = now_ns();
        be->register_all(b);
        t1 = now_ns();
        be->unregister_all(b);
        t2 = now_ns();
        if (r->reg_ns < 0 || (double)(t1 - t0) / n < r->reg_ns) {
            r->reg_ns = (double)(t1 - t0) / n;
        }
        if (r->unreg_ns < 0 || (double)(t2 - t1) / n < r->unreg_ns) {
            r->unreg_ns = (double)(t2 - t1) / n;
        }
    }

    be->register_all(b);
    bench_w4_done = 0;
    uint64_t start = now_ns();
    for (it = 0; it < iters + W4_WARM; it++) {
        pick(&rng, perm, n, k);
        if (!write_bytes(wfds, perm, k, r->why, sizeof(r->why))) {
            goto out;
        }
        long target = bench_w4_done + k;
        t0 = now_ns();
        be->dispatch(b, target);
        t1 = now_ns();
        if (it >= W4_WARM) {
            busy += t1 - t0;
            r->events += k;
        }
        if (it >= W4_WARM + 20 && t1 - start > budget_ns) {
            break;
        }
    }
    r->dispatch_ns = (double)busy / (double)r->events;
    be->unregister_all(b);
    r->ok = true;
out:
    be->destroy(b);
    free(perm);
}

double w4_read_floor(int n, const int *rfds, const int *wfds, long iters)
{
    int k = n < 100 ? n : 100;
    int *perm = malloc(sizeof(int) * (size_t)n);
    BenchRng rng;
    uint64_t busy = 0;
    long events = 0;
    char why[64];

    for (int i = 0; i < n; i++) {
        perm[i] = i;
    }
    rng_seed(&rng, 43 + (uint64_t)n);
    for (long it = 0; it < iters + W4_WARM; it++) {
        pick(&rng, perm, n, k);
        if (!write_bytes(wfds, perm, k, why, sizeof(why))) {
            free(perm);
            return -1;
        }
        uint64_t t0 = now_ns();
        for (int j = 0; j < k; j++) {
            w4_consume(rfds[perm[j]]);
        }
        uint64_t t1 = now_ns();
        if (it >= W4_WARM) {
            busy += t1 - t0;
            events += k;
        }
    }
    free(perm);
    return (double)busy / (double)events;
}
