/*
 * Block I/O through every engine: the engine comes from
 * AIOLOOP_BLOCK_ENGINE (meson registers one test per engine, and io_uring
 * again with each fd monitor: shared ring and private ring); without it the
 * program runs the cases once per engine, io_uring, linux-aio, threads.
 * An engine this machine cannot provide prints "SKIP engine X: reason" and
 * counts as skipped: the program exits 77 when nothing at all ran.
 *
 * With AIOLOOP_BLOCK_TEST_DIRECT=1 the program runs the O_DIRECT cases
 * instead of the buffered ones, with =0 only the buffered ones, unset both.
 * O_DIRECT refused by the test directory is a skip with the reason printed.
 * Files go to AIOLOOP_TEST_DIR, else /var/tmp (tmpfs, a common /tmp, has no
 * O_DIRECT).
 *
 * The model test: 64 coroutines do random reads and writes of 4 KiB to
 * 1 MiB over a 256 MiB file (AIOLOOP_BLOCK_TEST_MB); no request overlaps a
 * write in flight, so a byte model predicts every read exactly, and the
 * whole file is compared with it at the end.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>
#include <aioloop/block-io.h>
#include <aioloop/coroutine.h>
#include <aioloop/iothread.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aio-internal.h"
#include "aio-test.h"
#include "test.h"

#if TEST_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#define KiB ((uint64_t)1024)
#define MiB (1024 * KiB)
#define NCO 64
#define ALIGN 4096

static AioloopBlockEngine engine;
static bool direct;

/* ---- set-up ------------------------------------------------------------- */

static const char *test_dir(void)
{
    const char *dir = getenv("AIOLOOP_TEST_DIR");

    return dir && *dir ? dir : "/var/tmp";
}

/* A new unlinked file; -1 with errno when O_DIRECT is refused. */
static int test_file(bool want_direct)
{
    char path[4096];
    int fd;

    snprintf(path, sizeof(path), "%s/aioloop-block-XXXXXX", test_dir());
    fd = mkstemp(path);
    if (fd < 0) {
        TEST_FAIL_("mkstemp(%s): %s", path, strerror(errno));
    }
    unlink(path);
    if (want_direct) {
        int flags = fcntl(fd, F_GETFL);

        if (fcntl(fd, F_SETFL, flags | O_DIRECT) < 0) {
            int err = errno;

            close(fd);
            errno = err;
            return -1;
        }
    }
    return fd;
}

/* The engine AIOLOOP_BLOCK_ENGINE forces, AUTO for "every engine". */
static AioloopBlockEngine engine_from_env(void)
{
    const char *env = getenv("AIOLOOP_BLOCK_ENGINE");

    if (!env || !*env) {
        return AIOLOOP_BLOCK_ENGINE_AUTO;
    }
    if (!strcmp(env, "io_uring")) {
        return AIOLOOP_BLOCK_ENGINE_IO_URING;
    }
    if (!strcmp(env, "linux-aio")) {
        return AIOLOOP_BLOCK_ENGINE_LINUX_AIO;
    }
    if (!strcmp(env, "threads")) {
        return AIOLOOP_BLOCK_ENGINE_THREADS;
    }
    TEST_FAIL_("AIOLOOP_BLOCK_ENGINE=%s: not an engine", env);
}

/*
 * A context of this thread, running the engine under test (main() checked
 * that it can be set up, so failing now is a failure).
 */
static AioContext *block_ctx_new(void)
{
    AioContext *ctx = test_aio_context_new();
    Error *err = NULL;
    int ret = aioloop_block_engine_select(ctx, engine, &err);
    AioloopBlockStats st;

    if (ret < 0) {
        TEST_FAIL_("engine %s: %s", aioloop_block_engine_name(engine),
                   error_get_pretty(err));
    }
    ASSERT_EQ(ret, engine);
    aioloop_block_get_stats(ctx, &st);
    ASSERT_EQ(st.engine, engine);
    qemu_set_current_aio_context(ctx);
    return ctx;
}

static void block_ctx_free(AioContext *ctx)
{
    AioloopBlockStats st;

    test_aio_drain(ctx);
    aioloop_block_get_stats(ctx, &st);
    ASSERT_UINT(st.inflight, ==, 0);
    ASSERT_EQ(st.engine, engine);
    qemu_set_current_aio_context(NULL);
    aio_context_unref(ctx);
}

static void *xmemalign(size_t size)
{
    void *p = NULL;

    ASSERT_EQ(posix_memalign(&p, ALIGN, size ? size : ALIGN), 0);
    return p;
}

static void run_until(AioContext *ctx, const unsigned *counter,
                      unsigned target, const char *what)
{
    test_watchdog(what, 240);
    while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < target) {
        aio_poll(ctx, true);
    }
    test_watchdog_cancel();
}

/*
 * ASSERT_MEM_EQ() for the model's megabytes: memcmp() first, the byte loop
 * (which names the first difference) only on a mismatch.  Under TSan the
 * instrumented loop over 256 MiB costs more than the I/O.
 */
#define ASSERT_BIG_MEM_EQ(a, b, n)                                         \
    do {                                                                   \
        if (memcmp((a), (b), (n)) != 0) {                                  \
            ASSERT_MEM_EQ(a, b, n);                                        \
        }                                                                  \
    } while (0)

/* ---- the model test ----------------------------------------------------- */

typedef struct Range {
    uint64_t off, len;
    bool write;
    bool busy;
} Range;

typedef struct Model {
    int fd;
    uint64_t size;
    uint8_t *bytes;          /* what the file must contain */
    unsigned ops_left;
    unsigned finished;       /* coroutines done */
    unsigned generation;
    unsigned seed;
    Range inflight[NCO];
    uint64_t reads, writes, multi;
} Model;

static unsigned rnd(Model *m)
{
    return (unsigned)rand_r(&m->seed);
}

static bool conflicts(Model *m, uint64_t off, uint64_t len, bool write)
{
    for (int i = 0; i < NCO; i++) {
        Range *r = &m->inflight[i];

        if (r->busy && (write || r->write) && off < r->off + r->len &&
            r->off < off + len) {
            return true;
        }
    }
    return false;
}

/* The data a write at @off (8-byte words) carries in @gen. */
static void fill_pattern(uint8_t *buf, uint64_t off, uint64_t len,
                         unsigned gen)
{
    for (uint64_t i = 0; i < len; i += 8) {
        uint64_t v = ((off + i) * 0x9E3779B97F4A7C15ULL) ^
                     ((uint64_t)gen << 40) ^ (off + i);

        memcpy(buf + i, &v, 8);
    }
}

/* Split [0, len) into 1-4 separately allocated, aligned pieces. */
static int build_qiov(Model *m, QEMUIOVector *qiov, uint8_t **pieces,
                      uint64_t len)
{
    uint64_t pages = len / ALIGN;
    int n = 1 + (int)(rnd(m) % 4);

    if ((uint64_t)n > pages) {
        n = (int)pages;
    }
    qemu_iovec_init(qiov, n);
    for (int i = 0; i < n; i++) {
        uint64_t left = pages;
        uint64_t take = i == n - 1 ? left : 1 + rnd(m) % (left - (n - 1 - i));

        pages -= take;
        pieces[i] = xmemalign(take * ALIGN);
        qemu_iovec_add(qiov, pieces[i], take * ALIGN);
    }
    return n;
}

