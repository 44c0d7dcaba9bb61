/*
 * LD_PRELOAD shim for nbd-shutdown-flush: how many fdatasync() calls of
 * the daemon run at once.
 *
 * Each call waits (up to FLUSH_SHIM_WAIT_MS, default 5000) until
 * FLUSH_SHIM_EXPECT calls have been inside together, then calls the real
 * fdatasync(), and appends "concurrent N" to FLUSH_SHIM_LOG: N is the most
 * calls that had been inside at once when this one went on.  Flushes made one after the other
 * each see 1 (and each waits the whole time for company that never
 * comes); flushes made together see FLUSH_SHIM_EXPECT.  Nothing here
 * measures time: the wait only bounds how long a sequential daemon takes
 * to fail the test.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int inside;  /* atomic: calls inside now */
static int peak;    /* atomic: the most calls ever inside at once */

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);

    return v && *v ? strtol(v, NULL, 10) : dflt;
}

int fdatasync(int fd)
{
    static int (*real)(int);
    long expect = env_long("FLUSH_SHIM_EXPECT", 1);
    long wait_ms = env_long("FLUSH_SHIM_WAIT_MS", 5000);
    const char *log = getenv("FLUSH_SHIM_LOG");
    struct timespec ms = { 0, 1000 * 1000 };
    int now = __atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST);
    int seen = __atomic_load_n(&peak, __ATOMIC_SEQ_CST);
    int ret;

    while (now > seen && !__atomic_compare_exchange_n(&peak, &seen, now, false,
                                                      __ATOMIC_SEQ_CST,
                                                      __ATOMIC_SEQ_CST)) {
    }

    if (!real) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    for (long waited = 0; waited < wait_ms; waited++) {
        seen = __atomic_load_n(&peak, __ATOMIC_SEQ_CST);
        if (seen >= expect) {
            break;
        }
        nanosleep(&ms, NULL);
    }
    ret = real(fd);
    __atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
    if (log) {
        char line[64];
        int len = snprintf(line, sizeof(line), "concurrent %d\n", seen);
        int lfd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

        if (lfd >= 0) {
            if (write(lfd, line, (size_t)len) < 0) {
                /* the test reports the missing line */
            }
            close(lfd);
        }
    }
    return ret;
}
