/*
 * B1: block I/O through the coroutine API, the aioloop side of the fio
 * comparison that bench/b1-blockio.sh drives.
 *
 * One AioContext, run by the main thread with aio_poll(ctx, true); N
 * coroutines (the queue depth), each looping "pick an offset, issue one
 * request with aioloop_co_preadv()/aioloop_co_pwritev(), count it" until
 * the run time is over or the number of requests is reached, as fio's
 * iodepth=N does with one job.  Workloads, named as fio's rw= values:
 *
 *   randread  uniform random block-aligned offsets over the file (fio with
 *             norandommap), default bs 4 KiB
 *   read      sequential: the next request starts where the previous one
 *             (of any coroutine) ended, wrapping at the end, default 1 MiB
 *   write     the same, writing, default 1 MiB
 *
 *   b1-blockio --file PATH [--engine io_uring|linux-aio|threads]
 *              [--rw randread|read|write] [--bs BYTES[k|m]] [--iodepth N]
 *              [--direct] [--runtime SECONDS] [--ops N] [--size BYTES]
 *              [--poll-max-ns NS] [--max-batch N]
 *
 * Prints one machine-readable line (key=value, read by b1-blockio.sh):
 *
 *   b1 engine=io_uring fdmon=io_uring rw=randread bs=4096 iodepth=1
 *      direct=0 ops=... seconds=... iops=... mbps=... requests=...
 *      submits=... iterations=... usr=... sys=... proc=... vcsw=... ivcsw=...
 *
 * mbps is 10^6 bytes per second (fio's "MB/s"); usr/sys are the CPU time
 * of the main thread (the one that submits and reaps) in percent of the
 * run's wall time, as fio counts its job (RUSAGE_THREAD); proc is the
 * whole process's CPU time, thread-pool workers included, in percent (fio
 * has no such figure: its posixaio threads and the kernel's io-wq workers
 * are not in its job's CPU time); vcsw/ivcsw are the main thread's
 * voluntary (it blocked) and involuntary (it was preempted) context
 * switches; requests/submits are the context's block counters (requests handed
 * to the kernel or the pool, and the system calls that handed them over);
 * iterations are aio_poll() calls.  Exit status 0, or 1 with a message
 * (bad option, file, engine or a failed request).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <aioloop/aio.h>
#include <aioloop/block-io.h>
#include <aioloop/coroutine.h>
#include <aioloop/error.h>
#include <aioloop/iov.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_IODEPTH 1024
#define BUF_ALIGN 4096

typedef enum { RW_RANDREAD, RW_READ, RW_WRITE } Rw;

typedef struct B1 {
    /* options */
    const char *file;
    AioloopBlockEngine engine;
    Rw rw;
    uint64_t bs;
    int iodepth;
    bool direct;
    double runtime;
    uint64_t max_ops;
    uint64_t size;
    int64_t poll_max_ns;
    int64_t max_batch; /* aio_max_batch; 0: the default */

    /* run */
    int fd;
    uint64_t nblocks; /* of bs in the region */
    uint64_t next_block; /* sequential cursor */
    BenchRng rng;
    uint64_t deadline;
    uint64_t ops;      /* requests completed */
    uint64_t issued;   /* requests started (bounded by max_ops) */
    int running;       /* coroutines not finished */
    int error;         /* first failure, -errno */
} B1;

typedef struct Worker {
    B1 *b;
    void *buf;
} Worker;

static uint64_t next_offset(B1 *b)
{
    uint64_t blk;

    if (b->rw == RW_RANDREAD) {
        blk = rng_below(&b->rng, b->nblocks);
    } else {
        blk = b->next_block;
        if (++b->next_block == b->nblocks) {
            b->next_block = 0;
        }
    }
    return blk * b->bs;
}

static void coroutine_fn worker_co(void *opaque)
{
    Worker *w = opaque;
    B1 *b = w->b;
    QEMUIOVector qiov;

    qemu_iovec_init_buf(&qiov, w->buf, b->bs);
    while (!b->error && b->issued < b->max_ops && now_ns() < b->deadline) {
        uint64_t off = next_offset(b);
        int ret;

        b->issued++;
        if (b->rw == RW_WRITE) {
            ret = aioloop_co_pwritev(b->fd, off, &qiov, 0);
        } else {
            ret = aioloop_co_preadv(b->fd, off, &qiov, 0);
        }
        if (ret < 0) {
            if (!b->error) {
                b->error = ret;
            }
            break;
        }
        b->ops++;
    }
    b->running--;
}