static void coroutine_fn model_co(void *opaque)
{
    Model *m = opaque;
    int slot = -1;

    for (int i = 0; i < NCO; i++) {
        if (!m->inflight[i].busy && m->inflight[i].len == 0) {
            slot = i;
            m->inflight[i].len = 1; /* claimed */
            break;
        }
    }
    ASSERT_TRUE(slot >= 0);

    while (m->ops_left) {
        uint64_t pages = 1 + rnd(m) % (1u << (rnd(m) % 9)); /* 1..256 */
        uint64_t len = pages * ALIGN;
        bool write = rnd(m) % 2;
        uint64_t off;
        uint8_t *pieces[4];
        QEMUIOVector qiov;
        int n;
        int ret;
        int tries = 0;

        do {
            off = (uint64_t)(rnd(m) % ((m->size - len) / ALIGN + 1)) * ALIGN;
        } while (conflicts(m, off, len, write) && ++tries < 100);
        if (tries == 100) {
            /* Crowded: let the others finish something, then draw again. */
            aio_co_schedule(qemu_get_current_aio_context(),
                            qemu_coroutine_self());
            qemu_coroutine_yield();
            continue;
        }
        m->ops_left--;
        m->inflight[slot] = (Range){ off, len, write, true };
        n = build_qiov(m, &qiov, pieces, len);
        m->multi += n > 1;

        if (write) {
            unsigned gen = ++m->generation;
            uint64_t pos = off;

            for (int i = 0; i < n; i++) {
                fill_pattern(pieces[i], pos, qiov.iov[i].iov_len, gen);
                pos += qiov.iov[i].iov_len;
            }
            ret = aioloop_co_pwritev(m->fd, off, &qiov, 0);
            ASSERT_EQ(ret, 0);
            pos = off;
            for (int i = 0; i < n; i++) {
                memcpy(m->bytes + pos, pieces[i], qiov.iov[i].iov_len);
                pos += qiov.iov[i].iov_len;
            }
            m->writes++;
        } else {
            uint64_t pos = off;

            ret = aioloop_co_preadv(m->fd, off, &qiov, 0);
            ASSERT_EQ(ret, 0);
            for (int i = 0; i < n; i++) {
                ASSERT_BIG_MEM_EQ(pieces[i], m->bytes + pos,
                                  qiov.iov[i].iov_len);
                pos += qiov.iov[i].iov_len;
            }
            m->reads++;
        }
        m->inflight[slot].busy = false;
        for (int i = 0; i < n; i++) {
            free(pieces[i]);
        }
        qemu_iovec_destroy(&qiov);
    }
    m->finished++;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);

    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

static void model_run(int fd)
{
    AioContext *ctx = block_ctx_new();
    Model m = { .fd = fd, .seed = 12345 };
    uint64_t chunk = 4 * MiB;
    uint8_t *buf;

    m.size = env_u64("AIOLOOP_BLOCK_TEST_MB", 256) * MiB;
    m.ops_left = (unsigned)env_u64("AIOLOOP_BLOCK_TEST_OPS", 1500);
    m.bytes = calloc(1, m.size);
    ASSERT_NOT_NULL(m.bytes);
    ASSERT_EQ(ftruncate(fd, (off_t)m.size), 0);

    for (int i = 0; i < NCO; i++) {
        aio_co_enter(ctx, qemu_coroutine_create(model_co, &m));
    }
    run_until(ctx, &m.finished, NCO, "model test");
    printf("# %s%s: %" PRIu64 " reads, %" PRIu64 " writes (%" PRIu64
           " multi-iovec) over %" PRIu64 " MiB\n",
           aioloop_block_engine_name(engine), direct ? " O_DIRECT" : "",
           m.reads, m.writes, m.multi, (uint64_t)(m.size / MiB));
    ASSERT_TRUE(m.reads > 0 && m.writes > 0 && m.multi > 0);

    /* The whole file, read back synchronously, is the model. */
    buf = xmemalign(chunk);
    for (uint64_t off = 0; off < m.size; off += chunk) {
        ASSERT_EQ(pread(fd, buf, chunk, (off_t)off), (ssize_t)chunk);
        ASSERT_BIG_MEM_EQ(buf, m.bytes + off, chunk);
    }
    free(buf);
    free(m.bytes);
    block_ctx_free(ctx);
}

TEST(model_random_rw_buffered)
{
    int fd = test_file(false);

    model_run(fd);
    close(fd);
}

TEST(model_random_rw_direct)
{
    int fd = test_file(true);

    ASSERT_TRUE(fd >= 0); /* checked in main() */
    model_run(fd);
    close(fd);
}

/* ---- one request from a coroutine ---------------------------------------- */

typedef struct Req {
    int fd;
    int type; /* QEMU_AIO_* */
    uint64_t offset;
    QEMUIOVector *qiov;
    BdrvRequestFlags flags;
    bool qemu_api; /* laio_co_submit / luring_co_submit */
    int ret;
    unsigned done;
    AioContext *before, *after;
} Req;

static void coroutine_fn req_co(void *opaque)
{
    Req *r = opaque;

    r->before = qemu_get_current_aio_context();
    if (r->qemu_api && engine == AIOLOOP_BLOCK_ENGINE_IO_URING) {
        r->ret = luring_co_submit(NULL, r->fd, r->offset, r->qiov, r->type,
                                  r->flags);
    } else if (r->qemu_api && engine == AIOLOOP_BLOCK_ENGINE_LINUX_AIO) {
        r->ret = laio_co_submit(r->fd, r->offset, r->qiov, r->type, r->flags,
                                0);
    } else {
        switch (r->type) {
        case QEMU_AIO_READ:
            r->ret = aioloop_co_preadv(r->fd, r->offset, r->qiov, r->flags);
            break;
        case QEMU_AIO_WRITE:
            r->ret = aioloop_co_pwritev(r->fd, r->offset, r->qiov, r->flags);
            break;
        case QEMU_AIO_FLUSH:
            r->ret = aioloop_co_flush(r->fd);
            break;
        case AIOLOOP_AIO_FSYNC:
            r->ret = aioloop_co_fsync(r->fd);
            break;
        default:
            TEST_FAIL_("bad request type %d", r->type);
        }
    }
    r->after = qemu_get_current_aio_context();
    __atomic_fetch_add(&r->done, 1, __ATOMIC_RELEASE);
}

/* Run one request to completion on @ctx; returns its result. */
static int do_req(AioContext *ctx, Req *r)
{
    r->done = 0;
    aio_co_enter(ctx, qemu_coroutine_create(req_co, r));
    run_until(ctx, &r->done, 1, "one request");
    ASSERT_PTR_EQ(r->after, r->before);
    return r->ret;
}

static int do_rw(AioContext *ctx, int fd, int type, uint64_t off, void *buf,
                 size_t len, BdrvRequestFlags flags)
{
    QEMUIOVector qiov;
    Req r = { .fd = fd, .type = type, .offset = off, .qiov = &qiov,
              .flags = flags };

    qemu_iovec_init_buf(&qiov, buf, len);
    return do_req(ctx, &r);
}

