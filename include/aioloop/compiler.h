/*
 * Compiler helpers shared by every public aioloop header.
 */
#ifndef AIOLOOP_COMPILER_H
#define AIOLOOP_COMPILER_H

/* Marks a declaration as part of the exported ABI; everything else is hidden. */
#if defined(__GNUC__)
#define AIOLOOP_API __attribute__((visibility("default")))
#else
#define AIOLOOP_API
#endif

#ifndef xstringify
#define xstringify(s) #s
#endif
#ifndef stringify
#define stringify(s) xstringify(s)
#endif

/*
 * QEMU's static-analysis annotations.  coroutine_fn marks functions that may
 * only be called from coroutine context; no_coroutine_fn the opposite.  They
 * have no code-generation effect.
 */
#ifndef coroutine_fn
#define coroutine_fn
#endif
#ifndef no_coroutine_fn
#define no_coroutine_fn
#endif
#ifndef coroutine_mixed_fn
#define coroutine_mixed_fn
#endif

#ifdef __cplusplus
#define AIOLOOP_BEGIN_DECLS extern "C" {
#define AIOLOOP_END_DECLS }
#else
#define AIOLOOP_BEGIN_DECLS
#define AIOLOOP_END_DECLS
#endif

#endif
