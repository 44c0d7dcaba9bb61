/*
 * The main loop: main_loop_wait(), the iohandler context, legacy helpers,
 * main-loop timers, polling callbacks, child watches, signals through the
 * signalfd, and the BQL.
 *
 * One main loop per process: main() checks the "before init" behaviour,
 * then initialises it once for every case.  The harness watchdog uses
 * SIGALRM, which the main loop traps, so this file has a watchdog thread
 * of its own.  Waits are "iterate until it happened"; a lost wake-up
 * hangs and the watchdog turns that into a failure.
 */
#define _GNU_SOURCE

#include <aioloop/main-loop.h>
#include <aioloop/coroutine.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

#include "aio-test.h"
#include "test.h"


#define WATCHDOG_SECONDS 120

static pid_t main_tid;

static void *watchdog_thread(void *arg)
{
    (void)arg;
    sleep(WATCHDOG_SECONDS);
    fprintf(stderr, "FAIL: watchdog: test-main-loop hung for %d s\n",
            WATCHDOG_SECONDS);
    _exit(1);
}

static int64_t now_ns(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
}

/* Iterate (blocking) until @cond holds. */
#define LOOP_UNTIL(cond)            \
    do {                            \
        while (!(cond)) {           \
            main_loop_wait(false);  \
        }                           \
    } while (0)

/* A few non-blocking iterations, so leftovers don't count later. */
static void loop_drain(void)
{
    for (int i = 0; i < 10; i++) {
        main_loop_wait(true);
    }
}

/* ---- before qemu_init_main_loop() -------------------------------------- */

static void noop_cb(void *opaque)
{
    (void)opaque;
}

static void call_set_fd_handler(void *opaque)
{
    (void)opaque;
    qemu_set_fd_handler(0, noop_cb, NULL, NULL);
}

static void call_bh_new(void *opaque)
{
    (void)opaque;
    qemu_bh_new(noop_cb, NULL);
}

static void call_main_loop_wait(void *opaque)
{
    (void)opaque;
    main_loop_wait(true);
}

static void call_child_watch(void *opaque)
{
    (void)opaque;
    qemu_add_child_watch(getpid());
}

static void timer_cb(void *opaque)
{
    int *fired = opaque;

    __atomic_fetch_add(fired, 1, __ATOMIC_SEQ_CST);
}

static void call_timer_new_ms(void *opaque)
{
    (void)opaque;
    timer_new_ms(QEMU_CLOCK_REALTIME, timer_cb, NULL);
}

/* In a child: a failed init leaves nothing behind, a retry works. */
static void failed_init_then_retry(void *opaque)
{
    const char *saved = getenv("AIOLOOP_FDMON");
    char *copy = saved ? strdup(saved) : NULL;
    Error *err = NULL;
    sigset_t cur;

    (void)opaque;
    setenv("AIOLOOP_FDMON", "no-such-monitor", 1);
    ASSERT_INT(qemu_init_main_loop(&err), <, 0);
    ASSERT_NOT_NULL(err);
    ASSERT_TRUE(strstr(error_get_pretty(err), "no-such-monitor") != NULL);
    error_free(err);
    err = NULL;
    ASSERT_NULL(qemu_get_aio_context());
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, NULL, &cur), 0);
    ASSERT_FALSE(sigismember(&cur, SIGIO));

    if (copy) {
        setenv("AIOLOOP_FDMON", copy, 1);
        free(copy);
    } else {
        unsetenv("AIOLOOP_FDMON");
    }
    if (qemu_init_main_loop(&err) < 0) {
        /* A forced monitor this machine lacks: nothing more to check. */
        ASSERT_NOT_NULL(getenv("AIOLOOP_FDMON"));
        error_free(err);
        return;
    }
    ASSERT_NOT_NULL(qemu_get_aio_context());
}

