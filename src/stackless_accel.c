/* _stackless_accel: optional C versions of the hot paths of stackless.
 *
 * The pure-Python package (stackless/) is the reference, in the way heapq
 * is for _heapq.  install() replaces channel.send and channel.receive, and
 * hands back schedule() and the internal _switch() for stackless to put in
 * place of its own.  Each one does what its Python original does in the
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

/* --- what install() learns ------------------------------------------------ */

static PyObject *deque_type, *d_popleft, *d_append, *d_appendleft;
static const cont_capi *capi;

/* the globals of stackless._switching and stackless._channel, where the
 * schedule and channel callbacks are (read at every call) */
static PyObject *sched_dict, *chan_dict;
static PyObject *local;             /* stackless._local (threading.local) */
static PyObject *bomb_type;
/* stackless._lifetime's tasklet continulet class, and _new_cont() */
static PyObject *tcont_type, *py_new_cont;
static PyObject *py_bootstrap, *py_switch;
static PyObject *py_send, *py_receive, *py_schedule, *py_recover, *py_leave,
                *py_raise_pending, *py_not_started;
static PyObject *s_ts, *s_switch, *s_popleft, *s_append, *s_appendleft,
                *s_raise, *s_resumed, *s_schedule_cb,
                *s_channel_cb, *kw_to;
static PyObject *minus_one, *one, *zero;

/* slot offsets: tasklet, channel, _ThreadState */
static Py_ssize_t t_cont, t_ts, t_tempval, t_blocked, t_channel, t_scheduled,
                  t_is_main, t_block_trap;
static Py_ssize_t c_queue, c_balance, c_preference, c_schedule_all, c_closing;
static Py_ssize_t ts_current, ts_rq, ts_trap, ts_timeout, ts_launch, ts_tracing, ts_pending;

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

/* func(a, b), out of line (see OUT_OF_LINE) */
static OUT_OF_LINE PyObject *call2(PyObject *func, PyObject *a, PyObject *b)
{
    PyObject *args[2] = {a, b};
    return PyObject_Vectorcall(func, args, 2, NULL);
}

/* d.<name>(*args) for a deque.  When d is a plain deque (stackless only
 * makes plain ones), the C function behind the method is called directly:
 * install() took it from the method descriptor after checking its calling
 * convention.  The vectorcall of a method descriptor costs more than
 * deque's own code. */
static PyCFunction fn_popleft, fn_append, fn_appendleft;    /* METH_NOARGS, METH_O */

