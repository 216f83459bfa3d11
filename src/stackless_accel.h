/* What the two files of _stackless_accel share: stackless_accel.c (channels,
 * scheduling, switching, install()) and stackless_tasklet.c (creating and
 * setting up tasklets). */
#ifndef STACKLESS_ACCEL_H
#define STACKLESS_ACCEL_H

#include <Python.h>

/* The running thread's stackless._ThreadState (new reference), or NULL
 * without an exception when the thread has none yet. */
PyObject *accel_thread_state(void);

/* Called by install(): learn the tasklet class and put the C versions of
 * __new__, __init__, setup() and __call__ on it when its fields allow it,
 * and add the C _finish() to `replaced` (the names the Python code puts in
 * place).  `ns` holds stackless's names.  0, or -1 with an exception. */
int tasklet_accel_install(PyObject *ns, PyObject *tasklet, Py_ssize_t rq_offset,
                          PyObject *replaced);
/* Have the collector skip the slots of cls's base `name` (ns[name]), which
 * hold only the flags listed in `flags` (NULL-ended); nothing if that base
 * is not such a class. */
void accel_skip_flags_in_gc(PyObject *ns, const char *name, PyTypeObject *cls,
                            const char *const *flags);
/* Give the tasklet class (channel 0) or the channel class (1) a traverse
 * that visits its own slots from offsets found once, if it is what that
 * code knows (after accel_skip_flags_in_gc on its base) */
void accel_fast_traverse(PyTypeObject *cls, int channel);
/* After that, give the tasklet class a dealloc that clears the same slots
 * (stackless_gcslots.c), if it is what that code knows */
void accel_fast_dealloc(PyTypeObject *cls);

/* type.__call__(type, *args, **kw), from a vectorcall's arguments */
PyObject *accel_type_call(PyObject *type, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames);
/* Whether v is None, a bool, an int or a str (a template may share it) */
int accel_immutable(PyObject *v);
/* stackless_channel_new.c: channel() made in C while the class's __new__
 * and __init__ are the originals.  0, or -1 with an exception. */
int channel_accel_install(PyObject *channel);

/* stackless_accel.c: the scheduler steps the other parts share */
int accel_do_switch(PyObject *ts, PyObject *cur, PyObject *nxt);
/* schedule callback(prev, nxt), traced; an Exception is reported as
 * unraisable, -1 only for another BaseException */
int accel_schedule_callback(PyObject *prev, PyObject *nxt);
PyObject *accel_rq_first(PyObject *rq);         /* rq[0], new reference */
int accel_rq_popleft(PyObject *rq);             /* del rq[0]; 0 or -1 */
/* t's tempval (new reference); a bomb there is raised (NULL) */
PyObject *accel_take_tempval(PyObject *t);

/* stackless_tasklet.c: _finish(ts, self, None), the tasklet to resume */
PyObject *accel_finish(PyObject *ts, PyObject *self);
/* stackless_tasklet.c: _new_cont(bootstrap, t) into *cont: 1, or 0 when
 * that part is not installed (the Python version must do it), or -1 with
 * an exception */
int accel_new_cont(PyObject *bootstrap, PyObject *t, PyObject **cont);

/* stackless_hide.c: calls with stackless's own frames kept out of trace
 * and profile functions, and calls of the user's code made visible again
 * from there (vectorcall conventions) */
PyObject *call_hidden(PyObject *func, PyObject *const *args, size_t nargsf, PyObject *kwnames);
PyObject *call_visible(PyObject *func, PyObject *const *args, size_t nargsf, PyObject *kwnames);
/* *func becomes a builtin that calls the old *func hidden: the Python
 * fallbacks that the C code calls */
int hide_in_place(PyObject **func);
/* Whether obj is func itself hidden: hide(func) or hide(func, True) */
int accel_is_hidden(PyObject *obj, PyObject *func);
extern PyMethodDef hide_methods[];

/* stackless_run.c: run(), _bootstrap and the trace functions of tasklets */
int accel_tracing_out(PyObject *ts, PyObject *cur);
int accel_tracing_in(PyObject *ts, PyObject *cur);
int run_accel_install(PyObject *ns, PyObject *tasklet, PyObject *tstate);
extern PyMethodDef run_methods[];

/* stackless_waitqueue.c: WaitQueue, a channel's queue of waiters with the
 * accelerator.  append: 0 or -1 (no memory, nothing changed); popleft: the
 * first (taken, a new reference; the queue must not be empty); first: the
 * first, borrowed, or NULL when empty.  No Python code runs in them. */
int waitqueue_add(PyObject *module);
extern PyTypeObject accel_waitqueue_type;
int accel_wq_append(PyObject *q, PyObject *v);
PyObject *accel_wq_popleft(PyObject *q);
PyObject *accel_wq_first(PyObject *q);

/* stackless_flags.c: TaskletFlags, the C base of the tasklet class, whose
 * flags _alive, _started, _is_main, _atomic, _ignore_nesting, _block_trap,
 * _orphaned and _unrestorable are chars (T_BOOL members) */
int tasklet_flags_add(PyObject *module);
extern PyTypeObject accel_flags_type;
/* What its dealloc releases, for a subclass's own dealloc: the registry
 * link, the weak references and _base (nothing else: the caller frees) */
void accel_flags_clear(PyObject *self);
/* A tasklet's place in its thread's registry (stackless_registry.c):
 * next is NULL while it is in none; prev's low bit says whether the
 * registry holds a reference to it */
typedef struct reg_link {
    struct reg_link *next;
    uintptr_t prev;
} reg_link;
/* where an instance of TaskletFlags keeps it */
extern const Py_ssize_t accel_link_offset;

/* stackless_registry.c: the registry of a thread's live tasklets, a list
 * through them.  add: in ts's registry (made if need be, -1 with an error
 * for no memory), held; remove: out of it (its reference released);
 * weaken: not held; forget_weak: out of it if not held (garbage);
 * dealloc: out of it.  No Python code runs in them but the release of a
 * held tasklet's reference, which the caller's own reference keeps. */
int accel_registry_init(PyObject *registry, PyObject *tasklet, PyObject *tstate);
int accel_reg_add(PyObject *t, PyObject *ts);
void accel_reg_remove(PyObject *t);
void accel_reg_weaken(PyObject *t);
void accel_reg_forget_weak(PyObject *t);
void accel_reg_dealloc(PyObject *t);
extern PyMethodDef accel_registry_methods[];
/* The offset of cls's char flag `name`, or -1 with an error */
#define flag_offset(cls, name) member_offset((cls), (name), T_BOOL)
/* The offset of the tasklet's _blocked (a short: -1, 0 or 1), or -1 with an error */
#define blocked_offset(cls) member_offset((cls), "_blocked", T_SHORT)

/* The char flag at offset off of o, and its setting */
static inline int flag(PyObject *o, Py_ssize_t off)
{
    return *((char *)o + off);
}

static inline void set_flag(PyObject *o, Py_ssize_t off, int v)
{
    *((char *)o + off) = (char)(v != 0);
}

/* The tasklet's _blocked at offset off, and its setting */
static inline int blocked(PyObject *o, Py_ssize_t off)
{
    return *(short *)((char *)o + off);
}

static inline void set_blocked(PyObject *o, Py_ssize_t off, int v)
{
    *(short *)((char *)o + off) = (short)v;
}

static inline int discard(PyObject *r)
{
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

#endif
