/* Helpers shared by the optional accelerators (_stackless_accel,
 * _greenlet_accel): direct access to the __slots__ of the pure-Python
 * classes they speed up, and calls back into the Python reference code.
 * Each accelerator is its own extension module and gets its own copy. */
#ifndef CONT_SLOTS_H
#define CONT_SLOTS_H

#include <Python.h>
#include <structmember.h>
#include <stdint.h>

/* For the small helpers of the hot paths: always inlined, whatever the
 * compiler's budget (on 3.14 the bigger refcounting code of Py_INCREF and
 * Py_DECREF made gcc call them out of line, a call per slot access). */
#define CONT_HOT static inline __attribute__((always_inline))

/* For the rare branches of a function whose C frame stays on a suspended
 * tasklet's stack: kept out of line, so that their locals (argument
 * arrays of calls) do not enlarge that frame, which every switch of the
 * tasklet copies. */
#define OUT_OF_LINE __attribute__((noinline))

/* Py_XDECREF, always inlined: on 3.14 gcc made Py_XDECREF an out-of-line
 * function for the channel operations, a call per reference dropped
 * (~170 instructions per handoff). */
CONT_HOT void xdecref(PyObject *o)
{
    if (o != NULL)
        Py_DECREF(o);
}

/* The object in slot `off` of o (borrowed; NULL if unset). */
CONT_HOT PyObject *slot(PyObject *o, Py_ssize_t off)
{
    return *(PyObject **)((char *)o + off);
}

CONT_HOT void set_slot(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject **p = (PyObject **)((char *)o + off);
    PyObject *old = *p;
    *p = Py_NewRef(v);
    Py_XDECREF(old);
}

/* Py_NewRef(v) for None, True, False and the small ints (-5..256): those
 * are immortal on 3.12+, whose Py_INCREF tests that and then leaves them
 * alone (on 3.14 three instructions a time, a few dozen per channel
 * operation); 3.11 counts their references like any object's. */
CONT_HOT PyObject *imm_ref(PyObject *v)
{
#if PY_VERSION_HEX >= 0x030C0000
    return v;
#else
    return Py_NewRef(v);
#endif
}

/* Py_DECREF(v) for such a v */
CONT_HOT void imm_drop(PyObject *v)
{
#if PY_VERSION_HEX >= 0x030C0000
    (void)v;
#else
    Py_DECREF(v);
#endif
}

/* Py_NewRef and Py_DECREF for objects that are known to be mortal heap
 * objects (instances of stackless's classes, deques): on 3.12+ without
 * the immortality test of the macros, which costs ~3 instructions a
 * reference there and is always false for them.  Debug builds (total
 * reference counts) and free-threaded ones use the macros. */
#if PY_VERSION_HEX >= 0x030C0000 && !defined(Py_REF_DEBUG) && !defined(Py_GIL_DISABLED)
#define CONT_RAW_REFS 1
#endif

CONT_HOT PyObject *held_ref(PyObject *o)
{
#ifdef CONT_RAW_REFS
    o->ob_refcnt++;
    return o;
#else
    return Py_NewRef(o);
#endif
}

CONT_HOT void held_drop(PyObject *o)
{
#ifdef CONT_RAW_REFS
    if (--o->ob_refcnt == 0)
        _Py_Dealloc(o);
#else
    Py_DECREF(o);
#endif
}

CONT_HOT void held_xdrop(PyObject *o)
{
    if (o != NULL)
        held_drop(o);
}

/* set_slot(o, off, v) for such a v */
CONT_HOT void set_slot_imm(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject **p = (PyObject **)((char *)o + off);
    PyObject *old = *p;
    *p = imm_ref(v);
    Py_XDECREF(old);
}

/* The slot's old value, replaced by v: the caller drops it later. */
CONT_HOT PyObject *swap_slot(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject **p = (PyObject **)((char *)o + off);
    PyObject *old = *p;
    *p = Py_NewRef(v);
    return old;
}

