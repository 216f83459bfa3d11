/* _greenlet_accel: optional C version of the hot path of stackless.greenlet.
 *
 * The pure-Python emulation (stackless/greenlet/__init__.py) is the
 * reference.  install() replaces greenlet.switch and getcurrent() with the
 * functions below.  They do what the Python code does in the usual case:
 * a switch between two live greenlets of the running thread, with
 * positional arguments, no tracer and no deferred kills.  Everything else
 * goes to the Python code, before anything has changed, or to the same
 * Python helpers (_refused, _after, _stripped) that the Python switch calls
 * once the continulet switch is over.
 *
 * Like the C greenlet, this switch() has no Python frame: tracers and
 * profilers see it as a C call, which is what the Python version works hard
 * to imitate (_hide.py).
 */
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include "slots.h"
#include "greenlet_capi.h"
#include "capi.h"

static PyObject *local;                 /* the module's _tls (a _thread._local) */
static PyObject *greenlet_type, *cont_type, *kw_to, *s_ts, *s_switch;
static const cont_capi *capi;           /* _continuation's C switch */
static PyObject *py_switch, *py_getcurrent, *py_recover, *py_after, *py_stripped;
static Py_ssize_t g_c, g_ts, g_top, g_state;                 /* greenlet slots */
static Py_ssize_t ts_current, ts_slow, ts_origin, ts_kills;  /* _ThreadState slots */
static int installed;

/* The running thread's _ThreadState (new reference), or NULL without an
 * exception before the Python code has made one. */
static PyObject *thread_state(void)
{
    return thread_state_of(local, s_ts);
}



static PyObject *fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static void raise_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

static PyObject *tuple_of(PyObject *const *items, Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    if (t != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            PyTuple_SET_ITEM(t, i, Py_NewRef(items[i]));
    return t;
}

/* (value, exc) from _after(): the value, or NULL with exc raised */
static PyObject *settle(PyObject *pair)
{
    if (pair == NULL)
        return NULL;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_SystemError, "_greenlet_accel: _after() returned no pair");
        return NULL;
    }
    PyObject *value = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
    PyObject *exc = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    Py_DECREF(pair);
    if (exc == Py_None) {
        Py_DECREF(exc);
        return value;
    }
    Py_DECREF(value);
    PyObject *stripped = PyObject_CallOneArg(py_stripped, exc);
    Py_DECREF(exc);
    if (stripped != NULL)
        raise_exception(stripped);
    return NULL;
}

/* _recover(ts, mc, self, exc) (steals exc): the outcome of a switch that
 * raised.  Called a second time with the new exception if an asynchronous
 * one (a signal) lands in the Python code of the first call, which may
 * have left its work half-done (see _recover). */
static PyObject *recover(PyObject *ts, PyObject *mc, PyObject *self, PyObject *exc)
{
    for (int tries = 0; ; tries++) {
        PyObject *args[4] = {ts, mc, self, exc};
        PyObject *pair = PyObject_Vectorcall(py_recover, args, 4, NULL);
        Py_DECREF(exc);
        if (pair != NULL || tries == 1)
            return pair;
        exc = fetch_exception();
    }
}

