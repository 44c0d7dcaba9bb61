/*
 * Helpers shared by the AioContext tests (unit and stress).
 *
 * Header-only: every helper is static inline, so a test that does not use
 * one pays nothing.  Include after "test.h" is not needed: this header
 * includes it.
 *
 * - test_aio_context_new(): create a context, or skip the program (exit 77)
 *   with the error text when the fd monitor forced by AIOLOOP_FDMON cannot be
 *   set up.  Prints the fd monitor in use once per program.
 * - eventfd helpers that fail the test on error.
 * - test_wait_thread_sleeping(): wait (without sleeping) until another thread
 *   of this process is blocked in the kernel, so that a test can act on a
 *   thread that is known to be inside a blocking aio_poll().
 * - TestSentinel: a handler on an eventfd used to "flush" the loop: every fd
 *   event caused before test_sentinel_flush() has been seen by the loop once
 *   it returns, so "this handler was not called" can be asserted without
 *   relying on a non-blocking aio_poll() seeing fd events (it does not have
 *   to: see aio_poll()'s documentation of the all-pollable case).
 * - a watchdog that turns a hang into a failure naming what hung.
 */
#ifndef AIOLOOP_AIO_TEST_H
#define AIOLOOP_AIO_TEST_H

#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before any #include (gettid, pipe2)"
#endif

#include <aioloop/aio.h>

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

/* Sanitizer detection, for scaling stress tests and skipping seccomp. */
#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_TSAN
#define TEST_TSAN 0
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif
#define TEST_SANITIZED (TEST_TSAN || TEST_ASAN)

/*
 * Create an AioContext.  When AIOLOOP_FDMON forces a backend that this
 * machine cannot provide, aio_context_new() fails with an Error: skip the
 * whole program with that text.  Any other failure is a test failure.
 */
static inline AioContext *test_aio_context_new(void)
{
    static bool printed;
    Error *err = NULL;
    AioContext *ctx = aio_context_new(&err);

    if (!ctx) {
        const char *forced = getenv("AIOLOOP_FDMON");
        char reason[512];

        snprintf(reason, sizeof(reason), "AIOLOOP_FDMON=%s: %s",
                 forced ? forced : "(unset)",
                 err ? error_get_pretty(err) : "aio_context_new() failed "
                                               "without setting an Error");
        error_free(err);
        if (forced && forced[0]) {
            test_skip(reason);
        }
        TEST_FAIL_("aio_context_new failed: %s", reason);
    }
    if (err) {
        TEST_FAIL_("aio_context_new returned a context and set an Error: %s",
                   error_get_pretty(err));
    }
    /* A forced monitor must be the one running: no silent fallback. */
    {
        const char *forced = getenv("AIOLOOP_FDMON");

        if (forced && forced[0] &&
            strcmp(forced, aioloop_context_fdmon_name(ctx)) != 0) {
            TEST_FAIL_("AIOLOOP_FDMON=%s but the context runs %s", forced,
                       aioloop_context_fdmon_name(ctx));
        }
    }
    if (!printed) {
        printed = true;
        printf("# fdmon: %s\n", aioloop_context_fdmon_name(ctx));
        fflush(stdout);
    }
    return ctx;
}

/*
 * Run non-blocking iterations until nothing is left to do, so that a
 * following blocking aio_poll() really waits (the context's own
 * "notified" flag is cleared by every iteration).
 */
static inline void test_aio_drain(AioContext *ctx)
{
    int i;

    for (i = 0; i < 1000 && aio_poll(ctx, false); i++) {
        continue;
    }
    if (i == 1000) {
        TEST_FAIL_("aio_poll(ctx, false) still makes progress after 1000 "
                   "iterations");
    }
}

/* ---- eventfds ---------------------------------------------------------- */

static inline int test_eventfd(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    if (fd < 0) {
        TEST_FAIL_("eventfd: %s", strerror(errno));
    }
    return fd;
}

static inline void test_eventfd_write(int fd)
{
    uint64_t one = 1;

    if (write(fd, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
        TEST_FAIL_("eventfd write on fd %d: %s", fd, strerror(errno));
    }
}

/* Returns the counter, 0 if the eventfd was not readable. */
static inline uint64_t test_eventfd_drain(int fd)
{
    uint64_t v = 0;

    if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
        if (errno != EAGAIN) {
            TEST_FAIL_("eventfd read on fd %d: %s", fd, strerror(errno));
        }
        return 0;
    }
    return v;
}

/* ---- threads ----------------------------------------------------------- */

