/*
 * Coroutine context switch for x86-64 (System V ABI).
 *
 * long aioloop_co_switch(void **save_sp, void *new_sp, long action)
 *
 * Pushes the callee-saved registers (rbx, rbp, r12-r15) on the current
 * stack, stores the stack pointer in *save_sp, loads new_sp, pops the
 * other side's registers and returns into it with @action in rax: the other
 * side sees its own call to aioloop_co_switch() return @action.  Everything
 * else the ABI lets a call clobber; no signal mask, no syscall.  The MXCSR
 * and x87 control words are not switched: coroutines share the thread's
 * floating-point environment (as with QEMU's sigsetjmp switch).
 *
 * aioloop_co_start is where a fresh stack "returns" to on its first switch
 * (see co_backend_init): r12 holds the Coroutine.
 *
 * The switch ends with an indirect jump to the other side's return address
 * rather than ret.  A ret here never returns where the return-stack
 * predictor expects (the call it pairs with was made on the other stack),
 * nor do the rets of enter and yield that follow; each such misprediction
 * cost 8-9 ns on this project's AMD EPYC VMs.  The indirect jump is
 * predicted from the branch target buffer, which learns the two targets of
 * a ping-pong, and leaves the return-stack predictor alone, which then
 * mispredicts less around the switch.  Measured with bench/coroutine-perf
 * (C1 enter+yield): 27.5 -> 14.6-15.1 ns per round trip; the bare switch
 * between two stacks 18.7 -> 6.8-6.9 ns; C2 create+enter+terminate
 * 29 -> 21 ns; C3 nesting 0.69 -> 0.44 s.  The return-stack entry of each
 * switch's call is left unpopped; a later return deeper in the caller may
 * mispredict once for it, which the figures include.  Enter and yield now
 * end in this switch as tail calls (coroutine.c, CO_DIRECT_RETURN), so
 * their own returns, which landed on other stacks too, are gone as well:
 * C1 14.4-15.1 -> 6.9-7.8 ns.
 */
#include "sanitizer-detect.h"

#if defined(__CET__) && (__CET__ & 1)
#define ENDBR endbr64
#define NOTRACK notrack
#else
#define ENDBR
#define NOTRACK
#endif

/*
 * Save the callee-saved registers on this stack, store rsp in (%rdi), load
 * %rsi and pop the other side's.  The CFI tracks the frame, which has the
 * same shape on either stack.
 */
.macro SWAP_STACKS
    pushq %rbp
    .cfi_adjust_cfa_offset 8
    pushq %rbx
    .cfi_adjust_cfa_offset 8
    pushq %r12
    .cfi_adjust_cfa_offset 8
    pushq %r13
    .cfi_adjust_cfa_offset 8
    pushq %r14
    .cfi_adjust_cfa_offset 8
    pushq %r15
    .cfi_adjust_cfa_offset 8
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    .cfi_adjust_cfa_offset -8
    popq %r14
    .cfi_adjust_cfa_offset -8
    popq %r13
    .cfi_adjust_cfa_offset -8
    popq %r12
    .cfi_adjust_cfa_offset -8
    popq %rbx
    .cfi_adjust_cfa_offset -8
    popq %rbp
    .cfi_adjust_cfa_offset -8
.endm

/*
 * Return to the address on top of the stack without ret (see the header
 * comment).  rcx is a scratch register of the ABI.  NOTRACK: an indirect
 * jump to a return address, which has no ENDBR, must be exempt from IBT
 * where that is enforced.
 */
.macro JUMP_BACK
    popq %rcx
    .cfi_adjust_cfa_offset -8
    .cfi_register rip, rcx
    NOTRACK jmp *%rcx
.endm

    .text
    .globl aioloop_co_switch
    .hidden aioloop_co_switch
    .type aioloop_co_switch, @function
    .p2align 4
aioloop_co_switch:
    .cfi_startproc
    ENDBR
    SWAP_STACKS
    movq %rdx, %rax
    JUMP_BACK
    .cfi_endproc
    .size aioloop_co_switch, . - aioloop_co_switch

#if !defined(AIOLOOP_ASAN) && !defined(AIOLOOP_TSAN)
    /*
     * void aioloop_co_switch_finish(void **save_sp, void *new_sp,
     *                               Coroutine *co, long action)
     *
     * The switch above, but once on the new stack with its registers
     * restored it calls coroutine_enter_finish(co, action) before jumping
     * to the return address: a coroutine entered with a direct return
     * (coroutine.c) yields or terminates through here when its enterer has
     * work to do first.
     */
    .globl aioloop_co_switch_finish
    .hidden aioloop_co_switch_finish
    .type aioloop_co_switch_finish, @function
    .p2align 4
aioloop_co_switch_finish:
    .cfi_startproc
    ENDBR
    SWAP_STACKS
    /* rsp is 8 mod 16 here, as at a function's entry: realign the call. */
    movq %rdx, %rdi
    movq %rcx, %rsi
    subq $8, %rsp
    .cfi_adjust_cfa_offset 8
    call coroutine_enter_finish
    addq $8, %rsp
    .cfi_adjust_cfa_offset -8
    JUMP_BACK
    .cfi_endproc
    .size aioloop_co_switch_finish, . - aioloop_co_switch_finish
#endif /* CO_DIRECT_RETURN's condition (coroutine-int.h) */

    .globl aioloop_co_start
    .hidden aioloop_co_start
    .type aioloop_co_start, @function
    .p2align 4
aioloop_co_start:
    .cfi_startproc
    /* Outermost frame: unwinders (gdb, ASan reports) stop here. */
    .cfi_undefined rip
    ENDBR
    movq %r12, %rdi
    call coroutine_main_loop
    ud2
    .cfi_endproc
    .size aioloop_co_start, . - aioloop_co_start

    .section .note.GNU-stack, "", @progbits
