/* Everything that depends on the CPython minor version lives in this file:
 * which thread-state fields belong to a stack of frames, how frames are
 * laid out, and how a stack's bottom frame is linked to its switcher.
 *
 * Sections:  common helpers,  3.11,  3.13,  3.14 and 3.15.
 * 3.12 is not supported (nobody has tested it here; see docs/design.md).
 */
#define Py_BUILD_CORE 1
#include <Python.h>

#include "internal/pycore_frame.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_runtime.h"      /* _PyRuntime.main_thread */
#include "internal/pycore_gc.h"
#include "internal/pycore_pystate.h"   /* _PyThreadState_GET */
#if PY_VERSION_HEX >= 0x030D0000
#  include "internal/pycore_tstate.h"
#  include "internal/pycore_ceval.h"     /* _PyEval_AddPendingCall */
#endif
#if PY_VERSION_HEX >= 0x030E0000
#  include "internal/pycore_interpframe.h"
#  include "internal/pycore_stackref.h"
#endif

#include "pystate.h"
#include "codedepth.h"
#include <opcode.h>

#include <string.h>

#if PY_VERSION_HEX < 0x030B0000 || (PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000)
#  error "continulet supports CPython 3.11, 3.13, 3.14 and 3.15"
#endif

/* ======================================================================
 * Common: the records behind the opaque types of pystate.h
 * ====================================================================== */

typedef struct {
    _PyErr_StackItem exc;           /* bottom of this stack's handled-exception chain */
#if PY_VERSION_HEX < 0x030C0000
    _PyCFrame cframe;               /* 3.11: root C frame of this stack */
#endif
} root_t;

typedef struct {
    _PyInterpreterFrame *top;       /* top frame while suspended */
    _PyInterpreterFrame *switcher;  /* frame to link the bottom to on resume */
    _PyInterpreterFrame *bottom;    /* lowest frame of a suspended run, if it has any */
    _PyInterpreterFrame *entry;     /* C-stack entry frame under the bottom frame, if any */
    _PyStackChunk *root_chunk;      /* first data-stack chunk; NULL for a thread's main stack */
    root_t *root;
    PyObject **top_sp;              /* exact value-stack top of `top`, or NULL */
    PyObject *top_extra;            /* what `top` holds above top_sp (see call_depth); borrowed */
    PyObject *stepped;              /* the genlet whose step suspended it (cps_call.stepped), else NULL; borrowed, compared only */
    _PyErr_StackItem *exc_info;
    _PyStackChunk *chunk;
    PyObject **ds_top;
    PyObject **ds_limit;
    PyObject *context;              /* strong reference */
    PyObject *hidden;               /* see cps_find_hidden; strong reference */
    PyObject *held;                 /* see cps_call; borrowed */
    void *executor;                 /* 3.13 previous_executor, 3.14+ current_executor */
    void *delete_later;
#if PY_VERSION_HEX < 0x030C0000
    _PyCFrame *cframe;
    int delete_nesting;
    int root_at_switcher;           /* root cframe's current frame is the switcher's */
#endif
#if PY_VERSION_HEX >= 0x030F0000
    void *jit_exit;
#endif
    /* Frames whose `previous` was an entry frame, cut past it while the
       stack is suspended: pairs (frame, entry frame). */
    _PyInterpreterFrame **splices;  /* bottom pair first; kept while running */
    _PyInterpreterFrame *cp_frame;  /* checkpoint: a top frame marked at a suspension */
    PyCodeObject *cp_code;          /* its code (borrowed, compared only) */
    uintptr_t instr_version;        /* 3.13+: code instrumentation version */
    int nsplices;
    int splices_cap;
    int cp_nsplices;                /* splices below the checkpoint when it was marked */
    int py_depth;
    int c_depth;
    int tracing;
    int gens_held;                  /* see hold_finalizer */
} saved_t;

_Static_assert(sizeof(saved_t) == sizeof(cps_saved), "cps_saved is not the size of saved_t: recount CPS_SAVED_POINTERS and CPS_SAVED_INTS");
_Static_assert(sizeof(root_t) == sizeof(cps_root), "cps_root is not the size of root_t: recount CPS_ROOT_POINTERS");

#define SAVED(p) ((saved_t *)(void *)(p))

/* Version-specific primitives used by the common code further down. */
static _PyInterpreterFrame *top_frame(PyThreadState *ts);
static void set_top_frame(PyThreadState *ts, _PyInterpreterFrame *f);
static int is_entry_frame(const _PyInterpreterFrame *f);
static int is_thread_frame(const _PyInterpreterFrame *f);
static PyCodeObject *frame_code(const _PyInterpreterFrame *f);
static void save_version_fields(PyThreadState *ts, saved_t *s);
static void restore_version_fields(PyThreadState *ts, saved_t *s);
static void begin_version_fields(PyThreadState *ts, saved_t *s, root_t *root);
static int visit_frame(_PyInterpreterFrame *f, Py_ssize_t nvalues, visitproc visit, void *arg);
static Py_ssize_t frame_stack_depth(const _PyInterpreterFrame *f, int callee_inlined);
static void clear_values(_PyInterpreterFrame *f, Py_ssize_t n);
static void clear_head(_PyInterpreterFrame *f);
static int entered_from_c(const _PyInterpreterFrame *f);
static void note_instrumentation(PyThreadState *ts, saved_t *s);
static void catch_up_instrumentation(PyThreadState *ts, saved_t *s);
static PyObject *hidden_method(PyThreadState *ts, const cps_call *call);
static void release_finalizers(saved_t *s);

/* ======================================================================
 * CPython 3.11
 * The current frame hangs off tstate->cframe, a chain of _PyCFrame
 * structs that live on the C stack; each stack needs its own root one.
 * Tracing is cached in cframe->use_tracing.  One recursion counter.
 * ====================================================================== */
#if PY_VERSION_HEX < 0x030C0000

static _PyInterpreterFrame *top_frame(PyThreadState *ts) { return ts->cframe->current_frame; }
static void set_top_frame(PyThreadState *ts, _PyInterpreterFrame *f) { ts->cframe->current_frame = f; }
/* 3.11 keeps no entry frames on the C stack: a frame entered from C is
   flagged is_entry and links straight to the caller's frame. */
#define HAS_C_STACK_FRAMES 0
/* 3.11 caches tracing in each C frame (handled on restore), nothing more */
static void note_instrumentation(PyThreadState *ts, saved_t *s) { (void)ts; (void)s; }
static int instrumentation_changed(PyThreadState *ts, const saved_t *s) { (void)ts; (void)s; return 0; }
static void catch_up_instrumentation(PyThreadState *ts, saved_t *s) { (void)ts; (void)s; }
static int is_entry_frame(const _PyInterpreterFrame *f) { (void)f; return 0; }
static int is_thread_frame(const _PyInterpreterFrame *f) { return f->owner == FRAME_OWNED_BY_THREAD; }
static PyCodeObject *frame_code(const _PyInterpreterFrame *f) { return f->f_code; }
static int entered_from_c(const _PyInterpreterFrame *f) { return f->is_entry; }
static Py_ssize_t instr_unit(const _PyInterpreterFrame *f) { return f->prev_instr - _PyCode_CODE(f->f_code); }
static PyObject *frame_func(const _PyInterpreterFrame *f) { return (PyObject *)f->f_func; }
/* CALL_FUNCTION_EX finds [NULL, func, callargs, kwargs?] */
#define EX_FUNC_BELOW 2
static void clear_finalized(PyObject *op) { _Py_AS_GC(op)->_gc_prev &= ~_PyGC_PREV_MASK_FINALIZED; }

static void save_version_fields(PyThreadState *ts, saved_t *s)
{
    s->cframe = ts->cframe;
    s->py_depth = ts->recursion_limit - ts->recursion_remaining;
    s->delete_nesting = ts->trash_delete_nesting;
    s->delete_later = ts->trash_delete_later;
}

static void restore_version_fields(PyThreadState *ts, saved_t *s)
{
    ts->cframe = s->cframe;
    ts->recursion_remaining = ts->recursion_limit - s->py_depth;
    ts->trash_delete_nesting = s->delete_nesting;
    ts->trash_delete_later = s->delete_later;
    /* sys.settrace() may have run on another stack meanwhile: the cached
       flag in this stack's C frame must follow the thread's setting */
    ts->cframe->use_tracing = (ts->tracing == 0 &&
        (ts->c_tracefunc != NULL || ts->c_profilefunc != NULL)) ? 255 : 0;
    if (s->root != NULL && s->root_at_switcher)
        s->root->cframe.current_frame = s->switcher;
}

/* The root C frame's current frame is what the running entry frame returns
 * to: the switcher when the run's bottom frame is running, but a rebuilt
 * frame's caller (framestate.c) when a rebuilt frame above it runs.  Only
 * the first follows the switcher; the eval loop checks the link when the
 * entry frame returns (asserted in debug builds). */
static void note_root_link(saved_t *s)
{
    s->root_at_switcher = s->root != NULL &&
        (s->bottom == NULL || s->root->cframe.current_frame == s->switcher);
}

static void begin_version_fields(PyThreadState *ts, saved_t *s, root_t *root)
{
    /* the thread's setting, not the starter's cached flag: a starter that
       runs with tracing suspended (in a trace function, or stackless's
       hidden code) must not start an untraced stack (its `tracing` is 0) */
    root->cframe.use_tracing = (ts->tracing == 0 &&
        (ts->c_tracefunc != NULL || ts->c_profilefunc != NULL)) ? 255 : 0;
    root->cframe.current_frame = ts->cframe->current_frame;
    root->cframe.previous = NULL;
    ts->cframe = &root->cframe;
    s->cframe = &root->cframe;
    ts->trash_delete_nesting = 0;
    ts->trash_delete_later = NULL;
}

static int visit_frame(_PyInterpreterFrame *f, Py_ssize_t nvalues, visitproc visit, void *arg)
{
    Py_VISIT(f->frame_obj);
    Py_VISIT(f->f_func);
    Py_VISIT(f->f_code);
    Py_VISIT(f->f_locals);
    for (Py_ssize_t i = 0; i < nvalues; i++)
        Py_VISIT(f->localsplus[i]);
    return 0;
}

/* stacktop is only exact in a frame that made an inlined Python call and
   is waiting for it: the interpreter stores it right before such a call. */
/* Drop what a frame owns (it will never run again). */
static void clear_values(_PyInterpreterFrame *f, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        Py_CLEAR(f->localsplus[i]);
}

static void clear_head(_PyInterpreterFrame *f)
{
    Py_CLEAR(f->f_locals);
    Py_CLEAR(f->f_func);
    Py_CLEAR(f->f_code);
}

static Py_ssize_t frame_stack_depth(const _PyInterpreterFrame *f, int callee_inlined)
{
    return callee_inlined ? f->stacktop : -1;
}

/* Under sys.settrace or sys.setprofile, 3.11 calls a method descriptor
 * (`c.switch(x)`, compiled as LOAD_METHOD + CALL) through
 * trace_call_function(), which binds it to a new builtin-method object for
 * the profiler and keeps that object in a C local until the call returns.
 * Across a switch, that reference to `c` is invisible to the GC, and it
 * keeps the suspended stack and everything it refers to alive for good.
 * This finds the object so that the suspended stack can report it: the
 * call came through a method descriptor when the frame's value stack
 * holds [descriptor, self] right below the arguments, and the object is
 * then the newest builtin method of that descriptor bound to `self` that
 * the GC tracks (the interpreter made it just before the call; only a
 * profiler's Python code ran since). */
#define HIDDEN_SEARCH 256       /* newest objects looked at, per young generation */

static PyObject *hidden_method(PyThreadState *ts, const cps_call *call)
{
    if (ts->c_tracefunc == NULL && ts->c_profilefunc == NULL)
        return NULL;
    _PyInterpreterFrame *top = top_frame(ts);
    if (top == NULL || !is_thread_frame(top) || call->args == NULL)
        return NULL;
    PyCodeObject *co = frame_code(top);
    PyObject **lo = top->localsplus + co->co_nlocalsplus;
    PyObject **args = (PyObject **)call->args;
    if (args < lo + 2 || args > lo + co->co_stacksize)
        return NULL;
    PyObject *descr = args[-2];
    if (args[-1] != call->self || descr == NULL || !Py_IS_TYPE(descr, &PyMethodDescr_Type))
        return NULL;
    PyMethodDef *ml = ((PyMethodDescrObject *)descr)->d_method;
    struct _gc_runtime_state *gc = &ts->interp->gc;
    for (int gen = 0; gen < 2; gen++) {
        PyGC_Head *head = &gc->generations[gen].head;
        int budget = HIDDEN_SEARCH;
        for (PyGC_Head *g = _PyGCHead_PREV(head); g != head && budget-- > 0; g = _PyGCHead_PREV(g)) {
            PyObject *op = (PyObject *)(g + 1);
            if ((Py_IS_TYPE(op, &PyCFunction_Type) || Py_IS_TYPE(op, &PyCMethod_Type))
                    && ((PyCFunctionObject *)op)->m_ml == ml
                    && ((PyCFunctionObject *)op)->m_self == call->self)
                return Py_NewRef(op);
        }
    }
    return NULL;
}

