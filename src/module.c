/* The _continuation module: continulet objects, switch/throw/permute,
 * and the per-thread bookkeeping around the stk engine. */
#include "continulet.h"
#include "chunkcache.h"
#include "firstchunk.h"
#include "capi.h"
#include "codedepth.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

PyObject *cont_error;

/* ---------------------------------------------------------------------
 * Per-thread state
 * --------------------------------------------------------------------- */

typedef struct cont_tls {
    stk_thread eng;
    cont_stack main;            /* the thread's own stack */
    cont_stack *current;        /* the stack running now */
    uint64_t thread_id;
    PyObject *xfer;             /* what a switch hands over (owned) */
    int xfer_is_exc;            /* xfer is an exception to raise */
    cont_stack *dead;           /* a finished run, recycled by whoever resumes */
    /* the exchange of the switch in progress, undone if its swap fails */
    Continulet *undo_origin, *undo_dest;
    cont_stack *undo_target;
    int swap_failed;            /* set by swap_stacks() */
    PyThreadState *switch_ts;   /* set by switch_out(), read by switch_in() */
    struct cont_tls *next;      /* all live threads */
} cont_tls;

static _Thread_local cont_tls *tls_cache;
/* The record get_tls() found last: a plain global guarded by the GIL, read
 * first on every switch.  A _Thread_local costs a __tls_get_addr call per
 * access in a shared library; threads taking turns pay it once per turn. */
static cont_tls *last_tls;
static cont_tls *all_threads;       /* under the GIL */
static cont_stack *orphans;         /* runs dropped by a foreign thread */
static cont_stack *free_stacks;     /* recycled records */
static int n_free_stacks;
#define MAX_FREE_STACKS 256

static uint64_t current_thread_id(void)
{
    return cps_thread_id(cps_tstate());
}

int cont_thread_alive(uint64_t id)
{
    for (cont_tls *t = all_threads; t; t = t->next)
        if (t->thread_id == id)
            return 1;
    return 0;
}

static void free_stack(cont_stack *s);

/* Runs when the thread state's dict is cleared, i.e. when the thread ends. */
static void tls_destroy(PyObject *capsule)
{
    cont_tls *t = PyCapsule_GetPointer(capsule, "_continuation.tls");
    if (t == NULL)
        return;
    for (cont_tls **p = &all_threads; *p; p = &(*p)->next)
        if (*p == t) { *p = t->next; break; }
    /* runs of this thread that another thread dropped: nobody can resume
       them any more, so free their memory (what they reference leaks) */
    for (cont_stack **p = &orphans; *p; ) {
        cont_stack *s = *p;
        if (s->thread_id == t->thread_id) {
            *p = s->next;
            free_stack(s);
        }
        else
            p = &s->next;
    }
    if (tls_cache == t)
        tls_cache = NULL;
    if (last_tls == t)
        last_tls = NULL;
    /* A thread that ends while one of its continulets runs (a daemon
       thread stopped at interpreter exit: 3.11 and 3.13 clear its state
       then) leaves its main stack's record, which is part of `t`, held by
       a continulet object that the collector still visits and may free.
       Keep it all (a leak, at exit only): the record then still says it
       is a thread's main stack, which neither of them touches. */
    if (t->current != &t->main)
        return;
    stk_release(&t->main.slice);
    cps_release(&t->main.saved);
    PyMem_RawFree(t);
}