TEST(bad_fd_is_ebadf)
{
    AioContext *ctx = block_ctx_new();
    uint8_t *buf = xmemalign(ALIGN);
    int file = test_file(false);
    int fd = fcntl(file, F_DUPFD, 900);

    /*
     * A number that names no file now, high enough that nothing opened
     * later (an engine's ring, an eventfd) gets it back.
     */
    ASSERT_TRUE(fd >= 900);
    close(fd);
    close(file);
    /* Defined bytes for the write: memcheck checks what a syscall is given. */
    memset(buf, 0, ALIGN);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_READ, 0, buf, ALIGN, 0), -EBADF);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_WRITE, 0, buf, ALIGN, 0), -EBADF);
    ASSERT_EQ(do_rw(ctx, -1, QEMU_AIO_READ, 0, buf, ALIGN, 0), -EBADF);
    free(buf);
    block_ctx_free(ctx);
}

TEST(read_at_and_past_eof_zero_fills)
{
    AioContext *ctx = block_ctx_new();
    int fd = test_file(false);
    uint8_t *data = xmemalign(3 * ALIGN);
    uint8_t *buf = xmemalign(4 * ALIGN);
    uint8_t zeros[4 * ALIGN] = { 0 };
    size_t fsize = 2 * ALIGN + 1000;

    fill_pattern(data, 0, 3 * ALIGN, 7);
    ASSERT_EQ(pwrite(fd, data, fsize, 0), (ssize_t)fsize);

    /* Straddling the end: the data, then zeroes. */
    memset(buf, 0xaa, 4 * ALIGN);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_READ, ALIGN, buf, 3 * ALIGN, 0), 0);
    ASSERT_MEM_EQ(buf, data + ALIGN, ALIGN + 1000);
    ASSERT_MEM_EQ(buf + ALIGN + 1000, zeros, 2 * ALIGN - 1000);

    /* Wholly past the end: zeroes, and success. */
    memset(buf, 0xaa, 4 * ALIGN);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_READ, 1 * MiB, buf, 4 * ALIGN, 0), 0);
    ASSERT_MEM_EQ(buf, zeros, 4 * ALIGN);
    free(data);
    free(buf);
    close(fd);
    block_ctx_free(ctx);
}

TEST(write_past_rlimit_fsize_is_efbig)
{
    AioContext *ctx = block_ctx_new();
    int fd = test_file(false);
    uint64_t limit = 1 * MiB;
    struct rlimit old, lim;
    uint8_t *buf = xmemalign(64 * KiB);
    uint8_t *back = xmemalign(64 * KiB);
    struct stat st;
    void (*old_handler)(int);

    fill_pattern(buf, 0, 64 * KiB, 3);
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = limit;
    old_handler = signal(SIGXFSZ, SIG_IGN);
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);

    /* Crossing the limit: what fits is written, then -EFBIG. */
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_WRITE, limit - 16 * KiB, buf, 64 * KiB,
                    0), -EFBIG);
    /* Wholly past it. */
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_WRITE, limit, buf, 4 * KiB, 0),
              -EFBIG);

    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    ASSERT_EQ(fstat(fd, &st), 0);
    ASSERT_EQ(st.st_size, (off_t)limit);
    ASSERT_EQ(pread(fd, back, 16 * KiB, (off_t)(limit - 16 * KiB)),
              (ssize_t)(16 * KiB));
    ASSERT_MEM_EQ(back, buf, 16 * KiB);
    free(buf);
    free(back);
    close(fd);
    block_ctx_free(ctx);
}

/*
 * One buffer over 4 GiB: io_uring's single-buffer READ/WRITE takes a 32-bit
 * length, which wrapped (4 GiB + 4 KiB became 4 KiB: the write stopped
 * there with -ENOSPC).  It must go on as a readv would, to the real
 * reason it stops.  The buffer is a reserved-nothing zero mapping.
 */
TEST(write_of_one_huge_buffer_goes_on)
{
    AioContext *ctx = block_ctx_new();
    int fd = test_file(false);
    uint64_t limit = 1 * MiB;
    size_t len = (size_t)4 * 1024 * MiB + 4 * KiB;
    struct rlimit old, lim;
    struct stat st;
    void (*old_handler)(int);
    void *buf;

    buf = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS |
               MAP_NORESERVE, -1, 0);
    ASSERT_TRUE(buf != MAP_FAILED);
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = limit;
    old_handler = signal(SIGXFSZ, SIG_IGN);
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_WRITE, 0, buf, len, 0), -EFBIG);
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    ASSERT_EQ(fstat(fd, &st), 0);
    ASSERT_EQ(st.st_size, (off_t)limit);
    munmap(buf, len);
    close(fd);
    block_ctx_free(ctx);
}

TEST(flush_fsync_and_fua_write)
{
    AioContext *ctx = block_ctx_new();
    int fd = test_file(false);
    uint8_t *buf = xmemalign(ALIGN);
    uint8_t *back = xmemalign(ALIGN);
    Req r = { .fd = fd };

    fill_pattern(buf, 0, ALIGN, 9);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_WRITE, 0, buf, ALIGN, BDRV_REQ_FUA), 0);
    r.type = QEMU_AIO_FLUSH;
    ASSERT_EQ(do_req(ctx, &r), 0);
    r.type = AIOLOOP_AIO_FSYNC;
    ASSERT_EQ(do_req(ctx, &r), 0);
    ASSERT_EQ(pread(fd, back, ALIGN, 0), (ssize_t)ALIGN);
    ASSERT_MEM_EQ(back, buf, ALIGN);
    /* A flush of a bad fd fails like the rest. */
    close(fd);
    r.type = QEMU_AIO_FLUSH;
    ASSERT_EQ(do_req(ctx, &r), -EBADF);
    free(buf);
    free(back);
    block_ctx_free(ctx);
}

TEST(qemu_entry_points)
{
    AioContext *ctx = block_ctx_new();
    int fd = test_file(false);
    uint8_t *buf = xmemalign(ALIGN);
    uint8_t *back = xmemalign(ALIGN);
    QEMUIOVector qiov;
    Req r = { .fd = fd, .qemu_api = true, .qiov = &qiov };

    if (engine == AIOLOOP_BLOCK_ENGINE_THREADS) {
        printf("# threads: no QEMU entry point of its own\n");
    }
    fill_pattern(buf, 0, ALIGN, 11);
    qemu_iovec_init_buf(&qiov, buf, ALIGN);
    r.type = QEMU_AIO_WRITE;
    ASSERT_EQ(do_req(ctx, &r), 0);
    qemu_iovec_init_buf(&qiov, back, ALIGN);
    r.type = QEMU_AIO_READ;
    ASSERT_EQ(do_req(ctx, &r), 0);
    ASSERT_MEM_EQ(back, buf, ALIGN);
    r.type = QEMU_AIO_FLUSH;
    ASSERT_EQ(do_req(ctx, &r), 0);
    /* Types the engines do not serve are refused, not crashed on. */
    if (engine != AIOLOOP_BLOCK_ENGINE_THREADS) {
        r.type = QEMU_AIO_DISCARD;
        ASSERT_EQ(do_req(ctx, &r), -ENOTSUP);
        r.type = QEMU_AIO_READ;
        r.qiov = NULL;
        ASSERT_EQ(do_req(ctx, &r), -EINVAL);
    }
    free(buf);
    free(back);
    close(fd);
    block_ctx_free(ctx);
}

