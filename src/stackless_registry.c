/* The registry of a thread's live tasklets, with the accelerator: a
 * circular doubly linked list threaded through the tasklets (the link in
 * TaskletFlags, stackless_flags.c), whose head is a small Registry object,
 * the thread state's `alive` and _alive_registry[thread_id].
 *
 * It replaces stackless._lifetime's dict by id() (see that module for what
 * the registry is for): a dict entry, an int key and a weak reference per
 * tasklet cost ~70 B and ~700 instructions of every tasklet's life, and a
 * collection walked the dict.  Here a tasklet's registration is two
 * pointers inside it, made and undone in a few instructions.
 *
 * The list holds a started tasklet weakly, an unstarted one (or one that
 * __continulet_keep__ kept) strongly: "held" is then set, and the list owns
 * one reference to it.  A tasklet leaves the list when it dies, when its
 * thread's registry goes (the Registry's dealloc), when its continulet's
 * finalizer did not keep it (tcont_finalize, stackless_tasklet.c: it is
 * garbage), and at the latest in its own dealloc: the list never leads to
 * a freed tasklet.  No Python code runs while the list is changed.
 *
 * Why "held" is the low bit of the link's `prev`: a ninth flag byte in
 * TaskletFlags would cost 8 B per tasklet (and its pymalloc size class).
 * Links are pointers into objects, at least 8-byte aligned. */
#include <Python.h>
#include <stdint.h>
#include "slots.h"
#include "stackless_accel.h"

#define HELD ((uintptr_t)1)

static inline reg_link *prev_of(reg_link *n)
{
    return (reg_link *)(n->prev & ~HELD);
}

static inline int is_held(reg_link *n)
{
    return (int)(n->prev & HELD);
}

static inline reg_link *link_of(PyObject *t)
{
    return (reg_link *)((char *)t + accel_link_offset);
}

static inline PyObject *tasklet_of(reg_link *n)
{
    return (PyObject *)((char *)n - accel_link_offset);
}

typedef struct {
    PyObject_HEAD
    reg_link head;          /* its prev is never tagged */
} Registry;

static PyObject *alive_registry;        /* stackless._lifetime._alive_registry */
static Py_ssize_t off_ts, off_alive, off_thread_id;

/* Take n out of its list; the list's reference (if held) is the caller's */
static void unlink_node(reg_link *n)
{
    reg_link *p = prev_of(n);
    p->next = n->next;
    n->next->prev = (n->next->prev & HELD) | (uintptr_t)p;
    n->next = NULL;
    n->prev = 0;
}

static void registry_dealloc(PyObject *self)
{
    reg_link *head = &((Registry *)self)->head;
    /* one at a time, each out of the list before its reference goes: what
     * that runs may take others out (never puts any in: nothing else can
     * reach this registry any more) */
    while (head->next != head) {
        reg_link *n = head->next;
        int held = is_held(n);
        unlink_node(n);
        if (held)
            Py_DECREF(tasklet_of(n));
    }
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject registry_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_stackless_accel.Registry",
    .tp_basicsize = sizeof(Registry),
    .tp_dealloc = registry_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Internal: a thread's live tasklets (src/stackless_registry.c).",
};

int accel_registry_init(PyObject *registry, PyObject *tasklet, PyObject *tstate)
{
    alive_registry = registry;
    if ((off_ts = slot_offset(tasklet, "_ts")) < 0 || (off_alive = slot_offset(tstate, "alive")) < 0
            || (off_thread_id = slot_offset(tstate, "thread_id")) < 0)
        return -1;
    return PyType_Ready(&registry_type);
}

/* ts.alive, made the first time as _alive_registry.setdefault(thread_id,
 * Registry()) (borrowed; NULL with an error) */
static PyObject *registry_of(PyObject *ts)
{
    PyObject *r = slot(ts, off_alive);
    if (r != NULL && Py_IS_TYPE(r, &registry_type))
        return r;
    Registry *fresh = PyObject_New(Registry, &registry_type);
    if (fresh == NULL)
        return NULL;
    fresh->head.next = &fresh->head;
    fresh->head.prev = (uintptr_t)&fresh->head;
    r = PyDict_SetDefault(alive_registry, slot(ts, off_thread_id), (PyObject *)fresh);
    Py_DECREF(fresh);       /* (the dict holds the one it keeps) */
    if (r == NULL)
        return NULL;
    if (!Py_IS_TYPE(r, &registry_type)) {
        PyErr_SetString(PyExc_SystemError, "a thread's registry is no Registry");
        return NULL;
    }
    set_slot(ts, off_alive, r);
    return r;
}

