/*
 * fd handlers and aio_poll(): level-triggered dispatch, replace/remove
 * semantics (also from callbacks and other threads), event notifiers,
 * adaptive polling, the syscall-free non-blocking iteration, many fds.
 *
 * "Was not called" is always checked after test_sentinel_flush(): a
 * blocking iteration that is known to have seen every fd event this thread
 * caused before it.
 */
#define _GNU_SOURCE

#include <aioloop/aio.h>
#include <aioloop/block-io.h>
#include <aioloop/coroutine.h>
#include <aioloop/thread-pool.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aio-internal.h"
#include "aio-test.h"
#include "test.h"

/* Generous: only turns a lost wake-up into a failure instead of a hang. */
#define WATCHDOG_S 60

typedef enum { KIND_PIPE, KIND_SOCKET, KIND_EVENTFD } FdKind;

static const char *const kind_name[] = { "pipe", "socketpair", "eventfd" };

/* A pair of fds: rfd is watched, wfd makes it readable. */
typedef struct FdPair {
    FdKind kind;
    int rfd, wfd;
} FdPair;

static void fdpair_open(FdPair *p, FdKind kind)
{
    int fds[2];

    p->kind = kind;
    switch (kind) {
    case KIND_PIPE:
        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
            TEST_FAIL_("pipe2: %s", strerror(errno));
        }
        p->rfd = fds[0];
        p->wfd = fds[1];
        break;
    case KIND_SOCKET:
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                       fds) < 0) {
            TEST_FAIL_("socketpair: %s", strerror(errno));
        }
        p->rfd = fds[0];
        p->wfd = fds[1];
        break;
    case KIND_EVENTFD:
        p->rfd = p->wfd = test_eventfd();
        break;
    }
}

static void fdpair_close(FdPair *p)
{
    close(p->rfd);
    if (p->wfd != p->rfd) {
        close(p->wfd);
    }
    p->rfd = p->wfd = -1;
}

/* Make rfd readable: one byte (pipe, socket) or +1 (eventfd). */
static void fdpair_kick(FdPair *p)
{
    if (p->kind == KIND_EVENTFD) {
        test_eventfd_write(p->wfd);
        return;
    }
    if (write(p->wfd, "x", 1) != 1) {
        TEST_FAIL_("write to %s fd %d: %s", kind_name[p->kind], p->wfd,
                   strerror(errno));
    }
}

/* Read everything pending on rfd; returns bytes (or eventfd count). */
static uint64_t fdpair_drain(FdPair *p)
{
    uint64_t total = 0;
    char buf[256];
    ssize_t n;

    if (p->kind == KIND_EVENTFD) {
        return test_eventfd_drain(p->rfd);
    }
    while ((n = read(p->rfd, buf, sizeof(buf))) > 0) {
        total += (uint64_t)n;
    }
    return total;
}

/*
 * A generic read handler: counts calls, drains the fd on call number
 * drain_at (0: never), and can run an action.
 */
typedef struct Handler Handler;
struct Handler {
    AioContext *ctx;
    FdPair fd;
    unsigned calls;
    unsigned drain_at;
    void *last_opaque;
    void (*action)(Handler *h);
    Handler *other;
    int index;
    /* Set when this registration was removed or replaced. */
    bool removed;
    unsigned calls_after_removal;
};

static void handler_read(void *opaque)
{
    Handler *h = opaque;

    h->calls++;
    h->last_opaque = opaque;
    if (h->removed) {
        h->calls_after_removal++;
    }
    if (h->drain_at && h->calls >= h->drain_at) {
        fdpair_drain(&h->fd);
    }
    if (h->action) {
        h->action(h);
    }
}

static void handler_init(Handler *h, AioContext *ctx, FdKind kind)
{
    memset(h, 0, sizeof(*h));
    h->ctx = ctx;
    fdpair_open(&h->fd, kind);
}

static void handler_register(Handler *h)
{
    aio_set_fd_handler(h->ctx, h->fd.rfd, handler_read, NULL, NULL, NULL, h);
}

static void handler_remove(Handler *h)
{
    aio_set_fd_handler(h->ctx, h->fd.rfd, NULL, NULL, NULL, NULL, NULL);
    h->removed = true;
}

/* ---- level-triggered read, write, hang-up ------------------------------ */

