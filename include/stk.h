/* stk: stack slicing for one C thread, without any CPython dependency.
 *
 * Every "slice" is a run of C frames that lives at a fixed address range
 * of the thread's one and only C stack.  Only one slice runs at a time.
 * Switching to a slice copies its saved bytes back to the addresses they
 * came from; the bytes of other slices that the target is about to
 * overwrite are copied to the heap first, and only those (lazy saving).
 *
 * The caller owns the memory of each stk_slice (it is embedded in bigger
 * records).  A suspended slice is a one-shot handle: once resumed, it is
 * running again and holds nothing until it is suspended the next time.
 *
 * Stacks grow downwards on every ABI we support; a slice is the byte range
 * [start, stop) where start is the stack pointer at suspension time.
 */
#ifndef STK_H
#define STK_H

#include <stddef.h>

/* For functions that read or write stack memory of suspended slices, which
 * belongs to no live C frame of the running code: AddressSanitizer (the
 * CONTINULET_SANITIZE build) must not check their accesses. */
#if defined(__has_attribute)
#  if __has_attribute(no_sanitize_address)
#    define STK_NO_SANITIZE __attribute__((no_sanitize_address))
#  endif
#endif
#ifndef STK_NO_SANITIZE
#  define STK_NO_SANITIZE
#endif

typedef struct stk_slice stk_slice;
typedef struct stk_thread stk_thread;

enum stk_state { STK_FREE = 0, STK_RUNNING, STK_SUSPENDED, STK_DEAD };

struct stk_slice {
    char *start;            /* stack pointer when suspended */
    char *stop;             /* base of the slice (exclusive upper bound) */
    size_t saved;           /* bytes of [start, start+saved) held off the stack: */
    char *spare;            /* the first ones in the memory offered for this
                               suspension (stk_offer_spare), as many as fit, */
    size_t spare_n;
    char *heap;             /* the rest in a heap buffer, reused from one
                               suspension to the next */
    size_t cap;
    stk_slice *chain;       /* next slice that still has bytes on the stack */
    int state;
};

/* The body of a new slice.  It must never return: it ends with stk_exit(). */
typedef void (*stk_run_fn)(void *arg);

struct stk_thread {
    stk_slice *current;     /* the running slice */
    stk_slice *on_stack;    /* suspended slices with bytes still in place */
    /* state handed through the assembly routine; kept here rather than on
       the C stack, because the stack is overwritten in the middle */
    stk_slice *target;
    stk_slice *from;
    stk_run_fn run;
    void *run_arg;
    int from_dies;
    int lane;               /* the lane of the last slice started (stk_start) */
};

/* Every other slice started begins STK_LANE_GAP bytes below its starter's
 * stack pointer instead of right below it: of two slices started one
 * after the other from the same place (two tasklets of one scheduler, a
 * producer and its consumer), the lower one then runs without
 * overwriting the upper one, which stays in place while suspended, so a
 * switch between them copies one slice instead of two (docs/design.md,
 * "Lanes").  The gap costs that much C stack depth, nothing else. */
#define STK_LANE_GAP 2048

/* Make the calling C frame's slice the main slice of this thread. */
void stk_thread_init(stk_thread *t, stk_slice *main_slice);

/* Suspend the current slice and run fn(arg) in `fresh`, just below the
 * current stack pointer.  Returns 0 when the current slice is resumed
 * later, -1 on out-of-memory (nothing happened). */
int stk_start(stk_thread *t, stk_slice *fresh, stk_run_fn fn, void *arg);

/* Suspend the current slice and resume `target`.  Returns 0 when the
 * current slice is resumed later, -1 on out-of-memory (nothing happened). */
int stk_switch(stk_thread *t, stk_slice *target);

/* The current slice is finished: resume `target` and never come back.
 * Returns only on out-of-memory, with -1. */
int stk_exit(stk_thread *t, stk_slice *target);

/* Before suspending the current slice: [p, p+n) is free memory that
 * nobody touches until the slice is resumed, and its first saved bytes
 * are kept there instead of on the heap (the heap buffer holds only what
 * does not fit).  A continulet offers the unused end of its own frame
 * data stack, which saves an allocation, or most of one, per suspended
 * stack.  The offer ends when the slice resumes. */
void stk_offer_spare(stk_slice *s, void *p, size_t n);

/* Forget a suspended slice that will never be resumed. */
void stk_forget(stk_thread *t, stk_slice *s);

/* Release the heap buffer of a slice that is not suspended. */
void stk_release(stk_slice *s);

/* The allocator of the heap buffers: realloc() and free() unless the
 * embedder sets others before any slice saves a byte (the _continuation
 * module sets Python's object allocator, whose small blocks cost a
 * fraction of glibc's, and always runs the engine under the GIL that it
 * needs).  Most buffers are small: the part of a stack that its offered
 * memory could not hold. */
extern void *(*stk_mem_realloc)(void *p, size_t n);
extern void (*stk_mem_free)(void *p);

/* Where the byte that a suspended slice had at address p lives now: in its
 * saved copy (offered memory or heap), or still at p.  Lets debuggers and
 * the GC read suspended C stack memory (CPython keeps some frames on the
 * C stack).  Aligned pointer-sized words never straddle two places. */
const void *stk_locate(const stk_slice *s, const void *p);

/* The n bytes that a suspended slice had at [p, p+n), contiguous: where
 * they live when they lie in one place, else copied into scratch (n
 * bytes).  For reading a structure (an interpreter frame) that the split
 * between the offered memory, the heap and the stack may cut in two. */
const void *stk_read(const stk_slice *s, const void *p, void *scratch, size_t n);

/* The assembly routine, one per ABI (src/stk_<abi>.c).  It pushes every
 * callee-saved register and the floating-point control modes of its ABI
 * (docs/design.md lists them), calls save(sp, t) and, if that returns a
 * non-NULL stack pointer, moves the stack pointer there and calls
 * after(sp, t); then it pops the registers from wherever the stack pointer
 * is and returns what the last call returned.  sp stays 16-byte aligned
 * (every supported ABI requires it at calls), so slice bounds are too. */
typedef void *(*stk_hook)(void *sp, stk_thread *t);
void *stk_swap(stk_hook save, stk_hook after, stk_thread *t)
    __attribute__((visibility("hidden")));

#endif
