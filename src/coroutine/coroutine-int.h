/*
 * Coroutine internals shared by the core, the backends, the locks and
 * async-co.c.  Nothing here is exported.
 */
#ifndef AIOLOOP_COROUTINE_INT_H
#define AIOLOOP_COROUTINE_INT_H

#include <aioloop/coroutine.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aioloop-config.h"
#include "../util/atomic.h"
#include "../util/queue.h"
#include "../util/sanitizer.h"

#ifdef AIOLOOP_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef AIOLOOP_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#if CONFIG_COROUTINE_UCONTEXT
#include <setjmp.h>
#include <ucontext.h>
#endif

/*
 * Whether an enter ends in the switch itself and the coroutine's yield
 * returns straight to the enterer's caller (coroutine.c, coroutine_enter()).
 * x86-64 asm backend only: the sanitizers need a hook after each switch,
 * and aarch64 has no aioloop_co_switch_finish() yet.
 */
#if !CONFIG_COROUTINE_UCONTEXT && defined(__x86_64__) && \
    !defined(AIOLOOP_ASAN) && !defined(AIOLOOP_TSAN)
#define CO_DIRECT_RETURN 1
#else
#define CO_DIRECT_RETURN 0
#endif

typedef enum {
    COROUTINE_YIELD = 1,
    COROUTINE_TERMINATE = 2,
    COROUTINE_ENTER = 3,
} CoroutineAction;

typedef QSIMPLEQ_HEAD(CoroutineList, Coroutine) CoroutineList;

struct Coroutine {
    CoroutineEntry *entry;
    void *entry_arg;
    /*
     * Who entered us and gets control back at yield; NULL while not running.
     * Written by the thread running the coroutine only.
     */
    Coroutine *caller;
    /* AioContext of the last enter; atomic (read by aio_co_wake anywhere). */
    AioContext *ctx;
    /*
     * Name of the function that scheduled us (aio_co_schedule, a sleep), or
     * NULL; set with a CAS so a second scheduler aborts.  Atomic.
     */
    const char *scheduled;
    /* CoMutexes held (debug check at termination). */
    size_t locks_held;
    /*
     * aio_co_reschedule_self(): the context to schedule us in once we have
     * yielded; read and cleared by the enter loop we yield to (same thread).
     */
    AioContext *move_to;

    /* Link in a CoQueue or in another coroutine's co_queue_wakeup. */
    QSIMPLEQ_ENTRY(Coroutine) co_queue_next;
    /* Coroutines to enter when this one yields or ends (thread running it). */
    CoroutineList co_queue_wakeup;
    /* Link in ctx->scheduled_coroutines (lock-free push). */
    QSLIST_ENTRY(Coroutine) co_scheduled_next;
    /* Link in a pool list. */
    Coroutine *pool_next;

    /* ---- backend ---- */
#if CONFIG_COROUTINE_UCONTEXT
    ucontext_t uc;       /* the fresh stack's start context */
    sigjmp_buf env;      /* where we switched out */
    bool uc_started;     /* uc was started: switch with siglongjmp */
#else
    void *sp;            /* saved stack pointer while switched out */
#endif
    void *map;           /* mmap()ed region: guard page + stack + this struct */
    size_t map_size;
    void *stack;         /* lowest usable stack byte (above the guard page) */
    size_t stack_size;   /* usable bytes (this struct sits above them) */
    void *tsan_fiber;
    unsigned valgrind_stack_id;
    bool is_leader;
    /*
     * CO_DIRECT_RETURN: entered by coroutine_enter() directly, so our
     * yield or termination does the enterer's side of it (thread running
     * us).  Set by every enter.
     */
    bool yield_finishes;
};

/* Called by the backend at a new coroutine's first entry; never returns. */
void coroutine_main_loop(Coroutine *co) __attribute__((noreturn));
/* Stacks mmap()ed since start (tests check that the pool is used). */
uint64_t coroutine_stats_stack_allocs(void);
/* Stacks munmap()ed since start. */
uint64_t coroutine_stats_stack_frees(void);

/* Backend: coroutine-asm.c or coroutine-ucontext.c. */
/* Prepare @co's fresh stack so that the first switch runs coroutine_main_loop(co). */
void co_backend_init(Coroutine *co);
/*
 * The sanitizer hooks, called by the backend right before the stack
 * changes (after the ucontext backend's sigsetjmp(), which TSan must see
 * in the fiber that sets it).  @fake_stack_save receives ASan's fake stack
 * of the coroutine being left, unless it terminates.
 */
static inline __attribute__((always_inline))
void co_switch_start(Coroutine *to, CoroutineAction action,
                     void **fake_stack_save)
{
#ifdef AIOLOOP_ASAN
    /* A terminating coroutine's fake stack can go (NULL save pointer). */
    __sanitizer_start_switch_fiber(
        action == COROUTINE_TERMINATE ? NULL : fake_stack_save,
        to->stack, to->stack_size);
#else
    (void)action;
    (void)fake_stack_save;
#endif
#ifdef AIOLOOP_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#else
    (void)to;
#endif
}

/*
 * Save the current context in @from, call co_switch_start(), resume @to;
 * returns the action passed by whoever switches back to @from.  Inline for
 * the asm backend: the switch is then one call into switch-<arch>.S.
 */
#if CONFIG_COROUTINE_UCONTEXT
CoroutineAction co_backend_switch(Coroutine *from, Coroutine *to,
                                  CoroutineAction action,
                                  void **fake_stack_save);
#else
long aioloop_co_switch(void **save_sp, void *new_sp, long action);
#if CO_DIRECT_RETURN
/*
 * Like aioloop_co_switch(), but before returning on the other side it
 * calls coroutine_enter_finish(@co, @action) there, with the other side's
 * callee-saved registers already restored.
 */
void aioloop_co_switch_finish(void **save_sp, void *new_sp, Coroutine *co,
                              long action);
void coroutine_enter_finish(Coroutine *co, long action);
#endif

static inline __attribute__((always_inline))
CoroutineAction co_backend_switch(Coroutine *from, Coroutine *to,
                                  CoroutineAction action,
                                  void **fake_stack_save)
{
    co_switch_start(to, action, fake_stack_save);
    return (CoroutineAction)aioloop_co_switch(&from->sp, to->sp, action);
}
#endif

extern const char co_backend_name[];

#endif
