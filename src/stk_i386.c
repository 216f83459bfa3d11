/* stk_swap for i386 (32-bit x86), System V / cdecl.
 * Callee-saved: ebx, esi, edi, ebp, plus MXCSR and the x87 control word.
 * Arguments come on the stack.  esi/edi carry `after` and the thread
 * across the call to save().  The stack stays 16-byte aligned at every
 * call, as the Linux i386 ABI expects. */
#if defined(__i386__) && !defined(_WIN32)
__asm__(
    ".text\n"
    ".globl stk_swap\n"
    ".hidden stk_swap\n"
    ".type stk_swap,@function\n"
    "stk_swap:\n"
    "    movl 4(%esp), %eax\n"         /* save */
    "    movl 8(%esp), %ecx\n"         /* after */
    "    movl 12(%esp), %edx\n"        /* thread */
    "    pushl %ebp\n"
    "    pushl %ebx\n"
    "    pushl %esi\n"
    "    pushl %edi\n"
    "    subl $12, %esp\n"
    "    stmxcsr (%esp)\n"
    "    fnstcw 4(%esp)\n"
    "    movl %ecx, %esi\n"
    "    movl %edx, %edi\n"
    "    movl %esp, %ebx\n"
    "    subl $8, %esp\n"
    "    pushl %edi\n"
    "    pushl %ebx\n"
    "    call *%eax\n"                 /* save(sp, t) */
    "    addl $16, %esp\n"
    "    testl %eax, %eax\n"
    "    jz 1f\n"
    "    movl %eax, %esp\n"            /* now on the target's stack */
    "    subl $8, %esp\n"
    "    pushl %edi\n"
    "    pushl %eax\n"
    "    call *%esi\n"                 /* after(sp, t) */
    "    addl $16, %esp\n"
    "1:\n"
    "    ldmxcsr (%esp)\n"
    "    fldcw 4(%esp)\n"
    "    addl $12, %esp\n"
    "    popl %edi\n"
    "    popl %esi\n"
    "    popl %ebx\n"
    "    popl %ebp\n"
    "    ret\n"
    ".size stk_swap, .-stk_swap\n"
    ".section .note.GNU-stack,\"\",@progbits\n"
    ".text\n"
);
#else
typedef int stk_i386_unused;
#endif
