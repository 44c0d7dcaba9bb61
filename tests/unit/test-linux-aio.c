/*
 * The linux-aio block engine, in what the generic block API tests cannot
 * see: how requests are batched into io_submit() calls (aio_max_batch 8,
 * the default 32, the end-of-iteration BH), requests waiting for free
 * io_context slots and the kernel's own -EAGAIN / partial io_submit(), a
 * resumed coroutine that runs a nested aio_poll() while completions are
 * pending, a request queued by a resumed coroutine reaching the kernel
 * from a nested blocking aio_poll(), adaptive polling finding completions
 * through io_poll, reads at end of file (buffered and O_DIRECT), flushes
 * and FUA writes, and a short write continued until the kernel says why.
 *
 * Requests go through laio_co_submit() (QEMU's entry point) from
 * coroutines of a context driven by this thread.  Files live in
 * $AIOLOOP_TEST_DIR, else $TMPDIR, else /var/tmp (tmpfs has no O_DIRECT),
 * and are unlinked at once.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>
#include <aioloop/block-io.h>
#include <aioloop/coroutine.h>

#include <sys/resource.h>
#include <sys/stat.h>

#include "aio-test.h"
#include "test.h"

#define BLK 4096

typedef struct Req {
    int fd;
    int type;
    uint64_t offset;
    void *buf;
    size_t len;
    BdrvRequestFlags flags;
    int ret;
    unsigned resumed;
    /* Run after the request completes, still in the coroutine. */
    void (*after)(struct Req *r);
    void *opaque;
} Req;

static void coroutine_fn req_entry(void *opaque)
{
    Req *r = opaque;
    QEMUIOVector qiov;

    if (r->type == QEMU_AIO_READ || r->type == QEMU_AIO_WRITE) {
        qemu_iovec_init_buf(&qiov, r->buf, r->len);
        r->ret = laio_co_submit(r->fd, r->offset, &qiov, r->type, r->flags, 0);
    } else {
        r->ret = laio_co_submit(r->fd, 0, NULL, r->type, 0, 0);
    }
    r->resumed++;
    if (r->after) {
        r->after(r);
    }
}

/* A context of this thread with linux-aio set up, or skip the program. */
static AioContext *laio_ctx_new(void)
{
    AioContext *ctx = test_aio_context_new();
    Error *err = NULL;

    qemu_set_current_aio_context(ctx);
    if (!aio_setup_linux_aio(ctx, &err)) {
        char msg[256];

        snprintf(msg, sizeof(msg), "linux-aio: %s", error_get_pretty(err));
        error_free(err);
        test_skip(msg);
    }
    ASSERT_PTR_EQ(aio_setup_linux_aio(ctx, NULL), aio_get_linux_aio(ctx));
    return ctx;
}

static void laio_ctx_free(AioContext *ctx)
{
    qemu_set_current_aio_context(NULL);
    aio_context_unref(ctx);
}

/* An unlinked temporary file on a disk-backed file system. */
static int tmp_file(int extra_flags)
{
    const char *dir = getenv("AIOLOOP_TEST_DIR");
    char path[512];

    if (!dir || !*dir) {
        dir = getenv("TMPDIR");
    }
    int fd;

    snprintf(path, sizeof(path), "%s/test-linux-aio-XXXXXX",
             dir && *dir ? dir : "/var/tmp");
    fd = mkostemp(path, extra_flags);
    if (fd < 0) {
        TEST_FAIL_("mkostemp(%s): %s", path, strerror(errno));
    }
    unlink(path);
    return fd;
}

static uint8_t pattern(uint64_t pos)
{
    return (uint8_t)(pos * 7 + pos / 251 + 1);
}

/* A buffered file of @size bytes of pattern(). */
static int pattern_file(size_t size)
{
    int fd = tmp_file(0);
    uint8_t *buf = malloc(size);

    for (size_t i = 0; i < size; i++) {
        buf[i] = pattern(i);
    }
    ASSERT_INT(pwrite(fd, buf, size, 0), ==, (int64_t)size);
    free(buf);
    return fd;
}

static void check_pattern(const uint8_t *buf, uint64_t offset, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != pattern(offset + i)) {
            TEST_FAIL_("byte %zu of the read at %" PRIu64 ": %u, want %u", i,
                       offset, buf[i], pattern(offset + i));
        }
    }
}

static void stats(AioContext *ctx, AioloopBlockStats *st)
{
    aioloop_block_get_stats(ctx, st);
}

