/*
 * UNDER_VALGRIND(): whether the program runs under valgrind, when
 * valgrind/valgrind.h was there at build time (false otherwise).  For the
 * automatic choices that valgrind cannot follow: it lets no other thread
 * run while one waits in io_uring_enter(), and it does not see the kernel
 * write the io_uring and linux-aio completion rings or io_uring's read
 * buffers.
 */
#ifndef AIOLOOP_UNDER_VALGRIND_H
#define AIOLOOP_UNDER_VALGRIND_H

#include <stdbool.h>

#include "aioloop-config.h"

#if CONFIG_VALGRIND_H
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#define UNDER_VALGRIND() false
#endif

#endif
