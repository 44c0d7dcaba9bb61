/*
 * Coroutine backend: hand-written context switch (switch-<arch>.S).
 *
 * A switch saves the callee-saved registers on the current stack and
 * swaps stack pointers; see the .S files for the register lists.  A fresh
 * coroutine's stack is prepared so that its first switch "returns" into
 * aioloop_co_start, which calls coroutine_main_loop(co).
 */
#include <stdint.h>
#include <string.h>

#include "coroutine-int.h"

extern char aioloop_co_start[];

const char co_backend_name[] = "asm";

void co_backend_init(Coroutine *co)
{
    uintptr_t top = ((uintptr_t)co->stack + co->stack_size) & ~(uintptr_t)15;
    uintptr_t *frame;

#if defined(__x86_64__)
    /*
     * The frame aioloop_co_switch pops: r15 r14 r13 r12 rbx rbp, then the
     * return address.  After the pops and the ret, rsp == top (16-byte
     * aligned), as the ABI wants right before aioloop_co_start's call.
     */
    frame = (uintptr_t *)(top - 7 * sizeof(uintptr_t));
    memset(frame, 0, 7 * sizeof(uintptr_t));
    frame[3] = (uintptr_t)co;                /* r12 */
    frame[6] = (uintptr_t)aioloop_co_start;  /* return address */
#elif defined(__aarch64__)
    /* The 160-byte frame of aioloop_co_switch: x19 first, x29/x30 at +80. */
    frame = (uintptr_t *)(top - 160);
    memset(frame, 0, 160);
    frame[0] = (uintptr_t)co;                /* x19 */
    frame[11] = (uintptr_t)aioloop_co_start; /* x30 */
#else
#error "no asm coroutine switch for this architecture: use -Dcoroutine_backend=ucontext"
#endif
    co->sp = frame;
}