/* ======================================================================
 * CPython 3.13
 * tstate->current_frame; a frame entered from C sits on an entry frame
 * (owner FRAME_OWNED_BY_CSTACK) that lives on the C stack.  Separate
 * Python and C recursion counters.  Tier-2 keeps previous_executor.
 * ====================================================================== */
#elif PY_VERSION_HEX < 0x030E0000

static _PyInterpreterFrame *top_frame(PyThreadState *ts) { return ts->current_frame; }
static void set_top_frame(PyThreadState *ts, _PyInterpreterFrame *f) { ts->current_frame = f; }
#define HAS_C_STACK_FRAMES 1
static int is_entry_frame(const _PyInterpreterFrame *f) { return f->owner == FRAME_OWNED_BY_CSTACK; }
static int is_thread_frame(const _PyInterpreterFrame *f) { return f->owner == FRAME_OWNED_BY_THREAD; }
static PyCodeObject *frame_code(const _PyInterpreterFrame *f) { return (PyCodeObject *)f->f_executable; }
/* 3.12+ mark a call from C with a separate entry frame instead */
static int entered_from_c(const _PyInterpreterFrame *f) { (void)f; return 0; }
/* no root C frame after 3.11 */
static void note_root_link(saved_t *s) { (void)s; }
static Py_ssize_t instr_unit(const _PyInterpreterFrame *f) { return f->instr_ptr - _PyCode_CODE(frame_code(f)); }
static PyObject *frame_func(const _PyInterpreterFrame *f) { return f->f_funcobj; }
/* CALL_FUNCTION_EX finds [func, NULL, callargs, kwargs?] */
#define EX_FUNC_BELOW 3

static void save_version_fields(PyThreadState *ts, saved_t *s)
{
    s->py_depth = ts->py_recursion_limit - ts->py_recursion_remaining;
    s->c_depth = Py_C_RECURSION_LIMIT - ts->c_recursion_remaining;
    s->delete_later = ts->delete_later;
    s->executor = ts->previous_executor;
}

static void restore_version_fields(PyThreadState *ts, saved_t *s)
{
    ts->py_recursion_remaining = ts->py_recursion_limit - s->py_depth;
    ts->c_recursion_remaining = Py_C_RECURSION_LIMIT - s->c_depth;
    ts->delete_later = s->delete_later;
    ts->previous_executor = s->executor;
}

static void begin_version_fields(PyThreadState *ts, saved_t *s, root_t *root)
{
    (void)s; (void)root;
    ts->delete_later = NULL;
    ts->previous_executor = NULL;
}

static int visit_frame(_PyInterpreterFrame *f, Py_ssize_t nvalues, visitproc visit, void *arg)
{
    Py_VISIT(f->frame_obj);
    Py_VISIT(f->f_funcobj);
    Py_VISIT(f->f_executable);
    Py_VISIT(f->f_locals);
    for (Py_ssize_t i = 0; i < nvalues; i++)
        Py_VISIT(f->localsplus[i]);
    return 0;
}

static void clear_values(_PyInterpreterFrame *f, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        Py_CLEAR(f->localsplus[i]);
}

static void clear_head(_PyInterpreterFrame *f)
{
    Py_CLEAR(f->f_locals);
    Py_CLEAR(f->f_funcobj);
    Py_CLEAR(f->f_executable);
}

static Py_ssize_t frame_stack_depth(const _PyInterpreterFrame *f, int callee_inlined)
{
    return callee_inlined ? f->stacktop : -1;
}

/* ======================================================================
 * CPython 3.14 and 3.15
 * Frames hold tagged _PyStackRef values; the interpreter stores the stack
 * pointer before every call that may escape, so it is exact in every
 * suspended frame.  C recursion is checked against stack addresses, which
 * stay valid because all stacks share the thread's C stack.  The entry
 * frame is owned by the interpreter (3.14 also knows FRAME_OWNED_BY_CSTACK).
 * 3.15 adds jit_exit and a profiler cache, last_profiled_frame.
 * ====================================================================== */
#else

#define HAS_C_STACK_FRAMES 1
static _PyInterpreterFrame *top_frame(PyThreadState *ts) { return ts->current_frame; }
static void set_top_frame(PyThreadState *ts, _PyInterpreterFrame *f) { ts->current_frame = f; }
static int is_entry_frame(const _PyInterpreterFrame *f)
{
#if PY_VERSION_HEX < 0x030F0000
    if (f->owner == FRAME_OWNED_BY_CSTACK)
        return 1;
#endif
    return f->owner == FRAME_OWNED_BY_INTERPRETER;
}
static int is_thread_frame(const _PyInterpreterFrame *f) { return f->owner == FRAME_OWNED_BY_THREAD; }
static PyCodeObject *frame_code(const _PyInterpreterFrame *f)
{
    return (PyCodeObject *)PyStackRef_AsPyObjectBorrow(f->f_executable);
}
static int entered_from_c(const _PyInterpreterFrame *f) { (void)f; return 0; }
/* no root C frame after 3.11 */
static void note_root_link(saved_t *s) { (void)s; }
static Py_ssize_t instr_unit(const _PyInterpreterFrame *f) { return f->instr_ptr - _PyCode_CODE(frame_code(f)); }

static void save_version_fields(PyThreadState *ts, saved_t *s)
{
    s->py_depth = ts->py_recursion_limit - ts->py_recursion_remaining;
    s->delete_later = ts->delete_later;
    s->executor = ts->current_executor;
#if PY_VERSION_HEX >= 0x030F0000
    s->jit_exit = ts->jit_exit;
#endif
}

static void restore_version_fields(PyThreadState *ts, saved_t *s)
{
    ts->py_recursion_remaining = ts->py_recursion_limit - s->py_depth;
    ts->delete_later = s->delete_later;
    ts->current_executor = s->executor;
#if PY_VERSION_HEX >= 0x030F0000
    ts->jit_exit = s->jit_exit;
    /* a cache of a frame address for out-of-process profilers: the frame
       it names may now be on another stack */
    ts->last_profiled_frame = NULL;
#endif
}

static void begin_version_fields(PyThreadState *ts, saved_t *s, root_t *root)
{
    (void)s; (void)root;
    ts->delete_later = NULL;
    ts->current_executor = NULL;
#if PY_VERSION_HEX >= 0x030F0000
    ts->jit_exit = NULL;
    ts->last_profiled_frame = NULL;
#endif
}

/* A reference that the frame owns: untagged and not NULL.  Tagged values
   are borrowed or immortal and must not be reported to the GC. */
static int visit_ref(_PyStackRef ref, visitproc visit, void *arg)
{
    if (PyStackRef_IsNull(ref) || (ref.bits & Py_TAG_REFCNT))
        return 0;
    Py_VISIT(PyStackRef_AsPyObjectBorrow(ref));
    return 0;
}

static int visit_frame(_PyInterpreterFrame *f, Py_ssize_t nvalues, visitproc visit, void *arg)
{
    int r;
    Py_VISIT(f->frame_obj);
    Py_VISIT(f->f_locals);
    if ((r = visit_ref(f->f_funcobj, visit, arg)) || (r = visit_ref(f->f_executable, visit, arg)))
        return r;
    for (Py_ssize_t i = 0; i < nvalues; i++)
        if ((r = visit_ref(f->localsplus[i], visit, arg)))
            return r;
    return 0;
}

static void clear_values(_PyInterpreterFrame *f, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        PyStackRef_CLEAR(f->localsplus[i]);
}

static void clear_head(_PyInterpreterFrame *f)
{
    Py_CLEAR(f->f_locals);
    PyStackRef_CLEAR(f->f_funcobj);
    PyStackRef_CLEAR(f->f_executable);
}

static Py_ssize_t frame_stack_depth(const _PyInterpreterFrame *f, int callee_inlined)
{
    (void)callee_inlined;
    return f->stackpointer ? f->stackpointer - f->localsplus : -1;
}

#endif

static PyObject *generator_of(const _PyInterpreterFrame *f);

/* An object that a frame holds above the values it reports (see
 * call_depth), and how many times. */
typedef struct {
    PyObject *obj;
    int refs;
} held_t;

/* ----------------------------------------------------------------------
 * C callables that iterate with a reference of their own.
 * list(g), sum(g), sorted(g), "".join(g), dict(g)...: the C code runs its
 * first argument through the iterator that PyObject_GetIter returned (a
 * generator returns itself), which it holds in a C local until it is done.
 * While the generator runs under such a call in a suspended stack, that is
 * one reference more of the stack's, which no frame shows: known only for
 * the callables listed here, found once at import.  Only those that take
 * the iterator before anything else runs, and hold no other hidden
 * reference to the argument (3.11's min and max take a tuple of their
 * arguments: left out there).
 * ---------------------------------------------------------------------- */
typedef struct {
    PyObject *callable;     /* a strong reference, kept for good */
    int refs;               /* how many it holds (PySequence_Fast: two) */
    int method;             /* called on a self (str.join), else on NULL */
    int one_positional;     /* iterates its first argument only if it is
                               the one positional argument (min, max) */
} holder_t;

static holder_t holders[16];
static int nholders;
static PyObject *builtin_next;     /* a strong reference, kept for good */

static int add_holder(PyObject *callable, int refs, int method, int one_positional)
{
    if (callable == NULL)
        return -1;
    holders[nholders++] = (holder_t){callable, refs, method, one_positional};
    return 0;
}

static int find_holders(void)
{
    if (nholders > 0)
        return 0;
    PyTypeObject *types[] = {&PyList_Type, &PyTuple_Type, &PySet_Type, &PyFrozenSet_Type, &PyDict_Type};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        add_holder(Py_NewRef((PyObject *)types[i]), 1, 0, 0);
    PyObject *b = PyImport_ImportModule("builtins");
    if (b == NULL)
        return -1;
    int rc = 0;
    builtin_next = PyObject_GetAttrString(b, "next");
    if (builtin_next == NULL) {
        Py_DECREF(b);
        return -1;
    }
    const char *any_args[] = {"sum", "sorted", "any", "all"};
    for (size_t i = 0; i < sizeof(any_args) / sizeof(any_args[0]) && rc == 0; i++)
        rc = add_holder(PyObject_GetAttrString(b, any_args[i]), 1, 0, 0);
#if PY_VERSION_HEX >= 0x030D0000
    if (rc == 0)
        rc = add_holder(PyObject_GetAttrString(b, "min"), 1, 0, 1);
    if (rc == 0)
        rc = add_holder(PyObject_GetAttrString(b, "max"), 1, 0, 1);
#endif
    Py_DECREF(b);
    /* PySequence_Fast: the iterator, and the one of PySequence_List */
    if (rc == 0)
        rc = add_holder(PyObject_GetAttrString((PyObject *)&PyUnicode_Type, "join"), 2, 1, 0);
    return rc;
}

/* Whether a call whose operands are ops (the callable and self, or NULL
 * and the callable on 3.11, or the callable and NULL, then nargs
 * arguments, nkw of them keywords: -1 if not known) runs the generator gen
 * as its first argument through references of its own: how many (0 if
 * not).  Then the operands
 * are all in place (the callable is compared, never read).  After the
 * call, nothing runs while the operands are dropped unless gen is freed,
 * and then it runs being finalized, with a count of 1. */
#ifdef CALL_KW
/* The number of keyword arguments that the names on top of a CALL_KW's
 * operands give (a tuple of the code's constants), -1 if they are not. */
static Py_ssize_t keyword_count(PyObject *names)
{
    return names != NULL && PyTuple_CheckExact(names) ? PyTuple_GET_SIZE(names) : -1;
}
#endif

static int holds_iterator(PyObject *const *ops, Py_ssize_t nargs, Py_ssize_t nkw, PyObject *gen)
{
    if (gen == NULL || nargs < 1 || ops[2] != gen)
        return 0;
    PyObject *callable = ops[0] != NULL ? ops[0] : ops[1];
    PyObject *self = ops[0] != NULL ? ops[1] : NULL;
    for (int i = 0; i < nholders; i++) {
        const holder_t *h = &holders[i];
        if (h->callable == callable)
            return (self != NULL) == h->method && Py_REFCNT(gen) > h->refs && (!h->one_positional || (nkw >= 0 && nargs - nkw == 1))
                ? h->refs : 0;
    }
    return 0;
}

#if PY_VERSION_HEX < 0x030E0000
/* ----------------------------------------------------------------------
 * 3.11 and 3.13: the value stack of a frame in a call from C.
 * The interpreter keeps the stack pointer of such a frame in a C local, so
 * its depth comes from the analysis of codedepth.c, for the instructions
 * whose operands are known to stay on the stack while the call runs.  Only
 * those: an instruction that has already dropped some of its operands
 * (the interpreter does, e.g. after a CALL returns, before it pops them
 * all) can run Python code from a finalizer or a signal handler at that
 * point, and reporting the dropped slots would hand the GC dead objects.
 * ---------------------------------------------------------------------- */

/* Whether the frame callee runs the Python method __next__ of `it`
 * (called by the interpreter's tp_iternext slot for a `for` loop). */
