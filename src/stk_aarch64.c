/* stk_swap for aarch64 (64-bit ARM), AAPCS64 as used on Linux.
 * x0 = save, x1 = after, x2 = thread.
 *
 * What is saved, and why (AAPCS64 section 6.1):
 *  - x19-x28: callee-saved general registers; the caller of stk_switch()
 *    keeps its live values there and expects them back.
 *  - x29 (frame pointer) and x30 (link register): x30 is where the final
 *    `ret` goes, i.e. back into the stk_swap() call of the slice being
 *    resumed; x29 is callee-saved and links the frame records that
 *    debuggers, profilers and unwinders walk.  They form the frame record
 *    at the lowest address, which x29 points at, like any AAPCS64 frame.
 *  - d8-d15: only the low 64 bits of v8-v15 are callee-saved; the high
 *    halves and v0-v7, v16-v31 belong to the caller.
 *  - FPCR: rounding mode, flush-to-zero, default-NaN are per slice (the
 *    counterpart of MXCSR and the x87 control word on x86).  FPSR holds
 *    only sticky status flags and is left alone, like the x87 status word.
 *  - x18 is not saved: on Linux it is an ordinary temporary register.
 *    (Under -fsanitize=shadow-call-stack it is the shadow stack pointer,
 *    which a switch would have to move like CET's: unsupported.)
 * No other state: TPIDR_EL0 stays (one C thread), SVE/SME state is
 * caller-saved across calls.
 *
 * The frame is 176 bytes, a multiple of 16: sp must be 16-byte aligned
 * whenever it is used to address memory (the kernel enables the check) and
 * at every call.  x19/x20 carry `after` and the thread across the call to
 * save(); they are callee-saved, so save() leaves them alone.  Linux has no
 * red zone on aarch64: nothing is ever stored below sp.
 *
 * Branch protection (-mbranch-protection=, see setup.py): when the compiler
 * signs return addresses (pac-ret, __ARM_FEATURE_PAC_DEFAULT), so does this
 * routine, with the key the compiler uses and sp as the modifier.  That
 * works with stack slicing: the signed x30 stored here is checked by the
 * same slice's `ret`, at the same sp (a slice always resumes at the
 * address it was suspended at), and the saved copy stays signed while it
 * sits in a heap buffer.  For BTI the routine starts with a `bti c`
 * landing pad; its own indirect calls go to C functions, which the
 * compiler gives theirs.  The hint-space encodings (hint #N) keep this
 * assembling with any assembler and run as NOPs on cores without these
 * features. */
#if defined(__aarch64__) && defined(__ELF__)

#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define STK_BTI_C "    hint #34\n"                 /* bti c */
#else
#define STK_BTI_C ""
#endif

#if defined(__ARM_FEATURE_PAC_DEFAULT) && (__ARM_FEATURE_PAC_DEFAULT & 2)
#define STK_SIGN "    hint #27\n"                  /* pacibsp */
#define STK_AUTH "    hint #31\n"                  /* autibsp */
#elif defined(__ARM_FEATURE_PAC_DEFAULT) && (__ARM_FEATURE_PAC_DEFAULT & 1)
#define STK_SIGN "    hint #25\n"                  /* paciasp */
#define STK_AUTH "    hint #29\n"                  /* autiasp */
#else
#define STK_SIGN ""
#define STK_AUTH ""
#endif

__asm__(
    ".text\n"
    ".p2align 2\n"
    ".globl stk_swap\n"
    ".hidden stk_swap\n"
    ".type stk_swap,%function\n"
    "stk_swap:\n"
    STK_BTI_C
    STK_SIGN                             /* x30 signed with the entry sp */
    "    stp x29, x30, [sp, #-176]!\n"   /* allocate first: no red zone */
    "    mov x29, sp\n"
    "    stp x19, x20, [sp, #16]\n"
    "    stp x21, x22, [sp, #32]\n"
    "    stp x23, x24, [sp, #48]\n"
    "    stp x25, x26, [sp, #64]\n"
    "    stp x27, x28, [sp, #80]\n"
    "    stp d8, d9, [sp, #96]\n"
    "    stp d10, d11, [sp, #112]\n"
    "    stp d12, d13, [sp, #128]\n"
    "    stp d14, d15, [sp, #144]\n"
    "    mrs x9, fpcr\n"
    "    str x9, [sp, #160]\n"           /* [sp, #168] is padding */
    "    mov x19, x1\n"
    "    mov x20, x2\n"
    "    mov x9, x0\n"
    "    mov x0, sp\n"
    "    mov x1, x20\n"
    "    blr x9\n"                       /* save(sp, t) */
    "    cbz x0, 1f\n"                   /* NULL: do not switch */
    "    mov sp, x0\n"                   /* now on the target's stack */
    "    mov x29, sp\n"                  /* its frame record, once restored */
    "    mov x1, x20\n"
    "    blr x19\n"                      /* after(sp, t) */
    "1:\n"
    /* Writing FPCR can be slow (it may synchronize the FP pipeline); the
       mode is nearly always the same on both sides, so write only if it
       differs, as glibc's fesetenv() does.  x0 is the result: keep it. */
    "    ldr x9, [sp, #160]\n"
    "    mrs x10, fpcr\n"
    "    cmp x9, x10\n"
    "    b.eq 2f\n"
    "    msr fpcr, x9\n"
    "2:\n"
    "    ldp d14, d15, [sp, #144]\n"
    "    ldp d12, d13, [sp, #128]\n"
    "    ldp d10, d11, [sp, #112]\n"
    "    ldp d8, d9, [sp, #96]\n"
    "    ldp x27, x28, [sp, #80]\n"
    "    ldp x25, x26, [sp, #64]\n"
    "    ldp x23, x24, [sp, #48]\n"
    "    ldp x21, x22, [sp, #32]\n"
    "    ldp x19, x20, [sp, #16]\n"
    "    ldp x29, x30, [sp], #176\n"
    STK_AUTH                             /* same sp as at the signing */
    "    ret\n"
    ".size stk_swap, .-stk_swap\n"
    ".section .note.GNU-stack,\"\",%progbits\n"
    ".text\n"
);

#else
typedef int stk_aarch64_unused;
#endif
