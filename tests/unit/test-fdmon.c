/*
 * The fd monitors: behaviour every backend shares, and each backend's own
 * corners.
 *
 * Run once per backend (AIOLOOP_FDMON=poll|epoll|io_uring).  A few cases
 * build the context they need whatever the run's backend:
 * - the automatic poll -> epoll upgrade needs an automatically chosen
 *   backend without io_uring (AIOLOOP_FDMON unset, AIOLOOP_NO_IO_URING=1);
 * - the epoll -> poll fallback needs epoll (AIOLOOP_FDMON=epoll).
 * They set the environment for aio_context_new() and restore it.
 *
 * Nothing sleeps: "the loop never stalls" is a bounded number of
 * iterations plus a watchdog that turns a lost wake-up into a failure.
 * "Was not called" is checked after test_sentinel_flush(), a blocking
 * iteration known to have seen every event this thread caused before.
 * Each case checks that the context closed every fd it opened (the epoll
 * fd, the ring).
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>
#include <aioloop/timer.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aio-test.h"
#include "test.h"

/* Generous: only turns a lost wake-up into a failure instead of a hang. */
#define WATCHDOG_S 120

/* ---- helpers ------------------------------------------------------------ */

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    ASSERT_NOT_NULL(d);
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

static void raise_nofile(int want)
{
    struct rlimit rl;

    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
        ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    if (rl.rlim_cur < (rlim_t)want) {
        /* Not a skip of the program: other cases still run. */
        TEST_FAIL_("RLIMIT_NOFILE hard limit %llu < %d",
                   (unsigned long long)rl.rlim_max, want);
    }
}

static void socket_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sv) < 0) {
        TEST_FAIL_("socketpair: %s", strerror(errno));
    }
}

static void write_byte(int fd)
{
    if (write(fd, "x", 1) != 1) {
        TEST_FAIL_("write to fd %d: %s", fd, strerror(errno));
    }
}

static void drain_fd(int fd)
{
    char buf[64];

    while (read(fd, buf, sizeof(buf)) > 0) {
        continue;
    }
}

/* Environment changes undone by env_restore(). */
typedef struct SavedEnv {
    char *fdmon;
    char *no_io_uring;
} SavedEnv;

static char *dup_env(const char *name)
{
    const char *v = getenv(name);

    return v ? strdup(v) : NULL;
}

static void set_or_unset(const char *name, const char *value)
{
    if (value) {
        setenv(name, value, 1);
    } else {
        unsetenv(name);
    }
}

static void env_save(SavedEnv *e)
{
    e->fdmon = dup_env("AIOLOOP_FDMON");
    e->no_io_uring = dup_env("AIOLOOP_NO_IO_URING");
}

static void env_restore(SavedEnv *e)
{
    set_or_unset("AIOLOOP_FDMON", e->fdmon);
    set_or_unset("AIOLOOP_NO_IO_URING", e->no_io_uring);
    free(e->fdmon);
    free(e->no_io_uring);
}

/* A context with the backend chosen automatically, io_uring excluded. */
static AioContext *context_auto_without_io_uring(void)
{
    SavedEnv env;
    AioContext *ctx;

    env_save(&env);
    unsetenv("AIOLOOP_FDMON");
    setenv("AIOLOOP_NO_IO_URING", "1", 1);
    ctx = test_aio_context_new();
    env_restore(&env);
    return ctx;
}

static AioContext *context_forced(const char *fdmon)
{
    SavedEnv env;
    AioContext *ctx;

    env_save(&env);
    setenv("AIOLOOP_FDMON", fdmon, 1);
    ctx = test_aio_context_new();
    env_restore(&env);
    return ctx;
}

/*
 * A watched socketpair: sv[0] has the handler, writing to sv[1] makes it
 * readable.  The read handler drains it and counts; once @removed is set
 * (by the test, in the home thread, outside aio_poll()) any call is a bug.
 */