static int runs_next_of(const _PyInterpreterFrame *callee, PyObject *it)
{
    if (callee == NULL || !is_thread_frame(callee))
        return 0;
    PyCodeObject *co = frame_code(callee);
    return co->co_argcount >= 1 && callee->localsplus[0] == it
        && PyUnicode_CompareWithASCIIString(co->co_name, "__next__") == 0;
}

/* Whether the frame callee runs the callable of `it`, an iterator
 * iter(f, stop) (whose C __next__ calls f): `it` must be alive, since the
 * slot may name it while it is being freed, after the loop dropped it,
 * when it has let go of f and is untracked already. */
typedef struct {
    PyObject *func;
    int found;
} find_t;

static int find_func(PyObject *o, void *arg)
{
    find_t *w = arg;
    if (o == w->func || (PyMethod_Check(o) && PyMethod_GET_FUNCTION(o) == w->func))
        w->found = 1;
    return 0;
}

static int runs_callable_of(const _PyInterpreterFrame *callee, PyObject *it)
{
    if (callee == NULL || !is_thread_frame(callee) || !PyCallIter_Check(it)
            || !_PyObject_GC_IS_TRACKED(it) || Py_REFCNT(it) < 1)
        return 0;
    /* its only references are the callable and the sentinel */
    find_t w = {frame_func(callee), 0};
    Py_TYPE(it)->tp_traverse(it, find_func, &w);
    return w.found;
}

/* Whether a switch called with keywords got them from the dict `kw`:
 * PyObject_Call copies the dict's values, in order, after the positional
 * arguments.  Only at the switch (cps_save), where the call runs. */
static int kwargs_from(const cps_call *call, PyObject *kw)
{
    if (call == NULL || call->args == NULL || call->nkw == 0 || kw == NULL
            || !PyDict_CheckExact(kw) || PyDict_GET_SIZE(kw) != call->nkw)
        return 0;
    Py_ssize_t pos = 0, i = call->end - call->args - call->nkw;
    PyObject *key, *value;
    while (PyDict_Next(kw, &pos, &key, &value))
        if (call->args[i++] != value)
            return 0;
    return 1;
}

/* The tuple whose items a switch got as its positional arguments, if it
 * was called through PyObject_Call (the only way a CALL_FUNCTION_EX calls
 * it directly): then `args` points at the items of that tuple, and the
 * tuple's header lies right before them.  Other callers pass arrays that
 * start elsewhere (a frame's value stack, a C array, or, with keywords, a
 * heap copy, which this leaves alone): the header read there is some other
 * memory of that caller's, hence no address checking, and a tuple is
 * accepted only if its type and size match. */
STK_NO_SANITIZE static PyObject *args_tuple(const cps_call *call)
{
    if (call == NULL || call->args == NULL || call->nkw != 0 || call->end - call->args < 1)
        return NULL;
    PyObject *t = (PyObject *)(void *)((const char *)call->args - offsetof(PyTupleObject, ob_item));
    if (Py_TYPE(t) != &PyTuple_Type || Py_SIZE(t) != call->end - call->args || Py_REFCNT(t) < 1)
        return NULL;
    return t;
}

/* Whether the callargs slot of a CALL_FUNCTION_EX that calls next() holds
 * the tuple (g,) or (g, default) whose genlet g is stepping: the slot may
 * be stale only if C code stepped g while the instruction dropped its
 * operands after the call (no Python-level code can), hence no address
 * checking, as in args_tuple. */
STK_NO_SANITIZE static int stepped_tuple(PyObject *t, PyObject *gen)
{
    return t != NULL && Py_TYPE(t) == &PyTuple_Type && Py_REFCNT(t) >= 1
        && (Py_SIZE(t) == 1 || Py_SIZE(t) == 2) && PyTuple_GET_ITEM(t, 0) == gen;
}

static Py_ssize_t call_depth(const _PyInterpreterFrame *rf, const _PyInterpreterFrame *callee,
                             const cps_call *call, held_t *extra)
{
    PyCodeObject *co = frame_code(rf);
    PyObject *const *args = call != NULL ? call->args : NULL;
    if (extra != NULL)
        *extra = (held_t){NULL, 0};
    int op, oparg, d;
    if (!cdp_lookup(co, instr_unit(rf), &op, &oparg, &d))
        return -1;
    Py_ssize_t nl = co->co_nlocalsplus;
    if (d > co->co_stacksize)
        return -1;
    /* a generator that the instruction is running, as the callee frame */
    PyObject *gen = callee != NULL && callee->owner == FRAME_OWNED_BY_GENERATOR ? generator_of(callee) : NULL;
    /* or a genlet that the top frame's instruction steps through its
       tp_iternext (issue 8: `next(g)`, `next(*(g,))` with g a genlet):
       the switch proves that it runs now, as a callee generator frame does */
    if (gen == NULL && callee == NULL && call != NULL && call->stepped)
        gen = call->self;
    switch (op) {
    case FOR_ITER: {
        /* The iterator stays on the stack while its __next__ runs.  When
           it is exhausted, the interpreter drops it while the slot still
           names it, and Python code may run then (its finalizer, which
           the GC would call a second time if it saw the object): trusted
           only while the iterator is the generator that runs, or the self
           of a Python __next__ that runs.  A generator that runs after it
           has been dropped is being finalized, alive by the reference
           that its deallocation holds, a reference of this suspended
           stack all the same. */
        PyObject *it = d >= 1 ? rf->localsplus[nl + d - 1] : NULL;
        if (it != NULL && (it == gen || runs_next_of(callee, it) || runs_callable_of(callee, it)))
            return nl + d;
        return -1;
    }
    case SEND:
        /* the same, with the receiver below the value sent, which 3.11
           pops into a C local */
        return d >= 2 && gen != NULL && rf->localsplus[nl + d - 2] == gen ? nl + d - 1 : -1;
    case CALL_FUNCTION_EX: {
        /* func stays until the call returns, then is dropped at once;
           callargs and kwargs may live in C locals (3.11 pops them, 3.13
           replaces a callargs that is not a tuple).  So the slots are
           trusted only while the call runs: when the switch itself got the
           items of the tuple in the callargs slot (then that tuple is the
           one the call holds: it is reported too), or when the callee
           frame runs func. */
        int k = oparg & 1;
        if (d < 3 + k)
            return -1;
        PyObject *callargs = rf->localsplus[nl + d - 1 - k];
        PyObject *func = rf->localsplus[nl + d - EX_FUNC_BELOW - k];
        if (args != NULL && callargs != NULL
                && (const char *)args == (const char *)callargs + offsetof(PyTupleObject, ob_item))
            return nl + d - k;
        if (callee != NULL && func != NULL && frame_func(callee) == func)
            return nl + d - 1 - k;
        /* next(*args) stepping the genlet args[0] (3.11 and 3.13 keep the
           tuple in a C local): the callable is compared, never read, and
           the tuple is read only then (see stepped_tuple) */
        if (callee == NULL && gen != NULL && func == builtin_next && stepped_tuple(callargs, gen))
            return nl + d - k;
        /* callargs was no tuple (f(*a_list)): the call runs with the items
           of a tuple made from it, which only a C local holds, and the
           slot may name a freed object.  If the switch got that tuple's
           items, the call runs: the slots below callargs are reported,
           and the tuple too. */
        PyObject *made = extra != NULL ? args_tuple(call) : NULL;
        if (made != NULL && made != callargs) {
            *extra = (held_t){made, 1};
            return nl + d - 1 - k;
        }
        /* With keywords the switch gets copies of the arguments, and the
           tuple in use may be in a C local: if its keyword values are
           those of the dict in the kwargs slot (always a dict of the
           interpreter's own making, alive while the call runs), the call
           runs, and the slots below callargs are trusted. */
        if (k && extra != NULL && kwargs_from(call, rf->localsplus[nl + d - 1]))
            return nl + d - 1 - k;
        return -1;
    }
#ifdef PRECALL
    case PRECALL:
#endif
#ifdef CALL_KW
    case CALL_KW:
#endif
    case CALL: {
        /* A call from C that runs a generator given to it (next(g),
           list(g), g.send(v)): the callable and the arguments are dropped
           one by one after the call, and only the slots below them stay
           trusted.  The generator itself is reported when it is one of
           them: it stays there during the call, and if it runs after
           that, it is being finalized, alive by the reference that its
           deallocation holds, which this stack holds all the same. */
        if (extra == NULL || gen == NULL)
            return -1;
        Py_ssize_t top = d, nops = (Py_ssize_t)oparg + 2;
#ifdef PRECALL
        if (op == CALL)
            top += oparg;   /* 3.11: PRECALL left the operands where they lie */
#endif
#ifdef CALL_KW
        if (op == CALL_KW)
            nops++;         /* the names of the keyword arguments */
#endif
        if (top > co->co_stacksize || top < nops)
            return -1;
        for (Py_ssize_t i = top - nops; i < top; i++)
            if (rf->localsplus[nl + i] == gen)
                *extra = (held_t){gen, 1};
        /* list(g), sum(g), "".join(g)...: the callable holds g once more */
        Py_ssize_t nkw = -1;        /* 3.11: KW_NAMES left them in a C local */
#ifdef CALL_KW
        nkw = op == CALL_KW ? keyword_count(rf->localsplus[nl + top - 1]) : 0;
#endif
        int refs = holds_iterator(&rf->localsplus[nl + top - nops], oparg, nkw, gen);
        if (refs > 0) {
            extra->refs = refs;
            return nl + top;
        }
        return nl + top - nops;
    }
    default:
        return -1;
    }
}

/* A generator frame running in a suspended stack: its generator reports
 * [0, stacktop) (3.11: the depth when it was last resumed or called Python
 * code inline; 3.13: nothing while it runs, stacktop is -1).  Report the
 * values above that, up to the exact depth n, which nobody else does. */
static int visit_running_values(const _PyInterpreterFrame *f, Py_ssize_t n, visitproc visit, void *arg)
{
    for (Py_ssize_t i = f->stacktop > 0 ? f->stacktop : 0; i < n; i++)
        Py_VISIT(f->localsplus[i]);
    return 0;
}
/* 3.11, 3.13: call_depth does it (case CALL) */
static held_t held_by_callable(const _PyInterpreterFrame *rf, Py_ssize_t n,
                               const _PyInterpreterFrame *callee, PyObject *stepped)
{
    (void)rf; (void)n; (void)callee; (void)stepped;
    return (held_t){NULL, 0};
}
#else
/* 3.14+ store the stack pointer before every call that may escape */
static Py_ssize_t call_depth(const _PyInterpreterFrame *rf, const _PyInterpreterFrame *callee,
                             const cps_call *call, held_t *extra)
{
    (void)rf; (void)callee; (void)call;
    if (extra != NULL)
        *extra = (held_t){NULL, 0};
    return -1;
}

/* An object reference of a stack slot, NULL for none; 0 if it holds a
 * tagged integer instead. */
static int slot_object(_PyStackRef ref, PyObject **out)
{
    if (PyStackRef_IsTaggedInt(ref))
        return 0;
    *out = PyStackRef_IsNull(ref) ? NULL : PyStackRef_AsPyObjectBorrow(ref);
    return 1;
}

/* list(g), sum(g), "".join(g)... in a frame whose n values are exact: the
 * call's operands (which may be borrowed references) stay on its stack
 * while it runs, and the callable holds g once more (holds_iterator). */
static held_t held_by_callable(const _PyInterpreterFrame *rf, Py_ssize_t n,
                               const _PyInterpreterFrame *callee, PyObject *stepped)
{
    const held_t none = {NULL, 0};
    /* the generator that the call runs: the callee frame's, or, for the
       top frame, the genlet whose tp_iternext made the switch (list(g)) */
    PyObject *gen = callee != NULL && callee->owner == FRAME_OWNED_BY_GENERATOR ? generator_of(callee)
        : callee == NULL ? stepped : NULL;
    if (gen == NULL)
        return none;
    PyCodeObject *co = frame_code(rf);
    int op, oparg, d;
    if (!cdp_lookup(co, instr_unit(rf), &op, &oparg, &d) || (op != CALL && op != CALL_KW) || oparg < 1)
        return none;
    Py_ssize_t nops = (Py_ssize_t)oparg + 2 + (op == CALL_KW), nkw = 0;
    if (n - nops < co->co_nlocalsplus)
        return none;
    const _PyStackRef *base = &rf->localsplus[n - nops];
    PyObject *ops[3], *names = NULL;
    for (int i = 0; i < 3; i++)
        if (!slot_object(base[i], &ops[i]))
            return none;
    if (op == CALL_KW && (!slot_object(base[nops - 1], &names) || (nkw = keyword_count(names)) < 0))
        return none;
    return (held_t){gen, holds_iterator(ops, oparg, nkw, gen)};
}

static int visit_running_values(const _PyInterpreterFrame *f, Py_ssize_t n, visitproc visit, void *arg)
{
    (void)f; (void)n; (void)visit; (void)arg;
    return 0;
}
#endif

#if PY_VERSION_HEX >= 0x030D0000
static void clear_finalized(PyObject *op) { _PyGC_CLEAR_FINALIZED(op); }
#endif

