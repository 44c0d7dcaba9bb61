/*
 * Main loop internals shared by the files of src/main.  Nothing here is exported.
 */
#ifndef AIOLOOP_MAIN_LOOP_INTERNAL_H
#define AIOLOOP_MAIN_LOOP_INTERNAL_H

#include <aioloop/main-loop.h>

#include <stdbool.h>

/*
 * The iohandler context, aborting with a message naming @caller before
 * qemu_init_main_loop().
 */
AioContext *main_loop_iohandler_ctx(const char *caller);

/* signals.c */
/*
 * Block the trapped signals in the calling thread (SIGIO, SIGALRM, SIGBUS,
 * and SIGCHLD if @with_sigchld) and open the signalfd.  0 or -errno.
 */
int main_loop_signals_init(bool with_sigchld, Error **errp);
/* Undo main_loop_signals_init() (qemu_init_main_loop() failed later). */
void main_loop_signals_cleanup(void);
/* Watch the signalfd from @ctx (the iohandler context). */
void main_loop_signals_start(AioContext *ctx);

/* child-watch.c */
/* Decide between pidfds and SIGCHLD; true if SIGCHLD must be trapped. */
bool child_watch_init(void);
/* A SIGCHLD came through the signalfd: reap the watched children. */
void child_watch_sigchld(void);

#endif