static void check_level_triggered(FdKind kind)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    Handler h;

    printf("# %s\n", kind_name[kind]);
    test_sentinel_init(&s, ctx);
    handler_init(&h, ctx, kind);
    h.drain_at = 3;
    handler_register(&h);
    test_sentinel_flush(&s);
    ASSERT_UINT(h.calls, ==, 0);

    fdpair_kick(&h.fd);
    /* Not drained by the first two calls: fires again in each iteration. */
    for (unsigned i = 1; i <= 3; i++) {
        ASSERT_TRUE(aio_poll(ctx, true));
        ASSERT_UINT(h.calls, ==, i);
    }
    /* Drained by the third call: never again. */
    test_sentinel_flush(&s);
    test_sentinel_flush(&s);
    ASSERT_UINT(h.calls, ==, 3);
    ASSERT_PTR_EQ(h.last_opaque, &h);

    handler_remove(&h);
    fdpair_close(&h.fd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

TEST(fd_read_level_triggered_pipe)
{
    check_level_triggered(KIND_PIPE);
}

TEST(fd_read_level_triggered_socketpair)
{
    check_level_triggered(KIND_SOCKET);
}

TEST(fd_read_level_triggered_eventfd)
{
    check_level_triggered(KIND_EVENTFD);
}

typedef struct Writer {
    int fd;
    unsigned calls;
} Writer;

static void writer_cb(void *opaque)
{
    Writer *w = opaque;

    w->calls++;
}

TEST(fd_write_handler_fires_while_writable)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    FdPair p;
    Writer w = { 0 };
    char buf[4096];

    memset(buf, 'x', sizeof(buf));
    test_sentinel_init(&s, ctx);
    fdpair_open(&p, KIND_PIPE);
    w.fd = p.wfd;

    /* Writable: fires in every iteration. */
    aio_set_fd_handler(ctx, p.wfd, NULL, writer_cb, NULL, NULL, &w);
    for (unsigned i = 1; i <= 3; i++) {
        ASSERT_TRUE(aio_poll(ctx, true));
        ASSERT_UINT(w.calls, ==, i);
    }

    /* Fill the pipe: not writable, not called. */
    while (write(p.wfd, buf, sizeof(buf)) > 0) {
        continue;
    }
    ASSERT_INT(errno, ==, EAGAIN);
    unsigned before = w.calls;
    /* One more call may be in flight from the last readiness report. */
    test_sentinel_flush(&s);
    before = w.calls;
    test_sentinel_flush(&s);
    test_sentinel_flush(&s);
    ASSERT_UINT(w.calls, ==, before);

    /* Drain: writable again. */
    fdpair_drain(&p);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(w.calls, ==, before + 1);

    aio_set_fd_handler(ctx, p.wfd, NULL, NULL, NULL, NULL, NULL);
    before = w.calls;
    test_sentinel_flush(&s);
    ASSERT_UINT(w.calls, ==, before);

    fdpair_close(&p);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

typedef struct Hup {
    AioContext *ctx;
    int fd;
    unsigned calls;
    ssize_t last_read;
} Hup;

static void hup_read(void *opaque)
{
    Hup *h = opaque;
    char c;

    h->calls++;
    h->last_read = read(h->fd, &c, 1);
    if (h->last_read == 0) {
        /* EOF: remove, as a real user would. */
        aio_set_fd_handler(h->ctx, h->fd, NULL, NULL, NULL, NULL, NULL);
    }
}

static void check_hup(FdKind kind)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    FdPair p;
    Hup h = { .ctx = ctx };

    printf("# %s\n", kind_name[kind]);
    test_sentinel_init(&s, ctx);
    fdpair_open(&p, kind);
    h.fd = p.rfd;
    aio_set_fd_handler(ctx, p.rfd, hup_read, NULL, NULL, NULL, &h);
    test_sentinel_flush(&s);
    ASSERT_UINT(h.calls, ==, 0);

    /* Peer closed with nothing to read: POLLHUP alone fires io_read. */
    close(p.wfd);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(h.calls, ==, 1);
    ASSERT_INT(h.last_read, ==, 0);
    test_sentinel_flush(&s);
    ASSERT_UINT(h.calls, ==, 1);

    close(p.rfd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

TEST(fd_hup_fires_read_handler_socketpair)
{
    check_hup(KIND_SOCKET);
}

TEST(fd_hup_fires_read_handler_pipe)
{
    check_hup(KIND_PIPE);
}

/* ---- replace and remove ------------------------------------------------ */

typedef struct Tagged {
    unsigned calls;
    void *opaque_seen;
} Tagged;

static Tagged tag_a, tag_b, tag_w;

static void tagged_read_a(void *opaque)
{
    tag_a.calls++;
    tag_a.opaque_seen = opaque;
    test_eventfd_drain(*(int *)opaque);
}

static void tagged_read_b(void *opaque)
{
    tag_b.calls++;
    tag_b.opaque_seen = opaque;
    test_eventfd_drain(*(int *)opaque);
}

static void tagged_write(void *opaque)
{
    tag_w.calls++;
    tag_w.opaque_seen = opaque;
}

TEST(fd_replace_semantics)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    int efd = test_eventfd();
    int o1 = efd, o2 = efd;

    memset(&tag_a, 0, sizeof(tag_a));
    memset(&tag_b, 0, sizeof(tag_b));
    memset(&tag_w, 0, sizeof(tag_w));
    test_sentinel_init(&s, ctx);

    aio_set_fd_handler(ctx, efd, tagged_read_a, NULL, NULL, NULL, &o1);
    aio_set_fd_handler(ctx, efd, tagged_read_b, NULL, NULL, NULL, &o2);
    test_eventfd_write(efd);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(tag_a.calls, ==, 0);
    ASSERT_UINT(tag_b.calls, ==, 1);
    ASSERT_PTR_EQ(tag_b.opaque_seen, &o2);

    /* Replace a read handler by a write-only one: no read callback left. */
    aio_set_fd_handler(ctx, efd, NULL, tagged_write, NULL, NULL, &o1);
    test_eventfd_write(efd);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(tag_w.calls, >=, 1);
    ASSERT_PTR_EQ(tag_w.opaque_seen, &o1);
    test_sentinel_flush(&s);
    ASSERT_UINT(tag_a.calls, ==, 0);
    ASSERT_UINT(tag_b.calls, ==, 1);

    /* All NULL removes: never called again, whatever the fd does. */
    aio_set_fd_handler(ctx, efd, NULL, NULL, NULL, NULL, NULL);
    unsigned w_before = tag_w.calls;
    test_sentinel_flush(&s);
    test_sentinel_flush(&s);
    ASSERT_UINT(tag_w.calls, ==, w_before);
    ASSERT_UINT(tag_b.calls, ==, 1);

    /* Removing an fd that is not registered is harmless. */
    aio_set_fd_handler(ctx, efd, NULL, NULL, NULL, NULL, NULL);
    test_sentinel_cleanup(&s);
    /* Only the context's own (pollable) notifier is left. */
    ASSERT_FALSE(aio_poll_disabled(ctx));

    close(efd);
    aio_context_unref(ctx);
}

static void remove_self_action(Handler *h)
{
    if (!h->removed) {
        handler_remove(h);
    }
}

TEST(fd_handler_removes_itself)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    Handler h;

    test_sentinel_init(&s, ctx);
    handler_init(&h, ctx, KIND_EVENTFD);
    h.action = remove_self_action;   /* never drains: stays readable */
    handler_register(&h);
    fdpair_kick(&h.fd);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(h.calls, ==, 1);
    test_sentinel_flush(&s);
    test_sentinel_flush(&s);
    ASSERT_UINT(h.calls, ==, 1);
    ASSERT_UINT(h.calls_after_removal, ==, 0);

    fdpair_close(&h.fd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

/* Both ready in one iteration; whichever runs first removes the other. */
static void remove_other_action(Handler *h)
{
    if (!h->other->removed && !h->removed) {
        handler_remove(h->other);
    }
}

TEST(fd_handler_removes_ready_sibling)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    Handler a, b;

    test_sentinel_init(&s, ctx);
    handler_init(&a, ctx, KIND_EVENTFD);
    handler_init(&b, ctx, KIND_SOCKET);
    a.other = &b;
    b.other = &a;
    a.action = b.action = remove_other_action;
    handler_register(&a);
    handler_register(&b);
    test_sentinel_flush(&s);

    fdpair_kick(&a.fd);
    fdpair_kick(&b.fd);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(a.calls + b.calls, ==, 1);
    ASSERT_TRUE(a.removed != b.removed);
    test_sentinel_flush(&s);
    test_sentinel_flush(&s);
    /* The removed one never ran; the survivor keeps firing (not drained). */
    Handler *gone = a.removed ? &a : &b;
    Handler *alive = a.removed ? &b : &a;
    ASSERT_UINT(gone->calls, ==, 0);
    ASSERT_UINT(alive->calls, >=, 2);

    handler_remove(alive);
    fdpair_close(&a.fd);
    fdpair_close(&b.fd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

/* Replacement during dispatch: the old callbacks are never called again. */
typedef struct Replaced {
    unsigned calls;
    Handler *h;
} Replaced;

static Replaced replaced_new[2];

static void replacement_read(void *opaque)
{
    Replaced *r = opaque;

    r->calls++;
    fdpair_drain(&r->h->fd);
}

static void replace_other_action(Handler *h)
{
    Handler *o = h->other;

    if (!o->removed && !h->removed) {
        Replaced *r = &replaced_new[o->index];

        r->h = o;
        aio_set_fd_handler(h->ctx, o->fd.rfd, replacement_read, NULL, NULL,
                           NULL, r);
        o->removed = true;  /* as far as the old callbacks go */
    }
}

TEST(fd_handler_replaces_ready_sibling)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    Handler a, b;

    memset(replaced_new, 0, sizeof(replaced_new));
    test_sentinel_init(&s, ctx);
    handler_init(&a, ctx, KIND_EVENTFD);
    handler_init(&b, ctx, KIND_PIPE);
    a.other = &b;
    b.other = &a;
    a.action = b.action = replace_other_action;
    a.index = 0;
    b.index = 1;
    handler_register(&a);
    handler_register(&b);
    test_sentinel_flush(&s);

    fdpair_kick(&a.fd);
    fdpair_kick(&b.fd);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(a.calls + b.calls, ==, 1);
    test_sentinel_flush(&s);
    test_sentinel_flush(&s);
    Handler *replaced = a.removed ? &a : &b;
    Handler *replacer = a.removed ? &b : &a;
    Replaced *r = &replaced_new[replaced == &a ? 0 : 1];
    /* Old callbacks of the replaced handler: never. */
    ASSERT_UINT(replaced->calls, ==, 0);
    /* New callbacks: called in a later iteration (the fd stayed readable). */
    ASSERT_UINT(r->calls, ==, 1);
    ASSERT_PTR_EQ(r->h, replaced);
    ASSERT_UINT(replacer->calls, >=, 2);

    aio_set_fd_handler(ctx, a.fd.rfd, NULL, NULL, NULL, NULL, NULL);
    aio_set_fd_handler(ctx, b.fd.rfd, NULL, NULL, NULL, NULL, NULL);
    fdpair_close(&a.fd);
    fdpair_close(&b.fd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

static void replace_self_action(Handler *h)
{
    if (!h->removed) {
        replaced_new[0].h = h;
        aio_set_fd_handler(h->ctx, h->fd.rfd, replacement_read, NULL, NULL,
                           NULL, &replaced_new[0]);
        h->removed = true;
    }
}

TEST(fd_handler_replaces_itself)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    Handler h;

    memset(replaced_new, 0, sizeof(replaced_new));
    test_sentinel_init(&s, ctx);
    handler_init(&h, ctx, KIND_SOCKET);
    h.action = replace_self_action;
    handler_register(&h);
    fdpair_kick(&h.fd);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(h.calls, ==, 1);
    /* The replacement is not called in the iteration that created it. */
    ASSERT_UINT(replaced_new[0].calls, ==, 0);
    test_sentinel_flush(&s);
    test_sentinel_flush(&s);
    ASSERT_UINT(h.calls, ==, 1);
    ASSERT_UINT(h.calls_after_removal, ==, 0);
    ASSERT_UINT(replaced_new[0].calls, ==, 1);

    aio_set_fd_handler(ctx, h.fd.rfd, NULL, NULL, NULL, NULL, NULL);
    fdpair_close(&h.fd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

/* A callback registers a new handler on an fd that is already readable. */
static Handler *registered_from_cb;

static void register_other_action(Handler *h)
{
    if (h->calls == 1) {
        handler_register(registered_from_cb);
    }
}

TEST(fd_register_from_callback)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    Handler a, c;

    test_sentinel_init(&s, ctx);
    handler_init(&a, ctx, KIND_EVENTFD);
    handler_init(&c, ctx, KIND_EVENTFD);
    a.drain_at = 1;
    a.action = register_other_action;
    c.drain_at = 1;
    registered_from_cb = &c;
    handler_register(&a);
    fdpair_kick(&c.fd);      /* readable but not watched yet */
    fdpair_kick(&a.fd);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(a.calls, ==, 1);
    test_sentinel_flush(&s);
    ASSERT_UINT(c.calls, ==, 1);
    ASSERT_UINT(a.calls, ==, 1);

    handler_remove(&a);
    handler_remove(&c);
    fdpair_close(&a.fd);
    fdpair_close(&c.fd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

/* ---- changes from another thread while the home thread blocks ---------- */

typedef struct Remote {
    AioContext *ctx;
    pid_t home_tid;
    Handler *add;       /* register this one (its fd already readable) */
    Handler *del;       /* remove this one, then kick its fd */
    TestSentinel *sentinel;
} Remote;

static void *remote_thread(void *opaque)
{
    Remote *r = opaque;

    test_wait_thread_sleeping(r->home_tid, NULL);
    if (r->add) {
        handler_register(r->add);
    }
    if (r->del) {
        aio_set_fd_handler(r->ctx, r->del->fd.rfd, NULL, NULL, NULL, NULL,
                           NULL);
        __atomic_store_n(&r->del->removed, true, __ATOMIC_RELEASE);
        fdpair_kick(&r->del->fd);
        test_eventfd_write(r->sentinel->fd);
    }
    return NULL;
}

TEST(fd_register_from_other_thread_while_blocked)
{
    AioContext *ctx = test_aio_context_new();
    Handler h;
    Remote r = { .ctx = ctx, .home_tid = test_gettid(), .add = &h };
    pthread_t t;

    handler_init(&h, ctx, KIND_EVENTFD);
    h.drain_at = 1;
    fdpair_kick(&h.fd);
    test_aio_drain(ctx);

    test_watchdog("handler registered from another thread never fired",
                  WATCHDOG_S);
    t = test_thread_start(remote_thread, &r);
    while (__atomic_load_n(&h.calls, __ATOMIC_ACQUIRE) == 0) {
        aio_poll(ctx, true);
    }
    test_thread_join(t);
    test_watchdog_cancel();
    ASSERT_UINT(h.calls, ==, 1);

    handler_remove(&h);
    fdpair_close(&h.fd);
    aio_context_unref(ctx);
}

TEST(fd_remove_from_other_thread_while_blocked)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    Handler h;
    Remote r = { .ctx = ctx, .home_tid = test_gettid(), .del = &h,
                 .sentinel = &s };
    pthread_t t;
    unsigned target;

    test_sentinel_init(&s, ctx);
    handler_init(&h, ctx, KIND_EVENTFD);
    handler_register(&h);
    test_sentinel_flush(&s);
    test_aio_drain(ctx);

    test_watchdog("removal from another thread: loop never woke", WATCHDOG_S);
    target = s.hits + 1;
    t = test_thread_start(remote_thread, &r);
    while (s.hits < target) {
        aio_poll(ctx, true);
    }
    test_thread_join(t);
    test_sentinel_flush(&s);
    test_watchdog_cancel();
    /* Removed before its fd became readable: never called. */
    ASSERT_UINT(h.calls, ==, 0);

    fdpair_close(&h.fd);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

/* ---- event notifiers --------------------------------------------------- */

typedef struct NotifierState {
    EventNotifier *seen;
    unsigned reads, polls, poll_readies, begins, ends;
    bool poll_flag;       /* what io_poll reports */
} NotifierState;

static NotifierState ns;

static void en_read(EventNotifier *e)
{
    ns.reads++;
    ns.seen = e;
    event_notifier_test_and_clear(e);
}

static bool en_poll(void *opaque)
{
    ns.polls++;
    ns.seen = opaque;
    return __atomic_load_n(&ns.poll_flag, __ATOMIC_ACQUIRE);
}

static void en_poll_ready(EventNotifier *e)
{
    ns.poll_readies++;
    ns.seen = e;
    ns.poll_flag = false;
}

static void en_begin(EventNotifier *e)
{
    (void)e;
    ns.begins++;
}

static void en_end(EventNotifier *e)
{
    (void)e;
    ns.ends++;
}

TEST(event_notifier_read)
{
    AioContext *ctx = test_aio_context_new();
    TestSentinel s;
    EventNotifier e;

    memset(&ns, 0, sizeof(ns));
    test_sentinel_init(&s, ctx);
    ASSERT_EQ(event_notifier_init(&e, 0), 0);
    aio_set_event_notifier(ctx, &e, en_read, NULL, NULL);
    test_sentinel_flush(&s);
    ASSERT_UINT(ns.reads, ==, 0);

    ASSERT_EQ(event_notifier_set(&e), 0);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(ns.reads, ==, 1);
    ASSERT_PTR_EQ(ns.seen, &e);
    test_sentinel_flush(&s);
    ASSERT_UINT(ns.reads, ==, 1);

    /* Created already set. */
    aio_set_event_notifier(ctx, &e, NULL, NULL, NULL);
    event_notifier_cleanup(&e);
    ASSERT_EQ(event_notifier_init(&e, 1), 0);
    aio_set_event_notifier(ctx, &e, en_read, NULL, NULL);
    ASSERT_TRUE(aio_poll(ctx, true));
    ASSERT_UINT(ns.reads, ==, 2);

    /* Removed: never again. */
    aio_set_event_notifier(ctx, &e, NULL, NULL, NULL);
    event_notifier_set(&e);
    test_sentinel_flush(&s);
    ASSERT_UINT(ns.reads, ==, 2);

    event_notifier_cleanup(&e);
    test_sentinel_cleanup(&s);
    aio_context_unref(ctx);
}

/*
 * Get adaptive polling going: a handler enters the polled list when first
 * dispatched and its window grows after dispatches that came quickly.
 * Kick the fd and dispatch until the context reports a polling window.
 */
static void grow_poll_window(AioContext *ctx, void (*kick)(void *),
                             void *kick_arg, const unsigned *reads)
{
    int i;

    for (i = 0; i < 1000 && aioloop_context_get_poll_ns(ctx) == 0; i++) {
        unsigned before = *reads;

        kick(kick_arg);
        while (*reads == before) {
            aio_poll(ctx, true);
        }
    }
    printf("# polling window %" PRId64 " ns after %d dispatches\n",
           aioloop_context_get_poll_ns(ctx), i);
    ASSERT_INT(aioloop_context_get_poll_ns(ctx), >, 0);
    /* Let io_uring submit its re-armed polls (need_wait would skip polling). */
    for (i = 0; i < 3; i++) {
        aio_poll(ctx, false);
    }
}

static void kick_notifier(void *opaque)
{
    ASSERT_EQ(event_notifier_set(opaque), 0);
}

static void kick_eventfd(void *opaque)
{
    test_eventfd_write(*(int *)opaque);
}

/* Rescue: if the home thread blocks instead of polling, kick the fd. */
typedef struct Rescue {
    pid_t home_tid;
    int fd;
    bool done;
    bool fired;
} Rescue;

static void *rescue_thread(void *opaque)
{
    Rescue *r = opaque;

    if (test_wait_thread_sleeping(r->home_tid, &r->done)) {
        __atomic_store_n(&r->fired, true, __ATOMIC_RELEASE);
        test_eventfd_write(r->fd);
    }
    return NULL;
}

/*
 * Make the next blocking aio_poll() really block, for a bounded time: arm
 * a timer 20 ms ahead (arming from the home thread sets "notified", so one
 * non-blocking iteration consumes that first), then iterate until it fired.
 * Nothing here measures time; the timer only bounds the block.
 */
typedef struct Bound {
    QEMUTimer *timer;
    unsigned fired;
} Bound;

static void bound_cb(void *opaque)
{
    Bound *b = opaque;

    b->fired++;
}

static void bound_init(Bound *b, AioContext *ctx)
{
    b->fired = 0;
    b->timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS, bound_cb, b);
}

static void block_until_timer(AioContext *ctx, Bound *b)
{
    unsigned want = b->fired + 1;

    timer_mod_ns(b->timer,
                 qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + 20 * 1000000LL);
    aio_poll(ctx, false);
    while (b->fired < want) {
        aio_poll(ctx, true);
    }
}

/*
 * Run one blocking aio_poll() that is expected to find the event by
 * polling, with a rescue thread that kicks @fd if the home thread blocks in
 * the kernel instead (so a missing poll fails the test instead of hanging).
 * Returns aio_poll()'s result; *@rescued tells whether the rescue fired.
 */
static bool poll_once_with_rescue(AioContext *ctx, int fd, bool *rescued)
{
    Rescue rescue = { .home_tid = test_gettid(), .fd = fd };
    pthread_t t;
    bool ret;

    t = test_thread_start(rescue_thread, &rescue);
    ret = aio_poll(ctx, true);
    __atomic_store_n(&rescue.done, true, __ATOMIC_RELEASE);
    test_thread_join(t);
    *rescued = __atomic_load_n(&rescue.fired, __ATOMIC_ACQUIRE);
    return ret;
}

TEST(event_notifier_poll_begin_end)
{
    AioContext *ctx = test_aio_context_new();
    EventNotifier e;
    Error *err = NULL;
    Bound bound;
    unsigned reads;
    bool ret, rescued;

    memset(&ns, 0, sizeof(ns));
    bound_init(&bound, ctx);
    ASSERT_EQ(event_notifier_init(&e, 0), 0);
    aio_context_set_poll_params(ctx, 1000000, 0, 0, &err);
    ASSERT_NULL(err);
    aio_set_event_notifier(ctx, &e, en_read, en_poll, en_poll_ready);
    aio_set_event_notifier_poll(ctx, &e, en_begin, en_end);
    ASSERT_FALSE(aio_poll_disabled(ctx));
    grow_poll_window(ctx, kick_notifier, &e, &ns.reads);
    /* Leave poll mode if the warm-up left it on: block once. */
    block_until_timer(ctx, &bound);
    ASSERT_UINT(ns.begins, ==, ns.ends);
    ASSERT_INT(aioloop_context_get_poll_ns(ctx), >, 0);
    test_aio_drain(ctx);
    ns.begins = ns.ends = ns.poll_readies = ns.polls = 0;
    reads = ns.reads;

    /* io_poll succeeds: polling started (begin), only io_poll_ready ran. */
    test_watchdog("poll begin/end", WATCHDOG_S);
    __atomic_store_n(&ns.poll_flag, true, __ATOMIC_RELEASE);
    ret = poll_once_with_rescue(ctx, event_notifier_get_wfd(&e), &rescued);
    if (rescued) {
        TEST_FAIL_("aio_poll blocked in the kernel although io_poll of a "
                   "polled notifier returned true (polls=%u begins=%u "
                   "poll_ns=%" PRId64 ")", ns.polls, ns.begins,
                   aioloop_context_get_poll_ns(ctx));
    }
    ASSERT_TRUE(ret);
    ASSERT_UINT(ns.polls, >=, 1);
    ASSERT_UINT(ns.poll_readies, ==, 1);
    ASSERT_UINT(ns.reads, ==, reads);
    ASSERT_PTR_EQ(ns.seen, &e);
    ASSERT_UINT(ns.begins, ==, 1);
    /* Did not block, so still in poll mode. */
    ASSERT_UINT(ns.ends, ==, 0);

    /*
     * Nothing to find: the window runs out and the loop leaves poll mode
     * just before blocking (end), without a second begin.
     */
    block_until_timer(ctx, &bound);
    ASSERT_UINT(ns.ends, ==, 1);
    ASSERT_UINT(ns.begins, ==, 1);
    ASSERT_UINT(ns.poll_readies, ==, 1);
    test_watchdog_cancel();

    aio_set_event_notifier(ctx, &e, NULL, NULL, NULL);
    timer_free(bound.timer);
    event_notifier_cleanup(&e);
    aio_context_unref(ctx);
}

/*
 * QEMU's event notifier handlers are level-triggered: one that does not
 * clear its notifier is called again on every iteration, and an event set
 * before the handler is replaced reaches the new handler.  The io_uring
 * monitor once had the kernel read every eventfd notifier as it woke the
 * loop, which broke both.
 */
static unsigned level_calls, level_cleared;

static void en_peek(EventNotifier *e)
{
    (void)e;
    level_calls++;
}

static void en_clear(EventNotifier *e)
{
    level_cleared += event_notifier_test_and_clear(e);
}

TEST(event_notifier_level_triggered)
{
    AioContext *ctx = test_aio_context_new();
    EventNotifier e;

    level_calls = level_cleared = 0;
    ASSERT_EQ(event_notifier_init(&e, 0), 0);
    aio_set_event_notifier(ctx, &e, en_peek, NULL, NULL);
    test_aio_drain(ctx);
    ASSERT_EQ(event_notifier_set(&e), 0);
    for (int i = 0; i < 3; i++) {
        ASSERT_TRUE(aio_poll(ctx, false));
    }
    ASSERT_UINT(level_calls, ==, 3);

    /* Still set: the replacement handler sees it, once it clears it. */
    aio_set_event_notifier(ctx, &e, en_clear, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        aio_poll(ctx, false);
    }
    ASSERT_UINT(level_cleared, ==, 1);
    ASSERT_UINT(level_calls, ==, 3);

    aio_set_event_notifier(ctx, &e, NULL, NULL, NULL);
    event_notifier_cleanup(&e);
    aio_context_unref(ctx);
}

/*
 * aio_pending() asks; it must not consume.  The library's own notifiers
 * (aio_set_event_notifier_drained()) are read by the kernel under io_uring:
 * the event a question reaps must still reach the handler.
 */
TEST(aio_pending_consumes_nothing)
{
    AioContext *ctx = test_aio_context_new();
    EventNotifier user, own;

    level_cleared = 0;
    ASSERT_EQ(event_notifier_init(&user, 0), 0);
    ASSERT_EQ(event_notifier_init(&own, 0), 0);
    aio_set_event_notifier(ctx, &user, en_clear, NULL, NULL);
    aio_set_event_notifier_drained(ctx, &own, en_clear, NULL, NULL);
    test_aio_drain(ctx);

    ASSERT_EQ(event_notifier_set(&user), 0);
    ASSERT_TRUE(aio_pending(ctx));
    ASSERT_TRUE(aio_pending(ctx));
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(level_cleared, ==, 1);

    ASSERT_EQ(event_notifier_set(&own), 0);
    ASSERT_TRUE(aio_pending(ctx));
    ASSERT_TRUE(aio_pending(ctx));
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(level_cleared, ==, 2);
    ASSERT_FALSE(aio_pending(ctx));

    aio_set_event_notifier(ctx, &user, NULL, NULL, NULL);
    aio_set_event_notifier(ctx, &own, NULL, NULL, NULL);
    event_notifier_cleanup(&user);
    event_notifier_cleanup(&own);
    aio_context_unref(ctx);
}

/*
 * QEMU's test-nested-aio-poll: io_poll_ready() runs a nested aio_poll()
 * before clearing what made io_poll() true.  The node is off the polled
 * list meanwhile, so the nested call neither polls it nor calls
 * io_poll_ready() again (it recursed until the stack overflowed).
 */
typedef struct NestedPoll {
    AioContext *ctx;
    EventNotifier polled, dummy;
    int depth, max_depth;
    unsigned readies, dummy_reads;
} NestedPoll;

static NestedPoll np;

static bool np_poll_true(void *opaque)
{
    (void)opaque;
    return true;
}

static bool np_poll_false(void *opaque)
{
    (void)opaque;
    return false;
}

static void np_read(EventNotifier *e)
{
    if (e == &np.dummy) {
        np.dummy_reads++;
    }
    event_notifier_test_and_clear(e);
}

static void np_poll_ready(EventNotifier *e)
{
    (void)e;
    np.readies++;
    np.depth++;
    np.max_depth = MAX(np.max_depth, np.depth);
    if (np.depth < 50) {
        /* Something for the nested call to do, so it does not block. */
        event_notifier_set(&np.dummy);
        aio_poll(np.ctx, true);
    }
    np.depth--;
}

static void np_never_ready(EventNotifier *e)
{
    (void)e;
    TEST_FAIL_("io_poll_ready of a handler whose io_poll is false ran");
}

TEST(nested_aio_poll_in_io_poll_ready)
{
    Error *err = NULL;

    memset(&np, 0, sizeof(np));
    np.ctx = test_aio_context_new();
    aio_context_set_poll_params(np.ctx, 1000000, 2, 2, &err);
    ASSERT_NULL(err);
    ASSERT_EQ(event_notifier_init(&np.polled, 0), 0);
    ASSERT_EQ(event_notifier_init(&np.dummy, 0), 0);
    aio_set_event_notifier(np.ctx, &np.polled, np_read, np_poll_true,
                           np_poll_ready);
    aio_set_event_notifier(np.ctx, &np.dummy, np_read, np_poll_false,
                           np_never_ready);
    test_aio_drain(np.ctx);
    /* The first dispatch puts the handler on the polled list. */
    event_notifier_set(&np.polled);
    test_watchdog("nested aio_poll in io_poll_ready", WATCHDOG_S);
    for (int i = 0; i < 3; i++) {
        ASSERT_TRUE(aio_poll(np.ctx, true));
    }
    test_watchdog_cancel();
    ASSERT_UINT(np.readies, >=, 1);
    ASSERT_INT(np.max_depth, ==, 1);
    ASSERT_UINT(np.dummy_reads, ==, np.readies);

    aio_set_event_notifier(np.ctx, &np.dummy, NULL, NULL, NULL);
    aio_set_event_notifier(np.ctx, &np.polled, NULL, NULL, NULL);
    event_notifier_cleanup(&np.dummy);
    event_notifier_cleanup(&np.polled);
    aio_context_unref(np.ctx);
}

/*
 * A handler idle in the polled list for poll_idle_ns leaves it: io_poll_end()
 * re-enables its notifications, then one last io_poll() catches an event
 * that came while they were off (a device that saw notifications disabled
 * sends no kick).  Without that poll the event waited for another one.
 */
typedef struct IdlePoll {
    AioContext *ctx;
    EventNotifier e;
    bool pending;
    bool triggered;
    unsigned readies, ticks_after;
    QEMUTimer *tick;
} IdlePoll;

static IdlePoll ip;

static bool ip_poll(void *opaque)
{
    (void)opaque;
    return ip.pending;
}

static void ip_ready(EventNotifier *e)
{
    (void)e;
    ip.readies++;
    ip.pending = false;
}

static void ip_read(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
    ip.pending = false;
}

static void ip_begin(EventNotifier *e)
{
    (void)e;
}

static void ip_end(EventNotifier *e)
{
    AioHandler *node = ip.ctx->fd_table.nodes[event_notifier_get_fd(e)];

    /* Dropped for idleness (not leaving poll mode to block): off the list. */
    if (!ip.triggered && !QLIST_IS_INSERTED(node, node_poll)) {
        ip.triggered = true;
        ip.pending = true; /* no kick: notifications were off */
    }
}

static void ip_tick(void *opaque)
{
    (void)opaque;
    if (ip.triggered) {
        ip.ticks_after++;
    }
    timer_mod_ns(ip.tick, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + 1000000);
}

TEST(idle_polled_handler_gets_a_last_poll)
{
    Error *err = NULL;

    memset(&ip, 0, sizeof(ip));
    ip.ctx = test_aio_context_new();
    ip.ctx->poll_idle_ns = 20 * 1000 * 1000;
    aio_context_set_poll_params(ip.ctx, 1000000, 0, 0, &err);
    ASSERT_NULL(err);
    ASSERT_EQ(event_notifier_init(&ip.e, 0), 0);
    aio_set_event_notifier(ip.ctx, &ip.e, ip_read, ip_poll, ip_ready);
    aio_set_event_notifier_poll(ip.ctx, &ip.e, ip_begin, ip_end);
    test_aio_drain(ip.ctx);
    event_notifier_set(&ip.e);
    ASSERT_TRUE(aio_poll(ip.ctx, true)); /* joins the polled list */
    ip.tick = aio_timer_new(ip.ctx, QEMU_CLOCK_REALTIME, SCALE_NS, ip_tick,
                            NULL);
    ip_tick(NULL);

    test_watchdog("idle polled handler", WATCHDOG_S);
    /* A few ticks after the drop: time enough for a kick that never comes. */
    while (!ip.readies && ip.ticks_after < 20) {
        aio_poll(ip.ctx, true);
    }
    test_watchdog_cancel();
    ASSERT_TRUE(ip.triggered);
    ASSERT_UINT(ip.readies, ==, 1);
    ASSERT_FALSE(ip.pending);

    timer_free(ip.tick);
    aio_set_event_notifier(ip.ctx, &ip.e, NULL, NULL, NULL);
    event_notifier_cleanup(&ip.e);
    aio_context_unref(ip.ctx);
}

/* ---- adaptive polling on a plain fd handler ---------------------------- */

typedef struct Pollable {
    int fd;
    unsigned reads, polls, poll_readies;
    bool flag;
    /* The next io_poll() writes the eventfd itself (and says no). */
    bool kick_in_poll;
} Pollable;

static void pollable_read(void *opaque)
{
    Pollable *p = opaque;

    p->reads++;
    test_eventfd_drain(p->fd);
}

static bool pollable_poll(void *opaque)
{
    Pollable *p = opaque;

    p->polls++;
    if (p->kick_in_poll) {
        p->kick_in_poll = false;
        test_eventfd_write(p->fd);
    }
    return __atomic_load_n(&p->flag, __ATOMIC_ACQUIRE);
}

static void pollable_ready(void *opaque)
{
    Pollable *p = opaque;

    p->poll_readies++;
    p->flag = false;
}

/*
 * A context with one pollable eventfd handler whose polling window has
 * started growing (@poll_max_ns is the context's maximum).
 */
static AioContext *pollable_start(Pollable *p, int64_t poll_max_ns)
{
    AioContext *ctx = test_aio_context_new();
    Error *err = NULL;

    p->fd = test_eventfd();
    aio_context_set_poll_params(ctx, poll_max_ns, 0, 0, &err);
    ASSERT_NULL(err);
    aio_set_fd_handler(ctx, p->fd, pollable_read, NULL, pollable_poll,
                       pollable_ready, p);
    grow_poll_window(ctx, kick_eventfd, &p->fd, &p->reads);
    return ctx;
}

static void pollable_stop(AioContext *ctx, Pollable *p)
{
    aio_set_fd_handler(ctx, p->fd, NULL, NULL, NULL, NULL, NULL);
    close(p->fd);
    aio_context_unref(ctx);
}

TEST(adaptive_poll_calls_io_poll_ready)
{
    Pollable p = { 0 };
    AioContext *ctx;
    Error *err = NULL;
    AioloopContextStats st0, st1;
    bool ret, rescued;
    unsigned reads;

    ctx = pollable_start(&p, 1000000);
    reads = p.reads;
    aioloop_context_get_stats(ctx, &st0);

    test_watchdog("adaptive polling", WATCHDOG_S);
    for (int round = 1; round <= 3; round++) {
        __atomic_store_n(&p.flag, true, __ATOMIC_RELEASE);
        ret = poll_once_with_rescue(ctx, p.fd, &rescued);
        if (rescued) {
            TEST_FAIL_("round %d: aio_poll blocked in the kernel although "
                       "io_poll returned true (polls=%u poll_ns=%" PRId64 ")",
                       round, p.polls, aioloop_context_get_poll_ns(ctx));
        }
        ASSERT_TRUE(ret);
        ASSERT_UINT(p.poll_readies, ==, (unsigned)round);
        ASSERT_UINT(p.reads, ==, reads);
    }
    test_watchdog_cancel();
    aioloop_context_get_stats(ctx, &st1);
    ASSERT_UINT(st1.poll_hits, >=, st0.poll_hits + 3);

    /* With polling off, the same flag is never looked at by a blocking poll. */
    aio_context_set_poll_params(ctx, 0, 0, 0, &err);
    ASSERT_NULL(err);
    aio_poll(ctx, false);
    ASSERT_INT(aioloop_context_get_poll_ns(ctx), ==, 0);

    pollable_stop(ctx, &p);
}

/*
 * A wake-up through the fd must not end polling for the next iteration:
 * with io_uring the fd's one-shot poll request is queued for re-arming
 * after every such dispatch, and that alone must not make aio_poll() block
 * without polling first.
 */
TEST(poll_continues_after_fd_wakeup)
{
    Pollable p = { 0 };
    AioContext *ctx;
    bool rescued;

    /*
     * A maximum no scheduling delay reaches: each fd-delivered wake-up is
     * measured, and one that looks longer than the maximum resets the
     * window to zero by the rules (with 1 ms, a preemption under TSan on a
     * loaded 2-CPU machine did), which is not what this test is about.
     */
    ctx = pollable_start(&p, 1000LL * 1000 * 1000);

    test_watchdog("poll after fd wake-up", WATCHDOG_S);
    for (int round = 1; round <= 3; round++) {
        unsigned reads = p.reads;

        /* Delivered by the fd monitor (io_poll says no). */
        test_eventfd_write(p.fd);
        while (p.reads == reads) {
            aio_poll(ctx, true);
        }
        /* The very next blocking poll finds the flag by polling. */
        __atomic_store_n(&p.flag, true, __ATOMIC_RELEASE);
        poll_once_with_rescue(ctx, p.fd, &rescued);
        if (rescued) {
            TEST_FAIL_("round %d: aio_poll blocked in the kernel right after "
                       "an fd wake-up instead of polling", round);
        }
        ASSERT_UINT(p.poll_readies, ==, (unsigned)round);
    }
    test_watchdog_cancel();

    pollable_stop(ctx, &p);
}

/*
 * Windows that keep missing (the event only comes once we block, as when
 * the producer shares our CPU) must switch polling off for a while, whatever
 * size they reached: doubling from 4 us never lands exactly on poll_max_ns.
 * When the back-off ends, one probing window that misses is enough to back
 * off again, for longer.
 */
TEST(adaptive_poll_backs_off_after_missed_windows)
{
    Pollable p = { 0 };
    AioContext *ctx;
    enum { ROUNDS = 160 };
    int64_t window[ROUNDS];
    int first_off = -1, probes = 0;

    /*
     * A maximum no wake-up reaches (the rescue thread notices a sleeping
     * thread within milliseconds): the window can only shrink to zero, and
     * stay there, by the miss rule.
     */
    ctx = pollable_start(&p, 1000LL * 1000 * 1000);

    test_watchdog("poll back-off", WATCHDOG_S);
    for (int i = 0; i < ROUNDS; i++) {
        unsigned before = p.reads;

        /*
         * io_poll never succeeds, and the fd is written only once we
         * block: every window misses.
         */
        while (p.reads == before) {
            bool rescued;

            poll_once_with_rescue(ctx, p.fd, &rescued);
        }
        window[i] = aioloop_context_get_poll_ns(ctx);
        if (window[i] == 0 && first_off < 0) {
            first_off = i;
        }
    }
    test_watchdog_cancel();
    printf("# polling off after %d missed windows\n", first_off + 1);
    ASSERT_INT(first_off, >=, 0);
    ASSERT_INT(first_off, <, 8);
    /* Backed off, not merely shrunk: it stays off for a while. */
    for (int i = first_off; i < first_off + 32; i++) {
        ASSERT_INT(window[i], ==, 0);
    }
    /*
     * The first back-off lasts 64 dispatches, the next 128: in between,
     * polling comes back for one probe only (not four growing windows).
     */
    for (int i = first_off; i < ROUNDS; i++) {
        probes += window[i] != 0;
    }
    printf("# %d dispatches with a polling window after back-off\n", probes);
    ASSERT_INT(ROUNDS - first_off, >, 64 + 8);
    ASSERT_INT(probes, >=, 1);
    ASSERT_INT(probes, <=, 2);
    ASSERT_UINT(p.poll_readies, ==, 0);

    pollable_stop(ctx, &p);
}

/*
 * Rounds alternate: an event inside the polling window, then a real miss
 * (nothing until the thread blocks).  The window must never drop to zero:
 * a window that caught its event is a hit and clears the misses, or the
 * odd real miss piles up into a back-off that switches polling off
 * although most windows pay (a QD1 NBD client did just that).
 *
 * @io_poll_sees_it false: io_poll() writes the eventfd and says no, so only
 * the fd monitor sees the event (io_uring's armed POLL_ADD completes as the
 * data lands, often before io_poll() looks again).  True: io_poll() says
 * yes too, and io_uring's reap reports the fd as well, which must not
 * make the hit count as a plain fd event.
 *
 * One attempt at the rounds: NULL if every in-window round was a hit,
 * else what went wrong.
 */
static const char *in_window_rounds(Pollable *p, AioContext *ctx,
                                    bool io_poll_sees_it)
{
    static char why[160];
    enum { ROUNDS = 12 };

    for (int i = 0; i < ROUNDS; i++) {
        unsigned before = p->reads + p->poll_readies;
        bool in_window = i % 2 == 0;
        bool rescued = false;

        p->kick_in_poll = in_window;
        __atomic_store_n(&p->flag, in_window && io_poll_sees_it,
                         __ATOMIC_RELEASE);
        while (p->reads + p->poll_readies == before) {
            poll_once_with_rescue(ctx, p->fd, &rescued);
        }
        if (in_window && rescued) {
            snprintf(why, sizeof(why), "round %d: aio_poll blocked instead "
                     "of polling (window %" PRId64 " ns)", i,
                     aioloop_context_get_poll_ns(ctx));
            return why;
        }
        ASSERT_FALSE(p->kick_in_poll);
        if (aioloop_context_get_poll_ns(ctx) == 0) {
            snprintf(why, sizeof(why), "round %d: polling backed off "
                     "although every other window caught its event", i);
            return why;
        }
        /* Whatever the dispatch left: the next round starts clean. */
        __atomic_store_n(&p->flag, false, __ATOMIC_RELEASE);
        test_eventfd_drain(p->fd);
        for (int j = 0; j < 3; j++) {
            aio_poll(ctx, false);
        }
    }
    return NULL;
}

/* Involuntary context switches of the calling thread so far. */
static long involuntary_switches(void)
{
    struct rusage ru;

    ASSERT_EQ(getrusage(RUSAGE_THREAD, &ru), 0);
    return ru.ru_nivcsw;
}

static void check_in_window_events_are_hits(bool io_poll_sees_it)
{
    enum { ATTEMPTS = 5 };

    for (int attempt = 1;; attempt++) {
        Pollable p = { 0 };
        AioContext *ctx;
        const char *why;
        long switches;

        /* Windows grow with each real miss; 6 misses stay well under 1 s. */
        ctx = pollable_start(&p, 1000LL * 1000 * 1000);
        test_watchdog("events inside the polling window", WATCHDOG_S);
        switches = involuntary_switches();
        why = in_window_rounds(&p, ctx, io_poll_sees_it);
        switches = involuntary_switches() - switches;
        test_watchdog_cancel();
        pollable_stop(ctx, &p);
        if (!why) {
            return;
        }
        /*
         * Only a thread that kept its CPU tells a hit from a miss: one
         * preempted between the event and the end of a window of a few
         * hundred microseconds finds the window over when it looks, which
         * is a miss by the rules.  Such an attempt proves nothing.
         */
        if (switches == 0 || attempt == ATTEMPTS) {
            TEST_FAIL_("%s (attempt %d; this thread was preempted %ld "
                       "times in it)", why, attempt, switches);
        }
        printf("# attempt %d: %s, but this thread was preempted %ld times "
               "in it: again\n", attempt, why, switches);
    }
}

TEST(adaptive_poll_fdmon_event_in_window_is_a_hit)
{
    AioContext *probe = test_aio_context_new();
    bool io_uring = strcmp(aioloop_context_fdmon_name(probe), "io_uring") == 0;

    aio_context_unref(probe);
    if (!io_uring) {
        printf("# skipped: only io_uring's fd monitor sees events while "
               "polling\n");
        return;
    }
    check_in_window_events_are_hits(false);
}

TEST(adaptive_poll_io_poll_hit_also_seen_by_fdmon)
{
    check_in_window_events_are_hits(true);
}

/*
 * Waits with block requests in flight.  The pool has one worker, held by a
 * job until the test releases it, so a read on the threads engine stays in
 * flight for as long as the test wants.
 */
typedef struct SlowDisk {
    sem_t release;
    int fd;
    uint8_t buf[4096];
    int ret;
    bool done;
} SlowDisk;

static int slow_disk_blocker(void *opaque)
{
    SlowDisk *d = opaque;

    while (sem_wait(&d->release) < 0 && errno == EINTR) {
    }
    return 0;
}

static void coroutine_fn slow_disk_read_co(void *opaque)
{
    SlowDisk *d = opaque;
    QEMUIOVector qiov;

    qemu_iovec_init_buf(&qiov, d->buf, sizeof(d->buf));
    d->ret = aioloop_co_preadv(d->fd, 0, &qiov, 0);
    d->done = true;
}

static uint64_t poll_misses(AioContext *ctx)
{
    AioloopContextStats st;

    aioloop_context_get_stats(ctx, &st);
    return st.poll_misses;
}

static uint64_t poll_hits(AioContext *ctx)
{
    AioloopContextStats st;

    aioloop_context_get_stats(ctx, &st);
    return st.poll_hits;
}

/*
 * A server's socket handler keeps a full window (its requests come soon
 * after each reply), but a wait that ends with a slow disk's completion is
 * not the socket's to learn from.  With a block request in flight, waits
 * that each end 20 ms later must stop spinning; fast events with the
 * request still in flight must still be polled.
 */
TEST(adaptive_poll_waits_on_slow_block_io_stop_spinning)
{
    enum { ROUNDS = 10 };
    Pollable p = { 0 };
    SlowDisk d = { .fd = -1 };
    AioloopBlockStats bst;
    AioContext *ctx;
    Error *err = NULL;
    Bound bound;
    uint64_t misses, hits;
    bool rescued;

    ctx = pollable_start(&p, 100 * 1000);
    bound_init(&bound, ctx);
    qemu_set_current_aio_context(ctx);
    aio_context_set_thread_pool_params(ctx, 0, 1, &err);
    ASSERT_NULL(err);
    ASSERT_INT(aioloop_block_engine_select(ctx, AIOLOOP_BLOCK_ENGINE_THREADS,
                                           &err), ==,
               AIOLOOP_BLOCK_ENGINE_THREADS);
    ASSERT_NULL(err);
    ASSERT_EQ(sem_init(&d.release, 0, 0), 0);
    d.fd = memfd_create("slow-disk", 0);
    ASSERT_INT(d.fd, >=, 0);
    ASSERT_EQ(ftruncate(d.fd, sizeof(d.buf)), 0);

    test_watchdog("polling with a slow disk", WATCHDOG_S);
    thread_pool_submit_aio(slow_disk_blocker, &d, NULL, NULL);
    aio_co_enter(ctx, qemu_coroutine_create(slow_disk_read_co, &d));
    aioloop_block_get_stats(ctx, &bst);
    ASSERT_UINT(bst.inflight, ==, 1);
    ASSERT_INT(aioloop_context_get_poll_ns(ctx), >, 0);

    /* Each wait ends with a timer, 20 ms on: spinning never pays. */
    misses = poll_misses(ctx);
    for (int i = 0; i < ROUNDS; i++) {
        block_until_timer(ctx, &bound);
    }
    misses = poll_misses(ctx) - misses;
    printf("# %" PRIu64 " of %d slow waits spun a window\n", misses, ROUNDS);
    ASSERT_UINT(misses, <=, 2);
    /* The socket-like handler keeps its window for its own events. */
    ASSERT_INT(aioloop_context_get_poll_ns(ctx), >, 0);

    /*
     * Events that come at once, the read still in flight: the window for
     * such waits grows again, and io_poll() finds the event.
     */
    hits = poll_hits(ctx);
    for (int i = 0; i < ROUNDS && poll_hits(ctx) == hits; i++) {
        unsigned before = p.reads;

        test_eventfd_write(p.fd);
        while (p.reads == before) {
            aio_poll(ctx, true);
        }
        for (int j = 0; j < 3; j++) {
            aio_poll(ctx, false);
        }
        __atomic_store_n(&p.flag, true, __ATOMIC_RELEASE);
        poll_once_with_rescue(ctx, p.fd, &rescued);
        __atomic_store_n(&p.flag, false, __ATOMIC_RELEASE);
        test_eventfd_drain(p.fd);
    }
    if (poll_hits(ctx) == hits) {
        TEST_FAIL_("with a block request in flight, events that come at "
                   "once are never polled");
    }
    ASSERT_FALSE(d.done);

    sem_post(&d.release);
    while (!d.done) {
        aio_poll(ctx, true);
    }
    ASSERT_EQ(d.ret, 0);
    test_watchdog_cancel();

    timer_free(bound.timer);
    qemu_set_current_aio_context(NULL);
    close(d.fd);
    sem_destroy(&d.release);
    pollable_stop(ctx, &p);
}

TEST(io_poll_without_io_poll_ready_is_dropped)
{
    AioContext *ctx = test_aio_context_new();
    Pollable p = { .fd = test_eventfd() };
    Error *err = NULL;

    aio_context_set_poll_params(ctx, 1000000, 0, 0, &err);
    ASSERT_NULL(err);
    ASSERT_FALSE(aio_poll_disabled(ctx));
    aio_set_fd_handler(ctx, p.fd, pollable_read, NULL, pollable_poll, NULL,
                       &p);
    /* Counted as a handler without io_poll. */
    ASSERT_TRUE(aio_poll_disabled(ctx));
    p.flag = true;
    for (unsigned i = 1; i <= 20; i++) {
        test_eventfd_write(p.fd);
        while (p.reads < i) {
            aio_poll(ctx, true);
        }
    }
    ASSERT_UINT(p.polls, ==, 0);
    ASSERT_UINT(p.poll_readies, ==, 0);
    ASSERT_INT(aioloop_context_get_poll_ns(ctx), ==, 0);

    aio_set_fd_handler(ctx, p.fd, NULL, NULL, NULL, NULL, NULL);
    ASSERT_FALSE(aio_poll_disabled(ctx));
    close(p.fd);
    aio_context_unref(ctx);
}

TEST(poll_disabled_tracks_handlers)
{
    AioContext *ctx = test_aio_context_new();
    Pollable p = { .fd = test_eventfd() };
    Pollable q = { .fd = test_eventfd() };

    /* The context's own notifier is pollable. */
    ASSERT_FALSE(aio_poll_disabled(ctx));
    aio_set_fd_handler(ctx, p.fd, pollable_read, NULL, pollable_poll,
                       pollable_ready, &p);
    ASSERT_FALSE(aio_poll_disabled(ctx));
    aio_set_fd_handler(ctx, q.fd, pollable_read, NULL, NULL, NULL, &q);
    ASSERT_TRUE(aio_poll_disabled(ctx));
    /* Replace the non-pollable one by a pollable one. */
    aio_set_fd_handler(ctx, q.fd, pollable_read, NULL, pollable_poll,
                       pollable_ready, &q);
    ASSERT_FALSE(aio_poll_disabled(ctx));
    /* And a pollable one by a non-pollable one. */
    aio_set_fd_handler(ctx, p.fd, pollable_read, NULL, NULL, NULL, &p);
    ASSERT_TRUE(aio_poll_disabled(ctx));
    aio_set_fd_handler(ctx, p.fd, NULL, NULL, NULL, NULL, NULL);
    ASSERT_FALSE(aio_poll_disabled(ctx));
    aio_set_fd_handler(ctx, q.fd, NULL, NULL, NULL, NULL, NULL);
    ASSERT_FALSE(aio_poll_disabled(ctx));
    /* Same through event notifiers. */
    EventNotifier e;
    ASSERT_EQ(event_notifier_init(&e, 0), 0);
    aio_set_event_notifier(ctx, &e, en_read, NULL, NULL);
    ASSERT_TRUE(aio_poll_disabled(ctx));
    aio_set_event_notifier(ctx, &e, en_read, en_poll, en_poll_ready);
    ASSERT_FALSE(aio_poll_disabled(ctx));
    aio_set_event_notifier(ctx, &e, NULL, NULL, NULL);
    ASSERT_FALSE(aio_poll_disabled(ctx));

    event_notifier_cleanup(&e);
    close(p.fd);
    close(q.fd);
    aio_context_unref(ctx);
}

/* ---- a non-blocking aio_poll with all handlers pollable: no syscall ---- */

/* Shared with the child: the first forbidden syscall it made. */
static volatile long *nosys_nr;

static void nosys_sigsys(int sig, siginfo_t *info, void *uctx)
{
    (void)sig;
    (void)uctx;
    *nosys_nr = info->si_syscall;
    _exit(3);
}

static void nosys_child(void)
{
    AioContext *ctx = test_aio_context_new();
    Pollable p = { .fd = test_eventfd() };
    struct sigaction sa;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                 offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit, 1, 0),
        /* Trap (SIGSYS, reported to the parent); a blocked SIGSYS kills. */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = sizeof(filter) / sizeof(filter[0]),
        .filter = filter,
    };

    aio_set_fd_handler(ctx, p.fd, pollable_read, NULL, pollable_poll,
                       pollable_ready, &p);
    /* Warm up: bind the home thread, let io_uring submit what it queued. */
    for (int i = 0; i < 5; i++) {
        aio_poll(ctx, false);
    }
    if (aio_poll_disabled(ctx)) {
        _exit(4);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = nosys_sigsys;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSYS, &sa, NULL) < 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
        _exit(5);
    }
    for (int i = 0; i < 3; i++) {
        aio_poll(ctx, false);
    }
    _exit(0);
}

TEST(nonblocking_poll_all_pollable_makes_no_syscall)
{
    pid_t pid;
    int status;

#if TEST_SANITIZED
    printf("# skipped: the sanitizer runtime makes syscalls of its own "
           "inside instrumented code\n");
    return;
#endif
#if !defined(__x86_64__)
    printf("# skipped: the seccomp filter is written for x86_64\n");
    return;
#endif
    nosys_nr = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_TRUE(nosys_nr != MAP_FAILED);
    *nosys_nr = -1;
    fflush(NULL);
    pid = fork();
    ASSERT_INT(pid, >=, 0);
    if (pid == 0) {
        nosys_child();
    }
    ASSERT_INT(waitpid(pid, &status, 0), ==, pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
        TEST_FAIL_("non-blocking aio_poll with only pollable handlers made "
                   "syscall %ld", *nosys_nr);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 4) {
        TEST_FAIL_("aio_poll_disabled() true with only pollable handlers");
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 5) {
        printf("# skipped: cannot install a seccomp filter here\n");
        munmap((void *)nosys_nr, 4096);
        return;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        TEST_FAIL_("child status 0x%x (signal %d)", status,
                   WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    munmap((void *)nosys_nr, 4096);
}

/* ---- io_uring: completions a busy thread has not entered the kernel for -- */

typedef struct LateWriter {
    int fd;
    bool go, written;
} LateWriter;

static void *late_writer(void *opaque)
{
    LateWriter *w = opaque;

    /* Not before the home thread is back from pthread_create(). */
    while (!__atomic_load_n(&w->go, __ATOMIC_ACQUIRE)) {
        __asm__ __volatile__("" ::: "memory");
    }
    test_eventfd_write(w->fd);
    __atomic_store_n(&w->written, true, __ATOMIC_RELEASE);
    return NULL;
}

/*
 * With COOP_TASKRUN the kernel does not IPI a thread running in user space
 * to post its completion: the work waits for the thread's next entry into
 * the kernel, flagged in the SQ ring.  A thread that spins without system
 * calls (as busy-polling on memory does) must still see the event: a
 * non-blocking aio_poll() right after the fd became readable dispatches it.
 * (An interrupt on the home CPU may post it earlier; then this passes for
 * that reason, never fails.)
 */
TEST(io_uring_pending_task_work_counts_as_ready)
{
    AioContext *ctx = test_aio_context_new();
    Pollable p = { .fd = test_eventfd() };
    LateWriter w = { .fd = p.fd };
    pthread_t t;

    if (strcmp(aioloop_context_fdmon_name(ctx), "io_uring") != 0) {
        printf("# skipped: io_uring only\n");
        close(p.fd);
        aio_context_unref(ctx);
        return;
    }
    aio_set_fd_handler(ctx, p.fd, pollable_read, NULL, NULL, NULL, &p);
    /* Arm the fd's POLL_ADD. */
    for (int i = 0; i < 3; i++) {
        aio_poll(ctx, false);
    }
    ASSERT_UINT(p.reads, ==, 0);

    t = test_thread_start(late_writer, &w);
    /* No system call on this thread from here to aio_poll(). */
    __atomic_store_n(&w.go, true, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&w.written, __ATOMIC_ACQUIRE)) {
        __asm__ __volatile__("" ::: "memory");
    }
    ASSERT_TRUE(aio_poll(ctx, false));
    ASSERT_UINT(p.reads, ==, 1);
    test_thread_join(t);

    aio_set_fd_handler(ctx, p.fd, NULL, NULL, NULL, NULL, NULL);
    close(p.fd);
    aio_context_unref(ctx);
}

/* ---- io_uring: one system call per wake-up through the eventfd -------- */

/*
 * A wake-up through the context's eventfd costs the woken thread one
 * system call.  With a handler besides the notifier, that is the
 * io_uring_enter() whose linked READ empties the eventfd: the thread must
 * not read() it as well.  With the notifier alone, after the first wake-up
 * (which completes the READ armed before) the thread waits in a read() of
 * the eventfd: it must not enter the ring at all.
 */
typedef struct OneCallWaker {
    AioContext *ctx;
    pid_t home;
    sem_t go;
    QEMUBH *bh;
    int rounds;
} OneCallWaker;

static void *onecall_waker(void *opaque)
{
    OneCallWaker *w = opaque;

    for (int i = 0; i < w->rounds; i++) {
        sem_wait(&w->go);
        /* Only once the home thread sleeps in its wait. */
        test_wait_thread_sleeping(w->home, NULL);
        qemu_bh_schedule(w->bh);
    }
    return NULL;
}

static void onecall_count(void *opaque)
{
    (*(unsigned *)opaque)++;
}

static void onecall_noop(void *opaque)
{
    (void)opaque;
}

/*
 * @trapped: the system calls (up to ONECALL_MAX, ended by -1) the home
 * thread must not make while it waits and wakes; @other_handler: register
 * a handler besides the notifier.
 */
#define ONECALL_MAX 3

static void onecall_child(const long *trapped, bool other_handler)
{
    AioContext *ctx = test_aio_context_new();
    unsigned runs = 0;
    OneCallWaker w = { .ctx = ctx, .home = test_gettid(), .rounds = 3 };
    int quiet = test_eventfd();
    struct sigaction sa;
    pthread_t t;
    /* Trap them in this thread only (no TSYNC): the waker may read /proc. */
    struct sock_filter filter[6 + ONECALL_MAX] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                 offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    };
    struct sock_fprog prog;
    unsigned n = 0;

    while (n < ONECALL_MAX && trapped[n] >= 0) {
        n++;
    }
    for (unsigned i = 0; i < n; i++) {
        /* Equal: jump over the other tests and the ALLOW to the TRAP. */
        filter[4 + i] = (struct sock_filter)BPF_JUMP(
            BPF_JMP | BPF_JEQ | BPF_K, (unsigned)trapped[i],
            (unsigned char)(n - i), 0);
    }
    filter[4 + n] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
                                                 SECCOMP_RET_ALLOW);
    filter[5 + n] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
                                                 SECCOMP_RET_TRAP);
    prog.len = (unsigned short)(6 + n);
    prog.filter = filter;

    w.bh = aio_bh_new(ctx, onecall_count, &runs);
    sem_init(&w.go, 0, 0);
    t = test_thread_start(onecall_waker, &w);
    if (other_handler) {
        /* Never readable: it only keeps the notifier from being alone. */
        aio_set_fd_handler(ctx, quiet, onecall_noop, NULL, NULL, NULL, NULL);
    }
    test_aio_drain(ctx);
    /* io_uring: one wake-up through the ring completes the armed READ. */
    event_notifier_set(&ctx->notifier);
    aio_poll(ctx, true);
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = nosys_sigsys;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSYS, &sa, NULL) < 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
        _exit(5);
    }
    for (unsigned i = 1; i <= (unsigned)w.rounds; i++) {
        sem_post(&w.go);
        while (runs < i) {
            aio_poll(ctx, true);
        }
    }
    test_thread_join(t);
    _exit(0);
}

