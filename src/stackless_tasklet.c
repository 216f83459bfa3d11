/* _stackless_accel, part two: creating and setting up tasklets in C.
 *
 * `tasklet(func)(*args)` runs tasklet.__new__ (_init_fields), __init__
 * (bind), __call__, setup, _make_alive, _register and insert in Python:
 * most of the cost of a short-lived tasklet.  The C versions below do the
 * same steps on the same slots in the usual case (a fresh tasklet of the
 * running thread, a callable function) and call the Python originals for
 * everything else, before changing anything.
 *
 * __new__ fills the fields from a template: install() runs the Python
 * _init_fields() once on a probe instance and records what it stored,
 * so the Python method stays the one definition of a new tasklet's
 * fields.  The template is only used when every recorded value is
 * immutable (None, a bool, an int or a str).
 */
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include "capi.h"
#include "slots.h"
#include "stackless_accel.h"

#define MAX_FIELDS 48

static PyTypeObject *tasklet_type;

/* Whether o is a tasklet: the class itself first (PyObject_TypeCheck walks
 * the MRO of any other type, ~25 instructions a time on 3.14) */
CONT_HOT int is_tasklet(PyObject *o)
{
    return Py_IS_TYPE(o, tasklet_type) || PyObject_TypeCheck(o, tasklet_type);
}
static Py_ssize_t tpl_off[MAX_FIELDS];
static PyObject *tpl_val[MAX_FIELDS];
/* whether tpl_val[i] is None, a bool or a small int: immortal on 3.12+,
 * so that a new tasklet takes no reference to it there (imm_ref) */
static char tpl_imm[MAX_FIELDS];
static int tpl_n;

static Py_ssize_t t_func, t_args, t_kwargs, t_cont, t_ts, t_tempval, t_blocked, t_scheduled,
                  t_alive, t_started, t_context, t_unrestorable, ts_current, ts_rq;
static PyObject *py_new, *py_init, *py_bind, *py_setup, *py_ts, *py_finish, *registry;
/* stackless._common._FRESH_CONTEXT */
static PyObject *fresh_context;
/* stackless._lifetime._TaskletCont, and the offset of its slot `tasklet` */
static PyTypeObject *tcont_type;
static Py_ssize_t c_tasklet;
static PyObject *s_setup, *s_bind, *empty_tuple;
static PyCFunction deque_append;        /* deque.append's C function (METH_O) */
static PyCFunction deque_popleft;       /* deque.popleft's (METH_NOARGS) */
static PyTypeObject *deque_type;
static const cont_capi *capi;           /* _continuation's C API */

/* --- __new__ --------------------------------------------------------------- */

static PyObject *tasklet_new(PyObject *unused, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    if (nargs < 1 || !PyType_Check(args[0])
            || (args[0] != (PyObject *)tasklet_type
                && !PyType_IsSubtype((PyTypeObject *)args[0], tasklet_type)))
        return PyObject_Vectorcall(py_new, args, (size_t)nargs, kwnames);
    PyObject *ts = accel_thread_state();
    if (ts == NULL) {
        if (PyErr_Occurred() || (ts = PyObject_CallNoArgs(py_ts)) == NULL)
            return NULL;
    }
    /* The type's allocator, not object.__new__: before 3.13 that also
     * gives every instance an empty block for the values of its __dict__
     * (16 B, its allocation and free, and a visit at every collection),
     * which almost no tasklet uses; without it, a tasklet that gets an
     * attribute gets an ordinary dict then.  (3.13+ keeps the values
     * inline, and the allocator sets them up.)  object.__new__ also
     * refuses abstract classes: those go through it. */
    PyTypeObject *tp = (PyTypeObject *)args[0];
    PyObject *self = !(tp->tp_flags & Py_TPFLAGS_IS_ABSTRACT) ? tp->tp_alloc(tp, 0)
                   : PyBaseObject_Type.tp_new(tp, empty_tuple, NULL);
    if (self == NULL) {
        Py_DECREF(ts);
        return NULL;
    }
    /* (new memory: no old values to release) */
    for (int i = 0; i < tpl_n; i++)
        *(PyObject **)((char *)self + tpl_off[i]) = tpl_imm[i] ? imm_ref(tpl_val[i])
                                                               : Py_NewRef(tpl_val[i]);
    set_slot(self, t_ts, ts);
    Py_DECREF(ts);
    return self;
}