/* @n reads of BLK bytes at i * BLK, each in its own coroutine, not run. */
static Req *reads_new(int fd, unsigned n)
{
    Req *r = calloc(n, sizeof(*r));

    for (unsigned i = 0; i < n; i++) {
        r[i] = (Req){ .fd = fd, .type = QEMU_AIO_READ,
                      .offset = (uint64_t)i * BLK, .buf = malloc(BLK),
                      .len = BLK, .ret = -EINPROGRESS };
    }
    return r;
}

static void reads_free(Req *r, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        free(r[i].buf);
    }
    free(r);
}

static void enter_all(AioContext *ctx, Req *r, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        aio_co_enter(ctx, qemu_coroutine_create(req_entry, &r[i]));
    }
}

static unsigned resumed(const Req *r, unsigned n)
{
    unsigned sum = 0;

    for (unsigned i = 0; i < n; i++) {
        sum += r[i].resumed;
    }
    return sum;
}

/* Run the loop until every request resumed, then check each once. */
static void wait_all(AioContext *ctx, Req *r, unsigned n, const char *what)
{
    test_watchdog(what, 60);
    while (resumed(r, n) < n) {
        aio_poll(ctx, true);
    }
    test_watchdog_cancel();
    while (aio_poll(ctx, false)) {
    }
    for (unsigned i = 0; i < n; i++) {
        ASSERT_UINT(r[i].resumed, ==, 1);
    }
}

static void check_reads(Req *r, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        ASSERT_INT(r[i].ret, ==, 0);
        check_pattern(r[i].buf, r[i].offset, r[i].len);
    }
}

/*
 * @n reads queued from @n coroutines before the loop runs: @at_queue
 * reach the kernel while they are queued (full batches), the rest at the
 * end of the iteration; @submits io_submit() calls in all.
 */
static void batch_case(int64_t max_batch, unsigned n, unsigned at_queue,
                       unsigned submits)
{
    AioContext *ctx = laio_ctx_new();
    int fd = pattern_file((size_t)n * BLK);
    Req *r = reads_new(fd, n);
    AioloopBlockStats st0, st1;

    aio_context_set_aio_params(ctx, max_batch);
    stats(ctx, &st0);
    ASSERT_INT(st0.engine, ==, AIOLOOP_BLOCK_ENGINE_AUTO);
    enter_all(ctx, r, n);
    stats(ctx, &st1);
    ASSERT_UINT(st1.requests - st0.requests, ==, at_queue);
    ASSERT_UINT(st1.inflight, ==, n);
    wait_all(ctx, r, n, "batched reads");
    check_reads(r, n);
    stats(ctx, &st1);
    ASSERT_UINT(st1.requests - st0.requests, ==, n);
    ASSERT_UINT(st1.submits - st0.submits, ==, submits);
    ASSERT_UINT(st1.inflight, ==, 0);
    reads_free(r, n);
    close(fd);
    laio_ctx_free(ctx);
}

TEST(batch_of_8)
{
    /* 64 requests, aio_max_batch 8: eight io_submit() calls of 8. */
    batch_case(8, 64, 64, 8);
}

TEST(batch_default_32)
{
    /* 40 requests: 32 go at once, 8 at the end of the iteration. */
    batch_case(0, 40, 32, 2);
}

TEST(batch_end_of_iteration)
{
    /* Fewer than a batch: all in one io_submit() from the BH. */
    batch_case(0, 5, 0, 1);
}

/*
 * A small io_context (16 events): at most 16 requests in flight, the rest
 * wait for completions to free slots.
 */
TEST(waits_for_free_slots)
{
    AioContext *ctx;
    const unsigned n = 100;
    int fd = pattern_file((size_t)n * BLK);
    Req *r = reads_new(fd, n);
    AioloopBlockStats st0, st1;

    setenv("AIOLOOP_LAIO_MAX_EVENTS", "16", 1);
    ctx = laio_ctx_new();
    unsetenv("AIOLOOP_LAIO_MAX_EVENTS");
    stats(ctx, &st0);
    enter_all(ctx, r, n);
    stats(ctx, &st1);
    /* The batch is capped by the context's size: 16 went, 84 wait. */
    ASSERT_UINT(st1.requests - st0.requests, ==, 16);
    wait_all(ctx, r, n, "reads through a 16-event io_context");
    check_reads(r, n);
    stats(ctx, &st1);
    ASSERT_UINT(st1.requests - st0.requests, ==, n);
    reads_free(r, n);
    close(fd);
    laio_ctx_free(ctx);
}

