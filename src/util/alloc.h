/*
 * Allocation that cannot fail, for the library's own small objects.
 *
 * Like QEMU's g_malloc0(): running out of memory for a BH, a handler node
 * or a request is not something a caller can recover from, so it aborts
 * with a message naming what was being allocated.
 */
#ifndef AIOLOOP_ALLOC_H
#define AIOLOOP_ALLOC_H

#include <stddef.h>

/* Zeroed @size bytes, or abort with "<who>: out of memory". */
void *aio_alloc0(size_t size, const char *who);

#endif