static void before_init_checks(void)
{
    printf("# before_init\n");
    ASSERT_NULL(qemu_get_aio_context());
    ASSERT_NULL(iohandler_get_aio_context());
    qemu_notify_event(); /* a no-op, not a crash */
    test_expect_abort(call_set_fd_handler, NULL,
                      "qemu_set_fd_handler: called before qemu_init_main_loop");
    test_expect_abort(call_bh_new, NULL,
                      "qemu_bh_new: called before qemu_init_main_loop");
    test_expect_abort(call_main_loop_wait, NULL,
                      "main_loop_wait: called before qemu_init_main_loop");
    test_expect_abort(call_child_watch, NULL,
                      "qemu_add_child_watch: called before qemu_init_main_loop");
    test_expect_abort(call_timer_new_ms, NULL, "no main loop");
    test_expect_clean_exit(failed_init_then_retry, NULL);
}

/* ---- basics -------------------------------------------------------------- */

TEST(init_twice_fails)
{
    Error *err = NULL;

    ASSERT_EQ(qemu_init_main_loop(&err), -EEXIST);
    ASSERT_NOT_NULL(err);
    ASSERT_TRUE(strstr(error_get_pretty(err), "already initialised") != NULL);
    error_free(err);
}

TEST(contexts)
{
    ASSERT_NOT_NULL(qemu_get_aio_context());
    ASSERT_NOT_NULL(iohandler_get_aio_context());
    ASSERT_PTR_NE(qemu_get_aio_context(), iohandler_get_aio_context());
    ASSERT_PTR_EQ(qemu_get_current_aio_context(), qemu_get_aio_context());
    ASSERT_TRUE(in_aio_context_home_thread(qemu_get_aio_context()));
    ASSERT_TRUE(in_aio_context_home_thread(iohandler_get_aio_context()));
}

typedef struct BHData {
    QEMUBH *bh;
    MemReentrancyGuard *guard;
    bool guard_engaged;
    bool bql_held;
    int runs;
} BHData;

static void bh_cb(void *opaque)
{
    BHData *d = opaque;

    d->runs++;
    d->bql_held = bql_locked();
    if (d->guard) {
        d->guard_engaged = d->guard->engaged_in_io;
    }
}

TEST(bh_new_runs_in_main_loop)
{
    BHData d = { 0 };
    MemReentrancyGuard guard = { false };
    BHData g = { .guard = &guard };

    d.bh = qemu_bh_new(bh_cb, &d);
    g.bh = qemu_bh_new_guarded(bh_cb, &g, &guard);
    loop_drain();
    qemu_bh_schedule(d.bh);
    qemu_bh_schedule(g.bh);
    /* Blocking, but a scheduled BH makes it return at once. */
    main_loop_wait(false);
    ASSERT_EQ(d.runs, 1);
    ASSERT_EQ(g.runs, 1);
    ASSERT_TRUE(g.guard_engaged);
    ASSERT_FALSE(guard.engaged_in_io);

    /* qemu_bh_new() BHs live in the main context: aio_poll runs them too. */
    qemu_bh_schedule(d.bh);
    ASSERT_TRUE(aio_poll(qemu_get_aio_context(), false));
    ASSERT_EQ(d.runs, 2);

    /* qemu_aio_wait() is aio_poll(main, true). */
    qemu_bh_schedule(d.bh);
    ASSERT_TRUE(qemu_aio_wait());
    ASSERT_EQ(d.runs, 3);

    qemu_bh_delete(d.bh);
    qemu_bh_delete(g.bh);
    loop_drain();
}

static void poke_notify(void *opaque)
{
    (void)opaque;
    qemu_notify_event();
}

TEST(notify_event_wakes_blocked_loop)
{
    for (int i = 0; i < 20; i++) {
        Poker p = { .target = main_tid, .poke = poke_notify };
        pthread_t t;

        loop_drain();
        t = test_thread_start(poker_thread, &p);
        LOOP_UNTIL(__atomic_load_n(&p.sent, __ATOMIC_SEQ_CST));
        test_thread_join(t);
    }
    /* From a callback: the next blocking iteration does not block. */
    qemu_notify_event();
    main_loop_wait(false);
}

/* ---- fd handlers ---------------------------------------------------------- */

typedef struct FdData {
    int fd;
    int reads;
    int writes;
    bool drain;
} FdData;

static void fd_read_cb(void *opaque)
{
    FdData *d = opaque;
    char buf[64];

    d->reads++;
    if (d->drain) {
        while (read(d->fd, buf, sizeof(buf)) > 0) {
            continue;
        }
    }
}

