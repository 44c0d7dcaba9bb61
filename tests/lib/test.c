/* Test harness helpers that need more than a macro. */
#include "test.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

int test_expect_abort(void (*fn)(void *), void *opaque, const char *msg)
{
    int pfd[2];
    char buf[4096];
    size_t len = 0;
    int status;

    if (pipe(pfd) < 0) {
        TEST_FAIL_("pipe failed");
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        TEST_FAIL_("fork failed");
    }
    if (pid == 0) {
        /* Sanitizers would print reports of their own on abort: keep it quiet. */
        dup2(pfd[1], STDERR_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        signal(SIGABRT, SIG_DFL);
        fn(opaque);
        _exit(0);
    }
    close(pfd[1]);
    for (;;) {
        ssize_t r = read(pfd[0], buf + len, sizeof(buf) - 1 - len);
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
        if (len == sizeof(buf) - 1) {
            break;
        }
    }
    buf[len] = '\0';
    close(pfd[0]);
    if (waitpid(pid, &status, 0) < 0) {
        TEST_FAIL_("waitpid failed");
    }
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT) {
        TEST_FAIL_("expected abort with \"%s\", child status 0x%x, stderr: %s",
                   msg, status, buf);
    }
    if (!strstr(buf, msg)) {
        TEST_FAIL_("abort message lacks \"%s\": %s", msg, buf);
    }
    return 0;
}
