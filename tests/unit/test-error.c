/*
 * Error objects and error reporting: QEMU's semantics for error_setg,
 * propagation, &error_abort / &error_fatal, ERRP_GUARD and the reports.
 */
#define _GNU_SOURCE

#include <aioloop/error.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* ---- helpers ---- */

/* Heap string from a format; the caller frees it. */
__attribute__((format(printf, 1, 2)))
static char *strf(const char *f, ...)
{
    va_list ap;
    char *s;

    va_start(ap, f);
    ASSERT_INT(vasprintf(&s, f, ap), >=, 0);
    va_end(ap);
    return s;
}

static const char *prog(void)
{
    return program_invocation_short_name;
}

/*
 * Redirect this process's stderr into a memfd between begin and end, to
 * check exactly what a report printed.
 */
typedef struct {
    int memfd;
    int saved;
} Capture;

static Capture capture_begin(void)
{
    Capture c;

    c.memfd = memfd_create("stderr", MFD_CLOEXEC);
    ASSERT_INT(c.memfd, >=, 0);
    fflush(stderr);
    c.saved = dup(STDERR_FILENO);
    ASSERT_INT(c.saved, >=, 0);
    ASSERT_INT(dup2(c.memfd, STDERR_FILENO), ==, STDERR_FILENO);
    return c;
}

static char *capture_end(Capture *c)
{
    off_t len;
    char *buf;

    fflush(stderr);
    ASSERT_INT(dup2(c->saved, STDERR_FILENO), ==, STDERR_FILENO);
    close(c->saved);
    len = lseek(c->memfd, 0, SEEK_END);
    ASSERT_INT(len, >=, 0);
    buf = malloc((size_t)len + 1);
    ASSERT_TRUE(buf != NULL);
    ASSERT_INT(pread(c->memfd, buf, (size_t)len, 0), ==, len);
    buf[len] = '\0';
    close(c->memfd);
    return buf;
}

/*
 * Run fn in a child with stderr captured; return its wait status.  Used for
 * &error_fatal, which exits rather than aborts.
 */