/* aioloop_co_submit(): the engine per request, the context's left alone. */
typedef struct EngineReq {
    AioloopBlockEngine engine;
    int fd;
    int type;
    uint64_t offset;
    QEMUIOVector *qiov;
    int ret;
    unsigned done;
} EngineReq;

static void coroutine_fn engine_req_co(void *opaque)
{
    EngineReq *r = opaque;

    r->ret = aioloop_co_submit(r->engine, r->fd, r->offset, r->qiov, r->type,
                               0);
    r->done++;
}

static int engine_req(AioContext *ctx, EngineReq *r)
{
    r->done = 0;
    aio_co_enter(ctx, qemu_coroutine_create(engine_req_co, r));
    run_until(ctx, &r->done, 1, "aioloop_co_submit");
    return r->ret;
}

TEST(submit_with_another_engine)
{
    static const AioloopBlockEngine all[] = {
        AIOLOOP_BLOCK_ENGINE_AUTO, AIOLOOP_BLOCK_ENGINE_IO_URING,
        AIOLOOP_BLOCK_ENGINE_LINUX_AIO, AIOLOOP_BLOCK_ENGINE_THREADS,
    };
    AioContext *ctx = block_ctx_new();
    int fd = test_file(false);
    uint8_t *buf = xmemalign(ALIGN);
    uint8_t *back = xmemalign(ALIGN);
    QEMUIOVector qiov;
    AioloopBlockStats st;

    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        EngineReq r = { .engine = all[i], .fd = fd, .qiov = &qiov,
                        .offset = ALIGN * i };
        Error *err = NULL;
        AioContext *probe = test_aio_context_new();

        /* Skip engines this kernel or build lacks (probed elsewhere). */
        if (aioloop_block_engine_select(probe, all[i], &err) < 0) {
            printf("# %s: unavailable here (%s)\n",
                   aioloop_block_engine_name(all[i]), error_get_pretty(err));
            error_free(err);
            aio_context_unref(probe);
            continue;
        }
        aio_context_unref(probe);
        fill_pattern(buf, ALIGN * i, ALIGN, 40 + (unsigned)i);
        qemu_iovec_init_buf(&qiov, buf, ALIGN);
        r.type = QEMU_AIO_WRITE;
        ASSERT_EQ(engine_req(ctx, &r), 0);
        memset(back, 0, ALIGN);
        qemu_iovec_init_buf(&qiov, back, ALIGN);
        r.type = QEMU_AIO_READ;
        ASSERT_EQ(engine_req(ctx, &r), 0);
        ASSERT_MEM_EQ(back, buf, ALIGN);
        r.type = QEMU_AIO_FLUSH;
        r.qiov = NULL;
        ASSERT_EQ(engine_req(ctx, &r), 0);
        /* The context keeps the engine it chose. */
        aioloop_block_get_stats(ctx, &st);
        ASSERT_EQ(st.engine, engine);
        ASSERT_EQ(st.inflight, 0);
    }
    {
        EngineReq r = { .engine = (AioloopBlockEngine)77, .fd = fd,
                        .type = QEMU_AIO_FLUSH };

        ASSERT_EQ(engine_req(ctx, &r), -EINVAL);
    }
    free(buf);
    free(back);
    close(fd);
    block_ctx_free(ctx);
}

/* ---- batching -------------------------------------------------------- */

typedef struct Batch {
    int fd;
    unsigned done;
    int errors;
    uint8_t *buf;
} Batch;

static void coroutine_fn batch_co(void *opaque)
{
    Batch *b = opaque;
    uint8_t *buf = xmemalign(ALIGN);
    QEMUIOVector qiov;

    qemu_iovec_init_buf(&qiov, buf, ALIGN);
    if (aioloop_co_preadv(b->fd, 0, &qiov, 0) != 0 ||
        memcmp(buf, b->buf, ALIGN) != 0) {
        b->errors++;
    }
    free(buf);
    b->done++;
}

/* Queue @n one-page reads before the loop runs; returns the submits. */
static uint64_t batch_run(AioContext *ctx, unsigned n)
{
    Batch b = { .fd = test_file(false), .buf = xmemalign(ALIGN) };
    AioloopBlockStats before, after;

    fill_pattern(b.buf, 0, ALIGN, 5);
    ASSERT_EQ(pwrite(b.fd, b.buf, ALIGN, 0), (ssize_t)ALIGN);
    aioloop_block_get_stats(ctx, &before);
    for (unsigned i = 0; i < n; i++) {
        aio_co_enter(ctx, qemu_coroutine_create(batch_co, &b));
    }
    run_until(ctx, &b.done, n, "batch");
    aioloop_block_get_stats(ctx, &after);
    ASSERT_EQ(b.errors, 0);
    ASSERT_UINT(after.requests - before.requests, >=, n);
    close(b.fd);
    free(b.buf);
    return after.submits - before.submits;
}

TEST(batching_respects_aio_max_batch)
{
    AioContext *ctx = block_ctx_new();
    uint64_t submits;

    aio_context_set_aio_params(ctx, 8);
    submits = batch_run(ctx, 64);
    printf("# %s, aio_max_batch 8: 64 requests, %" PRIu64 " submits\n",
           aioloop_block_engine_name(engine), submits);
    ASSERT_UINT(submits, >=, 8);
    block_ctx_free(ctx);
}

TEST(batching_groups_requests_of_one_iteration)
{
    AioContext *ctx = block_ctx_new();
    uint64_t submits = batch_run(ctx, 64);

    printf("# %s, default batch: 64 requests, %" PRIu64 " submits\n",
           aioloop_block_engine_name(engine), submits);
    if (engine == AIOLOOP_BLOCK_ENGINE_THREADS) {
        /* One pool job per request, as documented. */
        ASSERT_UINT(submits, ==, 64);
    } else {
        /* io_uring: one enter; linux-aio: batches of 32. */
        ASSERT_UINT(submits, <=, 2);
    }
    block_ctx_free(ctx);
}

TEST(full_submission_queue_drops_nothing)
{
    AioContext *ctx = block_ctx_new();

    /* The io_uring rings hold 128 and 256 entries. */
    batch_run(ctx, 600);
    block_ctx_free(ctx);
}

/* ---- small batches while the loop waits for a device -------------------- */

/*
 * Pipes stand in for a device: a read of an empty pipe goes to the kernel
 * and completes only when another thread writes, as a disk request
 * completes only when the disk is done.
 */
#define EARLY_READS 16
#define EARLY_BYTES 64

typedef struct PipeRead {
    int fd;
    unsigned *done;
    int ret;
} PipeRead;

typedef struct Early {
    AioContext *ctx;
    int first[2];
    int pipes[EARLY_READS][2];
    PipeRead first_read;
    PipeRead reads[EARLY_READS];
    unsigned done;
    AioloopBlockStats at_dispatch;
    pid_t home_tid;
} Early;