static void onecall_run(const char *what, const long *trapped,
                        bool other_handler)
{
    AioContext *probe = test_aio_context_new();
    bool direct = probe->notifier_blocking;
    pid_t pid;
    int status;

    aio_context_unref(probe);
    if (!other_handler && !direct) {
        printf("# skipped: the notifier is not read directly here\n");
        return;
    }
#if TEST_SANITIZED
    printf("# skipped: the sanitizer runtime makes syscalls of its own "
           "inside instrumented code\n");
    return;
#endif
#if !defined(__x86_64__)
    printf("# skipped: the seccomp filter is written for x86_64\n");
    return;
#endif
    nosys_nr = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_TRUE(nosys_nr != MAP_FAILED);
    *nosys_nr = -1;
    fflush(NULL);
    test_watchdog(what, WATCHDOG_S);
    pid = fork();
    ASSERT_INT(pid, >=, 0);
    if (pid == 0) {
        onecall_child(trapped, other_handler);
    }
    ASSERT_INT(waitpid(pid, &status, 0), ==, pid);
    test_watchdog_cancel();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
        TEST_FAIL_("%s: the home thread made syscall %ld", what, *nosys_nr);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 5) {
        printf("# skipped: cannot install a seccomp filter here\n");
        munmap((void *)nosys_nr, 4096);
        return;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        TEST_FAIL_("%s: child status 0x%x (signal %d)", what, status,
                   WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    munmap((void *)nosys_nr, 4096);
}

/*
 * Make @ctx's next wait without a timeout a read() of its notifier (under
 * io_uring: its READ completed and it is not armed again, as after any
 * wake-up through it).  False if this context never reads it directly.
 */
static bool notifier_make_idle(AioContext *ctx)
{
    if (!ctx->notifier_blocking) {
        return false;
    }
    test_aio_drain(ctx);
    event_notifier_set(&ctx->notifier);
    aio_poll(ctx, true);
    return true;
}

/* Once the home thread sleeps: register a handler on p's fd and kick it. */
typedef struct LateHandler {
    AioContext *ctx;
    pid_t home;
    Pollable *p;
    QEMUBH *bh;       /* or, with no fd: schedule this */
    sem_t *release;   /* or, with no fd and no BH: post this */
} LateHandler;

static void *late_handler_thread(void *opaque)
{
    LateHandler *h = opaque;

    test_wait_thread_sleeping(h->home, NULL);
    if (h->release) {
        sem_post(h->release);
        return NULL;
    }
    if (h->bh) {
        qemu_bh_schedule(h->bh);
        return NULL;
    }
    aio_set_fd_handler(h->ctx, h->p->fd, pollable_read, NULL, NULL, NULL,
                       h->p);
    test_eventfd_write(h->p->fd);
    return NULL;
}

/*
 * A handler that another thread adds while the home thread waits in a
 * read() of the notifier is watched: aio_set_fd_handler()'s aio_notify()
 * ends the read, and the next wait watches both.
 */
TEST(handler_added_during_notifier_read_is_watched)
{
    AioContext *ctx = test_aio_context_new();
    Pollable p = { .fd = test_eventfd() };
    LateHandler h = { .ctx = ctx, .home = test_gettid(), .p = &p };
    uint64_t reads0;
    pthread_t t;

    if (!notifier_make_idle(ctx)) {
        printf("# skipped: the notifier is not read directly here\n");
        close(p.fd);
        aio_context_unref(ctx);
        return;
    }
    reads0 = ctx->notifier_reads;
    test_watchdog("handler added during the notifier's read() never ran",
                  WATCHDOG_S);
    t = test_thread_start(late_handler_thread, &h);
    while (p.reads == 0) {
        aio_poll(ctx, true);
    }
    test_thread_join(t);
    test_watchdog_cancel();
    ASSERT_UINT(p.reads, ==, 1);
    /* It was in the read() when the handler came. */
    ASSERT_UINT(ctx->notifier_reads, >, reads0);

    aio_set_fd_handler(ctx, p.fd, NULL, NULL, NULL, NULL, NULL);
    close(p.fd);
    aio_context_unref(ctx);
}

/*
 * An outer loop (GSource, main loop) polls the ring's fd, not the
 * eventfd: its prepare must arm an idle notifier again, or a BH scheduled
 * from another thread while it polls would not wake it.
 */
TEST(idle_notifier_wakes_outer_poll)
{
    AioContext *ctx = test_aio_context_new();
    unsigned runs = 0;
    QEMUBH *bh = aio_bh_new(ctx, onecall_count, &runs);
    LateHandler h = { .ctx = ctx, .home = test_gettid(), .bh = bh };
    struct pollfd pfds[8];
    pthread_t t;
    int n, ret;

    if (!notifier_make_idle(ctx)) {
        printf("# skipped: the notifier is not read directly here\n");
        qemu_bh_delete(bh);
        aio_poll(ctx, false);
        aio_context_unref(ctx);
        return;
    }
    ASSERT_INT(aio_source_prepare(ctx), <, 0);
    n = aio_source_fds(ctx, pfds, 8);
    ASSERT_INT(n, >, 0);
    t = test_thread_start(late_handler_thread, &h);
    /* Not a timing assertion: a lost wake-up would wait forever. */
    ret = poll(pfds, n, WATCHDOG_S * 1000);
    test_thread_join(t);
    ASSERT_INT(ret, >, 0);
    if (aio_source_check(ctx, true)) {
        aio_source_dispatch(ctx, true);
    }
    ASSERT_UINT(runs, ==, 1);

    qemu_bh_delete(bh);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

static void slow_disk_blocker_done(void *opaque, int ret)
{
    SlowDisk *d = opaque;

    d->ret = ret;
    d->done = true;
}

/*
 * io_uring: with a thread-pool job in flight the wait is io_uring_enter(),
 * not a read() of the notifier, although the notifier is the only handler
 * (see work_in_other_threads() in fdmon-io_uring.c).  The job completes
 * and wakes the loop either way.
 */
TEST(io_uring_pool_job_in_flight_waits_in_ring)
{
    AioContext *ctx = test_aio_context_new();
    SlowDisk d = { .fd = -1 };
    LateHandler h = { .ctx = ctx, .home = test_gettid(),
                      .release = &d.release };
    uint64_t reads0;
    pthread_t t;

    if (strcmp(aioloop_context_fdmon_name(ctx), "io_uring") != 0 ||
        !notifier_make_idle(ctx)) {
        printf("# skipped: io_uring with a directly read notifier only\n");
        aio_context_unref(ctx);
        return;
    }
    ASSERT_EQ(sem_init(&d.release, 0, 0), 0);
    qemu_set_current_aio_context(ctx);
    reads0 = ctx->notifier_reads;
    test_watchdog("pool job completion did not wake aio_poll", WATCHDOG_S);
    thread_pool_submit_aio(slow_disk_blocker, &d, slow_disk_blocker_done, &d);
    t = test_thread_start(late_handler_thread, &h);
    while (!d.done) {
        aio_poll(ctx, true);
    }
    test_thread_join(t);
    test_watchdog_cancel();
    ASSERT_EQ(d.ret, 0);
    ASSERT_UINT(ctx->notifier_reads, ==, reads0);
    qemu_set_current_aio_context(NULL);
    sem_destroy(&d.release);
    aio_context_unref(ctx);
}

TEST(io_uring_wakeup_reads_no_eventfd)
{
    static const long trapped[] = { __NR_read, -1 };
    AioContext *probe = test_aio_context_new();
    bool io_uring = strcmp(aioloop_context_fdmon_name(probe), "io_uring") == 0;

    aio_context_unref(probe);
    if (!io_uring) {
        printf("# skipped: io_uring only\n");
        return;
    }
    onecall_run("io_uring wake-up without read()", trapped, true);
}

/* The monitor's own wait is not made at all. */
TEST(notifier_alone_waits_in_read)
{
    static const long io_uring[] = { __NR_io_uring_enter, -1 };
    static const long epoll[] = { __NR_epoll_wait, __NR_epoll_pwait,
                                  __NR_epoll_pwait2 };
    static const long poll[] = { __NR_poll, __NR_ppoll, -1 };
    AioContext *probe = test_aio_context_new();
    const char *name = aioloop_context_fdmon_name(probe);
    const long *trapped = !strcmp(name, "io_uring") ? io_uring :
                          !strcmp(name, "epoll") ? epoll : poll;

    aio_context_unref(probe);
    onecall_run("notifier-only wait without the monitor's wait", trapped,
                false);
}

/* ---- many fds ---------------------------------------------------------- */

#define MANY_FDS 200
#define MANY_READY 50

typedef struct ManyFd {
    int sv[2];
    unsigned calls;
} ManyFd;

static void many_read(void *opaque)
{
    ManyFd *m = opaque;
    char buf[16];

    m->calls++;
    while (read(m->sv[0], buf, sizeof(buf)) > 0) {
        continue;
    }
}

TEST(many_fds_dispatch_exactly_the_ready_ones)
{
    AioContext *ctx = test_aio_context_new();
    ManyFd *m = calloc(MANY_FDS, sizeof(*m));
    TestSentinel s;
    struct rlimit rl;
    AioloopContextStats st0, st1;

    ASSERT_NOT_NULL(m);
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 2 * MANY_FDS + 64) {
        rl.rlim_cur = rl.rlim_max;
        ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < 2 * MANY_FDS + 64) {
            test_skip("RLIMIT_NOFILE too low for 200 socketpairs");
        }
    }
    test_sentinel_init(&s, ctx);
    for (int i = 0; i < MANY_FDS; i++) {
        ASSERT_EQ(socketpair(AF_UNIX,
                             SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                             m[i].sv), 0);
        aio_set_fd_handler(ctx, m[i].sv[0], many_read, NULL, NULL, NULL,
                           &m[i]);
    }
    test_sentinel_flush(&s);

    for (int i = 0; i < MANY_FDS; i += MANY_FDS / MANY_READY) {
        ASSERT_EQ(write(m[i].sv[1], "x", 1), 1);
    }
    aioloop_context_get_stats(ctx, &st0);
    ASSERT_TRUE(aio_poll(ctx, true));
    aioloop_context_get_stats(ctx, &st1);
    for (int i = 0; i < MANY_FDS; i++) {
        unsigned want = i % (MANY_FDS / MANY_READY) == 0;

        if (m[i].calls != want) {
            TEST_FAIL_("fd pair %d: %u calls, want %u", i, m[i].calls, want);
        }
    }
    ASSERT_UINT(st1.fd_dispatches - st0.fd_dispatches, ==, MANY_READY);

    /* Drained: no more calls. */
    test_sentinel_flush(&s);
    for (int i = 0; i < MANY_FDS; i++) {
        ASSERT_UINT(m[i].calls, ==, i % (MANY_FDS / MANY_READY) == 0);
    }

    /* Remove every other one, make all readable: only the rest fire. */
    for (int i = 0; i < MANY_FDS; i += 2) {
        aio_set_fd_handler(ctx, m[i].sv[0], NULL, NULL, NULL, NULL, NULL);
    }
    for (int i = 0; i < MANY_FDS; i++) {
        m[i].calls = 0;
        ASSERT_EQ(write(m[i].sv[1], "y", 1), 1);
    }
    test_sentinel_flush(&s);
    for (int i = 0; i < MANY_FDS; i++) {
        ASSERT_UINT(m[i].calls, ==, (unsigned)(i % 2));
    }

    for (int i = 0; i < MANY_FDS; i++) {
        if (i % 2) {
            aio_set_fd_handler(ctx, m[i].sv[0], NULL, NULL, NULL, NULL, NULL);
        }
        close(m[i].sv[0]);
        close(m[i].sv[1]);
    }
    test_sentinel_cleanup(&s);
    free(m);
    aio_context_unref(ctx);
}