#if PY_VERSION_HEX >= 0x030D0000
/* 3.12+ make the builtin-method object for a profiler only for the duration
 * of the profiler's call: nothing is hidden across a switch. */
static PyObject *hidden_method(PyThreadState *ts, const cps_call *call)
{
    (void)ts; (void)call;
    return NULL;
}

/* 3.12+ trace with sys.monitoring: turning tracing on or off re-writes
 * the bytecode of every code object that runs in some thread's frame
 * chain, and the rest catches up when it is next entered (RESUME).  The
 * frames of a suspended stack are in no chain and resume in the middle of
 * their code, so if the instrumentation changed meanwhile, their code must
 * be brought up to date by hand.  The function that does it is internal
 * and not exported; changing the events of a monitoring tool makes
 * CPython do it for every executing code object, which by then includes
 * ours.  It must be a change of the interpreter's event sets: toggling
 * this thread's trace function changes nothing while another thread
 * traces (CPython then instruments nothing, and the stale code trips its
 * sanity checks), so a free sys.monitoring tool is toggled; only if all
 * are taken, the trace function. */
static int noop_trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj; (void)frame; (void)what; (void)arg;
    return 0;
}

static uintptr_t instrumentation_version(PyThreadState *ts)
{
    return ts->interp->ceval.instrumentation_version;
}

static void note_instrumentation(PyThreadState *ts, saved_t *s)
{
    s->instr_version = instrumentation_version(ts);
}

/* 1 if a free tool was toggled, 0 if none was free, -1 on error */
static int toggle_free_tool(void)
{
    PyObject *mon = PySys_GetObject("monitoring");      /* borrowed */
    if (mon == NULL)
        return 0;
    for (int id = 5; id >= 0; id--) {
        PyObject *tool = PyObject_CallMethod(mon, "get_tool", "i", id);
        if (tool == NULL)
            return -1;
        int is_free = tool == Py_None;
        Py_DECREF(tool);
        if (!is_free)
            continue;
        PyObject *r = PyObject_CallMethod(mon, "use_tool_id", "is", id, "_continuation catch-up");
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        /* PY_START: any event set that differs from none */
        PyObject *on = PyObject_CallMethod(mon, "set_events", "ii", id, 1);
        PyObject *off = on ? PyObject_CallMethod(mon, "set_events", "ii", id, 0) : NULL;
        PyObject *freed = PyObject_CallMethod(mon, "free_tool_id", "i", id);
        int ok = on != NULL && off != NULL && freed != NULL;
        Py_XDECREF(on);
        Py_XDECREF(off);
        Py_XDECREF(freed);
        return ok ? 1 : -1;
    }
    return 0;
}

static int instrumentation_changed(PyThreadState *ts, const saved_t *s)
{
    return s->instr_version != instrumentation_version(ts);
}