static int coroutine_fn pipe_read_once(int fd)
{
    uint8_t buf[EARLY_BYTES];
    QEMUIOVector qiov;

    qemu_iovec_init_buf(&qiov, buf, sizeof(buf));
    return aioloop_co_preadv(fd, 0, &qiov, 0);
}

static void coroutine_fn pipe_read_co(void *opaque)
{
    PipeRead *p = opaque;

    p->ret = pipe_read_once(p->fd);
    (*p->done)++;
}

/*
 * Read the first pipe; once that completes (in aio_poll()'s dispatch),
 * queue EARLY_READS more reads in the same dispatch.
 */
static void coroutine_fn early_first_co(void *opaque)
{
    Early *e = opaque;

    pipe_read_co(&e->first_read);
    aioloop_block_get_stats(e->ctx, &e->at_dispatch);
    for (int i = 0; i < EARLY_READS; i++) {
        aio_co_enter(e->ctx, qemu_coroutine_create(pipe_read_co,
                                                   &e->reads[i]));
    }
}

static void *early_writer(void *opaque)
{
    Early *e = opaque;
    char byte[EARLY_BYTES] = { 0 };

    test_wait_thread_sleeping(e->home_tid, NULL);
    ASSERT_EQ(write(e->first[1], byte, sizeof(byte)), (ssize_t)sizeof(byte));
    return NULL;
}

/*
 * Submits made by the dispatch that follows the first read's completion,
 * when the loop slept for that read (@sleep) or found it done at once.
 * The reads queued then are of empty pipes, or with @cached of a file in
 * the page cache, which complete inline.
 */
static uint64_t early_run(bool sleep, bool cached)
{
    Early e = { .ctx = block_ctx_new(), .home_tid = test_gettid() };
    char byte[EARLY_BYTES] = { 0 };
    AioloopBlockStats after;
    pthread_t writer = 0;
    int file = -1;

    ASSERT_EQ(pipe(e.first), 0);
    e.first_read = (PipeRead){ .fd = e.first[0], .done = &e.done };
    if (cached) {
        file = test_file(false);
        ASSERT_EQ(pwrite(file, byte, sizeof(byte), 0), (ssize_t)sizeof(byte));
    }
    for (int i = 0; i < EARLY_READS; i++) {
        ASSERT_EQ(pipe(e.pipes[i]), 0);
        e.reads[i] = (PipeRead){ .fd = cached ? file : e.pipes[i][0],
                                 .done = &e.done };
    }
    aio_co_enter(e.ctx, qemu_coroutine_create(early_first_co, &e));
    if (sleep) {
        writer = test_thread_start(early_writer, &e);
    } else {
        ASSERT_EQ(write(e.first[1], byte, sizeof(byte)),
                  (ssize_t)sizeof(byte));
    }
    test_watchdog("early submission", 240);
    while (e.done < 1) {
        aio_poll(e.ctx, true);
    }
    aioloop_block_get_stats(e.ctx, &after);
    if (writer) {
        test_thread_join(writer);
    }
    for (int i = 0; i < EARLY_READS && !cached; i++) {
        ASSERT_EQ(write(e.pipes[i][1], byte, sizeof(byte)),
                  (ssize_t)sizeof(byte));
    }
    run_until(e.ctx, &e.done, 1 + EARLY_READS, "early submission");
    if (file >= 0) {
        close(file);
    }
    ASSERT_EQ(e.first_read.ret, 0);
    for (int i = 0; i < EARLY_READS; i++) {
        ASSERT_EQ(e.reads[i].ret, 0);
        close(e.pipes[i][0]);
        close(e.pipes[i][1]);
    }
    close(e.first[0]);
    close(e.first[1]);
    block_ctx_free(e.ctx);
    return after.submits - e.at_dispatch.submits;
}

TEST(batching_goes_small_while_the_loop_waits_for_a_device)
{
    AioContext *probe = block_ctx_new();
    bool shared_ring = engine == AIOLOOP_BLOCK_ENGINE_IO_URING &&
                       !strcmp(aioloop_context_fdmon_name(probe), "io_uring");
    uint64_t slept, did_not, cached;

    block_ctx_free(probe);
    if (!shared_ring) {
        /* Only the fd monitor's ring knows whether the loop slept. */
        printf("# %s: not on the io_uring fd monitor's ring, batches stay "
               "the default\n", aioloop_block_engine_name(engine));
        return;
    }
    slept = early_run(true, false);
    did_not = early_run(false, false);
    cached = early_run(true, true);
    printf("# %s: %d reads queued after a wait for the device: %" PRIu64
           " submits in that dispatch; after a wait that found the read "
           "done: %" PRIu64 "; page-cache reads after a wait for the "
           "device: %" PRIu64 "\n", aioloop_block_engine_name(engine),
           EARLY_READS, slept, did_not, cached);
    /* Four at a time (fdmon-io_uring.c DEVICE_BATCH)... */
    ASSERT_UINT(slept, ==, EARLY_READS / 4);
    /* ...all at the end of the iteration when the loop is not idle... */
    ASSERT_UINT(did_not, ==, 0);
    /* ...and once the first four complete inline, the rest at the end. */
    ASSERT_UINT(cached, ==, 1);
}

/*
 * At a queue depth below 4 only one blocking wait in 16 submits its block
 * requests alone first (fdmon-io_uring.c LOW_QD_PROBE_EVERY), the first one
 * included.  33 reads one after the other make at most 33 such waits (some
 * reads are submitted by a wait that does not block), so 1 to 3 probes;
 * probing every wait made 32.
 */
#define LOW_QD_READS 33

static void coroutine_fn low_qd_co(void *opaque)
{
    PipeRead *p = opaque;

    for (int i = 0; i < LOW_QD_READS && p->ret == 0; i++) {
        p->ret = pipe_read_once(p->fd);
    }
    (*p->done)++;
}

TEST(queue_depth_one_probes_one_wait_in_16)
{
    AioContext *ctx = block_ctx_new();
    char data[LOW_QD_READS * EARLY_BYTES] = { 0 };
    unsigned done = 0;
    PipeRead l = { .fd = -1, .done = &done };
    int p[2];
    uint64_t probes;

    if (engine != AIOLOOP_BLOCK_ENGINE_IO_URING ||
        strcmp(aioloop_context_fdmon_name(ctx), "io_uring")) {
        printf("# %s: not on the io_uring fd monitor's ring, no probes\n",
               aioloop_block_engine_name(engine));
        block_ctx_free(ctx);
        return;
    }
    ASSERT_EQ(pipe(p), 0);
    /* Every read finds its data: no wait sleeps for long. */
    ASSERT_EQ(write(p[1], data, sizeof(data)), (ssize_t)sizeof(data));
    l.fd = p[0];
    probes = fdmon_io_uring_probes(ctx);
    aio_co_enter(ctx, qemu_coroutine_create(low_qd_co, &l));
    run_until(ctx, &done, 1, "queue depth 1 reads");
    probes = fdmon_io_uring_probes(ctx) - probes;
    printf("# %d reads at queue depth 1: %" PRIu64 " probing waits\n",
           LOW_QD_READS, probes);
    ASSERT_EQ(l.ret, 0);
    ASSERT_UINT(probes, >=, 1);
    ASSERT_UINT(probes, <=, 3);
    close(p[0]);
    close(p[1]);
    block_ctx_free(ctx);
}