static cont_tls *tls_create(uint64_t id)
{
    PyObject *dict = PyThreadState_GetDict();
    if (dict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no thread state dict");
        return NULL;
    }
    cont_tls *t = PyMem_RawCalloc(1, sizeof(cont_tls));
    if (t == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *cap = PyCapsule_New(t, "_continuation.tls", tls_destroy);
    if (cap == NULL) {
        PyMem_RawFree(t);
        return NULL;
    }
    if (PyDict_SetItemString(dict, "_continuation.tls", cap) < 0) {
        PyCapsule_SetDestructor(cap, NULL);
        Py_DECREF(cap);
        PyMem_RawFree(t);
        return NULL;
    }
    Py_DECREF(cap);
    stk_thread_init(&t->eng, &t->main.slice);
    t->main.is_main = 1;
    t->main.started = 1;
    t->main.thread_id = id;
    t->current = &t->main;
    t->thread_id = id;
    t->next = all_threads;
    all_threads = t;
    tls_cache = t;
    return t;
}

int cont_in_run(void)
{
    cont_tls *t = tls_cache;
    return t != NULL && t->current != &t->main;
}

static __attribute__((noinline)) cont_tls *get_tls_slow(uint64_t id)
{
    cont_tls *t = tls_cache;
    if (t == NULL || t->thread_id != id)
        t = tls_create(id);
    last_tls = t;
    return t;
}

/* The record of the thread whose state is `ts` (the running one); NULL
 * with an exception if it could not be made.  Inlined into every switch:
 * the common case is one compare. */
static inline __attribute__((always_inline)) cont_tls *get_tls_of(PyThreadState *ts)
{
    uint64_t id = cps_thread_id(ts);
    cont_tls *t = last_tls;
    if (t != NULL && t->thread_id == id)
        return t;
    return get_tls_slow(id);
}

static cont_tls *get_tls(void)
{
    return get_tls_of(cps_tstate());
}

/* The stack running now in this thread, NULL if the thread never used
 * continulets (it runs its main stack). */
cont_stack *cont_running_stack(void)
{
    cont_tls *t = tls_cache;
    return t != NULL && t->thread_id == current_thread_id() ? t->current : NULL;
}

/* ---------------------------------------------------------------------
 * Stack records
 * --------------------------------------------------------------------- */

static cont_stack *new_stack(uint64_t thread_id)
{
    cont_stack *s = free_stacks;
    if (s != NULL) {
        free_stacks = s->next;
        n_free_stacks--;
    }
    else {
        /* pymalloc (a record is under its 512 B limit; the GIL is held
           wherever records come and go): glibc's calloc cost ~300
           instructions a record where thousands of tasklets start */
        s = PyMem_Calloc(1, sizeof(cont_stack));
        if (s == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    s->thread_id = thread_id;
    s->is_main = 0;
    s->started = 0;
    s->owner = s->arg = s->callable = s->args = s->kwargs = s->context = NULL;
    s->frames = NULL;
    s->chain = NULL;
    s->kill_return = NULL;
    s->next = NULL;
    s->slice.state = STK_FREE;
    return s;
}

PyObject *cont_run_args(const cont_stack *s)
{
    if (s->args == NULL)
        return PyTuple_Pack(1, s->arg);
    return PyTuple_GetSlice(s->args, 1, PyTuple_GET_SIZE(s->args));
}

/* Give the record its first data-stack chunk, before its run starts (the
 * one the last run left, still in the cache: firstchunk.c).  0, or -1
 * with MemoryError. */
static int take_chunk(cont_stack *s)
{
    if (s->chunk == NULL && (s->chunk = cont_first_chunk_take()) == NULL)
        return -1;
    return 0;
}

static void give_chunk(cont_stack *s)
{
    void *c = s->chunk;
    if (c == NULL)
        return;
    s->chunk = NULL;
    cont_first_chunk_give(c);
}

/* Give a record back; its copy buffer stays with it for the next user. */
static void recycle_stack(cont_stack *s)
{
    Py_CLEAR(s->context);
    Py_CLEAR(s->owner);
    Py_CLEAR(s->callable);
    Py_CLEAR(s->args);
    Py_CLEAR(s->arg);
    Py_CLEAR(s->kwargs);
    cfs_release(s);
    give_chunk(s);
    if (n_free_stacks >= MAX_FREE_STACKS || s->slice.cap > 64 * 1024) {
        stk_release(&s->slice);
        cps_release(&s->saved);
        PyMem_Free(s);
        return;
    }
    s->next = free_stacks;
    free_stacks = s;
    n_free_stacks++;
}

/* Drop a suspended record without unwinding it; `eng` is the engine of
 * its thread, NULL if that thread has ended.  `moved`: its frames live on
 * in another stack (see cont_retire_stack). */
static void discard_stack(cont_stack *s, stk_thread *eng, int moved)
{
    stk_forget(eng, &s->slice);
    if (moved)
        cfs_retire(s);
    cps_clear(&s->saved);
    if (cps_discard(&s->saved, moved)) {
        /* a frame object still reads the frames: the record stays */
        Py_CLEAR(s->owner);
        Py_CLEAR(s->callable);
        Py_CLEAR(s->args);
        Py_CLEAR(s->arg);
        Py_CLEAR(s->kwargs);
        return;
    }
    recycle_stack(s);
}

/* Free a record that will never run again, without unwinding it: its
 * Python frames let go of what they hold; what its C frames hold leaks. */
static void free_stack(cont_stack *s)
{
    if (s->started && s->slice.state == STK_SUSPENDED) {
        cont_tls *t = tls_cache;
        discard_stack(s, t && t->thread_id == s->thread_id ? &t->eng : NULL, 0);
        return;
    }
    recycle_stack(s);
}

/* Free a suspended record whose frames were moved to another stack (see
 * src/transplant.c), from any thread, without unwinding it.  Its Python
 * frames let go of what they hold; the generators running in it become
 * held shells, which the new stack enters again; the C frames of a
 * rebuilt run let go of what they hold (cfs_retire).  Called when nothing
 * refers to it any more: it may run Python code (the releases). */
void cont_retire_stack(cont_stack *s)
{
    cont_tls *t = NULL;
    for (cont_tls *p = all_threads; p; p = p->next)
        if (p->thread_id == s->thread_id) {
            t = p;
            break;
        }
    /* its thread's engine must forget it, whichever thread we are */
    discard_stack(s, t ? &t->eng : NULL, 1);
}

/* ---------------------------------------------------------------------
 * Switching
 * --------------------------------------------------------------------- */

static void run_stack(void *arg);
static void process_orphans(cont_tls *t);

/* A switch comes in three steps, each its own function, so that the C
 * frame that calls them holds almost nothing across the swap itself: every
 * byte of the frames under stk_swap is copied out and back in at each
 * switch, and kept by every suspended stack (a blocked tasklet).  One
 * inlined function did it all before, with ten values live across the
 * swap in a 112 B frame; now the frames there are swap_stacks's 16 B and
 * whatever the caller keeps (capi_switch_then: its `then` and operands).
 * What the step after the swap needs is the thread's record, which the
 * swap hands on, and the running stack, the engine's current slice. */

/* The stack of a slice (the slice is its first member) */
static cont_stack *stack_of(stk_slice *s)
{
    return (cont_stack *)(void *)((char *)s - offsetof(cont_stack, slice));
}

/* Before the swap to `target` (to resume, or to start): the running
 * stack's Python state is saved.  0, or -1 with MemoryError set (nothing
 * changed). */
static inline __attribute__((always_inline)) int switch_out(PyThreadState *ts, cont_tls *t,
                                                cont_stack *target, cps_call *call)
{
    cont_stack *cur = t->current;
    void *switcher = cps_top_frame(ts);
    if (!target->started && take_chunk(target) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (cps_save(ts, &cur->saved, call) < 0)
        return -1;
    size_t spare_n;
    void *spare = cps_spare(&cur->saved, &spare_n);
    stk_offer_spare(&cur->slice, spare, spare_n);
    t->current = target;
    if (target->started)
        cps_set_switcher(&target->saved, target->unlinked ? NULL : switcher);
    t->switch_ts = ts;
    return 0;
}

/* The swap to t->current: returns t once the stack that switch_out left
 * is resumed again, or at once if it could not even start (then with
 * t->swap_failed set).  Returning t spares switch_in a lookup of it. */
static __attribute__((noinline)) cont_tls *swap_stacks(cont_tls *t)
{
    cont_stack *target = t->current;
    int rc;
    if (!target->started) {
        target->started = 1;
        rc = stk_start(&t->eng, &target->slice, run_stack, target);
    }
    else
        rc = stk_switch(&t->eng, &target->slice);
    t->swap_failed = rc < 0;
    return t;
}

/* Back on this stack after swap_stacks(): either nothing happened
 * (t->swap_failed) or someone switched back here.  Either way, our own
 * Python state comes back.  0, or -1 with MemoryError set (the swap
 * failed). */
static inline __attribute__((always_inline)) int switch_in(cont_tls *t)
{
    /* (the thread state that switched out, as a register kept across the
       swap would give it: a stack resumes in the thread that left it) */
    PyThreadState *ts = t->switch_ts;
    cont_stack *cur = stack_of(t->eng.current);
    cps_restore(ts, &cur->saved);
    t->current = cur;
    if (t->dead != NULL) {
        cont_stack *d = t->dead;
        t->dead = NULL;
        recycle_stack(d);
    }
    cps_catch_up(ts, &cur->saved);
    if (t->swap_failed) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Suspend the running stack and resume (or start) `target`.  Returns 0
 * once this stack is resumed again, -1 with MemoryError set if the switch
 * could not even start. */
static int resume(PyThreadState *ts, cont_tls *t, cont_stack *target, cps_call *call)
{
    if (switch_out(ts, t, target, call) < 0)
        return -1;
    return switch_in(swap_stacks(t));
}

/* The value or exception handed over by the switch that resumed us. */
static PyObject *take_xfer(cont_tls *t)
{
    PyObject *v = t->xfer;
    t->xfer = NULL;
    if (t->xfer_is_exc) {
        t->xfer_is_exc = 0;
        cps_restore_exception(v);
        return NULL;
    }
    return v;
}

static void put_xfer(cont_tls *t, PyObject *v, int is_exc)
{
    t->xfer = v;
    t->xfer_is_exc = is_exc;
}

/* What run_begin returns when me->callable is to be called (a result is
 * an object, or NULL with an error). */
static char call_it;
#define CALL_IT ((PyObject *)(void *)&call_it)

/* The steps of run_stack before its call, out of line (noinline): the
 * C frame of run_stack stays at the bottom of the run's slice while the
 * callable runs, and its bytes are copied with the slice at the run's
 * switches, so it holds nothing but `me` (16 B with the return address):
 * this returns CALL_IT, or the run's result already. */
static __attribute__((noinline)) PyObject *run_begin(cont_stack *me)
{
    cont_tls *t = tls_cache;
    PyThreadState *ts = PyThreadState_Get();
    cps_begin(ts, &me->saved, &me->root, me->chunk, me->unlinked);
    if (me->context != NULL) {
        cps_set_current_context(me->context);      /* taken */
        me->context = NULL;
    }
    if (me->frames != NULL) {
        /* rebuilt frames: what the switch brings is the result of their
           call in progress (NULL: an exception thrown in) */
        return cfs_run(ts, me, take_xfer(t));
    }
    if (t->xfer_is_exc) {
        (void)take_xfer(t);          /* thrown in before the first switch */
        return NULL;
    }
    PyObject *v = take_xfer(t);
    int is_none = v == Py_None;
    Py_DECREF(v);
    if (!is_none) {
        PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started continulet");
        return NULL;
    }
    return CALL_IT;
}

static __attribute__((noinline, noreturn)) void run_end(cont_stack *me, PyObject *result);

/* The callable of a run is called as PyObject_Call does.  A builtin that
 * takes its positional arguments by fast call (stackless's C _bootstrap)
 * is called straight through its C function: the C frame of the call
 * machinery (cfunction_vectorcall_FASTCALL, 48 B on 3.11) would stay at
 * the bottom of the run's stack for its whole life, copied at every
 * switch (docs/performance.md).  The steps around that call are out of
 * line, so that run_stack's own frame stays as small. */

/* Never called: what fast_callable returns when the recursion check
 * failed (an error is set). */
static PyObject *call_refused(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    return NULL;
}

/* The C function to call f(*args, **kwargs) with (the recursion check
 * made), call_refused with an error set, or NULL to call f through
 * PyObject_Call. */
static __attribute__((noinline)) _PyCFunctionFast fast_callable(PyObject *f, PyObject *kwargs)
{
    if (!PyCFunction_CheckExact(f) || PyCFunction_GET_FLAGS(f) != METH_FASTCALL
            || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0))
        return NULL;
    if (Py_EnterRecursiveCall(" while calling a Python object"))
        return call_refused;
    return (_PyCFunctionFast)(void (*)(void))PyCFunction_GET_FUNCTION(f);
}

/* After the fast call: as the call machinery checks a builtin's result */
static __attribute__((noinline)) PyObject *fast_result(PyObject *f, PyObject *r)
{
    Py_LeaveRecursiveCall();
    if (r == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_SystemError, "%R returned NULL without setting an exception", f);
    else if (r != NULL && PyErr_Occurred())
        Py_CLEAR(r);        /* the error it left set stands */
    return r;
}

/* The body of every run, on its own fresh slice of the C stack. */
static void run_stack(void *arg)
{
    cont_stack *me = arg;
    PyObject *result = run_begin(me);
    if (result == CALL_IT) {
        _PyCFunctionFast fn = fast_callable(me->callable, me->kwargs);
        PyObject *const *argv = me->args != NULL ? &PyTuple_GET_ITEM(me->args, 0) : me->argv;
        Py_ssize_t n = me->args != NULL ? PyTuple_GET_SIZE(me->args) : 2;
        if (fn == call_refused)
            result = NULL;
        else if (fn != NULL)
            result = fast_result(me->callable, fn(PyCFunction_GET_SELF(me->callable), argv, n));
        else if (me->args != NULL)
            result = PyObject_Call(me->callable, me->args, me->kwargs);
        else
            result = PyObject_Vectorcall(me->callable, argv, n, NULL);
    }
    run_end(me, result);
}

/* The end of a run: hand its result over and leave the slice for good. */
static void run_end(cont_stack *me, PyObject *result)
{
    cont_tls *t = tls_cache;
    PyThreadState *ts = PyThreadState_Get();
    Continulet *owner = (Continulet *)me->owner;

    /* The result goes to whatever continuation the owner holds now, or to
     * whoever is unwinding this run at GC time. */
    cont_stack *target = me->kill_return;
    if (target == NULL) {
        target = owner->h;
        owner->h = NULL;
    }
    if (result == NULL) {
        PyObject *exc = cps_fetch_exception();
        put_xfer(t, exc, 1);
    }
    else {
        put_xfer(t, result, 0);
    }
    Py_CLEAR(me->callable);
    Py_CLEAR(me->args);
    Py_CLEAR(me->arg);
    Py_CLEAR(me->kwargs);
    Py_CLEAR(me->owner);
    if (target != NULL && !target->started && target->context == NULL) {
        /* a not-yet-started continuation that switch(to=) or permute()
           moved here starts in the context this run leaves: the thread's
           one, as on PyPy (not the empty one of a stack with no frames) */
        PyObject *ctx = cps_current_context();
        Py_XINCREF(ctx);
        target->context = ctx;
    }
    cps_end(ts, &me->saved);

    if (target == NULL || target->thread_id != me->thread_id) {
        /* cannot happen through the public API; be loud, not corrupt */
        Py_FatalError("_continuation: a finished continulet has nowhere to return");
    }
    t->dead = me;
    t->current = target;
    if (!target->started) {
        /* permute() handed us a not-yet-started continuation: start it on
         * top of this finished run (whose record is then never recycled),
         * in the chunk that this run no longer uses (cps_end) */
        t->dead = NULL;
        if (target->chunk == NULL) {
            target->chunk = me->chunk;
            me->chunk = NULL;
        }
        target->started = 1;
        stk_start(&t->eng, &target->slice, run_stack, target);
    }
    else {
        cps_set_switcher(&target->saved, NULL);
        stk_exit(&t->eng, &target->slice);
    }
    Py_FatalError("_continuation: out of memory while leaving a finished continulet");
}

/* Set in the thread that runs a garbage collection, between the "start"
 * and "stop" calls of our gc.callbacks hook: that thread's C stack holds
 * the collector's lists.  Other threads may switch meanwhile (finalizers
 * can release the GIL), and so may this one once "stop" is reached, even
 * though the interpreter still counts as collecting then.  The last
 * collections at interpreter shutdown call no gc.callbacks: then only the
 * finalizing thread runs, and it is the one collecting. */
static _Thread_local int tl_collecting;

static int gc_forbids_switch(PyThreadState *ts)
{
    return cps_gc_collecting(ts) && (tl_collecting || cps_finalizing());
}

static int check_switch_allowed(PyThreadState *ts, cont_tls *t)
{
    if (gc_forbids_switch(ts)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot switch continulets while the garbage collector is running");
        return -1;
    }
    if (t->current->kill_return != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot switch away from a continulet that is being garbage-collected");
        return -1;
    }
    return 0;
}

static int check_continulet(PyObject *o)
{
    /* (a direct subclass, such as stackless's tasklet continulet, without
       PyType_IsSubtype's walk of the MRO at every switch(to=...)) */
    if (Py_TYPE(o)->tp_base != &Continulet_Type && !PyObject_TypeCheck(o, &Continulet_Type)) {
        PyErr_Format(PyExc_TypeError, "'_continuation.continulet' object expected, got '%.200s' instead",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    return 0;
}

/* Resolve PyPy's rules for self and to=; returns 1 to switch, 0 for a
 * no-op (the value comes straight back), -1 on error. */
static inline __attribute__((always_inline)) int resolve(cont_tls *t, Continulet **selfp,
                                                        Continulet **top)
{
    Continulet *self = *selfp, *to = *top;
    if (to != NULL && !cont_initialized(to))
        to = NULL;
    if (!cont_initialized(self)) {
        if (to == NULL)
            return 0;
        self = to;
        to = NULL;
    }
    if (to != NULL) {
        if (to->thread_id != self->thread_id) {
            PyErr_SetString(cont_error, "cross-thread double switch");
            return -1;
        }
        if (to == self)
            return 0;
    }
    if (self->thread_id != t->thread_id) {
        PyErr_SetString(cont_error, "cannot switch to a different thread");
        return -1;
    }
    if (self->h == NULL || (to != NULL && to->h == NULL)) {
        PyErr_SetString(cont_error, "continulet already finished");
        return -1;
    }
    *selfp = self;
    *top = to;
    return 1;
}

/* A switch that could not swap gives every continulet its stack back. */
static void exchange_undo(cont_tls *t)
{
    Continulet *origin = t->undo_origin, *dest = t->undo_dest;
    if (origin == dest)
        origin->h = t->undo_target;
    else {
        origin->h = dest->h;
        dest->h = t->undo_target;
    }
    Py_CLEAR(t->xfer);
    t->xfer_is_exc = 0;
}

/* What exchange_begin() leaves when there is no swap to do: the result of
 * the switch (the value back, or NULL with an error).  Static, not an
 * out-parameter: read at once, under the GIL, and no local of the frame
 * that stays under the swap (see switch_out). */
static PyObject *no_swap_result;

/* switch or throw up to the swap: the three-way exchange at its heart
 * (the running stack goes into origin, origin's content into dest, and
 * dest's old content is to run), then switch_out().  `v` is the value (or
 * exception) to hand over, stolen.  The thread's record when the swap is
 * to be done, else NULL with the result in no_swap_result. */
static __attribute__((noinline)) cont_tls *
exchange_begin(Continulet *self, PyObject *v, int is_exc, PyObject *to_obj, cps_call *call)
{
    Continulet *to = NULL;
    no_swap_result = NULL;
    if (to_obj != NULL && to_obj != Py_None) {
        if (check_continulet(to_obj) < 0) {
            Py_DECREF(v);
            return NULL;
        }
        to = (Continulet *)to_obj;
    }
    PyThreadState *ts = cps_tstate();
    cont_tls *t = get_tls_of(ts);
    if (t == NULL) {
        Py_DECREF(v);
        return NULL;
    }
    int rc = resolve(t, &self, &to);
    if (rc <= 0) {
        if (rc < 0)
            Py_DECREF(v);
        else if (is_exc)
            cps_restore_exception(v);
        else
            no_swap_result = v;
        return NULL;
    }
    Continulet *origin = self, *dest = to ? to : self;
    cont_stack *target = dest->h;
    cont_stack *cur = t->current;
    if (check_switch_allowed(ts, t) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    dest->h = origin->h;
    origin->h = cur;
    put_xfer(t, v, is_exc);
    /* what exchange_end() undoes if the swap fails (only then: later
       switches overwrite these) */
    t->undo_origin = origin;
    t->undo_dest = dest;
    t->undo_target = target;
    if (switch_out(ts, t, target, call) < 0) {
        exchange_undo(t);
        return NULL;
    }
    return t;
}

/* The rest of switch or throw, after swap_stacks(t): the value handed
 * over, or NULL with an exception. */
static __attribute__((noinline)) PyObject *exchange_end(cont_tls *t)
{
    if (switch_in(t) < 0) {
        exchange_undo(t);
        return NULL;
    }
    PyObject *res = take_xfer(t);
    if (orphans != NULL)
        process_orphans(t);     /* keeps the raised exception, if any */
    return res;
}

/* switch or throw; `v` is stolen.  With `then` (switch_then), the result
 * is then(r, a, b)'s, which runs whatever happens (switch or not, error
 * or not).  Across the swap this frame holds then, a and b only. */
static inline __attribute__((always_inline)) PyObject *
dispatch_body(Continulet *self, PyObject *v, int is_exc, PyObject *to_obj, cps_call *call,
              cont_then_fn then, PyObject *a, PyObject *b)
{
    cont_tls *t = exchange_begin(self, v, is_exc, to_obj, call);
    PyObject *r = t != NULL ? exchange_end(swap_stacks(t)) : no_swap_result;
    return then != NULL ? then(r, a, b) : r;
}

static PyObject *dispatch(Continulet *self, PyObject *v, int is_exc, PyObject *to_obj,
                          cps_call *call)
{
    return dispatch_body(self, v, is_exc, to_obj, call, NULL, NULL, NULL);
}

PyObject *cont_switch(Continulet *self, PyObject *value, PyObject *to, cps_call *call)
{
    return dispatch(self, Py_NewRef(value ? value : Py_None), 0, to, call);
}

/* ---------------------------------------------------------------------
 * Unwinding runs that nobody can reach any more
 * --------------------------------------------------------------------- */

/* Throw GeneratorExit into a suspended run of this thread and wait for it
 * to finish, so that its frames release what they hold and its finally
 * blocks run. */
static void kill_stack(cont_tls *t, cont_stack *s, PyObject *culprit)
{
    PyObject *saved_exc = cps_fetch_exception();
    PyObject *exc = PyObject_CallNoArgs(PyExc_GeneratorExit);
    if (exc == NULL) {
        PyErr_WriteUnraisable(culprit);
        cps_restore_exception(saved_exc);
        return;
    }
    s->kill_return = t->current;
    put_xfer(t, exc, 1);
    if (resume(cps_tstate(), t, s, NULL) < 0) {
        s->kill_return = NULL;
        Py_CLEAR(t->xfer);
        t->xfer_is_exc = 0;
        PyErr_WriteUnraisable(culprit);
        free_stack(s);
    }
    else {
        PyObject *r = take_xfer(t);
        if (r != NULL)
            Py_DECREF(r);
        else if (PyErr_ExceptionMatches(PyExc_GeneratorExit))
            PyErr_Clear();
        else
            PyErr_WriteUnraisable(culprit);
    }
    cps_restore_exception(saved_exc);
}

/* A continulet is going away while holding stack s. */
static void drop_stack(cont_stack *s, PyObject *culprit)
{
    if (s->is_main)
        return;         /* a thread's main stack is never ours to free */
    if (!s->started) {
        recycle_stack(s);
        return;
    }
    cont_tls *t = tls_cache;
    if (t != NULL && t->thread_id == s->thread_id && t->thread_id == current_thread_id()
            && !gc_forbids_switch(cps_tstate())) {
        kill_stack(t, s, culprit);
        return;
    }
    if (cont_thread_alive(s->thread_id)) {
        /* its own thread unwinds it at its next switch, or right after
           the garbage collection that found it */
        s->next = orphans;
        orphans = s;
        return;
    }
    free_stack(s);
}

static void process_orphans(cont_tls *t)
{
    static int busy;
    if (busy)
        return;
    busy = 1;
    for (cont_stack **p = &orphans; *p; ) {
        cont_stack *s = *p;
        if (s->thread_id == t->thread_id) {
            *p = s->next;
            s->next = NULL;
            kill_stack(t, s, Py_None);
            p = &orphans;       /* the list may have changed meanwhile */
        }
        else
            p = &s->next;
    }
    busy = 0;
}

/* ---------------------------------------------------------------------
 * The continulet type
 * --------------------------------------------------------------------- */

static PyObject *Continulet_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    Continulet *self = (Continulet *)type->tp_alloc(type, 0);
    return (PyObject *)self;
}

/* CPython-only extension for subclasses (see docs/continuation.md): the
 * truth of the class attribute __continulet_unlinked__.  -1 with the
 * exception of a failing lookup or truth test. */
static int is_unlinked(PyTypeObject *type)
{
    if (type == &Continulet_Type)
        return 0;
    /* (an interned name: a C string would be made and interned at every
       continulet a subclass makes, stackless's tasklets included) */
    static PyObject *name;
    /* The last answer, while the class is unchanged: a type's version tag
       is unique and changes (or becomes 0) whenever the type or one of
       its bases is modified.  Only for a plain True or False under the
       metaclass `type`, whose truth and lookup cannot change otherwise. */
    static PyTypeObject *last_type;
    static unsigned int last_tag;
    static int last;
    if (type == last_type && type->tp_version_tag != 0 && type->tp_version_tag == last_tag)
        return last;
    if (name == NULL && (name = PyUnicode_InternFromString("__continulet_unlinked__")) == NULL)
        return -1;
    PyObject *flag = PyObject_GetAttr((PyObject *)type, name);
    if (flag == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    int truth = PyObject_IsTrue(flag);
    if ((flag == Py_True || flag == Py_False) && Py_IS_TYPE(type, &PyType_Type)) {
        last_type = type;
        last_tag = type->tp_version_tag;
        last = truth;
    }
    Py_DECREF(flag);
    return truth;
}

/* __init__'s checks, before anything is made: the thread's record in *t
 * and the class's __continulet_unlinked__ in *unlinked; 0, or -1 with an
 * error. */
static int init_check(PyObject *op, cont_tls **t, int *unlinked)
{
    if ((*t = get_tls()) == NULL || (*unlinked = is_unlinked(Py_TYPE(op))) < 0)
        return -1;
    /* checked after the Python code above, which may have initialized us */
    if (cont_initialized((Continulet *)op)) {
        PyErr_SetString(cont_error, "continulet already __init__ialized");
        return -1;
    }
    return 0;
}

/* The rest of __init__: the record of a run of callable(*callargs, **kw)
 * (callargs starts with op; both are stolen, kw may be NULL; callargs
 * NULL: the caller puts the one argument after op in arg).  0, or -1
 * with an error. */
static int init_record(PyObject *op, cont_tls *t, int unlinked, PyObject *callable,
                       PyObject *callargs, PyObject *kw)
{
    cont_stack *s = new_stack(t->thread_id);
    if (s == NULL) {
        Py_XDECREF(callargs);
        Py_XDECREF(kw);
        return -1;
    }
    Continulet *self = (Continulet *)op;
    s->unlinked = unlinked;
    s->owner = Py_NewRef(op);
    s->callable = Py_NewRef(callable);
    s->args = callargs;
    s->kwargs = kw;
    self->h = s;
    self->thread_id = t->thread_id;
    return 0;
}

static int Continulet_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "continulet.__init__() missing 1 required positional argument: 'callable'");
        return -1;
    }
    cont_tls *t;
    int unlinked;
    if (init_check(op, &t, &unlinked) < 0)
        return -1;
    PyObject *callargs = PyTuple_New(n);
    if (callargs == NULL)
        return -1;
    PyTuple_SET_ITEM(callargs, 0, Py_NewRef(op));
    for (Py_ssize_t i = 1; i < n; i++)
        PyTuple_SET_ITEM(callargs, i, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    PyObject *kw = NULL;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        kw = PyDict_Copy(kwds);
        if (kw == NULL) {
            Py_DECREF(callargs);
            return -1;
        }
    }
    return init_record(op, t, unlinked, PyTuple_GET_ITEM(args, 0), callargs, kw);
}

/* C API: c.__init__(callable, arg), without the argument tuple that the
 * call of the slot needs (the accelerator starts every tasklet so) */
static int capi_init1(PyObject *c, PyObject *callable, PyObject *arg)
{
    cont_tls *t;
    int unlinked;
    if (init_check(c, &t, &unlinked) < 0)
        return -1;
    if (init_record(c, t, unlinked, callable, NULL, NULL) < 0)
        return -1;
    ((Continulet *)c)->h->arg = Py_NewRef(arg);
    return 0;
}

static int visit_stack(cont_stack *s, visitproc visit, void *arg)
{
    if (s == NULL || s->is_main)
        return 0;   /* a thread's main stack is a root, like any thread's */
    Py_VISIT(s->owner);
    Py_VISIT(s->callable);
    Py_VISIT(s->args);
    Py_VISIT(s->arg);
    Py_VISIT(s->kwargs);
    Py_VISIT(s->context);
    Py_VISIT(s->frames);
    if (s->started && s->slice.state == STK_SUSPENDED)
        return cps_traverse(&s->saved, &s->slice, visit, arg);
    return 0;
}

static int Continulet_traverse(PyObject *op, visitproc visit, void *arg)
{
    Continulet *self = (Continulet *)op;
    return visit_stack(self->h, visit, arg);
}

/* Take the stack out of the continulet and drop it: unwind it now if this
 * thread may switch, else queue it for its own thread (see drop_stack). */
static void detach(Continulet *self, PyObject *culprit)
{
    cont_stack *s = self->h;
    if (s != NULL) {
        self->h = NULL;
        drop_stack(s, culprit);
    }
}

/* CPython-only extension for subclasses (see docs/continuation.md): a
 * suspended run of a subclass that defines __continulet_keep__() is not
 * unwound when that method returns true: it made the continulet reachable
 * again ("resurrected" it), to resume or unwind it itself later
 * (stackless kills a dropped paused tasklet so, stackless/_lifetime.py).
 * Only asked for a suspended run: a finished continulet goes without any
 * Python call.  Not while the interpreter finalizes: the modules the
 * method uses may be half torn down. */
static int keeps(PyObject *op)
{
    cont_stack *s = ((Continulet *)op)->h;
    if (Py_IS_TYPE(op, &Continulet_Type) || s == NULL || s->is_main || !s->started
            || cps_finalizing())
        return 0;
    static PyObject *name;
    if (name == NULL && (name = PyUnicode_InternFromString("__continulet_keep__")) == NULL) {
        PyErr_WriteUnraisable(op);
        return 0;
    }
    PyObject *keep = PyObject_GetAttr((PyObject *)Py_TYPE(op), name);
    if (keep == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();
        else
            PyErr_WriteUnraisable(op);
        return 0;
    }
    PyObject *r = PyObject_CallOneArg(keep, op);
    Py_DECREF(keep);
    int truth = r != NULL ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (truth < 0) {
        PyErr_WriteUnraisable(op);
        return 0;
    }
    return truth && ((Continulet *)op)->h == s;
}

/* The PEP 442 finalizer, called once: by the cyclic GC before it clears
 * anything of the garbage this continulet belongs to, or from dealloc.  A
 * pending continulet is unwound here, so that its finally blocks see the
 * objects they use intact, as a suspended generator's do.  During a
 * collection the unwinding waits for the gc.callbacks hook (the collector
 * may not switch), but the stack leaves the continulet now: whatever its
 * frames refer to then looks referenced from outside the garbage, so the
 * collector keeps all of it ("resurrects" it) instead of clearing it.
 * Like a generator, a continulet that something resurrects afterwards is
 * finished. */
static void Continulet_finalize(PyObject *op)
{
    if (((Continulet *)op)->h == NULL)
        return;     /* finished (a subclass's dealloc calls this for every one) */
    PyObject *exc = cps_fetch_exception();
    if (!keeps(op))
        detach((Continulet *)op, op);
    cps_restore_exception(exc);
}

/* Only reached with a stack still held when the finalizer did not run
 * (a subclass's __del__ that does not call continulet.__del__). */
static int Continulet_clear(PyObject *op)
{
    detach((Continulet *)op, op);
    return 0;
}

static void Continulet_dealloc(PyObject *op)
{
    Continulet *self = (Continulet *)op;
    PyObject_GC_UnTrack(op);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs(op);
    if (self->h != NULL) {
        /* (for a Python subclass, subtype_dealloc has done this already) */
        PyObject_GC_Track(op);
        if (PyObject_CallFinalizerFromDealloc(op) < 0)
            return;     /* its unwinding made it reachable again */
        PyObject_GC_UnTrack(op);
    }
    /* no culprit to report: an object being freed must not be touched */
    detach(self, NULL);
    /* a Python subclass's dealloc drops the reference to its type itself */
    Py_TYPE(op)->tp_free(op);
}

/* Sort fast-call arguments into vals[0..n) by position and keyword name
 * (`alias` is another accepted name for the second parameter).  Returns
 * the end of the caller's argument array (see cps_save), NULL on error. */
static PyObject *const *parse_args(const char *fname, const char *const *names, int n, const char *alias,
                                   PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **vals)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "continulet.%s() takes from %d to %d positional arguments but %zd were given",
                     fname, n == 2 ? 1 : 2, n + 1, nargs + 1);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        vals[i] = args[i];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        int j = 0;
        while (j < n && PyUnicode_CompareWithASCIIString(k, names[j]) != 0 &&
               !(j == 1 && alias && PyUnicode_CompareWithASCIIString(k, alias) == 0))
            j++;
        if (j == n) {
            PyErr_Format(PyExc_TypeError, "continulet.%s() got an unexpected keyword argument '%U'", fname, k);
            return NULL;
        }
        if (vals[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "continulet.%s() got multiple values for argument '%s'", fname, names[j]);
            return NULL;
        }
        vals[j] = args[nargs + i];
    }
    return args + nargs + nkw;
}

static PyObject *Continulet_switch(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"value", "to"};
    PyObject *vals[2] = {NULL, NULL};
    cps_call call = {op, args, parse_args("switch", names, 2, NULL, args, nargs, kwnames, vals), NULL};
    if (call.end == NULL)
        return NULL;
    call.nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    cps_find_hidden(&call);
    PyObject *res = cont_switch((Continulet *)op, vals[0], vals[1], &call);
    Py_XDECREF(call.hidden);        /* if no suspension took it */
    return res;
}

