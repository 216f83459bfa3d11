/* _stackless_accel.WaitQueue: a channel's queue of waiting tasklets when
 * the accelerator is in use (stackless/_channel.py makes its channels'
 * queues with `_new_queue`, which install() points here), in place of a
 * collections.deque.
 *
 * Why not a deque: a deque is 760 bytes before its first item (its first
 * 64-slot block and its free-block cache), most of a channel's 850 B,
 * where Stackless's channel is 80 B.  Programs that give every tasklet a
 * channel (hackysack: 10,000 of them) pay it per tasklet, in memory and in
 * the cache misses of every operation.  Almost every channel has at most
 * one or two waiters, so this queue keeps two inline and grows into a
 * ring on the heap beyond that: 80 B with its GC header.
 *
 * It has what the Python code uses of a deque: append(), len,
 * q[i] (negative too), del q[i] and iteration, which raises RuntimeError
 * if the queue changed meanwhile, as a deque's does (another thread's
 * pairing: stackless/_common.py's _index looks again then).  Every change
 * is complete before a reference it drops can run a __del__, as in deque;
 * nothing here calls Python code otherwise. */
#include <Python.h>
#include "stackless_accel.h"

#define INLINE 2

typedef struct {
    PyObject_VAR_HEAD                   /* ob_size: the number of waiters */
    /* (32 bits each: a queue of 2**30 tasklets would be 100s of GB) */
    uint32_t head;                      /* index of the first in items */
    uint32_t cap;                       /* a power of two */
    uint32_t state;                     /* changes with every change */
    PyObject **items;                   /* inl, or a heap ring of cap slots */
    PyObject *inl[INLINE];
} WaitQueue;

#define AT(q, i) ((q)->items[((q)->head + (i)) & ((q)->cap - 1)])

static PyObject *wq_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kw != NULL && PyDict_GET_SIZE(kw) != 0)) {
        PyErr_SetString(PyExc_TypeError, "WaitQueue() takes no arguments");
        return NULL;
    }
    WaitQueue *q = PyObject_GC_New(WaitQueue, type);
    if (q == NULL)
        return NULL;
    Py_SET_SIZE(q, 0);
    q->head = q->state = 0;
    q->cap = INLINE;
    q->items = q->inl;
    PyObject_GC_Track(q);
    return (PyObject *)q;
}

