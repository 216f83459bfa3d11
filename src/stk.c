/* The stack slicing engine: which bytes to copy, and when.
 *
 * Invariant: every byte that a suspended slice still has in place on the
 * C stack lies above the running slice's stop address.  The running slice
 * may therefore grow freely down from its own stop.  Before resuming a
 * target, every suspended slice saves the part of itself that lies below
 * the target's stop, because the target may grow down over all of it.
 */
#include "stk.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void *(*stk_mem_realloc)(void *p, size_t n) = realloc;
void (*stk_mem_free)(void *p) = free;

static char *lowest(char *a, char *b) { return a < b ? a : b; }

/* AddressSanitizer (the CONTINULET_SANITIZE build, see docs/design.md)
 * keeps a shadow byte for every 8 bytes of the stack, written by
 * instrumented functions on entry (redzones around their locals) and
 * cleared on return.  The frames of a suspended slice never return while
 * their bytes are off the stack, so:
 *  - stack bytes are copied by a loop that ASan does not check (the bytes
 *    of a suspended slice lie under the redzones of its own frames, and
 *    memcpy() would be intercepted and checked);
 *  - addresses whose bytes leave the stack, and those of a slice that
 *    dies or is forgotten, get their shadow cleared: whatever runs there
 *    next (often CPython itself, uninstrumented, handing stack buffers to
 *    intercepted libc functions) must not meet stale redzones;
 *  - a restored slice gets its shadow cleared too: its frames lose their
 *    redzones (overflows of their locals go unseen), never a false report.
 * All slices live in the thread's one stack, so ASan's idea of the
 * thread's stack bounds stays right and no fiber switch needs announcing. */
#ifdef CONTINULET_SANITIZE
#include <sanitizer/asan_interface.h>

STK_NO_SANITIZE static void copy_stack_bytes(char *dst, const char *src, size_t n)
{
    /* volatile: the compiler must not turn the loop into a memcpy() call */
    volatile char *d = dst;
    const volatile char *s = src;
    for (size_t i = 0; i < n; i++)
        d[i] = s[i];
}

static void clear_shadow(const char *p, size_t n)
{
    __asan_unpoison_memory_region(p, n);
}
#else
#define copy_stack_bytes memcpy
static void clear_shadow(const char *p, size_t n) { (void)p; (void)n; }
#endif

void stk_thread_init(stk_thread *t, stk_slice *main_slice)
{
    memset(t, 0, sizeof(*t));
    memset(main_slice, 0, sizeof(*main_slice));
    /* The main slice owns everything up to the top of the thread's stack;
       its real top is unknown and never needed, only compared. */
    main_slice->stop = (char *)UINTPTR_MAX;
    main_slice->state = STK_RUNNING;
    t->current = main_slice;
}

/* How many saved bytes the offered memory holds at most: a multiple of
 * 16, so that no aligned word of the stack is split between two places. */
static size_t spare_part(const stk_slice *s)
{
    return s->spare != NULL ? s->spare_n & ~(size_t)15 : 0;
}

/* Make room for `want` saved bytes, keeping those already saved: what the
 * offered memory cannot hold goes to the heap buffer.  0 or -1 (out of
 * memory). */
static int reserve(stk_slice *s, size_t want)
{
    size_t k = spare_part(s);
    size_t heap_n = want > k ? want - k : 0;
    if (heap_n > s->cap) {
        /* Exact size, rounded up to a cache line: most slices are suspended
           at the same depth every time, and thousands of suspended slices
           must cost little memory.  realloc() absorbs the rare growth. */
        size_t cap = (heap_n + 63) & ~(size_t)63;
        char *heap = stk_mem_realloc(s->heap, cap);
        if (heap == NULL)
            return -1;
        s->heap = heap;
        s->cap = cap;
    }
    return 0;
}

/* Copy the n stack bytes at src, which are saved bytes [off, off+n) of s,
 * to where they are kept. */
static void put_saved(stk_slice *s, size_t off, const char *src, size_t n)
{
    size_t k = spare_part(s);
    if (off < k) {
        size_t m = n < k - off ? n : k - off;
        copy_stack_bytes(s->spare + off, src, m);
        off += m;
        src += m;
        n -= m;
    }
    if (n > 0)
        copy_stack_bytes(s->heap + (off - k), src, n);
}

/* Copy the first n saved bytes of s back to dst. */
static void get_saved(const stk_slice *s, char *dst, size_t n)
{
    size_t k = spare_part(s), m = n < k ? n : k;
    if (m > 0)
        copy_stack_bytes(dst, s->spare, m);
    if (n > m)
        copy_stack_bytes(dst + m, s->heap, n - m);
}

/* Copy the bytes of slice s below `limit` off the stack.  0 or -1 (OOM). */
static int save_below(stk_slice *s, char *limit)
{
    char *end = lowest(s->stop, limit);
    if (end <= s->start)
        return 0;               /* the slice lies wholly above the target */
    size_t want = (size_t)(end - s->start);
    if (want <= s->saved)
        return 0;
    if (reserve(s, want) < 0)
        return -1;
    put_saved(s, s->saved, s->start + s->saved, want - s->saved);
    clear_shadow(s->start + s->saved, want - s->saved);
    s->saved = want;
    return 0;
}

void stk_offer_spare(stk_slice *s, void *p, size_t n)
{
    s->spare = p;
    s->spare_n = n;
}

static void unchain(stk_thread *t, stk_slice *s)
{
    for (stk_slice **p = &t->on_stack; *p; p = &(*p)->chain) {
        if (*p == s) {
            *p = s->chain;
            s->chain = NULL;
            return;
        }
    }
}