/* Build the exception that throw() delivers, with PyPy's checks. */
static PyObject *make_exception(PyObject *type, PyObject *value, PyObject *tb)
{
    if (tb == Py_None)
        tb = NULL;
    if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return NULL;
    }
    PyObject *exc;
    if (PyExceptionClass_Check(type)) {
        if (value != NULL && value != Py_None && PyObject_TypeCheck(value, (PyTypeObject *)type))
            exc = Py_NewRef(value);
        else if (value == NULL || value == Py_None)
            exc = PyObject_CallNoArgs(type);
        else if (PyTuple_Check(value))
            exc = PyObject_Call(type, value, NULL);
        else
            exc = PyObject_CallOneArg(type, value);
        if (exc == NULL)
            return NULL;
        if (!PyExceptionInstance_Check(exc)) {
            PyErr_Format(PyExc_TypeError,
                         "calling %R should have returned an instance of BaseException, not %.200s",
                         type, Py_TYPE(exc)->tp_name);
            Py_DECREF(exc);
            return NULL;
        }
    }
    else if (PyExceptionInstance_Check(type)) {
        if (value != NULL && value != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return NULL;
        }
        exc = Py_NewRef(type);
    }
    else {
        PyErr_Format(PyExc_TypeError, "exceptions must derive from BaseException, not %.200s",
                     Py_TYPE(type)->tp_name);
        return NULL;
    }
    if (tb != NULL && PyException_SetTraceback(exc, tb) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    return exc;
}

