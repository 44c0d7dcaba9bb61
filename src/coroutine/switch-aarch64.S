/*
 * Coroutine context switch for AArch64 (AAPCS64).
 *
 * long aioloop_co_switch(void **save_sp, void *new_sp, long action)
 *
 * Saves the callee-saved registers (x19-x28, the frame pointer x29, the
 * link register x30 and the low halves d8-d15 of v8-v15) in a 160-byte
 * frame on the current stack, stores sp in *save_sp, switches to new_sp,
 * restores the other side's frame and returns to its x30 with @action in
 * x0.  No signal mask, no syscall.  Return-address signing (pac-ret) keeps
 * working: x30 is restored together with the sp it was signed with.
 *
 * aioloop_co_start is where a fresh stack "returns" to on its first switch
 * (see co_backend_init): x19 holds the Coroutine.
 */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define BTI_C bti c
#else
#define BTI_C
#endif

    .text
    .globl aioloop_co_switch
    .hidden aioloop_co_switch
    .type aioloop_co_switch, %function
    .p2align 4
aioloop_co_switch:
    .cfi_startproc
    BTI_C
    sub sp, sp, #160
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #160
    mov x0, x2
    ret
    .cfi_endproc
    .size aioloop_co_switch, . - aioloop_co_switch

    .globl aioloop_co_start
    .hidden aioloop_co_start
    .type aioloop_co_start, %function
    .p2align 4
aioloop_co_start:
    .cfi_startproc
    /* Outermost frame: unwinders (gdb, ASan reports) stop here. */
    .cfi_undefined x30
    BTI_C
    mov x0, x19
    bl coroutine_main_loop
    brk #0
    .cfi_endproc
    .size aioloop_co_start, . - aioloop_co_start

    .section .note.GNU-stack, "", %progbits