/* Make room for the target: save what it will overwrite.  Runs on the
 * current slice, below its stack pointer sp. */
static void *save_hook(void *sp, stk_thread *t)
{
    stk_slice *from = t->from, *target = t->target;
    if (!t->from_dies) {
        from->start = sp;
        from->saved = 0;
        from->state = STK_SUSPENDED;
        from->chain = t->on_stack;
        t->on_stack = from;
    }
    if (target == NULL) {
        /* starting a fresh slice below: nothing gets overwritten.  The
           stack pointer moves down by the lane's gap, whose bytes belong
           to no slice (stk.h). */
        t->lane ^= 1;
        return (char *)sp - (t->lane ? STK_LANE_GAP : 0);
    }
    /* Only a suspended slice with bytes still in place is on the chain
       (a whole saved one left it): skip the walk for the others. */
    if (target->state == STK_SUSPENDED && target->saved < (size_t)(target->stop - target->start))
        unchain(t, target);
    for (stk_slice **p = &t->on_stack; *p; ) {
        stk_slice *s = *p;
        if (save_below(s, target->stop) < 0) {
            /* Out of memory: undo the bookkeeping and stay.  The copies made
               so far remain exact, since a suspended slice never changes. */
            if (target->state == STK_SUSPENDED && target->saved < (size_t)(target->stop - target->start)) {
                target->chain = t->on_stack;
                t->on_stack = target;
            }
            if (!t->from_dies) {
                unchain(t, from);
                from->state = STK_RUNNING;
            }
            return NULL;
        }
        if (s->saved == (size_t)(s->stop - s->start)) {
            *p = s->chain;          /* entirely off the stack now */
            s->chain = NULL;
        }
        else {
            p = &s->chain;
        }
    }
    if (t->from_dies) {
        from->state = STK_DEAD;
        clear_shadow(sp, (size_t)(from->stop - (char *)sp));
    }
    return target->start;
}

/* Runs on the target's stack, below target->start: put its bytes back. */
static void *restore_hook(void *sp, stk_thread *t)
{
    stk_slice *target = t->target;
    (void)sp;
    clear_shadow(target->start, target->saved);
    get_saved(target, target->start, target->saved);
    target->saved = 0;
    target->spare = NULL;       /* the owner uses that memory again */
    target->spare_n = 0;
    target->state = STK_RUNNING;
    t->current = target;
    return target;
}

/* Runs a fresh slice below the caller's stack pointer sp. */
static void *start_hook(void *sp, stk_thread *t)
{
    stk_slice *fresh = t->current;
    fresh->stop = sp;
    t->run(t->run_arg);
    abort();    /* unreachable: a run function ends with stk_exit() */
}

int stk_start(stk_thread *t, stk_slice *fresh, stk_run_fn fn, void *arg)
{
    stk_slice *from = t->current;
    fresh->start = NULL;
    fresh->saved = 0;
    fresh->spare = NULL;
    fresh->spare_n = 0;
    fresh->chain = NULL;
    fresh->state = STK_RUNNING;
    t->from = from;
    t->target = NULL;
    t->from_dies = 0;
    t->run = fn;
    t->run_arg = arg;
    t->current = fresh;
    stk_swap(save_hook, start_hook, t);
    /* back here only when someone resumed `from` */
    return 0;
}

static int swap_to(stk_thread *t, stk_slice *target, int from_dies)
{
    t->from = t->current;
    t->target = target;
    t->from_dies = from_dies;
    if (stk_swap(save_hook, restore_hook, t) == NULL)
        return -1;
    return 0;
}

int stk_switch(stk_thread *t, stk_slice *target)
{
    return swap_to(t, target, 0);
}

int stk_exit(stk_thread *t, stk_slice *target)
{
    return swap_to(t, target, 1);
}

void stk_forget(stk_thread *t, stk_slice *s)
{
    if (t != NULL) {
        unchain(t, s);
        /* the part still in place becomes free stack */
        if (s->state == STK_SUSPENDED && s->start + s->saved < s->stop)
            clear_shadow(s->start + s->saved, (size_t)(s->stop - (s->start + s->saved)));
    }
    s->state = STK_DEAD;
    s->saved = 0;
    s->spare = NULL;
    s->spare_n = 0;
}

void stk_release(stk_slice *s)
{
    stk_mem_free(s->heap);
    s->heap = NULL;
    s->cap = 0;
    s->saved = 0;
}

const void *stk_locate(const stk_slice *s, const void *p)
{
    const char *c = p;
    if (s->state == STK_SUSPENDED && c >= s->start && c < s->start + s->saved) {
        size_t off = (size_t)(c - s->start), k = spare_part(s);
        return off < k ? s->spare + off : s->heap + (off - k);
    }
    return p;
}

STK_NO_SANITIZE const void *stk_read(const stk_slice *s, const void *p, void *scratch, size_t n)
{
    const char *c = p;
    if (s->state != STK_SUSPENDED || c + n <= s->start || c >= s->start + s->saved)
        return p;               /* wholly in place */
    size_t off = (size_t)(c - s->start), k = spare_part(s);
    if (c >= s->start && off + n <= s->saved && (off >= k || off + n <= k))
        return stk_locate(s, p);        /* wholly in one saved piece */
    for (size_t i = 0; i < n; i++)
        ((char *)scratch)[i] = *(const char *)stk_locate(s, c + i);
    return scratch;
}