static PyMethodDef new_def = {"__new__", (PyCFunction)(void (*)(void))tasklet_new,
    METH_FASTCALL | METH_KEYWORDS, "Create a tasklet of the running thread (C version)."};

/* --- __init__(func) ----------------------------------------------------------- */

/* set_slot(o, off, None) when the slot holds something else: a new
 * tasklet's slots mostly hold None already, and a comparison costs less
 * than counting None's references (not immortal before 3.12) */
CONT_HOT void clear_to_none(PyObject *o, Py_ssize_t off)
{
    if (slot(o, off) != Py_None)
        set_slot(o, off, Py_None);
}

/* A fresh tasklet that bind() may bind without complaint: not alive, not
 * scheduled, not blocked, not running. */
static int fresh(PyObject *self, PyObject *ts)
{
    return !flag(self, t_alive) && !flag(self, t_scheduled) && blocked(self, t_blocked) == 0
        && slot(self, t_ts) == ts
        && slot(ts, ts_current) != self;
}

/* Whether __init__'s arguments are bind(func)'s usual case for self's type */
static int usual_init_args(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    return kwnames == NULL && nargs == 1 && args[0] != Py_None && PyCallable_Check(args[0])
        /* a subclass's own bind() is called; the class's may have been
           replaced by its hidden version since install (stackless_hide.c),
           and for the class itself the two lookups agree */
        && (Py_TYPE(self) == tasklet_type
            || _PyType_Lookup(Py_TYPE(self), s_bind) == _PyType_Lookup(tasklet_type, s_bind));
}

/* The context a tasklet gets when it is bound (new reference): a copy of
 * the current one, or _FRESH_CONTEXT where that is empty, so that its
 * stack starts with none and CPython makes one only if it is needed (as
 * stackless/_contexts.py's new_context) */
static PyObject *new_context(void)
{
    PyObject *cur = capi->current_context();
    if (cur == NULL || PyObject_Length(cur) == 0)
        return Py_NewRef(fresh_context);
    return PyContext_CopyCurrent();
}

/* bind(func) of a fresh tasklet */
static PyObject *bind_fresh(PyObject *self, PyObject *func)
{
    PyObject *ctx = new_context();
    if (ctx == NULL)
        return NULL;
    /* bind(func): Stackless keeps the function in tempval until setup() */
    set_slot(self, t_func, func);
    set_slot(self, t_context, ctx);
    Py_DECREF(ctx);
    set_flag(self, t_unrestorable, 0);
    clear_to_none(self, t_args);
    clear_to_none(self, t_kwargs);
    set_slot(self, t_tempval, func);
    Py_RETURN_NONE;
}

static PyObject *tasklet_init(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *ts = NULL;
    if (!usual_init_args(self, args, nargs, kwnames)
            || (ts = accel_thread_state()) == NULL || !fresh(self, ts)) {
        Py_XDECREF(ts);
        if (PyErr_Occurred())
            return NULL;
        return call_bound(py_init, self, args, nargs, kwnames);
    }
    Py_DECREF(ts);
    return bind_fresh(self, args[0]);
}

static PyMethodDef init_def = {"__init__", (PyCFunction)(void (*)(void))tasklet_init,
    METH_FASTCALL | METH_KEYWORDS, "Bind the tasklet to a function (C version)."};

/* --- tasklet(...) ----------------------------------------------------------------
 * Calling the class runs type.__call__, which finds __new__ and __init__
 * through the slot wrappers of a heap type (a dictionary lookup, an
 * argument tuple and a bound call each).  The class's vectorcall does the
 * same with our two C functions straight, while they are the class's:
 * anything else (a subclass, a replaced __new__ or __init__, many
 * arguments) goes through type.__call__ itself. */

static PyObject *new_fn, *init_descr, *s_new, *s_init;

/* The version tag of the tasklet class when the lookups below last found
 * our C functions, else 0: a type's version tag is unique, and changes
 * (or becomes 0) whenever the type or one of its bases is modified, so
 * while it is the same the lookups would find the same. */
static unsigned int new_init_tag, setup_tag;

