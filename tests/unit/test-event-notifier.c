/*
 * EventNotifier: set/clear semantics, fd properties and lifetime, the pipe
 * fallback, and wake-ups across threads.  Every semantic test runs once on
 * eventfd and once on the pipe (AIOLOOP_EVENTFD=0).
 */
#define _GNU_SOURCE

#include <aioloop/event-notifier.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "test.h"

typedef enum { MODE_EVENTFD, MODE_PIPE } Mode;

static const char *mode_name(Mode m)
{
    return m == MODE_PIPE ? "pipe" : "eventfd";
}

static void set_mode(Mode m)
{
    if (m == MODE_PIPE) {
        ASSERT_EQ(setenv("AIOLOOP_EVENTFD", "0", 1), 0);
    } else {
        ASSERT_EQ(unsetenv("AIOLOOP_EVENTFD"), 0);
    }
}

static void init_in_mode(EventNotifier *e, Mode m, int active)
{
    set_mode(m);
    ASSERT_EQ(event_notifier_init(e, active), 0);
    set_mode(MODE_EVENTFD);
    ASSERT_TRUE(e->initialized);
    if (m == MODE_PIPE) {
        ASSERT_NE(event_notifier_get_fd(e), event_notifier_get_wfd(e));
    } else {
        ASSERT_EQ(event_notifier_get_fd(e), event_notifier_get_wfd(e));
    }
}

/* What the kernel says the fd is: "anon_inode:[eventfd]", "pipe:[123]". */
static void fd_target(int fd, char *buf, size_t size)
{
    char path[64];
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    n = readlink(path, buf, size - 1);
    ASSERT_INT(n, >, 0);
    buf[n] = '\0';
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    ASSERT_TRUE(d != NULL);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Non-blocking readability check, independent of the notifier's code. */
static bool readable(const EventNotifier *e)
{
    struct pollfd pfd = { .fd = event_notifier_get_fd(e), .events = POLLIN };
    int r;

    do {
        r = poll(&pfd, 1, 0);
    } while (r < 0 && errno == EINTR);
    ASSERT_INT(r, >=, 0);
    return r == 1 && (pfd.revents & POLLIN);
}

static bool fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

/* ---- semantics, per backend ---- */

static void check_set_and_clear(Mode m)
{
    EventNotifier e;

    init_in_mode(&e, m, 0);
    ASSERT_FALSE(readable(&e));
    ASSERT_EQ(event_notifier_test_and_clear(&e), 0);

    ASSERT_EQ(event_notifier_set(&e), 0);
    ASSERT_TRUE(readable(&e));
    ASSERT_EQ(event_notifier_test_and_clear(&e), 1);
    ASSERT_FALSE(readable(&e));
    ASSERT_EQ(event_notifier_test_and_clear(&e), 0);

    /* A set after a clear is a new event. */
    ASSERT_EQ(event_notifier_set(&e), 0);
    ASSERT_EQ(event_notifier_test_and_clear(&e), 1);
    event_notifier_cleanup(&e);
}

TEST(set_and_clear_eventfd)
{
    check_set_and_clear(MODE_EVENTFD);
}

TEST(set_and_clear_pipe)
{
    check_set_and_clear(MODE_PIPE);
}

static void check_many_sets_one_clear(Mode m, int sets)
{
    EventNotifier e;

    init_in_mode(&e, m, 0);
    for (int i = 0; i < sets; i++) {
        ASSERT_EQ(event_notifier_set(&e), 0);
    }
    ASSERT_EQ(event_notifier_test_and_clear(&e), 1);
    ASSERT_FALSE(readable(&e));
    ASSERT_EQ(event_notifier_test_and_clear(&e), 0);
    event_notifier_cleanup(&e);
}

TEST(many_sets_coalesce_eventfd)
{
    check_many_sets_one_clear(MODE_EVENTFD, 1000);
}

TEST(many_sets_coalesce_pipe)
{
    check_many_sets_one_clear(MODE_PIPE, 1000);
}

TEST(full_pipe_set_succeeds_and_clear_drains_it)
{
    int cap;
    EventNotifier e;

    init_in_mode(&e, MODE_PIPE, 0);
    cap = fcntl(event_notifier_get_wfd(&e), F_GETPIPE_SZ);
    ASSERT_INT(cap, >, 0);
    event_notifier_cleanup(&e);

    /* Past capacity the writes fail with EAGAIN, which counts as success. */
    check_many_sets_one_clear(MODE_PIPE, cap + 1000);
}

static void check_active_init(Mode m)
{
    EventNotifier e;

    init_in_mode(&e, m, 1);
    ASSERT_TRUE(readable(&e));
    ASSERT_EQ(event_notifier_test_and_clear(&e), 1);
    ASSERT_EQ(event_notifier_test_and_clear(&e), 0);
    event_notifier_cleanup(&e);
}

TEST(active_init_eventfd)
{
    check_active_init(MODE_EVENTFD);
}

TEST(active_init_pipe)
{
    check_active_init(MODE_PIPE);
}

static void check_fd_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);

    ASSERT_INT(fl, >=, 0);
    ASSERT_INT(fdfl, >=, 0);
    ASSERT_TRUE(fl & O_NONBLOCK);
    ASSERT_TRUE(fdfl & FD_CLOEXEC);
}