/* swap_slot(o, off, v) for a v that imm_ref() takes */
CONT_HOT PyObject *swap_slot_imm(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject **p = (PyObject **)((char *)o + off);
    PyObject *old = *p;
    *p = imm_ref(v);
    return old;
}

/* Truth of a slot that must be set; -1 on error. */
CONT_HOT int slot_true(PyObject *o, Py_ssize_t off)
{
    PyObject *v = slot(o, off);
    if (v == Py_False || v == Py_None)     /* the usual values, without a call */
        return 0;
    if (v == Py_True)
        return 1;
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "accelerator: a slot the Python code sets is unset");
        return -1;
    }
    return PyObject_IsTrue(v);
}

/* The offset of the writable member `name` of class cls whose type is
 * `type` (T_OBJECT_EX: an object slot; T_BOOL: a C flag), read from its
 * member descriptor (subclasses keep it); -1 with TypeError if the
 * attribute is not such a member. */
static inline Py_ssize_t member_offset(PyObject *cls, const char *name, int type)
{
    PyObject *d = PyObject_GetAttrString(cls, name);
    if (d == NULL)
        return -1;
    Py_ssize_t off = -1;
    if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == type && !(m->flags & READONLY))
            off = m->offset;
    }
    Py_DECREF(d);
    if (off < 0)
        PyErr_Format(PyExc_TypeError, "accelerator: %R.%s is not a %s", cls, name,
                     type == T_OBJECT_EX ? "slot" : "C member of the expected type");
    return off;
}

/* The offset of the writable object slot `name` of class cls */
static inline Py_ssize_t slot_offset(PyObject *cls, const char *name)
{
    return member_offset(cls, name, T_OBJECT_EX);
}

/* ns[name] (new reference), or NULL with KeyError. */
static inline PyObject *need(PyObject *ns, const char *name)
{
    PyObject *v = PyDict_GetItemString(ns, name);
    if (v == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_KeyError, "accelerator: the Python module has no %s", name);
    return Py_XNewRef(v);
}

/* The Python original of a method, called with the same arguments. */
static inline PyObject *call_bound(PyObject *func, PyObject *self, PyObject *const *args,
                            Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *bound = PyMethod_New(func, self);
    if (bound == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(bound, args, (size_t)nargs, kwnames);
    Py_DECREF(bound);
    return r;
}

/* The running thread's state object of the Python code, `local.<name>`
 * of a threading-local object that the Python code sets once per thread.
 * The last one looked up is cached with the id of its CPython thread
 * state (ids are never reused).  The cache is one plain global, guarded by
 * the GIL: a thread-local variable costs a __tls_get_addr call per access
 * in a shared library, and a thread that takes the GIL over only pays one
 * lookup.  The cache holds a strong reference until forget_thread() or
 * until another thread's state replaces it. */
static uint64_t tl_tstate_id;
static PyObject *tl_state;

/* The lookup when the cache misses (another thread, or the first time) */
static __attribute__((noinline)) PyObject *thread_state_lookup(PyObject *local, PyObject *name,
                                                             uint64_t id)
{
    PyObject *st = PyObject_GetAttr(local, name);
    if (st == NULL || st == Py_None) {
        if (st == NULL && PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();
        Py_XDECREF(st);
        return NULL;
    }
    Py_XSETREF(tl_state, Py_NewRef(st));
    tl_tstate_id = id;
    return st;
}

CONT_HOT PyObject *thread_state_of(PyObject *local, PyObject *name)
{
    /* PyThreadState_GetID() without its call: `id` is a public field */
    uint64_t id = PyThreadState_Get()->id;
    if (tl_state != NULL && tl_tstate_id == id)
        return held_ref(tl_state);
    return thread_state_lookup(local, name, id);
}

/* Module function: the Python code's state for this thread is going away. */
static inline PyObject *forget_thread(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    if (tl_tstate_id == PyThreadState_GetID(PyThreadState_Get())) {
        Py_CLEAR(tl_state);
        tl_tstate_id = 0;
    }
    Py_RETURN_NONE;
}

#endif
