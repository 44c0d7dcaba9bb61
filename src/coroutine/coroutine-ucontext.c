/*
 * Coroutine backend: POSIX ucontext, the portable fallback
 * (-Dcoroutine_backend=ucontext).
 *
 * makecontext() prepares a fresh stack; every switch is swapcontext(),
 * which also saves and restores the signal mask with a sigprocmask system
 * call (~250 ns here against ~8 ns for the asm switch).  It is kept simple
 * on purpose: it exists for architectures without an asm switch and to
 * check that nothing depends on the asm backend's details.
 */
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
}

/*
 * The action travels in the coroutine being resumed: the resumed side may
 * run in another thread than the one it switched out in, so no TLS here.
 */
CoroutineAction co_backend_switch(Coroutine *from, Coroutine *to,
                                  CoroutineAction action)
{
    to->uc_action = action;
    if (swapcontext(&from->uc, &to->uc) < 0) {
        perror("coroutine: swapcontext");
        abort();
    }
    return from->uc_action;
}