/* (out of line: cps_catch_up, inlined into every switch, only tests) */
static __attribute__((noinline)) void catch_up_instrumentation(PyThreadState *ts, saved_t *s)
{
    PyObject *exc = cps_fetch_exception();
    int r = toggle_free_tool();
    if (r == 0) {
        Py_tracefunc func = ts->c_tracefunc;
        PyObject *obj = Py_XNewRef(ts->c_traceobj);
        if (func != NULL) {
            PyEval_SetTrace(NULL, NULL);
            PyEval_SetTrace(func, obj);
        }
        else {
            PyEval_SetTrace(noop_trace, NULL);
            PyEval_SetTrace(NULL, NULL);
        }
        Py_XDECREF(obj);
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(NULL);
    cps_restore_exception(exc);
}
#endif

/* ======================================================================
 * Common code, written once against the primitives above
 * ====================================================================== */

/* The lowest frame of a continulet's stack: the one linked to the frame
 * that switched in, directly or through an entry frame.  Usually the
 * first frame of its own data stack, but generator frames live in their
 * generators, so a run that starts with gen.send() has one below it; any
 * frame below the first data-stack frame is such a generator frame, so
 * the walk down to the switcher is short.  NULL when the stack has no
 * frame of its own (its callable is C code that has not called Python),
 * and for a thread's main stack, which has no switcher. */
static inline __attribute__((always_inline)) _PyInterpreterFrame *bottom_frame(const saved_t *s, PyThreadState *ts,
                                                                           _PyInterpreterFrame *top)
{
    _PyStackChunk *root = s->root_chunk;
    if (root == NULL || top == s->switcher)
        return NULL;
    /* a first frame too big for the root chunk went to a new one */
    int in_root = ts->datastack_chunk == root
        ? (char *)ts->datastack_top > (char *)&root->data[1]
        : root->top > 1;
    _PyInterpreterFrame *f = in_root ? (_PyInterpreterFrame *)&root->data[1] : top;
    for (;;) {
        _PyInterpreterFrame *p = f->previous;
        if (p == NULL || p == s->switcher || (is_entry_frame(p) && p->previous == s->switcher))
            return f;
        f = p;
    }
}

/* Entry frames (3.13+) live on the C stack, whose bytes move while the
 * stack is suspended: anyone reading a suspended frame's f_back would read
 * whatever occupies those addresses now.  So every frame that links to an
 * entry frame is linked past it until the stack resumes.
 *
 * Finding those frames means walking the stack's frames, and a stack that
 * switches 500 frames deep would pay for 500 frames at every switch.  So
 * the walk stops at a checkpoint: the top frame of an earlier suspension,
 * if it has not returned since.  Every frame below a live frame is
 * unchanged (frames are a stack), so the entry frames found below it last
 * time are still the ones there.  A frame proves it is still the same by a
 * mark left in its return_offset field: CPython writes that field when it
 * pushes a frame and before every Python call the frame makes, and reads it
 * only when such a callee returns.  The mark is only left in a top frame
 * that is in the middle of a call to C (ours), at the end of the data
 * stack: there, no Python callee is about to return into it. */
#if HAS_C_STACK_FRAMES
#define CHECKPOINT_MARK 0xFFFFu

/* call_opcodes[op]: op is one of the CALL instructions (all forms). */
static unsigned char call_opcodes[256];

static int add_opcodes(PyObject *map, PyObject *names)
{
    PyObject *it = PyObject_GetIter(names);
    if (it == NULL)
        return -1;
    PyObject *name;
    while ((name = PyIter_Next(it)) != NULL) {
        PyObject *v = PyDict_GetItemWithError(map, name);
        long op = v != NULL ? PyLong_AsLong(v) : -1;
        Py_DECREF(name);
        if (op < 0 || op > 255) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ImportError, "_continuation: unexpected opcode table");
            Py_DECREF(it);
            return -1;
        }
        call_opcodes[op] = 1;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int find_call_opcodes(void)
{
    PyObject *m = PyImport_ImportModule("_opcode_metadata");
    if (m == NULL)
        return -1;
    PyObject *opmap = PyObject_GetAttrString(m, "opmap");
    PyObject *spmap = PyObject_GetAttrString(m, "_specialized_opmap");
    PyObject *specs = PyObject_GetAttrString(m, "_specializations");
    PyObject *base = Py_BuildValue("(ssssss)", "CALL", "CALL_KW", "CALL_FUNCTION_EX",
                                   "INSTRUMENTED_CALL", "INSTRUMENTED_CALL_KW",
                                   "INSTRUMENTED_CALL_FUNCTION_EX");
    int rc = -1;
    if (opmap && spmap && specs && base && add_opcodes(opmap, base) == 0) {
        rc = 0;
        const char *families[] = {"CALL", "CALL_KW"};
        for (int i = 0; i < 2 && rc == 0; i++) {
            PyObject *l = PyDict_GetItemString(specs, families[i]);
            if (l != NULL)
                rc = add_opcodes(spmap, l);
        }
    }
    Py_XDECREF(base);
    Py_XDECREF(specs);
    Py_XDECREF(spmap);
    Py_XDECREF(opmap);
    Py_DECREF(m);
    return rc;
}

/* Whether `f`, the top frame, may carry the mark: a frame of this thread,
 * the last one in the data stack, executing a CALL. */
static int can_checkpoint(PyThreadState *ts, _PyInterpreterFrame *f)
{
    if (f == NULL || !is_thread_frame(f))
        return 0;
    char *end = (char *)f + (size_t)frame_code(f)->co_framesize * sizeof(void *);
    return end == (char *)ts->datastack_top && call_opcodes[f->instr_ptr->op.code];
}

static int is_checkpoint(const saved_t *s, const _PyInterpreterFrame *f)
{
    return f == s->cp_frame && is_thread_frame(f)
        && f->return_offset == CHECKPOINT_MARK && frame_code(f) == s->cp_code;
}

/* Room for n entries in s->splices: 0, or -1 with MemoryError set. */
static int reserve_splices(saved_t *s, int n)
{
    if (n <= s->splices_cap)
        return 0;
    int cap = s->splices_cap ? s->splices_cap : 8;
    while (cap < n)
        cap *= 2;
    void *p = PyMem_RawRealloc(s->splices, (size_t)cap * sizeof(*s->splices));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->splices = p;
    s->splices_cap = cap;
    return 0;
}

/* Room in s->splices for every pair that cut_entry_frames() will collect
 * below `top`, made before cps_save() changes anything, so that a switch
 * that cannot have it fails cleanly (MemoryError where it was called)
 * instead of stopping the interpreter halfway through.  The walk is
 * cut_entry_frames()'s, counting only.  1 in the usual case, which
 * collects nothing: the stack stops at the checkpoint again (see
 * cut_entry_frames); else 0, or -1 with MemoryError set. */
static int reserve_cut(saved_t *s, _PyInterpreterFrame *top, _PyInterpreterFrame *bottom)
{
    if (top != NULL && top == s->cp_frame && is_checkpoint(s, top))
        return 1;
    if (top == NULL)
        return 0;
    /* (bottom: the frame whose link cps_save() cuts, where the walk ends) */
    int n = s->nsplices;
    for (_PyInterpreterFrame *f = top; f != NULL && f != bottom; f = f->previous) {
        if (s->cp_frame != NULL && is_checkpoint(s, f))
            break;
        if (f->previous != NULL && is_entry_frame(f->previous))
            n += 2;
    }
    return reserve_splices(s, n);
}

/* Cut the frames of the recorded pairs loose from their entry frames. */
static void cut_pairs(saved_t *s)
{
    for (int i = 0; i < s->nsplices; i += 2)
        s->splices[i]->previous = s->splices[i + 1]->previous;
}

static void cut_entry_frames(PyThreadState *ts, saved_t *s, int at_checkpoint)
{
    /* The usual case (reserve_cut found it): the stack stops in the same
       call as last time (a loop that switches, sends or receives).  Its
       pairs are exactly the checkpoint's, and the mark already stands:
       what the walk below would find and write again, for ~70
       instructions less per switch. */
    if (at_checkpoint) {
        s->nsplices = s->cp_nsplices;
        cut_pairs(s);
        return;
    }
    /* Walk down to the checkpoint (or the bottom), collecting the new
       pairs after the old ones, top first. */
    int old = s->nsplices, n = old, keep = 0, reached = 0;
    for (_PyInterpreterFrame *f = s->top; f != NULL; f = f->previous) {
        if (s->cp_frame != NULL && is_checkpoint(s, f)) {
            keep = s->cp_nsplices;
            reached = 1;
            break;
        }
        _PyInterpreterFrame *prev = f->previous;
        if (prev == NULL || !is_entry_frame(prev))
            continue;
        if (reserve_splices(s, n + 2) < 0)      /* (reserve_cut made the room) */
            Py_FatalError("_continuation: out of memory while suspending frames");
        s->splices[n++] = f;
        s->splices[n++] = prev;
    }
    /* The pairs below the checkpoint stay; the new ones follow them,
       bottom first. */
    int fresh = n - old;
    if (fresh > 0 && keep != old)
        memmove(&s->splices[keep], &s->splices[old], (size_t)fresh * sizeof(*s->splices));
    for (int i = keep, j = keep + fresh - 2; i < j; i += 2, j -= 2) {
        _PyInterpreterFrame *f = s->splices[i], *e = s->splices[i + 1];
        s->splices[i] = s->splices[j];
        s->splices[i + 1] = s->splices[j + 1];
        s->splices[j] = f;
        s->splices[j + 1] = e;
    }
    s->nsplices = keep + fresh;
    cut_pairs(s);

    if (can_checkpoint(ts, s->top)) {
        s->top->return_offset = CHECKPOINT_MARK;
        s->cp_frame = s->top;
        s->cp_code = frame_code(s->top);
        s->cp_nsplices = s->nsplices;
    }
    else if (!reached) {
        s->cp_frame = NULL;
    }
}
#else
static int find_call_opcodes(void) { return 0; }
static void cut_entry_frames(PyThreadState *ts, saved_t *s, int at_checkpoint)
{
    (void)ts; (void)s; (void)at_checkpoint;
}
static int reserve_cut(saved_t *s, _PyInterpreterFrame *top, _PyInterpreterFrame *bottom)
{
    (void)s; (void)top; (void)bottom;
    return 0;       /* 3.11: no entry frames to cut */
}
#endif

int cps_init(void)
{
    return find_call_opcodes() < 0 || find_holders() < 0 ? -1 : 0;
}

/* Put the entry frames back; the pairs stay recorded for the next cut. */
static void restore_entry_frames(saved_t *s)
{
    for (int i = 0; i < s->nsplices; i += 2)
        s->splices[i]->previous = s->splices[i + 1];
}

/* Whether f was linked past an entry frame: the frame below it called C. */
static int is_cut(const saved_t *s, const _PyInterpreterFrame *f)
{
    for (int i = 0; i < s->nsplices; i += 2)
        if (s->splices[i] == f)
            return 1;
    return 0;
}

void *cps_top_frame(PyThreadState *ts)
{
    return top_frame(ts);
}

uint64_t cps_thread_id(PyThreadState *ts)
{
    /* PyThreadState_GetID() without the call into libpython (with -flto
       this inlines into the switch); `id` is a field of the public struct */
    return ts->id;
}

PyObject *cps_suspended_frame(const cps_saved *saved)
{
    const saved_t *s = (const saved_t *)(const void *)saved;
    if (s->top == NULL || (s->bottom == NULL && s->root_chunk != NULL))
        Py_RETURN_NONE;     /* no Python frame of its own */
    /* PyEval_GetFrame() makes the frame object of the thread's top frame
       (skipping incomplete ones), so make this stack's top frame the
       thread's for the call; it runs no Python code.  The suspended
       frames do not move while suspended, and the frame object follows
       its frame when the frame ends, as for any running frame. */
    PyThreadState *ts = PyThreadState_Get();
    _PyInterpreterFrame *running = top_frame(ts);
    set_top_frame(ts, s->top);
    PyFrameObject *f = PyEval_GetFrame();
    set_top_frame(ts, running);
    return Py_NewRef(f != NULL ? (PyObject *)f : Py_None);
}

int cps_thread_id_of(unsigned long ident, uint64_t *id)
{
    /* (the interpreter's list of thread states may only be walked with
       the GIL held, which we do) */
    PyInterpreterState *interp = PyThreadState_Get()->interp;
    for (PyThreadState *p = PyInterpreterState_ThreadHead(interp); p != NULL; p = PyThreadState_Next(p))
        if (p->thread_id == ident) {
            *id = cps_thread_id(p);
            return 0;
        }
    return -1;
}

void cps_set_switcher(cps_saved *saved, void *switcher_top)
{
    SAVED(saved)->switcher = switcher_top;
}

void cps_find_hidden(cps_call *call)
{
    call->hidden = hidden_method(PyThreadState_Get(), call);
}

int cps_save(PyThreadState *ts, cps_saved *saved, cps_call *call)
{
    saved_t *s = SAVED(saved);
    _PyInterpreterFrame *top = top_frame(ts);
    /* A run with no Python frame of its own (its callable is C code that
       switches: continulet.switch itself, a C channel's send) finds its
       switcher's frame on top: another stack's, which goes on running and
       returns while this one is suspended.  Its record holds no frame, so
       that the GC's traversal, a discard and the frame walks never read,
       cut or clear those frames (cps_restore puts the switcher back). */
    if (s->root_chunk != NULL && top == s->switcher)
        top = NULL;
    _PyInterpreterFrame *bottom = top != NULL ? bottom_frame(s, ts, top) : NULL;
    int at_checkpoint = reserve_cut(s, top, bottom);
    if (at_checkpoint < 0)
        return -1;
    PyObject *const *stack_hint = call != NULL ? call->end : NULL;
    s->top = top;
    s->top_sp = NULL;
    s->top_extra = NULL;
    s->hidden = NULL;
    s->held = NULL;
    s->stepped = call != NULL && call->stepped ? call->self : NULL;
    if (call != NULL) {
        s->hidden = call->hidden;       /* taken */
        call->hidden = NULL;
        s->held = call->held;
    }
    /* Without a call (a switch through the C API) there is neither a
       stack hint nor arguments for call_depth to compare, so the top
       frame's depth stays unknown: skip the work at every such switch. */
    if (call != NULL && top != NULL && (is_thread_frame(top) || top->owner == FRAME_OWNED_BY_GENERATOR)) {
        PyCodeObject *co = frame_code(top);
        PyObject **base = (PyObject **)top->localsplus;
        PyObject **lo = base + co->co_nlocalsplus, **hi = lo + co->co_stacksize;
        PyObject **sp = (PyObject **)stack_hint;
        if (sp == NULL || sp < lo || sp > hi) {
            /* the method was not called with arguments on this frame's
               stack: f(*args), or through C */
            held_t held;
            Py_ssize_t n = call_depth(top, NULL, call, &held);
            s->top_extra = held.obj;
            sp = n >= 0 ? base + n : NULL;
        }
        if (sp != NULL && sp >= lo && sp <= hi)
            s->top_sp = sp;
        else
            s->top_extra = NULL;
    }
    s->exc_info = ts->exc_info;
    s->chunk = ts->datastack_chunk;
    s->ds_top = (PyObject **)ts->datastack_top;
    s->ds_limit = (PyObject **)ts->datastack_limit;
    s->context = ts->context;
    s->tracing = ts->tracing;
    save_version_fields(ts, s);

    /* Cut the bottom frame loose: while suspended, its frames must not
       point into a stack that may change or vanish.  Remember the link so
       that a resume without a new switcher restores it exactly. */
    s->bottom = bottom;
    s->entry = NULL;
    if (bottom != NULL && bottom->previous != NULL) {
        _PyInterpreterFrame *link = bottom->previous;
        if (is_entry_frame(link)) {
            s->entry = link;
            s->switcher = link->previous;
        }
        else {
            s->switcher = link;
        }
        bottom->previous = NULL;
    }
    note_root_link(s);
    cut_entry_frames(ts, s, at_checkpoint);
    note_instrumentation(ts, s);
    return 0;
}

void *cps_spare(const cps_saved *saved, size_t *n)
{
    const saved_t *s = (const saved_t *)(const void *)saved;
    char *lo = (char *)s->ds_top, *hi = (char *)s->ds_limit;
    *n = lo != NULL && hi > lo ? (size_t)(hi - lo) : 0;
    return lo;
}

void cps_restore(PyThreadState *ts, cps_saved *saved)
{
    saved_t *s = SAVED(saved);
    if (s->gens_held)
        release_finalizers(s);      /* while the chain holds only its own frames */
    ts->exc_info = s->exc_info;
    ts->datastack_chunk = s->chunk;
    ts->datastack_top = (void *)s->ds_top;
    ts->datastack_limit = (void *)s->ds_limit;
    ts->context = s->context;
    s->context = NULL;
    /* cached ContextVar lookups are keyed by this counter */
    ts->context_ver++;
    ts->tracing = s->tracing;
    restore_version_fields(ts, s);
    restore_entry_frames(s);

    _PyInterpreterFrame *bottom = s->bottom;
    if (bottom == NULL && s->root_chunk != NULL) {
        /* no frame of its own: the switcher's frame is the top one */
        set_top_frame(ts, s->switcher);
    }
    else {
        set_top_frame(ts, s->top);
    }
    if (bottom != NULL) {
        if (s->entry != NULL) {
            bottom->previous = s->entry;
            s->entry->previous = s->switcher;
        }
        else {
            bottom->previous = s->switcher;
        }
    }
}

static __attribute__((noinline)) void release_hidden(saved_t *s)
{
    /* the interpreter's own reference lives on until the call returns */
    PyObject *exc = cps_fetch_exception();
    Py_CLEAR(s->hidden);
    cps_restore_exception(exc);
}

/* Two tests in the usual case, so that it inlines into the switch (3.14's
   gcc left it a call while the slow paths were in it). */
void cps_catch_up(PyThreadState *ts, cps_saved *saved)
{
    saved_t *s = SAVED(saved);
    if (instrumentation_changed(ts, s))
        catch_up_instrumentation(ts, s);
    if (s->hidden != NULL)
        release_hidden(s);
}

void cps_begin(PyThreadState *ts, cps_saved *saved, cps_root *rootp, void *chunk_mem, int unlinked)
{
    saved_t *s = SAVED(saved);
    root_t *root = (root_t *)(void *)rootp;
    _PyStackChunk *chunk = chunk_mem;
    _PyInterpreterFrame **splices = s->splices;     /* kept for reuse */
    int cap = s->splices_cap;
    memset(s, 0, sizeof(*s));
    s->splices = splices;
    s->splices_cap = cap;
    s->root = root;
    s->root_chunk = chunk;
    s->switcher = top_frame(ts);    /* the starter's frame */

    chunk->previous = NULL;
    chunk->size = CPS_CHUNK_BYTES;
    chunk->top = 0;
    ts->datastack_chunk = chunk;
    /* data[0] stays unused, as in CPython's own root chunk: the interpreter
       then never tries to pop (and free) this chunk */
    ts->datastack_top = &chunk->data[1];
    ts->datastack_limit = (void *)((char *)chunk + CPS_CHUNK_BYTES);

    root->exc.exc_value = NULL;
    root->exc.previous_item = NULL;
    ts->exc_info = &root->exc;
    /* the context object is shared with the starter, as on PyPy; a
       Context.run() on either stack stays on that stack */
    Py_XINCREF(ts->context);
    ts->tracing = 0;
    begin_version_fields(ts, s, root);
    if (unlinked) {
        s->switcher = NULL;
        set_top_frame(ts, NULL);
    }
}

void cps_end(PyThreadState *ts, cps_saved *saved)
{
    saved_t *s = SAVED(saved);
    PyObject *ctx = ts->context;
    ts->context = NULL;
    Py_XDECREF(ctx);
    if (s->root != NULL)
        Py_CLEAR(s->root->exc.exc_value);
    /* its frames are gone */
    s->nsplices = 0;
    s->cp_frame = NULL;
}

/* How many value slots of frame f (read at rf) hold references that the
 * frame owns: the exact depth where it is known, -1 where it is not.
 * `callee` is the frame above it (read), NULL for the top one; *extra is
 * set to an object above those slots that the frame holds as well, if it
 * has one (see call_depth). */
static Py_ssize_t exact_values(const saved_t *s, const _PyInterpreterFrame *f,
                               const _PyInterpreterFrame *rf, int callee_inlined,
                               const _PyInterpreterFrame *callee, held_t *extra)
{
    PyCodeObject *co = frame_code(rf);
    Py_ssize_t nlocals = co->co_nlocalsplus;
    Py_ssize_t n;
    *extra = (held_t){NULL, 0};
    if (f == s->top && s->top_sp != NULL) {
        n = (PyObject **)s->top_sp - (PyObject **)(void *)rf->localsplus;
        *extra = (held_t){s->top_extra, 1};
    }
    else if ((n = frame_stack_depth(rf, callee_inlined)) < nlocals && f != s->top)
        n = call_depth(rf, callee, NULL, extra);    /* the top one's: see cps_save */
    else if (n >= nlocals && n <= nlocals + co->co_stacksize)
        *extra = held_by_callable(rf, n, callee, f == s->top ? s->stepped : NULL);
    return n >= nlocals && n <= nlocals + co->co_stacksize ? n : -1;
}

/* The same for a frame of this stack's own: the locals at least. */
static Py_ssize_t frame_values(const saved_t *s, const _PyInterpreterFrame *f,
                               const _PyInterpreterFrame *rf, int callee_inlined,
                               const _PyInterpreterFrame *callee, held_t *extra)
{
    Py_ssize_t n = exact_values(s, f, rf, callee_inlined, callee, extra);
    if (n < 0)
        *extra = (held_t){NULL, 0};
    return n >= 0 ? n : frame_code(rf)->co_nlocalsplus;
}

/* Where the interpreter frame f of a suspended stack can be read: entry
 * frames live on the C stack, whose bytes may be saved, and then possibly
 * split between the continulet's spare chunk memory and the heap; such a
 * frame is copied into *scratch (read only: only its links and owner are
 * read, and only thread frames, never on the C stack, are handed out). */
static _PyInterpreterFrame *locate_frame(const stk_slice *slice, _PyInterpreterFrame *f,
                                         _PyInterpreterFrame *scratch)
{
    return (_PyInterpreterFrame *)stk_read(slice, f, scratch, sizeof(*f));
}

/* Whether the first bytes of a suspended slice hold the pointer p: the C
 * frames of the switching call and the registers pushed by the switch.
 * Reads stack memory that belongs to no live C frame of the running code,
 * so AddressSanitizer must not check it. */
#define HIDDEN_SCAN_BYTES 8192

STK_NO_SANITIZE static int on_c_stack(const stk_slice *slice, const void *p)
{
    char *end = slice->stop - slice->start > HIDDEN_SCAN_BYTES ? slice->start + HIDDEN_SCAN_BYTES : slice->stop;
    for (char *a = slice->start; a + sizeof(void *) <= end; a += sizeof(void *))
        if (*(const void *const *)stk_locate(slice, a) == p)
            return 1;
    return 0;
}

/* The generator whose frame f is. */
static PyObject *generator_of(const _PyInterpreterFrame *f)
{
    return (PyObject *)((const char *)f - offsetof(PyGenObject, gi_iframe));
}

/* A generator running in a suspended stack cannot be closed: it runs on,
 * and only the stack's continulet can unwind it.  If the GC finds both in
 * the same garbage, it must not call the generator's finalizer (which
 * would report "generator already executing"): the traversal marks it as
 * finalized, and the stack clears the mark when it resumes. */
static void hold_finalizer(saved_t *s, PyObject *gen)
{
    if (_PyObject_GC_IS_TRACKED(gen) && !_PyGC_FINALIZED(gen)) {
        _PyGC_SET_FINALIZED(gen);
        s->gens_held = 1;
    }
}

static void release_finalizers(saved_t *s)
{
    for (_PyInterpreterFrame *f = s->top; f != NULL; f = f->previous)
        if (f->owner == FRAME_OWNED_BY_GENERATOR)
            clear_finalized(generator_of(f));
    s->gens_held = 0;
}

int cps_traverse(const cps_saved *saved, const stk_slice *slice, visitproc visit, void *arg)
{
    const saved_t *s = (const saved_t *)(const void *)saved;
    if (s->hidden != NULL) {
        /* our own reference, and the interpreter's C local (see
           hidden_method) if it is really there */
        Py_VISIT(s->hidden);
        if (on_c_stack(slice, s->hidden))
            Py_VISIT(s->hidden);
    }
    Py_VISIT(s->held);
    Py_VISIT(s->context);
    if (s->root != NULL)
        Py_VISIT(s->root->exc.exc_value);
    int callee_inlined = 0;
    const _PyInterpreterFrame *callee = NULL;
    _PyInterpreterFrame scratch;
    for (_PyInterpreterFrame *f = s->top; f != NULL; ) {
        /* entry frames live on the C stack, whose bytes may be saved
           while the stack is suspended */
        _PyInterpreterFrame *rf = locate_frame(slice, f, &scratch);
        int r = 0;
        held_t extra = {NULL, 0};
        if (is_thread_frame(rf)) {
            r = visit_frame(rf, frame_values(s, f, rf, callee_inlined, callee, &extra), visit, arg);
        }
        else if (rf->owner == FRAME_OWNED_BY_GENERATOR) {
            hold_finalizer((saved_t *)s, generator_of(rf));
            /* its generator reports what it knows of it, not what it
               holds while it runs (see visit_running_values) */
            Py_ssize_t n = exact_values(s, f, rf, callee_inlined, callee, &extra);
            if (n >= 0)
                r = visit_running_values(rf, n, visit, arg);
            else
                extra = (held_t){NULL, 0};
        }
        if (r)
            return r;
        for (int i = 0; i < extra.refs; i++)
            Py_VISIT(extra.obj);
        if (is_entry_frame(rf)) {
            callee_inlined = 0;
            callee = NULL;
        }
        else {
            callee_inlined = !entered_from_c(rf) && !is_cut(s, rf);
            callee = rf;
        }
        f = rf->previous;
    }
    return 0;
}


static void hold_running_gen(_PyInterpreterFrame *f, Py_ssize_t n);

int cps_discard(cps_saved *saved, int hold_gens)
{
    saved_t *s = SAVED(saved);
    /* A generator frame belongs to its generator, which would try to close
       it (run it) when freed: such generators stay alive, frames and all
       (unless they become held shells: see hold_running_gen). */
    if (!hold_gens)
        for (_PyInterpreterFrame *f = s->top; f != NULL; f = f->previous)
            if (!is_thread_frame(f))
                Py_INCREF(generator_of(f));

    int keep_memory = 0;
    /* the values of each frame are counted while the frame above it (its
       callee, which may tell how far they go) is still intact */
    held_t extra;       /* an operand of a call: not released, as the call would */
    Py_ssize_t n = s->top != NULL && (is_thread_frame(s->top) || hold_gens)
        ? frame_values(s, s->top, s->top, 0, NULL, &extra) : 0;
    for (_PyInterpreterFrame *f = s->top; f != NULL; ) {
        _PyInterpreterFrame *next = f->previous;
        Py_ssize_t n_next = 0;
        if (next != NULL && (is_thread_frame(next) || hold_gens))
            n_next = frame_values(s, next, next, !is_entry_frame(f) && !entered_from_c(f) && !is_cut(s, f),
                                  is_entry_frame(f) ? NULL : f, &extra);
        f->previous = NULL;
        if (!is_thread_frame(f) && hold_gens) {
            hold_running_gen(f, n);
        }
        else if (is_thread_frame(f)) {
            /* a frame object that somebody else holds keeps reading this
               frame: its code and memory must stay */
            PyObject *fo = (PyObject *)f->frame_obj;
            int shared = fo != NULL && Py_REFCNT(fo) > 1;
            f->frame_obj = NULL;
            clear_values(f, n);
            if (shared)
                keep_memory = 1;
            else
                clear_head(f);
            Py_XDECREF(fo);
        }
        f = next;
        n = n_next;
    }
    s->top = NULL;
    s->nsplices = 0;
    s->cp_frame = NULL;
    if (s->root != NULL)
        Py_CLEAR(s->root->exc.exc_value);
    if (!keep_memory) {
        /* the chunks CPython added when the first one was full */
        PyObjectArenaAllocator a;
        PyObject_GetArenaAllocator(&a);
        for (_PyStackChunk *c = s->chunk; c != NULL && c != s->root_chunk; ) {
            _PyStackChunk *prev = c->previous;
            a.free(a.ctx, c, c->size);
            c = prev;
        }
    }
    s->chunk = NULL;
    return keep_memory;
}

PyObject *cps_context(const cps_saved *saved)
{
    return ((const saved_t *)(const void *)saved)->context;
}

void cps_set_context(cps_saved *saved, PyObject *ctx)
{
    Py_XSETREF(SAVED(saved)->context, ctx);
}

PyObject *cps_current_context(void)
{
    return PyThreadState_Get()->context;
}

void cps_set_current_context(PyObject *ctx)
{
    PyThreadState *ts = PyThreadState_Get();
    Py_XSETREF(ts->context, ctx);
    /* cached ContextVar lookups are keyed by this counter */
    ts->context_ver++;
}

void cps_clear(cps_saved *saved)
{
    saved_t *s = SAVED(saved);
    Py_CLEAR(s->context);
    Py_CLEAR(s->hidden);
}

void cps_release(cps_saved *saved)
{
    saved_t *s = SAVED(saved);
    PyMem_RawFree(s->splices);
    s->splices = NULL;
    s->splices_cap = s->nsplices = 0;
}

/* PyErr_GetRaisedException() only exists from 3.12 on. */
PyObject *cps_fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void cps_restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL)
        return;
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* True while the cyclic GC runs: it keeps list heads on the C stack, and
   objects being collected point at them, so no other stack may run.
   Read through the caller's thread state: every switch asks, and
   PyInterpreterState_Get() is a call into libpython with its own checks. */