static void fd_write_cb(void *opaque)
{
    FdData *d = opaque;

    d->writes++;
}

static void make_pipe(int fds[2])
{
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        TEST_FAIL_("pipe2: %s", strerror(errno));
    }
}

TEST(fd_handler_runs_only_in_main_loop)
{
    TestSentinel s;
    FdData d = { .drain = true };
    int fds[2];

    make_pipe(fds);
    d.fd = fds[0];
    qemu_set_fd_handler(fds[0], fd_read_cb, NULL, &d);
    ASSERT_EQ(write(fds[1], "x", 1), 1);

    /* A nested aio_poll(qemu_get_aio_context()) must not run it. */
    test_sentinel_init(&s, qemu_get_aio_context());
    test_sentinel_flush(&s);
    test_sentinel_flush(&s);
    ASSERT_EQ(d.reads, 0);
    test_sentinel_cleanup(&s);

    LOOP_UNTIL(d.reads == 1);
    /* Drained: the next non-blocking iterations don't call it again. */
    loop_drain();
    ASSERT_EQ(d.reads, 1);

    /* Level-triggered: a handler that does not drain is called again. */
    d.drain = false;
    ASSERT_EQ(write(fds[1], "y", 1), 1);
    LOOP_UNTIL(d.reads == 3);

    /* Removal. */
    qemu_set_fd_handler(fds[0], NULL, NULL, NULL);
    loop_drain();
    ASSERT_EQ(d.reads, 3);

    /* A write handler on the pipe's write end. */
    d.fd = fds[1];
    qemu_set_fd_handler(fds[1], NULL, fd_write_cb, &d);
    LOOP_UNTIL(d.writes >= 1);
    qemu_set_fd_handler(fds[1], NULL, NULL, NULL);
    loop_drain();
    close(fds[0]);
    close(fds[1]);
}

TEST(fd_handler_on_regular_file)
{
    FILE *f = tmpfile();
    FdData d = { .drain = false };

    /* epoll refuses regular files: the iohandler context falls back to poll. */
    ASSERT_NOT_NULL(f);
    qemu_set_fd_handler(fileno(f), fd_read_cb, NULL, &d);
    LOOP_UNTIL(d.reads >= 3);
    qemu_set_fd_handler(fileno(f), NULL, NULL, NULL);
    fclose(f);
    loop_drain();
}

