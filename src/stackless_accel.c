/* _stackless_accel: optional C versions of the hot paths of stackless.
 *
 * The pure-Python package (stackless/) is the reference, in the way heapq
 * is for _heapq.  install() replaces channel.send and channel.receive, and
 * hands back schedule(), the internal _switch() and the channel lock for
 * stackless to put in place of its own.  Each one does what its Python original does in the
 * usual case, step for step, on the same objects; in every other case
 * (callbacks, closing channels, traps, timeouts, other threads, ...) it
 * calls the Python original before it has changed anything, or calls the
 * same Python helper the original calls at that point.
 *
 * Speed comes from reading and writing the objects' __slots__ directly:
 * install() looks up the offset of every slot used here in the classes'
 * member descriptors, so subclasses (which keep their bases' slots at the
 * same offsets) work unchanged.
 */
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include "slots.h"
#include "capi.h"
#include "stackless_accel.h"
#include <pythread.h>

/* --- the channel lock -------------------------------------------------------
 * install() returns one of these to replace stackless's _lock: the same lock
 * for the Python code (acquire, release, with), and one that this module
 * takes without a method call. */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    int locked;
} LockObject;

static int lock_take(LockObject *l)
{
    if (!PyThread_acquire_lock(l->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(l->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    l->locked = 1;
    return 0;
}

static int lock_give(LockObject *l)
{
    if (!l->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return -1;
    }
    l->locked = 0;
    PyThread_release_lock(l->lock);
    return 0;
}

static PyObject *Lock_acquire(PyObject *self, PyObject *unused)
{
    lock_take((LockObject *)self);
    Py_RETURN_TRUE;
}

static PyObject *Lock_release(PyObject *self, PyObject *unused)
{
    if (lock_give((LockObject *)self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Lock_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return Lock_release(self, NULL);
}

static PyObject *Lock_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    LockObject *l = (LockObject *)type->tp_alloc(type, 0);
    if (l != NULL && (l->lock = PyThread_allocate_lock()) == NULL) {
        Py_DECREF(l);
        return PyErr_NoMemory();
    }
    return (PyObject *)l;
}

static void Lock_dealloc(PyObject *self)
{
    LockObject *l = (LockObject *)self;
    if (l->lock != NULL) {
        if (l->locked)
            PyThread_release_lock(l->lock);
        PyThread_free_lock(l->lock);
    }
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef Lock_methods[] = {
    {"acquire", Lock_acquire, METH_NOARGS, "Take the lock, waiting (without the GIL) if need be."},
    {"release", Lock_release, METH_NOARGS, "Give the lock back."},
    {"__enter__", Lock_acquire, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Lock_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Lock_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_stackless_accel.Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The lock that guards stackless's channel queues across threads.",
    .tp_new = Lock_new,
    .tp_dealloc = Lock_dealloc,
    .tp_methods = Lock_methods,
};

/* --- what install() learns ------------------------------------------------ */

static LockObject *chan_lock;
static PyObject *deque_type, *d_popleft, *d_append, *d_insert, *d_rotate;
static const cont_capi *capi;

/* the globals of stackless._switching and stackless._channel, where the
 * schedule and channel callbacks are (read at every call) */
static PyObject *sched_dict, *chan_dict;
static PyObject *local;             /* stackless._local (threading.local) */
static PyObject *bomb_type, *continulet_type;
static PyObject *py_bootstrap, *py_launch, *py_tracing_out, *py_tracing_in;
static PyObject *py_send, *py_receive, *py_schedule;
static PyObject *s_ts, *s_switch, *s_rotate, *s_popleft, *s_append, *s_insert,
                *s_raise, *s_block, *s_wake, *s_resumed, *s_schedule_cb,
                *s_channel_cb, *kw_to;
static PyObject *minus_one, *one, *zero;

/* slot offsets: tasklet, channel, _ThreadState */
static Py_ssize_t t_cont, t_ts, t_tempval, t_blocked, t_channel, t_scheduled,
                  t_is_main, t_frame, t_block_trap;
static Py_ssize_t c_queue, c_balance, c_preference, c_schedule_all, c_closing;
static Py_ssize_t ts_current, ts_rq, ts_trap, ts_timeout, ts_launch, ts_tracing;

/* --- small helpers --------------------------------------------------------- */


static PyObject *call_method0(PyObject *obj, PyObject *name)
{
    return PyObject_VectorcallMethod(name, &obj, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static PyObject *call_method1(PyObject *obj, PyObject *name, PyObject *a)
{
    PyObject *args[2] = {obj, a};
    return PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static int discard(PyObject *r)
{
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int lock(void) { return lock_take(chan_lock); }
static int unlock(void) { return lock_give(chan_lock); }

/* d.<name>(*args) for a deque.  When d is a plain deque (stackless only
 * makes plain ones), the C function behind the method is called directly:
 * install() checked its calling convention (see deque_fast).  The
 * vectorcall of a method descriptor costs more than deque's own code. */
typedef PyObject *(*fast_fn)(PyObject *, PyObject *const *, Py_ssize_t);

static PyObject *deque_call(PyObject *descr, PyObject *name, PyObject *d, PyObject *a, PyObject *b)
{
    PyObject *args[3] = {d, a, b};
    size_t n = b != NULL ? 3 : a != NULL ? 2 : 1;
    if (Py_IS_TYPE(d, (PyTypeObject *)deque_type)) {
        PyMethodDef *m = ((PyMethodDescrObject *)descr)->d_method;
        switch (m->ml_flags) {
        case METH_NOARGS:
            if (n == 1)
                return m->ml_meth(d, NULL);
            break;
        case METH_O:
            if (n == 2)
                return m->ml_meth(d, a);
            break;
        case METH_FASTCALL:
            return ((fast_fn)(void (*)(void))m->ml_meth)(d, args + 1, (Py_ssize_t)n - 1);
        }
        return PyObject_Vectorcall(descr, args, n, NULL);
    }
    return PyObject_VectorcallMethod(name, args, n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* c.switch() or c.switch(to=to); a plain continulet switches through
 * _continuation's C API, without a method call */
static PyObject *cont_switch(PyObject *c, PyObject *to)
{
    PyObject *args[2] = {c, to};
    PyObject *kw = to != NULL ? kw_to : NULL;
    if (Py_IS_TYPE(c, capi->continulet_type))
        return capi->switch_to(c, NULL, to);
    return PyObject_VectorcallMethod(s_switch, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, kw);
}

/* The schedule and channel callbacks, read at every switch and channel
 * operation: copies of the Python globals (NULL for None), refreshed by
 * the C versions of set_schedule_callback() and set_channel_callback(),
 * which call the Python ones.  A dict lookup per operation cost more than
 * the rest of a channel operation's bookkeeping. */
static PyObject *schedule_cb, *channel_cb;
static PyObject *py_set_schedule_cb, *py_set_channel_cb;

static int refresh_callback(PyObject *dict, PyObject *name, PyObject **cache)
{
    PyObject *v = PyDict_GetItemWithError(dict, name);
    if (v == NULL && PyErr_Occurred())
        return -1;
    Py_XSETREF(*cache, v == NULL || v == Py_None ? NULL : Py_NewRef(v));
    return 0;
}

/* set_*_callback(callback): the Python setter, then the cached copy */
static PyObject *set_callback(PyObject *setter, PyObject *dict, PyObject *name, PyObject **cache,
                              PyObject *callback)
{
    PyObject *old = PyObject_CallOneArg(setter, callback);
    if (refresh_callback(dict, name, cache) < 0)
        Py_CLEAR(old);
    return old;
}

static PyObject *accel_set_schedule_callback(PyObject *mod, PyObject *callback)
{
    return set_callback(py_set_schedule_cb, sched_dict, s_schedule_cb, &schedule_cb, callback);
}

static PyObject *accel_set_channel_callback(PyObject *mod, PyObject *callback)
{
    return set_callback(py_set_channel_cb, chan_dict, s_channel_cb, &channel_cb, callback);
}

/* The running thread's _ThreadState (new reference), or NULL without an
 * exception when the thread has none yet: the Python code creates it. */
static PyObject *thread_state(void)
{
    return thread_state_of(local, s_ts);
}

PyObject *accel_thread_state(void)
{
    return thread_state();
}

/* `len(d) > 1` for a deque; -1 on error */
static int more_than_one(PyObject *d)
{
    if (Py_IS_TYPE(d, (PyTypeObject *)deque_type))
        return Py_SIZE(d) > 1;      /* a deque's length is its ob_size */
    Py_ssize_t n = PyObject_Size(d);
    return n < 0 ? -1 : n > 1;
}

/* --- _switch(ts, cur, nxt) ------------------------------------------------- */

static int do_switch(PyObject *ts, PyObject *cur, PyObject *nxt)
{
    PyObject *r;
    if (schedule_cb != NULL) {
        /* (the callback may replace itself) */
        PyObject *cb = Py_NewRef(schedule_cb), *args[2] = {cur, nxt};
        r = PyObject_Vectorcall(cb, args, 2, NULL);
        Py_DECREF(cb);
        if (discard(r) < 0)
            return -1;
    }
    int tracing = slot_true(ts, ts_tracing);
    if (tracing < 0)
        return -1;
    if (tracing) {
        PyObject *args[2] = {ts, cur};
        if (discard(PyObject_Vectorcall(py_tracing_out, args, 2, NULL)) < 0)
            return -1;
    }
    set_slot(ts, ts_current, nxt);
    PyFrameObject *frame = PyEval_GetFrame();
    set_slot(cur, t_frame, frame != NULL ? (PyObject *)frame : Py_None);

    int cur_main = slot_true(cur, t_is_main), nxt_main;
    if (cur_main < 0)
        return -1;
    if (cur_main) {
        PyObject *c = slot(nxt, t_cont);
        if (c == Py_None) {
            PyObject *args[2] = {py_bootstrap, nxt};
            c = PyObject_Vectorcall(continulet_type, args, 2, NULL);
            if (c == NULL)
                return -1;
            set_slot(nxt, t_cont, c);
        }
        else {
            Py_INCREF(c);
        }
        r = cont_switch(c, NULL);
        Py_DECREF(c);
        if (discard(r) < 0)
            return -1;
        while (slot(ts, ts_launch) != Py_None)
            if (discard(PyObject_CallOneArg(py_launch, ts)) < 0)
                return -1;
    }
    else if ((nxt_main = slot_true(nxt, t_is_main)) != 0) {
        if (nxt_main < 0)
            return -1;
        PyObject *c = Py_NewRef(slot(cur, t_cont));
        r = cont_switch(c, NULL);
        Py_DECREF(c);
        if (discard(r) < 0)
            return -1;
    }
    else if (slot(nxt, t_cont) == Py_None) {
        /* new tasklets start from the main tasklet's stack */
        set_slot(ts, ts_launch, nxt);
        PyObject *c = Py_NewRef(slot(cur, t_cont));
        r = cont_switch(c, NULL);
        Py_DECREF(c);
        if (discard(r) < 0)
            return -1;
    }
    else {
        PyObject *c = Py_NewRef(slot(cur, t_cont)), *to = Py_NewRef(slot(nxt, t_cont));
        r = cont_switch(c, to);
        Py_DECREF(c);
        Py_DECREF(to);
        if (discard(r) < 0)
            return -1;
    }
    if ((tracing = slot_true(ts, ts_tracing)) != 0) {
        PyObject *args[2] = {ts, cur};
        if (tracing < 0 || discard(PyObject_Vectorcall(py_tracing_in, args, 2, NULL)) < 0)
            return -1;
    }
    PyObject *timeout = slot(ts, ts_timeout);
    if (timeout != Py_None) {
        Py_INCREF(timeout);
        r = call_method1(timeout, s_resumed, cur);
        Py_DECREF(timeout);
        if (discard(r) < 0)
            return -1;
    }
    set_slot(cur, t_frame, Py_None);
    return 0;
}

static PyObject *accel_switch(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_switch(ts, cur, nxt)");
        return NULL;
    }
    if (do_switch(args[0], args[1], args[2]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* `v = t._tempval; if type(v) is bomb: t._tempval = None; v.raise_()` */
static PyObject *take_tempval(PyObject *t, int clear)
{
    PyObject *v = Py_NewRef(slot(t, t_tempval));
    if (Py_IS_TYPE(v, (PyTypeObject *)bomb_type) || clear)
        set_slot(t, t_tempval, Py_None);
    if (Py_IS_TYPE(v, (PyTypeObject *)bomb_type)) {
        PyObject *r = call_method0(v, s_raise);
        Py_DECREF(v);
        Py_XDECREF(r);
        return NULL;
    }
    return v;
}

/* --- schedule(retval=None) ------------------------------------------------- */

static PyObject *accel_schedule(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    PyObject *ts = NULL, *cur = NULL, *rq = NULL, *nxt = NULL, *result = NULL;
    if (kwnames != NULL || nargs > 1 || (ts = thread_state()) == NULL
            || slot(ts, ts_timeout) != Py_None) {
        Py_XDECREF(ts);
        return PyErr_Occurred() ? NULL : PyObject_Vectorcall(py_schedule, args, nargs, kwnames);
    }
    PyObject *retval = nargs ? args[0] : Py_None;
    cur = Py_NewRef(slot(ts, ts_current));
    set_slot(cur, t_tempval, retval == Py_None ? cur : retval);
    rq = Py_NewRef(slot(ts, ts_rq));
    int many = more_than_one(rq);
    if (many < 0)
        goto done;
    if (many) {
        int trap = slot_true(ts, ts_trap);
        if (trap < 0)
            goto done;
        if (trap) {
            PyErr_SetString(PyExc_RuntimeError, "switch_trap");
            goto done;
        }
        nxt = PySequence_GetItem(rq, 0);
        if (nxt == NULL)
            goto done;
        if (nxt == cur) {
            Py_CLEAR(nxt);
            if (discard(deque_call(d_rotate, s_rotate, rq, minus_one, NULL)) < 0)
                goto done;
            if ((nxt = PySequence_GetItem(rq, 0)) == NULL)
                goto done;
        }
        if (do_switch(ts, cur, nxt) < 0)
            goto done;
    }
    result = take_tempval(cur, 0);
done:
    Py_XDECREF(nxt);
    Py_XDECREF(rq);
    Py_XDECREF(cur);
    Py_DECREF(ts);
    return result;
}

/* --- channel.send(value) / channel.receive() ------------------------------- */


/* The tasklet that now runs is rq[0] after the current one left the queue
 * (blocking), or the current one goes on through the Python helper. */
static int block_current(PyObject *ch, PyObject *ts, PyObject *cur)
{
    PyObject *rq = Py_NewRef(slot(ts, ts_rq));
    int many = more_than_one(rq), trap = 0, rc = -1;
    if (many < 0 || (many && (trap = slot_true(ts, ts_trap)) < 0))
        goto done;
    if (many && !trap) {
        /* the usual case, as the Python code inlines it */
        PyObject *gone = deque_call(d_popleft, s_popleft, rq, NULL, NULL);
        if (discard(gone) < 0)
            goto done;
        set_slot(cur, t_scheduled, Py_False);
        PyObject *nxt = PySequence_GetItem(rq, 0);
        if (nxt == NULL)
            goto done;
        rc = do_switch(ts, cur, nxt);
        Py_DECREF(nxt);
    }
    else {
        PyObject *args[3] = {ch, ts, cur};
        rc = discard(PyObject_VectorcallMethod(s_block, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL));
    }
done:
    Py_DECREF(rq);
    return rc;
}

/* self._wake(ts, cur, target, pref) */
static int wake(PyObject *ch, PyObject *ts, PyObject *cur, PyObject *target, PyObject *pref)
{
    PyObject *args[5] = {ch, ts, cur, target, pref};
    return discard(PyObject_VectorcallMethod(s_wake, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL));
}

/* *out = the value of a balance or preference, which is almost always
 * -1, 0 or 1: those are CPython's cached small ints, recognised by
 * identity.  0, or -1 on error. */
static int small_int(PyObject *v, long *out)
{
    if (v == zero)
        *out = 0;
    else if (v == one)
        *out = 1;
    else if (v == minus_one)
        *out = -1;
    else if ((*out = PyLong_AsLong(v)) == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* balance += d (a small int) */
static int add_balance(PyObject *ch, long d)
{
    long b;
    if (small_int(slot(ch, c_balance), &b) < 0)
        return -1;
    b += d;
    PyObject *v = b == 0 ? Py_NewRef(zero) : b == 1 ? Py_NewRef(one)
                : b == -1 ? Py_NewRef(minus_one) : PyLong_FromLong(b);
    if (v == NULL)
        return -1;
    set_slot(ch, c_balance, v);
    Py_DECREF(v);
    return 0;
}

/* Whether the usual case applies to this channel at all: no channel
 * callback, and slots that hold what the Python code put there. */
static int plain_channel(PyObject *ch)
{
    if (channel_cb != NULL)
        return 0;
    return slot(ch, c_queue) != NULL && slot(ch, c_balance) != NULL
        && PyLong_CheckExact(slot(ch, c_balance)) && slot(ch, c_preference) != NULL
        && slot(ch, c_schedule_all) != NULL && slot(ch, c_closing) != NULL;
}

/* -1 error, 0 no, 1 yes: closing or the current tasklet refuses to block */
static int cannot_block(PyObject *ch, PyObject *cur)
{
    int closing = slot_true(ch, c_closing);
    if (closing != 0)
        return closing;
    return slot_true(cur, t_block_trap);
}

/* Balance sign of the channel: -1, 0 or 1; -2 on error. */
static int balance_sign(PyObject *ch)
{
    long b;
    if (small_int(slot(ch, c_balance), &b) < 0)
        return -2;
    return b < 0 ? -1 : b > 0;
}

/* With the lock held and nobody to pair with: queue the current tasklet
 * on the channel as a sender (dir 1, with `value`) or a receiver (dir -1)
 * and block until another tasklet wakes it.  The lock is released in every
 * case.  1 when the Python code must take over (a closing channel, a block
 * trap: it raises the right error), 0 once woken, -1 on error. */
static int wait_here(PyObject *ch, PyObject *ts, PyObject *queue, PyObject *cur, int dir,
                     PyObject *value)
{
    int refuse = cannot_block(ch, cur);
    if (refuse != 0) {
        if (unlock() < 0 || refuse < 0)
            return -1;
        return 1;
    }
    if (discard(deque_call(d_append, s_append, queue, cur, NULL)) < 0 || add_balance(ch, dir) < 0) {
        unlock();
        return -1;
    }
    set_slot(cur, t_blocked, dir > 0 ? one : minus_one);
    set_slot(cur, t_channel, ch);
    if (value != NULL)
        set_slot(cur, t_tempval, value);
    if (unlock() < 0 || block_current(ch, ts, cur) < 0)
        return -1;
    return 0;
}

static PyObject *accel_send(PyObject *ch, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !plain_channel(ch))
        return PyErr_Occurred() ? NULL : call_bound(py_send, ch, args, nargs, NULL);
    PyObject *value = args[0];
    PyObject *ts = thread_state();
    if (ts == NULL) {
        if (PyErr_Occurred())
            return NULL;
        PyObject *a[2] = {ch, value};
        return PyObject_Vectorcall(py_send, a, 2, NULL);
    }
    PyObject *cur = Py_NewRef(slot(ts, ts_current)), *queue = Py_NewRef(slot(ch, c_queue));
    PyObject *target = NULL, *result = NULL;
    int rc = -1, sign;
    if (lock() < 0)
        goto done;
    if ((sign = balance_sign(ch)) == -2) {
        unlock();
        goto done;
    }
    if (sign < 0) {
        /* a receiver is waiting: hand the value over */
        target = deque_call(d_popleft, s_popleft, queue, NULL, NULL);
        if (target == NULL || add_balance(ch, 1) < 0) {
            unlock();
            goto done;
        }
        set_slot(target, t_blocked, zero);
        set_slot(target, t_channel, Py_None);
        set_slot(target, t_tempval, value);
        if (unlock() < 0)
            goto done;
        long pref;
        if (small_int(slot(ch, c_preference), &pref) < 0)
            goto done;
        int trap = slot_true(ts, ts_trap), all = slot_true(ch, c_schedule_all);
        if (trap < 0 || all < 0)
            goto done;
        if (slot(target, t_ts) == ts && pref == -1 && !trap && !all) {
            /* the receiver runs now, we go last */
            PyObject *rq = Py_NewRef(slot(ts, ts_rq));
            int bad = discard(deque_call(d_insert, s_insert, rq, one, target)) < 0
                || discard(deque_call(d_rotate, s_rotate, rq, minus_one, NULL)) < 0;
            Py_DECREF(rq);
            if (bad)
                goto done;
            set_slot(target, t_scheduled, Py_True);
            if (do_switch(ts, cur, target) < 0)
                goto done;
            PyObject *v = take_tempval(cur, 0);
            if (v == NULL)
                goto done;
            Py_DECREF(v);
        }
        else if (wake(ch, ts, cur, target, minus_one) < 0) {
            goto done;
        }
        rc = 0;
        goto done;
    }
    int waited = wait_here(ch, ts, queue, cur, 1, value);
    if (waited > 0) {
        /* the Python code raises the right error */
        Py_DECREF(cur);
        Py_DECREF(queue);
        Py_DECREF(ts);
        PyObject *a[2] = {ch, value};
        return PyObject_Vectorcall(py_send, a, 2, NULL);
    }
    if (waited < 0)
        goto done;
    PyObject *v = take_tempval(cur, 0);
    if (v == NULL)
        goto done;
    Py_DECREF(v);
    rc = 0;
done:
    if (rc == 0)
        result = Py_NewRef(Py_None);
    Py_XDECREF(target);
    Py_DECREF(queue);
    Py_DECREF(cur);
    Py_DECREF(ts);
    return result;
}

static PyObject *accel_receive(PyObject *ch, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 0 || !plain_channel(ch))
        return PyErr_Occurred() ? NULL : call_bound(py_receive, ch, args, nargs, NULL);
    PyObject *ts = thread_state();
    if (ts == NULL)
        return PyErr_Occurred() ? NULL : PyObject_CallOneArg(py_receive, ch);
    PyObject *cur = Py_NewRef(slot(ts, ts_current)), *queue = Py_NewRef(slot(ch, c_queue));
    PyObject *target = NULL, *result = NULL;
    int sign;
    if (lock() < 0)
        goto done;
    if ((sign = balance_sign(ch)) == -2) {
        unlock();
        goto done;
    }
    if (sign > 0) {
        /* a sender is waiting: take its value */
        target = deque_call(d_popleft, s_popleft, queue, NULL, NULL);
        if (target == NULL || add_balance(ch, -1) < 0) {
            unlock();
            goto done;
        }
        set_slot(target, t_blocked, zero);
        set_slot(target, t_channel, Py_None);
        PyObject *v = Py_NewRef(slot(target, t_tempval));
        set_slot(target, t_tempval, Py_None);
        if (unlock() < 0) {
            Py_DECREF(v);
            goto done;
        }
        long pref;
        int all = small_int(slot(ch, c_preference), &pref) < 0 ? -1 : slot_true(ch, c_schedule_all);
        if (all < 0) {
            Py_DECREF(v);
            goto done;
        }
        if (slot(target, t_ts) == ts && pref != 1 && !all) {
            PyObject *rq = Py_NewRef(slot(ts, ts_rq));
            int bad = discard(deque_call(d_append, s_append, rq, target, NULL)) < 0;
            Py_DECREF(rq);
            if (bad) {
                Py_DECREF(v);
                goto done;
            }
            set_slot(target, t_scheduled, Py_True);
        }
        else if (wake(ch, ts, cur, target, one) < 0) {
            Py_DECREF(v);
            goto done;
        }
        if (Py_IS_TYPE(v, (PyTypeObject *)bomb_type)) {
            Py_XDECREF(call_method0(v, s_raise));
            Py_DECREF(v);
            goto done;
        }
        result = v;
        goto done;
    }
    int waited = wait_here(ch, ts, queue, cur, -1, NULL);
    if (waited > 0) {
        Py_DECREF(cur);
        Py_DECREF(queue);
        Py_DECREF(ts);
        return PyObject_CallOneArg(py_receive, ch);
    }
    if (waited < 0)
        goto done;
    result = take_tempval(cur, 1);
done:
    Py_XDECREF(target);
    Py_DECREF(queue);
    Py_DECREF(cur);
    Py_DECREF(ts);
    return result;
}

/* --- install(namespace) ---------------------------------------------------- */


static PyObject *method_descr(PyObject *cls, PyMethodDef *def)
{
    PyObject *d = PyDescr_NewMethod((PyTypeObject *)cls, def);
    if (d == NULL || PyObject_SetAttrString(cls, def->ml_name, d) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static PyMethodDef send_def = {"send", (PyCFunction)(void (*)(void))accel_send, METH_FASTCALL,
    "Send ``value``; block until a receiver takes it (C version)."};
static PyMethodDef receive_def = {"receive", (PyCFunction)(void (*)(void))accel_receive, METH_FASTCALL,
    "Receive a value; block until a sender provides one (C version)."};

/* install(names, switching_globals, channel_globals): `names` holds the
 * classes and functions of stackless (read once); the globals of
 * stackless._switching and stackless._channel are kept, for the callbacks.
 * Returns {"_lock": ..., "_switch": ..., "schedule": ...,
 * "set_schedule_callback": ..., "set_channel_callback": ...}, the C
 * versions that the Python code puts in place of its own. */
static PyObject *accel_install(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyDict_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "install(names, switching_globals, channel_globals)");
        return NULL;
    }
    PyObject *ns = args[0];
    if (sched_dict != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_stackless_accel is installed already");
        return NULL;
    }
    PyObject *tasklet = NULL, *channel = NULL, *tstate = NULL, *cont = NULL, *coll = NULL;
    if ((tasklet = need(ns, "tasklet")) == NULL || (channel = need(ns, "channel")) == NULL
            || (tstate = need(ns, "_ThreadState")) == NULL
            || (local = need(ns, "_local")) == NULL || (bomb_type = need(ns, "bomb")) == NULL
            || (py_bootstrap = need(ns, "_bootstrap")) == NULL || (py_launch = need(ns, "_launch")) == NULL
            || (py_tracing_out = need(ns, "_tracing_out")) == NULL
            || (py_tracing_in = need(ns, "_tracing_in")) == NULL
            || (py_schedule = need(ns, "schedule")) == NULL
            || (py_set_schedule_cb = need(ns, "set_schedule_callback")) == NULL
            || (py_set_channel_cb = need(ns, "set_channel_callback")) == NULL)
        goto fail;
    if ((py_send = PyObject_GetAttrString(channel, "send")) == NULL
            || (py_receive = PyObject_GetAttrString(channel, "receive")) == NULL
            || (cont = PyImport_ImportModule("_continuation")) == NULL
            || (continulet_type = PyObject_GetAttrString(cont, "continulet")) == NULL
            || (capi = cont_capi_import()) == NULL
            || (coll = PyImport_ImportModule("collections")) == NULL
            || (deque_type = PyObject_GetAttrString(coll, "deque")) == NULL
            || (d_popleft = PyObject_GetAttrString(deque_type, "popleft")) == NULL
            || (d_append = PyObject_GetAttrString(deque_type, "append")) == NULL
            || (d_insert = PyObject_GetAttrString(deque_type, "insert")) == NULL
            || (d_rotate = PyObject_GetAttrString(deque_type, "rotate")) == NULL)
        goto fail;
    /* replaces the Python code's lock (nothing holds it at import) */
    if ((chan_lock = (LockObject *)PyObject_CallNoArgs((PyObject *)&Lock_Type)) == NULL)
        goto fail;
    if ((t_cont = slot_offset(tasklet, "_cont")) < 0 || (t_ts = slot_offset(tasklet, "_ts")) < 0
            || (t_tempval = slot_offset(tasklet, "_tempval")) < 0
            || (t_blocked = slot_offset(tasklet, "_blocked")) < 0
            || (t_channel = slot_offset(tasklet, "_channel")) < 0
            || (t_scheduled = slot_offset(tasklet, "_scheduled")) < 0
            || (t_is_main = slot_offset(tasklet, "_is_main")) < 0
            || (t_frame = slot_offset(tasklet, "_frame")) < 0
            || (t_block_trap = slot_offset(tasklet, "_block_trap")) < 0
            || (c_queue = slot_offset(channel, "_queue")) < 0
            || (c_balance = slot_offset(channel, "_balance")) < 0
            || (c_preference = slot_offset(channel, "preference")) < 0
            || (c_schedule_all = slot_offset(channel, "schedule_all")) < 0
            || (c_closing = slot_offset(channel, "_closing")) < 0
            || (ts_current = slot_offset(tstate, "current")) < 0 || (ts_rq = slot_offset(tstate, "rq")) < 0
            || (ts_trap = slot_offset(tstate, "trap")) < 0 || (ts_timeout = slot_offset(tstate, "timeout")) < 0
            || (ts_launch = slot_offset(tstate, "launch")) < 0
            || (ts_tracing = slot_offset(tstate, "tasklet_tracing")) < 0)
        goto fail;
    static const char *names[] = {"ts", "switch", "rotate", "popleft", "append", "insert", "raise_",
                                  "_block", "_wake", "resumed", "_schedule_cb", "_channel_cb"};
    PyObject **slots[] = {&s_ts, &s_switch, &s_rotate, &s_popleft, &s_append, &s_insert, &s_raise,
                          &s_block, &s_wake, &s_resumed, &s_schedule_cb, &s_channel_cb};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*slots[i] = PyUnicode_InternFromString(names[i])) == NULL)
            goto fail;
    if ((kw_to = Py_BuildValue("(s)", "to")) == NULL || (minus_one = PyLong_FromLong(-1)) == NULL
            || (one = PyLong_FromLong(1)) == NULL || (zero = PyLong_FromLong(0)) == NULL)
        goto fail;

    PyObject *d;
    if ((d = method_descr(channel, &send_def)) == NULL)
        goto fail;
    Py_DECREF(d);
    if ((d = method_descr(channel, &receive_def)) == NULL)
        goto fail;
    Py_DECREF(d);
    if (tasklet_accel_install(ns, tasklet, ts_rq) < 0)
        goto fail;
    if (refresh_callback(args[1], s_schedule_cb, &schedule_cb) < 0
            || refresh_callback(args[2], s_channel_cb, &channel_cb) < 0)
        goto fail;
    PyObject *sched = PyObject_GetAttrString(mod, "schedule");
    PyObject *sw = PyObject_GetAttrString(mod, "_switch");
    PyObject *set_s = PyObject_GetAttrString(mod, "set_schedule_callback");
    PyObject *set_c = PyObject_GetAttrString(mod, "set_channel_callback");
    PyObject *replaced = sched == NULL || sw == NULL || set_s == NULL || set_c == NULL ? NULL
        : Py_BuildValue("{sOsOsOsOsO}", "_lock", (PyObject *)chan_lock, "_switch", sw,
                        "schedule", sched, "set_schedule_callback", set_s,
                        "set_channel_callback", set_c);
    Py_XDECREF(sched);
    Py_XDECREF(sw);
    Py_XDECREF(set_s);
    Py_XDECREF(set_c);
    if (replaced == NULL)
        goto fail;
    sched_dict = Py_NewRef(args[1]);
    chan_dict = Py_NewRef(args[2]);
    Py_DECREF(tasklet);
    Py_DECREF(channel);
    Py_DECREF(tstate);
    Py_DECREF(cont);
    Py_DECREF(coll);
    return replaced;
fail:
    Py_XDECREF(tasklet);
    Py_XDECREF(channel);
    Py_XDECREF(tstate);
    Py_XDECREF(cont);
    Py_XDECREF(coll);
    return NULL;
}

static PyMethodDef accel_methods[] = {
    {"install", (PyCFunction)(void (*)(void))accel_install, METH_FASTCALL,
     "install(names, switching_globals, channel_globals): set up the C versions of\n"
     "stackless's hot paths; returns those the Python code must put in place."},
    {"schedule", (PyCFunction)(void (*)(void))accel_schedule, METH_FASTCALL | METH_KEYWORDS,
     "Let the next runnable tasklet run; the current one goes to the end (C version)."},
    {"_switch", (PyCFunction)(void (*)(void))accel_switch, METH_FASTCALL,
     "Suspend the running tasklet and resume another (C version)."},
    {"set_schedule_callback", accel_set_schedule_callback, METH_O,
     "Install callback(prev, next), called before every switch; return the previous one."},
    {"set_channel_callback", accel_set_channel_callback, METH_O,
     "Install callback(channel, tasklet, sending, willblock); return the previous one."},
    {"forget_thread", forget_thread, METH_NOARGS,
     "The running thread's scheduler is going away: drop the cached reference."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_stackless_accel",
    .m_doc = "Optional C versions of stackless's channel and scheduler hot paths.",
    .m_size = -1,
    .m_methods = accel_methods,
};

PyMODINIT_FUNC PyInit__stackless_accel(void)
{
    if (PyType_Ready(&Lock_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&accel_module);
    if (m != NULL && PyModule_AddObjectRef(m, "Lock", (PyObject *)&Lock_Type) < 0)
        Py_CLEAR(m);
    return m;
}