int cps_gc_collecting(PyThreadState *ts)
{
    return ts->interp->gc.collecting;
}

/* The running thread's state; the caller holds the GIL, so it is never
   NULL.  3.11 reads it from _PyRuntime directly (inlined with -flto, where
   PyThreadState_Get() is a call with a NULL check); 3.13+ keep it in a
   thread-local of libpython, which an extension reaches only through the
   call. */
PyThreadState *cps_tstate(void)
{
#if PY_VERSION_HEX < 0x030D0000
    return _PyThreadState_GET();
#else
    return PyThreadState_Get();
#endif
}

/* True in the main thread of the main interpreter: the only thread that
   runs Py_AddPendingCall's calls (src/preempt.c). */
int cps_main_thread(void)
{
    return PyThread_get_thread_ident() == _PyRuntime.main_thread
        && PyInterpreterState_Get() == PyInterpreterState_Main();
}

/* After Py_AddPendingCall from a thread that is not the main thread (the
   ticker of src/preempt.c): make sure the main thread looks.  3.11
   recomputes the eval breaker in the *calling* thread, which may not run
   pending calls, so the flag stays clear and the call waits for some other
   event; the main thread recomputes it when it looks, so a spurious 1 is
   harmless (CPython's own GIL drop request sets it from other threads
   too).  3.13+ sets the main thread's own breaker bit itself.  Called
   without the GIL. */
void cps_wake_main(void)
{
#if PY_VERSION_HEX < 0x030D0000
    _Py_atomic_store_relaxed(&PyInterpreterState_Main()->ceval.eval_breaker, 1);
#endif
}

/* Queue fn(arg) to run in whichever thread of the main interpreter holds
   the GIL, at its next eval breaker check (the ticker of src/preempt.c,
   for threads other than the main one).  3.13+ has such pending calls and
   signals the thread holding the GIL; 3.11 and 3.12 run pending calls in
   the main thread only.  Returns 1 when queued, 0 while the queue is full,
   -1 where this does not exist.  Called without the GIL. */
int cps_add_pending_call_any(int (*fn)(void *), void *arg)
{
#if PY_VERSION_HEX >= 0x030D0000
    return _PyEval_AddPendingCall(PyInterpreterState_Main(), fn, arg, 0)
           == _Py_ADD_PENDING_SUCCESS;
#else
    (void)fn;
    (void)arg;
    return -1;
#endif
}

/* Set the C trace function of `ts`, which is parked (it does not hold the
   GIL) or current; with the GIL.  3.11 and 3.12 export _PyEval_SetTrace,
   which takes the thread state.  3.13+ keep it internal, and acting as
   the other thread through PyThreadState_Swap breaks the rule that a
   thread state is used by its own OS thread (a debug build asserts it):
   there only the current thread state can be set, and -1 says so. */
int cps_set_trace_of(PyThreadState *ts, Py_tracefunc func, PyObject *obj)
{
    if (ts == PyThreadState_Get()) {
        PyEval_SetTrace(func, obj);
        return 0;
    }
#if PY_VERSION_HEX < 0x030D0000
    return _PyEval_SetTrace(ts, func, obj);
#else
    return -1;
#endif
}

/* True once the interpreter is shutting down (after atexit handlers). */
int cps_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* ======================================================================
 * Frames as data (pickling): reading the frames of a suspended stack,
 * and building frames that resume in the middle of their code.  The
 * version-neutral side is src/framestate.c; docs/design.md has the
 * layout of each version.
 * ====================================================================== */

/* Chunks that hold frames we push ourselves have CPython's own format, so
 * that CPython pops (and frees) them like its own: 16 KiB, or more for a
 * big frame, from the object arena allocator (pystate.c's push_chunk). */
#define FS_CHUNK_BYTES (16 * 1024)
#define FS_CHUNK_OVERHEAD 1000