TEST(fds_are_nonblocking_and_cloexec)
{
    for (Mode m = MODE_EVENTFD; m <= MODE_PIPE; m++) {
        EventNotifier e;

        printf("#   %s\n", mode_name(m));
        init_in_mode(&e, m, 0);
        check_fd_flags(event_notifier_get_fd(&e));
        check_fd_flags(event_notifier_get_wfd(&e));
        event_notifier_cleanup(&e);
    }
}

TEST(default_backend_is_eventfd)
{
    EventNotifier e;
    char target[256];

    init_in_mode(&e, MODE_EVENTFD, 0);
    fd_target(event_notifier_get_fd(&e), target, sizeof(target));
    ASSERT_STR_EQ(target, "anon_inode:[eventfd]");
    event_notifier_cleanup(&e);
}

TEST(env_selects_pipe_fallback)
{
    EventNotifier e;
    char rt[256], wt[256];

    init_in_mode(&e, MODE_PIPE, 0);
    fd_target(event_notifier_get_fd(&e), rt, sizeof(rt));
    fd_target(event_notifier_get_wfd(&e), wt, sizeof(wt));
    /* Two ends of the same pipe. */
    ASSERT_TRUE(strncmp(rt, "pipe:", 5) == 0);
    ASSERT_STR_EQ(rt, wt);
    ASSERT_EQ(fcntl(event_notifier_get_fd(&e), F_GETFL) & O_ACCMODE, O_RDONLY);
    ASSERT_EQ(fcntl(event_notifier_get_wfd(&e), F_GETFL) & O_ACCMODE, O_WRONLY);
    event_notifier_cleanup(&e);
}

/*
 * A real eventfd failure, not the environment switch: a seccomp filter in a
 * child makes eventfd2 fail with ENOSYS, as on a kernel without eventfd.
 */
static int child_without_eventfd(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_eventfd2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = sizeof(filter) / sizeof(filter[0]),
        .filter = filter,
    };
    EventNotifier e;

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
        return 77;
    }
    if (eventfd(0, EFD_CLOEXEC) >= 0 || errno != ENOSYS) {
        return 2;
    }
    if (event_notifier_init(&e, 1) != 0 ||
        event_notifier_get_fd(&e) == event_notifier_get_wfd(&e) ||
        event_notifier_test_and_clear(&e) != 1 ||
        event_notifier_set(&e) != 0 ||
        event_notifier_test_and_clear(&e) != 1 ||
        event_notifier_test_and_clear(&e) != 0) {
        return 3;
    }
    event_notifier_cleanup(&e);
    return 0;
}

TEST(eventfd_failure_falls_back_to_pipe)
{
    int status;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    ASSERT_INT(pid, >=, 0);
    if (pid == 0) {
        _exit(child_without_eventfd());
    }
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        printf("#   seccomp unavailable, fallback checked via env only\n");
        return;
    }
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

/* ---- threads ---- */

typedef struct {
    EventNotifier *e;
    int ready;
    pid_t tid;
    int poll_ret;
    short revents;
} Waiter;

static void *waiter_fn(void *opaque)
{
    Waiter *w = opaque;
    struct pollfd pfd = {
        .fd = event_notifier_get_fd(w->e),
        .events = POLLIN,
    };

    w->tid = gettid();
    /* Pairs with the acquire load in wait_until_blocked(): tid is set. */
    __atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
    do {
        w->poll_ret = poll(&pfd, 1, 10000);
    } while (w->poll_ret < 0 && errno == EINTR);
    w->revents = pfd.revents;
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Wait until the waiter sleeps in the kernel, so that the set really has
 * to wake a blocked poll.  The state comes from /proc; if it is never
 * seen the test still checks the wake-up, just less strictly.
 */
static void wait_until_blocked(Waiter *w)
{
    char path[64], buf[512];
    double deadline;

    while (!__atomic_load_n(&w->ready, __ATOMIC_ACQUIRE)) {
        sched_yield();
    }
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)w->tid);
    deadline = now_s() + 5;
    while (now_s() < deadline) {
        FILE *f = fopen(path, "r");
        char *paren;
        bool sleeping = false;

        if (!f) {
            return;
        }
        if (fgets(buf, sizeof(buf), f) && (paren = strrchr(buf, ')'))) {
            sleeping = paren[1] == ' ' && paren[2] == 'S';
        }
        fclose(f);
        if (sleeping) {
            return;
        }
        sched_yield();
    }
}

