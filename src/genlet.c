/* _continuation.generator and genlet: generators written with switch().
 *
 *     @generator
 *     def f(cont, a, b):
 *         cont.switch(a + b)      # what next() returns
 *
 * next(g) and g.send(v) resume the genlet; when its function returns
 * (it must return None) the genlet raises StopIteration.  PyPy 3's send()
 * is broken (it calls the builtin next); this one works. */
#include "continulet.h"

/* ---- genlet: a continulet that iterates ------------------------------ */

static PyObject *genlet_step(PyObject *self, PyObject *value, cps_call *call)
{
    if (!cont_initialized((Continulet *)self)) {
        /* made by genlet.__new__ alone: no function, nothing to resume.  It
         * iterates as empty, as on PyPy; a value sent into it could reach
         * nobody (and switch() would hand it straight back, which would
         * look like the function's return value). */
        if (value != Py_None) {
            PyErr_SetString(PyExc_TypeError, "can't send non-None value to an unbound genlet");
            return NULL;
        }
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    PyObject *res = cont_switch((Continulet *)self, value, NULL, call);
    if (res == NULL || ((Continulet *)self)->h != NULL)
        return res;
    /* the function has returned: its return value came out of switch() */
    if (res != Py_None) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "_continuation.generator must return None");
        return NULL;
    }
    Py_DECREF(res);
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

static PyObject *genlet_iternext(PyObject *self)
{
    /* no arguments, but the top frame's call that runs it may tell its
       depth from the genlet (see call_depth in pystate.c) */
    cps_call call = {self, NULL, NULL, NULL};
    call.stepped = 1;
    return genlet_step(self, Py_None, &call);
}

static PyObject *genlet_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "genlet.send() takes exactly one argument (%zd given)", nargs);
        return NULL;
    }
    cps_call call = {self, args, args + 1, NULL};
    cps_find_hidden(&call);
    PyObject *res = genlet_step(self, args[0], &call);
    Py_XDECREF(call.hidden);        /* if no suspension took it */
    return res;
}

static PyMethodDef genlet_methods[] = {
    {"send", (PyCFunction)(void (*)(void))genlet_send, METH_FASTCALL,
     "send(value)\n--\n\nResume the genlet with `value` as the result of its switch()."},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject Genlet_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_continuation.genlet",
    .tp_basicsize = sizeof(Continulet),
    /* GC support, dealloc and finalizer come from continulet */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A continulet driven as an iterator; made by _continuation.generator.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = genlet_iternext,
    .tp_methods = genlet_methods,
};

/* ---- generator: the decorator ---------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *callable;
} Generator;

static PyTypeObject Generator_Type;

static PyObject *generator_make(PyTypeObject *type, PyObject *callable)
{
    Generator *g = (Generator *)type->tp_alloc(type, 0);
    if (g != NULL)
        g->callable = Py_NewRef(callable);
    return (PyObject *)g;
}

static PyObject *generator_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *callable;
    static char *kwlist[] = {"callable", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:generator", kwlist, &callable))
        return NULL;
    return generator_make(type, callable);
}

static PyObject *generator_call(PyObject *op, PyObject *args, PyObject *kwds)
{
    Generator *g = (Generator *)op;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *full = PyTuple_New(n + 1);
    if (full == NULL)
        return NULL;
    PyTuple_SET_ITEM(full, 0, Py_NewRef(g->callable));
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(full, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    PyObject *res = PyObject_Call((PyObject *)&Genlet_Type, full, kwds);
    Py_DECREF(full);
    return res;
}

/* As a method: bind the function, like a plain function would be bound. */
static PyObject *generator_get(PyObject *op, PyObject *obj, PyObject *type)
{
    Generator *g = (Generator *)op;
    descrgetfunc get = Py_TYPE(g->callable)->tp_descr_get;
    if (get == NULL)
        return Py_NewRef(op);
    PyObject *bound = get(g->callable, obj, type);
    if (bound == NULL)
        return NULL;
    PyObject *res = generator_make(Py_TYPE(op), bound);
    Py_DECREF(bound);
    return res;
}

static int generator_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((Generator *)op)->callable);
    return 0;
}

static int generator_clear(PyObject *op)
{
    Py_CLEAR(((Generator *)op)->callable);
    return 0;
}

static void generator_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    (void)generator_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject Generator_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_continuation.generator",
    .tp_basicsize = sizeof(Generator),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "generator(callable)\n--\n\n"
              "Decorator: calling the result makes a genlet that runs callable(genlet, *args).",
    .tp_new = generator_new,
    .tp_call = generator_call,
    .tp_descr_get = generator_get,
    .tp_traverse = generator_traverse,
    .tp_clear = generator_clear,
    .tp_dealloc = generator_dealloc,
};

int cont_genlet_init(PyObject *module)
{
    Genlet_Type.tp_base = &Continulet_Type;
    if (PyType_Ready(&Genlet_Type) < 0 || PyType_Ready(&Generator_Type) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "genlet", (PyObject *)&Genlet_Type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "generator", (PyObject *)&Generator_Type);
}