static int run_child(void (*fn)(void *), void *opaque, char *out,
                     size_t outsz)
{
    int pfd[2];
    size_t len = 0;
    int status;
    pid_t pid;

    ASSERT_EQ(pipe(pfd), 0);
    fflush(NULL);
    pid = fork();
    ASSERT_INT(pid, >=, 0);
    if (pid == 0) {
        dup2(pfd[1], STDERR_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        fn(opaque);
        _exit(0);
    }
    close(pfd[1]);
    for (;;) {
        ssize_t r = read(pfd[0], out + len, outsz - 1 - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
        if (len == outsz - 1) {
            break;
        }
    }
    out[len] = '\0';
    close(pfd[0]);
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    return status;
}

static void expect_exit1(void (*fn)(void *), void *opaque,
                         const char *expected_stderr)
{
    char out[4096];
    int status = run_child(fn, opaque, out, sizeof(out));

    if (!WIFEXITED(status)) {
        TEST_FAIL_("child did not exit (status 0x%x), stderr: %s", status, out);
    }
    ASSERT_EQ(WEXITSTATUS(status), 1);
    ASSERT_STR_EQ(out, expected_stderr);
}

static bool failing_callee(Error **errp)
{
    error_setg(errp, "inner failed");
    return false;
}

/* ---- error_setg and friends ---- */

TEST(setg_stores_message_and_location)
{
    Error *err = NULL;

    error_setg(&err, "bad value %d for '%s'", 7, "size");
    ASSERT_TRUE(err != NULL);
    ASSERT_STR_EQ(error_get_pretty(err), "bad value 7 for 'size'");
    error_free(err);
}

TEST(setg_null_errp_discards_and_keeps_errno)
{
    errno = EPIPE;
    error_setg(NULL, "ignored %s", "x");
    ASSERT_EQ(errno, EPIPE);
    error_setg_errno(NULL, ENOENT, "ignored");
    ASSERT_EQ(errno, EPIPE);
}

TEST(setg_errno_appends_strerror)
{
    Error *err = NULL;
    char *want = strf("open /x: %s", strerror(ENOENT));

    errno = EXDEV;
    error_setg_errno(&err, ENOENT, "open %s", "/x");
    ASSERT_EQ(errno, EXDEV);
    ASSERT_STR_EQ(error_get_pretty(err), want);
    error_free(err);
    free(want);

    /* 0 means "no OS error": no suffix. */
    err = NULL;
    error_setg_errno(&err, 0, "plain");
    ASSERT_STR_EQ(error_get_pretty(err), "plain");
    error_free(err);
}

static void setg_twice(void *opaque)
{
    Error *err = NULL;

    (void)opaque;
    error_setg(&err, "first");
    error_setg(&err, "second");
}

TEST(setg_on_set_errp_aborts)
{
    test_expect_abort(setg_twice, NULL, "*errp already holds an error");
    test_expect_abort(setg_twice, NULL, "(\"first\"); cannot set \"second\"");
}

static void raise_on_error_abort(void *opaque)
{
    (void)opaque;
    error_setg(&error_abort, "boom %d", 42);
}

TEST(error_abort_aborts_with_location_and_message)
{
    char *want = strf("Unexpected error in raise_on_error_abort() at %s:",
                     __FILE__);
    char *want_msg = strf(":\n%s: boom 42\n", prog());

    test_expect_abort(raise_on_error_abort, NULL, want);
    test_expect_abort(raise_on_error_abort, NULL, want_msg);
    free(want);
    free(want_msg);
    ASSERT_TRUE(error_abort == NULL);
}

static void raise_on_error_fatal(void *opaque)
{
    (void)opaque;
    error_setg(&error_fatal, "fatal %d", 7);
    /* Not reached: error_fatal exits. */
    _exit(0);
}

TEST(error_fatal_reports_and_exits_1)
{
    char *want = strf("%s: fatal 7\n", prog());

    expect_exit1(raise_on_error_fatal, NULL, want);
    free(want);
    ASSERT_TRUE(error_fatal == NULL);
}

/* ---- propagation ---- */

TEST(propagate_into_empty_moves_ownership)
{
    Error *local = NULL, *dst = NULL;

    error_setg(&local, "local");
    Error *p = local;
    error_propagate(&dst, local);
    ASSERT_TRUE(dst == p);
    ASSERT_STR_EQ(error_get_pretty(dst), "local");
    error_free(dst);
}

TEST(propagate_into_null_frees)
{
    Error *local = NULL;

    error_setg(&local, "dropped");
    /* The leak checker under ASan verifies the free. */
    error_propagate(NULL, local);
}

TEST(propagate_into_set_keeps_first)
{
    Error *first = NULL, *second = NULL;
    Error *dst;

    error_setg(&first, "first");
    error_setg(&second, "second");
    dst = first;
    error_propagate(&dst, second);
    ASSERT_TRUE(dst == first);
    ASSERT_STR_EQ(error_get_pretty(dst), "first");
    error_free(dst);
}

TEST(propagate_null_is_noop)
{
    Error *dst = NULL;

    error_propagate(&dst, NULL);
    ASSERT_TRUE(dst == NULL);
    error_propagate(NULL, NULL);
    error_propagate(&error_abort, NULL);
    error_propagate(&error_fatal, NULL);
}

/* Set in the parent before forking, so both sides know the location. */
static Error *pending_err;
static int pending_line;

static void propagate_to_abort(void *opaque)
{
    (void)opaque;
    error_propagate(&error_abort, pending_err);
}

static void propagate_to_fatal(void *opaque)
{
    (void)opaque;
    error_propagate(&error_fatal, pending_err);
    _exit(0);
}

TEST(propagate_to_error_abort_reports_original_location)
{
    char *want;

    pending_line = __LINE__ + 1;
    error_setg(&pending_err, "deferred %s", "failure");
    error_append_hint(&pending_err, "a hint\n");
    want = strf("Unexpected error in %s() at %s:%d:\n%s: deferred failure\n"
               "a hint\n",
               __func__, __FILE__, pending_line, prog());
    test_expect_abort(propagate_to_abort, NULL, want);
    free(want);
    error_free(pending_err);
    pending_err = NULL;
}

TEST(propagate_to_error_fatal_exits_1_with_hint)
{
    char *want;

    error_setg(&pending_err, "deferred");
    error_append_hint(&pending_err, "line one\n");
    error_append_hint(&pending_err, "line %d\n", 2);
    want = strf("%s: deferred\nline one\nline 2\n", prog());
    expect_exit1(propagate_to_fatal, NULL, want);
    free(want);
    error_free(pending_err);
    pending_err = NULL;
}

TEST(propagate_prepend)
{
    Error *local = NULL, *dst = NULL, *other = NULL;

    error_setg(&local, "disk full");
    error_propagate_prepend(&dst, local, "writing %s: ", "blk0");
    ASSERT_STR_EQ(error_get_pretty(dst), "writing blk0: disk full");

    /* Destination already set: the first error stays as it was. */
    error_setg(&other, "later");
    error_propagate_prepend(&dst, other, "ignored: ");
    ASSERT_STR_EQ(error_get_pretty(dst), "writing blk0: disk full");
    error_free(dst);

    /* Discarded, and no error at all. */
    local = NULL;
    error_setg(&local, "dropped");
    error_propagate_prepend(NULL, local, "x: ");
    dst = NULL;
    error_propagate_prepend(&dst, NULL, "x: ");
    ASSERT_TRUE(dst == NULL);
}

/* ---- prepend and hints ---- */

TEST(prepend_adds_context_outermost_first)
{
    Error *err = NULL;

    error_setg(&err, "no such file");
    error_prepend(&err, "opening %s: ", "a.img");
    error_prepend(&err, "device %d: ", 3);
    ASSERT_STR_EQ(error_get_pretty(err), "device 3: opening a.img: no such file");
    error_prepend(NULL, "ignored: ");
    error_free(err);
}

static void prepend_to_nothing(void *opaque)
{
    Error *err = NULL;

    (void)opaque;
    error_prepend(&err, "ctx: ");
}

static void hint_to_nothing(void *opaque)
{
    Error *err = NULL;

    (void)opaque;
    error_append_hint(&err, "hint\n");
}

static void hint_to_fatal(void *opaque)
{
    (void)opaque;
    error_append_hint(&error_fatal, "hint\n");
}

TEST(prepend_and_hint_without_error_abort)
{
    test_expect_abort(prepend_to_nothing, NULL, "no error to prepend to");
    test_expect_abort(hint_to_nothing, NULL, "no error to add a hint to");
    test_expect_abort(hint_to_fatal, NULL, "needs ERRP_GUARD()");
}

TEST(hint_is_separate_from_message)
{
    Error *err = NULL;
    Capture c;
    char *out, *want;

    error_setg(&err, "bad");
    errno = ERANGE;
    error_append_hint(&err, "Valid values are %d-%d\n", 1, 9);
    ASSERT_EQ(errno, ERANGE);
    error_append_hint(&err, "See the manual\n");
    error_append_hint(NULL, "ignored\n");
    ASSERT_STR_EQ(error_get_pretty(err), "bad");

    c = capture_begin();
    error_report_err(err);
    out = capture_end(&c);
    want = strf("%s: bad\nValid values are 1-9\nSee the manual\n", prog());
    ASSERT_STR_EQ(out, want);
    free(out);
    free(want);
}

/* ---- copy and free ---- */

TEST(copy_is_independent)
{
    Error *err = NULL, *copy;
    Capture c;
    char *out, *want;

    error_setg(&err, "orig");
    error_append_hint(&err, "hint\n");
    copy = error_copy(err);
    ASSERT_TRUE(copy != err);
    error_prepend(&err, "changed: ");
    error_free(err);
    ASSERT_STR_EQ(error_get_pretty(copy), "orig");

    c = capture_begin();
    error_report_err(copy);
    out = capture_end(&c);
    want = strf("%s: orig\nhint\n", prog());
    ASSERT_STR_EQ(out, want);
    free(out);
    free(want);
}

static void free_or_abort_empty(void *opaque)
{
    Error *err = NULL;

    (void)opaque;
    error_free_or_abort(&err);
}

TEST(free_and_free_or_abort)
{
    Error *err = NULL;

    error_free(NULL);
    error_setg(&err, "x");
    error_free_or_abort(&err);
    ASSERT_TRUE(err == NULL);
    test_expect_abort(free_or_abort_empty, NULL, "expected an error");
}

/* ---- reports ---- */

TEST(report_formats)
{
    Capture c = capture_begin();
    char *out, *want;

    errno = EBUSY;
    error_report("e %d", 1);
    ASSERT_EQ(errno, EBUSY);
    warn_report("w %s", "two");
    info_report("i");
    error_printf("raw %d", 3);
    error_printf("\n");
    out = capture_end(&c);
    want = strf("%s: e 1\n%s: warning: w two\n%s: info: i\nraw 3\n",
               prog(), prog(), prog());
    ASSERT_STR_EQ(out, want);
    free(out);
    free(want);
}

TEST(report_err_variants_report_and_free)
{
    Error *a = NULL, *b = NULL, *d = NULL, *e = NULL;
    Capture c;
    char *out, *want;

    error_setg(&a, "alpha");
    error_setg(&b, "beta");
    error_append_hint(&b, "beta hint\n");
    error_setg(&d, "delta");
    error_setg(&e, "epsilon");

    c = capture_begin();
    error_report_err(a);
    warn_report_err(b);
    error_reportf_err(d, "ctx %d: ", 4);
    warn_reportf_err(e, "wctx: ");
    out = capture_end(&c);
    want = strf("%1$s: alpha\n%1$s: warning: beta\nbeta hint\n"
               "%1$s: ctx 4: delta\n%1$s: warning: wctx: epsilon\n",
               prog());
    ASSERT_STR_EQ(out, want);
    free(out);
    free(want);
}

enum { REPORT_THREADS = 8, REPORTS_PER_THREAD = 300 };

static void *report_many(void *opaque)
{
    int t = (int)(intptr_t)opaque;

    for (int i = 0; i < REPORTS_PER_THREAD; i++) {
        error_report("thread %d report %d %s", t, i,
                     "padding-padding-padding-padding-padding-padding");
    }
    return NULL;
}

TEST(concurrent_reports_do_not_interleave)
{
    pthread_t th[REPORT_THREADS];
    int next[REPORT_THREADS] = { 0 };
    Capture c = capture_begin();
    char *out, *line, *save = NULL;
    int lines = 0;

    for (int t = 0; t < REPORT_THREADS; t++) {
        ASSERT_EQ(pthread_create(&th[t], NULL, report_many,
                                 (void *)(intptr_t)t), 0);
    }
    for (int t = 0; t < REPORT_THREADS; t++) {
        ASSERT_EQ(pthread_join(th[t], NULL), 0);
    }
    out = capture_end(&c);

    for (line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *want;
        int t, i, n = 0;

        if (sscanf(line, "%*[^:]: thread %d report %d %n", &t, &i, &n) != 2 ||
            t < 0 || t >= REPORT_THREADS) {
            TEST_FAIL_("mangled line: \"%s\"", line);
        }
        /* Each thread's lines appear whole and in its own order. */
        ASSERT_EQ(i, next[t]);
        next[t]++;
        want = strf("%s: thread %d report %d %s", prog(), t, i,
                   "padding-padding-padding-padding-padding-padding");
        ASSERT_STR_EQ(line, want);
        free(want);
        lines++;
    }
    ASSERT_EQ(lines, REPORT_THREADS * REPORTS_PER_THREAD);
    free(out);
}

/* ---- ERRP_GUARD ---- */

static int guarded_ran_after_error;

/* Looks at *errp and adds context: only legal thanks to ERRP_GUARD. */
static bool guarded(Error **errp)
{
    ERRP_GUARD();

    if (!failing_callee(errp)) {
        ASSERT_TRUE(*errp != NULL);
        guarded_ran_after_error++;
        error_prepend(errp, "guarded: ");
        error_append_hint(errp, "try again\n");
        return false;
    }
    return true;
}

TEST(errp_guard_with_null_errp)
{
    guarded_ran_after_error = 0;
    ASSERT_FALSE(guarded(NULL));
    /* The context code ran; the local error was freed at scope exit. */
    ASSERT_EQ(guarded_ran_after_error, 1);
}

TEST(errp_guard_with_local_errp)
{
    Error *err = NULL;
    Capture c;
    char *out, *want;

    ASSERT_FALSE(guarded(&err));
    ASSERT_TRUE(err != NULL);
    ASSERT_STR_EQ(error_get_pretty(err), "guarded: inner failed");

    c = capture_begin();
    error_report_err(err);
    out = capture_end(&c);
    want = strf("%s: guarded: inner failed\ntry again\n", prog());
    ASSERT_STR_EQ(out, want);
    free(out);
    free(want);
}

static void guarded_fatal(void *opaque)
{
    (void)opaque;
    guarded(&error_fatal);
    _exit(0);
}

TEST(errp_guard_with_error_fatal_reports_context_then_exits)
{
    char *want = strf("%s: guarded: inner failed\ntry again\n", prog());

    expect_exit1(guarded_fatal, NULL, want);
    free(want);
}

static void guarded_abort(void *opaque)
{
    (void)opaque;
    guarded(&error_abort);
}

TEST(errp_guard_with_error_abort_aborts_at_the_source)
{
    test_expect_abort(guarded_abort, NULL,
                      "Unexpected error in failing_callee() at");
}

TEST(guarded_success_leaves_errp_alone)
{
    Error *err = NULL;

    {
        Error **errp = &err;
        ERRP_GUARD();
        ASSERT_TRUE(errp == &err);
    }
    ASSERT_TRUE(err == NULL);
    {
        Error **errp = NULL;
        ERRP_GUARD();
        ASSERT_TRUE(errp != NULL);
        ASSERT_TRUE(*errp == NULL);
    }
}

RUN_TESTS(T(setg_stores_message_and_location),
          T(setg_null_errp_discards_and_keeps_errno),
          T(setg_errno_appends_strerror),
          T(setg_on_set_errp_aborts),
          T(error_abort_aborts_with_location_and_message),
          T(error_fatal_reports_and_exits_1),
          T(propagate_into_empty_moves_ownership),
          T(propagate_into_null_frees),
          T(propagate_into_set_keeps_first),
          T(propagate_null_is_noop),
          T(propagate_to_error_abort_reports_original_location),
          T(propagate_to_error_fatal_exits_1_with_hint),
          T(propagate_prepend),
          T(prepend_adds_context_outermost_first),
          T(prepend_and_hint_without_error_abort),
          T(hint_is_separate_from_message),
          T(copy_is_independent),
          T(free_and_free_or_abort),
          T(report_formats),
          T(report_err_variants_report_and_free),
          T(concurrent_reports_do_not_interleave),
          T(errp_guard_with_null_errp),
          T(errp_guard_with_local_errp),
          T(errp_guard_with_error_fatal_reports_context_then_exits),
          T(errp_guard_with_error_abort_aborts_at_the_source),
          T(guarded_success_leaves_errp_alone))