static inline pid_t test_gettid(void)
{
    return gettid();
}

/*
 * The scheduler state of thread @tid of this process ('R', 'S', 'D', ...),
 * or 0 when the thread is gone.
 */
static inline char test_thread_state(pid_t tid)
{
    char path[64], buf[512];
    ssize_t n;
    int fd;
    char *p;

    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    /* "tid (comm) S ...": comm may contain spaces and parentheses. */
    p = strrchr(buf, ')');
    if (!p || p[1] != ' ') {
        return 0;
    }
    return p[2];
}

/*
 * The system call thread @tid is blocked in, from /proc: -1 when it is
 * running, -2 when /proc does not tell.
 */
static inline long test_thread_syscall(pid_t tid)
{
    char path[64], buf[64];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -2;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return -2;
    }
    if (buf[0] < '0' || buf[0] > '9') {
        return -1;
    }
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

/* Is @nr one of the calls an fd monitor blocks in? */
static inline bool test_syscall_is_wait(long nr)
{
    switch (nr) {
#ifdef SYS_poll
    case SYS_poll:
#endif
#ifdef SYS_ppoll
    case SYS_ppoll:
#endif
#ifdef SYS_epoll_wait
    case SYS_epoll_wait:
#endif
#ifdef SYS_epoll_pwait
    case SYS_epoll_pwait:
#endif
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
#endif
#ifdef SYS_io_uring_enter
    case SYS_io_uring_enter:
#endif
    /*
     * A context whose only handler is its own notifier waits in a read()
     * of its eventfd, under every monitor (aio_notifier_read()).
     */
    case SYS_read:
#ifdef SYS_restart_syscall
    /*
     * poll() (GLib's g_poll) interrupted by a signal or a cgroup freeze
     * resumes in restart_syscall and stays there while it sleeps.
     */
    case SYS_restart_syscall:
#endif
        return true;
    default:
        return false;
    }
}

/*
 * Spin (yielding the CPU, never sleeping for a duration) until thread @tid
 * sleeps in the kernel ('S') inside a poll-family system call, that is,
 * inside the wait of a blocking aio_poll(); or until *@give_up becomes true
 * (pass NULL for none).  Used to make sure the home thread is blocked before
 * another thread pokes it.  Where /proc does not tell the system call, any
 * sleep counts.  Returns false when it gave up.
 */
static inline bool test_wait_thread_sleeping(pid_t tid, const bool *give_up)
{
    for (;;) {
        char s = test_thread_state(tid);

        if (s == 'S') {
            long nr = test_thread_syscall(tid);

            if (nr == -2 || test_syscall_is_wait(nr)) {
                return true;
            }
        }
        if (s == 0) {
            TEST_FAIL_("thread %d vanished while waiting for it to block",
                       (int)tid);
        }
        if (give_up && __atomic_load_n(give_up, __ATOMIC_ACQUIRE)) {
            return false;
        }
        sched_yield();
    }
}

static inline pthread_t test_thread_start(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int r = pthread_create(&t, NULL, fn, arg);

    if (r) {
        TEST_FAIL_("pthread_create: %s", strerror(r));
    }
    return t;
}

static inline void test_thread_join(pthread_t t)
{
    int r = pthread_join(t, NULL);

    if (r) {
        TEST_FAIL_("pthread_join: %s", strerror(r));
    }
}

/*
 * The home thread's side of a stress test: run @ctx until *@finished (which
 * the workers' last one-shot BHs count up) reaches @n, join the @n worker
 * threads @t, then run what their last requests left pending.
 */
static inline void test_run_until_finished(AioContext *ctx,
                                           const unsigned *finished,
                                           unsigned n, pthread_t *t)
{
    while (*finished < n) {
        aio_poll(ctx, true);
    }
    for (unsigned i = 0; i < n; i++) {
        test_thread_join(t[i]);
    }
    test_aio_drain(ctx);
}

/* ---- sentinel: flush fd events through the loop ------------------------ */

typedef struct TestSentinel {
    AioContext *ctx;
    int fd;
    unsigned hits;
} TestSentinel;

static inline void test_sentinel_read(void *opaque)
{
    TestSentinel *s = opaque;

    if (test_eventfd_drain(s->fd)) {
        s->hits++;
    }
}

static inline void test_sentinel_init(TestSentinel *s, AioContext *ctx)
{
    s->ctx = ctx;
    s->fd = test_eventfd();
    s->hits = 0;
    aio_set_fd_handler(ctx, s->fd, test_sentinel_read, NULL, NULL, NULL, s);
}