/* The list takes a reference to t (n), unless it has one */
static void hold(reg_link *n, PyObject *t)
{
    if (!is_held(n)) {
        n->prev |= HELD;
        Py_INCREF(t);
    }
}

int accel_reg_add(PyObject *t, PyObject *ts)
{
    reg_link *n = link_of(t);
    if (n->next == NULL) {
        PyObject *r = registry_of(ts);
        if (r == NULL)
            return -1;
        reg_link *head = &((Registry *)r)->head, *last = prev_of(head);
        n->next = head;
        n->prev = (uintptr_t)last;
        last->next = n;
        head->prev = (uintptr_t)n;
    }
    hold(n, t);
    return 0;
}

void accel_reg_remove(PyObject *t)
{
    reg_link *n = link_of(t);
    if (n->next == NULL)
        return;
    int held = is_held(n);
    unlink_node(n);
    if (held)
        Py_DECREF(t);       /* (the caller's reference keeps it) */
}

void accel_reg_weaken(PyObject *t)
{
    reg_link *n = link_of(t);
    if (n->next != NULL && is_held(n)) {
        n->prev &= ~HELD;
        Py_DECREF(t);       /* (the caller's reference keeps it) */
    }
}

void accel_reg_forget_weak(PyObject *t)
{
    reg_link *n = link_of(t);
    if (n->next != NULL && !is_held(n))
        unlink_node(n);
}

void accel_reg_dealloc(PyObject *t)
{
    reg_link *n = link_of(t);
    if (n->next != NULL)
        unlink_node(n);     /* (weak: a held one is not freed) */
}

/* --- the Python functions of stackless._lifetime it replaces --------------- */

static int check_tasklet(PyObject *t)
{
    if (PyObject_TypeCheck(t, &accel_flags_type))
        return 0;
    PyErr_SetString(PyExc_TypeError, "expected a tasklet");
    return -1;
}

static PyObject *py_register(PyObject *mod, PyObject *t)
{
    (void)mod;
    if (check_tasklet(t) < 0)
        return NULL;
    PyObject *ts = slot(t, off_ts);
    if (ts == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_ts");
        return NULL;
    }
    Py_INCREF(ts);
    int rc = accel_reg_add(t, ts);
    Py_DECREF(ts);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *py_weaken(PyObject *mod, PyObject *t)
{
    (void)mod;
    if (check_tasklet(t) < 0)
        return NULL;
    accel_reg_weaken(t);
    Py_RETURN_NONE;
}

static PyObject *py_hold(PyObject *mod, PyObject *t)
{
    (void)mod;
    if (check_tasklet(t) < 0)
        return NULL;
    reg_link *n = link_of(t);
    if (n->next == NULL)
        Py_RETURN_FALSE;
    hold(n, t);
    Py_RETURN_TRUE;
}

/* _live_tasklets(thread_id): in the order they were bound.  One whose
 * count is 0 is being freed (its dealloc takes it out, after its slots):
 * it is left out, never revived. */
static PyObject *py_live_tasklets(PyObject *mod, PyObject *tid)
{
    (void)mod;
    PyObject *r = PyDict_GetItemWithError(alive_registry, tid);
    PyObject *out = PyList_New(0);
    if (out == NULL || r == NULL || !Py_IS_TYPE(r, &registry_type))
        return out == NULL || PyErr_Occurred() ? (Py_XDECREF(out), NULL) : out;
    reg_link *head = &((Registry *)r)->head;
    for (reg_link *n = head->next; n != head; n = n->next) {
        PyObject *t = tasklet_of(n);
        /* (the append runs no Python code: the list cannot change) */
        if (Py_REFCNT(t) > 0 && PyList_Append(out, t) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

PyMethodDef accel_registry_methods[] = {
    {"_register", py_register, METH_O, "Internal: its thread's registry holds the tasklet."},
    {"_weaken", py_weaken, METH_O, "Internal: its registry holds the started tasklet weakly."},
    {"_hold", py_hold, METH_O, "Internal: its registry holds the tasklet strongly, if at all."},
    {"_live_tasklets", py_live_tasklets, METH_O, "The live tasklets of a thread (by its id)."},
    {NULL, NULL, 0, NULL},
};