/* Whether the tasklet class's __new__ and __init__ are ours */
static int own_new_init(void)
{
    if (new_init_tag != 0 && tasklet_type->tp_version_tag == new_init_tag)
        return 1;
    if (_PyType_Lookup(tasklet_type, s_new) != new_fn
            || _PyType_Lookup(tasklet_type, s_init) != init_descr)
        return 0;
    new_init_tag = tasklet_type->tp_version_tag;
    return 1;
}

static PyObject *setup_descr;           /* our C setup(), as tasklet.setup */

/* Whether tp's setup() is ours */
static int own_setup(PyTypeObject *tp)
{
    if (tp == tasklet_type && setup_tag != 0 && tp->tp_version_tag == setup_tag)
        return 1;
    if (_PyType_Lookup(tp, s_setup) != setup_descr)
        return 0;
    if (tp == tasklet_type)
        setup_tag = tp->tp_version_tag;
    return 1;
}

static PyObject *kwargs_dict(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);

/* The positional arguments as a tuple and the keywords as a dict (*kw
 * NULL without any): 0, or -1 with an error. */
static int as_tuple_dict(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                         PyObject **tuple, PyObject **kw)
{
    *kw = NULL;
    if ((*tuple = PyTuple_New(nargs)) == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(*tuple, i, Py_NewRef(args[i]));
    /* (kwargs_dict gives None for an empty kwnames, which a C caller may
       pass: type.__call__ takes a dict or NULL) */
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0
        && (*kw = kwargs_dict(args, nargs, kwnames)) == NULL) {
        Py_CLEAR(*tuple);
        return -1;
    }
    return 0;
}

/* type.__call__(type, *args, **kw) */
OUT_OF_LINE PyObject *accel_type_call(PyObject *type, PyObject *const *args, Py_ssize_t nargs,
                                       PyObject *kwnames)
{
    PyObject *tuple, *kw;
    if (as_tuple_dict(args, nargs, kwnames, &tuple, &kw) < 0)
        return NULL;
    PyObject *r = PyType_Type.tp_call(type, tuple, kw);
    Py_DECREF(tuple);
    Py_XDECREF(kw);
    return r;
}

/* type(self).__init__(self, *args, **kw), as type.__call__ calls it */
static OUT_OF_LINE PyObject *init_of_type(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                          PyObject *kwnames)
{
    PyObject *tuple, *kw;
    if (as_tuple_dict(args, nargs, kwnames, &tuple, &kw) < 0)
        return NULL;
    int rc = Py_TYPE(self)->tp_init != NULL ? Py_TYPE(self)->tp_init(self, tuple, kw) : 0;
    Py_DECREF(tuple);
    Py_XDECREF(kw);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *tasklet_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), n = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *stack[8];
    if ((PyTypeObject *)type != tasklet_type || n >= 8 || !own_new_init())
        return accel_type_call(type, args, nargs, kwnames);
    stack[0] = type;
    for (Py_ssize_t i = 0; i < n; i++)
        stack[i + 1] = args[i];
    PyObject *self = tasklet_new(NULL, stack, nargs + 1, kwnames);
    if (self == NULL || !is_tasklet(self))
        return self;
    /* (one that tasklet_new just made for this thread is fresh) */
    PyObject *r = !Py_IS_TYPE(self, tasklet_type) ? init_of_type(self, args, nargs, kwnames)
                : usual_init_args(self, args, nargs, kwnames) ? bind_fresh(self, args[0])
                : tasklet_init(self, args, nargs, kwnames);
    if (r != Py_None) {
        if (r != NULL)
            PyErr_Format(PyExc_TypeError, "__init__() should return None, not '%.200s'",
                         Py_TYPE(r)->tp_name);
        Py_XDECREF(r);
        Py_DECREF(self);
        return NULL;
    }
    Py_DECREF(r);
    return self;
}

/* --- setup(*args, **kwargs) and __call__ ---------------------------------- */

/* The keyword arguments as a dict, or None when there are none: a blocked
 * tasklet keeps them until its function returns (see stackless_run.c),
 * and an empty dict is 64 B of every one. */
static PyObject *kwargs_dict(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t n = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (n == 0)
        return Py_NewRef(Py_None);
    PyObject *kw = PyDict_New();
    for (Py_ssize_t i = 0; kw != NULL && i < n; i++)
        if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
            Py_CLEAR(kw);
    return kw;
}

