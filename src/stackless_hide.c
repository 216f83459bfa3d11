/* _stackless_accel, part three: keeping stackless's own Python frames out
 * of trace and profile functions.
 *
 * Stackless's scheduler is C code, so sys.settrace()/sys.setprofile()
 * functions only ever see the user's frames and the c_call/c_return of
 * the API call.  The hot paths are C here too; the rest of the Python
 * reference code that the API runs is called *hidden*: with the thread's
 * `tracing` counter raised, the counter CPython (3.11+) raises while a
 * trace function runs, which suspends every trace and profile event (and
 * sys.monitoring).  _continuation saves that counter with each stack, so
 * a hidden operation that switches to another tasklet leaves that
 * tasklet traced as usual, and is hidden again when it resumes.
 *
 * The user's own code that hidden code calls (callbacks, context_run's
 * callable) must be traced again: hiding adds HIDE_UNIT, not 1, so that
 * a visible call can take exactly our part away, and knows whether it is
 * there.  A trace function's own 1 stays (its callees are never traced).
 *
 * A hidden function is a builtin function object whose self is the Python
 * function: called from Python it makes the c_call and c_return events
 * of a C function, as Stackless's do.  A hidden method is the same inside
 * an instancemethod, which binds like a function.
 */
#include <Python.h>
#include "stackless_accel.h"

#define HIDE_UNIT 0x10000

/* tstate->tracing is a field of the public PyThreadState of every
 * supported version; the Enter/Leave calls keep 3.11's cached flag
 * (cframe->use_tracing) in step with it.  n levels of hiding at a time. */
static void hide_enter(PyThreadState *ts, int n)
{
    ts->tracing += n * HIDE_UNIT - 1;
    PyThreadState_EnterTracing(ts);
}

static void hide_leave(PyThreadState *ts, int n)
{
    ts->tracing -= n * HIDE_UNIT - 1;
    PyThreadState_LeaveTracing(ts);
}

PyObject *call_hidden(PyObject *func, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyThreadState *ts = PyThreadState_Get();
    hide_enter(ts, 1);
    PyObject *r = PyObject_Vectorcall(func, args, nargsf, kwnames);
    hide_leave(ts, 1);
    return r;
}

/* every level of hiding goes (hidden code may call hidden API functions) */
PyObject *call_visible(PyObject *func, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyThreadState *ts = PyThreadState_Get();
    int n = ts->tracing / HIDE_UNIT;
    if (n == 0)
        return PyObject_Vectorcall(func, args, nargsf, kwnames);
    hide_leave(ts, n);
    PyObject *r = PyObject_Vectorcall(func, args, nargsf, kwnames);
    hide_enter(ts, n);
    return r;
}

/* --- hide(func) and _callback(func, *args) ---------------------------------- */

/* A keyword that func has no parameter for.  CPython's own error would name
 * the function by its __qualname__, which _hide_python_api extends with
 * ".__self__" (so that pickle finds the function again): raise it here
 * instead, worded as the pure-Python API's.  Returns -1 with it set. */
static int check_keywords(PyObject *func, PyObject *kwnames)
{
    PyObject *code = PyFunction_GET_CODE(func);
    PyObject *names = PyObject_GetAttrString(code, "co_varnames");
    PyObject *qualname = names == NULL ? NULL : PyObject_GetAttrString(func, "__qualname__");
    int r = -1;
    if (qualname == NULL || !PyTuple_Check(names) || !PyUnicode_Check(qualname))
        goto done;
    const PyCodeObject *co = (const PyCodeObject *)code;
    if (co->co_flags & CO_VARKEYWORDS) {
        r = 0;
        goto done;
    }
    Py_ssize_t first = co->co_posonlyargcount, end = co->co_argcount + co->co_kwonlyargcount;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        int found = 0;
        for (Py_ssize_t j = first; j < end && j < PyTuple_GET_SIZE(names) && !found; j++)
            if ((found = PyObject_RichCompareBool(key, PyTuple_GET_ITEM(names, j), Py_EQ)) < 0)
                goto done;
        if (!found) {
            Py_ssize_t n = PyUnicode_GET_LENGTH(qualname), cut = (Py_ssize_t)strlen(".__self__");
            PyObject *suffix = PyUnicode_FromString(".__self__");
            int tail = suffix == NULL ? -1 : (int)PyUnicode_Tailmatch(qualname, suffix, 0, n, 1);
            Py_XDECREF(suffix);
            if (tail < 0)
                goto done;
            PyObject *shown = PyUnicode_Substring(qualname, 0, tail ? n - cut : n);
            if (shown != NULL) {
                PyErr_Format(PyExc_TypeError, "%U() got an unexpected keyword argument '%U'",
                             shown, key);
                Py_DECREF(shown);
            }
            goto done;
        }
    }
    r = 0;
