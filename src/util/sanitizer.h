/*
 * Which sanitizer the library is built with, for code that must tell them
 * what they cannot see (memory the library recycles, stacks it switches).
 */
#ifndef AIOLOOP_SANITIZER_H
#define AIOLOOP_SANITIZER_H

#include "sanitizer-detect.h"

#ifdef AIOLOOP_ASAN
#include <sanitizer/asan_interface.h>
/*
 * Memory kept for reuse: an access before it is handed out again trips.
 * LeakSanitizer does not follow pointers stored in poisoned memory, so
 * leave the links of a free list unpoisoned, or it reports the list leaked.
 */
#define AIOLOOP_ASAN_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define AIOLOOP_ASAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define AIOLOOP_ASAN_POISON(p, n) ((void)(p), (void)(n))
#define AIOLOOP_ASAN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#endif