/* ---- nested aio_poll from a resumed coroutine ---------------------------- */

typedef struct Nested {
    AioContext *ctx;
    int fd;
    unsigned resumed[NCO];
    unsigned done;
} Nested;

typedef struct NestedArg {
    Nested *n;
    int i;
} NestedArg;

static void coroutine_fn nested_co(void *opaque)
{
    NestedArg *a = opaque;
    uint8_t *buf = xmemalign(ALIGN);
    QEMUIOVector qiov;

    qemu_iovec_init_buf(&qiov, buf, ALIGN);
    ASSERT_EQ(aioloop_co_preadv(a->n->fd, (uint64_t)a->i * ALIGN, &qiov, 0),
              0);
    ASSERT_EQ(buf[0], (uint8_t)a->i);
    a->n->resumed[a->i]++;
    /*
     * Still inside the completion processing that resumed us: a nested
     * loop iteration must go on with the other completions, not lose or
     * repeat them.
     */
    aio_poll(a->n->ctx, false);
    free(buf);
    a->n->done++;
}

TEST(nested_aio_poll_in_completion)
{
    AioContext *ctx = block_ctx_new();
    Nested n = { .ctx = ctx, .fd = test_file(false) };
    NestedArg args[NCO];
    uint8_t page[ALIGN];

    for (int i = 0; i < NCO; i++) {
        memset(page, i, ALIGN);
        ASSERT_EQ(pwrite(n.fd, page, ALIGN, (off_t)i * ALIGN), (ssize_t)ALIGN);
    }
    for (int i = 0; i < NCO; i++) {
        args[i] = (NestedArg){ &n, i };
        aio_co_enter(ctx, qemu_coroutine_create(nested_co, &args[i]));
    }
    run_until(ctx, &n.done, NCO, "nested completions");
    for (int i = 0; i < NCO; i++) {
        ASSERT_EQ(n.resumed[i], 1);
    }
    close(n.fd);
    block_ctx_free(ctx);
}

/* ---- lifetime -------------------------------------------------------- */

typedef struct Orphan {
    int fd;
    uint8_t *buf;
    int ret;
    unsigned done;
} Orphan;

static void coroutine_fn orphan_co(void *opaque)
{
    Orphan *o = opaque;
    QEMUIOVector qiov;

    qemu_iovec_init_buf(&qiov, o->buf, 1 * MiB);
    o->ret = aioloop_co_preadv(o->fd, 0, &qiov, 0);
    __atomic_fetch_add(&o->done, 1, __ATOMIC_RELEASE);
}

static void orphan_start(AioContext **pctx, Orphan *o)
{
    AioContext *ctx = block_ctx_new();
    AioloopBlockStats st;

    o->fd = test_file(false);
    o->buf = xmemalign(1 * MiB);
    memset(o->buf, 0x55, 1 * MiB);
    ASSERT_EQ(ftruncate(o->fd, 1 * MiB), 0);
    aio_co_enter(ctx, qemu_coroutine_create(orphan_co, o));
    aioloop_block_get_stats(ctx, &st);
    ASSERT_UINT(st.inflight, ==, 1);
    ASSERT_EQ(o->done, 0);
    *pctx = ctx;
}

static void orphan_check(Orphan *o)
{
    ASSERT_EQ(o->done, 1);
    ASSERT_EQ(o->ret, 0);
    ASSERT_EQ(o->buf[0], 0);
    ASSERT_EQ(o->buf[1 * MiB - 1], 0);
    free(o->buf);
    close(o->fd);
}

TEST(last_unref_with_request_in_flight_completes_it)
{
    AioContext *ctx;
    Orphan o = { 0 };

    orphan_start(&ctx, &o);
    qemu_set_current_aio_context(NULL);
    test_watchdog("last unref with a request in flight", 240);
    aio_context_unref(ctx); /* returns once the request has completed */
    test_watchdog_cancel();
    orphan_check(&o);
}

static void *unref_thread(void *opaque)
{
    aio_context_unref(opaque);
    return NULL;
}