/* The thread state, when setup() may take the usual way here: a fresh
 * bound tasklet of this thread; NULL (an error set or not) when not. */
static PyObject *usual_setup_ts(PyObject *self)
{
    PyObject *ts = accel_thread_state();
    if (ts != NULL && (slot(self, t_func) == Py_None || !fresh(self, ts)
                       || !Py_IS_TYPE(slot(ts, ts_rq), deque_type)))
        Py_CLEAR(ts);
    return ts;
}

/* setup(*a, **kw) the usual way: a is the tuple of arguments, kw their
 * dict or None (both kept) */
static PyObject *setup_usual(PyObject *self, PyObject *ts, PyObject *a, PyObject *kw)
{
    set_slot(self, t_args, a);
    set_slot(self, t_kwargs, kw);
    if (slot(self, t_context) == Py_None) {
        PyObject *ctx = new_context();
        if (ctx == NULL)
            return NULL;
        set_slot(self, t_context, ctx);
        Py_DECREF(ctx);
    }
    /* _make_alive() */
    set_flag(self, t_alive, 1);
    set_flag(self, t_started, 0);
    clear_to_none(self, t_cont);
    clear_to_none(self, t_tempval);
    if (accel_reg_add(self, ts) < 0)
        return NULL;
    /* insert() */
    set_flag(self, t_scheduled, 1);
    PyObject *r = deque_append(slot(ts, ts_rq), self);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    return Py_NewRef(self);
}

static PyObject *tasklet_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    PyObject *ts = usual_setup_ts(self);
    if (ts == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return call_bound(py_setup, self, args, nargs, kwnames);
    }
    PyObject *a = PyTuple_New(nargs), *kw = NULL, *result = NULL;
    if (a == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(a, i, Py_NewRef(args[i]));
    if ((kw = kwargs_dict(args, nargs, kwnames)) == NULL)
        goto done;
    result = setup_usual(self, ts, a, kw);
done:
    Py_XDECREF(a);
    Py_XDECREF(kw);
    Py_DECREF(ts);
    return result;
}

/* __call__ is setup(), unless a subclass has its own setup() */
static PyObject *tasklet_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    if (own_setup(Py_TYPE(self)))
        return tasklet_setup(self, args, nargs, kwnames);
    PyObject *meth = PyObject_GetAttr(self, s_setup);
    if (meth == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(meth, args, (size_t)nargs, kwnames);
    Py_DECREF(meth);
    return r;
}

/* The class's tp_call: calling an instance builds the tuple of its
 * arguments anyway (tasklets have no vectorcall of their own), and the
 * usual way keeps that very tuple as the arguments, without the heap
 * type's __call__ lookup and bound call.  Subclasses get the generic slot
 * (their __call__ is found as a method), as does the class once its
 * __call__ is replaced. */
static PyObject *tasklet_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *ts = own_setup(Py_TYPE(self)) && PyTuple_CheckExact(args) ? usual_setup_ts(self)
                                                                         : NULL;
    if (ts == NULL) {
        if (PyErr_Occurred())
            return NULL;
        PyObject *meth = PyObject_GetAttr(self, s_setup);
        PyObject *r = meth != NULL ? PyObject_Call(meth, args, kwargs) : NULL;
        Py_XDECREF(meth);
        return r;
    }
    /* (a copy: Python's **kwargs is a dict of its own) */
    PyObject *kw = kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0 ? PyDict_Copy(kwargs)
                                                                 : Py_NewRef(Py_None);
    PyObject *r = kw != NULL ? setup_usual(self, ts, args, kw) : NULL;
    Py_XDECREF(kw);
    Py_DECREF(ts);
    return r;
}

static PyMethodDef setup_def = {"setup", (PyCFunction)(void (*)(void))tasklet_setup,
    METH_FASTCALL | METH_KEYWORDS, "Bind the arguments and insert the tasklet into the run queue (C version)."};
static PyMethodDef call_def = {"__call__", (PyCFunction)(void (*)(void))tasklet_call,
    METH_FASTCALL | METH_KEYWORDS, "Same as setup() (C version)."};

/* --- _finish(ts, self, error) -------------------------------------------------
 * The dying tasklet's way out, in the usual case: no uncaught error and
 * the tasklet first in the run queue, as a running tasklet is.  The
 * Python _finish is idempotent, so for anything else it simply runs after
 * whatever steps were done here. */

