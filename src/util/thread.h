/*
 * Starting the library's own threads (IOThreads, thread-pool workers).
 */
#ifndef AIOLOOP_THREAD_H
#define AIOLOOP_THREAD_H

#include <pthread.h>

/*
 * pthread_create() with QEMU's qemu_thread_create() signal mask: the new
 * thread blocks every signal (they are the application's threads' to
 * take) except SIGSEGV, SIGFPE and SIGILL, whose delivery while blocked
 * is undefined (Linux kills the process without running the handler, so
 * a crash in an IOThread would bypass the application's fault handler).
 * Returns 0 or an errno value, as pthread_create().
 */
int aio_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg);

#endif