typedef struct Watched {
    int sv[2];
    unsigned calls;
    bool removed;
    bool called_after_removal;
} Watched;

static void watched_read(void *opaque)
{
    Watched *w = opaque;

    if (__atomic_load_n(&w->removed, __ATOMIC_ACQUIRE)) {
        w->called_after_removal = true;
    }
    w->calls++;
    drain_fd(w->sv[0]);
}

static void watched_open(Watched *w)
{
    memset(w, 0, sizeof(*w));
    socket_pair(w->sv);
}

static void watched_close(Watched *w)
{
    close(w->sv[0]);
    close(w->sv[1]);
}

static void watched_add(AioContext *ctx, Watched *w)
{
    aio_set_fd_handler(ctx, w->sv[0], watched_read, NULL, NULL, NULL, w);
}

static void watched_remove(AioContext *ctx, Watched *w)
{
    aio_set_fd_handler(ctx, w->sv[0], NULL, NULL, NULL, NULL, NULL);
    __atomic_store_n(&w->removed, true, __ATOMIC_RELEASE);
}

/*
 * Iterate (blocking) until every one of @n watched fds was dispatched at
 * least @target times.  Returns the number of iterations, failing past
 * @max_iter: a lost completion shows up as a bound exceeded or a hang.
 */
static int poll_until_all_called(AioContext *ctx, Watched *w, int n,
                                 unsigned target, int max_iter)
{
    int iter = 0;
    int next = 0;

    for (;;) {
        while (next < n && w[next].calls >= target) {
            next++;
        }
        if (next == n) {
            return iter;
        }
        if (iter == max_iter) {
            TEST_FAIL_("fd %d (handler %d of %d) not dispatched after %d "
                       "iterations", w[next].sv[0], next, n, iter);
        }
        aio_poll(ctx, true);
        iter++;
    }
}

/* ---- events every backend reports --------------------------------------- */

typedef struct Counts {
    int fd;
    unsigned reads, writes;
} Counts;

static void count_read(void *opaque)
{
    Counts *c = opaque;

    c->reads++;
    drain_fd(c->fd);
}

static void count_write(void *opaque)
{
    Counts *c = opaque;

    c->writes++;
}

TEST(readable_writable_hup)
{
    int before = count_open_fds();
    AioContext *ctx = test_aio_context_new();
    Counts r = { 0 }, wr = { 0 };
    int sv[2], pfd[2];
    int i;

    test_watchdog("readable_writable_hup", WATCHDOG_S);
    socket_pair(sv);

    /* Readable: the read handler. */
    r.fd = sv[0];
    aio_set_fd_handler(ctx, sv[0], count_read, NULL, NULL, NULL, &r);
    write_byte(sv[1]);
    for (i = 0; i < 1000 && r.reads == 0; i++) {
        aio_poll(ctx, true);
    }
    ASSERT_INT(r.reads, >=, 1);
    aio_set_fd_handler(ctx, sv[0], NULL, NULL, NULL, NULL, NULL);

    /* Writable: the write handler, not the read handler. */
    r.reads = 0;
    wr.fd = sv[1];
    aio_set_fd_handler(ctx, sv[1], count_read, count_write, NULL, NULL, &wr);
    for (i = 0; i < 1000 && wr.writes == 0; i++) {
        aio_poll(ctx, true);
    }
    ASSERT_INT(wr.writes, >=, 1);
    ASSERT_EQ(wr.reads, 0);
    aio_set_fd_handler(ctx, sv[1], NULL, NULL, NULL, NULL, NULL);

    /* POLLHUP alone (a pipe whose writer closed): the read handler. */
    ASSERT_EQ(pipe2(pfd, O_NONBLOCK | O_CLOEXEC), 0);
    r.fd = pfd[0];
    r.reads = 0;
    aio_set_fd_handler(ctx, pfd[0], count_read, NULL, NULL, NULL, &r);
    close(pfd[1]);
    for (i = 0; i < 1000 && r.reads == 0; i++) {
        aio_poll(ctx, true);
    }
    ASSERT_INT(r.reads, >=, 1);
    aio_set_fd_handler(ctx, pfd[0], NULL, NULL, NULL, NULL, NULL);
    close(pfd[0]);

    close(sv[0]);
    close(sv[1]);
    aio_context_unref(ctx);
    test_watchdog_cancel();
    ASSERT_EQ(count_open_fds(), before);
}