static void check_cross_thread_wakeup(Mode m)
{
    EventNotifier e;
    Waiter w = { .e = &e };
    pthread_t th;

    init_in_mode(&e, m, 0);
    ASSERT_EQ(pthread_create(&th, NULL, waiter_fn, &w), 0);
    wait_until_blocked(&w);
    ASSERT_EQ(event_notifier_set(&e), 0);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_EQ(w.poll_ret, 1);
    ASSERT_TRUE(w.revents & POLLIN);
    ASSERT_EQ(event_notifier_test_and_clear(&e), 1);
    event_notifier_cleanup(&e);
}

TEST(cross_thread_set_wakes_poll_eventfd)
{
    check_cross_thread_wakeup(MODE_EVENTFD);
}

TEST(cross_thread_set_wakes_poll_pipe)
{
    check_cross_thread_wakeup(MODE_PIPE);
}

enum { PING_PONG_ROUNDS = 20000 };

typedef struct {
    EventNotifier ping, pong;
    int rounds_seen;
    int lost;
} PingPong;

static void wait_readable(EventNotifier *e)
{
    struct pollfd pfd = { .fd = event_notifier_get_fd(e), .events = POLLIN };
    int r;

    do {
        r = poll(&pfd, 1, 10000);
    } while (r < 0 && errno == EINTR);
    if (r != 1) {
        TEST_FAIL_("poll returned %d: a wake-up was lost", r);
    }
}

static void *ponger(void *opaque)
{
    PingPong *pp = opaque;

    for (int i = 0; i < PING_PONG_ROUNDS; i++) {
        wait_readable(&pp->ping);
        if (event_notifier_test_and_clear(&pp->ping) != 1) {
            pp->lost++;
        }
        pp->rounds_seen++;
        event_notifier_set(&pp->pong);
    }
    return NULL;
}

/*
 * Strict alternation between two threads: each round needs exactly one
 * set to be seen by exactly one clear, so a lost or duplicated event
 * shows up as a hang (caught by the poll timeout) or a bad count.
 */
static void check_ping_pong(Mode m)
{
    PingPong pp = { .rounds_seen = 0 };
    pthread_t th;

    init_in_mode(&pp.ping, m, 0);
    init_in_mode(&pp.pong, m, 0);
    ASSERT_EQ(pthread_create(&th, NULL, ponger, &pp), 0);
    for (int i = 0; i < PING_PONG_ROUNDS; i++) {
        ASSERT_EQ(event_notifier_set(&pp.ping), 0);
        wait_readable(&pp.pong);
        ASSERT_EQ(event_notifier_test_and_clear(&pp.pong), 1);
    }
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_EQ(pp.rounds_seen, PING_PONG_ROUNDS);
    ASSERT_EQ(pp.lost, 0);
    ASSERT_EQ(event_notifier_test_and_clear(&pp.ping), 0);
    ASSERT_EQ(event_notifier_test_and_clear(&pp.pong), 0);
    event_notifier_cleanup(&pp.ping);
    event_notifier_cleanup(&pp.pong);
}

TEST(ping_pong_eventfd)
{
    check_ping_pong(MODE_EVENTFD);
}

TEST(ping_pong_pipe)
{
    check_ping_pong(MODE_PIPE);
}

/* ---- lifetime ---- */

TEST(init_fd_wraps_and_owns_fd)
{
    EventNotifier e;
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    ASSERT_INT(fd, >=, 0);
    event_notifier_init_fd(&e, fd);
    ASSERT_TRUE(e.initialized);
    ASSERT_EQ(event_notifier_get_fd(&e), fd);
    ASSERT_EQ(event_notifier_get_wfd(&e), fd);
    ASSERT_EQ(event_notifier_test_and_clear(&e), 0);
    ASSERT_EQ(event_notifier_set(&e), 0);
    ASSERT_EQ(event_notifier_set(&e), 0);
    ASSERT_EQ(event_notifier_test_and_clear(&e), 1);
    ASSERT_EQ(event_notifier_test_and_clear(&e), 0);
    event_notifier_cleanup(&e);
    ASSERT_FALSE(fd_is_open(fd));
    event_notifier_init_fd(NULL, fd);
}