static PyObject *greenlet_switch(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    PyObject *ts = NULL;
    PyObject *state = slot(self, g_state);
    if ((kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) || (ts = thread_state()) == NULL
            || slot(self, g_ts) != ts || state == NULL || !PyLong_CheckExact(state)
            || PyLong_AsLong(state) != 1
            || !PyObject_TypeCheck(slot(ts, ts_current), (PyTypeObject *)greenlet_type)) {
        Py_XDECREF(ts);
        if (PyErr_Occurred())
            return NULL;
        return call_bound(py_switch, self, args, nargs, kwnames);
    }
    PyObject *value = nargs == 1 ? Py_NewRef(args[0]) : tuple_of(args, nargs);
    if (value == NULL) {
        Py_DECREF(ts);
        return NULL;
    }
    PyObject *cur = slot(ts, ts_current);
    if (cur == self) {
        Py_DECREF(ts);
        return value;
    }
    Py_INCREF(cur);
    PyObject *mc = Py_NewRef(slot(cur, g_c));
    PyFrameObject *frame = PyEval_GetFrame();
    set_slot(cur, g_top, frame != NULL ? (PyObject *)frame : Py_None);
    int slow = slot_true(ts, ts_slow);
    if (slow < 0) {
        Py_DECREF(cur);
        Py_DECREF(mc);
        Py_DECREF(value);
        Py_DECREF(ts);
        return NULL;
    }
    if (slow)
        set_slot(ts, ts_origin, cur);
    Py_DECREF(cur);                 /* the suspended stack must not hold its greenlet */
    set_slot(ts, ts_current, self);
    PyObject *target = slot(self, g_c);
    /* While this greenlet is suspended, this C frame holds no reference to
     * mc, target or ts: what a C stack holds, no collector sees, and a stack
     * that is never resumed (its thread has exited) would keep them, and
     * all their stacks, forever.  They stay alive anyway while they matter:
     * the thread state keeps the continulet of each live greenlet (and the
     * main greenlet its own), the accelerator's cache keeps ts, and self
     * (held by our caller) keeps target until the switch. */
    Py_DECREF(mc);
    Py_DECREF(ts);
    PyObject *call[3] = {mc, value, target};
    PyObject *r = Py_IS_TYPE(mc, (PyTypeObject *)cont_type)
        ? capi->switch_to(mc, value, target)
        : PyObject_VectorcallMethod(s_switch, call,
                                    2 | PY_VECTORCALL_ARGUMENTS_OFFSET, kw_to);
    Py_DECREF(value);
    /* resumed: take them back (target is whatever self holds now) */
    Py_INCREF(ts);
    Py_INCREF(mc);
    target = Py_NewRef(slot(self, g_c));
    PyObject *result = NULL, *pair = NULL;
    if (r == NULL) {
        pair = recover(ts, mc, self, fetch_exception());
    }
    else {
        PyObject *now = slot(ts, ts_current);
        int fast = PyObject_TypeCheck(now, (PyTypeObject *)greenlet_type) && slot(now, g_c) == mc
            ? slot_true(ts, ts_slow) : 1;
        if (fast == 0) {
            set_slot(slot(ts, ts_current), g_top, Py_None);
            result = r;
            goto done;
        }
        if (fast > 0) {
            PyObject *after_args[4] = {ts, mc, r, Py_None};
            pair = PyObject_Vectorcall(py_after, after_args, 4, NULL);
            if (pair == NULL)
                pair = recover(ts, mc, self, fetch_exception());
        }
        Py_DECREF(r);
        if (fast < 0)
            goto done;
    }
    result = settle(pair);
done:
    Py_DECREF(target);
    Py_DECREF(mc);
    Py_DECREF(ts);
    return result;
}

static PyObject *getcurrent(PyObject *mod, PyObject *unused)
{
    /* the Python code raises the error of a finalizing interpreter */
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_IsFinalizing())
#else
    if (_Py_IsFinalizing())
#endif
        return PyObject_CallNoArgs(py_getcurrent);
    PyObject *ts = thread_state();
    if (ts == NULL)
        return PyErr_Occurred() ? NULL : PyObject_CallNoArgs(py_getcurrent);
    PyObject *kills = slot(ts, ts_kills);
    if (kills == NULL || !PyList_CheckExact(kills) || PyList_GET_SIZE(kills) != 0) {
        Py_DECREF(ts);
        return PyObject_CallNoArgs(py_getcurrent);
    }
    PyObject *cur = Py_NewRef(slot(ts, ts_current));
    Py_DECREF(ts);
    return cur;
}

/* --- install(namespace) ---------------------------------------------------- */