TEST(aio_fd_handler_runs_in_aio_poll)
{
    FdData d = { .drain = true };
    int fds[2];

    make_pipe(fds);
    d.fd = fds[0];
    qemu_aio_set_fd_handler(fds[0], fd_read_cb, NULL, &d);
    ASSERT_EQ(write(fds[1], "x", 1), 1);
    while (d.reads == 0) {
        qemu_aio_wait();
    }
    ASSERT_EQ(write(fds[1], "x", 1), 1);
    LOOP_UNTIL(d.reads == 2);  /* ... and in main_loop_wait() */
    qemu_aio_set_fd_handler(fds[0], NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
    loop_drain();
}

typedef struct NotifierData {
    EventNotifier e;
    int runs;
} NotifierData;

static void notifier_cb(EventNotifier *e)
{
    NotifierData *d = container_of(e, NotifierData, e);

    event_notifier_test_and_clear(e);
    d->runs++;
}

static void poke_notifier(void *opaque)
{
    event_notifier_set(opaque);
}

TEST(event_notifier_handlers)
{
    NotifierData d = { 0 };
    Poker p = { .target = main_tid, .poke = poke_notifier, .opaque = &d.e };
    pthread_t t;

    ASSERT_EQ(event_notifier_init(&d.e, false), 0);
    event_notifier_set_handler(&d.e, notifier_cb);
    event_notifier_set(&d.e);
    LOOP_UNTIL(d.runs == 1);

    /* Set from another thread while the loop sleeps. */
    loop_drain();
    t = test_thread_start(poker_thread, &p);
    LOOP_UNTIL(d.runs == 2);
    test_thread_join(t);
    event_notifier_set_handler(&d.e, NULL);
    loop_drain();

    /* The main-context variant runs in qemu_aio_wait(). */
    qemu_aio_set_event_notifier(&d.e, notifier_cb);
    event_notifier_set(&d.e);
    while (d.runs < 3) {
        qemu_aio_wait();
    }
    qemu_aio_set_event_notifier(&d.e, NULL);
    event_notifier_cleanup(&d.e);
    loop_drain();
}

/* ---- main-loop timers ------------------------------------------------------ */

TEST(timer_new_runs_in_main_loop)
{
    static const int scales[] = { SCALE_MS, SCALE_US, SCALE_NS };

    for (size_t i = 0; i < ARRAY_SIZE(scales); i++) {
        int fired = 0;
        QEMUTimer *t;
        int64_t expire_ns;

        switch (scales[i]) {
        case SCALE_MS:
            t = timer_new_ms(QEMU_CLOCK_REALTIME, timer_cb, &fired);
            break;
        case SCALE_US:
            t = timer_new_us(QEMU_CLOCK_REALTIME, timer_cb, &fired);
            break;
        default:
            t = timer_new_ns(QEMU_CLOCK_REALTIME, timer_cb, &fired);
            break;
        }
        expire_ns = now_ns() + 2 * 1000 * 1000;
        timer_mod(t, expire_ns / scales[i] + 1);
        LOOP_UNTIL(fired == 1);
        ASSERT_INT(now_ns(), >=, expire_ns);
        timer_free(t);
    }
}

TEST(timer_not_run_by_nested_aio_poll)
{
    int fired = 0;
    QEMUTimer *t = timer_new_ns(QEMU_CLOCK_REALTIME, timer_cb, &fired);

    timer_mod(t, 0); /* already expired */
    for (int i = 0; i < 5; i++) {
        aio_poll(qemu_get_aio_context(), false);
    }
    ASSERT_EQ(fired, 0);
    main_loop_wait(true);
    ASSERT_EQ(fired, 1);
    timer_free(t);
}

static void poke_timer(void *opaque)
{
    timer_mod_ns(opaque, now_ns());
}

TEST(timer_armed_from_thread_wakes_loop)
{
    int fired = 0;
    QEMUTimer *t = timer_new_ns(QEMU_CLOCK_REALTIME, timer_cb, &fired);
    Poker p = { .target = main_tid, .poke = poke_timer, .opaque = t };
    pthread_t th;

    loop_drain();
    th = test_thread_start(poker_thread, &p);
    LOOP_UNTIL(__atomic_load_n(&fired, __ATOMIC_SEQ_CST) == 1);
    test_thread_join(th);
    timer_free(t);
}

/* ---- polling callbacks ------------------------------------------------------ */

typedef struct PollData {
    int calls;
    int ret;
    PollingFunc *del_func;
    void *del_opaque;
} PollData;

static int poll_cb(void *opaque)
{
    PollData *d = opaque;

    d->calls++;
    if (d->del_func) {
        qemu_del_polling_cb(d->del_func, d->del_opaque);
        d->del_func = NULL;
    }
    return d->ret;
}

TEST(polling_callbacks)
{
    PollData a = { .ret = 1 };
    PollData b = { .ret = 0 };

    loop_drain();
    ASSERT_EQ(qemu_add_polling_cb(poll_cb, &a), 0);
    /* Returning 1 makes a blocking iteration return with nothing to do. */
    for (int i = 0; i < 5; i++) {
        main_loop_wait(false);
    }
    ASSERT_EQ(a.calls, 5);

    /* Two registrations of one pair: both called; a del removes one. */
    ASSERT_EQ(qemu_add_polling_cb(poll_cb, &b), 0);
    ASSERT_EQ(qemu_add_polling_cb(poll_cb, &b), 0);
    main_loop_wait(false);
    ASSERT_EQ(a.calls, 6);
    ASSERT_EQ(b.calls, 2);
    qemu_del_polling_cb(poll_cb, &b);
    main_loop_wait(false);
    ASSERT_EQ(a.calls, 7);
    ASSERT_EQ(b.calls, 3);
    qemu_del_polling_cb(poll_cb, &b);
    main_loop_wait(false);
    ASSERT_EQ(a.calls, 8);
    ASSERT_EQ(b.calls, 3);

    /* A callback deleting a later one: that one is not called this round. */
    ASSERT_EQ(qemu_add_polling_cb(poll_cb, &b), 0);
    a.del_func = poll_cb;
    a.del_opaque = &b;
    main_loop_wait(false);
    ASSERT_EQ(a.calls, 9);
    ASSERT_EQ(b.calls, 3);

    /* Deleting itself. */
    a.del_func = poll_cb;
    a.del_opaque = &a;
    main_loop_wait(false);
    ASSERT_EQ(a.calls, 10);
    loop_drain();
    ASSERT_EQ(a.calls, 10);
    qemu_del_polling_cb(poll_cb, &a); /* not registered: nothing happens */
}

/* ---- child watch ------------------------------------------------------------- */

/* Is @pid an unreaped child (running or zombie)?  Reaps nothing. */
static bool child_exists(pid_t pid)
{
    siginfo_t info;

    memset(&info, 0, sizeof(info));
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/* Wait until @pid is a zombie, without reaping it. */
static void wait_zombie(pid_t pid)
{
    siginfo_t info;

    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) < 0) {
        if (errno != EINTR) {
            TEST_FAIL_("waitid(%d): %s", (int)pid, strerror(errno));
        }
    }
}

