/*
 * Error objects and error reporting (QEMU's qapi/error.h and
 * qemu/error-report.h semantics).
 *
 * This file is the only place the library writes to stderr.
 */
#define _GNU_SOURCE

#include <aioloop/error.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
struct Error {
    char *msg;
    /* Extra lines for a human, or NULL; each line ends in '\n'. */
    char *hint;
    size_t hint_len;
    /* Where error_setg() was called: string literals, not owned. */
    const char *src;
    int line;
    const char *func;
};

/* Never written: only their addresses are compared against errp. */
Error *error_abort;
Error *error_fatal;

/*
 * Cannot go through the normal report path, which itself allocates; a
 * fixed string written with write(2) needs no memory at all.
 */
AIOLOOP_NORETURN static void out_of_memory(void)
{
    static const char msg[] = "aioloop: out of memory\n";
    ssize_t ret = write(STDERR_FILENO, msg, sizeof(msg) - 1);

    (void)ret;
    abort();
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size);

    if (!p) {
        out_of_memory();
    }
    return p;
}

void *aio_alloc0(size_t size, const char *who)
{
    void *p = calloc(1, size);

    if (!p) {
        error_report("%s: out of memory", who);
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);

    if (!p) {
        out_of_memory();
    }
    return p;
}

AIOLOOP_PRINTF(1, 0)
static char *xvasprintf(const char *fmt, va_list ap)
{
    char *s;

    if (vasprintf(&s, fmt, ap) < 0) {
        if (errno == ENOMEM) {
            out_of_memory();
        }
        /*
         * EOVERFLOW (a message over INT_MAX bytes) or a bad multibyte
         * argument: the unformatted text still tells the reader where the
         * error came from, which beats losing the error.
         */
        s = xstrdup(fmt);
    }
    return s;
}

AIOLOOP_PRINTF(1, 2)
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

static const char *prog_name(void)
{
    const char *name = program_invocation_short_name;

    return name ? name : "";
}

/*
 * One fwrite under the stdio lock: stderr is unbuffered by default, so this
 * is a single write(2), and the lock keeps it whole even if the
 * application made stderr buffered.
 */
static void emit(const char *buf, size_t len)
{
    flockfile(stderr);
    fwrite_unlocked(buf, 1, len, stderr);
    fflush_unlocked(stderr);
    funlockfile(stderr);
}

/*
 * The shared body of every report: "<prog>: <kind><message>\n<hint>".
 * Reporting must not abort on a memory shortage, since it is often what
 * reports the shortage; without memory the pieces are printed one by one,
 * still under the lock.
 */
AIOLOOP_PRINTF(2, 0)
static void vreport(const char *kind, const char *fmt, va_list ap,
                    const char *hint)
{
    int saved_errno = errno;
    const char *prog = prog_name();
    const char *sep = *prog ? ": " : "";
    char *msg = NULL;
    char *line = NULL;
    va_list ap2;
    int len = -1;

    va_copy(ap2, ap);
    if (vasprintf(&msg, fmt, ap2) >= 0) {
        len = asprintf(&line, "%s%s%s%s\n%s", prog, sep, kind, msg,
                       hint ? hint : "");
    }
    va_end(ap2);

    if (len >= 0) {
        emit(line, (size_t)len);
        free(line);
    } else {
        flockfile(stderr);
        fprintf(stderr, "%s%s%s", prog, sep, kind);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n%s", hint ? hint : "");
        fflush(stderr);
        funlockfile(stderr);
    }
    free(msg);
    errno = saved_errno;
}

AIOLOOP_PRINTF(3, 4)
static void report(const char *kind, const char *hint, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport(kind, fmt, ap, hint);
    va_end(ap);
}

/* A caller broke the API contract: say which rule, then abort. */
AIOLOOP_NORETURN AIOLOOP_PRINTF(1, 2)
static void misuse(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("", fmt, ap, NULL);
    va_end(ap);
    abort();
}

static void check_err(const Error *err, const char *func)
{
    if (!err) {
        misuse("%s() called with a NULL Error", func);
    }
}

void error_vreport(const char *fmt, va_list ap)
{
    vreport("", fmt, ap, NULL);
}

void warn_vreport(const char *fmt, va_list ap)
{
    vreport("warning: ", fmt, ap, NULL);
}

void info_vreport(const char *fmt, va_list ap)
{
    vreport("info: ", fmt, ap, NULL);
}

void error_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("", fmt, ap, NULL);
    va_end(ap);
}

void warn_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("warning: ", fmt, ap, NULL);
    va_end(ap);
}

void info_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("info: ", fmt, ap, NULL);
    va_end(ap);
}

void error_vprintf(const char *fmt, va_list ap)
{
    int saved_errno = errno;
    char *s = NULL;
    va_list ap2;
    int len;

    va_copy(ap2, ap);
    len = vasprintf(&s, fmt, ap2);
    va_end(ap2);
    if (len >= 0) {
        emit(s, (size_t)len);
        free(s);
    } else {
        flockfile(stderr);
        vfprintf(stderr, fmt, ap);
        fflush(stderr);
        funlockfile(stderr);
    }
    errno = saved_errno;
}

void error_printf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vprintf(fmt, ap);
    va_end(ap);
}

const char *error_get_pretty(const Error *err)
{
    check_err(err, __func__);
    return err->msg;
}

void error_free(Error *err)
{
    if (err) {
        free(err->msg);
        free(err->hint);
        free(err);
    }
}

void error_free_or_abort(Error **errp)
{
    if (!errp || !*errp) {
        misuse("error_free_or_abort(): expected an error, but there is none");
    }
    error_free(*errp);
    *errp = NULL;
}

