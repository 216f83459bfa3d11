/* The C API that _continuation exports to the accelerators
 * (_stackless_accel, _greenlet_accel) as the capsule
 * "_continuation._C_API": a switch without the method-call machinery
 * (argument parsing, bound-method vectorcall), which is most of the cost
 * of a switch that starts from C. */
#ifndef CONT_CAPI_H
#define CONT_CAPI_H

#include <Python.h>

#define CONT_CAPI_NAME "_continuation._C_API"
#define CONT_CAPI_VERSION 5

/* What a C caller runs once its switch_then() returns: then(result, a, b),
 * whose result is switch_then()'s (see switch_then). */
typedef PyObject *(*cont_then_fn)(PyObject *result, PyObject *a, PyObject *b);

typedef struct {
    int version;                    /* CONT_CAPI_VERSION */
    PyTypeObject *continulet_type;
    /* c.switch(value, to=to): c must be a continulet (exact type or
     * subclass), value and to may be NULL (None); same result and errors
     * as the method. */
    PyObject *(*switch_to)(PyObject *c, PyObject *value, PyObject *to);
    /* 1 when the running thread may switch now, 0 while it collects
     * garbage (when switch_to would raise RuntimeError) */
    int (*may_switch)(void);
    /* c.switch(to=to) as the tail of a Python-level call of C code, which
     * got the fast-call arguments [args, end) (NULL, NULL if none): while
     * the stack is suspended the GC sees what the calling frame holds on
     * its value stack, and `held` (borrowed, may be NULL), a reference
     * that the C code keeps in a C local until the switch returns.  The
     * GC cannot see C locals: unreported, such references make whatever
     * they hold look referenced from outside (a dropped paused tasklet
     * would never be found, stackless/_lifetime.py). */
    PyObject *(*switch_in_call)(PyObject *c, PyObject *to, PyObject *const *args,
                                PyObject *const *end, PyObject *held);
    /* c.__init__(callable, arg) for a continulet whose class has
     * continulet's own __init__ (the caller checks): 0, or -1 with the
     * method's error */
    int (*init1)(PyObject *c, PyObject *callable, PyObject *arg);
    /* then(c.switch(to=to), a, b), run by the switch itself: a C function
     * whose work after the switch is only that call can end with
     * `return switch_then(...)`, a tail call, and leave no C frame of its
     * own under the switching stack while it is suspended (that stack is
     * copied at every switch).  a and b stay on the suspended stack
     * meanwhile, like the C locals they replace (references the caller
     * owned stay owned: `then` drops them); `then` also runs when no
     * switch happened, with the error (NULL) or the value. */
    PyObject *(*switch_then)(PyObject *c, PyObject *to, cont_then_fn then, PyObject *a,
                             PyObject *b);
    /* the running stack's contextvars context, borrowed; NULL while it
     * has none yet (CPython makes one when code first needs it) */
    PyObject *(*current_context)(void);
} cont_capi;

/* The API, or NULL with an exception (import it once, at install time). */
static inline const cont_capi *cont_capi_import(void)
{
    const cont_capi *api = (const cont_capi *)PyCapsule_Import(CONT_CAPI_NAME, 0);
    if (api != NULL && api->version != CONT_CAPI_VERSION) {
        PyErr_SetString(PyExc_ImportError, "_continuation: C API version mismatch");
        return NULL;
    }
    return api;
}

#endif