/* A child that exits with 7, after reading EOF from @wait_fd if >= 0. */
static pid_t fork_child(int wait_fd, int close_fd)
{
    pid_t pid;
    char c;

    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        TEST_FAIL_("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        if (close_fd >= 0) {
            close(close_fd); /* our copy of the write end would keep it open */
        }
        if (wait_fd >= 0) {
            while (read(wait_fd, &c, 1) < 0 && errno == EINTR) {
                continue;
            }
        }
        _exit(7);
    }
    return pid;
}

TEST(child_watch_exited_before_watch)
{
    for (int i = 0; i < 5; i++) {
        pid_t pid = fork_child(-1, -1);

        wait_zombie(pid);
        ASSERT_EQ(qemu_add_child_watch(pid), 0);
        LOOP_UNTIL(!child_exists(pid));
    }
}

TEST(child_watch_exits_later)
{
    int fds[2];
    pid_t pids[4];

    /* Blocking, so that the children wait in read(). */
    if (pipe2(fds, O_CLOEXEC) < 0) {
        TEST_FAIL_("pipe2: %s", strerror(errno));
    }
    for (size_t i = 0; i < ARRAY_SIZE(pids); i++) {
        pids[i] = fork_child(fds[0], fds[1]);
        ASSERT_EQ(qemu_add_child_watch(pids[i]), 0);
        ASSERT_EQ(qemu_add_child_watch(pids[i]), 1); /* already watched */
    }
    loop_drain();
    for (size_t i = 0; i < ARRAY_SIZE(pids); i++) {
        ASSERT_TRUE(child_exists(pids[i]));
    }
    close(fds[1]); /* every child reads EOF and exits */
    for (size_t i = 0; i < ARRAY_SIZE(pids); i++) {
        LOOP_UNTIL(!child_exists(pids[i]));
    }
    close(fds[0]);
}

TEST(child_watch_leaves_other_children)
{
    pid_t other = fork_child(-1, -1);
    pid_t watched = fork_child(-1, -1);
    int status;

    wait_zombie(other);
    ASSERT_EQ(qemu_add_child_watch(watched), 0);
    LOOP_UNTIL(!child_exists(watched));
    loop_drain();
    ASSERT_TRUE(child_exists(other));
    ASSERT_EQ(waitpid(other, &status, 0), other);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 7);
}

TEST(child_watch_bad_input)
{
    ASSERT_EQ(qemu_add_child_watch(0), -EINVAL);
    ASSERT_EQ(qemu_add_child_watch(-5), -EINVAL);
    ASSERT_EQ(qemu_add_child_watch(getpid()), -ECHILD);
    ASSERT_EQ(qemu_add_child_watch(1), -ECHILD);
}

/* ---- signals ------------------------------------------------------------------ */

static int sig_count;               /* main thread only */
static pid_t sig_tid;
static siginfo_t sig_info;

static void plain_handler(int sig)
{
    (void)sig;
    sig_count++;
    sig_tid = gettid();
}