/* room for one more; -1 (no memory) with nothing changed */
static int grow(WaitQueue *q)
{
    Py_ssize_t n = Py_SIZE(q);
    if (n < (Py_ssize_t)q->cap)
        return 0;
    if (q->cap >= ((uint32_t)1 << 30)) {     /* (and cap fits a 32-bit Py_ssize_t) */
        PyErr_NoMemory();
        return -1;
    }
    PyObject **a = PyMem_New(PyObject *, (size_t)q->cap * 2);
    if (a == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        a[i] = AT(q, i);
    if (q->items != q->inl)
        PyMem_Free(q->items);
    q->items = a;
    q->head = 0;
    q->cap *= 2;
    return 0;
}

int accel_wq_append(PyObject *self, PyObject *v)
{
    WaitQueue *q = (WaitQueue *)self;
    if (grow(q) < 0)
        return -1;
    AT(q, Py_SIZE(q)) = Py_NewRef(v);
    Py_SET_SIZE(q, Py_SIZE(q) + 1);
    q->state++;
    return 0;
}

PyObject *accel_wq_popleft(PyObject *self)
{
    WaitQueue *q = (WaitQueue *)self;
    if (Py_SIZE(q) == 0) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty WaitQueue");
        return NULL;
    }
    PyObject *v = q->items[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    Py_SET_SIZE(q, Py_SIZE(q) - 1);
    q->state++;
    return v;
}

PyObject *accel_wq_first(PyObject *self)
{
    WaitQueue *q = (WaitQueue *)self;
    return Py_SIZE(q) > 0 ? q->items[q->head] : NULL;
}

static PyObject *wq_append_meth(PyObject *self, PyObject *v)
{
    if (accel_wq_append(self, v) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static Py_ssize_t wq_len(PyObject *self)
{
    return Py_SIZE(self);
}

static PyObject *wq_item(PyObject *self, Py_ssize_t i)
{
    WaitQueue *q = (WaitQueue *)self;
    if (i < 0 || i >= Py_SIZE(q)) {
        PyErr_SetString(PyExc_IndexError, "WaitQueue index out of range");
        return NULL;
    }
    return Py_NewRef(AT(q, i));
}

/* del q[i] (assignment is not supported: the Python code never does it) */
static int wq_ass_item(PyObject *self, Py_ssize_t i, PyObject *v)
{
    WaitQueue *q = (WaitQueue *)self;
    if (v != NULL) {
        PyErr_SetString(PyExc_TypeError, "WaitQueue items can only be deleted");
        return -1;
    }
    Py_ssize_t n = Py_SIZE(q);
    if (i < 0 || i >= n) {
        PyErr_SetString(PyExc_IndexError, "WaitQueue index out of range");
        return -1;
    }
    PyObject *gone = AT(q, i);
    for (Py_ssize_t j = i; j + 1 < n; j++)
        AT(q, j) = AT(q, j + 1);
    Py_SET_SIZE(q, n - 1);
    q->state++;
    Py_DECREF(gone);            /* (the queue is whole again) */
    return 0;
}

static int wq_traverse(PyObject *self, visitproc visit, void *arg)
{
    WaitQueue *q = (WaitQueue *)self;
    for (Py_ssize_t i = 0; i < Py_SIZE(q); i++)
        Py_VISIT(AT(q, i));
    return 0;
}

/* empty the queue first, then drop the references: a __del__ that runs
 * meanwhile finds it empty and whole */
static int wq_clear(PyObject *self)
{
    WaitQueue *q = (WaitQueue *)self;
    while (Py_SIZE(q) > 0)
        Py_DECREF(accel_wq_popleft(self));
    return 0;
}

static void wq_dealloc(PyObject *self)
{
    WaitQueue *q = (WaitQueue *)self;
    PyObject_GC_UnTrack(self);
    wq_clear(self);
    if (q->items != q->inl)
        PyMem_Free(q->items);
    Py_TYPE(self)->tp_free(self);
}

/* iter(q): q[0], q[1], ... while q does not change */
typedef struct {
    PyObject_HEAD
    WaitQueue *q;
    Py_ssize_t i;
    uint32_t state;
} WaitQueueIter;

static PyTypeObject wq_iter_type;

static PyObject *wq_iter(PyObject *self)
{
    WaitQueueIter *it = PyObject_GC_New(WaitQueueIter, &wq_iter_type);
    if (it == NULL)
        return NULL;
    it->q = (WaitQueue *)Py_NewRef(self);
    it->i = 0;
    it->state = it->q->state;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *wq_iter_next(PyObject *self)
{
    WaitQueueIter *it = (WaitQueueIter *)self;
    if (it->q->state != it->state) {
        PyErr_SetString(PyExc_RuntimeError, "WaitQueue mutated during iteration");
        return NULL;
    }
    if (it->i >= Py_SIZE(it->q))
        return NULL;
    return Py_NewRef(AT(it->q, it->i++));
}

static int wq_iter_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((WaitQueueIter *)self)->q);
    return 0;
}

static void wq_iter_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_DECREF(((WaitQueueIter *)self)->q);
    PyObject_GC_Del(self);
}

static PyTypeObject wq_iter_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_stackless_accel.WaitQueueIterator",
    .tp_basicsize = sizeof(WaitQueueIter),
    .tp_dealloc = wq_iter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = wq_iter_traverse,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = wq_iter_next,
};

static PyMethodDef wq_methods[] = {
    {"append", wq_append_meth, METH_O, "append(tasklet): one more waiter, last."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods wq_as_sequence = {
    .sq_length = wq_len,
    .sq_item = wq_item,
    .sq_ass_item = wq_ass_item,
};

PyTypeObject accel_waitqueue_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_stackless_accel.WaitQueue",
    .tp_basicsize = sizeof(WaitQueue),
    .tp_dealloc = wq_dealloc,
    .tp_as_sequence = &wq_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The tasklets waiting on a channel, first to last (the accelerator's).",
    .tp_traverse = wq_traverse,
    .tp_clear = wq_clear,
    .tp_iter = wq_iter,
    .tp_methods = wq_methods,
    .tp_new = wq_new,
    .tp_free = PyObject_GC_Del,
};

int waitqueue_add(PyObject *module)
{
    if (PyType_Ready(&wq_iter_type) < 0 || PyType_Ready(&accel_waitqueue_type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "WaitQueue", (PyObject *)&accel_waitqueue_type);
}