/*
 * Make the sentinel readable and iterate (blocking) until its handler ran.
 * Events made ready before this call by this thread are seen by then: the
 * fd monitors report every ready fd they know of in one wait.  Home thread.
 */
static inline void test_sentinel_flush(TestSentinel *s)
{
    unsigned target = s->hits + 1;
    int i;

    test_eventfd_write(s->fd);
    for (i = 0; s->hits < target; i++) {
        if (i == 100000) {
            TEST_FAIL_("sentinel eventfd %d never dispatched", s->fd);
        }
        aio_poll(s->ctx, true);
    }
}

static inline void test_sentinel_cleanup(TestSentinel *s)
{
    aio_set_fd_handler(s->ctx, s->fd, NULL, NULL, NULL, NULL, NULL);
    close(s->fd);
    s->fd = -1;
}

/*
 * Run @fn(@opaque) in a forked child and expect it to return normally (the
 * child then exits 0).  On an abort, a signal or another exit status, fail
 * with the child's stderr.  For behaviour whose failure would otherwise
 * kill the whole test program.
 */
static inline void test_expect_clean_exit(void (*fn)(void *), void *opaque)
{
    int pfd[2], status;
    char buf[4096];
    size_t len = 0;
    pid_t pid;

    if (pipe(pfd) < 0) {
        TEST_FAIL_("pipe: %s", strerror(errno));
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        TEST_FAIL_("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        dup2(pfd[1], STDERR_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        fn(opaque);
        fflush(NULL);
        _exit(0);
    }
    close(pfd[1]);
    for (;;) {
        ssize_t r = read(pfd[0], buf + len, sizeof(buf) - 1 - len);

        if (r <= 0) {
            break;
        }
        len += (size_t)r;
        if (len == sizeof(buf) - 1) {
            break;
        }
    }
    buf[len] = '\0';
    close(pfd[0]);
    if (waitpid(pid, &status, 0) != pid) {
        TEST_FAIL_("waitpid: %s", strerror(errno));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        TEST_FAIL_("child %s %d, stderr: %s",
                   WIFSIGNALED(status) ? "killed by signal" : "exited with",
                   WIFSIGNALED(status) ? WTERMSIG(status)
                                       : WEXITSTATUS(status), buf);
    }
}

/* ---- watchdog: a hang becomes a failure that says what hung ------------ */

static const char *test_watchdog_what;
static volatile sig_atomic_t test_watchdog_fired;

/*
 * The dump below runs in a child made by a raw clone(): only raw system
 * calls there, since a libc or sanitizer lock held by some thread of the
 * parent at the clone stays held for ever in the child.
 */
static inline void test_raw_str(const char *s)
{
    size_t len = 0;

    while (s[len]) {
        len++;
    }
    syscall(SYS_write, STDERR_FILENO, s, len);
}

/* Join @parts (NULL-ended; "" stands for @num in decimal) into @path. */
static inline void test_raw_path(char *path, size_t size, long num,
                                 const char *const *parts)
{
    char digits[24];
    int d = (int)sizeof(digits) - 1;
    size_t p = 0;

    digits[d] = '\0';
    do {
        digits[--d] = (char)('0' + num % 10);
        num /= 10;
    } while (num);
    for (; *parts; parts++) {
        const char *c = **parts ? *parts : digits + d;

        while (*c && p < size - 1) {
            path[p++] = *c++;
        }
    }
    path[p] = '\0';
}

/* Copy /proc/@pid/task/@tid/@file to stderr. */
static inline void test_raw_dump_file(long pid, const char *tid,
                                      const char *file)
{
    const char *const parts[] = { "/proc/", "", "/task/", tid, "/", file,
                                  NULL };
    char path[128];
    char buf[2048];
    long len = 0, n, fd;

    test_raw_path(path, sizeof(path), pid, parts);
    fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    test_raw_str("#   ");
    test_raw_str(file);
    test_raw_str(": ");
    while ((n = syscall(SYS_read, fd, buf, sizeof(buf) - 1)) > 0) {
        buf[n] = '\0';
        test_raw_str(buf);
        len = n;
    }
    syscall(SYS_close, fd);
    if (len <= 0 || buf[len - 1] != '\n') {
        test_raw_str("\n");
    }
}

/*
 * For each thread of @pid: its name, the system call it is blocked in
 * (number and arguments), the kernel's wait channel and, for root, the
 * kernel stack.  A hang in CI then says which wait never ended.
 */
static inline void test_raw_dump_threads(long pid)
{
    const char *const parts[] = { "/proc/", "", "/task", NULL };
    char path[64];
    char buf[4096];
    long n, fd;

    test_raw_path(path, sizeof(path), pid, parts);
    fd = syscall(SYS_openat, AT_FDCWD, path,
                 O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
        for (long off = 0; off < n;) {
            /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type */
            unsigned short reclen;
            const char *name = buf + off + 19;

            /* A plain load: no libc call in this child. */
            __builtin_memcpy(&reclen, buf + off + 16, sizeof(reclen));
            off += reclen;
            if (name[0] == '.') {
                continue;
            }
            test_raw_str("# thread ");
            test_raw_str(name);
            test_raw_str("\n");
            test_raw_dump_file(pid, name, "comm");
            test_raw_dump_file(pid, name, "syscall");
            test_raw_dump_file(pid, name, "wchan");
            test_raw_dump_file(pid, name, "stack");
        }
    }
    syscall(SYS_close, fd);
}

/*
 * First expiry: say what hung, then let a child read the threads' state
 * from /proc while this process goes back to waiting (the handler runs
 * on one of the threads, so the process cannot look at itself).  Second
 * expiry, 3 s later: exit.  A hang that a signal ends was a lost wake-up;
 * test_watchdog_cancel() says so and fails all the same.
 */
static inline void test_watchdog_fire(int sig)
{
    const char *what = test_watchdog_what ? test_watchdog_what : "?";
    void *frames[64];
    long child;

    (void)sig;
    if (test_watchdog_fired) {
        test_raw_str("FAIL: watchdog: still hung, exiting\n");
        syscall(SYS_exit_group, 1);
    }
    test_watchdog_fired = 1;
    test_raw_str("FAIL: watchdog: timed out: ");
    test_raw_str(what);
    test_raw_str("\n# the thread the signal interrupted "
                 "(addr2line -e BINARY OFFSET):\n");
    backtrace_symbols_fd(frames, backtrace(frames, 64), STDERR_FILENO);
    child = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (child == 0) {
        struct timespec ts = { 0, 300 * 1000 * 1000 };
        long parent = syscall(SYS_getppid);

        syscall(SYS_nanosleep, &ts, NULL);
        test_raw_str("# the threads, 0.3 s after the timeout:\n");
        test_raw_dump_threads(parent);
        syscall(SYS_exit_group, 0);
    }
    if (child < 0) {
        syscall(SYS_exit_group, 1);
    }
    alarm(3);
}

/*
 * Fail the program if it has not called test_watchdog_cancel() within
 * @seconds.  Generous values only: this catches hangs (a lost wake-up
 * makes aio_poll() block forever), it does not measure time.
 */
static inline void test_watchdog(const char *what, unsigned seconds)
{
    static bool primed;

    /* The first backtrace() loads libgcc_s, which a handler must not do. */
    if (!primed) {
        void *frame;

        backtrace(&frame, 1);
        primed = true;
    }
    test_watchdog_what = what;
    signal(SIGALRM, test_watchdog_fire);
    alarm(seconds);
}

static inline void test_watchdog_cancel(void)
{
    alarm(0);
    if (test_watchdog_fired) {
        fprintf(stderr, "FAIL: watchdog: %s went on after the timeout's "
                "signal interrupted it (a lost wake-up?)\n",
                test_watchdog_what ? test_watchdog_what : "?");
        _exit(1);
    }
    test_watchdog_what = NULL;
}

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif
#ifndef container_of
#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

/*
 * A thread that calls poke(opaque) once thread @target sleeps in the
 * kernel, and then sets @sent: "wake a loop that is really blocked".
 */
typedef struct Poker {
    pid_t target;
    bool sent;   /* atomic */
    void (*poke)(void *);
    void *opaque;
} Poker;

static inline void *poker_thread(void *arg)
{
    Poker *p = arg;

    test_wait_thread_sleeping(p->target, NULL);
    __atomic_store_n(&p->sent, true, __ATOMIC_SEQ_CST);
    p->poke(p->opaque);
    return NULL;
}

static inline void test_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* Wait (bounded, 20 s) until @cond holds, re-evaluated every millisecond. */
#define WAIT_UNTIL(cond)                                                   \
    do {                                                                   \
        int waited_ = 0;                                                   \
        while (!(cond)) {                                                  \
            if (++waited_ > 20000) {                                       \
                TEST_FAIL_("timed out waiting for %s", #cond);             \
            }                                                              \
            test_sleep_ms(1);                                              \
        }                                                                  \
    } while (0)

#endif
