/* The package's own callbacks (gc.callbacks, finalizers, what runs after
 * a collection) must not lose an asynchronous exception.
 *
 * CPython gives an exception that comes out of a gc callback, a __del__ or
 * a weakref callback to sys.unraisablehook and goes on: a user's Ctrl-C
 * whose signal handler ran at a check of the eval breaker inside such a
 * callback's Python code would vanish, and the callback would stop half
 * way.  The package's callbacks report their own errors themselves (a
 * killed greenlet's, a killed tasklet's), so whatever comes out of one is
 * asynchronous: a signal handler's exception, raised at the callback's
 * entry or at any other check in it.  It is raised again at the next check
 * of the main thread, through a pending call (where it would have landed
 * had the callback not been running), and the callback, which did not
 * finish, is called again: each is written so that it can start over
 * (docs/design.md, "Exception safety").  Signal handlers run in the main
 * thread only; in another thread (PyThreadState_SetAsyncExc) or at
 * shutdown the exception is reported as before, and so are the exceptions
 * of the calls made again but the first one's. */
#include "continulet.h"

/* Calls of one callback in a row before its exceptions are reported as
 * before: a signal at every attempt means a timer faster than the
 * callback, which must not keep the collector spinning. */
#define DEFER_TRIES 8

/* The pending call: raise the exception (a reference it takes) here. */
static int reraise(void *exc)
{
    cps_restore_exception((PyObject *)exc);
    return -1;
}

/* Raise exc (taken) at the main thread's next check; 0 if it cannot be. */
static int defer(PyObject *exc)
{
    if (cps_main_thread() && !cps_finalizing() && Py_AddPendingCall(reraise, exc) == 0)
        return 1;
    cps_restore_exception(exc);
    return 0;
}

/* The exceptions are deferred once the calls are over: a pending call
 * made at once would run at the first check of the next call. */
PyObject *cont_call_deferring(PyObject *fn, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *caught[DEFER_TRIES];
    int n = 0;
    PyObject *r = NULL;
    while (n < DEFER_TRIES) {
        r = PyObject_Vectorcall(fn, args, nargs, NULL);
        if (r != NULL)
            break;
        if (!cps_main_thread() || cps_finalizing()) {
            PyErr_WriteUnraisable(fn);
            break;
        }
        PyObject *exc = cps_fetch_exception();
        if (exc == NULL)
            break;          /* (NULL without an exception: nothing to raise) */
        caught[n++] = exc;
    }
    /* the first one only: the others (signals during the calls made again)
       would land in the handler of the first one, a second Ctrl-C */
    for (int i = 0; i < n; i++)
        if (i > 0 || !defer(caught[i])) {
            if (i > 0)
                cps_restore_exception(caught[i]);
            PyErr_WriteUnraisable(fn);
        }
    return r;
}

/* fn's result, or None if it never returned */
static PyObject *deferring_call(PyObject *fn, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r = cont_call_deferring(fn, args, nargs);
    return r != NULL ? r : Py_NewRef(Py_None);
}

static PyMethodDef deferring_call_def = {
    "deferring", (PyCFunction)(void (*)(void))deferring_call, METH_FASTCALL,
    "Internal: calls the callback it wraps (see _continuation._deferring)."};

/* _deferring(fn): fn wrapped as above, as a C callable that binds like a
 * method (an instancemethod), for a class's __del__ or a continulet
 * subclass's __continulet_keep__: CPython (or src/module.c) then calls it
 * from C, and the first Python frame, fn's, is inside the wrapper. */
static PyObject *deferring(PyObject *module, PyObject *fn)
{
    (void)module;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "_deferring() argument must be callable");
        return NULL;
    }
    PyObject *call = PyCFunction_New(&deferring_call_def, fn);
    if (call == NULL)
        return NULL;
    PyObject *method = PyInstanceMethod_New(call);
    Py_DECREF(call);
    return method;
}

PyMethodDef cont_deferred_methods[] = {
    {"_deferring", deferring, METH_O,
     "_deferring(fn)\n--\n\nInternal: fn as a method for a finalizer of the package (it returns\n"
     "fn's result, None if it gave up): an exception\n"
     "that comes out of it is raised again at the main thread's next check\n"
     "and fn is called again (up to 8 times), instead of being lost."},
    {NULL, NULL, 0, NULL}
};