/* ---- timeouts ------------------------------------------------------------ */

static void timer_fired(void *opaque)
{
    bool *fired = opaque;

    *fired = true;
}

/*
 * A blocking aio_poll() with only a timer pending returns when the timer
 * is due, for deadlines below a millisecond too (a backend that rounded
 * the timeout down to 0 ms would spin; one that waited forever would hang
 * and trip the watchdog).  No timing is asserted.
 */
TEST(timer_deadline_ends_blocking_wait)
{
    static const int64_t delays_ns[] = { 1000000, 50000, 1 };
    AioContext *ctx = test_aio_context_new();
    bool fired = false;
    QEMUTimer *t = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS,
                                 timer_fired, &fired);

    test_watchdog("timer_deadline_ends_blocking_wait", WATCHDOG_S);
    test_aio_drain(ctx);
    for (size_t k = 0; k < sizeof(delays_ns) / sizeof(delays_ns[0]); k++) {
        int i;

        fired = false;
        timer_mod_ns(t, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + delays_ns[k]);
        /* A few extra iterations allow for wake-ups by the context itself. */
        for (i = 0; i < 100 && !fired; i++) {
            aio_poll(ctx, true);
        }
        ASSERT_TRUE(fired);
    }
    /* Non-blocking with nothing pending returns at once. */
    ASSERT_FALSE(aio_poll(ctx, false));
    timer_free(t);
    aio_context_unref(ctx);
    test_watchdog_cancel();
}

/* ---- poll -> epoll upgrade ---------------------------------------------- */

#define UPGRADE_FDS 100

TEST(poll_upgrades_to_epoll_at_threshold)
{
    int before;
    AioContext *ctx;
    Watched *w = calloc(UPGRADE_FDS, sizeof(*w));
    TestSentinel s;
    int i;

    ASSERT_NOT_NULL(w);
    raise_nofile(4 * UPGRADE_FDS + 64);
    before = count_open_fds();
    ctx = context_auto_without_io_uring();
    test_watchdog("poll_upgrades_to_epoll_at_threshold", WATCHDOG_S);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "poll");
    test_sentinel_init(&s, ctx);

    /* Below the threshold (the notifier is a handler too): poll. */
    for (i = 0; i < 32; i++) {
        watched_open(&w[i]);
        watched_add(ctx, &w[i]);
    }
    aio_poll(ctx, false);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "poll");

    for (; i < UPGRADE_FDS; i++) {
        watched_open(&w[i]);
        watched_add(ctx, &w[i]);
    }
    for (i = 0; i < UPGRADE_FDS; i++) {
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, UPGRADE_FDS, 1, 100);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "epoll");

    /* Every fd, registered before the switch, dispatches through epoll. */
    for (i = 0; i < UPGRADE_FDS; i++) {
        ASSERT_EQ(w[i].calls, 1);
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, UPGRADE_FDS, 2, 100);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "epoll");

    /* Changes after the switch: replace half, remove the other half. */
    for (i = 0; i < UPGRADE_FDS; i++) {
        if (i % 2) {
            watched_remove(ctx, &w[i]);
        } else {
            watched_add(ctx, &w[i]);
        }
        write_byte(w[i].sv[1]);
    }
    for (i = 0; i < UPGRADE_FDS; i += 2) {
        while (w[i].calls < 3) {
            aio_poll(ctx, true);
        }
    }
    test_sentinel_flush(&s);
    for (i = 0; i < UPGRADE_FDS; i++) {
        ASSERT_FALSE(w[i].called_after_removal);
        if (!(i % 2)) {
            watched_remove(ctx, &w[i]);
        }
        watched_close(&w[i]);
    }
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
    free(w);
    test_watchdog_cancel();
    ASSERT_EQ(count_open_fds(), before);
}