static uint64_t parse_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);

    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end || !v) {
        fprintf(stderr, "b1-blockio: bad size '%s'\n", s);
        exit(1);
    }
    return v;
}

static double cpu_s(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: b1-blockio --file PATH [--engine io_uring|linux-aio|"
            "threads] [--rw randread|read|write]\n"
            "       [--bs BYTES[k|m]] [--iodepth N] [--direct] "
            "[--runtime SECONDS] [--ops N]\n"
            "       [--size BYTES] [--poll-max-ns NS] [--max-batch N]\n");
    exit(1);
}

static void parse_args(B1 *b, int argc, char **argv)
{
    static const struct option opts[] = {
        { "file", required_argument, NULL, 'f' },
        { "engine", required_argument, NULL, 'e' },
        { "rw", required_argument, NULL, 'w' },
        { "bs", required_argument, NULL, 'b' },
        { "iodepth", required_argument, NULL, 'q' },
        { "direct", no_argument, NULL, 'd' },
        { "runtime", required_argument, NULL, 't' },
        { "ops", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 's' },
        { "poll-max-ns", required_argument, NULL, 'p' },
        { "max-batch", required_argument, NULL, 'm' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    bool bs_set = false;
    int c;

    *b = (B1){
        .engine = AIOLOOP_BLOCK_ENGINE_AUTO,
        .rw = RW_RANDREAD,
        .iodepth = 1,
        .runtime = 5,
        .max_ops = UINT64_MAX,
        .fd = -1,
    };
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            b->file = optarg;
            break;
        case 'e':
            if (!strcmp(optarg, "io_uring")) {
                b->engine = AIOLOOP_BLOCK_ENGINE_IO_URING;
            } else if (!strcmp(optarg, "linux-aio")) {
                b->engine = AIOLOOP_BLOCK_ENGINE_LINUX_AIO;
            } else if (!strcmp(optarg, "threads")) {
                b->engine = AIOLOOP_BLOCK_ENGINE_THREADS;
            } else if (!strcmp(optarg, "auto")) {
                b->engine = AIOLOOP_BLOCK_ENGINE_AUTO;
            } else {
                fprintf(stderr, "b1-blockio: unknown engine '%s'\n", optarg);
                exit(1);
            }
            break;
        case 'w':
            if (!strcmp(optarg, "randread")) {
                b->rw = RW_RANDREAD;
            } else if (!strcmp(optarg, "read")) {
                b->rw = RW_READ;
            } else if (!strcmp(optarg, "write")) {
                b->rw = RW_WRITE;
            } else {
                fprintf(stderr, "b1-blockio: unknown workload '%s' "
                        "(randread, read, write)\n", optarg);
                exit(1);
            }
            break;
        case 'b':
            b->bs = parse_size(optarg);
            bs_set = true;
            break;
        case 'q':
            b->iodepth = atoi(optarg);
            if (b->iodepth < 1 || b->iodepth > MAX_IODEPTH) {
                fprintf(stderr, "b1-blockio: iodepth 1..%d\n", MAX_IODEPTH);
                exit(1);
            }
            break;
        case 'd':
            b->direct = true;
            break;
        case 't':
            b->runtime = atof(optarg);
            break;
        case 'n':
            b->max_ops = parse_size(optarg);
            break;
        case 's':
            b->size = parse_size(optarg);
            break;
        case 'p':
            b->poll_max_ns = atoll(optarg);
            break;
        case 'm':
            b->max_batch = atoll(optarg);
            break;
        default:
            usage();
        }
    }
    if (!b->file || optind != argc || b->runtime <= 0) {
        usage();
    }
    if (!bs_set) {
        b->bs = b->rw == RW_RANDREAD ? 4096 : 1 << 20;
    }
}