TEST(last_unref_from_another_thread_completes_it)
{
    AioContext *ctx;
    Orphan o = { 0 };
    pthread_t t;

    orphan_start(&ctx, &o);
    qemu_set_current_aio_context(NULL);
    test_watchdog("last unref in another thread", 240);
    ASSERT_EQ(pthread_create(&t, NULL, unref_thread, ctx), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    test_watchdog_cancel();
    orphan_check(&o);
}

/* ---- two contexts at once ------------------------------------------------ */

typedef struct Mix {
    int fd;
    uint64_t base;
    AioContext *ctx;
    AioContext *waiter; /* the main thread's context, which counts */
    unsigned *done;
    int errors;
} Mix;

static void coroutine_fn mix_co(void *opaque)
{
    Mix *m = opaque;
    uint8_t *buf = xmemalign(64 * KiB);
    uint8_t *back = xmemalign(64 * KiB);
    QEMUIOVector qiov;

    for (int i = 0; i < 50; i++) {
        uint64_t off = m->base + (uint64_t)(i % 16) * 64 * KiB;

        fill_pattern(buf, off, 64 * KiB, (unsigned)i);
        qemu_iovec_init_buf(&qiov, buf, 64 * KiB);
        if (aioloop_co_pwritev(m->fd, off, &qiov, 0) != 0 ||
            qemu_get_current_aio_context() != m->ctx) {
            m->errors++;
        }
        qemu_iovec_init_buf(&qiov, back, 64 * KiB);
        if (aioloop_co_preadv(m->fd, off, &qiov, 0) != 0 ||
            qemu_get_current_aio_context() != m->ctx ||
            memcmp(buf, back, 64 * KiB) != 0) {
            m->errors++;
        }
    }
    free(buf);
    free(back);
    __atomic_fetch_add(m->done, 1, __ATOMIC_RELEASE);
    aio_notify(m->waiter);
}

typedef struct Select {
    AioContext *waiter;
    int ret;
    unsigned done;
} Select;

/* In the IOThread: aioloop_block_engine_select() is for the home thread. */
static void select_bh(void *opaque)
{
    Select *s = opaque;
    Error *err = NULL;

    s->ret = aioloop_block_engine_select(qemu_get_current_aio_context(),
                                         engine, &err);
    if (s->ret < 0) {
        fprintf(stderr, "# IOThread: engine %s: %s\n",
                aioloop_block_engine_name(engine), error_get_pretty(err));
        error_free(err);
    }
    __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
    aio_notify(s->waiter);
}

TEST(two_contexts_each_resume_at_home)
{
    AioContext *ctx = block_ctx_new();
    Error *err = NULL;
    IOThread *io = iothread_create("block-io-test", &err);
    AioContext *ioctx;
    Mix mix[8];
    unsigned done = 0;
    int fd = test_file(false);
    Select sel = { .waiter = ctx };

    ASSERT_NOT_NULL(io);
    ioctx = iothread_get_aio_context(io);
    aio_bh_schedule_oneshot(ioctx, select_bh, &sel);
    run_until(ctx, &sel.done, 1, "engine choice in the IOThread");
    ASSERT_EQ(sel.ret, engine);
    for (int i = 0; i < 8; i++) {
        mix[i] = (Mix){ .fd = fd, .base = (uint64_t)i * MiB,
                        .ctx = i % 2 ? ioctx : ctx, .waiter = ctx,
                        .done = &done };
        aio_co_enter(mix[i].ctx, qemu_coroutine_create(mix_co, &mix[i]));
    }
    run_until(ctx, &done, 8, "two contexts");
    for (int i = 0; i < 8; i++) {
        ASSERT_EQ(mix[i].errors, 0);
    }
    iothread_destroy(io);
    close(fd);
    block_ctx_free(ctx);
}

/* ---- engine choice and misuse ------------------------------------------- */

/* AIOLOOP_BLOCK_ENGINE as it was (a copy, or NULL), then set to @value. */
static char *engine_env_replace(const char *value)
{
    char *saved = getenv("AIOLOOP_BLOCK_ENGINE");

    saved = saved ? strdup(saved) : NULL;
    if (value) {
        setenv("AIOLOOP_BLOCK_ENGINE", value, 1);
    } else {
        unsetenv("AIOLOOP_BLOCK_ENGINE");
    }
    return saved;
}

static void engine_env_restore(char *saved)
{
    if (saved) {
        setenv("AIOLOOP_BLOCK_ENGINE", saved, 1);
        free(saved);
    } else {
        unsetenv("AIOLOOP_BLOCK_ENGINE");
    }
}

TEST(unknown_engine_in_environment_is_an_error)
{
    AioContext *ctx = test_aio_context_new();
    char *saved = engine_env_replace("floppy");
    Error *err = NULL;
    AioloopBlockStats st;

    ASSERT_TRUE(aioloop_block_engine_select(ctx, AIOLOOP_BLOCK_ENGINE_AUTO,
                                            &err) < 0);
    ASSERT_NOT_NULL(err);
    ASSERT_NOT_NULL(strstr(error_get_pretty(err), "floppy"));
    error_free(err);
    engine_env_restore(saved);
    /* The automatic choice, and the stats name it. */
    err = NULL;
    ASSERT_TRUE(aioloop_block_engine_select(ctx, AIOLOOP_BLOCK_ENGINE_AUTO,
                                            &err) > 0);
    aioloop_block_get_stats(ctx, &st);
    ASSERT_TRUE(st.engine != AIOLOOP_BLOCK_ENGINE_AUTO);
    ASSERT_STR_EQ(aioloop_block_engine_name(AIOLOOP_BLOCK_ENGINE_THREADS),
                  "threads");
    aio_context_unref(ctx);
}

/*
 * Under valgrind the automatic choice is the threads engine, whose I/O
 * valgrind follows; the valgrind suite runs this case there.  Elsewhere
 * there is nothing to check.
 */
TEST(auto_engine_is_threads_under_valgrind)
{
#if TEST_VALGRIND_H
    AioContext *ctx;
    char *saved;
    Error *err = NULL;

    if (!RUNNING_ON_VALGRIND) {
        printf("# not under valgrind: nothing to check\n");
        return;
    }
    ctx = test_aio_context_new();
    saved = engine_env_replace(NULL);
    ASSERT_EQ(aioloop_block_engine_select(ctx, AIOLOOP_BLOCK_ENGINE_AUTO,
                                          &err),
              AIOLOOP_BLOCK_ENGINE_THREADS);
    engine_env_restore(saved);
    aio_context_unref(ctx);
#else
    printf("# built without valgrind/valgrind.h: nothing to check\n");
#endif
}

/*
 * A set-up that fails returns its own errno, not a generic one.  Made to
 * fail deterministically by leaving no file descriptor free: linux-aio
 * needs one for its eventfd, io_uring one for its private ring.  The
 * threads engine and io_uring on the fd monitor's ring open none, so they
 * cannot be made to fail this way (nor any other deterministic way).
 */
TEST(setup_failure_returns_its_errno)
{
    AioContext *ctx = test_aio_context_new();
    const char *name = aioloop_block_engine_name(engine);
    char *saved = getenv("AIOLOOP_BLOCK_ENGINE");
    struct rlimit old, none;
    Error *err = NULL, *err_auto = NULL;
    AioloopBlockStats st;
    int probe, probe_errno, ret, ret_auto;

    if (engine == AIOLOOP_BLOCK_ENGINE_THREADS) {
        printf("# threads: its set-up opens nothing and cannot fail\n");
        aio_context_unref(ctx);
        return;
    }
    if (engine == AIOLOOP_BLOCK_ENGINE_IO_URING &&
        !strcmp(aioloop_context_fdmon_name(ctx), "io_uring")) {
        printf("# io_uring on the fd monitor's ring opens no file "
               "descriptor: its set-up cannot be made to fail here\n");
        aio_context_unref(ctx);
        return;
    }
    saved = saved ? strdup(saved) : NULL;
    setenv("AIOLOOP_BLOCK_ENGINE", name, 1);
    /* The lowest free descriptor: every one below it is open. */
    probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_TRUE(probe >= 0);
    close(probe);
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    none = old;
    none.rlim_cur = (rlim_t)probe;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &none), 0);

    probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    probe_errno = errno;
    ret = aioloop_block_engine_select(ctx, engine, &err);
    ret_auto = aioloop_block_engine_select(ctx, AIOLOOP_BLOCK_ENGINE_AUTO,
                                           &err_auto);

    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
    if (saved) {
        setenv("AIOLOOP_BLOCK_ENGINE", saved, 1);
        free(saved);
    } else {
        unsetenv("AIOLOOP_BLOCK_ENGINE");
    }
    ASSERT_INT(probe, ==, -1);
    ASSERT_INT(probe_errno, ==, EMFILE);
    ASSERT_INT(ret, ==, -EMFILE);
    ASSERT_NOT_NULL(err);
    ASSERT_INT(ret_auto, ==, -EMFILE);
    ASSERT_NOT_NULL(err_auto);
    ASSERT_NOT_NULL(strstr(error_get_pretty(err_auto), name));
    error_free(err);
    error_free(err_auto);
    /* Nothing half set up: the context has no engine, and gets one now. */
    aioloop_block_get_stats(ctx, &st);
    ASSERT_EQ(st.engine, AIOLOOP_BLOCK_ENGINE_AUTO);
    ASSERT_EQ(aioloop_block_engine_select(ctx, engine, &error_abort),
              (int)engine);
    aio_context_unref(ctx);
}

static void preadv_outside_coroutine(void *opaque)
{
    QEMUIOVector qiov;
    char c;

    (void)opaque;
    qemu_iovec_init_buf(&qiov, &c, 1);
    aioloop_co_preadv(0, 0, &qiov, 0);
}

TEST(preadv_outside_coroutine_aborts)
{
    ASSERT_EQ(test_expect_abort(preadv_outside_coroutine, NULL,
                                "called outside a coroutine"), 0);
}