/* ---- epoll -> poll fallback --------------------------------------------- */

typedef struct FileHandler {
    int fd;
    unsigned calls;
} FileHandler;

static void file_read(void *opaque)
{
    FileHandler *f = opaque;

    f->calls++;
}

static int regular_file(void)
{
    /* A memfd is a regular (shmem) file: epoll_ctl() says EPERM. */
    int fd = memfd_create("aioloop-test-fdmon", MFD_CLOEXEC);

    if (fd < 0) {
        TEST_FAIL_("memfd_create: %s", strerror(errno));
    }
    return fd;
}

/*
 * epoll cannot watch a regular file; poll can.  Registering one must make
 * the context fall back to poll, with every handler (old and new) working.
 */
static void check_fallback(AioContext *ctx, int nfds)
{
    Watched *w = calloc((size_t)nfds, sizeof(*w));
    FileHandler f = { .fd = regular_file() };
    int i;

    ASSERT_NOT_NULL(w);
    for (i = 0; i < nfds; i++) {
        watched_open(&w[i]);
        watched_add(ctx, &w[i]);
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, nfds, 1, 100);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "epoll");

    aio_set_fd_handler(ctx, f.fd, file_read, NULL, NULL, NULL, &f);
    for (i = 0; i < 100 && f.calls == 0; i++) {
        aio_poll(ctx, true);
    }
    ASSERT_INT(f.calls, >=, 1);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "poll");

    /* The other handlers still work, and the context stays on poll. */
    for (i = 0; i < nfds; i++) {
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, nfds, 2, 100);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "poll");

    aio_set_fd_handler(ctx, f.fd, NULL, NULL, NULL, NULL, NULL);
    close(f.fd);
    for (i = 0; i < nfds; i++) {
        watched_remove(ctx, &w[i]);
        watched_close(&w[i]);
    }
    free(w);
}

TEST(epoll_falls_back_to_poll_for_regular_file)
{
    int before;
    AioContext *ctx;

    raise_nofile(4 * UPGRADE_FDS + 64);
    before = count_open_fds();
    test_watchdog("epoll_falls_back_to_poll_for_regular_file", WATCHDOG_S);

    /* Forced epoll. */
    ctx = context_forced("epoll");
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "epoll");
    check_fallback(ctx, 4);
    aio_context_unref(ctx);
    ASSERT_EQ(count_open_fds(), before);

    /* Upgraded from poll: must not upgrade again (and fail) every wait. */
    ctx = context_auto_without_io_uring();
    check_fallback(ctx, UPGRADE_FDS);
    aio_context_unref(ctx);
    ASSERT_EQ(count_open_fds(), before);
    test_watchdog_cancel();
}

/* With a regular file among the fds, the upgrade is refused: poll goes on. */
TEST(epoll_upgrade_refused_for_regular_file)
{
    int before;
    AioContext *ctx;
    Watched *w = calloc(UPGRADE_FDS, sizeof(*w));
    FileHandler f;
    int i;

    ASSERT_NOT_NULL(w);
    raise_nofile(4 * UPGRADE_FDS + 64);
    before = count_open_fds();
    test_watchdog("epoll_upgrade_refused_for_regular_file", WATCHDOG_S);
    ctx = context_auto_without_io_uring();
    f.fd = regular_file();
    f.calls = 0;
    aio_set_fd_handler(ctx, f.fd, file_read, NULL, NULL, NULL, &f);
    for (i = 0; i < UPGRADE_FDS; i++) {
        watched_open(&w[i]);
        watched_add(ctx, &w[i]);
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, UPGRADE_FDS, 1, 100);
    ASSERT_INT(f.calls, >=, 1);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "poll");

    aio_set_fd_handler(ctx, f.fd, NULL, NULL, NULL, NULL, NULL);
    close(f.fd);
    for (i = 0; i < UPGRADE_FDS; i++) {
        watched_remove(ctx, &w[i]);
        watched_close(&w[i]);
    }
    aio_context_unref(ctx);
    free(w);
    test_watchdog_cancel();
    ASSERT_EQ(count_open_fds(), before);
}