static void info_handler(int sig, siginfo_t *info, void *uc)
{
    (void)sig;
    (void)uc;
    sig_count++;
    sig_tid = gettid();
    sig_info = *info;
}

static void install(int sig, bool with_info)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    if (with_info) {
        sa.sa_sigaction = info_handler;
        sa.sa_flags = SA_SIGINFO;
    } else {
        sa.sa_handler = plain_handler;
    }
    ASSERT_EQ(sigaction(sig, &sa, NULL), 0);
}

static void restore_default(int sig)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    ASSERT_EQ(sigaction(sig, &sa, NULL), 0);
}

TEST(signals_blocked_in_main_thread)
{
    sigset_t cur;

    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, NULL, &cur), 0);
    ASSERT_TRUE(sigismember(&cur, SIGIO));
    ASSERT_TRUE(sigismember(&cur, SIGALRM));
    ASSERT_TRUE(sigismember(&cur, SIGBUS));
    ASSERT_FALSE(sigismember(&cur, SIGINT));
    ASSERT_FALSE(sigismember(&cur, SIGTERM));
}

TEST(signal_plain_handler_runs_in_main_loop)
{
    install(SIGIO, false);
    sig_count = 0;
    for (int i = 1; i <= 10; i++) {
        ASSERT_EQ(kill(getpid(), SIGIO), 0);
        LOOP_UNTIL(sig_count == i);
        ASSERT_EQ(sig_tid, main_tid);
    }
    loop_drain();
    ASSERT_EQ(sig_count, 10);
    restore_default(SIGIO);
}

TEST(signal_siginfo_handler)
{
    union sigval v = { .sival_int = 42 };

    install(SIGALRM, true);
    sig_count = 0;
    ASSERT_EQ(kill(getpid(), SIGALRM), 0);
    LOOP_UNTIL(sig_count == 1);
    ASSERT_EQ(sig_tid, main_tid);
    ASSERT_EQ(sig_info.si_signo, SIGALRM);
    ASSERT_EQ(sig_info.si_code, SI_USER);
    ASSERT_EQ(sig_info.si_pid, getpid());
    ASSERT_EQ(sig_info.si_uid, getuid());

    install(SIGBUS, true);
    ASSERT_EQ(sigqueue(getpid(), SIGBUS, v), 0);
    LOOP_UNTIL(sig_count == 2);
    ASSERT_EQ(sig_info.si_signo, SIGBUS);
    ASSERT_EQ(sig_info.si_code, SI_QUEUE);
    ASSERT_EQ(sig_info.si_value.sival_int, 42);
    ASSERT_EQ(sig_info.si_pid, getpid());
    restore_default(SIGALRM);
    restore_default(SIGBUS);
}

static void *sigmask_thread(void *arg)
{
    sigset_t *out = arg;

    pthread_sigmask(SIG_BLOCK, NULL, out);
    return NULL;
}

TEST(signal_from_thread_and_ignored)
{
    sigset_t mask;
    pthread_t t;
    struct sigaction sa;

    /* Threads created after init inherit the mask. */
    t = test_thread_start(sigmask_thread, &mask);
    test_thread_join(t);
    ASSERT_TRUE(sigismember(&mask, SIGIO));

    /* SIG_IGN: the signal is consumed, nothing is called. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    ASSERT_EQ(sigaction(SIGIO, &sa, NULL), 0);
    sig_count = 0;
    ASSERT_EQ(kill(getpid(), SIGIO), 0);
    loop_drain();
    ASSERT_EQ(sig_count, 0);

    /* And the next one with a handler is delivered. */
    install(SIGIO, false);
    ASSERT_EQ(kill(getpid(), SIGIO), 0);
    LOOP_UNTIL(sig_count == 1);
    restore_default(SIGIO);
}

/* ---- BQL -------------------------------------------------------------------------- */

static void *bql_probe_thread(void *arg)
{
    bool *out = arg;

    *out = bql_locked();
    return NULL;
}