/*
 * The kernel refuses: a 16-event io_context (the kernel rounds it up to a
 * page of ring, about 126 requests) with the engine's own cap lifted to
 * 1024, and 600 reads queued before the loop reaps anything.  io_submit()
 * takes part of a batch, then says -EAGAIN; the rest waits for
 * completions, nothing is lost, nothing is submitted twice.
 */
TEST(kernel_eagain)
{
    AioContext *ctx;
    const unsigned n = 600;
    int fd = pattern_file((size_t)n * BLK);
    Req *r = reads_new(fd, n);
    AioloopBlockStats st0, st1;

    setenv("AIOLOOP_LAIO_MAX_EVENTS", "16", 1);
    setenv("AIOLOOP_LAIO_MAX_INFLIGHT", "1024", 1);
    ctx = laio_ctx_new();
    unsetenv("AIOLOOP_LAIO_MAX_EVENTS");
    unsetenv("AIOLOOP_LAIO_MAX_INFLIGHT");
    stats(ctx, &st0);
    enter_all(ctx, r, n);
    stats(ctx, &st1);
    printf("# the kernel took %" PRIu64 " of %u before any reaping\n",
           st1.requests - st0.requests, n);
    /*
     * Without -EAGAIN every full batch of 32 would have gone: 576.  The
     * kernel sizes the ring for at least 8 events per possible CPU
     * (rounded up to whole pages of 127 events); on a machine where that
     * alone exceeds 576 the limit cannot be reached this way.
     */
    ASSERT_UINT(st1.requests - st0.requests, >, 0);
    if (sysconf(_SC_NPROCESSORS_CONF) * 8 < 400) {
        ASSERT_UINT(st1.requests - st0.requests, <, (n / 32) * 32);
    } else if (st1.requests - st0.requests == (n / 32) * 32) {
        printf("# %ld possible CPUs: the kernel's ring is larger than %u, "
               "-EAGAIN not reached\n", sysconf(_SC_NPROCESSORS_CONF), n);
    }
    wait_all(ctx, r, n, "reads past the io_context's size");
    check_reads(r, n);
    stats(ctx, &st1);
    ASSERT_UINT(st1.requests - st0.requests, ==, n);
    reads_free(r, n);
    close(fd);
    laio_ctx_free(ctx);
}

/*
 * Every coroutine, once resumed, runs nested non-blocking aio_poll()s
 * while the completions of the others are still in the ring: the nested
 * calls go on with the processing, nobody is resumed twice or never.
 */
static void nested_poll(Req *r)
{
    AioContext *ctx = r->opaque;

    for (int i = 0; i < 3; i++) {
        aio_poll(ctx, false);
    }
}

TEST(nested_aio_poll_in_resumed_coroutine)
{
    AioContext *ctx = laio_ctx_new();
    const unsigned n = 48;
    int fd = pattern_file((size_t)n * BLK);
    Req *r = reads_new(fd, n);

    for (unsigned i = 0; i < n; i++) {
        r[i].after = nested_poll;
        r[i].opaque = ctx;
    }
    enter_all(ctx, r, n);
    wait_all(ctx, r, n, "completions with nested aio_poll");
    check_reads(r, n);
    reads_free(r, n);
    close(fd);
    laio_ctx_free(ctx);
}

/*
 * The first coroutine resumed queues a second read and yields; the last
 * one resumed in the same completion pass waits, in a nested blocking
 * aio_poll(), until that read has reached the kernel.  The queueing
 * happened during completion processing, whose end is behind the waiter:
 * the nested loop must submit it.
 */
typedef struct Chain {
    AioContext *ctx;
    Req second;
    bool waited;
} Chain;

static void queue_second(Req *r)
{
    Chain *c = r->opaque;

    enter_all(c->ctx, &c->second, 1);
}

static void wait_second_submitted(Req *r)
{
    Chain *c = r->opaque;
    AioloopBlockStats st;

    for (;;) {
        stats(c->ctx, &st);
        if (st.requests >= 3) {
            break;
        }
        aio_poll(c->ctx, true);
    }
    c->waited = true;
}