/*
 * A handler whose fd was closed before the handler was removed, while a
 * dup keeps the file open: the kernel keeps the epoll registration (it is
 * per open file), DEL fails with EBADF, and the set would go on reporting
 * a node that has been freed (ASan would see it).  The context must stop
 * using that set; the other handlers keep working.
 */
TEST(epoll_handler_removed_after_its_fd_was_closed)
{
    int before = count_open_fds();
    AioContext *ctx;
    Watched w, other;
    int dup_fd;
    TestSentinel s;

    test_watchdog("epoll_handler_removed_after_its_fd_was_closed", WATCHDOG_S);
    ctx = context_forced("epoll");
    test_sentinel_init(&s, ctx);
    watched_open(&w);
    watched_open(&other);
    watched_add(ctx, &w);
    watched_add(ctx, &other);
    test_sentinel_flush(&s);

    dup_fd = dup(w.sv[0]);
    ASSERT_INT(dup_fd, >=, 0);
    close(w.sv[0]);
    /* The fd number is closed now; the handler table still maps it. */
    aio_set_fd_handler(ctx, w.sv[0], NULL, NULL, NULL, NULL, NULL);
    w.removed = true;

    write_byte(w.sv[1]); /* the dup'ed file becomes readable */
    write_byte(other.sv[1]);
    while (other.calls == 0) {
        aio_poll(ctx, true);
    }
    test_sentinel_flush(&s);
    ASSERT_FALSE(w.called_after_removal);
    ASSERT_EQ(w.calls, 0);

    watched_remove(ctx, &other);
    test_sentinel_cleanup(&s);
    close(dup_fd);
    close(w.sv[1]);
    watched_close(&other);
    aio_context_unref(ctx);
    test_watchdog_cancel();
    ASSERT_EQ(count_open_fds(), before);
}

/* ---- many handlers added and removed at once ----------------------------- */

/*
 * More handlers than the io_uring CQ holds (512): registering them all and
 * making them all ready produces more completions than fit, and removing
 * them all at once two completions each (the POLL_REMOVE's and the
 * cancelled POLL_ADD's).  Every readable fd must be dispatched, no removed
 * handler may run again, the loop must not stall, and (ASan/LSan) every
 * node must be freed exactly once, after its last completion.
 */
#define CHURN_FDS 1000
#define CHURN_UNSUBMITTED 200
#define CHURN_ROUNDS 4