done:
    Py_XDECREF(names);
    Py_XDECREF(qualname);
    return r;
}

static PyObject *hidden_call(PyObject *func, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0 && PyFunction_Check(func)
            && check_keywords(func, kwnames) < 0)
        return NULL;
    return call_hidden(func, args, (size_t)nargs, kwnames);
}

static PyMethodDef fallback_def = {"hidden", (PyCFunction)(void (*)(void))hidden_call,
    METH_FASTCALL | METH_KEYWORDS, "A Python fallback of the accelerator, called hidden."};

int hide_in_place(PyObject **func)
{
    PyObject *h = PyCFunction_NewEx(&fallback_def, *func, NULL);
    if (h == NULL)
        return -1;
    Py_SETREF(*func, h);
    return 0;
}

/* hide(func, method=False): the hidden version of a Python function.  Its
 * PyMethodDef lives as long as the process (what is hidden is installed
 * once, at import). */
static PyObject *accel_hide(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyFunction_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hide(function, method=False)");
        return NULL;
    }
    PyObject *func = args[0];
    int method = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if (method < 0)
        return NULL;
    PyObject *name = PyObject_GetAttrString(func, "__name__");
    PyObject *doc = name == NULL ? NULL : PyObject_GetAttrString(func, "__doc__");
    PyObject *modname = doc == NULL ? NULL : PyObject_GetAttrString(func, "__module__");
    PyMethodDef *def = PyMem_RawCalloc(1, sizeof(PyMethodDef));
    const char *n = name == NULL || !PyUnicode_Check(name) ? NULL : PyUnicode_AsUTF8(name);
    const char *d = doc == NULL || !PyUnicode_Check(doc) ? NULL : PyUnicode_AsUTF8(doc);
    char *n_copy = n == NULL ? NULL : PyMem_RawMalloc(strlen(n) + 1);
    char *d_copy = d == NULL ? NULL : PyMem_RawMalloc(strlen(d) + 1);
    PyObject *r = NULL;
    if (modname == NULL || def == NULL || n_copy == NULL || (d != NULL && d_copy == NULL)) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        PyMem_RawFree(def);
        PyMem_RawFree(n_copy);
        PyMem_RawFree(d_copy);
        goto done;
    }
    strcpy(n_copy, n);
    if (d_copy != NULL)
        strcpy(d_copy, d);
    def->ml_name = n_copy;
    def->ml_meth = (PyCFunction)(void (*)(void))hidden_call;
    def->ml_flags = METH_FASTCALL | METH_KEYWORDS;
    def->ml_doc = d_copy;
    r = PyCFunction_NewEx(def, func, modname);
    if (r != NULL && method)
        Py_SETREF(r, PyInstanceMethod_New(r));
done:
    Py_XDECREF(name);
    Py_XDECREF(doc);
    Py_XDECREF(modname);
    return r;
}

int accel_is_hidden(PyObject *obj, PyObject *func)
{
    PyObject *f = obj != NULL && PyInstanceMethod_Check(obj) ? PyInstanceMethod_GET_FUNCTION(obj) : obj;
    return f != NULL && PyCFunction_Check(f) && PyCFunction_GET_SELF(f) == func
        && ((PyCFunctionObject *)f)->m_ml->ml_meth == (PyCFunction)(void (*)(void))hidden_call;
}

/* _callback(func, *args): call the user's func, traced even from hidden code */
static PyObject *accel_callback(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "_callback(func, *args)");
        return NULL;
    }
    return call_visible(args[0], args + 1, (size_t)(nargs - 1), kwnames);
}

PyMethodDef hide_methods[] = {
    {"hide", (PyCFunction)(void (*)(void))accel_hide, METH_FASTCALL,
     "hide(function, method=False): a builtin that calls function with tracing and\n"
     "profiling suspended (an instancemethod of it with method=True)."},
    {"_callback", (PyCFunction)(void (*)(void))accel_callback, METH_FASTCALL | METH_KEYWORDS,
     "_callback(func, *args): call the user's func, traced even from hidden code."},
    {NULL, NULL, 0, NULL},
};