TEST(request_queued_during_completion_reaches_kernel_from_nested_poll)
{
    AioContext *ctx = laio_ctx_new();
    int fd = pattern_file(3 * BLK);
    Req *r = reads_new(fd, 3);
    Chain c = { .ctx = ctx };
    AioloopBlockStats st;

    stats(ctx, &st);
    ASSERT_UINT(st.requests, ==, 0);
    c.second = r[2];
    r[0].after = queue_second;
    r[0].opaque = &c;
    r[1].after = wait_second_submitted;
    r[1].opaque = &c;
    enter_all(ctx, r, 2);
    wait_all(ctx, r, 2, "a nested aio_poll waiting for a submission");
    test_watchdog("the second read", 60);
    while (!c.second.resumed) {
        aio_poll(ctx, true);
    }
    test_watchdog_cancel();
    ASSERT_TRUE(c.waited);
    ASSERT_UINT(c.second.resumed, ==, 1);
    r[2] = c.second;
    check_reads(r, 3);
    reads_free(r, 3);
    close(fd);
    laio_ctx_free(ctx);
}

/*
 * With adaptive polling on, completions are found by io_poll peeking the
 * completion ring.  One coroutine reads block after block.  Buffered, each
 * request completes within io_submit(), so once the window has grown the
 * next aio_poll() finds it by polling.  Not on the io_uring monitor: its
 * CQ already holds the eventfd's readiness then, and polling is skipped
 * when the monitor has events; O_DIRECT completions, which do arrive while
 * the loop polls, take longer than the window grows to on a fast path, so
 * nothing there is certain.  (With io_uring, the io_uring engine is the
 * automatic choice anyway.)
 */
typedef struct Seq {
    int fd;
    unsigned n;
    unsigned done;
    int ret;
} Seq;

/*
 * One read per coroutine, each submitted from its coroutine (batch of 1)
 * before the loop runs: its completion waits in the ring for the next
 * aio_poll(), whose polling must find it.  (A request submitted by the
 * end-of-iteration BH has its completion taken right after io_submit()
 * when the file is cached, and never reaches the polling.)
 */
static void coroutine_fn one_read_entry(void *opaque)
{
    Seq *s = opaque;
    QEMUIOVector qiov;
    void *buf;

    ASSERT_INT(posix_memalign(&buf, BLK, BLK), ==, 0);
    qemu_iovec_init_buf(&qiov, buf, BLK);
    s->ret = laio_co_submit(s->fd, (uint64_t)s->done * BLK, &qiov,
                            QEMU_AIO_READ, 0, 0);
    if (s->ret == 0) {
        check_pattern(buf, (uint64_t)s->done * BLK, BLK);
    }
    free(buf);
    s->done++;
}

TEST(io_poll_finds_completions)
{
    AioContext *ctx = laio_ctx_new();
    Seq s = { .n = 400 };
    AioloopContextStats st0, st1;
    Error *err = NULL;
    if (!strcmp(aioloop_context_fdmon_name(ctx), "io_uring")) {
        printf("# SKIP io_poll_finds_completions: the io_uring monitor "
               "reports the eventfd before polling starts\n");
        laio_ctx_free(ctx);
        return;
    }
    s.fd = pattern_file((size_t)s.n * BLK);
    aio_context_set_poll_params(ctx, 50 * 1000 * 1000, 0, 0, &err);
    ASSERT_NULL(err);
    aio_context_set_aio_params(ctx, 1);
    aioloop_context_get_stats(ctx, &st0);
    test_watchdog("sequential reads with polling", 60);
    while (s.done < s.n && s.ret == 0) {
        unsigned done = s.done;

        aio_co_enter(ctx, qemu_coroutine_create(one_read_entry, &s));
        while (s.done == done) {
            aio_poll(ctx, true);
        }
    }
    test_watchdog_cancel();
    ASSERT_INT(s.ret, ==, 0);
    aioloop_context_get_stats(ctx, &st1);
    printf("# poll hits %" PRIu64 ", misses %" PRIu64 "\n",
           st1.poll_hits - st0.poll_hits, st1.poll_misses - st0.poll_misses);
    ASSERT_UINT(st1.poll_hits, >, st0.poll_hits);
    close(s.fd);
    laio_ctx_free(ctx);
}

/* One request from one coroutine, run to completion. */
static int run_one(AioContext *ctx, Req *r)
{
    r->resumed = 0;
    r->ret = -EINPROGRESS;
    enter_all(ctx, r, 1);
    wait_all(ctx, r, 1, "one request");
    return r->ret;
}