static void get_linux_aio_unset(void *opaque)
{
    AioContext *ctx = aio_context_new(NULL);

    (void)opaque;
    aio_get_linux_aio(ctx);
}

TEST(get_linux_aio_without_setup_aborts)
{
    ASSERT_EQ(test_expect_abort(get_linux_aio_unset, NULL,
                                "aio_setup_linux_aio() has not succeeded"), 0);
}

/* ---- O_DIRECT only ------------------------------------------------------- */

TEST(misaligned_direct_buffer_is_einval)
{
    AioContext *ctx = block_ctx_new();
    int fd = test_file(true);
    uint8_t *buf = xmemalign(2 * ALIGN);

    ASSERT_TRUE(fd >= 0);
    /* Data, not a hole: holes are zero-filled without an alignment check. */
    memset(buf, 0x77, 2 * ALIGN);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_WRITE, 0, buf, 2 * ALIGN, 0), 0);
    /* tmpfs takes O_DIRECT (Linux 6.6+) but checks no alignment. */
    if (pread(fd, buf + 1, ALIGN, 0) >= 0 || errno != EINVAL) {
        printf("SKIP case misaligned_direct_buffer_is_einval, engine %s: "
               "%s does not enforce O_DIRECT alignment\n",
               aioloop_block_engine_name(engine), test_dir());
        free(buf);
        close(fd);
        block_ctx_free(ctx);
        return;
    }
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_READ, 0, buf + 1, ALIGN, 0), -EINVAL);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_WRITE, 0, buf + 1, ALIGN, 0), -EINVAL);
    /* Aligned is fine. */
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_READ, 0, buf, ALIGN, 0), 0);
    free(buf);
    close(fd);
    block_ctx_free(ctx);
}

TEST(direct_read_past_unaligned_eof_zero_fills)
{
    AioContext *ctx = block_ctx_new();
    int fd = test_file(true);
    uint8_t *buf = xmemalign(4 * ALIGN);
    uint8_t *data = xmemalign(2 * ALIGN);
    uint8_t zeros[3 * ALIGN] = { 0 };

    ASSERT_TRUE(fd >= 0);
    fill_pattern(data, 0, 2 * ALIGN, 13);
    /* File size ALIGN + 100: the O_DIRECT read stops unaligned. */
    ASSERT_EQ(ftruncate(fd, ALIGN + 100), 0);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_WRITE, 0, data, ALIGN, 0), 0);
    ASSERT_EQ(ftruncate(fd, ALIGN + 100), 0);
    memset(buf, 0xaa, 4 * ALIGN);
    ASSERT_EQ(do_rw(ctx, fd, QEMU_AIO_READ, 0, buf, 4 * ALIGN, 0), 0);
    ASSERT_MEM_EQ(buf, data, ALIGN);
    ASSERT_MEM_EQ(buf + ALIGN, zeros, 3 * ALIGN);
    free(buf);
    free(data);
    close(fd);
    block_ctx_free(ctx);
}

/*
 * Whether @e can run here; prints "SKIP engine X: reason" when it cannot.
 * A context of its own, so no test inherits what the probe set up.
 */
static bool engine_available(AioloopBlockEngine e)
{
    AioContext *ctx = test_aio_context_new();
    Error *err = NULL;
    bool ok = aioloop_block_engine_select(ctx, e, &err) >= 0;

    if (!ok) {
        printf("SKIP engine %s: %s\n", aioloop_block_engine_name(e),
               err ? error_get_pretty(err) : "(no reason given)");
        error_free(err);
    }
    aio_context_unref(ctx);
    return ok;
}

/* Whether the test directory takes O_DIRECT; prints the SKIP line if not. */
static bool direct_available(void)
{
    int fd = test_file(true);

    if (fd < 0) {
        printf("SKIP engine %s, O_DIRECT: refused in %s: %s (set "
               "AIOLOOP_TEST_DIR to a disk file system)\n",
               aioloop_block_engine_name(engine), test_dir(),
               strerror(errno));
        return false;
    }
    close(fd);
    return true;
}

int main(int argc, char **argv)
{
    static const TestCase buffered[] = {
        T(model_random_rw_buffered),
        T(bad_fd_is_ebadf),
        T(read_at_and_past_eof_zero_fills),
        T(write_past_rlimit_fsize_is_efbig),
        T(write_of_one_huge_buffer_goes_on),
        T(flush_fsync_and_fua_write),
        T(qemu_entry_points),
        T(submit_with_another_engine),
        T(batching_respects_aio_max_batch),
        T(batching_groups_requests_of_one_iteration),
        T(batching_goes_small_while_the_loop_waits_for_a_device),
        T(queue_depth_one_probes_one_wait_in_16),
        T(full_submission_queue_drops_nothing),
        T(nested_aio_poll_in_completion),
        T(last_unref_with_request_in_flight_completes_it),
        T(last_unref_from_another_thread_completes_it),
        T(two_contexts_each_resume_at_home),
        T(unknown_engine_in_environment_is_an_error),
        T(auto_engine_is_threads_under_valgrind),
        T(setup_failure_returns_its_errno),
        T(preadv_outside_coroutine_aborts),
        T(get_linux_aio_without_setup_aborts),
    };
    static const TestCase odirect[] = {
        T(model_random_rw_direct),
        T(misaligned_direct_buffer_is_einval),
        T(direct_read_past_unaligned_eof_zero_fills),
    };
    static const AioloopBlockEngine all[] = {
        AIOLOOP_BLOCK_ENGINE_IO_URING,
        AIOLOOP_BLOCK_ENGINE_LINUX_AIO,
        AIOLOOP_BLOCK_ENGINE_THREADS,
    };
    const char *d = getenv("AIOLOOP_BLOCK_TEST_DIRECT");
    AioloopBlockEngine forced = engine_from_env();
    bool modes[2] = { true, true }; /* buffered, O_DIRECT */
    unsigned ran = 0, skipped = 0;

    if (d && *d) {
        bool want_direct = strcmp(d, "0") != 0;

        modes[0] = !want_direct;
        modes[1] = want_direct;
    }
    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        if (forced != AIOLOOP_BLOCK_ENGINE_AUTO && all[i] != forced) {
            continue;
        }
        engine = all[i];
        if (!engine_available(engine)) {
            skipped += modes[0] + modes[1];
            continue;
        }
        for (int m = 0; m < 2; m++) {
            const TestCase *cases = m ? odirect : buffered;
            size_t n = m ? ARRAY_SIZE(odirect) : ARRAY_SIZE(buffered);

            if (!modes[m]) {
                continue;
            }
            direct = m;
            printf("# engine %s, %s, files in %s\n",
                   aioloop_block_engine_name(engine),
                   direct ? "O_DIRECT" : "buffered", test_dir());
            if (direct && !direct_available()) {
                skipped++;
                continue;
            }
            if (test_run_all(argc, argv, cases, n) == 0) {
                ran++;
            }
        }
    }
    printf("# %u engine/mode combination(s) ran, %u skipped\n", ran,
           skipped);
    if (ran == 0) {
        if (skipped) {
            return 77;
        }
        return argc > 1 ? 1 : 77; /* no case of that name */
    }
    return 0;
}
