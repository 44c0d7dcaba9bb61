/*
 * qemu_add_child_watch(): reap watched children from the main loop.
 *
 * With pidfd_open() (Linux 5.3+), each watched child gets a pidfd in the
 * iohandler context: it becomes readable when the child exits, also when
 * it had exited (a zombie) before the watch was added, so there is no race
 * to close.  Without it, SIGCHLD is trapped through the main loop's
 * signalfd, and every SIGCHLD (which the kernel coalesces) plus a one-shot
 * BH run after each new watch try waitpid(WNOHANG) on every watched pid.
 * Either way only watched pids are passed to waitpid(), never -1, so other
 * children stay for whoever waits for them.
 *
 * AIOLOOP_NO_PIDFD=1 in the environment forces the SIGCHLD path (tests).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "main-loop-internal.h"
#include "../core/aio-internal.h"

typedef struct ChildWatch {
    pid_t pid;
    int pidfd;                  /* -1 on the SIGCHLD path */
    struct ChildWatch *next;
} ChildWatch;

/* The list; the lock also makes add and reap atomic for one pid. */
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static ChildWatch *watches;
static bool use_pidfd;          /* set once by child_watch_init() */

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

bool child_watch_init(void)
{
    const char *env = getenv("AIOLOOP_NO_PIDFD");
    int fd;

    if (!(env && *env && *env != '0')) {
        fd = pidfd_open_(getpid());
        if (fd >= 0) {
            close(fd);
            use_pidfd = true;
        }
    }
    return !use_pidfd;
}

/* True when @pid is gone: reaped now, or not our child any more. */
static bool try_reap(pid_t pid)
{
    pid_t r;

    do {
        r = waitpid(pid, NULL, WNOHANG);
    } while (r < 0 && errno == EINTR);
    return r != 0;
}

static void unlink_watch(ChildWatch *rec)
{
    ChildWatch **p;

    for (p = &watches; *p; p = &(*p)->next) {
        if (*p == rec) {
            *p = rec->next;
            return;
        }
    }
}

static void pidfd_ready(void *opaque)
{
    ChildWatch *rec = opaque;
    bool gone;

    pthread_mutex_lock(&watch_lock);
    gone = try_reap(rec->pid);
    if (gone) {
        unlink_watch(rec);
    }
    pthread_mutex_unlock(&watch_lock);
    if (!gone) {
        return; /* not exited after all: keep watching */
    }
    /* Remove before close: epoll must not keep a stale registration. */
    aio_set_fd_handler(main_loop_iohandler_ctx("qemu_add_child_watch"),
                       rec->pidfd, NULL, NULL, NULL, NULL, NULL);
    close(rec->pidfd);
    free(rec);
}

void child_watch_sigchld(void)
{
    ChildWatch **p;

    if (use_pidfd) {
        return;
    }
    pthread_mutex_lock(&watch_lock);
    p = &watches;
    while (*p) {
        ChildWatch *rec = *p;

        if (try_reap(rec->pid)) {
            *p = rec->next;
            free(rec);
        } else {
            p = &rec->next;
        }
    }
    pthread_mutex_unlock(&watch_lock);
}

static void sigchld_bh(void *opaque)
{
    (void)opaque;
    child_watch_sigchld();
}

int qemu_add_child_watch(pid_t pid)
{
    AioContext *ctx = main_loop_iohandler_ctx("qemu_add_child_watch");
    ChildWatch *rec;
    siginfo_t info;
    int ret;

    if (pid <= 0) {
        return -EINVAL;
    }
    pthread_mutex_lock(&watch_lock);
    for (rec = watches; rec; rec = rec->next) {
        if (rec->pid == pid) {
            pthread_mutex_unlock(&watch_lock);
            return 1;
        }
    }
    /* WNOWAIT: only ask whether @pid is our child, reap nothing. */
    do {
        ret = waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) {
        ret = -errno;
        pthread_mutex_unlock(&watch_lock);
        return ret;
    }
    rec = calloc(1, sizeof(*rec));
    if (!rec) {
        pthread_mutex_unlock(&watch_lock);
        return -ENOMEM;
    }
    rec->pid = pid;
    rec->pidfd = -1;
    if (use_pidfd) {
        rec->pidfd = pidfd_open_(pid);
        if (rec->pidfd < 0) {
            ret = -errno;
            pthread_mutex_unlock(&watch_lock);
            free(rec);
            return ret;
        }
    }
    rec->next = watches;
    watches = rec;
    if (use_pidfd) {
        /*
         * Under the lock, so pidfd_ready() cannot free @rec before it is
         * registered.  aio_set_fd_handler() notifies the loop.
         */
        aio_set_fd_handler(ctx, rec->pidfd, pidfd_ready, NULL, NULL, NULL,
                           rec);
    }
    pthread_mutex_unlock(&watch_lock);
    if (!use_pidfd) {
        /* Its SIGCHLD may have been consumed before the watch existed. */
        aio_bh_schedule_oneshot(ctx, sigchld_bh, NULL);
    }
    return 0;
}