TEST(read_at_eof_zero_fills)
{
    AioContext *ctx = laio_ctx_new();
    int fd = pattern_file(10000);
    uint8_t *buf = malloc(4 * BLK);
    Req r = { .fd = fd, .type = QEMU_AIO_READ, .buf = buf, .len = 4 * BLK };
    AioloopBlockStats st0, st1;

    /* Short read (10000 of 16384), continued, end of file: zeroes. */
    memset(buf, 0xaa, 4 * BLK);
    stats(ctx, &st0);
    ASSERT_INT(run_one(ctx, &r), ==, 0);
    stats(ctx, &st1);
    check_pattern(buf, 0, 10000);
    for (size_t i = 10000; i < 4 * BLK; i++) {
        ASSERT_UINT(buf[i], ==, 0);
    }
    /* The read and its continuation, which met end of file. */
    ASSERT_UINT(st1.requests - st0.requests, ==, 2);

    /* Entirely past the end: all zeroes. */
    memset(buf, 0xaa, 4 * BLK);
    r.offset = 20000;
    ASSERT_INT(run_one(ctx, &r), ==, 0);
    for (size_t i = 0; i < 4 * BLK; i++) {
        ASSERT_UINT(buf[i], ==, 0);
    }
    free(buf);
    close(fd);
    laio_ctx_free(ctx);
}

TEST(flush_fsync_and_fua_write)
{
    AioContext *ctx = laio_ctx_new();
    int fd = tmp_file(0);
    uint8_t *buf = malloc(2 * BLK);
    uint8_t *back = malloc(2 * BLK);
    Req r = { .fd = fd, .type = QEMU_AIO_WRITE, .buf = buf, .len = 2 * BLK,
              .offset = BLK, .flags = BDRV_REQ_FUA };
    struct stat sb;
    int p[2];

    for (size_t i = 0; i < 2 * BLK; i++) {
        buf[i] = pattern(BLK + i);
    }
    ASSERT_INT(run_one(ctx, &r), ==, 0);
    ASSERT_INT(pread(fd, back, 2 * BLK, BLK), ==, 2 * BLK);
    check_pattern(back, BLK, 2 * BLK);
    ASSERT_INT(fstat(fd, &sb), ==, 0);
    ASSERT_INT(sb.st_size, ==, 3 * BLK);

    r = (Req){ .fd = fd, .type = QEMU_AIO_FLUSH };
    ASSERT_INT(run_one(ctx, &r), ==, 0);
    r = (Req){ .fd = fd, .type = AIOLOOP_AIO_FSYNC };
    ASSERT_INT(run_one(ctx, &r), ==, 0);

    /* A pipe cannot be synced: the kernel's error comes back. */
    ASSERT_INT(pipe(p), ==, 0);
    r = (Req){ .fd = p[0], .type = QEMU_AIO_FLUSH };
    ASSERT_INT(run_one(ctx, &r), ==, -EINVAL);
    close(p[0]);
    close(p[1]);
    free(buf);
    free(back);
    close(fd);
    laio_ctx_free(ctx);
}

/*
 * A write that crosses RLIMIT_FSIZE: the kernel writes up to the limit
 * (a short write), the continuation gets -EFBIG, which is the result.
 */
