/*
 * Error objects and error reporting, with QEMU's API
 * (include/qapi/error.h and include/qemu/error-report.h).
 *
 * How to use it, in short (the conventions are QEMU's):
 *
 * - A function that can fail takes "Error **errp" as its last argument.
 *   On failure it calls error_setg(errp, ...) exactly once and returns a
 *   distinguishable value (false, NULL or -errno).  On success it leaves
 *   *errp alone.
 *
 * - The caller chooses what happens to the error by what it passes:
 *     NULL          the error is discarded;
 *     &local_err    the error is stored in local_err (which must be NULL
 *                   beforehand) and the caller owns it: it must eventually
 *                   pass it to error_free(), error_propagate() or one of
 *                   the error_report_err() family;
 *     &error_abort  the error is a bug: print where it was raised and abort();
 *     &error_fatal  the error ends the program: report it and exit(1).
 *
 * - A function that needs to look at an error it receives from a callee
 *   (to add context with error_prepend() or a hint with error_append_hint())
 *   starts with ERRP_GUARD(); after that, *errp can be dereferenced even
 *   when the caller passed NULL or &error_fatal.
 *
 * Error objects are plain heap objects owned by exactly one pointer; they are
 * not reference counted and not shared between threads unless the caller
 * hands one over.  Every function here may be called from any thread, and
 * every one of them preserves errno, so "error_setg_errno(errp, errno, ...);
 * return -errno;" works.  Allocation failure aborts, as g_malloc() does in
 * QEMU, except in the report functions, which degrade to unformatted output.
 *
 * Reports go to stderr as one line (plus the hint, if any) written under the
 * stdio lock, so concurrent reports do not interleave.  This is the only
 * place the library prints.
 */
#ifndef AIOLOOP_ERROR_H
#define AIOLOOP_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#include <aioloop/compiler.h>

/*
 * printf-style checking for the format arguments.  GCC's gnu_printf accepts
 * every glibc conversion (%m, %'d ...); clang only knows "printf".
 */
#ifndef AIOLOOP_PRINTF
#if defined(__clang__)
#define AIOLOOP_PRINTF(fmt_idx, arg_idx) \
    __attribute__((format(printf, fmt_idx, arg_idx)))
#elif defined(__GNUC__)
#define AIOLOOP_PRINTF(fmt_idx, arg_idx) \
    __attribute__((format(gnu_printf, fmt_idx, arg_idx)))
#else
#define AIOLOOP_PRINTF(fmt_idx, arg_idx)
#endif
#endif

#ifndef AIOLOOP_NORETURN
#if defined(__GNUC__)
#define AIOLOOP_NORETURN __attribute__((noreturn))
#else
#define AIOLOOP_NORETURN
#endif
#endif

AIOLOOP_BEGIN_DECLS

/* Opaque: a message, an optional hint, and where the error was raised. */
typedef struct Error Error;

/*
 * Special error destinations.  Only their addresses matter: pass
 * &error_abort or &error_fatal as errp.  Both variables stay NULL forever;
 * never assign to them.
 */
AIOLOOP_API extern Error *error_abort;
AIOLOOP_API extern Error *error_fatal;

/**
 * error_get_pretty:
 * @err: an error, not NULL
 *
 * Returns: the human-readable message of @err, without the hint.  The string
 * belongs to @err and is valid until @err is freed or modified (for example
 * by error_prepend()).  Any thread may call this on an error it owns.
 */
AIOLOOP_API const char *error_get_pretty(const Error *err);

/**
 * error_setg:
 * @errp: where to store the error: NULL, &error_abort, &error_fatal or the
 *        address of an Error * that is NULL
 * @fmt: printf-style message, without trailing newline or period
 *
 * Create an error with the formatted message and hand it to @errp as
 * described at the top of this file.  The source location of the call is
 * recorded for &error_abort's report.
 *
 * Calling this when *@errp already holds an error is a programming error
 * (an error would be lost or an earlier one overwritten): it aborts with a
 * message saying so.  Any thread; errno is preserved.
 */