static PyObject *Continulet_throw(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"type", "value", "tb", "to"};
    PyObject *vals[4] = {NULL, NULL, NULL, NULL};
    cps_call call = {op, args, parse_args("throw", names, 4, "val", args, nargs, kwnames, vals), NULL};
    if (call.end == NULL)
        return NULL;
    call.nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (vals[0] == NULL) {
        PyErr_SetString(PyExc_TypeError, "continulet.throw() missing 1 required positional argument: 'type'");
        return NULL;
    }
    PyObject *exc = make_exception(vals[0], vals[1], vals[2]);
    if (exc == NULL)
        return NULL;
    cps_find_hidden(&call);
    PyObject *res = dispatch((Continulet *)op, exc, 1, vals[3], &call);
    Py_XDECREF(call.hidden);        /* if no suspension took it */
    return res;
}

static PyObject *Continulet_is_pending(PyObject *op, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(((Continulet *)op)->h != NULL);
}

static PyMethodDef Continulet_methods[] = {
    {"switch", (PyCFunction)(void (*)(void))Continulet_switch, METH_FASTCALL | METH_KEYWORDS,
     "switch(value=None, to=None)\n--\n\n"
     "Suspend the running frames into this continulet and resume what it\n"
     "held.  With to=, a three-way exchange: the running frames go into\n"
     "self, self's content goes into `to`, and `to`'s content resumes."},
    {"throw", (PyCFunction)(void (*)(void))Continulet_throw, METH_FASTCALL | METH_KEYWORDS,
     "throw(type, value=None, tb=None, to=None)\n--\n\n"
     "Like switch(), but the exception is raised where the frames resume."},
    {"is_pending", Continulet_is_pending, METH_NOARGS,
     "is_pending()\n--\n\nTrue unless the continulet is unbound or finished."},
    {"__reduce__", cfs_reduce, METH_NOARGS,
     "Pickling and copy.deepcopy (see docs/continuation.md)."},
    {"__setstate__", cfs_setstate, METH_O, NULL},
    {NULL, NULL, 0, NULL}
};