TEST(short_write_continued_until_the_reason)
{
    AioContext *ctx = laio_ctx_new();
    int fd = tmp_file(0);
    uint8_t *buf = malloc(2 * BLK);
    uint8_t *back = malloc(2 * BLK);
    Req r = { .fd = fd, .type = QEMU_AIO_WRITE, .buf = buf, .len = 2 * BLK };
    struct rlimit old, lim;
    struct sigaction ign = { .sa_handler = SIG_IGN }, oldsa;
    AioloopBlockStats st0, st1;
    struct stat sb;

    for (size_t i = 0; i < 2 * BLK; i++) {
        buf[i] = pattern(i);
    }
    ASSERT_INT(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
    lim = old;
    lim.rlim_cur = 6000;
    ASSERT_INT(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
    ASSERT_INT(sigaction(SIGXFSZ, &ign, &oldsa), ==, 0);
    stats(ctx, &st0);
    ASSERT_INT(run_one(ctx, &r), ==, -EFBIG);
    stats(ctx, &st1);
    ASSERT_INT(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
    ASSERT_INT(sigaction(SIGXFSZ, &oldsa, NULL), ==, 0);
    ASSERT_UINT(st1.requests - st0.requests, ==, 2);
    ASSERT_INT(fstat(fd, &sb), ==, 0);
    ASSERT_INT(sb.st_size, ==, 6000);
    ASSERT_INT(pread(fd, back, 6000, 0), ==, 6000);
    check_pattern(back, 0, 6000);
    free(buf);
    free(back);
    close(fd);
    laio_ctx_free(ctx);
}

/*
 * O_DIRECT: asynchronous for real.  Aligned reads of many blocks, and a
 * read past an unaligned end of file: the kernel stops at the end, the
 * continuation (unaligned now) is refused, the rest reads as zeroes.
 */
TEST(o_direct_reads)
{
    AioContext *ctx;
    const unsigned n = 64;
    int fd, dfd;
    uint8_t *buf;
    Req *r;
    char path[64];

    fd = pattern_file((size_t)n * BLK);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    dfd = open(path, O_RDONLY | O_DIRECT);
    if (dfd < 0) {
        printf("# SKIP o_direct_reads: O_DIRECT open: %s\n", strerror(errno));
        close(fd);
        return;
    }
    ctx = laio_ctx_new();
    r = reads_new(dfd, n);
    for (unsigned i = 0; i < n; i++) {
        free(r[i].buf);
        ASSERT_INT(posix_memalign(&r[i].buf, BLK, BLK), ==, 0);
    }
    enter_all(ctx, r, n);
    wait_all(ctx, r, n, "O_DIRECT reads");
    check_reads(r, n);
    reads_free(r, n);

    ASSERT_INT(ftruncate(fd, BLK + 1000), ==, 0);
    ASSERT_INT(posix_memalign((void **)&buf, BLK, 4 * BLK), ==, 0);
    memset(buf, 0xaa, 4 * BLK);
    {
        Req one = { .fd = dfd, .type = QEMU_AIO_READ, .buf = buf,
                    .len = 4 * BLK };

        ASSERT_INT(run_one(ctx, &one), ==, 0);
    }
    check_pattern(buf, 0, BLK + 1000);
    for (size_t i = BLK + 1000; i < 4 * BLK; i++) {
        ASSERT_UINT(buf[i], ==, 0);
    }
    free(buf);
    close(dfd);
    close(fd);
    laio_ctx_free(ctx);
}

/* Two threads set up the same context at once: one state wins. */
typedef struct SetupRace {
    AioContext *ctx;
    pthread_barrier_t *start;
    LinuxAioState *got;
} SetupRace;

static void *setup_thread(void *opaque)
{
    SetupRace *r = opaque;
    Error *err = NULL;

    pthread_barrier_wait(r->start);
    r->got = aio_setup_linux_aio(r->ctx, &err);
    ASSERT_NULL(err);
    return NULL;
}

TEST(setup_is_idempotent_across_threads)
{
    for (int round = 0; round < 20; round++) {
        AioContext *ctx = test_aio_context_new();
        pthread_barrier_t start;
        SetupRace r[2] = { { ctx, &start, NULL }, { ctx, &start, NULL } };
        pthread_t t[2];

        pthread_barrier_init(&start, NULL, 2);
        for (int i = 0; i < 2; i++) {
            ASSERT_EQ(pthread_create(&t[i], NULL, setup_thread, &r[i]), 0);
        }
        for (int i = 0; i < 2; i++) {
            pthread_join(t[i], NULL);
        }
        pthread_barrier_destroy(&start);
        if (!r[0].got) {
            test_skip("linux-aio cannot be set up here");
        }
        ASSERT_PTR_EQ(r[0].got, r[1].got);
        ASSERT_PTR_EQ(aio_get_linux_aio(ctx), r[0].got);
        aio_context_unref(ctx);
    }
}

static void get_without_setup(void *opaque)
{
    (void)opaque;
    aio_get_linux_aio(test_aio_context_new());
}

TEST(get_without_setup_aborts)
{
    test_expect_abort(get_without_setup, NULL,
                      "aio_setup_linux_aio() has not succeeded");
}

RUN_TESTS(T(setup_is_idempotent_across_threads), T(get_without_setup_aborts),
          T(batch_of_8), T(batch_default_32), T(batch_end_of_iteration),
          T(waits_for_free_slots), T(kernel_eagain),
          T(nested_aio_poll_in_resumed_coroutine),
          T(request_queued_during_completion_reaches_kernel_from_nested_poll),
          T(io_poll_finds_completions), T(read_at_eof_zero_fills),
          T(flush_fsync_and_fua_write),
          T(short_write_continued_until_the_reason), T(o_direct_reads));