static PyObject *deque_call(PyObject *descr, PyObject *name, PyObject *d, PyObject *a)
{
    PyObject *args[2] = {d, a};
    size_t n = a != NULL ? 2 : 1;
    if (Py_IS_TYPE(d, (PyTypeObject *)deque_type))
        return PyObject_Vectorcall(descr, args, n, NULL);
    return PyObject_VectorcallMethod(name, args, n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* whether d's methods can be called through the C function pointers */
CONT_HOT int fast_deque(PyObject *d)
{
    return fn_popleft != NULL && Py_IS_TYPE(d, (PyTypeObject *)deque_type);
}

/* d's methods; `known`: d is a deque that op_begin() checked (exact type,
 * and it found the C functions), which the channel operations pass as a
 * constant, so that the test goes (a few instructions per call, four
 * calls per handoff) */
CONT_HOT PyObject *dq_popleft_k(PyObject *d, int known)
{
    return known || fast_deque(d) ? fn_popleft(d, NULL) : deque_call(d_popleft, s_popleft, d, NULL);
}

CONT_HOT PyObject *dq_append_k(PyObject *d, PyObject *v, int known)
{
    return known || fast_deque(d) ? fn_append(d, v) : deque_call(d_append, s_append, d, v);
}

CONT_HOT PyObject *dq_appendleft_k(PyObject *d, PyObject *v, int known)
{
    return known || fast_deque(d) ? fn_appendleft(d, v) : deque_call(d_appendleft, s_appendleft, d, v);
}

CONT_HOT PyObject *dq_popleft(PyObject *d) { return dq_popleft_k(d, 0); }

/* Drop the result of deque.append(): None, or another object from a
 * deque subclass (known is 0 then) */
CONT_HOT void drop_append_result(PyObject *r, int known)
{
    if (known)
        imm_drop(r);
    else
        Py_DECREF(r);
}

/* d.rotate(-1) for a deque of two or more items whose first item is
 * `first`: append it again, then drop it from the front.  Two of deque's
 * cheapest operations instead of rotate() with its int argument; if the
 * append fails (no memory) nothing has changed. */
CONT_HOT int dq_first_to_end(PyObject *d, PyObject *first, int known)
{
    PyObject *r = dq_append_k(d, first, known);
    if (r == NULL)
        return -1;
    drop_append_result(r, known);
    r = dq_popleft_k(d, known);
    xdecref(r);
    return r == NULL ? -1 : 0;
}

/* The C function of a deque method with the given calling convention, or
 * NULL (another Python: the descriptors are called instead). */
static PyCFunction deque_method(PyObject *descr, int flags)
{
    if (!Py_IS_TYPE(descr, &PyMethodDescr_Type))
        return NULL;
    PyMethodDef *m = ((PyMethodDescrObject *)descr)->d_method;
    return m->ml_flags == flags ? m->ml_meth : NULL;
}

/* The front of a deque read in place.  first_of() runs three or four
 * times per channel operation (is cur rq[0]? the first waiter, the next
 * tasklet), and each call of deque's sq_item cost ~20 instructions, a
 * sixth of a handoff's bookkeeping.  A deque object starts with its
 * block pointers and indices (Modules/_collectionsmodule.c, the same in
 * every CPython this builds for); install() checks that on real deques,
 * across block boundaries both ways, and otherwise leaves dq_in_place 0
 * and first_of() calls sq_item. */
struct dq_block {
    struct dq_block *leftlink;
    PyObject *data[];
};
typedef struct {
    PyObject_VAR_HEAD
    struct dq_block *leftblock, *rightblock;
    Py_ssize_t leftindex, rightindex;
} dq_head;
static int dq_in_place;

CONT_HOT PyObject *dq_front(PyObject *d)
{
    const dq_head *h = (const dq_head *)d;
    return h->leftblock->data[h->leftindex];
}

/* whether dq_front() gives d[0] for a deque grown and shrunk at both ends
 * (its items cross several blocks of 64) */
static int dq_front_works(void)
{
    PyObject *d = PyObject_CallNoArgs(deque_type), *r;
    int ok = d != NULL && Py_IS_TYPE(d, (PyTypeObject *)deque_type)
        && Py_TYPE(d)->tp_as_sequence != NULL && Py_TYPE(d)->tp_as_sequence->sq_item != NULL;
    static const int steps[] = {200, -150, -200, 130, -120};     /* + append, - appendleft */
    for (size_t k = 0; ok && k < sizeof(steps) / sizeof(steps[0]); k++) {
        for (int i = 0; ok && i < abs(steps[k]); i++) {
            PyObject *v = PyLong_FromLong(k * 1000 + i);
            r = v == NULL ? NULL : call_method1(d, steps[k] > 0 ? s_append : s_appendleft, v);
            xdecref(v);
            ok = r != NULL;
            xdecref(r);
            if (ok) {
                PyObject *f = Py_TYPE(d)->tp_as_sequence->sq_item(d, 0);
                ok = f != NULL && f == dq_front(d);
                xdecref(f);
            }
            /* shrink from the front too, every third step */
            if (ok && i % 3 == 2 && Py_SIZE(d) > 1) {
                r = call_method0(d, s_popleft);
                ok = r != NULL;
                xdecref(r);
                PyObject *f = ok ? Py_TYPE(d)->tp_as_sequence->sq_item(d, 0) : NULL;
                ok = f != NULL && f == dq_front(d);
                xdecref(f);
            }
        }
    }
    xdecref(d);
    PyErr_Clear();
    return ok;
}

/* q[0] (new reference): a deque's front in place, or through its sq_item */
CONT_HOT PyObject *first_of(PyObject *q)
{
    if (Py_IS_TYPE(q, (PyTypeObject *)deque_type)) {
        if (dq_in_place && Py_SIZE(q) > 0)
            return held_ref(dq_front(q));      /* a tasklet */
        return Py_TYPE(q)->tp_as_sequence->sq_item(q, 0);
    }
    return PySequence_GetItem(q, 0);
}

/* whether q[0] is o: 1 or 0, -1 with an error (an empty queue, ...) */
CONT_HOT int front_is(PyObject *q, PyObject *o)
{
    if (dq_in_place && Py_IS_TYPE(q, (PyTypeObject *)deque_type) && Py_SIZE(q) > 0)
        return dq_front(q) == o;
    PyObject *f = first_of(q);
    xdecref(f);
    return f == NULL ? -1 : f == o;
}

/* len(q); a deque's length is its ob_size */
CONT_HOT Py_ssize_t len_of(PyObject *q)
{
    return Py_IS_TYPE(q, (PyTypeObject *)deque_type) ? Py_SIZE(q) : PyObject_Size(q);
}

/* c.switch() or c.switch(to=to); a plain continulet switches through
 * _continuation's C API, without a method call */
static OUT_OF_LINE PyObject *switch_method(PyObject *c, PyObject *to)
{
    PyObject *args[2] = {c, to};
    PyObject *kw = to != NULL ? kw_to : NULL;
    return PyObject_VectorcallMethod(s_switch, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, kw);
}

CONT_HOT PyObject *cont_switch(PyObject *c, PyObject *to)
{
    if (Py_IS_TYPE(c, capi->continulet_type) || Py_IS_TYPE(c, (PyTypeObject *)tcont_type))
        return capi->switch_to(c, NULL, to);
    return switch_method(c, to);
}

/* The Python-level call that a tasklet's switch away is the tail of: its
 * fast-call arguments, and the tasklet that the C code holds meanwhile.
 * A tasklet that pauses must not hold more references than the GC can see
 * (capi.h, switch_in_call): else it is never found when it is dropped. */
typedef struct {
    PyObject *const *args, *const *end;
    PyObject *held;
} in_call;

/* cont_switch(c, to) within that call */
CONT_HOT PyObject *cont_switch_in(PyObject *c, PyObject *to, const in_call *ic)
{
    if (ic == NULL || !Py_IS_TYPE(c, (PyTypeObject *)tcont_type))
        return cont_switch(c, to);
    return capi->switch_in_call(c, to, ic->args, ic->end, ic->held);
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
                              PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *old = PyObject_Vectorcall(setter, args, (size_t)nargs, kwnames);
    if (refresh_callback(dict, name, cache) < 0)
        Py_CLEAR(old);
    return old;
}

static PyObject *accel_set_schedule_callback(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    return set_callback(py_set_schedule_cb, sched_dict, s_schedule_cb, &schedule_cb, args, nargs, kwnames);
}

static PyObject *accel_set_channel_callback(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    return set_callback(py_set_channel_cb, chan_dict, s_channel_cb, &channel_cb, args, nargs, kwnames);
}

/* The running thread's _ThreadState (new reference), or NULL without an
 * exception when the thread has none yet: the Python code creates it. */
CONT_HOT PyObject *thread_state(void)
{
    return thread_state_of(local, s_ts);
}

PyObject *accel_thread_state(void)
{
    return thread_state();
}

/* `len(d) > 1` for a deque; -1 on error */
CONT_HOT int more_than_one(PyObject *d)
{
    Py_ssize_t n = len_of(d);
    return n < 0 ? -1 : n > 1;
}

/* With an error set: call the Python helper func(a, b) that mends the
 * state, keeping the error.  A second error (a second signal landing in
 * the helper, maybe before it did anything) does not replace the first,
 * and the helper, idempotent, is called again. */
static OUT_OF_LINE void mend(PyObject *func, PyObject *a, PyObject *b)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    for (int tries = 0; tries < 2; tries++) {
        PyObject *r = call2(func, a, b);
        if (r != NULL) {
            Py_DECREF(r);
            break;
        }
        PyErr_Clear();
    }
    PyErr_Restore(type, value, tb);
}

/* --- _switch(ts, cur, nxt) ------------------------------------------------- */

/* t's new continulet: _new_cont(_bootstrap, t) (stackless/_lifetime.py) */
static OUT_OF_LINE PyObject *new_cont(PyObject *t)
{
    PyObject *c;
    int r = accel_new_cont(py_bootstrap, t, &c);
    return r > 0 ? c : r < 0 ? NULL : call2(py_new_cont, py_bootstrap, t);
}

/* From the main tasklet's stack: resume t, or start it in a new
 * continulet (the C version of what _switch and _launch do there). */
CONT_HOT int run_from_main(PyObject *t)
{
    PyObject *c = slot(t, t_cont);
    if (c == Py_None) {
        c = new_cont(t);
        if (c == NULL)
            return -1;
        set_slot(t, t_cont, c);
    }
    else {
        Py_INCREF(c);
    }
    PyObject *r = cont_switch(c, NULL);
    if (r == NULL)
        mend(py_not_started, t, c);     /* it may not have started at all */
    Py_DECREF(c);
    return discard(r);
}

static inline int do_switch(PyObject *ts, PyObject *cur, PyObject *nxt, const in_call *ic);
static inline PyObject *take_tempval(PyObject *t);

/* Above 0 while the schedule callback runs, called from C in the middle
 * of a switch (the Python fallbacks' frames say so themselves): a
 * collection there must not kill a dropped tasklet, whose kill switches
 * (stackless/_lifetime.py; Stackless 3.7 crashes). */
static int in_schedule_cb;

static PyObject *in_schedule_callback(PyObject *mod, PyObject *unused)
{
    (void)mod; (void)unused;
    return PyBool_FromLong(in_schedule_cb > 0);
}

int accel_schedule_callback(PyObject *prev, PyObject *nxt)
{
    if (schedule_cb == NULL)
        return 0;
    /* its error does not stop the switch (as in Stackless); the callback
     * may replace itself; it is the user's code, traced even when a
     * hidden Python fallback of ours switches */
    PyObject *cb = Py_NewRef(schedule_cb), *args[2] = {prev, nxt};
    in_schedule_cb++;
    PyObject *r = call_visible(cb, args, 2, NULL);
    in_schedule_cb--;
    Py_DECREF(cb);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyObject *where = PyUnicode_FromString("Error in scheduling callback");
        PyErr_WriteUnraisable(where);
        xdecref(where);
    }
    xdecref(r);
    return 0;
}