/* CPython-only: how many bytes of the C stack that the continulet holds
 * are kept off the stack (in a heap buffer, or in the unused end of its
 * frame data stack).  With lazy saving, a suspended stack keeps its bytes
 * in place until something runs at those addresses: 0 is a true answer for
 * a suspended stack that nothing has overwritten yet. */
static PyObject *Continulet_stack_saved(PyObject *op, void *closure)
{
    (void)closure;
    cont_stack *h = ((Continulet *)op)->h;
    size_t n = h != NULL && h->started && h->slice.state == STK_SUSPENDED ? h->slice.saved : 0;
    return PyLong_FromSize_t(n);
}

static PyGetSetDef Continulet_getset[] = {
    {"_stack_saved", Continulet_stack_saved, NULL,
     "CPython only: the bytes of the held stack's C stack that are saved off\n"
     "the stack (0 if it holds none, or none of it has been overwritten).", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyTypeObject Continulet_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_continuation.continulet",
    .tp_basicsize = sizeof(Continulet),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "continulet(callable, *args, **kwds)\n--\n\n"
              "A one-shot continuation: the first switch() calls callable(self, *args, **kwds).",
    .tp_new = Continulet_new,
    .tp_init = Continulet_init,
    .tp_dealloc = Continulet_dealloc,
    .tp_traverse = Continulet_traverse,
    .tp_clear = Continulet_clear,
    .tp_finalize = Continulet_finalize,
    .tp_methods = Continulet_methods,
    .tp_getset = Continulet_getset,
    .tp_weaklistoffset = offsetof(Continulet, weakrefs),
};

/* ---------------------------------------------------------------------
 * permute() and the module
 * --------------------------------------------------------------------- */

/* Argument i of permute(), checked: 1 to take part, 0 to ignore
 * (unbound), -1 with an exception set. */
static int permute_check(PyObject *const *args, Py_ssize_t i, cont_tls **tp)
{
    PyObject *o = args[i];
    if (check_continulet(o) < 0)
        return -1;
    Continulet *c = (Continulet *)o;
    if (!cont_initialized(c))
        return 0;       /* ignored, like switch() ignores them */
    if (*tp == NULL && (*tp = get_tls()) == NULL)
        return -1;
    if (c->thread_id != (*tp)->thread_id) {
        PyErr_SetString(cont_error, "inter-thread support is missing");
        return -1;
    }
    if (c->h == NULL) {
        PyErr_SetString(cont_error, "got an already-finished continulet");
        return -1;
    }
    /* Twice in one rotation, a continulet would be handed two stored
     * continuations and keep only the second: one C stack would end up in
     * two continulets and another in none (PyPy does exactly that and
     * crashes later).  Refuse before anything moves.  A scan of the
     * arguments before it, not a mark on the object (a byte that would
     * make every continulet 16 B bigger): rotations are short. */
    for (Py_ssize_t j = 0; j < i; j++)
        if (args[j] == o) {
            PyErr_SetString(cont_error, "permute() got the same continulet twice");
            return -1;
        }
    return 1;
}

static PyObject *permute(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    cont_tls *t = NULL;
    Py_ssize_t n = 0, i;
    for (i = 0; i < nargs; i++) {
        int r = permute_check(args, i, &t);
        if (r < 0)
            break;
        n += r;
    }
    if (i < nargs)
        return NULL;
    if (n > 1) {
        /* each one gets the previous one's continuation; the first gets the last's */
        cont_stack *carry = NULL;
        for (i = nargs - 1; i >= 0; i--)
            if (cont_initialized((Continulet *)args[i])) { carry = ((Continulet *)args[i])->h; break; }
        for (i = 0; i < nargs; i++) {
            Continulet *c = (Continulet *)args[i];
            if (!cont_initialized(c))
                continue;
            cont_stack *mine = c->h;
            c->h = carry;
            carry = mine;
        }
    }
    Py_RETURN_NONE;
}

/* The callables that _after_collection() asked for (a list, or NULL). */
static PyObject *after_gc;

static PyObject *after_collection(PyObject *module, PyObject *fn)
{
    (void)module;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "_after_collection() argument must be callable");
        return NULL;
    }
    if (after_gc == NULL && (after_gc = PyList_New(0)) == NULL)
        return NULL;
    if (PyList_Append(after_gc, fn) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Call what _after_collection() asked for, each once (a request made
 * meanwhile waits for the next collection; an asynchronous exception in one
 * is raised again later, and the call made again: src/deferred.c). */
static void call_after_collection(void)
{
    PyObject *fns = after_gc;
    after_gc = NULL;
    PyObject *exc = cps_fetch_exception();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fns); i++) {
        PyObject *fn = PyList_GET_ITEM(fns, i);
        Py_XDECREF(cont_call_deferring(fn, NULL, 0));
    }
    Py_DECREF(fns);
    cps_restore_exception(exc);
}