int main(int argc, char **argv)
{
    static B1 b;
    Worker *workers;
    AioContext *ctx;
    AioloopContextStats st0, st1;
    AioloopBlockStats bst0, bst1;
    struct rusage ru0, ru1, rp0, rp1;
    struct stat sb;
    Error *err = NULL;
    uint64_t t0, t1;
    double secs;
    int ret;

    parse_args(&b, argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);

    b.fd = open(b.file, (b.rw == RW_WRITE ? O_RDWR : O_RDONLY) |
                (b.direct ? O_DIRECT : 0));
    if (b.fd < 0) {
        fprintf(stderr, "b1-blockio: open %s%s: %s\n", b.file,
                b.direct ? " (O_DIRECT)" : "", strerror(errno));
        return 1;
    }
    if (fstat(b.fd, &sb) < 0) {
        fprintf(stderr, "b1-blockio: fstat: %s\n", strerror(errno));
        return 1;
    }
    if (!b.size || b.size > (uint64_t)sb.st_size) {
        b.size = (uint64_t)sb.st_size;
    }
    b.nblocks = b.size / b.bs;
    if (!b.nblocks) {
        fprintf(stderr, "b1-blockio: %s: %" PRIu64 " bytes, smaller than "
                "one block of %" PRIu64 "\n", b.file, b.size, b.bs);
        return 1;
    }
    rng_seed(&b.rng, 0x5eed ^ (uint64_t)getpid());

    ctx = aio_context_new(&err);
    if (!ctx) {
        fprintf(stderr, "b1-blockio: aio_context_new: %s\n",
                error_get_pretty(err));
        return 1;
    }
    qemu_set_current_aio_context(ctx);
    aio_context_set_poll_params(ctx, b.poll_max_ns, 0, 0, &error_abort);
    aio_context_set_aio_params(ctx, b.max_batch);
    ret = aioloop_block_engine_select(ctx, b.engine, &err);
    if (ret < 0) {
        fprintf(stderr, "b1-blockio: engine %s: %s\n",
                aioloop_block_engine_name(b.engine), error_get_pretty(err));
        return 1;
    }
    b.engine = (AioloopBlockEngine)ret;

    workers = calloc((size_t)b.iodepth, sizeof(*workers));
    for (int i = 0; i < b.iodepth; i++) {
        workers[i].b = &b;
        if (posix_memalign(&workers[i].buf, BUF_ALIGN, b.bs)) {
            fprintf(stderr, "b1-blockio: out of memory\n");
            return 1;
        }
        /* Touch the buffers now, not inside the measurement. */
        memset(workers[i].buf, 0xa5 ^ i, b.bs);
    }

    aioloop_context_get_stats(ctx, &st0);
    aioloop_block_get_stats(ctx, &bst0);
    getrusage(RUSAGE_THREAD, &ru0);
    getrusage(RUSAGE_SELF, &rp0);
    t0 = now_ns();
    b.deadline = t0 + (uint64_t)(b.runtime * 1e9);
    b.running = b.iodepth;
    for (int i = 0; i < b.iodepth; i++) {
        aio_co_enter(ctx, qemu_coroutine_create(worker_co, &workers[i]));
    }
    while (b.running) {
        aio_poll(ctx, true);
    }
    t1 = now_ns();
    getrusage(RUSAGE_THREAD, &ru1);
    getrusage(RUSAGE_SELF, &rp1);
    aioloop_context_get_stats(ctx, &st1);
    aioloop_block_get_stats(ctx, &bst1);

    if (b.error) {
        fprintf(stderr, "b1-blockio: request failed: %s\n",
                strerror(-b.error));
        return 1;
    }
    secs = (double)(t1 - t0) / 1e9;
    printf("b1 engine=%s fdmon=%s rw=%s bs=%" PRIu64 " iodepth=%d direct=%d"
           " ops=%" PRIu64 " seconds=%.3f iops=%.1f mbps=%.1f"
           " requests=%" PRIu64 " submits=%" PRIu64 " iterations=%" PRIu64
           " usr=%.1f sys=%.1f proc=%.1f vcsw=%ld ivcsw=%ld\n",
           aioloop_block_engine_name(b.engine),
           aioloop_context_fdmon_name(ctx),
           b.rw == RW_RANDREAD ? "randread" : b.rw == RW_READ ? "read"
                                                                : "write",
           b.bs, b.iodepth, b.direct, b.ops, secs, (double)b.ops / secs,
           (double)b.ops * (double)b.bs / secs / 1e6,
           bst1.requests - bst0.requests, bst1.submits - bst0.submits,
           st1.iterations - st0.iterations,
           100.0 * (cpu_s(&ru1.ru_utime) - cpu_s(&ru0.ru_utime)) / secs,
           100.0 * (cpu_s(&ru1.ru_stime) - cpu_s(&ru0.ru_stime)) / secs,
           100.0 * (cpu_s(&rp1.ru_utime) - cpu_s(&rp0.ru_utime) +
                    cpu_s(&rp1.ru_stime) - cpu_s(&rp0.ru_stime)) / secs,
           ru1.ru_nvcsw - ru0.ru_nvcsw, ru1.ru_nivcsw - ru0.ru_nivcsw);

    for (int i = 0; i < b.iodepth; i++) {
        free(workers[i].buf);
    }
    free(workers);
    close(b.fd);
    aio_context_unref(ctx);
    return 0;
}