PyObject *accel_rq_first(PyObject *rq)
{
    return first_of(rq);
}

int accel_rq_popleft(PyObject *rq)
{
    return discard(dq_popleft(rq));
}

PyObject *accel_take_tempval(PyObject *t)
{
    return take_tempval(t);
}


int accel_do_switch(PyObject *ts, PyObject *cur, PyObject *nxt)
{
    return do_switch(ts, cur, nxt, NULL);
}

/* Under run(timeout) the Python switch decides whether a spent soft
 * timeout sends this switch to the waiting run() instead. */
static OUT_OF_LINE int switch_in_python(PyObject *ts, PyObject *cur, PyObject *nxt)
{
    PyObject *args[3] = {ts, cur, nxt};
    return discard(PyObject_Vectorcall(py_switch, args, 3, NULL));
}

/* do_switch from the main tasklet's stack, from `ts.current = nxt` on */
static OUT_OF_LINE int switch_from_main(PyObject *ts, PyObject *nxt)
{
    if (slot(nxt, t_cont) == Py_None) {
        /* before current changes: the allocation may start a garbage
         * collection, whose finalizers must find cur running */
        PyObject *c = new_cont(nxt);
        if (c == NULL)
            return -1;
        set_slot(nxt, t_cont, c);
        Py_DECREF(c);
    }
    set_slot(ts, ts_current, nxt);
    if (run_from_main(nxt) < 0)
        return -1;
    /* _launch(ts) for each tasklet that a dying one passed on */
    PyObject *t;
    while ((t = slot(ts, ts_launch)) != Py_None) {
        Py_INCREF(t);
        set_slot_imm(ts, ts_launch, Py_None);
        set_slot_imm(t, t_cont, Py_None);
        int rc = run_from_main(t);
        Py_DECREF(t);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static OUT_OF_LINE int raise_pending(PyObject *ts)
{
    return discard(PyObject_CallOneArg(py_raise_pending, ts));
}

/* timeout._resumed(cur) under run(timeout) */
static OUT_OF_LINE int timeout_resumed(PyObject *timeout, PyObject *cur)
{
    Py_INCREF(timeout);
    PyObject *r = call_method1(timeout, s_resumed, cur);
    Py_DECREF(timeout);
    return discard(r);
}

/* The part of a switch after it, when cur runs again */
CONT_HOT int after_switch(PyObject *ts, PyObject *cur)
{
    int tracing;
    if ((tracing = slot_true(ts, ts_tracing)) != 0 && (tracing < 0 || accel_tracing_in(ts, cur) < 0))
        return -1;
    PyObject *timeout = slot(ts, ts_timeout);
    if (timeout != Py_None && timeout_resumed(timeout, cur) < 0)
        return -1;
    /* an exception for main that landed after a dying tasklet switched away */
    if (slot(ts, ts_pending) != Py_None && flag(cur, t_is_main))
        return raise_pending(ts);
    return 0;
}

/* The part of a switch from cur to nxt before the stack switch itself: 1
 * when cur must now switch with cont_switch_in(slot(cur, t_cont), *to) and
 * then run after_switch(); else the switch's result, 0 or -1 (it went
 * through main's stack or through the Python code).
 * The C frames of a switch stay on the switching tasklet's stack while it
 * is suspended, and a tasklet's stack is copied out and back in at its
 * switches (between two tasklets, whole): the rare branches are out of
 * line so that this frame stays small (docs/performance.md). */
CONT_HOT int switch_begin(PyObject *ts, PyObject *cur, PyObject *nxt, PyObject **to)
{
    if (slot(ts, ts_timeout) != Py_None)
        return switch_in_python(ts, cur, nxt);
    /* the callback is rare: test it here, not in a call at every switch */
    if (schedule_cb != NULL && accel_schedule_callback(cur, nxt) < 0)
        return -1;
    int tracing = slot_true(ts, ts_tracing);
    if (tracing < 0)
        return -1;
    if (tracing && accel_tracing_out(ts, cur) < 0)
        return -1;
    /* (no cur._frame: on CPython tasklet.frame reads the suspended stack) */
    if (flag(cur, t_is_main))
        return switch_from_main(ts, nxt) < 0 ? -1 : after_switch(ts, cur);
    set_slot(ts, ts_current, nxt);
    int nxt_main = flag(nxt, t_is_main);
    /* to main's stack: a plain switch back; to a tasklet that has not
       started: the same, and main starts it (see switch_from_main) */
    PyObject *t = nxt_main ? NULL : slot(nxt, t_cont);
    if (t == Py_None) {
        set_slot(ts, ts_launch, nxt);
        t = NULL;
    }
    /* Borrowed: the C frames of the switch stay on cur's suspended stack,
     * where the garbage collector cannot see what they hold, and a
     * reference held there would keep a dropped paused tasklet from being
     * found (stackless/_lifetime.py).  Neither is used after the switch. */
    *to = t;
    return 1;
}

CONT_HOT int do_switch(PyObject *ts, PyObject *cur, PyObject *nxt, const in_call *ic)
{
    PyObject *to;
    int rc = switch_begin(ts, cur, nxt, &to);
    if (rc <= 0)
        return rc;
    if (discard(cont_switch_in(slot(cur, t_cont), to, ic)) < 0)
        return -1;
    return after_switch(ts, cur);
}

static PyObject *accel_switch(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_switch(ts, cur, nxt)");
        return NULL;
    }
    /* (from the Python code: its operands stay on the caller's stack) */
    in_call ic = {args, args + nargs, NULL};
    if (do_switch(args[0], args[1], args[2], &ic) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* _take_tempval(t): `v = t._tempval; t._tempval = None; if type(v) is
 * bomb: v.raise_()`.  As in Stackless, the resumed tasklet takes its
 * tempval as the switch's result, leaving None. */
CONT_HOT PyObject *take_tempval(PyObject *t)
{
    PyObject *v = swap_slot_imm(t, t_tempval, Py_None);     /* the slot's reference */
    if (Py_IS_TYPE(v, (PyTypeObject *)bomb_type)) {
        PyObject *r = call_method0(v, s_raise);
        Py_DECREF(v);
        xdecref(r);
        return NULL;
    }
    return v;
}

/* _recover(ts, cur) after an error; returns -1 with the error kept */
static int recover(PyObject *ts, PyObject *cur)
{
    mend(py_recover, ts, cur);
    return -1;
}

/* --- schedule(retval=None) ------------------------------------------------- */

static PyObject *accel_schedule(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    PyObject *ts = NULL, *cur = NULL, *rq = NULL, *nxt = NULL, *result = NULL;
    if (kwnames != NULL || nargs > 1 || (ts = thread_state()) == NULL
            || slot(ts, ts_timeout) != Py_None) {
        xdecref(ts);
        return PyErr_Occurred() ? NULL : PyObject_Vectorcall(py_schedule, args, nargs, kwnames);
    }
    PyObject *retval = nargs ? args[0] : Py_None;
    cur = held_ref(slot(ts, ts_current));
    set_slot(cur, t_tempval, retval == Py_None ? cur : retval);
    rq = held_ref(slot(ts, ts_rq));
    int many = more_than_one(rq);
    if (many < 0)
        goto done;
    if (many) {
        /* the trap is a counter, usually the cached 0 */
        int trap = slot(ts, ts_trap) == zero ? 0 : slot_true(ts, ts_trap);
        if (trap < 0)
            goto done;
        if (trap) {
            PyErr_SetString(PyExc_RuntimeError, "switch_trap");
            goto done;
        }
        nxt = first_of(rq);
        if (nxt == NULL)
            goto done;
        if (nxt == cur) {
            Py_CLEAR(nxt);
            if (dq_first_to_end(rq, cur, 0) < 0)
                goto done;
            if ((nxt = first_of(rq)) == NULL) {
                recover(ts, cur);
                goto done;
            }
        }
        in_call ic = {args, args + nargs, cur};
        if (do_switch(ts, cur, nxt, &ic) < 0) {
            recover(ts, cur);
            goto done;
        }
    }
    result = take_tempval(cur);
done:
    held_xdrop(nxt);
    held_xdrop(rq);
    held_xdrop(cur);
    held_drop(ts);
    return result;
}

/* --- channel.send(value) / channel.receive() -------------------------------
 *
 * Exception safety (docs/design.md): the C code decides first, from state
 * it only reads, whether it handles the operation; otherwise it calls the
 * Python original before changing anything.  Then it changes the channel
 * and the run queue in one stretch of C that runs no Python code: the
 * references it replaces are kept and dropped only once the state is
 * consistent (a __del__ may use channels).  With the GIL held no lock is
 * needed.  If the switch that follows fails, _recover() makes the running
 * tasklet current again and takes it off the channel. */

/* Whether the usual case can apply to this channel at all: no channel
 * callback, and slots that hold what the Python code put there.  (The
 * other slots are tested where they are read, as the Python code reads
 * them: the preference and schedule_all when pairing, closing when
 * blocking; an unset one sends the operation to the Python code.) */
CONT_HOT int plain_channel(PyObject *ch)
{
    if (channel_cb != NULL)
        return 0;
    PyObject *b = slot(ch, c_balance), *q = slot(ch, c_queue);
    return q != NULL && Py_IS_TYPE(q, &accel_waitqueue_type) && b != NULL
        && PyLong_CheckExact(b);
}

/* An exact int that is almost always -1, 0 or 1 (a balance, a
 * preference): those are CPython's cached small ints, recognised by
 * identity.  *overflow as for PyLong_AsLongAndOverflow. */
CONT_HOT long small_int(PyObject *v, int *overflow)
{
    *overflow = 0;
    if (v == zero)
        return 0;
    if (v == one)
        return 1;
    if (v == minus_one)
        return -1;
    return PyLong_AsLongAndOverflow(v, overflow);
}

/* PyLong_FromLong(v), the usual -1, 0 and 1 without a call */
CONT_HOT PyObject *small_long(long v)
{
    if (v == 0)
        return imm_ref(zero);
    if (v == 1)
        return imm_ref(one);
    if (v == -1)
        return imm_ref(minus_one);
    return PyLong_FromLong(v);
}

/* balance of a plain channel; -2 on overflow (the Python code handles it) */
CONT_HOT long balance_of(PyObject *ch)
{
    int overflow;
    long b = small_int(slot(ch, c_balance), &overflow);
    return overflow || b == LONG_MIN || b == LONG_MAX ? -2 : b;
}

/* An exact True/False/int slot read without calling anything: 1, 0, or
 * -1 when it holds something else (then the Python code handles it). */
CONT_HOT int plain_flag(PyObject *o, Py_ssize_t off)
{
    PyObject *v = slot(o, off);
    if (v == Py_True)
        return 1;
    if (v == Py_False || v == NULL)
        return v == NULL ? -1 : 0;
    if (v == zero)
        return 0;
    if (PyLong_CheckExact(v)) {
        int overflow;
        long n = PyLong_AsLongAndOverflow(v, &overflow);
        return overflow ? 1 : n != 0;
    }
    return -1;
}

/* The switch that a channel operation ends with, when its C function can
 * end with the tail call of _continuation's switch_then (capi.h): then
 * the C frame of accel_send()/accel_receive() is not under the tasklet's
 * suspended stack, which is copied at every switch (docs/performance.md). */
typedef struct {
    PyObject *c, *to;           /* borrowed (see switch_begin) */
    PyObject *nxt;              /* owned */
} tail_switch;

/* pair() and wait_here() return it for "finish with the tail call" */
static char tail_marker;
#define TAIL ((PyObject *)&tail_marker)

/* do_switch(ts, cur, nxt, NULL) or, when a tail call can do the switch
 * and the rest, 1 with *out ready for it (nxt still to be set) */
CONT_HOT int switch_or_tail(PyObject *ts, PyObject *cur, PyObject *nxt, tail_switch *out)
{
    PyObject *to;
    int rc = switch_begin(ts, cur, nxt, &to);
    if (rc <= 0)
        return rc;
    PyObject *c = slot(cur, t_cont);
    if (Py_IS_TYPE(c, (PyTypeObject *)tcont_type) || Py_IS_TYPE(c, capi->continulet_type)) {
        out->c = c;
        out->to = to;
        return 1;
    }
    if (discard(cont_switch(c, to)) < 0)
        return -1;
    return after_switch(ts, cur);
}

/* The usual case of pairing with the first waiter of ch's queue, `target`,
 * which is in this thread: a receiver gets `value` and runs now, the
 * sender going last (sending, value != NULL); or the sender's value is
 * taken and the sender goes to the end of the run queue (receiving).
 * Returns the received value / None; NULL on error; TAIL (sending) when
 * the caller must finish with the tail call of *out. */
CONT_HOT PyObject *pair(PyObject *ch, PyObject *ts, PyObject *cur, PyObject *queue, PyObject *rq,
                      PyObject *target, long balance, PyObject *value, tail_switch *out)
{
    int sending = value != NULL;
    PyObject *nb = small_long(balance + (sending ? 1 : -1));
    if (nb == NULL)
        return NULL;
    /* -- transaction */
    PyObject *gone = accel_wq_popleft(queue);    /* target (the caller saw it first) */
    PyObject *old = swap_slot(target, t_tempval, sending ? value : Py_None);
    PyObject *olds[2] = {swap_slot(ch, c_balance, nb), swap_slot_imm(target, t_channel, Py_None)};
    set_blocked(target, t_blocked, 0);
    set_flag(target, t_scheduled, 1);
    /* sending: rq.insert(1, target) and, cur being rq[0] (the caller
     * checked), rq.rotate(-1); that is cur to the end, then target in
     * front.  Receiving: rq.append(target). */
    PyObject *r = sending ? (dq_first_to_end(rq, cur, 1) < 0 ? NULL : dq_appendleft_k(rq, target, 1))
                          : dq_append_k(rq, target, 1);
    /* -- end of transaction: drop what was replaced */
    Py_DECREF(nb);
    held_drop(gone);
    /* (one by one: gcc kept a loop here) */
    xdecref(olds[0]);
    xdecref(olds[1]);
    if (r == NULL) {
        xdecref(old);
        return NULL;
    }
    imm_drop(r);
    if (!sending)
        return old;                     /* the sender's value */
    xdecref(old);                    /* the receiver's previous tempval */
    /* the receiver runs now; we go last */
    /* rq[0] is target now, unless a finalizer above changed the run queue */
    PyObject *nxt = first_of(rq);
    if (nxt == NULL)
        return NULL;
    int rc = nxt != cur ? switch_or_tail(ts, cur, nxt, out) : 0;
    if (rc > 0) {
        out->nxt = nxt;
        return TAIL;
    }
    Py_DECREF(nxt);
    if (rc < 0)
        return NULL;
    return take_tempval(cur);
}

/* wait_here's queueing failed (no memory): put the fields back */
static OUT_OF_LINE void undo_wait(PyObject *ch, PyObject *cur, int old_blocked, PyObject *olds[2],
                                  PyObject *nb, PyObject *old)
{
    set_blocked(cur, t_blocked, old_blocked);
    PyObject *back[2] = {swap_slot(cur, t_channel, olds[0]), swap_slot(ch, c_balance, olds[1])};
    for (int i = 0; i < 2; i++) {
        xdecref(olds[i]);
        xdecref(back[i]);
    }
    Py_DECREF(nb);
    xdecref(old);
}

/* The usual case of blocking: queue cur on ch as a sender of `value` (dir
 * 1) or a receiver (dir -1), leave the run queue (cur is rq[0], another
 * tasklet follows) and switch.  Returns what cur finds in its tempval when
 * it resumes (a receiver takes it), NULL on error, or TAIL when the caller
 * must finish with the tail call of *out. */
CONT_HOT PyObject *wait_here(PyObject *ch, PyObject *ts, PyObject *cur, PyObject *queue,
                           PyObject *rq, long balance, int dir, PyObject *value, tail_switch *out)
{
    PyObject *nb = small_long(balance + dir);
    if (nb == NULL)
        return NULL;
    /* -- transaction */
    PyObject *old = value != NULL ? swap_slot(cur, t_tempval, value) : NULL;
    int old_blocked = blocked(cur, t_blocked);
    set_blocked(cur, t_blocked, dir > 0 ? 1 : -1);
    PyObject *olds[2] = {swap_slot(cur, t_channel, ch), swap_slot(ch, c_balance, nb)};
    if (accel_wq_append(queue, cur) < 0) {
        undo_wait(ch, cur, old_blocked, olds, nb, old);
        return NULL;
    }
    /* -- end of transaction; cur leaves the run queue and blocks */
    Py_DECREF(nb);
    xdecref(olds[0]);
    xdecref(olds[1]);
    xdecref(old);
    PyObject *nxt = NULL;
    int rc = -1, first = front_is(rq, cur);
    if (first > 0 && len_of(rq) > 1) {
        PyObject *gone = dq_popleft_k(rq, 1);
        if (gone != NULL) {
            held_drop(gone);            /* cur: op->cur holds it */
            set_flag(cur, t_scheduled, 0);
            nxt = first_of(rq);
            rc = nxt == NULL ? -1 : switch_or_tail(ts, cur, nxt, out);
            if (rc > 0) {
                out->nxt = nxt;
                return TAIL;
            }
        }
    }
    else if (first >= 0 && !PyErr_Occurred()) {
        /* a finalizer changed the run queue meanwhile: the Python code decides */
        rc = discard(call2(py_leave, ts, cur));
    }
    xdecref(nxt);
    if (rc < 0)
        return NULL;
    return take_tempval(cur);
}

/* The thread state, current tasklet, queue and run queue of a channel
 * operation in the usual case, and the channel's balance; 0 when the
 * Python code must do it (nothing changed), -1 on error. */
typedef struct {
    PyObject *ts, *cur, *queue, *rq;
    long balance;
} Op;

/* `ts` is the thread's state from thread_state() (taken; may be NULL) */
CONT_HOT int op_begin(Op *op, PyObject *ch, PyObject *ts)
{
    op->ts = ts;
    op->cur = op->queue = op->rq = NULL;
    if (ts == NULL || !plain_channel(ch))
        return PyErr_Occurred() ? -1 : 0;
    op->cur = held_ref(slot(op->ts, ts_current));
    op->queue = held_ref(slot(ch, c_queue));
    op->rq = held_ref(slot(op->ts, ts_rq));
    op->balance = balance_of(ch);
    /* the channel's queue is a WaitQueue (plain_channel() checked it) and
       the run queue a deque whose C functions install() found: pair() and
       wait_here() rely on it */
    return op->balance != -2 && Py_IS_TYPE(op->rq, (PyTypeObject *)deque_type)
        && fn_popleft != NULL && plain_flag(op->ts, ts_trap) == 0;
}

CONT_HOT void op_end(Op *op)
{
    held_xdrop(op->ts);
    held_xdrop(op->cur);
    held_xdrop(op->queue);
    held_xdrop(op->rq);
}

/* The first waiter if it is in this thread and the channel's preference
 * is `pref_ok` (-1 sending: the receiver runs; receiving: not 1), without
 * schedule_all; else NULL without an error. */
CONT_HOT PyObject *usual_partner(PyObject *ch, Op *op, int sending)
{
    PyObject *pref = slot(ch, c_preference);
    if (pref == NULL || !PyLong_CheckExact(pref) || plain_flag(ch, c_schedule_all) != 0)
        return NULL;
    int overflow;
    long p = small_int(pref, &overflow);
    if (overflow || (sending ? p != -1 : p == 1))
        return NULL;
    /* a send switches to the receiver: not while this thread collects
     * garbage (the Python code pairs without switching then) */
    if (sending && !capi->may_switch())
        return NULL;
    PyObject *target = accel_wq_first(op->queue);
    if (target == NULL || slot(target, t_ts) != op->ts)
        return NULL;
    return held_ref(target);
}

/* Whether cur may block here in the usual way: cur is rq[0] and another
 * tasklet follows, the channel is open, no block trap. */
CONT_HOT int usual_wait(PyObject *ch, Op *op)
{
    if (plain_flag(ch, c_closing) != 0 || flag(op->cur, t_block_trap))
        return 0;
    Py_ssize_t n = len_of(op->rq);
    if (n < 2)
        return 0;
    return front_is(op->rq, op->cur) > 0;
}

/* What the running tasklet holds in its tempval goes before a channel
 * operation (the value it sends or receives replaces it), while the state
 * is consistent: its __del__ may use channels.  Without a channel
 * callback only: the Python code calls that first. */
CONT_HOT void drop_tempval(PyObject *ts)
{
    if (channel_cb != NULL || ts == NULL)
        return;
    PyObject *cur = slot(ts, ts_current);
    if (slot(cur, t_tempval) != Py_None)
        Py_DECREF(swap_slot_imm(cur, t_tempval, Py_None));
}

/* What accel_send/accel_receive do after their switch once cur runs
 * again, when the switch was their tail call (switch_then): r is the
 * switch's result; ts and cur are theirs to drop. */
CONT_HOT PyObject *op_finish(PyObject *r, PyObject *ts, PyObject *cur)
{
    int rc = discard(r) < 0 ? -1 : after_switch(ts, cur);
    PyObject *v = rc < 0 ? NULL : take_tempval(cur);
    if (v == NULL)
        recover(ts, cur);
    held_drop(ts);
    held_drop(cur);
    return v;
}

static PyObject *receive_then(PyObject *r, PyObject *ts, PyObject *cur)
{
    return op_finish(r, ts, cur);
}

static PyObject *send_then(PyObject *r, PyObject *ts, PyObject *cur)
{
    PyObject *v = op_finish(r, ts, cur);
    if (v == NULL || v == Py_None)
        return v;
    Py_DECREF(v);
    return imm_ref(Py_None);
}

/* The end of a channel operation whose pair() or wait_here() gave TAIL:
 * what op holds goes to `then` (ts, cur) or now: nxt, which ts.current
 * holds since switch_begin(), and queue and rq, which nothing uses after
 * the switch, unless dropping them would free them (their __del__ must
 * not run between switch_begin() and the switch: then they go after it,
 * without the tail call, as before). */
CONT_HOT PyObject *tail_end(Op *op, tail_switch *sw, cont_then_fn then)
{
    held_drop(sw->nxt);
    if (Py_REFCNT(op->queue) > 1 && Py_REFCNT(op->rq) > 1) {
        held_drop(op->queue);
        held_drop(op->rq);
        return capi->switch_then(sw->c, sw->to, then, op->ts, op->cur);
    }
    PyObject *r = capi->switch_then(sw->c, sw->to, then, op->ts, op->cur);
    held_drop(op->queue);
    held_drop(op->rq);
    return r;
}

static PyObject *accel_send(PyObject *ch, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1)
        return call_bound(py_send, ch, args, nargs, NULL);
    PyObject *value = args[0], *r = NULL;
    PyObject *ts = thread_state();
    if (ts == NULL && PyErr_Occurred())
        return NULL;
    drop_tempval(ts);
    Op op;
    tail_switch sw;
    int usual = op_begin(&op, ch, ts);
    if (usual > 0 && op.balance < 0) {
        PyObject *target = usual_partner(ch, &op, 1);
        if (target != NULL && front_is(op.rq, op.cur) > 0) {
            r = pair(ch, op.ts, op.cur, op.queue, op.rq, target, op.balance, value, &sw);
            Py_DECREF(target);
            goto done;
        }
        xdecref(target);
        usual = PyErr_Occurred() ? -1 : 0;
    }
    else if (usual > 0) {
        if (usual_wait(ch, &op)) {
            r = wait_here(ch, op.ts, op.cur, op.queue, op.rq, op.balance, 1, value, &sw);
            goto done;
        }
        usual = PyErr_Occurred() ? -1 : 0;
    }
    op_end(&op);
    if (usual < 0)
        return NULL;
    return call2(py_send, ch, value);
done:
    if (r == TAIL)
        return tail_end(&op, &sw, send_then);
    if (r == NULL)
        recover(op.ts, op.cur);
    else if (r != Py_None) {
        Py_DECREF(r);
        r = imm_ref(Py_None);
    }
    op_end(&op);
    return r;
}

static PyObject *accel_receive(PyObject *ch, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 0)
        return call_bound(py_receive, ch, args, nargs, NULL);
    PyObject *r = NULL;
    PyObject *ts = thread_state();
    if (ts == NULL && PyErr_Occurred())
        return NULL;
    drop_tempval(ts);
    Op op;
    tail_switch sw;
    int usual = op_begin(&op, ch, ts);
    if (usual > 0 && op.balance > 0) {
        PyObject *target = usual_partner(ch, &op, 0);
        if (target != NULL) {
            r = pair(ch, op.ts, op.cur, op.queue, op.rq, target, op.balance, NULL, &sw);
            Py_DECREF(target);
            if (r != NULL && Py_IS_TYPE(r, (PyTypeObject *)bomb_type)) {
                xdecref(call_method0(r, s_raise));
                Py_CLEAR(r);
                op_end(&op);
                return NULL;    /* the exception it carries is the result */
            }
            goto done;
        }
        usual = PyErr_Occurred() ? -1 : 0;
    }
    else if (usual > 0) {
        if (usual_wait(ch, &op)) {
            r = wait_here(ch, op.ts, op.cur, op.queue, op.rq, op.balance, -1, NULL, &sw);
            goto done;
        }
        usual = PyErr_Occurred() ? -1 : 0;
    }
    op_end(&op);
    if (usual < 0)
        return NULL;
    return PyObject_CallOneArg(py_receive, ch);
done:
    if (r == TAIL)
        return tail_end(&op, &sw, receive_then);
    if (r == NULL)
        recover(op.ts, op.cur);
    op_end(&op);
    return r;
}

/* --- install(namespace) ---------------------------------------------------- */


static PyObject *method_descr(PyObject *cls, PyMethodDef *def)
{
    PyObject *d = PyDescr_NewMethod((PyTypeObject *)cls, def);
    if (d == NULL || PyObject_SetAttrString(cls, def->ml_name, d) < 0) {
        xdecref(d);
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
 * Returns {"_switch": ..., "schedule": ..., "set_schedule_callback": ...,
 * "set_channel_callback": ...}, the C versions that the Python code puts
 * in place of its own. */
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
            || (py_bootstrap = need(ns, "_bootstrap")) == NULL
            || (py_new_cont = need(ns, "_new_cont")) == NULL
            || (tcont_type = need(ns, "_TaskletCont")) == NULL
            || (py_switch = need(ns, "_switch")) == NULL
            || (py_schedule = need(ns, "schedule")) == NULL
            || (py_recover = need(ns, "_recover")) == NULL || (py_leave = need(ns, "_leave")) == NULL
            || (py_raise_pending = need(ns, "_raise_pending")) == NULL
            || (py_not_started = need(ns, "_not_started")) == NULL
            || (py_set_schedule_cb = need(ns, "set_schedule_callback")) == NULL
            || (py_set_channel_cb = need(ns, "set_channel_callback")) == NULL)
        goto fail;
    if ((py_send = PyObject_GetAttrString(channel, "send")) == NULL
            || (py_receive = PyObject_GetAttrString(channel, "receive")) == NULL
            || (cont = PyImport_ImportModule("_continuation")) == NULL
            || (capi = cont_capi_import()) == NULL
            || (coll = PyImport_ImportModule("collections")) == NULL
            || (deque_type = PyObject_GetAttrString(coll, "deque")) == NULL
            || (d_popleft = PyObject_GetAttrString(deque_type, "popleft")) == NULL
            || (d_append = PyObject_GetAttrString(deque_type, "append")) == NULL
            || (d_appendleft = PyObject_GetAttrString(deque_type, "appendleft")) == NULL)
        goto fail;
    /* the Python fallbacks run hidden from trace functions (stackless_hide.c) */
    PyObject **fallbacks[] = {&py_new_cont, &py_switch, &py_schedule, &py_recover, &py_leave, &py_raise_pending,
                              &py_not_started, &py_set_schedule_cb, &py_set_channel_cb, &py_send,
                              &py_receive};
    for (size_t i = 0; i < sizeof(fallbacks) / sizeof(fallbacks[0]); i++)
        if (hide_in_place(fallbacks[i]) < 0)
            goto fail;
    fn_append = deque_method(d_append, METH_O);
    fn_appendleft = deque_method(d_appendleft, METH_O);
    /* fn_popleft last: it says whether all four are there */
    fn_popleft = fn_append && fn_appendleft ? deque_method(d_popleft, METH_NOARGS) : NULL;
    if ((t_cont = slot_offset(tasklet, "_cont")) < 0 || (t_ts = slot_offset(tasklet, "_ts")) < 0
            || (t_tempval = slot_offset(tasklet, "_tempval")) < 0
            || (t_blocked = blocked_offset(tasklet)) < 0
            || (t_channel = slot_offset(tasklet, "_channel")) < 0
            || (t_scheduled = flag_offset(tasklet, "_scheduled")) < 0
            || (t_is_main = flag_offset(tasklet, "_is_main")) < 0
            || (t_block_trap = flag_offset(tasklet, "_block_trap")) < 0
            || (c_queue = slot_offset(channel, "_queue")) < 0
            || (c_balance = slot_offset(channel, "_balance")) < 0
            || (c_preference = slot_offset(channel, "_preference")) < 0
            || (c_schedule_all = slot_offset(channel, "_schedule_all")) < 0
            || (c_closing = slot_offset(channel, "_closing")) < 0
            || (ts_current = slot_offset(tstate, "current")) < 0 || (ts_rq = slot_offset(tstate, "rq")) < 0
            || (ts_trap = slot_offset(tstate, "trap")) < 0 || (ts_timeout = slot_offset(tstate, "timeout")) < 0
            || (ts_launch = slot_offset(tstate, "launch")) < 0
            || (ts_tracing = slot_offset(tstate, "tasklet_tracing")) < 0
            || (ts_pending = slot_offset(tstate, "pending")) < 0)
        goto fail;
    static const char *names[] = {"ts", "switch", "popleft", "append", "appendleft", "raise_",
                                  "resumed", "_schedule_cb", "_channel_cb"};
    PyObject **slots[] = {&s_ts, &s_switch, &s_popleft, &s_append, &s_appendleft, &s_raise,
                          &s_resumed, &s_schedule_cb, &s_channel_cb};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*slots[i] = PyUnicode_InternFromString(names[i])) == NULL)
            goto fail;
    if ((kw_to = Py_BuildValue("(s)", "to")) == NULL || (minus_one = PyLong_FromLong(-1)) == NULL
            || (one = PyLong_FromLong(1)) == NULL || (zero = PyLong_FromLong(0)) == NULL)
        goto fail;
    dq_in_place = dq_front_works();

    PyObject *d;
    if ((d = method_descr(channel, &send_def)) == NULL)
        goto fail;
    Py_DECREF(d);
    if ((d = method_descr(channel, &receive_def)) == NULL)
        goto fail;
    Py_DECREF(d);
    if (refresh_callback(args[1], s_schedule_cb, &schedule_cb) < 0
            || refresh_callback(args[2], s_channel_cb, &channel_cb) < 0)
        goto fail;
    PyObject *sched = PyObject_GetAttrString(mod, "schedule");
    PyObject *sw = PyObject_GetAttrString(mod, "_switch");
    PyObject *set_s = PyObject_GetAttrString(mod, "set_schedule_callback");
    PyObject *set_c = PyObject_GetAttrString(mod, "set_channel_callback");
    PyObject *replaced = sched == NULL || sw == NULL || set_s == NULL || set_c == NULL ? NULL
        : Py_BuildValue("{sOsOsOsO}", "_switch", sw, "schedule", sched,
                        "set_schedule_callback", set_s, "set_channel_callback", set_c);
    xdecref(sched);
    xdecref(sw);
    xdecref(set_s);
    xdecref(set_c);
    /* new channels' queues are WaitQueues (stackless_waitqueue.c) from
       here on: the Python __init__ makes them with _new_queue(), and
       channel_accel_install() learns what __init__ makes */
    if (replaced == NULL || tasklet_accel_install(ns, tasklet, ts_rq, replaced) < 0
            || run_accel_install(ns, tasklet, tstate) < 0
            || PyDict_SetItemString(args[2], "_new_queue", (PyObject *)&accel_waitqueue_type) < 0
            || channel_accel_install(channel) < 0) {
        xdecref(replaced);
        goto fail;
    }
    static const char *const chan_flags[] = {"_balance", "_preference", "_schedule_all",
                                             "_closing", NULL};
    accel_skip_flags_in_gc(ns, "_ChannelFlags", (PyTypeObject *)channel, chan_flags);
    accel_fast_traverse((PyTypeObject *)channel, 1);
    sched_dict = Py_NewRef(args[1]);
    chan_dict = Py_NewRef(args[2]);
    Py_DECREF(tasklet);
    Py_DECREF(channel);
    Py_DECREF(tstate);
    Py_DECREF(cont);
    Py_DECREF(coll);
    return replaced;
fail:
    xdecref(tasklet);
    xdecref(channel);
    xdecref(tstate);
    xdecref(cont);
    xdecref(coll);
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
    {"set_schedule_callback", (PyCFunction)(void (*)(void))accel_set_schedule_callback,
     METH_FASTCALL | METH_KEYWORDS,
     "Install callback(prev, next), called before every switch; return the previous one."},
    {"set_channel_callback", (PyCFunction)(void (*)(void))accel_set_channel_callback,
     METH_FASTCALL | METH_KEYWORDS,
     "Install callback(channel, tasklet, sending, willblock); return the previous one."},
    {"forget_thread", forget_thread, METH_NOARGS,
     "The running thread's scheduler is going away: drop the cached reference."},
    {"in_schedule_callback", in_schedule_callback, METH_NOARGS,
     "Whether the C code is running the schedule callback (in the middle of a switch)."},
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
    PyObject *m = PyModule_Create(&accel_module);
    if (m != NULL && (PyModule_AddFunctions(m, hide_methods) < 0
                      || PyModule_AddFunctions(m, run_methods) < 0 || tasklet_flags_add(m) < 0
                      || waitqueue_add(m) < 0))
        Py_CLEAR(m);
    return m;
}