TEST(bql_basics)
{
    bool other = true;
    pthread_t t;

    ASSERT_FALSE(bql_locked());
    bql_lock();
    ASSERT_TRUE(bql_locked());
    ASSERT_TRUE(qemu_mutex_iothread_locked());
    t = test_thread_start(bql_probe_thread, &other);
    test_thread_join(t);
    ASSERT_FALSE(other); /* per thread */
    bql_unlock();
    ASSERT_FALSE(bql_locked());

    qemu_mutex_lock_iothread();
    ASSERT_TRUE(bql_locked());
    qemu_mutex_unlock_iothread();
    ASSERT_FALSE(qemu_mutex_iothread_locked());
}

static void lock_twice(void *opaque)
{
    (void)opaque;
    bql_lock();
    bql_lock();
}

static void unlock_unheld(void *opaque)
{
    (void)opaque;
    bql_unlock();
}

TEST(bql_misuse_aborts)
{
    test_expect_abort(lock_twice, NULL, "already holds the BQL");
    test_expect_abort(unlock_unheld, NULL, "does not hold the BQL");
}

typedef struct BqlTaker {
    bool go;       /* atomic: main is about to block */
    bool got;      /* atomic */
} BqlTaker;

static void *bql_taker_thread(void *arg)
{
    BqlTaker *b = arg;

    while (!__atomic_load_n(&b->go, __ATOMIC_SEQ_CST)) {
        sched_yield();
    }
    /* Succeeds only because main_loop_wait() dropped the BQL. */
    bql_lock();
    __atomic_store_n(&b->got, true, __ATOMIC_SEQ_CST);
    qemu_notify_event();
    bql_unlock();
    return NULL;
}

TEST(bql_dropped_while_blocking)
{
    BqlTaker b = { false, false };
    BHData d = { 0 };
    pthread_t t;

    bql_lock();
    t = test_thread_start(bql_taker_thread, &b);
    __atomic_store_n(&b.go, true, __ATOMIC_SEQ_CST);
    LOOP_UNTIL(__atomic_load_n(&b.got, __ATOMIC_SEQ_CST));
    ASSERT_TRUE(bql_locked());
    test_thread_join(t);

    /* Callbacks run with the BQL held when the caller held it. */
    d.bh = qemu_bh_new(bh_cb, &d);
    qemu_bh_schedule(d.bh);
    main_loop_wait(false);
    ASSERT_EQ(d.runs, 1);
    ASSERT_TRUE(d.bql_held);
    bql_unlock();

    /* ... and without it when the caller did not. */
    qemu_bh_schedule(d.bh);
    main_loop_wait(false);
    ASSERT_EQ(d.runs, 2);
    ASSERT_FALSE(d.bql_held);
    qemu_bh_delete(d.bh);
    loop_drain();
}

/*
 * A thread holding the BQL is not the main context's home thread (QEMU
 * makes it one; docs/main-loop.md section 5 says why we do not): it sees
 * no current context, and a coroutine it enters in the main context is
 * scheduled into the main thread rather than run on the spot.
 */
typedef struct BqlGuest {
    AioContext *current;
    bool home;
    Coroutine *co;
    pid_t co_tid;
    int co_ran;   /* atomic */
} BqlGuest;

static void coroutine_fn bql_guest_co(void *opaque)
{
    BqlGuest *g = opaque;

    g->co_tid = test_gettid();
    __atomic_store_n(&g->co_ran, 1, __ATOMIC_SEQ_CST);
}

static void *bql_guest_thread(void *arg)
{
    BqlGuest *g = arg;

    bql_lock();
    g->current = qemu_get_current_aio_context();
    g->home = in_aio_context_home_thread(qemu_get_aio_context());
    aio_co_enter(qemu_get_aio_context(), g->co);
    bql_unlock();
    return NULL;
}

TEST(bql_holder_is_not_main_context_home)
{
    BqlGuest g = { 0 };
    pthread_t t;

    g.current = (AioContext *)&g; /* anything but NULL */
    g.co = qemu_coroutine_create(bql_guest_co, &g);
    t = test_thread_start(bql_guest_thread, &g);
    test_thread_join(t);
    ASSERT_NULL(g.current);
    ASSERT_FALSE(g.home);
    ASSERT_TRUE(in_aio_context_home_thread(qemu_get_aio_context()));
    LOOP_UNTIL(__atomic_load_n(&g.co_ran, __ATOMIC_SEQ_CST));
    ASSERT_EQ(g.co_tid, test_gettid());
}