/* gc.callbacks hook: note which thread collects, and unwind the runs
 * that the collection dropped once it is over; then call what
 * _after_collection() asked for.  (A hook in C: Python code here would
 * run, and show in trace functions, at every collection.) */
static PyObject *gc_callback(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || !PyUnicode_Check(args[0]))
        Py_RETURN_NONE;
    if (PyUnicode_CompareWithASCIIString(args[0], "start") == 0) {
        tl_collecting = 1;
        Py_RETURN_NONE;
    }
    tl_collecting = 0;
    cont_tls *t = tls_cache;
    if (orphans != NULL && t != NULL && t->thread_id == current_thread_id())
        process_orphans(t);
    if (after_gc != NULL && !cps_finalizing())
        call_after_collection();
    Py_RETURN_NONE;
}

/* Whether the running thread may switch (check_switch_allowed's
 * tests).  Code whose switch is optional (stackless's channel pairing)
 * asks first and does without, instead of changing its state and then
 * having the switch refused. */
static int capi_may_switch(void)
{
    if (gc_forbids_switch(cps_tstate()))
        return 0;
    cont_stack *s = cont_running_stack();
    return s == NULL || s->kill_return == NULL;
}

static PyObject *may_switch(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyBool_FromLong(capi_may_switch());
}