TEST(many_handlers_added_and_removed_at_once)
{
    int before;
    AioContext *ctx;
    Watched *w = calloc(CHURN_FDS + CHURN_UNSUBMITTED, sizeof(*w));
    TestSentinel s;

    ASSERT_NOT_NULL(w);
    raise_nofile(2 * (CHURN_FDS + CHURN_UNSUBMITTED) + 64);
    before = count_open_fds();
    ctx = test_aio_context_new();
    test_watchdog("many_handlers_added_and_removed_at_once", WATCHDOG_S);
    test_sentinel_init(&s, ctx);

    for (int round = 0; round < CHURN_ROUNDS; round++) {
        int iters;
        int i;

        for (i = 0; i < CHURN_FDS + CHURN_UNSUBMITTED; i++) {
            watched_open(&w[i]);
            watched_add(ctx, &w[i]);
        }
        /*
         * Removed before any aio_poll(): never submitted to the kernel.
         * Readable, so a backend that armed them anyway would call them.
         */
        for (i = CHURN_FDS; i < CHURN_FDS + CHURN_UNSUBMITTED; i++) {
            write_byte(w[i].sv[1]);
            watched_remove(ctx, &w[i]);
        }
        /* Half readable before the first wait, half after. */
        for (i = 0; i < CHURN_FDS; i += 2) {
            write_byte(w[i].sv[1]);
        }
        aio_poll(ctx, false);
        for (i = 1; i < CHURN_FDS; i += 2) {
            write_byte(w[i].sv[1]);
        }
        iters = poll_until_all_called(ctx, w, CHURN_FDS, 1, 1000);
        if (round == 0) {
            printf("# %d iterations to dispatch %d fds\n", iters, CHURN_FDS);
        }

        /*
         * All readable again (their polls complete, and the completions
         * pile up beyond the CQ), then all removed in one go: the
         * completions race with the removals.
         */
        for (i = 0; i < CHURN_FDS; i++) {
            write_byte(w[i].sv[1]);
        }
        for (i = 0; i < CHURN_FDS; i++) {
            watched_remove(ctx, &w[i]);
        }
        test_sentinel_flush(&s);
        /* And once more, with the removals processed. */
        for (i = 0; i < CHURN_FDS; i++) {
            write_byte(w[i].sv[1]);
        }
        test_sentinel_flush(&s);

        for (i = 0; i < CHURN_FDS + CHURN_UNSUBMITTED; i++) {
            if (w[i].called_after_removal) {
                TEST_FAIL_("round %d: handler %d called after its removal",
                           round, i);
            }
            if (i < CHURN_FDS && w[i].calls != 1) {
                TEST_FAIL_("round %d: handler %d called %u times, expected 1",
                           round, i, w[i].calls);
            }
            if (i >= CHURN_FDS) {
                ASSERT_EQ(w[i].calls, 0);
            }
            watched_close(&w[i]);
        }
    }
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
    free(w);
    test_watchdog_cancel();
    ASSERT_EQ(count_open_fds(), before);
}

/* ---- changes from another thread while the home thread blocks ------------ */

#define REMOTE_FDS 200

typedef struct Remote {
    AioContext *ctx;
    pid_t home_tid;
    Watched *w;
    int done_fd;
} Remote;

static void *remote_thread(void *opaque)
{
    Remote *r = opaque;
    int i;

    /* Phase 1: register readable fds while the home thread blocks. */
    test_wait_thread_sleeping(r->home_tid, NULL);
    for (i = 0; i < REMOTE_FDS; i++) {
        watched_add(r->ctx, &r->w[i]);
    }
    return NULL;
}

static void *remote_remove_thread(void *opaque)
{
    Remote *r = opaque;
    int i;

    /* Phase 2: remove them all while the home thread blocks, then say so. */
    test_wait_thread_sleeping(r->home_tid, NULL);
    for (i = 0; i < REMOTE_FDS; i++) {
        watched_remove(r->ctx, &r->w[i]);
    }
    test_eventfd_write(r->done_fd);
    return NULL;
}

typedef struct Done {
    int fd;
    bool seen;
} Done;

static void done_read(void *opaque)
{
    Done *d = opaque;

    if (test_eventfd_drain(d->fd)) {
        d->seen = true;
    }
}

