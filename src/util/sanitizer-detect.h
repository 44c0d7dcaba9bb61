/*
 * AIOLOOP_ASAN / AIOLOOP_TSAN: which sanitizer the code is built with.
 * Macros only, so that assembler sources can include it too.
 *
 * gcc says so with __SANITIZE_*__, clang with __has_feature().
 */
#ifndef AIOLOOP_SANITIZER_DETECT_H
#define AIOLOOP_SANITIZER_DETECT_H

#if defined(__SANITIZE_ADDRESS__)
#define AIOLOOP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AIOLOOP_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define AIOLOOP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AIOLOOP_TSAN 1
#endif
#endif

#endif