static PyMethodDef switch_def = {"switch", (PyCFunction)(void (*)(void))greenlet_switch,
    METH_FASTCALL | METH_KEYWORDS,
    "Switch to this greenlet; the arguments become the value returned by the switch() "
    "it is suspended in (or run()'s arguments).  Returns what is sent back (C version)."};

static PyObject *install(PyObject *mod, PyObject *ns)
{
    if (!PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "install(globals of stackless.greenlet)");
        return NULL;
    }
    if (installed) {
        PyErr_SetString(PyExc_RuntimeError, "_greenlet_accel is installed already");
        return NULL;
    }
    PyObject *greenlet = NULL, *tstate = NULL, *descr = NULL, *gc = NULL;
    if ((greenlet = need(ns, "greenlet")) == NULL || (tstate = need(ns, "_ThreadState")) == NULL
            || (local = need(ns, "_tls")) == NULL || (cont_type = need(ns, "_Cont")) == NULL
            || (py_getcurrent = need(ns, "getcurrent")) == NULL
            || (py_recover = need(ns, "_recover")) == NULL || (py_after = need(ns, "_after")) == NULL
            || (py_stripped = need(ns, "_stripped")) == NULL
            || (py_switch = PyObject_GetAttrString(greenlet, "switch")) == NULL
            || (capi = cont_capi_import()) == NULL)
        goto fail;
    if (!PyType_Check(cont_type) || !PyType_IsSubtype((PyTypeObject *)cont_type, capi->continulet_type)) {
        PyErr_SetString(PyExc_TypeError, "_greenlet_accel: _Cont is not a continulet class");
        goto fail;
    }
    if ((g_c = slot_offset(greenlet, "_gl_c")) < 0 || (g_ts = slot_offset(greenlet, "_gl_ts")) < 0
            || (g_top = slot_offset(greenlet, "_gl_top")) < 0
            || (g_state = slot_offset(greenlet, "_gl_state")) < 0
            || (ts_current = slot_offset(tstate, "current")) < 0
            || (ts_slow = slot_offset(tstate, "slow")) < 0
            || (ts_origin = slot_offset(tstate, "origin")) < 0
            || (ts_kills = slot_offset(tstate, "kills")) < 0)
        goto fail;
    if ((s_ts = PyUnicode_InternFromString("ts")) == NULL
            || (s_switch = PyUnicode_InternFromString("switch")) == NULL || (kw_to = Py_BuildValue("(s)", "to")) == NULL)
        goto fail;
    if ((descr = PyDescr_NewMethod((PyTypeObject *)greenlet, &switch_def)) == NULL
            || PyObject_SetAttrString(greenlet, "switch", descr) < 0
            || (gc = PyObject_GetAttrString(mod, "getcurrent")) == NULL
            || PyDict_SetItemString(ns, "getcurrent", gc) < 0)
        goto fail;
    installed = 1;
    greenlet_type = greenlet;       /* kept */
    Py_DECREF(descr);
    Py_DECREF(gc);
    Py_DECREF(tstate);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(descr);
    Py_XDECREF(gc);
    Py_XDECREF(greenlet);
    Py_XDECREF(tstate);
    return NULL;
}

static PyObject *c_api(PyObject *mod, PyObject *ns)
{
    return greenlet_capi_capsule(ns);
}

static PyMethodDef methods[] = {
    {"c_api", c_api, METH_O,
     "c_api(globals): the greenlet._C_API capsule (greenlet's C API) for stackless.greenlet."},
    {"install", install, METH_O,
     "install(globals): replace greenlet.switch and getcurrent() with the C versions."},
    {"getcurrent", getcurrent, METH_NOARGS, "The greenlet running in the calling thread (C version)."},
    {"forget_thread", forget_thread, METH_NOARGS,
     "The running thread's greenlet state is going away: drop the cached reference."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_greenlet_accel",
    .m_doc = "Optional C version of stackless.greenlet's switch() and getcurrent().",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__greenlet_accel(void)
{
    return PyModule_Create(&module);
}
