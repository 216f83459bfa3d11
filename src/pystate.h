/* The per-stack part of CPython's thread state: the interface between the
 * version-neutral module code and src/pystate.c, the only file that knows
 * how each CPython minor version lays out its thread state and frames. */
#ifndef CONT_PYSTATE_H
#define CONT_PYSTATE_H

#include <Python.h>
#include "stk.h"

/* Saved fields of a suspended stack of frames.  Opaque here; pystate.c
 * checks at compile time that its real layout has exactly this size.
 * Pointers and ints are counted apart, so that the size fits 32-bit and
 * 64-bit targets alike, and per version: every byte is paid by each of
 * thousands of suspended tasklets (the record is a pymalloc block, whose
 * size classes are 16 B apart). */
#if PY_VERSION_HEX < 0x030C0000
#  define CPS_SAVED_POINTERS 23     /* 3.11: the cframe */
#  define CPS_SAVED_INTS 9          /* 3.11: delete_nesting, root_at_switcher */
#elif PY_VERSION_HEX >= 0x030F0000
#  define CPS_SAVED_POINTERS 23     /* 3.15: jit_exit */
#  define CPS_SAVED_INTS 7
#else
#  define CPS_SAVED_POINTERS 22
#  define CPS_SAVED_INTS 7
#endif
typedef struct { void *opaque_p[CPS_SAVED_POINTERS]; int opaque_i[CPS_SAVED_INTS]; } cps_saved;

/* Storage that a continulet's stack needs at a fixed address for its whole
 * life (the thread state points into it while the stack runs): its
 * bottom exception-state entry (two pointers) and, on 3.11, its root C
 * frame (three more).  Sized per version, as cps_saved: pystate.c checks
 * that the size is exact. */
#if PY_VERSION_HEX < 0x030C0000
#  define CPS_ROOT_POINTERS 5
#else
#  define CPS_ROOT_POINTERS 2
#endif
typedef struct { void *opaque[CPS_ROOT_POINTERS]; } cps_root;

/* Bytes of the first frame data-stack chunk that a new stack gets.  Frames
 * that need more spill over into chunks that CPython allocates itself.
 * While the stack is suspended, the chunk's unused end also holds its saved
 * C stack (stk_offer_spare), the rest going to a heap buffer.  1 KiB holds
 * a tasklet blocked in receive() inside a Python function on 3.11 and 3.13
 * (its frame and 640 / 672 B of C stack) in the record alone, and a
 * function with a bigger frame too (hackysack's player); every byte more
 * is paid by each of thousands of idle tasklets (docs/performance.md). */
#if PY_VERSION_HEX >= 0x030E0000
/* 3.14+: the interpreter's C frame alone is 736 B, a blocked tasklet's C
 * stack 1072 B; 1280 B holds that stack and a small function's frame
 * with 80 B to spare, hackysack's player's with 24 B; a function with a
 * bigger frame puts the rest of its stack in the heap buffer
 * (docs/performance.md) */
#  define CPS_CHUNK_BYTES 1280
#else
#  define CPS_CHUNK_BYTES 1024
#endif

/* Once, at module import: learn what this interpreter's bytecode looks
 * like (the CALL opcodes).  -1 with an exception set on failure. */
int cps_init(void);

/* The Python-level call of the method that is switching (switch(),
 * throw(), genlet.send()), as the fast-call convention passed it: its self
 * and its argument array [args, end).  When the array lies in the top
 * frame's value stack, `end` is the exact top of that stack, which lets
 * the GC see the references the top frame holds there, and what lies
 * below `args` tells how the method was called (see cps_save). */
typedef struct {
    PyObject *self;
    PyObject *const *args;
    PyObject *const *end;
    PyObject *hidden;       /* see cps_find_hidden; owned until cps_save takes it */
    Py_ssize_t nkw;         /* how many of them came by keyword (the last ones) */
    /* A reference that the switching C code holds in a C local until the
     * switch returns (borrowed, may be NULL): the suspended stack reports
     * it to the GC, which cannot see C locals (see capi.h). */
    PyObject *held;
    /* The switch is a genlet's step through its tp_iternext (next(g), a
     * `for` loop, list(g)): self is the genlet, run by a call in the top
     * frame, and there are no arguments (args and end are NULL). */
    int stepped;
} cps_call;

