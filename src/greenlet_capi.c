/* greenlet's public C API for stackless.greenlet: the capsule
 * `greenlet._C_API` that C extensions load with PyGreenlet_Import().
 *
 * The capsule is a table of 12 pointers, in the order greenlet's C API
 * documents: the greenlet type, greenlet.error, greenlet.GreenletExit, then
 * New, GetCurrent, Throw, Switch, SetParent, MAIN, STARTED, ACTIVE and
 * GetParent.  Every function here goes through the Python API of the
 * emulation (the same code a Python caller runs), so it behaves the same
 * with and without the accelerator.  The greenlet type's instance layout is
 * not greenlet's PyGreenlet struct: extensions that read its fields rather
 * than calling these functions do not work.
 */
#include <Python.h>
#include "greenlet_capi.h"

#define API_POINTERS 12

static void *api[API_POINTERS];
static PyObject *ns;                    /* stackless.greenlet's globals */
static PyObject *s_run, *s_parent, *s_switch, *s_throw, *s_gl_main, *s_gl_state;

static PyObject *global(const char *name)
{
    PyObject *v = PyDict_GetItemString(ns, name);     /* borrowed */
    if (v == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_RuntimeError, "greenlet C API: stackless.greenlet has no %s", name);
    return v;
}

static PyObject *api_new(PyObject *run, PyObject *parent)
{
    PyObject *type = global("greenlet");
    if (type == NULL)
        return NULL;
    PyObject *kwargs = PyDict_New();
    if (kwargs == NULL)
        return NULL;
    if ((run != NULL && PyDict_SetItem(kwargs, s_run, run) < 0)
            || (parent != NULL && PyDict_SetItem(kwargs, s_parent, parent) < 0)) {
        Py_DECREF(kwargs);
        return NULL;
    }
    PyObject *args = PyTuple_New(0);
    PyObject *g = args != NULL ? PyObject_Call(type, args, kwargs) : NULL;
    Py_XDECREF(args);
    Py_DECREF(kwargs);
    return g;
}

static PyObject *api_getcurrent(void)
{
    /* looked up at each call: the accelerator replaces it */
    PyObject *f = global("getcurrent");
    return f != NULL ? PyObject_CallNoArgs(f) : NULL;
}

static PyObject *api_throw(PyObject *g, PyObject *typ, PyObject *val, PyObject *tb)
{
    PyObject *args[4] = {g, typ, val != NULL ? val : Py_None, tb != NULL ? tb : Py_None};
    return PyObject_VectorcallMethod(s_throw, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static PyObject *api_switch(PyObject *g, PyObject *args, PyObject *kwargs)
{
    PyObject *method = PyObject_GetAttr(g, s_switch);
    if (method == NULL)
        return NULL;
    PyObject *empty = args == NULL ? PyTuple_New(0) : NULL;
    PyObject *r = NULL;
    if (args != NULL || empty != NULL)
        r = PyObject_Call(method, args != NULL ? args : empty, kwargs);
    Py_XDECREF(empty);
    Py_DECREF(method);
    return r;
}

static int api_setparent(PyObject *g, PyObject *parent)
{
    return PyObject_SetAttr(g, s_parent, parent);
}

/* The predicates cannot report errors: an error counts as false. */
static int truth(PyObject *v)
{
    int r = v != NULL ? PyObject_IsTrue(v) : -1;
    Py_XDECREF(v);
    if (r < 0) {
        PyErr_Clear();
        return 0;
    }
    return r;
}

static int api_main(PyObject *g)
{
    return truth(PyObject_GetAttr(g, s_gl_main));
}

static int api_started(PyObject *g)
{
    /* the emulation's states: 0 unstarted, 1 active, 2 dead */
    PyObject *state = PyObject_GetAttr(g, s_gl_state);
    long s = state != NULL ? PyLong_AsLong(state) : -1;
    Py_XDECREF(state);
    if (s < 0) {
        PyErr_Clear();
        return 0;
    }
    return s != 0;
}

static int api_active(PyObject *g)
{
    return truth(Py_NewRef(g));     /* bool(g): started and not dead */
}

static PyObject *api_getparent(PyObject *g)
{
    PyObject *p = PyObject_GetAttr(g, s_parent);
    if (p == Py_None) {             /* a main greenlet: NULL, no error */
        Py_DECREF(p);
        return NULL;
    }
    return p;
}

PyObject *greenlet_capi_capsule(PyObject *globals)
{
    if (!PyDict_Check(globals)) {
        PyErr_SetString(PyExc_TypeError, "c_api(globals of stackless.greenlet)");
        return NULL;
    }
    if (ns == NULL) {
        if ((s_run = PyUnicode_InternFromString("run")) == NULL
                || (s_parent = PyUnicode_InternFromString("parent")) == NULL
                || (s_switch = PyUnicode_InternFromString("switch")) == NULL
                || (s_throw = PyUnicode_InternFromString("throw")) == NULL
                || (s_gl_main = PyUnicode_InternFromString("_gl_main")) == NULL
                || (s_gl_state = PyUnicode_InternFromString("_gl_state")) == NULL)
            return NULL;
        PyObject *type = PyDict_GetItemString(globals, "greenlet");
        PyObject *error = PyDict_GetItemString(globals, "error");
        PyObject *exit = PyDict_GetItemString(globals, "GreenletExit");
        if (type == NULL || error == NULL || exit == NULL || !PyType_Check(type)) {
            PyErr_SetString(PyExc_TypeError, "c_api(): not the globals of stackless.greenlet");
            return NULL;
        }
        /* kept for the life of the process, as the C greenlet's are */
        ns = Py_NewRef(globals);
        api[0] = Py_NewRef(type);
        api[1] = Py_NewRef(error);
        api[2] = Py_NewRef(exit);
        api[3] = (void *)api_new;
        api[4] = (void *)api_getcurrent;
        api[5] = (void *)api_throw;
        api[6] = (void *)api_switch;
        api[7] = (void *)api_setparent;
        api[8] = (void *)api_main;
        api[9] = (void *)api_started;
        api[10] = (void *)api_active;
        api[11] = (void *)api_getparent;
    }
    else if (globals != ns) {
        PyErr_SetString(PyExc_RuntimeError, "greenlet C API: made for another module already");
        return NULL;
    }
    return PyCapsule_New(api, "greenlet._C_API", NULL);
}
