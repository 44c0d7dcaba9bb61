/*
 * LD_PRELOAD shim for nbd-shutdown-flush: watches the daemon's fdatasync()
 * calls.  Controlled through files in the directory FLUSH_SHIM_DIR, read at
 * every call:
 *   expect  a number N: each call waits (FLUSH_SHIM_WAIT_MS at most,
 *           default 5000) until N calls have been inside together;
 *   hold    while it exists, each call waits (20 s at most) before going
 *           on, so the test can look at the daemon during a flush.
 * Each call appends "enter" to FLUSH_SHIM_DIR/log when it starts and
 * "concurrent N" when it ends: N is the most calls that had been inside
 * at once when it went on.  Flushes made one after the other each see 1
 * (and each waits the whole time for company that never comes); flushes
 * made together see all of them.  Nothing measures time: the waits only
 * bound how long a daemon that gets it wrong takes to fail the test.
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

static int inside; /* atomic: calls inside now */
static int peak;   /* atomic: the most calls ever inside at once */

static void ctl_path(char *buf, size_t size, const char *name)
{
    const char *dir = getenv("FLUSH_SHIM_DIR");

    snprintf(buf, size, "%s/%s", dir ? dir : ".", name);
}

static long ctl_expect(void)
{
    char path[4096];
    long n = 1;
    FILE *f;

    ctl_path(path, sizeof(path), "expect");
    f = fopen(path, "re");
    if (f) {
        if (fscanf(f, "%ld", &n) != 1) {
            n = 1;
        }
        fclose(f);
    }
    return n;
}

static bool ctl_hold(void)
{
    char path[4096];

    ctl_path(path, sizeof(path), "hold");
    return access(path, F_OK) == 0;
}

static void log_line(const char *line)
{
    char path[4096];
    int fd;

    ctl_path(path, sizeof(path), "log");
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, line, strlen(line)) < 0) {
            /* the test reports the missing line */
        }
        close(fd);
    }
}

static void sleep_ms(void)
{
    struct timespec ms = { 0, 1000 * 1000 };

    nanosleep(&ms, NULL);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    const char *w = getenv("FLUSH_SHIM_WAIT_MS");
    long wait_ms = w && *w ? strtol(w, NULL, 10) : 5000;
    long expect = ctl_expect();
    int now = __atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST);
    int seen = __atomic_load_n(&peak, __ATOMIC_SEQ_CST);
    char line[64];
    int ret;

    if (!real) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    log_line("enter\n");
    while (now > seen && !__atomic_compare_exchange_n(&peak, &seen, now, false,
                                                      __ATOMIC_SEQ_CST,
                                                      __ATOMIC_SEQ_CST)) {
    }
    for (long waited = 0; waited < 20000 && ctl_hold(); waited++) {
        sleep_ms();
    }
    for (long waited = 0; waited < wait_ms; waited++) {
        seen = __atomic_load_n(&peak, __ATOMIC_SEQ_CST);
        if (seen >= expect) {
            break;
        }
        sleep_ms();
    }
    ret = real(fd);
    if (__atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST) == 0) {
        /* The next batch counts from zero. */
        __atomic_store_n(&peak, 0, __ATOMIC_SEQ_CST);
    }
    snprintf(line, sizeof(line), "concurrent %d\n", seen);
    log_line(line);
    return ret;
}
