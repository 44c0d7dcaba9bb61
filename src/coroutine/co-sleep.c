/*
 * Sleeping coroutines and qemu_co_timeout(), as QEMU's
 * util/qemu-co-sleep.c and util/qemu-co-timeout.c.
 *
 * A sleeping coroutine is marked scheduled by "qemu_co_sleep_ns", so
 * entering it by any other means aborts.  The waker (the timer, or
 * qemu_co_sleep_wake() from any thread) takes w->to_wake with an exchange,
 * so exactly one of them clears the mark and calls aio_co_wake().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "coroutine-int.h"
#include "aio-internal.h"

#include "../util/alloc.h"
static const char qemu_co_sleep_ns__scheduled[] = "qemu_co_sleep_ns";

void qemu_co_sleep_wake(QemuCoSleep *w)
{
    Coroutine *co = __atomic_exchange_n(&w->to_wake, NULL, __ATOMIC_ACQ_REL);

    if (co) {
        const char *scheduled =
            qatomic_cmpxchg(&co->scheduled, qemu_co_sleep_ns__scheduled,
                            (const char *)NULL);

        if (scheduled != qemu_co_sleep_ns__scheduled) {
            error_report("qemu_co_sleep_wake: coroutine is not sleeping "
                         "(scheduled by '%s')", scheduled ? scheduled : "none");
            abort();
        }
        aio_co_wake(co);
    }
}

static void co_sleep_cb(void *opaque)
{
    qemu_co_sleep_wake(opaque);
}

void coroutine_fn qemu_co_sleep(QemuCoSleep *w)
{
    Coroutine *co;
    const char *scheduled;

    if (!qemu_in_coroutine()) {
        error_report("qemu_co_sleep: called outside coroutine context");
        abort();
    }
    co = qemu_coroutine_self();
    scheduled = qatomic_cmpxchg(&co->scheduled, NULL,
                                qemu_co_sleep_ns__scheduled);
    if (scheduled) {
        error_report("qemu_co_sleep: Co-routine was already scheduled in "
                     "'%s'", scheduled);
        abort();
    }

    /* Release: a waker in another thread sees the mark set above. */
    __atomic_store_n(&w->to_wake, co, __ATOMIC_RELEASE);
    qemu_coroutine_yield();
}

void coroutine_fn qemu_co_sleep_ns_wakeable(QemuCoSleep *w,
                                            QEMUClockType type, int64_t ns)
{
    AioContext *ctx = qemu_get_current_aio_context();
    QEMUTimer ts;

    if (!ctx) {
        error_report("qemu_co_sleep_ns_wakeable: this thread has no current "
                     "AioContext to run the timer");
        abort();
    }
    aio_timer_init(ctx, &ts, type, SCALE_NS, co_sleep_cb, w);
    timer_mod(&ts, qemu_clock_get_ns(type) + ns);

    /*
     * The timer fires in this thread's AioContext, so its callback runs
     * after qemu_co_sleep() has yielded: no race between timer_mod() and
     * the sleep.
     */
    qemu_co_sleep(w);
    timer_del(&ts);
    timer_deinit(&ts);
}

void coroutine_fn qemu_co_sleep_ns(QEMUClockType type, int64_t ns)
{
    QemuCoSleep w = { 0 };

    qemu_co_sleep_ns_wakeable(&w, type, ns);
}

/* ---- qemu_co_timeout ---------------------------------------------------- */

typedef struct QemuCoTimeoutState {
    CoroutineEntry *entry;
    void *opaque;
    QemuCoSleep sleep_state;
    bool marker;      /* set by whichever side finishes first */
    CleanupFunc *clean;
} QemuCoTimeoutState;

static void coroutine_fn qemu_co_timeout_entry(void *opaque)
{
    QemuCoTimeoutState *s = opaque;

    s->entry(s->opaque);

    if (s->marker) {
        /* qemu_co_timeout() gave up on us: clean up. */
        if (s->clean) {
            s->clean(s->opaque);
        }
        free(s);
    } else {
        s->marker = true;
        qemu_co_sleep_wake(&s->sleep_state);
    }
}

int coroutine_fn qemu_co_timeout(CoroutineEntry *entry, void *opaque,
                                 uint64_t timeout_ns, CleanupFunc clean)
{
    QemuCoTimeoutState *s;
    Coroutine *co;

    if (timeout_ns == 0) {
        entry(opaque);
        return 0;
    }

    s = aio_alloc0(sizeof(*s), "qemu_co_timeout");
    s->entry = entry;
    s->opaque = opaque;
    s->clean = clean;

    co = qemu_coroutine_create(qemu_co_timeout_entry, s);
    aio_co_enter(qemu_get_current_aio_context(), co);
    qemu_co_sleep_ns_wakeable(&s->sleep_state, QEMU_CLOCK_REALTIME,
                              (int64_t)timeout_ns);

    if (s->marker) {
        /* qemu_co_timeout_entry() finished first. */
        free(s);
        return 0;
    }
    /* Don't free s: qemu_co_timeout_entry() still runs and will. */
    s->marker = true;
    return -ETIMEDOUT;
}