TEST(changes_from_another_thread_while_blocked)
{
    int before;
    AioContext *ctx;
    Watched *w = calloc(REMOTE_FDS, sizeof(*w));
    Remote r;
    Done done;
    TestSentinel s;
    pthread_t t;
    int i;

    ASSERT_NOT_NULL(w);
    raise_nofile(2 * REMOTE_FDS + 64);
    before = count_open_fds();
    ctx = test_aio_context_new();
    test_watchdog("changes_from_another_thread_while_blocked", WATCHDOG_S);
    test_sentinel_init(&s, ctx);
    done.fd = test_eventfd();
    done.seen = false;
    aio_set_fd_handler(ctx, done.fd, done_read, NULL, NULL, NULL, &done);
    for (i = 0; i < REMOTE_FDS; i++) {
        watched_open(&w[i]);
        write_byte(w[i].sv[1]);
    }
    test_aio_drain(ctx);

    r = (Remote){ .ctx = ctx, .home_tid = test_gettid(), .w = w,
                  .done_fd = done.fd };
    t = test_thread_start(remote_thread, &r);
    /* Blocks until the registrations wake it; then dispatches them all. */
    poll_until_all_called(ctx, w, REMOTE_FDS, 1, 1000);
    test_thread_join(t);

    /* Each registration made once, and level-triggered from then on. */
    for (i = 0; i < REMOTE_FDS; i++) {
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, REMOTE_FDS, 2, 1000);
    for (i = 0; i < REMOTE_FDS; i++) {
        ASSERT_EQ(w[i].calls, 2);
    }

    /* Removed while we block, then readable again: never called again. */
    t = test_thread_start(remote_remove_thread, &r);
    while (!done.seen) {
        aio_poll(ctx, true);
    }
    test_thread_join(t);
    for (i = 0; i < REMOTE_FDS; i++) {
        write_byte(w[i].sv[1]);
    }
    test_sentinel_flush(&s);
    for (i = 0; i < REMOTE_FDS; i++) {
        ASSERT_FALSE(w[i].called_after_removal);
        ASSERT_EQ(w[i].calls, 2);
        watched_close(&w[i]);
    }

    aio_set_fd_handler(ctx, done.fd, NULL, NULL, NULL, NULL, NULL);
    close(done.fd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
    free(w);
    test_watchdog_cancel();
    ASSERT_EQ(count_open_fds(), before);
}

/* ---- destroy and set up again -------------------------------------------- */

/*
 * aio_context_destroy() releases the backend (epoll fd, ring) and every
 * node it still holds, including removals not processed yet; handlers stay
 * registered and work again after aio_context_setup().  LSan checks that no
 * node is lost, ASan that none is freed twice.
 */
TEST(destroy_and_setup_again)
{
    enum { N = 8 };
    int before = count_open_fds();
    AioContext *ctx = test_aio_context_new();
    const char *name = aioloop_context_fdmon_name(ctx);
    Watched w[N];
    int i;

    test_watchdog("destroy_and_setup_again", WATCHDOG_S);
    for (i = 0; i < N; i++) {
        watched_open(&w[i]);
        watched_add(ctx, &w[i]);
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, N, 1, 100);
    /* Removals the backend has not processed yet. */
    for (i = N / 2; i < N; i++) {
        watched_remove(ctx, &w[i]);
    }
    aio_context_destroy(ctx);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), "poll");
    /* Still working, on poll. */
    for (i = 0; i < N; i++) {
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, N / 2, 2, 100);

    aio_context_setup(ctx);
    ASSERT_STR_EQ(aioloop_context_fdmon_name(ctx), name);
    for (i = 0; i < N; i++) {
        write_byte(w[i].sv[1]);
    }
    poll_until_all_called(ctx, w, N / 2, 3, 100);
    for (i = 0; i < N; i++) {
        ASSERT_FALSE(w[i].called_after_removal);
        if (i < N / 2) {
            watched_remove(ctx, &w[i]);
        }
        watched_close(&w[i]);
    }
    aio_context_unref(ctx);
    test_watchdog_cancel();
    ASSERT_EQ(count_open_fds(), before);
}

RUN_TESTS(T(readable_writable_hup),
          T(timer_deadline_ends_blocking_wait),
          T(poll_upgrades_to_epoll_at_threshold),
          T(epoll_falls_back_to_poll_for_regular_file),
          T(epoll_upgrade_refused_for_regular_file),
          T(epoll_handler_removed_after_its_fd_was_closed),
          T(many_handlers_added_and_removed_at_once),
          T(changes_from_another_thread_while_blocked),
          T(destroy_and_setup_again))