#define error_setg(errp, fmt, ...)                                         \
    error_setg_internal((errp), __FILE__, __LINE__, __func__, (fmt),       \
                        ##__VA_ARGS__)

/**
 * error_setg_errno:
 * @errp: as for error_setg()
 * @os_errno: a positive errno value, or 0 for none
 * @fmt: printf-style message
 *
 * Like error_setg(), and append ": " and strerror(@os_errno) to the message
 * when @os_errno is non-zero.  Pass a positive value; callers holding a
 * negative return code write error_setg_errno(errp, -ret, ...).
 */
#define error_setg_errno(errp, os_errno, fmt, ...)                         \
    error_setg_errno_internal((errp), __FILE__, __LINE__, __func__,        \
                              (os_errno), (fmt), ##__VA_ARGS__)

/**
 * error_setg_internal:
 * @errp: destination, as for error_setg()
 * @src: source file of the caller
 * @line: source line of the caller
 * @func: function name of the caller
 * @fmt: printf-style message
 *
 * The implementation of error_setg(); call the macro instead.  @src and
 * @func are stored by pointer and must be string literals (or otherwise
 * outlive the error).
 */
AIOLOOP_API void error_setg_internal(Error **errp, const char *src, int line,
                                     const char *func, const char *fmt, ...)
    AIOLOOP_PRINTF(5, 6);

/**
 * error_setg_errno_internal:
 * @errp: destination, as for error_setg()
 * @src: source file of the caller
 * @line: source line of the caller
 * @func: function name of the caller
 * @os_errno: errno value to describe, or 0
 * @fmt: printf-style message
 *
 * The implementation of error_setg_errno(); call the macro instead.
 */
AIOLOOP_API void error_setg_errno_internal(Error **errp, const char *src,
                                           int line, const char *func,
                                           int os_errno, const char *fmt, ...)
    AIOLOOP_PRINTF(6, 7);

/**
 * error_propagate:
 * @dst_errp: destination, as for error_setg()
 * @local_err: an error the caller owns, or NULL
 *
 * Hand ownership of @local_err to @dst_errp:
 *   - @local_err NULL: nothing happens;
 *   - @dst_errp NULL: @local_err is freed;
 *   - &error_abort / &error_fatal: abort or exit as if the error had been
 *     raised there; &error_abort reports the location of the original
 *     error_setg();
 *   - *@dst_errp NULL: *@dst_errp takes @local_err;
 *   - *@dst_errp already set: the first error wins and @local_err is freed.
 *
 * After the call the caller no longer owns @local_err.  Any thread.
 */
AIOLOOP_API void error_propagate(Error **dst_errp, Error *local_err);

/**
 * error_propagate_prepend:
 * @dst_errp: destination, as for error_propagate()
 * @local_err: an error the caller owns, or NULL
 * @fmt: printf-style prefix
 *
 * Prepend the formatted text to @local_err's message, then
 * error_propagate() it.  The prefix is only formatted when the error is
 * going to be kept (that is, *@dst_errp is NULL).
 */
AIOLOOP_API void error_propagate_prepend(Error **dst_errp, Error *local_err,
                                         const char *fmt, ...)
    AIOLOOP_PRINTF(3, 4);

/**
 * error_prepend:
 * @errp: NULL, or the address of a pointer to an existing error
 * @fmt: printf-style prefix, usually ending in ": "
 *
 * Prepend the formatted text to the message of *@errp, to add context as an
 * error travels up the stack.  Does nothing when @errp is NULL.  Use it
 * after ERRP_GUARD() so that callers passing NULL or &error_fatal still get
 * the context.  Calling it when *@errp is NULL (including with @errp being
 * &error_abort or &error_fatal) is a programming error and aborts.
 */
AIOLOOP_API void error_prepend(Error *const *errp, const char *fmt, ...)
    AIOLOOP_PRINTF(2, 3);

/**
 * error_vprepend:
 * @errp: as for error_prepend()
 * @fmt: printf-style prefix
 * @ap: arguments for @fmt
 *
 * error_prepend() with a va_list.
 */
AIOLOOP_API void error_vprepend(Error *const *errp, const char *fmt,
                                va_list ap) AIOLOOP_PRINTF(2, 0);

/**
 * error_append_hint:
 * @errp: NULL, or the address of a pointer to an existing error
 * @fmt: printf-style text; end each hint line with "\n"
 *
 * Append text to the error's hint: advice for a human, printed on the lines
 * after the message by the error_report_err() family and &error_fatal, and
 * not part of error_get_pretty().  Does nothing when @errp is NULL.  Use it
 * after ERRP_GUARD().  Calling it when *@errp is NULL, or with @errp being
 * &error_abort or &error_fatal, is a programming error and aborts.
 * Preserves errno.
 */
AIOLOOP_API void error_append_hint(Error *const *errp, const char *fmt, ...)
    AIOLOOP_PRINTF(2, 3);

/**
 * error_copy:
 * @err: an error, not NULL
 *
 * Returns: a new, independent error with the same message, hint and
 * location.  The caller owns it.
 */
AIOLOOP_API Error *error_copy(const Error *err);

/**
 * error_free:
 * @err: an error the caller owns, or NULL (a no-op)
 *
 * Free @err, its message and its hint.  Any thread.
 */
AIOLOOP_API void error_free(Error *err);

/**
 * error_free_or_abort:
 * @errp: address of a pointer that must hold an error
 *
 * Free *@errp and set it to NULL.  For tests and code that expects an
 * error: when *@errp is NULL it aborts with a message saying so.
 */
AIOLOOP_API void error_free_or_abort(Error **errp);

/**
 * error_report:
 * @fmt: printf-style message, without trailing newline
 *
 * Print "<prog>: <message>\n" to stderr, where <prog> is
 * program_invocation_short_name.  The line is written with one write under
 * the stdio lock, so reports from different threads do not interleave.
 * Any thread; errno is preserved.
 */
AIOLOOP_API void error_report(const char *fmt, ...) AIOLOOP_PRINTF(1, 2);

/**
 * warn_report:
 * @fmt: printf-style message
 *
 * Like error_report() but prints "<prog>: warning: <message>\n".
 */
AIOLOOP_API void warn_report(const char *fmt, ...) AIOLOOP_PRINTF(1, 2);

/**
 * info_report:
 * @fmt: printf-style message
 *
 * Like error_report() but prints "<prog>: info: <message>\n".
 */
AIOLOOP_API void info_report(const char *fmt, ...) AIOLOOP_PRINTF(1, 2);

/**
 * error_vreport:
 * @fmt: printf-style message
 * @ap: arguments for @fmt
 *
 * error_report() with a va_list.
 */
AIOLOOP_API void error_vreport(const char *fmt, va_list ap)
    AIOLOOP_PRINTF(1, 0);

/**
 * warn_vreport:
 * @fmt: printf-style message
 * @ap: arguments for @fmt
 *
 * warn_report() with a va_list.
 */
AIOLOOP_API void warn_vreport(const char *fmt, va_list ap)
    AIOLOOP_PRINTF(1, 0);

/**
 * info_vreport:
 * @fmt: printf-style message
 * @ap: arguments for @fmt
 *
 * info_report() with a va_list.
 */
AIOLOOP_API void info_vreport(const char *fmt, va_list ap)
    AIOLOOP_PRINTF(1, 0);

/**
 * error_printf:
 * @fmt: printf-style text, newlines included by the caller
 *
 * Print the text to stderr as is, with no program name and no newline
 * added: QEMU code uses it for continuation lines after error_report().
 * Written with one write under the stdio lock.  Any thread.
 */
AIOLOOP_API void error_printf(const char *fmt, ...) AIOLOOP_PRINTF(1, 2);

/**
 * error_vprintf:
 * @fmt: printf-style text
 * @ap: arguments for @fmt
 *
 * error_printf() with a va_list.
 */
AIOLOOP_API void error_vprintf(const char *fmt, va_list ap)
    AIOLOOP_PRINTF(1, 0);

/**
 * error_report_err:
 * @err: an error the caller owns, not NULL
 *
 * Report the message like error_report(), followed by the hint if any, then
 * free @err.  Any thread.
 */
AIOLOOP_API void error_report_err(Error *err);

/**
 * warn_report_err:
 * @err: an error the caller owns, not NULL
 *
 * Like error_report_err() but reports it as a warning.  Frees @err.
 */
AIOLOOP_API void warn_report_err(Error *err);

/**
 * error_reportf_err:
 * @err: an error the caller owns, not NULL
 * @fmt: printf-style prefix
 *
 * Prepend the formatted text to the message, then error_report_err().
 * Frees @err.
 */
AIOLOOP_API void error_reportf_err(Error *err, const char *fmt, ...)
    AIOLOOP_PRINTF(2, 3);

/**
 * warn_reportf_err:
 * @err: an error the caller owns, not NULL
 * @fmt: printf-style prefix
 *
 * Prepend the formatted text to the message, then warn_report_err().
 * Frees @err.
 */
AIOLOOP_API void warn_reportf_err(Error *err, const char *fmt, ...)
    AIOLOOP_PRINTF(2, 3);

/* Support for ERRP_GUARD(); not for direct use. */
typedef struct ErrorPropagator {
    Error *local_err;
    Error **errp;
} ErrorPropagator;

static inline void error_propagator_cleanup(ErrorPropagator *prop)
{
    error_propagate(prop->errp, prop->local_err);
}

/**
 * ERRP_GUARD:
 *
 * Put this at the start of a function that takes "Error **errp" and needs
 * to dereference it: to test whether a callee failed (if (*errp)), or to
 * add error_prepend()/error_append_hint() context.  When the caller passed
 * NULL or &error_fatal, errp is redirected to a local Error * for the
 * duration of the function; at scope exit the local error is handed on with
 * error_propagate(), so it is discarded (NULL) or reported with its context
 * and hint before exit(1) (&error_fatal).  Other errp values, including
 * &error_abort, are left alone: &error_abort should abort where the error
 * is raised, with that location.
 *
 * The parameter must be named errp.  Uses the cleanup attribute (GCC and
 * clang).
 */
#define ERRP_GUARD()                                                       \
    __attribute__((cleanup(error_propagator_cleanup)))                     \
    ErrorPropagator _auto_errp_prop = { NULL, errp };                      \
    do {                                                                   \
        if (!errp || errp == &error_fatal) {                               \
            errp = &_auto_errp_prop.local_err;                             \
        }                                                                  \
    } while (0)

AIOLOOP_END_DECLS

#endif
