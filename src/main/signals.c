/*
 * Signals delivered through the main loop (QEMU's qemu_signal_init() and
 * sigfd_handler()).
 *
 * SIGIO, SIGALRM and SIGBUS are blocked in the thread that initialises the
 * main loop (threads created later inherit the mask) and read from a
 * signalfd that the iohandler context watches.  For each record, the
 * handler installed with sigaction() *at that moment* is called by hand,
 * in the main loop thread, so handlers need not be async-signal-safe.
 * A handler installed with SA_SIGINFO gets a siginfo_t rebuilt from the
 * signalfd record, with the fields POSIX defines for the signal and code.
 * SIG_DFL and SIG_IGN do nothing (the signal is consumed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "main-loop-internal.h"

static int sigfd = -1;
static sigset_t trapped;

static void sigaction_invoke(const struct sigaction *action,
                             const struct signalfd_siginfo *info)
{
    siginfo_t si;

    memset(&si, 0, sizeof(si));
    si.si_signo = (int)info->ssi_signo;
    si.si_errno = info->ssi_errno;
    si.si_code = info->ssi_code;

    /*
     * siginfo_t is a union: fill only the members valid for this signal
     * and code.  SI_USER, SI_QUEUE and the other codes <= 0 come from
     * kill()/sigqueue()/tgkill(); positive codes are the kernel's.
     */
    if (info->ssi_code == SI_USER || info->ssi_code == SI_QUEUE ||
        info->ssi_code <= 0) {
        si.si_pid = (pid_t)info->ssi_pid;
        si.si_uid = (uid_t)info->ssi_uid;
        if (info->ssi_code == SI_QUEUE) {
            si.si_value.sival_ptr = (void *)(uintptr_t)info->ssi_ptr;
        }
    } else if (info->ssi_signo == SIGILL || info->ssi_signo == SIGFPE ||
               info->ssi_signo == SIGSEGV || info->ssi_signo == SIGBUS) {
        si.si_addr = (void *)(uintptr_t)info->ssi_addr;
    } else if (info->ssi_signo == SIGCHLD) {
        si.si_pid = (pid_t)info->ssi_pid;
        si.si_uid = (uid_t)info->ssi_uid;
        si.si_status = info->ssi_status;
    } else if (info->ssi_signo == SIGIO) {
        si.si_band = info->ssi_band;
        si.si_fd = info->ssi_fd;
    }
    action->sa_sigaction((int)info->ssi_signo, &si, NULL);
}

static void sigfd_handler(void *opaque)
{
    struct signalfd_siginfo info;
    struct sigaction action;
    ssize_t len;

    (void)opaque;
    for (;;) {
        len = read(sigfd, &info, sizeof(info));
        if (len < 0 && errno == EINTR) {
            continue;
        }
        if (len != (ssize_t)sizeof(info)) {
            if (len < 0 && errno != EAGAIN) {
                error_report("main loop: read from signalfd: %s",
                             strerror(errno));
            }
            return;
        }
        if (info.ssi_signo == SIGCHLD) {
            child_watch_sigchld();
        }
        sigaction((int)info.ssi_signo, NULL, &action);
        if ((action.sa_flags & SA_SIGINFO) && action.sa_sigaction) {
            sigaction_invoke(&action, &info);
        } else if (!(action.sa_flags & SA_SIGINFO) &&
                   action.sa_handler != SIG_DFL &&
                   action.sa_handler != SIG_IGN) {
            action.sa_handler((int)info.ssi_signo);
        }
    }
}

int main_loop_signals_init(bool with_sigchld, Error **errp)
{
    sigset_t set;
    int ret;

    sigemptyset(&set);
    sigaddset(&set, SIGIO);
    sigaddset(&set, SIGALRM);
    sigaddset(&set, SIGBUS);
    if (with_sigchld) {
        sigaddset(&set, SIGCHLD);
    }
    ret = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (ret) {
        error_setg_errno(errp, ret, "qemu_init_main_loop: cannot block "
                         "SIGIO/SIGALRM/SIGBUS");
        return -ret;
    }
    sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd < 0) {
        ret = -errno;
        /* Leave the mask as it was: nobody would read these signals. */
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        error_setg_errno(errp, -ret, "qemu_init_main_loop: signalfd");
        return ret;
    }
    trapped = set;
    return 0;
}

void main_loop_signals_cleanup(void)
{
    if (sigfd >= 0) {
        close(sigfd);
        sigfd = -1;
        pthread_sigmask(SIG_UNBLOCK, &trapped, NULL);
    }
}

void main_loop_signals_start(AioContext *ctx)
{
    aio_set_fd_handler(ctx, sigfd, sigfd_handler, NULL, NULL, NULL, NULL);
}
