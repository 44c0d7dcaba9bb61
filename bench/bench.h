/*
 * Shared helpers of the side-by-side benchmarks: clock, quick mode, RNG,
 * CPU pinning, heap accounting, the cross-thread ping-pong harness, the
 * fd-dispatch harness, the peer table and the result-line printer.
 *
 * Every figure is printed on one line together with the same workload run
 * on the peers (libev, libuv, libevent, GLib) in the same process, because
 * absolute times on a shared 2-vCPU VM drift from run to run while ratios
 * measured a few milliseconds apart do not.
 */
#ifndef AIOLOOP_BENCH_H
#define AIOLOOP_BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- clock and sizing ------------------------------------------------ */

static inline uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* True when BENCH_QUICK=1 (smoke test: 10x fewer iterations). */
bool bench_quick(void);
/* @n, or @n / 10 (at least 1) in quick mode. */
long bench_n(long n);

/* ---- random numbers (xorshift64*: cheap, reproducible) --------------- */

typedef struct BenchRng {
    uint64_t s;
} BenchRng;

static inline void rng_seed(BenchRng *r, uint64_t seed)
{
    r->s = seed ? seed : 0x9e3779b97f4a7c15ull;
}

static inline uint64_t rng_next(BenchRng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, bound). */
static inline uint64_t rng_below(BenchRng *r, uint64_t bound)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * bound) >> 64);
}

/* ---- CPUs ------------------------------------------------------------- */

/* Fill @cpus with the CPUs this process may run on; returns how many. */
int bench_cpus(int *cpus, int max);

/* ---- memory ----------------------------------------------------------- */

/* Bytes currently allocated through malloc (mallinfo2: in use + mmapped). */
size_t bench_heap_bytes(void);

/* ---- peers ------------------------------------------------------------ */

enum { PEER_LIBEV, PEER_LIBUV, PEER_LIBEVENT, PEER_GLIB, NPEERS };

extern const char *const bench_peer_names[NPEERS];

/* W2: see PingPong below. */
typedef struct PingPong PingPong;

/* W3 input: the same random deadlines for every library. */
typedef struct W3Input {
    long n;                     /* timers */
    const int64_t *arm_rel_ns;  /* [n] first deadline, relative to now */
    const int64_t *rearm_rel_ns;/* [n] second deadline, relative to now */
    const uint32_t *cancel_idx; /* [n / 2] which timers to cancel */
} W3Input;

typedef struct W3Result {
    long n;                 /* timers actually used (GLib is capped) */
    double create_ns;       /* per timer: allocate + initialise, not armed */
    double arm_ns;          /* per op: first arm */
    double rearm_ns;        /* per op: re-arm an armed timer */
    double cancel_ns;       /* per op: cancel an armed timer */
    double bytes_per_timer; /* heap growth after create+arm, / n */
    size_t handle_size;     /* sizeof the user-visible handle */
} W3Result;

/*
 * W4 backend: one event loop watching @n read ends.  The callback of every
 * fd reads one byte and, if it got it, increments bench_w4_done.
 */
typedef struct W4Backend {
    const char *name;
    /* NULL with @why filled when the backend is unavailable. */
    void *(*create)(int n, const int *fds, char *why, size_t whylen);
    /* Register every fd for read, then run one non-blocking iteration so
     * that backends applying registrations lazily (libev, libuv) pay for
     * them inside the measurement. */
    void (*register_all)(void *b);
    /* Run loop iterations until bench_w4_done reaches @target. */
    void (*dispatch)(void *b, long target);
    /* Unregister every fd, then one non-blocking iteration. */
    void (*unregister_all)(void *b);
    void (*destroy)(void *b);
} W4Backend;

extern long bench_w4_done;

typedef struct PeerOps {
    const char *name;
    /* W1: ns per callback of a self-rescheduling deferred callback. */
    double (*w1_chain)(long n);
    /* W2: fill @pp's thread functions and run it (pp_run); ns per round
     * trip or -1. */
    double (*w2_pingpong)(PingPong *pp);
    /* W3: 0 or -1. */
    int (*w3_timers)(const W3Input *in, W3Result *r);
    /* W4. */
    const W4Backend *w4;
    /* One line about the peer's configuration (backend, version). */
    const char *(*describe)(void);
} PeerOps;

/*
 * NULL where the peer was not found at build time, or was left out with
 * BENCH_PEERS (see bench_init_peers).
 */
extern const PeerOps *bench_peers[NPEERS];

/*
 * Call first: applies BENCH_PEERS (a comma-separated list of peers to run,
 * "none" for aioloop alone, e.g. under perf; default all) and prints
 * "skipped: <peer> not found" for every peer that was not built, and a
 * "# <peer description>" line for the others.
 */