/* CPython-only extension: the contextvars context of a stack.  With no
 * continulet: the running stack's.  With one: the stack it holds (the
 * context it will start in, if it has not started). */
static cont_stack *held_stack(PyObject *c)
{
    if (!PyObject_TypeCheck(c, &Continulet_Type)) {
        PyErr_SetString(PyExc_TypeError, "expected a continulet");
        return NULL;
    }
    cont_stack *h = ((Continulet *)c)->h;
    if (h == NULL)
        PyErr_SetString(cont_error, "the continulet holds no stack (unbound or finished)");
    return h;
}

static PyObject *stack_context(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_stack_context(continulet=None)");
        return NULL;
    }
    PyObject *ctx;
    if (nargs == 0 || args[0] == Py_None)
        ctx = cps_current_context();
    else {
        cont_stack *h = held_stack(args[0]);
        if (h == NULL)
            return NULL;
        ctx = h->started ? cps_context(&h->saved) : h->context;
    }
    return Py_NewRef(ctx != NULL ? ctx : Py_None);
}

/* CPython-only extension: the frame object of the top frame of the stack
 * that a continulet holds suspended; None if it holds none, or one not
 * started or without Python frames.  Made on demand, so that switching
 * need not make one for every suspension (stackless's tasklet.frame). */