/* Before switching, while nothing has moved yet: find a reference to the
 * call's self that the interpreter holds in C code, out of the GC's sight,
 * until the call returns (3.11 under tracing or profiling: a bound-method
 * object made for the profiler).  Stored in call->hidden (owned); the
 * suspended stack then reports it to the GC.  Allocates nothing. */
void cps_find_hidden(cps_call *call);

/* Suspend the running stack: copy its fields into `saved` and cut its
 * bottom frame loose from the frames of whoever switched into it.  `call`
 * (may be NULL) is the switching method's call.  0, or -1 with
 * MemoryError set and nothing changed (3.13+: no room to note the frames
 * that it cuts loose from entry frames). */
int cps_save(PyThreadState *ts, cps_saved *saved, cps_call *call);

/* The unused end of a suspended stack's frame data stack: free memory
 * until the stack resumes (see stk_offer_spare). */
void *cps_spare(const cps_saved *saved, size_t *n);

/* Resume a stack: put its fields back and link its bottom frame to
 * `switcher`, the top frame of the stack that switched in. */
void cps_restore(PyThreadState *ts, cps_saved *saved);

/* After a resume, once the module's own bookkeeping is done: bring the
 * resumed frames up to date with tracing changes made while they were
 * suspended, and release what the suspension held (may run Python code). */
void cps_catch_up(PyThreadState *ts, cps_saved *saved);

/* The top frame of the running stack, as an opaque pointer. */
void *cps_top_frame(PyThreadState *ts);

/* PyThreadState_GetID(ts) */
uint64_t cps_thread_id(PyThreadState *ts);

/* That id of the live thread whose threading.get_ident() is `ident`;
 * -1 if there is none. */
int cps_thread_id_of(unsigned long ident, uint64_t *id);

/* The frame object of the top frame of a suspended stack (new reference),
 * None if the stack has no Python frame of its own; NULL on error. */
PyObject *cps_suspended_frame(const cps_saved *saved);

/* Set the thread state up for a brand-new stack (called on that stack):
 * own frame data stack in `chunk`, empty exception state, no trashcan
 * backlog; frame, recursion depth and context are the starter's.  The
 * new stack's `saved` record remembers where its bottom frame is.  An
 * `unlinked` stack starts with no frame below it instead (and is resumed
 * with a NULL switcher), so its bottom frame never has a caller. */
void cps_begin(PyThreadState *ts, cps_saved *saved, cps_root *root, void *chunk, int unlinked);

/* The stack's callable has returned: hand back what cps_begin took. */
void cps_end(PyThreadState *ts, cps_saved *saved);

/* The `switcher` value for cps_restore, captured before suspending. */
void cps_set_switcher(cps_saved *saved, void *switcher_top);

/* Visit the references held by the frames and state of a suspended stack
 * whose C stack is `slice` (some frames live on the C stack). */
int cps_traverse(const cps_saved *saved, const stk_slice *slice, visitproc visit, void *arg);

/* A suspended stack will never run again (its thread has ended, or its
 * frames moved to another stack): release what its frames hold, without
 * running them (no finally block runs).  Generators executing in it are
 * kept alive as they are, or with `hold_gens` (their frames moved: their
 * values were taken) become held shells that a rebuilt stack enters (see
 * cps_gen_hold).  Returns 1 when its memory must stay because a frame
 * object still points into it. */
int cps_discard(cps_saved *saved, int hold_gens);

/* The contextvars context of a suspended stack (borrowed, may be NULL),
 * and replacing it (the new one is taken, may be NULL). */
PyObject *cps_context(const cps_saved *saved);
void cps_set_context(cps_saved *saved, PyObject *ctx);

