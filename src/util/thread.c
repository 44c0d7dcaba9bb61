/*
 * Starting the library's own threads.
 */
#include "thread.h"

#include <signal.h>

int aio_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    sigset_t set, old;
    int ret;

    sigfillset(&set);
    sigdelset(&set, SIGSEGV);
    sigdelset(&set, SIGFPE);
    sigdelset(&set, SIGILL);
    pthread_sigmask(SIG_SETMASK, &set, &old);
    ret = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ret;
}