static PyObject *stack_frame(PyObject *mod, PyObject *c)
{
    if (!PyObject_TypeCheck(c, &Continulet_Type)) {
        PyErr_SetString(PyExc_TypeError, "expected a continulet");
        return NULL;
    }
    cont_stack *h = ((Continulet *)c)->h;
    if (h == NULL || !h->started || h->slice.state != STK_SUSPENDED)
        Py_RETURN_NONE;
    return cps_suspended_frame(&h->saved);
}

static PyObject *set_stack_context(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "_set_stack_context(context, continulet=None)");
        return NULL;
    }
    PyObject *ctx = args[0];
    if (ctx != Py_None && !PyContext_CheckExact(ctx)) {
        PyErr_SetString(PyExc_TypeError, "context must be a contextvars.Context or None");
        return NULL;
    }
    ctx = ctx == Py_None ? NULL : Py_NewRef(ctx);
    if (nargs == 1 || args[1] == Py_None) {
        cps_set_current_context(ctx);
        Py_RETURN_NONE;
    }
    cont_stack *h = held_stack(args[1]);
    if (h == NULL) {
        Py_XDECREF(ctx);
        return NULL;
    }
    if (h->started)
        cps_set_context(&h->saved, ctx);
    else
        Py_XSETREF(h->context, ctx);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_stack_context", (PyCFunction)(void (*)(void))stack_context, METH_FASTCALL,
     "_stack_context(continulet=None)\n--\n\n"
     "CPython only: the contextvars.Context of the running stack, or of the\n"
     "stack that a continulet holds (None if it has none)."},
    {"_stack_frame", stack_frame, METH_O,
     "_stack_frame(continulet)\n--\n\n"
     "CPython only: the frame object of the top frame of the stack that the\n"
     "continulet holds suspended (None if it holds none)."},
    {"_set_stack_context", (PyCFunction)(void (*)(void))set_stack_context, METH_FASTCALL,
     "_set_stack_context(context, continulet=None)\n--\n\n"
     "CPython only: replace the contextvars.Context of the running stack, or\n"
     "of the stack that a continulet holds (for an unstarted one: the\n"
     "context it starts in)."},
    {"_may_switch", may_switch, METH_NOARGS,
     "_may_switch()\n--\n\nWhether this thread may switch now: False while it collects garbage,\nand while the garbage collector unwinds the running stack."},
    {"_after_collection", after_collection, METH_O,
     "_after_collection(fn)\n--\n\nInternal: call fn() once, in the thread that collects, when the\n"
     "running garbage collection (else the next one) is over."},
    {"_gc_callback", (PyCFunction)(void (*)(void))gc_callback, METH_FASTCALL,
     "_gc_callback(phase, info)\n--\n\nInternal: installed in gc.callbacks."},
    {"permute", (PyCFunction)(void (*)(void))permute, METH_FASTCALL,
     "permute(*continulets)\n--\n\n"
     "Rotate the stored continuations: each continulet gets the one of the\n"
     "continulet before it, the first gets the last one's.  Never switches."},
    {NULL, NULL, 0, NULL}
};

/* The capsule's switch: what Continulet_switch does after parsing.  No
 * stack hint: the caller is C code, its arguments are not in a frame. */
static PyObject *capi_switch(PyObject *c, PyObject *value, PyObject *to)
{
    return cont_switch((Continulet *)c, value, to, NULL);
}

/* The call of capi_switch_in_call.  Static, not a local: cps_save reads it
 * before anything can run (no Python code, the GIL held throughout) and
 * nothing reads it after, so this function is a tail call and leaves no C
 * frame of its own under every switching tasklet, whose stack is copied at
 * each switch (docs/performance.md). */
static cps_call capi_call;

static PyObject *capi_switch_in_call(PyObject *c, PyObject *to, PyObject *const *args,
                                     PyObject *const *end, PyObject *held)
{
    capi_call = (cps_call){c, args, end, NULL, 0, held};
    return cont_switch((Continulet *)c, NULL, to, &capi_call);
}

/* The capsule's switch_then: the switch of dispatch() with its own copy
 * of the code, whose frame is the only one between the C caller's caller
 * and the stack switch (capi.h).  `then` and its arguments stay in this
 * frame (or in the registers that the switch saves with it), which the
 * switch saves and restores with the rest of the suspended stack: a field
 * of the record would have made every record, and every blocked tasklet,
 * bigger. */
static PyObject *capi_switch_then(PyObject *c, PyObject *to, cont_then_fn then, PyObject *a,
                                  PyObject *b)
{
    return dispatch_body((Continulet *)c, Py_NewRef(Py_None), 0, to, NULL, then, a, b);
}

static const cont_capi capi = {CONT_CAPI_VERSION, &Continulet_Type, capi_switch, capi_may_switch,
                               capi_switch_in_call, capi_init1, capi_switch_then,
                               cps_current_context};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_continuation",
    .m_doc = "PyPy's _continuation module for CPython: one-shot continuations by stack slicing.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__continuation(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (cps_init() < 0 || cdp_init() < 0 || PyType_Ready(&Continulet_Type) < 0)
        goto fail;
    cont_chunkcache_install();
    /* every heap buffer is made, grown and freed under the GIL (stk.h) */
    stk_mem_realloc = PyMem_Realloc;
    stk_mem_free = PyMem_Free;
    if (PyModule_AddObjectRef(m, "continulet", (PyObject *)&Continulet_Type) < 0)
        goto fail;
    cont_error = PyErr_NewException("_continuation.error", NULL, NULL);
    if (cont_error == NULL || PyModule_AddObjectRef(m, "error", cont_error) < 0)
        goto fail;
    if (cont_genlet_init(m) < 0 || PyModule_AddFunctions(m, cfs_module_methods) < 0
            || PyModule_AddFunctions(m, cont_transplant_methods) < 0
            || PyModule_AddFunctions(m, cont_deferred_methods) < 0
            || PyModule_AddFunctions(m, cont_first_chunk_methods) < 0
            || PyModule_AddFunctions(m, cont_preempt_methods) < 0
            || PyModule_AddFunctions(m, cont_preempt_count_methods) < 0
            || PyModule_AddFunctions(m, cont_preempt_monitor_methods) < 0
            || PyModule_AddFunctions(m, cdp_methods) < 0)
        goto fail;
    {
        PyObject *cap = PyCapsule_New((void *)&capi, CONT_CAPI_NAME, NULL);
        int bad = cap == NULL || PyModule_AddObjectRef(m, "_C_API", cap) < 0;
        Py_XDECREF(cap);
        if (bad)
            goto fail;
    }
    {
        PyObject *gc = PyImport_ImportModule("gc");
        PyObject *cbs = gc ? PyObject_GetAttrString(gc, "callbacks") : NULL;
        PyObject *cb = PyObject_GetAttrString(m, "_gc_callback");
        int bad = cbs == NULL || cb == NULL || PyList_Append(cbs, cb) < 0;
        Py_XDECREF(gc);
        Py_XDECREF(cbs);
        Py_XDECREF(cb);
        if (bad)
            goto fail;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
