/* stk_swap for x86-64, System V ABI (Linux, BSD, macOS).
 * Callee-saved: rbx, rbp, r12-r15, plus MXCSR control bits and the x87
 * control word.  rdi = save, rsi = after, rdx = thread.
 * r12/r13 carry `after` and the thread across the call to save(); they
 * are callee-saved, so save() leaves them alone. */
#if defined(__x86_64__) && !defined(_WIN32)
__asm__(
    ".text\n"
    ".globl stk_swap\n"
    ".hidden stk_swap\n"
    ".type stk_swap,@function\n"
    "stk_swap:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    subq $8, %rsp\n"              /* 16-byte aligned again */
    "    stmxcsr (%rsp)\n"
    "    fnstcw 4(%rsp)\n"
    "    movq %rsi, %r12\n"
    "    movq %rdx, %r13\n"
    "    movq %rdi, %rax\n"
    "    movq %rsp, %rdi\n"
    "    movq %r13, %rsi\n"
    "    call *%rax\n"                 /* save(sp, t) */
    "    testq %rax, %rax\n"
    "    jz 1f\n"                      /* NULL: do not switch */
    "    movq %rax, %rsp\n"            /* now on the target's stack */
    "    movq %rax, %rdi\n"
    "    movq %r13, %rsi\n"
    "    call *%r12\n"                 /* after(sp, t) */
    "1:\n"
    "    ldmxcsr (%rsp)\n"
    "    fldcw 4(%rsp)\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size stk_swap, .-stk_swap\n"
    ".section .note.GNU-stack,\"\",@progbits\n"
    ".text\n"
);
#else
/* keep ISO C happy: a translation unit must not be empty */
typedef int stk_x86_64_unused;
#endif