/* The same for the running stack: replacing it is what the C greenlet does
 * when a greenlet's gr_context is assigned while it runs. */
PyObject *cps_current_context(void);
void cps_set_current_context(PyObject *ctx);

/* Drop the references a saved record holds by itself (not its frames). */
void cps_clear(cps_saved *saved);

/* Free the memory a saved record owns, before the record itself goes. */
void cps_release(cps_saved *saved);

/* The exception being raised, as one object (taken), and back. */
PyObject *cps_fetch_exception(void);
void cps_restore_exception(PyObject *exc);

/* Whether the cyclic garbage collector is running right now (ts: the
   running thread's state). */
int cps_gc_collecting(PyThreadState *ts);

/* The running thread's state (with the GIL held: never NULL). */
PyThreadState *cps_tstate(void);

/* Whether the interpreter is shutting down (atexit handlers have run). */
int cps_finalizing(void);

/* Whether this is the main thread of the main interpreter. */
int cps_main_thread(void);

/* Make the main thread run its pending calls soon (any thread, no GIL). */
void cps_wake_main(void);

/* Run fn(arg) soon in the thread holding the GIL (3.13+; any thread, no
   GIL): 1 queued, 0 queue full, -1 not on this version. */
int cps_add_pending_call_any(int (*fn)(void *), void *arg);

/* PyEval_SetTrace for `ts`, current or parked (GIL held); -1 where only
   the current thread state can be set (3.13+). */
int cps_set_trace_of(PyThreadState *ts, Py_tracefunc func, PyObject *obj);

#endif

/* ---------------------------------------------------------------------
 * Frames as data: reading the frames of a suspended stack and building
 * frames that resume in the middle of their code (pickling; the
 * version-neutral side is src/framestate.c).
 * --------------------------------------------------------------------- */

/* What cps_frames reports about one frame of a suspended stack. */
typedef struct {
    void *frame;            /* opaque: the frame itself */
    PyObject *func;         /* borrowed, NULL if the frame has no function */
    PyCodeObject *code;     /* borrowed */
    int ip;                 /* code unit its instruction pointer holds (see design.md) */
    int depth;              /* exact value-stack depth above the locals, or -1 */
    int operands;           /* that depth includes the operands of the call in progress */
    int from_c;             /* entered from C rather than by an inlined Python call */
    int kind;               /* CPS_FRAME_* */
} cps_frame;

enum { CPS_FRAME_FUNCTION, CPS_FRAME_GENERATOR, CPS_FRAME_OTHER };

/* Whether this CPython version can read and rebuild frames. */
int cps_frames_supported(void);

/* The frames of a suspended stack, bottom first, into out[0..max).
 * Returns how many there are (which may exceed max). */
Py_ssize_t cps_frames(const cps_saved *saved, const stk_slice *slice, cps_frame *out, Py_ssize_t max);

/* The same for the running stack of this thread (its record `running`,
 * NULL for a thread's main stack): the frames from the frame object
 * `frame` down to the stack's bottom frame.  -1 if `frame` is not
 * running in it. */
Py_ssize_t cps_live_frames(PyThreadState *ts, const cps_saved *running, PyObject *frame,
                           cps_frame *out, Py_ssize_t max);

/* Value slot i of a frame (its locals first, then its value stack):
 * borrowed, NULL if empty.  *is_int is set for a raw integer (3.14+
 * keeps some on the value stack), returned as a new int object. */
PyObject *cps_frame_slot(void *frame, Py_ssize_t i, int *is_int);

/* The exception being handled on a suspended stack (borrowed, may be NULL). */
PyObject *cps_handled_exception(const cps_saved *saved);

/* On a new stack (after cps_begin): push a frame of `func` whose
 * `previous` is `previous` (may be NULL); its slots are all empty.
 * NULL with MemoryError set on failure. */
void *cps_push_frame(PyThreadState *ts, PyFunctionObject *func, void *previous);

/* Fill slot i of a pushed frame (the reference is stolen; may be NULL);
 * the int variant stores a raw integer where the version keeps them. */
