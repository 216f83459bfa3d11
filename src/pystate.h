/* The per-stack part of CPython's thread state: the interface between the
 * version-neutral module code and src/pystate.c, the only file that knows
 * how each CPython minor version lays out its thread state and frames. */
#ifndef CONT_PYSTATE_H
#define CONT_PYSTATE_H

#include <Python.h>
#include "stk.h"

/* Saved fields of a suspended stack of frames.  Opaque here; pystate.c
 * checks at compile time that its real layout fits. */
typedef struct { void *opaque[26]; } cps_saved;

/* Storage that a continulet's stack needs at a fixed address for its whole
 * life (the thread state points into it while the stack runs): its
 * bottom exception-state entry and, on 3.11, its root C frame. */
typedef struct { void *opaque[8]; } cps_root;

/* Bytes of the first frame data-stack chunk that a new stack gets.  Frames
 * that need more spill over into chunks that CPython allocates itself. */
#define CPS_CHUNK_BYTES 1536

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
} cps_call;

/* Before switching, while nothing has moved yet: find a reference to the
 * call's self that the interpreter holds in C code, out of the GC's sight,
 * until the call returns (3.11 under tracing or profiling: a bound-method
 * object made for the profiler).  Stored in call->hidden (owned); the
 * suspended stack then reports it to the GC.  Allocates nothing. */
void cps_find_hidden(cps_call *call);

/* Suspend the running stack: copy its fields into `saved` and cut its
 * bottom frame loose from the frames of whoever switched into it.  `call`
 * (may be NULL) is the switching method's call. */
void cps_save(PyThreadState *ts, cps_saved *saved, cps_call *call);

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

/* A suspended stack will never run again (its thread has ended): release
 * what its frames hold, without running them (no finally block runs).
 * Generators executing in it are kept alive as they are.  Returns 1 when
 * its memory must stay because a frame object still points into it. */
int cps_discard(cps_saved *saved);

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

/* Whether the cyclic garbage collector is running right now. */
int cps_gc_collecting(void);

/* Whether the interpreter is shutting down (atexit handlers have run). */
int cps_finalizing(void);

#endif