static PyObject **fs_alloc_slots(PyThreadState *ts, size_t size)
{
    PyObject **top = (PyObject **)ts->datastack_top;
    if (top != NULL && (size_t)((PyObject **)ts->datastack_limit - top) > size) {
        ts->datastack_top = (void *)(top + size);
        return top;
    }
    size_t bytes = FS_CHUNK_BYTES;
    while (bytes < sizeof(PyObject *) * (size + FS_CHUNK_OVERHEAD))
        bytes *= 2;
    PyObjectArenaAllocator a;
    PyObject_GetArenaAllocator(&a);
    _PyStackChunk *chunk = a.alloc(a.ctx, bytes);
    if (chunk == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    chunk->previous = ts->datastack_chunk;
    chunk->size = bytes;
    chunk->top = 0;
    if (ts->datastack_chunk != NULL)
        ts->datastack_chunk->top = (PyObject **)ts->datastack_top - (PyObject **)&ts->datastack_chunk->data[0];
    ts->datastack_chunk = chunk;
    ts->datastack_limit = (void *)((char *)chunk + bytes);
    ts->datastack_top = (void *)((PyObject **)&chunk->data[0] + size);
    return (PyObject **)&chunk->data[0];
}

/* The inverse, for a frame at the top of the data stack. */
static void fs_free_slots(PyThreadState *ts, void *base)
{
    _PyStackChunk *chunk = ts->datastack_chunk;
    if ((PyObject **)base == (PyObject **)&chunk->data[0] && chunk->previous != NULL) {
        _PyStackChunk *prev = chunk->previous;
        ts->datastack_top = (void *)((PyObject **)&prev->data[0] + prev->top);
        ts->datastack_chunk = prev;
        ts->datastack_limit = (void *)((char *)prev + prev->size);
        PyObjectArenaAllocator a;
        PyObject_GetArenaAllocator(&a);
        a.free(a.ctx, chunk, chunk->size);
    }
    else {
        ts->datastack_top = base;
    }
}

int cps_frames_supported(void) { return 1; }

/* module-level and class-body code; 3.11 also gives a function frame an
   f_locals dict when it calls locals(), so the code's flags tell */
static int fs_not_function(const _PyInterpreterFrame *f) { return !(frame_code(f)->co_flags & CO_OPTIMIZED); }

#if PY_VERSION_HEX < 0x030E0000
/* ---- 3.11 and 3.13: the slots hold plain object pointers, and stacktop
 * tells how many of them the frame holds. */
PyObject *cps_frame_slot(void *frame, Py_ssize_t i, int *is_int)
{
    *is_int = 0;
    return ((_PyInterpreterFrame *)frame)->localsplus[i];
}

void cps_frame_set_slot(void *frame, Py_ssize_t i, PyObject *value)
{
    ((_PyInterpreterFrame *)frame)->localsplus[i] = value;
}

void cps_frame_set_int(void *frame, Py_ssize_t i, Py_ssize_t value)
{
    ((_PyInterpreterFrame *)frame)->localsplus[i] = PyLong_FromSsize_t(value);
}

static void fs_clear_slot(_PyInterpreterFrame *f, int i) { Py_CLEAR(f->localsplus[i]); }
/* stacktop counts from localsplus */
static Py_ssize_t fs_depth(const _PyInterpreterFrame *f) { return f->stacktop - frame_code(f)->co_nlocalsplus; }
static void fs_set_depth(_PyInterpreterFrame *f, Py_ssize_t d) { f->stacktop = (int)(frame_code(f)->co_nlocalsplus + d); }
#endif

#if PY_VERSION_HEX >= 0x030D0000
/* ---- 3.13+: instr_ptr is the instruction executing; the Python frames
 * have their own recursion counter. */
static int fs_ip(const _PyInterpreterFrame *f) { return (int)(f->instr_ptr - _PyCode_CODE(frame_code(f))); }
static void fs_set_ip(_PyInterpreterFrame *f, int ip) { f->instr_ptr = _PyCode_CODE(frame_code(f)) + ip; }
static void add_depth(PyThreadState *ts, int n) { ts->py_recursion_remaining -= n; }
#endif

#if PY_VERSION_HEX < 0x030C0000
/* ---- 3.11: prev_instr is the code unit before the next instruction;
 * a frame waiting for an inlined callee has it at the last cache entry
 * of its CALL, a frame in a call to C at the CALL (or PRECALL) itself.
 * stacktop counts from localsplus.  A frame that _PyEval_EvalFrameDefault
 * was called with is flagged is_entry and is not popped by it. */

static PyObject *fs_func(const _PyInterpreterFrame *f) { return (PyObject *)f->f_func; }
static int fs_ip(const _PyInterpreterFrame *f) { return (int)(f->prev_instr - _PyCode_CODE(f->f_code)); }
/* 3.11 counts every Python frame in one counter */
static void add_depth(PyThreadState *ts, int n) { ts->recursion_remaining -= n; }

void *cps_push_frame(PyThreadState *ts, PyFunctionObject *func, void *previous)
{
    PyCodeObject *co = (PyCodeObject *)func->func_code;
    size_t size = (size_t)(co->co_nlocalsplus + co->co_stacksize) + FRAME_SPECIALS_SIZE;
    _PyInterpreterFrame *f = (_PyInterpreterFrame *)fs_alloc_slots(ts, size);
    if (f == NULL)
        return NULL;
    _PyFrame_InitializeSpecials(f, (PyFunctionObject *)Py_NewRef(func), NULL, co->co_nlocalsplus);
    for (int i = 0; i < co->co_nlocalsplus; i++)
        f->localsplus[i] = NULL;
    f->previous = previous;
    return f;
}

void cps_frame_set_resume(void *frame, int call_ip, int next_ip, Py_ssize_t depth)
{
    _PyInterpreterFrame *f = frame;
    (void)call_ip;
    /* the eval loop goes on at prev_instr + 1; an error is looked up at
       prev_instr, inside the call (as after an inlined call) */
    f->prev_instr = _PyCode_CODE(f->f_code) + next_ip - 1;
    f->stacktop = (int)(f->f_code->co_nlocalsplus + depth);
}

/* What _PyFrame_Clear does (not exported on 3.11): release the frame's
 * references, or hand the frame over to its frame object if somebody
 * (a traceback) still holds that. */
static void fs_clear(PyThreadState *ts, _PyInterpreterFrame *f)
{
    PyFrameObject *fo = f->frame_obj;
    if (fo != NULL) {
        f->frame_obj = NULL;
        if (Py_REFCNT(fo) > 1) {
            size_t size = (size_t)((char *)&f->localsplus[f->stacktop] - (char *)f);
            _PyInterpreterFrame *copy = (_PyInterpreterFrame *)fo->_f_frame_data;
            memcpy(copy, f, size);
            fo->f_frame = copy;
            copy->owner = FRAME_OWNED_BY_FRAME_OBJECT;
            copy->previous = NULL;
            /* f_back: the frame object of the caller, made by the public
               API while the caller is the thread's current frame */
            if (f->previous != NULL && fo->f_back == NULL) {
                _PyInterpreterFrame *cur = ts->cframe->current_frame;
                ts->cframe->current_frame = f->previous;
                PyFrameObject *back = PyEval_GetFrame();
                ts->cframe->current_frame = cur;
                fo->f_back = (PyFrameObject *)Py_XNewRef(back);
            }
            if (!PyObject_GC_IsTracked((PyObject *)fo))
                PyObject_GC_Track(fo);
            Py_DECREF(fo);
            return;
        }
        Py_DECREF(fo);
    }
    for (int i = 0; i < f->stacktop; i++)
        Py_XDECREF(f->localsplus[i]);
    Py_XDECREF(f->f_locals);
    Py_DECREF(f->f_func);
    Py_DECREF(f->f_code);
}

/* The eval loop runs f from its resume point with `value` pushed (see
 * cps_run_frame), linked to the frame below it. */
static PyObject *eval_linked(PyThreadState *ts, _PyInterpreterFrame *f, PyObject *value)
{
    /* the eval loop links f to the thread's current frame: the one it was
       pushed on, or for the bottom frame, whoever switched in last */
    _PyInterpreterFrame *caller = f->previous;
    if (value != NULL)
        f->localsplus[f->stacktop++] = value;
    ts->cframe->current_frame = caller;
    PyObject *r = _PyEval_EvalFrameDefault(ts, f, value == NULL && PyErr_Occurred() != NULL);
    ts->cframe->current_frame = caller;
    return r;
}

static PyObject *run_frame(PyThreadState *ts, void *frame, PyObject *value)
{
    _PyInterpreterFrame *f = frame;
    PyObject *r = eval_linked(ts, f, value);
    fs_clear(ts, f);
    fs_free_slots(ts, f);
    return r;
}

void cps_drop_frame(PyThreadState *ts, void *frame)
{
    _PyInterpreterFrame *f = frame;
    fs_clear(ts, f);
    fs_free_slots(ts, f);
}

static void fs_set_ip(_PyInterpreterFrame *f, int ip) { f->prev_instr = _PyCode_CODE(f->f_code) + ip; }

#elif PY_VERSION_HEX < 0x030E0000
/* ---- 3.13: instr_ptr is the instruction executing: a frame waiting for
 * an inlined callee has it at its CALL, with return_offset the distance
 * to the next instruction; the eval loop starts a frame at instr_ptr and
 * reports an error at it.  stacktop counts from localsplus.  A frame that
 * _PyEval_EvalFrameDefault is called with sits on an entry frame of the
 * C stack, and the loop pops (and clears) it when it returns or unwinds. */

static PyObject *fs_func(const _PyInterpreterFrame *f) { return f->f_funcobj; }

void *cps_push_frame(PyThreadState *ts, PyFunctionObject *func, void *previous)
{
    PyCodeObject *co = (PyCodeObject *)func->func_code;
    _PyInterpreterFrame *f = (_PyInterpreterFrame *)fs_alloc_slots(ts, (size_t)co->co_framesize);
    if (f == NULL)
        return NULL;
    _PyFrame_Initialize(f, (PyFunctionObject *)Py_NewRef(func), NULL, co, 0);
    f->previous = previous;
    return f;
}

void cps_frame_set_resume(void *frame, int call_ip, int next_ip, Py_ssize_t depth)
{
    _PyInterpreterFrame *f = frame;
    PyCodeObject *co = frame_code(f);
    f->instr_ptr = _PyCode_CODE(co) + call_ip;
    f->return_offset = (uint16_t)(next_ip - call_ip);
    f->stacktop = (int)(co->co_nlocalsplus + depth);
}

static PyObject *run_frame(PyThreadState *ts, void *frame, PyObject *value)
{
    _PyInterpreterFrame *f = frame;
    /* the eval loop puts its entry frame between f and the current frame */
    ts->current_frame = f->previous;
    if (value != NULL) {
        f->localsplus[f->stacktop++] = value;
        f->instr_ptr += f->return_offset;
    }
    f->return_offset = 0;
    return _PyEval_EvalFrameDefault(ts, f, value == NULL && PyErr_Occurred() != NULL);
}

void cps_drop_frame(PyThreadState *ts, void *frame)
{
    _PyInterpreterFrame *f = frame;
    for (int i = 0; i < f->stacktop; i++)
        Py_XDECREF(f->localsplus[i]);
    Py_XDECREF(f->f_locals);
    Py_DECREF(f->f_funcobj);
    Py_DECREF(f->f_executable);
    fs_free_slots(ts, f);
}


#else
/* ---- 3.14, 3.15: as 3.13, but the slots hold tagged _PyStackRef values
 * (some of them raw integers: the lasti of an exception handler), and
 * stackpointer replaces stacktop. */

static PyObject *fs_func(const _PyInterpreterFrame *f) { return PyStackRef_AsPyObjectBorrow(f->f_funcobj); }

PyObject *cps_frame_slot(void *frame, Py_ssize_t i, int *is_int)
{
    _PyStackRef r = ((_PyInterpreterFrame *)frame)->localsplus[i];
    *is_int = 0;
    if (PyStackRef_IsNull(r))
        return NULL;
    if (PyStackRef_IsTaggedInt(r)) {
        *is_int = 1;
        return PyLong_FromSsize_t((Py_ssize_t)PyStackRef_UntagInt(r));
    }
    return PyStackRef_AsPyObjectBorrow(r);
}

void cps_frame_set_slot(void *frame, Py_ssize_t i, PyObject *value)
{
    ((_PyInterpreterFrame *)frame)->localsplus[i] =
        value == NULL ? PyStackRef_NULL : PyStackRef_FromPyObjectSteal(value);
}

void cps_frame_set_int(void *frame, Py_ssize_t i, Py_ssize_t value)
{
    ((_PyInterpreterFrame *)frame)->localsplus[i] = PyStackRef_TagInt((intptr_t)value);
}

void *cps_push_frame(PyThreadState *ts, PyFunctionObject *func, void *previous)
{
    PyCodeObject *co = (PyCodeObject *)func->func_code;
    _PyInterpreterFrame *f = (_PyInterpreterFrame *)fs_alloc_slots(ts, (size_t)co->co_framesize);
    if (f == NULL)
        return NULL;
    _PyFrame_Initialize(ts, f, PyStackRef_FromPyObjectNew((PyObject *)func), NULL, co, 0, previous);
    return f;
}

void cps_frame_set_resume(void *frame, int call_ip, int next_ip, Py_ssize_t depth)
{
    _PyInterpreterFrame *f = frame;
    PyCodeObject *co = frame_code(f);
    f->instr_ptr = _PyCode_CODE(co) + call_ip;
    f->return_offset = (uint16_t)(next_ip - call_ip);
    f->stackpointer = f->localsplus + co->co_nlocalsplus + depth;
}

static PyObject *run_frame(PyThreadState *ts, void *frame, PyObject *value)
{
    _PyInterpreterFrame *f = frame;
    ts->current_frame = f->previous;
    if (value != NULL) {
        *f->stackpointer++ = PyStackRef_FromPyObjectSteal(value);
        f->instr_ptr += f->return_offset;
    }
    f->return_offset = 0;
    return _PyEval_EvalFrameDefault(ts, f, value == NULL && PyErr_Occurred() != NULL);
}

void cps_drop_frame(PyThreadState *ts, void *frame)
{
    _PyInterpreterFrame *f = frame;
    for (_PyStackRef *p = f->localsplus; p < f->stackpointer; p++)
        PyStackRef_XCLOSE(*p);
    Py_XDECREF(f->f_locals);
    PyStackRef_CLOSE(f->f_funcobj);
    PyStackRef_CLOSE(f->f_executable);
    fs_free_slots(ts, f);
}

static void fs_clear_slot(_PyInterpreterFrame *f, int i) { PyStackRef_XCLOSE(f->localsplus[i]); f->localsplus[i] = PyStackRef_NULL; }
static Py_ssize_t fs_depth(const _PyInterpreterFrame *f)
{
    return f->stackpointer - f->localsplus - frame_code(f)->co_nlocalsplus;
}
static void fs_set_depth(_PyInterpreterFrame *f, Py_ssize_t d)
{
    f->stackpointer = f->localsplus + frame_code(f)->co_nlocalsplus + d;
}
#endif

/* The events a generator gets when it resumes, for a rebuilt frame about
 * to resume: a 'call' to the profile and the trace function, so that a
 * tracer (a debugger) sets the frame's f_trace and sees its lines.  An
 * exception that the trace function raises is raised in the frame. */
static PyObject *resume_events(PyThreadState *ts, _PyInterpreterFrame *f, PyObject *value)
{
    if ((ts->c_tracefunc == NULL && ts->c_profilefunc == NULL) || ts->tracing)
        return value;
    PyObject *exc = cps_fetch_exception();
    /* it is the running frame while the events are reported */
    _PyInterpreterFrame *was = top_frame(ts);
    set_top_frame(ts, f);
    PyFrameObject *fo = PyThreadState_GetFrame(ts);
    int err = fo == NULL;
    PyThreadState_EnterTracing(ts);
    if (!err && ts->c_profilefunc != NULL)
        err = ts->c_profilefunc(ts->c_profileobj, fo, PyTrace_CALL, Py_None);
    if (!err && ts->c_tracefunc != NULL)
        err = ts->c_tracefunc(ts->c_traceobj, fo, PyTrace_CALL, Py_None);
    PyThreadState_LeaveTracing(ts);
    set_top_frame(ts, was);
    Py_XDECREF(fo);
    if (err) {
        Py_XDECREF(exc);
        Py_XDECREF(value);
        return NULL;
    }
    cps_restore_exception(exc);
    return value;
}

/* (value NULL without an exception: the frame goes on where its resume
 * point is, with nothing pushed: an instruction that runs again) */
PyObject *cps_run_frame(PyThreadState *ts, void *frame, PyObject *value, int below)
{
    value = resume_events(ts, frame, value);
    /* the rebuilt frames below it wait for it as callers do: count them */
    add_depth(ts, below);
    PyObject *r = run_frame(ts, frame, value);
    add_depth(ts, -below);
    return r;
}

/* The frames from `top` down to `stop` (NULL: to the end of the chain),
 * bottom first.  A suspended stack (live == 0) lies in `slice` and its
 * links past entry frames are cut (is_cut); a running one (live) is read
 * in place, and a frame entered from C links to its entry frame. */
static Py_ssize_t walk_frames(const saved_t *s, const stk_slice *slice, int live,
                              _PyInterpreterFrame *top, _PyInterpreterFrame *stop,
                              cps_frame *out, Py_ssize_t max)
{
#define LOCATE(f) (live ? (f) : locate_frame(slice, (f), &scratch))
    Py_ssize_t n = 0;
    _PyInterpreterFrame scratch;
    for (_PyInterpreterFrame *f = top; f != NULL; ) {
        _PyInterpreterFrame *rf = LOCATE(f);
        if (!is_entry_frame(rf))
            n++;
        f = rf == stop ? NULL : rf->previous;
    }
    /* filled top first, from the end */
    Py_ssize_t i = n;
    int callee_inlined = 0;
    for (_PyInterpreterFrame *f = top; f != NULL; ) {
        _PyInterpreterFrame *rf = LOCATE(f);
        if (!is_entry_frame(rf)) {
            i--;
            int from_c = entered_from_c(rf) || (live ? rf->previous != NULL && is_entry_frame(rf->previous)
                                                     : is_cut(s, rf));
            if (i < max) {
                cps_frame *o = &out[i];
                PyCodeObject *co = frame_code(rf);
                o->frame = rf;
                o->code = co;
                o->kind = is_thread_frame(rf) ? (fs_not_function(rf) ? CPS_FRAME_OTHER : CPS_FRAME_FUNCTION)
                                              : CPS_FRAME_GENERATOR;
                o->func = o->kind != CPS_FRAME_OTHER ? fs_func(rf) : NULL;
                o->ip = fs_ip(rf);
                o->from_c = from_c;
                /* exact where the interpreter stored it: see frame_values */
                Py_ssize_t nv = (!live && f == s->top && s->top_sp != NULL)
                    ? (PyObject **)s->top_sp - (PyObject **)(void *)rf->localsplus
                    : frame_stack_depth(rf, callee_inlined);
                Py_ssize_t nl = co->co_nlocalsplus;
                o->depth = nv >= nl && nv <= nl + co->co_stacksize ? (int)(nv - nl) : -1;
                /* a frame waiting for an inlined callee has handed the
                   operands of its call over to it; one calling C still
                   holds them */
                o->operands = !callee_inlined;
            }
            callee_inlined = !from_c;
        }
        else {
            callee_inlined = 0;
        }
        f = rf == stop ? NULL : rf->previous;
    }
#undef LOCATE
    return n;
}

Py_ssize_t cps_frames(const cps_saved *saved, const stk_slice *slice, cps_frame *out, Py_ssize_t max)
{
    const saved_t *s = (const saved_t *)(const void *)saved;
    return walk_frames(s, slice, 0, s->top, NULL, out, max);
}

Py_ssize_t cps_live_frames(PyThreadState *ts, const cps_saved *running, PyObject *frame,
                           cps_frame *out, Py_ssize_t max)
{
    const saved_t *s = (const saved_t *)(const void *)running;
    _PyInterpreterFrame *want = ((PyFrameObject *)frame)->f_frame, *top = top_frame(ts);
    /* the running stack ends at its bottom frame, which links to the
       frame that switched to it; a thread's main stack ends at NULL */
    _PyInterpreterFrame *bottom = s != NULL ? bottom_frame(s, ts, top) : NULL;
    if (s != NULL && s->root_chunk != NULL && bottom == NULL)
        return -1;
    for (_PyInterpreterFrame *f = top; f != NULL; f = f == bottom ? NULL : f->previous)
        if (f == want)
            return walk_frames(s, NULL, 1, want, bottom, out, max);
    return -1;
}

/* Generators: their frame lives in the generator object (gi_iframe). */
static int gen_suspended(int st)
{
#if PY_VERSION_HEX >= 0x030D0000
    if (st == FRAME_SUSPENDED_YIELD_FROM)
        return 1;
#endif
    return st == FRAME_SUSPENDED;
}

void *cps_gen_frame(PyObject *gen, int *state, Py_ssize_t *depth)
{
    PyGenObject *g = (PyGenObject *)gen;
    int st = g->gi_frame_state;
    if (st != FRAME_CREATED && !gen_suspended(st))
        return NULL;
    _PyInterpreterFrame *f = (_PyInterpreterFrame *)(void *)&g->gi_iframe;
    *state = st;
    *depth = fs_depth(f);
    return f;
}

PyObject *cps_frame_func(void *frame) { return fs_func(frame); }
int cps_frame_ip(void *frame) { return fs_ip(frame); }

PyObject *cps_gen_exception(PyObject *gen)
{
    PyObject *v = ((PyGenObject *)gen)->gi_exc_state.exc_value;
    return v == Py_None ? NULL : v;
}

int cps_gen_finished(PyObject *gen)
{
    int st = ((PyGenObject *)gen)->gi_frame_state;
#ifdef FRAME_STATE_FINISHED
    return FRAME_STATE_FINISHED(st);    /* 3.15 renumbered the states */
#else
    return st >= FRAME_COMPLETED;
#endif
}

int cps_gen_prepare(PyObject *gen, void **frame)
{
    PyGenObject *g = (PyGenObject *)gen;
    if (g->gi_frame_state != FRAME_CREATED)
        return -1;
    _PyInterpreterFrame *f = (_PyInterpreterFrame *)(void *)&g->gi_iframe;
    Py_ssize_t n = frame_code(f)->co_nlocalsplus + fs_depth(f);
    for (Py_ssize_t i = 0; i < n; i++)
        fs_clear_slot(f, (int)i);
    *frame = f;
    return 0;
}

void cps_gen_finish(PyObject *gen, int state, int ip, Py_ssize_t depth, PyObject *exc)
{
    PyGenObject *g = (PyGenObject *)gen;
    _PyInterpreterFrame *f = (_PyInterpreterFrame *)(void *)&g->gi_iframe;
    fs_set_ip(f, ip);
    fs_set_depth(f, depth);
    g->gi_frame_state = (int8_t)state;
    Py_XSETREF(g->gi_exc_state.exc_value, exc);
}

void cps_link_top(PyThreadState *ts, void *frame)
{
    set_top_frame(ts, frame);
}

PyObject *cps_handled_exception(const cps_saved *saved)
{
    const saved_t *s = (const saved_t *)(const void *)saved;
    /* the stack's own item, below those of the generators running in it
       (exc_info points at the innermost one's then) */
    if (s->root == NULL)
        return NULL;
    PyObject *v = s->root->exc.exc_value;
    return v == Py_None ? NULL : v;
}

void cps_set_handled_exception(PyThreadState *ts, PyObject *exc)
{
    Py_XSETREF(ts->exc_info->exc_value, exc);
}

/* ----------------------------------------------------------------------
 * Generators running in a rebuilt stack.  A generator that was running
 * in the captured stack comes back first as a "held" shell: made by
 * calling its function, marked executing (so nothing can run it: it is
 * running, in a tasklet that has not resumed yet) and finalized (so the
 * GC never tries to close it).  The rebuild then makes its own frame one
 * of the stack's frames and runs it as gen.send() would.
 * ---------------------------------------------------------------------- */

static int gen_state_suspended(int st)
{
#ifdef FRAME_STATE_SUSPENDED
    return FRAME_STATE_SUSPENDED(st);     /* 3.15 */
#else
    return gen_suspended(st);
#endif
}

PyObject *cps_frame_generator(void *frame)
{
    _PyInterpreterFrame *f = frame;
    return f->owner == FRAME_OWNED_BY_GENERATOR ? generator_of(f) : NULL;
}

int cps_gen_hold(PyObject *gen)
{
    PyGenObject *g = (PyGenObject *)gen;
    if (g->gi_frame_state != FRAME_CREATED)
        return -1;
    g->gi_frame_state = FRAME_EXECUTING;
    if (_PyObject_GC_IS_TRACKED(gen) && !_PyGC_FINALIZED(gen))
        _PyGC_SET_FINALIZED(gen);
    return 0;
}

/* A generator whose frame ran in a discarded stack that was moved
 * elsewhere (cps_discard with hold_gens): its frame lets go of its `n`
 * values (the move took them) and it becomes a held shell, which the
 * rebuilt stack enters again (cps_gen_enter). */
static void hold_running_gen(_PyInterpreterFrame *f, Py_ssize_t n)
{
    PyObject *gen = generator_of(f);
    PyGenObject *g = (PyGenObject *)gen;
    clear_values(f, n);
    fs_set_depth(f, 0);
    g->gi_exc_state.previous_item = NULL;
    if (_PyObject_GC_IS_TRACKED(gen) && !_PyGC_FINALIZED(gen))
        _PyGC_SET_FINALIZED(gen);
}

void *cps_gen_iframe(PyObject *gen)
{
    return &((PyGenObject *)gen)->gi_iframe;
}

int cps_gen_held(PyObject *gen)
{
    PyGenObject *g = (PyGenObject *)gen;
    _PyInterpreterFrame *f = (_PyInterpreterFrame *)(void *)&g->gi_iframe;
    return g->gi_frame_state == FRAME_EXECUTING && f->previous == NULL
        && g->gi_exc_state.previous_item == NULL;
}

void *cps_gen_enter(PyThreadState *ts, PyObject *gen, void *previous, PyObject *exc)
{
    PyGenObject *g = (PyGenObject *)gen;
    _PyInterpreterFrame *f = (_PyInterpreterFrame *)(void *)&g->gi_iframe;
    /* what the shell's frame got from its function call (its arguments) */
    Py_ssize_t n = frame_code(f)->co_nlocalsplus + fs_depth(f);
    for (Py_ssize_t i = 0; i < n; i++)
        fs_clear_slot(f, (int)i);
    f->previous = previous;
    clear_finalized(gen);
    Py_XSETREF(g->gi_exc_state.exc_value, exc);
    /* pushed on the thread's chain as gen.send() does, so that the frames
       it calls see its exception as the one being handled */
    g->gi_exc_state.previous_item = ts->exc_info;
    ts->exc_info = &g->gi_exc_state;
    return f;
}

PyObject *cps_run_gen_frame(PyThreadState *ts, PyObject *gen, void *frame, PyObject *value,
                            int below, int *yielded)
{
    PyGenObject *g = (PyGenObject *)gen;
    _PyInterpreterFrame *f = frame;
    value = resume_events(ts, f, value);
    add_depth(ts, below);
    g->gi_frame_state = FRAME_EXECUTING;
#if PY_VERSION_HEX < 0x030C0000
    /* 3.11: what gen_send_ex2 does around the eval loop */
    PyObject *r = eval_linked(ts, f, value);
    if (g->gi_frame_state == FRAME_EXECUTING)
        g->gi_frame_state = FRAME_COMPLETED;
    ts->exc_info = g->gi_exc_state.previous_item;
    g->gi_exc_state.previous_item = NULL;
    f->previous = NULL;
    *yielded = r != NULL && gen_state_suspended(g->gi_frame_state);
    if (!*yielded) {
        if (r == NULL && PyErr_ExceptionMatches(PyExc_StopIteration))
            _PyErr_FormatFromCause(PyExc_RuntimeError, "%s raised StopIteration",
                                   PyCoro_CheckExact(gen) ? "coroutine" : "generator");
        Py_CLEAR(g->gi_exc_state.exc_value);
        g->gi_frame_state = FRAME_CLEARED;
        fs_clear(ts, f);
    }
#else
    /* 3.13+: the eval loop itself pops the generator's exception state
       and its frame when it yields, returns or raises */
    PyObject *r = run_frame(ts, f, value);
    *yielded = r != NULL && gen_state_suspended(g->gi_frame_state);
#endif
    add_depth(ts, -below);
    return r;
}
