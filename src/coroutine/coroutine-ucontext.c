/*
 * Coroutine backend: POSIX ucontext, the portable fallback
 * (-Dcoroutine_backend=ucontext).
 *
 * As QEMU's coroutine-ucontext.c: makecontext() prepares a fresh stack and
 * setcontext() starts it, once per stack; every other switch is
 * sigsetjmp(env, 0) / siglongjmp(), which saves no signal mask and makes no
 * system call (swapcontext() would make one per switch: ~250 ns on an idle
 * machine, several us on a busy VM).
 *
 * Signal masks: sigsetjmp(env, 0) never touches the mask, so a coroutine
 * runs with the mask of the thread it is in.  setcontext() does restore
 * the mask saved in the context, so the fresh context gets the entering
 * thread's current mask just before it starts.
 */
/* __longjmp_chk refuses jumps to another stack. */
#undef _FORTIFY_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "coroutine-int.h"

const char co_backend_name[] = "ucontext";

/* makecontext passes int arguments: the pointer travels in two halves. */
static void co_ucontext_start(unsigned int hi, unsigned int lo)
{
    uintptr_t p = ((uintptr_t)hi << 16 << 16) | lo;

    coroutine_main_loop((Coroutine *)p);
}

void co_backend_init(Coroutine *co)
{
    uintptr_t p = (uintptr_t)co;

    if (getcontext(&co->uc) < 0) {
        perror("coroutine: getcontext");
        abort();
    }
    co->uc.uc_link = NULL;
    co->uc.uc_stack.ss_sp = co->stack;
    co->uc.uc_stack.ss_size = co->stack_size;
    co->uc.uc_stack.ss_flags = 0;
    makecontext(&co->uc, (void (*)(void))co_ucontext_start, 2,
                (unsigned int)(p >> 16 >> 16), (unsigned int)p);
    co->uc_started = false;
}

CoroutineAction co_backend_switch(Coroutine *from, Coroutine *to,
                                  CoroutineAction action,
                                  void **fake_stack_save)
{
    int ret = sigsetjmp(from->env, 0);

    if (ret == 0) {
        co_switch_start(to, action, fake_stack_save);
        if (!to->uc_started) {
            /* First entry of a fresh stack: coroutine_main_loop(to). */
            to->uc_started = true;
            pthread_sigmask(SIG_SETMASK, NULL, &to->uc.uc_sigmask);
            setcontext(&to->uc);
            perror("coroutine: setcontext");
            abort();
        }
        siglongjmp(to->env, (int)action);
    }
    return (CoroutineAction)ret;
}