void cps_frame_set_slot(void *frame, Py_ssize_t i, PyObject *value);
void cps_frame_set_int(void *frame, Py_ssize_t i, Py_ssize_t value);

/* Make a pushed frame wait for the result of the call at code unit
 * `call_ip` with `depth` values on its value stack, as if that call were
 * an inlined Python call: given the result, it goes on at `next_ip`;
 * thrown into, it reports the error at the call. */
void cps_frame_set_resume(void *frame, int call_ip, int next_ip, Py_ssize_t depth);

/* Run a pushed frame from its resume point until it returns, on top of the
 * frame it links to (for the bottom frame of a stack, the switcher that
 * cps_restore linked it to).  `value` (stolen) is the result of its call in
 * progress; NULL raises the current exception there instead.  The frame
 * is gone afterwards.  Returns its return value, NULL on exception.
 * `value` NULL without an exception set resumes it without a value, at
 * the instruction of its resume point (cps_frame_set_resume(f, i, i, d)).
 * `below` rebuilt frames wait under it: they count in the recursion depth.
 * Tracing and profiling see a 'call' event first, as for a generator. */
PyObject *cps_run_frame(PyThreadState *ts, void *frame, PyObject *value, int below);

/* The frame of a generator or coroutine that has not started or is
 * suspended (its state in *state), or NULL if it is running or finished.
 * Its value-stack depth goes to *depth. */
void *cps_gen_frame(PyObject *gen, int *state, Py_ssize_t *depth);

/* The function and instruction pointer of a frame (as in cps_frames). */
PyObject *cps_frame_func(void *frame);
int cps_frame_ip(void *frame);

/* The exception a generator is handling (borrowed, may be NULL). */
PyObject *cps_gen_exception(PyObject *gen);

/* Whether a generator state is "finished". */
int cps_gen_finished(PyObject *gen);

/* Give a generator that has just been created (not started) the frame
 * position `ip`, `depth` stack values and generator state `state` read by
 * cps_gen_frame; its slots are emptied first (cps_frame_set_slot fills
 * them).  `exc` (taken, may be NULL) is its exception being handled. */
int cps_gen_prepare(PyObject *gen, void **frame);
void cps_gen_finish(PyObject *gen, int state, int ip, Py_ssize_t depth, PyObject *exc);

/* Make a pushed frame the running stack's top frame (what C code called
 * now would be called from). */
void cps_link_top(PyThreadState *ts, void *frame);

/* Release a pushed frame that never ran (top first) and pop it. */
void cps_drop_frame(PyThreadState *ts, void *frame);

/* Set the exception being handled on the running stack (taken). */
void cps_set_handled_exception(PyThreadState *ts, PyObject *exc);

/* Generators running in a rebuilt stack (see pystate.c).  The generator
 * whose frame this is (borrowed), or NULL. */
PyObject *cps_frame_generator(void *frame);
/* A generator just made by calling its function becomes a held shell
 * (executing, never finalized by the GC): -1 if it has started. */
int cps_gen_hold(PyObject *gen);
/* The frame of a generator (in the generator object). */
void *cps_gen_iframe(PyObject *gen);
/* Whether a generator is a held shell that no stack runs yet. */
int cps_gen_held(PyObject *gen);
/* Make a held shell's frame a frame of the running (new) stack, linked
 * to `previous`, emptied to be filled like a pushed one; `exc` (taken, may
 * be NULL) is its exception being handled, and its exception state joins
 * the thread's chain, as while a generator runs. */
void *cps_gen_enter(PyThreadState *ts, PyObject *gen, void *frame_previous, PyObject *exc);
/* Run a generator frame entered so, as cps_run_frame runs a pushed one,
 * and as gen.send(value) would: *yielded tells a yield (the generator is
 * suspended, the value is what it yielded) from a return (it is finished,
 * the value is what it returned). */
PyObject *cps_run_gen_frame(PyThreadState *ts, PyObject *gen, void *frame, PyObject *value,
                            int below, int *yielded);