/* --- _new_cont(bootstrap, t) --------------------------------------------------
 * t starts: its continulet is a _TaskletCont that knows t, and from now on
 * its registry holds t weakly, so that the GC finds t once nothing else
 * refers to it (stackless/_lifetime.py, src/stackless_registry.c). */

/* _TaskletCont's traverse: what the generic one of a class with __slots__
 * (subtype_traverse) does for it, without walking the class's member
 * list at every collection: its type, its one slot, and the continulet's
 * own traverse.  It has no instance dict and no weak reference slot of
 * its own (install() checks). */
static traverseproc continulet_traverse;

static int tcont_traverse(PyObject *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(slot(c, c_tasklet));
    return continulet_traverse(c, visit, arg);
}

/* Its dealloc, likewise (subtype_dealloc walks the class chain twice and
 * the member list): the finalizer first, as subtype_dealloc runs it (the
 * object tracked; it may come back to life), then its slot (untracked),
 * then continulet's own dealloc, which frees it; a heap type's instance
 * releases its type.  Also the base dealloc of a subclass (none exists),
 * whose subtype_dealloc has run the finalizer already. */
static destructor continulet_dealloc;

static void tcont_dealloc(PyObject *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    if (PyObject_CallFinalizerFromDealloc(c) < 0)
        return;
    /* (what the release runs must not meet c in a collection) */
    PyObject_GC_UnTrack(c);
    Py_CLEAR(*(PyObject **)((char *)c + c_tasklet));
    continulet_dealloc(c);
    Py_DECREF(tp);
}

/* _TaskletCont's finalizer: continulet's, and then t leaves its registry
 * unless it is held there: __continulet_keep__ kept it (stackless._lifetime
 * made it so), or else t is garbage with c.  Whatever the finalizer did:
 * it may not have asked __continulet_keep__ at all (a run that never
 * started, one that ended, the interpreter's exit), or that Python code
 * may have failed.  Only while c is t's continulet: else t lives on with
 * another one (which its registry entry is about). */
static destructor continulet_finalize;

static void tcont_finalize(PyObject *c)
{
    continulet_finalize(c);
    PyObject *t = slot(c, c_tasklet);
    if (t != NULL && is_tasklet(t) && slot(t, t_cont) == c)
        accel_reg_forget_weak(t);
}

int accel_new_cont(PyObject *bootstrap, PyObject *t, PyObject **cont)
{
    if (c_tasklet == 0)
        return 0;
    /* _TaskletCont(bootstrap, t): what type.__call__ does, its __new__
     * and __init__ slots, without the generic call of a type (argument
     * tuple from a vector, type_call's checks); while they are
     * continulet's own, without an argument tuple at all (continulet's
     * __new__ ignores its arguments).  (A Python __new__ or __init__ of
     * the class would be these slots too.) */
    PyObject *c;
    if (tcont_type->tp_new == capi->continulet_type->tp_new
            && tcont_type->tp_init == capi->continulet_type->tp_init) {
        c = tcont_type->tp_new(tcont_type, empty_tuple, NULL);
        if (c != NULL && capi->init1(c, bootstrap, t) < 0)
            Py_CLEAR(c);
    }
    else {
        PyObject *args = PyTuple_Pack(2, bootstrap, t);
        if (args == NULL)
            return -1;
        c = tcont_type->tp_new(tcont_type, args, NULL);
        if (c != NULL && tcont_type->tp_init(c, args, NULL) < 0)
            Py_CLEAR(c);
        Py_DECREF(args);
    }
    if (c == NULL)
        return -1;
    set_slot(c, c_tasklet, t);
    accel_reg_weaken(t);
    *cont = c;
    return 1;
}

/* _unregister(self), and the dead tasklet's continulet forgets it (no
 * cycle left for the collector, see stackless/_lifetime.py) */
static void unregister_alive(PyObject *self)
{
    PyObject *c = slot(self, t_cont);
    if (c != NULL && Py_IS_TYPE(c, tcont_type))
        set_slot(c, c_tasklet, Py_None);
    accel_reg_remove(self);
}