#define BQL_THREADS 4
#define BQL_OPS (TEST_SANITIZED ? 2000 : 20000)

static uint64_t bql_counter;   /* under the BQL */
static int bql_done;           /* atomic */

static void *bql_stress_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < BQL_OPS; i++) {
        bql_lock();
        bql_counter++;
        bql_unlock();
    }
    __atomic_fetch_add(&bql_done, 1, __ATOMIC_SEQ_CST);
    qemu_notify_event();
    return NULL;
}

TEST(bql_stress_with_main_loop)
{
    pthread_t t[BQL_THREADS];
    uint64_t main_ops = 0;

    bql_counter = 0;
    bql_lock();
    for (int i = 0; i < BQL_THREADS; i++) {
        t[i] = test_thread_start(bql_stress_thread, NULL);
    }
    while (__atomic_load_n(&bql_done, __ATOMIC_SEQ_CST) < BQL_THREADS) {
        bql_counter++;
        main_ops++;
        main_loop_wait(false);
    }
    bql_unlock();
    for (int i = 0; i < BQL_THREADS; i++) {
        test_thread_join(t[i]);
    }
    ASSERT_UINT(bql_counter, ==, (uint64_t)BQL_THREADS * BQL_OPS + main_ops);
}

/* ---- misuse after init ------------------------------------------------------------- */

static void *loop_from_thread(void *arg)
{
    (void)arg;
    main_loop_wait(true);
    return NULL;
}

static void call_loop_from_thread(void *opaque)
{
    pthread_t t;

    (void)opaque;
    t = test_thread_start(loop_from_thread, NULL);
    test_thread_join(t);
}

static void bad_fd(void *opaque)
{
    (void)opaque;
    qemu_set_fd_handler(-1, noop_cb, NULL, NULL);
}

TEST(misuse_aborts)
{
    /* TSan refuses to start threads in the child of a threaded fork. */
    if (!TEST_TSAN) {
        test_expect_abort(call_loop_from_thread, NULL,
                          "main_loop_wait: called from thread");
    }
    test_expect_abort(bad_fd, NULL, "qemu_set_fd_handler: invalid fd -1");
}

static const TestCase cases[] = {
    T(init_twice_fails),
    T(contexts),
    T(bh_new_runs_in_main_loop),
    T(notify_event_wakes_blocked_loop),
    T(fd_handler_runs_only_in_main_loop),
    T(aio_fd_handler_runs_in_aio_poll),
    T(event_notifier_handlers),
    T(timer_new_runs_in_main_loop),
    T(timer_not_run_by_nested_aio_poll),
    T(timer_armed_from_thread_wakes_loop),
    T(polling_callbacks),
    T(child_watch_exited_before_watch),
    T(child_watch_exits_later),
    T(child_watch_leaves_other_children),
    T(child_watch_bad_input),
    T(signals_blocked_in_main_thread),
    T(signal_plain_handler_runs_in_main_loop),
    T(signal_siginfo_handler),
    T(signal_from_thread_and_ignored),
    T(bql_basics),
    T(bql_misuse_aborts),
    T(bql_dropped_while_blocking),
    T(bql_holder_is_not_main_context_home),
    T(bql_stress_with_main_loop),
    /* Last: with epoll, it switches the iohandler context to poll. */
    T(fd_handler_on_regular_file),
    T(misuse_aborts),
};

int main(int argc, char **argv)
{
    Error *err = NULL;
    pthread_t wd;

    before_init_checks();
    if (qemu_init_main_loop(&err) < 0) {
        const char *forced = getenv("AIOLOOP_FDMON");

        if (forced && *forced) {
            test_skip(error_get_pretty(err));
        }
        TEST_FAIL_("qemu_init_main_loop: %s", error_get_pretty(err));
    }
    printf("# fdmon: %s\n", aioloop_context_fdmon_name(qemu_get_aio_context()));
    main_tid = gettid();
    /* Created after init: the watchdog thread has the signals blocked. */
    wd = test_thread_start(watchdog_thread, NULL);
    pthread_detach(wd);
    return test_run_all(argc, argv, cases, ARRAY_SIZE(cases));
}