TEST(cleanup_is_idempotent)
{
    for (Mode m = MODE_EVENTFD; m <= MODE_PIPE; m++) {
        EventNotifier e;
        int rfd, wfd;

        printf("#   %s\n", mode_name(m));
        init_in_mode(&e, m, 1);
        rfd = event_notifier_get_fd(&e);
        wfd = event_notifier_get_wfd(&e);
        event_notifier_cleanup(&e);
        ASSERT_FALSE(fd_is_open(rfd));
        ASSERT_FALSE(fd_is_open(wfd));
        ASSERT_FALSE(e.initialized);
        ASSERT_EQ(event_notifier_get_fd(&e), -1);
        ASSERT_EQ(event_notifier_get_wfd(&e), -1);
        ASSERT_EQ(event_notifier_set(&e), -EBADF);
        ASSERT_EQ(event_notifier_test_and_clear(&e), 0);

        /*
         * The second cleanup must not close anything: an fd opened in the
         * meantime may have reused the number.
         */
        int other = eventfd(0, EFD_CLOEXEC);
        ASSERT_INT(other, >=, 0);
        event_notifier_cleanup(&e);
        ASSERT_TRUE(fd_is_open(other));
        close(other);
    }
}

TEST(zeroed_and_null_notifiers)
{
    EventNotifier zero = { 0 };
    bool stdin_open = fd_is_open(0);

    /* rfd = wfd = 0 but not initialized: stdin must survive. */
    event_notifier_cleanup(&zero);
    event_notifier_cleanup(NULL);
    ASSERT_EQ(fd_is_open(0), stdin_open);
    ASSERT_EQ(event_notifier_test_and_clear(&zero), 0);
    ASSERT_EQ(event_notifier_set(&zero), -EBADF);
    ASSERT_EQ(event_notifier_init(NULL, 0), -EINVAL);
    ASSERT_EQ(event_notifier_set(NULL), -EINVAL);
    ASSERT_EQ(event_notifier_get_fd(NULL), -EINVAL);
    ASSERT_EQ(event_notifier_get_wfd(NULL), -EINVAL);
    ASSERT_EQ(event_notifier_test_and_clear(NULL), 0);
}

TEST(no_fd_leak)
{
    int before = count_fds();

    for (Mode m = MODE_EVENTFD; m <= MODE_PIPE; m++) {
        for (int i = 0; i < 100; i++) {
            EventNotifier e;

            init_in_mode(&e, m, i & 1);
            event_notifier_set(&e);
            event_notifier_test_and_clear(&e);
            event_notifier_cleanup(&e);
        }
    }
    ASSERT_EQ(count_fds(), before);
}

/*
 * Exhaust the fd table in a child: init must fail with -EMFILE, leave the
 * notifier safe to clean up, and not keep the one fd it managed to open.
 */
static int child_fd_exhaustion(void)
{
    struct rlimit rl = { .rlim_cur = 64, .rlim_max = 64 };
    EventNotifier e;
    int last = -1, fd, r;

    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return 77;
    }
    while ((fd = dup(0)) >= 0) {
        last = fd;
    }
    if (errno != EMFILE || last < 0) {
        return 2;
    }
    if (event_notifier_init(&e, 0) != -EMFILE || e.initialized ||
        e.rfd != -1 || e.wfd != -1) {
        return 3;
    }
    event_notifier_cleanup(&e);

    /* One free slot: eventfd fits, a pipe does not and must not leak. */
    close(last);
    r = event_notifier_init(&e, 1);
    if (r != 0 || event_notifier_test_and_clear(&e) != 1) {
        return 4;
    }
    event_notifier_cleanup(&e);
    setenv("AIOLOOP_EVENTFD", "0", 1);
    if (event_notifier_init(&e, 0) != -EMFILE || e.initialized) {
        return 5;
    }
    fd = dup(0);
    if (fd != last) {
        return 6;
    }
    return 0;
}

TEST(init_failure_leaves_nothing_behind)
{
    int status;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    ASSERT_INT(pid, >=, 0);
    if (pid == 0) {
        _exit(child_fd_exhaustion());
    }
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        printf("#   setrlimit(RLIMIT_NOFILE) failed, case not run\n");
        return;
    }
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

RUN_TESTS(T(set_and_clear_eventfd),
          T(set_and_clear_pipe),
          T(many_sets_coalesce_eventfd),
          T(many_sets_coalesce_pipe),
          T(full_pipe_set_succeeds_and_clear_drains_it),
          T(active_init_eventfd),
          T(active_init_pipe),
          T(fds_are_nonblocking_and_cloexec),
          T(default_backend_is_eventfd),
          T(env_selects_pipe_fallback),
          T(eventfd_failure_falls_back_to_pipe),
          T(cross_thread_set_wakes_poll_eventfd),
          T(cross_thread_set_wakes_poll_pipe),
          T(ping_pong_eventfd),
          T(ping_pong_pipe),
          T(init_fd_wraps_and_owns_fd),
          T(cleanup_is_idempotent),
          T(zeroed_and_null_notifiers),
          T(no_fd_leak),
          T(init_failure_leaves_nothing_behind))