static PyObject *py_unregister(PyObject *mod, PyObject *t)
{
    (void)mod;
    if (!is_tasklet(t)) {
        PyErr_SetString(PyExc_TypeError, "expected a tasklet");
        return NULL;
    }
    unregister_alive(t);
    Py_RETURN_NONE;
}

static PyMethodDef unregister_def = {"_unregister", py_unregister, METH_O,
    "Internal: the dead tasklet leaves its registry (C version)."};

static PyObject *tasklet_finish(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || args[2] != Py_None)
        return PyObject_Vectorcall(py_finish, args, (size_t)nargs, NULL);
    PyObject *ts = args[0], *self = args[1];
    /* what the tasklet holds goes first, while it still lives: the
     * finalizers this runs may use the scheduler */
    set_slot(self, t_func, Py_None);
    set_slot(self, t_context, Py_None);
    set_slot(self, t_tempval, Py_None);
    PyObject *rq = slot(ts, ts_rq);
    if (!Py_IS_TYPE(rq, deque_type) || Py_SIZE(rq) == 0)
        return PyObject_Vectorcall(py_finish, args, (size_t)nargs, NULL);
    PyObject *first = accel_rq_first(rq);
    Py_XDECREF(first);
    if (first != self)
        return first == NULL ? NULL : PyObject_Vectorcall(py_finish, args, (size_t)nargs, NULL);
    Py_INCREF(rq);
    PyObject *gone = deque_popleft(rq, NULL);
    if (gone == NULL) {
        Py_DECREF(rq);
        return NULL;
    }
    set_flag(self, t_scheduled, 0);
    set_flag(self, t_alive, 0);
    Py_DECREF(gone);                    /* self: its stack still holds it */
    /* with nothing left to run, the Python code picks what runs next */
    unregister_alive(self);
    PyObject *nxt = Py_SIZE(rq) > 0 && Py_IS_TYPE(rq, deque_type) ? accel_rq_first(rq)
        : PyObject_Vectorcall(py_finish, args, (size_t)nargs, NULL);
    Py_DECREF(rq);
    return nxt;
}

PyObject *accel_finish(PyObject *ts, PyObject *self)
{
    PyObject *args[3] = {ts, self, Py_None};
    return tasklet_finish(NULL, args, 3);
}

static PyMethodDef finish_def = {"_finish", (PyCFunction)(void (*)(void))tasklet_finish,
    METH_FASTCALL, "Make the dying tasklet dead and return the tasklet to resume (C version)."};

/* --- install ---------------------------------------------------------------- */

int accel_immutable(PyObject *v)
{
    return v == Py_None || PyBool_Check(v) || PyLong_CheckExact(v) || PyUnicode_CheckExact(v);
}

/* Run the Python _init_fields() on a probe and record what it stored in
 * the slots of the tasklet class and of its bases.  1 when the template
 * is usable. */
static int learn_template(PyObject *tasklet)
{
    PyObject *probe = PyBaseObject_Type.tp_new((PyTypeObject *)tasklet, empty_tuple, NULL);
    if (probe == NULL)
        return -1;
    PyObject *r = PyObject_CallMethod(probe, "_init_fields", "O", Py_None);
    if (r == NULL) {
        Py_DECREF(probe);
        return -1;
    }
    Py_DECREF(r);
    int ok = 1;
    for (PyTypeObject *c = (PyTypeObject *)tasklet; c != NULL && ok; c = c->tp_base)
        for (PyMemberDef *m = c->tp_members; m && m->name && ok; m++) {
            if (m->type == T_BOOL)      /* (a new instance's flags are 0) */
                ok = *((char *)probe + m->offset) == 0;
            else if (m->type == T_SHORT)
                ok = *(short *)((char *)probe + m->offset) == 0;
            if (m->type != T_OBJECT_EX || m->offset == t_ts)
                continue;
            PyObject *v = slot(probe, m->offset);
            if (v == NULL)
                continue;
            if (tpl_n == MAX_FIELDS || !accel_immutable(v))
                ok = 0;
            else {
                int overflow = 0;
                long n = PyLong_CheckExact(v) ? PyLong_AsLongAndOverflow(v, &overflow) : 1000;
                tpl_imm[tpl_n] = v == Py_None || PyBool_Check(v)
                                 || (!overflow && n >= -5 && n <= 256);
                tpl_off[tpl_n] = m->offset;
                tpl_val[tpl_n++] = Py_NewRef(v);
            }
        }
    Py_DECREF(probe);
    return ok;
}