RUN_TESTS(T(fd_read_level_triggered_pipe),
          T(fd_read_level_triggered_socketpair),
          T(fd_read_level_triggered_eventfd),
          T(fd_write_handler_fires_while_writable),
          T(fd_hup_fires_read_handler_socketpair),
          T(fd_hup_fires_read_handler_pipe),
          T(fd_replace_semantics),
          T(fd_handler_removes_itself),
          T(fd_handler_removes_ready_sibling),
          T(fd_handler_replaces_ready_sibling),
          T(fd_handler_replaces_itself),
          T(fd_register_from_callback),
          T(fd_register_from_other_thread_while_blocked),
          T(fd_remove_from_other_thread_while_blocked),
          T(event_notifier_read),
          T(event_notifier_poll_begin_end),
          T(event_notifier_level_triggered),
          T(aio_pending_consumes_nothing),
          T(nested_aio_poll_in_io_poll_ready),
          T(idle_polled_handler_gets_a_last_poll),
          T(adaptive_poll_calls_io_poll_ready),
          T(poll_continues_after_fd_wakeup),
          T(adaptive_poll_backs_off_after_missed_windows),
          T(adaptive_poll_fdmon_event_in_window_is_a_hit),
          T(adaptive_poll_io_poll_hit_also_seen_by_fdmon),
          T(adaptive_poll_waits_on_slow_block_io_stop_spinning),
          T(io_poll_without_io_poll_ready_is_dropped),
          T(poll_disabled_tracks_handlers),
          T(nonblocking_poll_all_pollable_makes_no_syscall),
          T(io_uring_wakeup_reads_no_eventfd),
          T(notifier_alone_waits_in_read),
          T(handler_added_during_notifier_read_is_watched),
          T(idle_notifier_wakes_outer_poll),
          T(io_uring_pool_job_in_flight_waits_in_ring),
          T(io_uring_pending_task_work_counts_as_ready),
          T(many_fds_dispatch_exactly_the_ready_ones))