void bench_init_peers(void);

/* ---- output ----------------------------------------------------------- */

/*
 * One result line:
 *   <label> aioloop <mine> <unit> | libev x | libuv y | ... | ratio vs best R
 * A negative peer value prints as "n/a" and is left out of the best.
 * @tail (may be NULL) is appended, e.g. a goal verdict.  Returns the
 * ratio aioloop / best peer, or -1 when no peer ran.
 */
double bench_line(const char *label, const char *unit, double mine,
                  const double peers[NPEERS], const char *tail);
/* Formats @v compactly (3 significant digits) into @buf. */
const char *bench_fmt(char *buf, size_t len, double v);
/* "goal <= X: met" / "NOT met" into @buf. */
const char *bench_goal(char *buf, size_t len, double value, double limit,
                       const char *what);

/* ---- W2 cross-thread ping-pong harness -------------------------------- */

/*
 * Two threads pinned with pthread_attr_setaffinity_np before they start.
 * Side A sends the first ping and counts round trips with pp_tick() in the
 * callback that receives the pong; pp_tick() returns true when A must stop
 * (and tell B to stop).  The first @warm round trips are not timed (they let
 * adaptive polling settle).  A run longer than @cap_ns is cut short and the
 * shorter count reported (pp->capped).
 */
struct PingPong {
    int cpu_a, cpu_b;
    long warm, n;
    uint64_t cap_ns;
    void *(*fn_a)(void *pp);
    void *(*fn_b)(void *pp);
    void *priv;

    /* Written by side A only. */
    long count;
    uint64_t t_start, t_end;
    bool capped;

    pthread_barrier_t barrier;
};

void pp_init(PingPong *pp, int cpu_a, int cpu_b, long n);
/* Runs cut short by cap_ns so far (they report fewer round trips). */
extern int bench_pp_capped;
/* Starts fn_a and fn_b pinned, joins them; ns per round trip or -1. */
double pp_run(PingPong *pp);
/* Called first by each thread function: wait until both threads exist. */
void pp_ready(PingPong *pp);

/*
 * Two spinning threads pinned to @cpu_a and @cpu_b pass a counter through
 * one cache line @n times: ns per round trip (two line transfers), or -1.
 * The cheapest polled hand-over the two CPUs allow at that moment; run it
 * next to a polled figure to tell the machine's drift from the loop's.
 * Meaningless with both threads on one CPU.
 */
double bench_line_pingpong(int cpu_a, int cpu_b, long n);
/*
 * Two threads pinned to @cpu_a and @cpu_b wake each other through futexes,
 * sleeping in between, @n times: ns per round trip (two wake-ups), or -1.
 * On one CPU, half of it is the least a hand-over between two threads that
 * sleep can cost on this machine at that moment.
 */
double bench_futex_pingpong(int cpu_a, int cpu_b, long n);
/* "# LABEL, run by run: UNIT v[0] ...; FLOOR_NAME line[0] ..." */
void bench_print_floor(const char *label, const char *unit,
                       const double *v, const char *floor_name,
                       const double *line, int n);

static inline bool pp_tick(PingPong *pp)
{
    long c = ++pp->count;

    if (c == pp->warm) {
        pp->t_start = now_ns();
        return false;
    }
    if (c < pp->warm) {
        return false;
    }
    if (c >= pp->warm + pp->n) {
        pp->t_end = now_ns();
        return true;
    }
    if ((c & 255) == 0) {
        uint64_t t = now_ns();

        if (t - pp->t_start > pp->cap_ns) {
            pp->t_end = t;
            pp->capped = true;
            return true;
        }
    }
    return false;
}

/* ---- W4 fd-dispatch harness ------------------------------------------- */

typedef struct W4Result {
    double reg_ns;      /* per fd */
    double dispatch_ns; /* per dispatched event */
    double unreg_ns;    /* per fd */
    long events;
    bool ok;
    char why[160];      /* reason when !ok */
} W4Result;

/*
 * Run W4 for one backend over @n socketpairs (@rfds registered, @wfds
 * written): best of 3 register-all/unregister-all cycles, then register all
 * and run iterations of "write one byte into min(100, n) random pairs,
 * dispatch them" (up to @iters, or @budget_ns once 20 are done).
 */
void w4_run(const W4Backend *be, int n, const int *rfds, const int *wfds,
            long iters, uint64_t budget_ns, W4Result *r);

/*
 * The floor under W4 dispatch: the same random writes, then the k reads
 * done directly, no event loop: ns per read.
 */
double w4_read_floor(int n, const int *rfds, const int *wfds, long iters);

/* The read callback body shared by every backend. */
void w4_consume(int fd);

#endif