/* replaced[def's name] = the builtin function of def */
static int add_function(PyObject *replaced, PyMethodDef *def)
{
    PyObject *f = PyCFunction_New(def, NULL);
    int rc = f == NULL ? -1 : PyDict_SetItemString(replaced, def->ml_name, f);
    Py_XDECREF(f);
    return rc;
}

static int put(PyObject *cls, PyMethodDef *def, PyObject **descr)
{
    PyObject *d = PyDescr_NewMethod((PyTypeObject *)cls, def);
    if (d == NULL || PyObject_SetAttrString(cls, def->ml_name, d) < 0) {
        Py_XDECREF(d);
        return -1;
    }
    if (descr != NULL)
        *descr = d;
    else
        Py_DECREF(d);
    return 0;
}

int tasklet_accel_install(PyObject *ns, PyObject *tasklet, Py_ssize_t rq_offset, PyObject *replaced)
{
    PyObject *tstate = NULL, *coll = NULL, *app = NULL, *pop = NULL;
    int rc = -1;
    tasklet_type = (PyTypeObject *)Py_NewRef(tasklet);
    ts_rq = rq_offset;
    if ((tstate = need(ns, "_ThreadState")) == NULL || (py_ts = need(ns, "_ts")) == NULL
            || (registry = need(ns, "_alive_registry")) == NULL
            || (tcont_type = (PyTypeObject *)need(ns, "_TaskletCont")) == NULL
            || (fresh_context = need(ns, "_FRESH_CONTEXT")) == NULL
            || (py_finish = need(ns, "_finish")) == NULL
            || (py_new = PyObject_GetAttrString(tasklet, "__new__")) == NULL
            || (py_init = PyObject_GetAttrString(tasklet, "__init__")) == NULL
            || (py_bind = PyObject_GetAttrString(tasklet, "bind")) == NULL
            || (py_setup = PyObject_GetAttrString(tasklet, "setup")) == NULL
            || (s_setup = PyUnicode_InternFromString("setup")) == NULL
            || (s_bind = PyUnicode_InternFromString("bind")) == NULL
            || (empty_tuple = PyTuple_New(0)) == NULL
            || (capi = cont_capi_import()) == NULL
            || (coll = PyImport_ImportModule("collections")) == NULL
            || (deque_type = (PyTypeObject *)PyObject_GetAttrString(coll, "deque")) == NULL
            || (app = PyObject_GetAttrString((PyObject *)deque_type, "append")) == NULL
            || (pop = PyObject_GetAttrString((PyObject *)deque_type, "popleft")) == NULL)
        goto done;
    if (!PyDict_Check(registry) || !PyFunction_Check(py_bind)
            || !Py_IS_TYPE(app, &PyMethodDescr_Type) || !Py_IS_TYPE(pop, &PyMethodDescr_Type)
            || ((PyMethodDescrObject *)app)->d_method->ml_flags != METH_O
            || ((PyMethodDescrObject *)pop)->d_method->ml_flags != METH_NOARGS) {
        rc = 0;         /* not what this code knows: keep the Python versions */
        goto done;
    }
    /* the Python fallbacks run hidden from trace functions (stackless_hide.c) */
    if (hide_in_place(&py_ts) < 0 || hide_in_place(&py_new) < 0 || hide_in_place(&py_init) < 0
            || hide_in_place(&py_setup) < 0 || hide_in_place(&py_finish) < 0)
        goto done;
    deque_append = ((PyMethodDescrObject *)app)->d_method->ml_meth;
    deque_popleft = ((PyMethodDescrObject *)pop)->d_method->ml_meth;
    if ((t_func = slot_offset(tasklet, "_func")) < 0 || (t_args = slot_offset(tasklet, "_args")) < 0
            || (t_kwargs = slot_offset(tasklet, "_kwargs")) < 0
            || (t_cont = slot_offset(tasklet, "_cont")) < 0 || (t_ts = slot_offset(tasklet, "_ts")) < 0
            || (t_tempval = slot_offset(tasklet, "_tempval")) < 0
            || (t_blocked = blocked_offset(tasklet)) < 0
            || (t_scheduled = flag_offset(tasklet, "_scheduled")) < 0
            || (t_alive = flag_offset(tasklet, "_alive")) < 0
            || (t_started = flag_offset(tasklet, "_started")) < 0
            || (t_context = slot_offset(tasklet, "_context")) < 0
            || (t_unrestorable = flag_offset(tasklet, "_unrestorable")) < 0
            || (ts_current = slot_offset(tstate, "current")) < 0
            || (c_tasklet = slot_offset((PyObject *)tcont_type, "tasklet")) < 0)
        goto done;
    if (!PyType_IsSubtype((PyTypeObject *)tasklet, &accel_flags_type)) {
        PyErr_SetString(PyExc_TypeError, "accelerator: the tasklet class is no TaskletFlags");
        goto done;
    }
    static const char *const flags[] = {"_blocked", "_scheduled", "_alive", "_started",
        "_is_main", "_atomic", "_ignore_nesting", "_block_trap", "_orphaned", "_unrestorable",
        "_base", NULL};
    accel_skip_flags_in_gc(ns, "_TaskletFlags", (PyTypeObject *)tasklet, flags);
    accel_fast_traverse((PyTypeObject *)tasklet, 0);
    accel_fast_dealloc((PyTypeObject *)tasklet);
    int usable = learn_template(tasklet);
    if (usable < 0)
        goto done;
    PyObject *newfn = NULL;
    if (usable) {
        newfn = PyCFunction_New(&new_def, NULL);
        if (newfn == NULL || PyObject_SetAttrString(tasklet, "__new__", newfn) < 0) {
            Py_XDECREF(newfn);
            goto done;
        }
        new_fn = newfn;         /* (kept) */
    }
    if (put(tasklet, &init_def, &init_descr) < 0 || put(tasklet, &setup_def, &setup_descr) < 0
            || put(tasklet, &call_def, NULL) < 0)
        goto done;
    ((PyTypeObject *)tasklet)->tp_call = tasklet_tp_call;     /* (after __call__'s slot update) */
    if (new_fn != NULL && (s_new = PyUnicode_InternFromString("__new__")) != NULL
            && (s_init = PyUnicode_InternFromString("__init__")) != NULL)
        ((PyTypeObject *)tasklet)->tp_vectorcall = tasklet_vectorcall;
    if (PyErr_Occurred())
        goto done;
    if (add_function(replaced, &finish_def) < 0)
        goto done;
    if (accel_registry_init(registry, tasklet, tstate) < 0)
        goto done;
    for (PyMethodDef *m = accel_registry_methods; m->ml_name != NULL; m++)
        if (add_function(replaced, m) < 0)
            goto done;
    if (add_function(replaced, &unregister_def) < 0)
        goto done;
    /* (a subclass made later inherits it; none exists: it is internal) */
    if (tcont_type->tp_finalize != tcont_finalize) {
        continulet_finalize = tcont_type->tp_finalize;
        if (continulet_finalize == NULL) {
            PyErr_SetString(PyExc_SystemError, "_TaskletCont has no finalizer");
            goto done;
        }
        tcont_type->tp_finalize = tcont_finalize;
    }
    /* its own slot only, directly on continulet */
    PyTypeObject *base = tcont_type->tp_base;
    if (tcont_type->tp_traverse != tcont_traverse && base != NULL
            && base->tp_traverse != NULL && !(base->tp_flags & Py_TPFLAGS_HEAPTYPE)
            && tcont_type->tp_dictoffset == base->tp_dictoffset
            && tcont_type->tp_weaklistoffset == base->tp_weaklistoffset
            && tcont_type->tp_basicsize == base->tp_basicsize + (Py_ssize_t)sizeof(PyObject *)
            && c_tasklet == base->tp_basicsize) {
        continulet_traverse = base->tp_traverse;
        tcont_type->tp_traverse = tcont_traverse;
        if (tcont_type->tp_del == NULL && base->tp_dealloc != NULL) {
            continulet_dealloc = base->tp_dealloc;
            tcont_type->tp_dealloc = tcont_dealloc;
        }
    }
    rc = 0;
done:
    Py_XDECREF(tstate);
    Py_XDECREF(coll);
    Py_XDECREF(app);
    Py_XDECREF(pop);
    return rc;
}