Error *error_copy(const Error *err)
{
    Error *copy;

    check_err(err, __func__);
    copy = xmalloc(sizeof(*copy));
    *copy = *err;
    copy->msg = xstrdup(err->msg);
    copy->hint = err->hint ? xstrdup(err->hint) : NULL;
    return copy;
}

/*
 * Deliver a freshly made error to its destination.  Takes ownership of
 * err.  The abort and exit paths are here so that error_propagate()
 * behaves exactly as if the error had been raised at the destination.
 */
static void error_handle(Error **errp, Error *err)
{
    if (errp == &error_abort) {
        const char *prog = prog_name();
        char *buf = xasprintf("Unexpected error in %s() at %s:%d:\n"
                              "%s%s%s\n%s",
                              err->func, err->src, err->line,
                              prog, *prog ? ": " : "", err->msg,
                              err->hint ? err->hint : "");

        emit(buf, strlen(buf));
        abort();
    }
    if (errp == &error_fatal) {
        error_report_err(err);
        exit(1);
    }
    if (errp && !*errp) {
        *errp = err;
        return;
    }
    /* Discarded (NULL), or the destination already has its first error. */
    error_free(err);
}

AIOLOOP_PRINTF(5, 0)
static void error_setv(Error **errp, const char *src, int line,
                       const char *func, const char *fmt, va_list ap,
                       int os_errno)
{
    int saved_errno = errno;
    Error *err;

    if (!errp) {
        return;
    }

    err = xmalloc(sizeof(*err));
    err->msg = xvasprintf(fmt, ap);
    if (os_errno != 0) {
        char buf[128];
        char *with_errno = xasprintf("%s: %s", err->msg,
                                     strerror_r(os_errno, buf, sizeof(buf)));

        free(err->msg);
        err->msg = with_errno;
    }
    err->hint = NULL;
    err->hint_len = 0;
    err->src = src;
    err->line = line;
    err->func = func;

    /*
     * Overwriting would leak one error and hide the other; the message has
     * already been formatted so that both can be named.
     */
    if (*errp) {
        misuse("error_setg() in %s() at %s:%d: *errp already holds an "
               "error (\"%s\"); cannot set \"%s\"",
               func, src, line, (*errp)->msg, err->msg);
    }

    error_handle(errp, err);
    errno = saved_errno;
}

void error_setg_internal(Error **errp, const char *src, int line,
                         const char *func, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_setv(errp, src, line, func, fmt, ap, 0);
    va_end(ap);
}

void error_setg_errno_internal(Error **errp, const char *src, int line,
                               const char *func, int os_errno,
                               const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_setv(errp, src, line, func, fmt, ap, os_errno);
    va_end(ap);
}

void error_propagate(Error **dst_errp, Error *local_err)
{
    if (!local_err) {
        return;
    }
    error_handle(dst_errp, local_err);
}

void error_vprepend(Error *const *errp, const char *fmt, va_list ap)
{
    int saved_errno = errno;
    char *prefix;
    char *msg;

    if (!errp) {
        return;
    }
    if (!*errp) {
        misuse("error_prepend(): *errp holds no error to prepend to");
    }
    prefix = xvasprintf(fmt, ap);
    msg = xasprintf("%s%s", prefix, (*errp)->msg);
    free(prefix);
    free((*errp)->msg);
    (*errp)->msg = msg;
    errno = saved_errno;
}

void error_prepend(Error *const *errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vprepend(errp, fmt, ap);
    va_end(ap);
}

void error_propagate_prepend(Error **dst_errp, Error *local_err,
                             const char *fmt, ...)
{
    va_list ap;

    /* A discarded error or a losing second error needs no context. */
    if (local_err && dst_errp && !*dst_errp) {
        va_start(ap, fmt);
        error_vprepend(&local_err, fmt, ap);
        va_end(ap);
    }
    error_propagate(dst_errp, local_err);
}

void error_append_hint(Error *const *errp, const char *fmt, ...)
{
    int saved_errno = errno;
    Error *err;
    va_list ap;
    char *add;
    size_t add_len;
    char *hint;

    if (!errp) {
        return;
    }
    /*
     * With &error_abort/&error_fatal the error has already aborted or
     * exited, so the caller forgot ERRP_GUARD().
     */
    if (errp == &error_abort || errp == &error_fatal) {
        misuse("error_append_hint(): errp is &error_%s; "
               "the function needs ERRP_GUARD()",
               errp == &error_abort ? "abort" : "fatal");
    }
    err = *errp;
    if (!err) {
        misuse("error_append_hint(): *errp holds no error to add a hint to");
    }

    va_start(ap, fmt);
    add = xvasprintf(fmt, ap);
    va_end(ap);
    add_len = strlen(add);

    hint = realloc(err->hint, err->hint_len + add_len + 1);
    if (!hint) {
        out_of_memory();
    }
    memcpy(hint + err->hint_len, add, add_len + 1);
    err->hint = hint;
    err->hint_len += add_len;
    free(add);
    errno = saved_errno;
}

/* The hint travels in the same write as the message. */
static void report_err(const char *kind, Error *err)
{
    report(kind, err->hint, "%s", err->msg);
    error_free(err);
}

void error_report_err(Error *err)
{
    check_err(err, __func__);
    report_err("", err);
}

void warn_report_err(Error *err)
{
    check_err(err, __func__);
    report_err("warning: ", err);
}

void error_reportf_err(Error *err, const char *fmt, ...)
{
    va_list ap;

    check_err(err, __func__);
    va_start(ap, fmt);
    error_vprepend(&err, fmt, ap);
    va_end(ap);
    error_report_err(err);
}

void warn_reportf_err(Error *err, const char *fmt, ...)
{
    va_list ap;

    check_err(err, __func__);
    va_start(ap, fmt);
    error_vprepend(&err, fmt, ap);
    va_end(ap);
    warn_report_err(err);
}
