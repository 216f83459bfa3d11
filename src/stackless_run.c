/* _stackless_accel, part four: running tasklets.  run(), the function at
 * the bottom of every tasklet's stack (_bootstrap), and the swap of the
 * per-tasklet trace and profile functions at each switch.
 *
 * They are C for two reasons: a Python frame of the scheduler is seen by
 * every trace and profile function of the program (Stackless's scheduler
 * is C and shows none), and their bytecode was most of the cost of a
 * short-lived tasklet.  As elsewhere, the Python code (stackless/
 * _switching.py, _scheduler.py) is the reference: the usual case is done
 * here step for step, anything else calls the Python original, hidden
 * (stackless_hide.c).
 *
 * The C _bootstrap calls the tasklet's function from C, so a tasklet's
 * stack has no Python frame of ours at the bottom.  It is registered as a
 * bottom for pickling like the Python one (docs/design.md, "the
 * bottom-frame contract"): a restored tasklet ends through _end.
 */
#include <Python.h>
#include "slots.h"
#include "stackless_accel.h"

static Py_ssize_t t_ts, t_trace, t_profile, t_started, t_tempval, t_func, t_args,
                  t_kwargs, t_context, t_is_main, t_cont, t_scheduled, t_base, t_alive;
static Py_ssize_t ts_current, ts_rq, ts_timeout, ts_tracing, ts_launch, ts_pending, ts_trap,
                  ts_watchdogs;
static PyObject *sys_gettrace, *sys_settrace, *sys_getprofile, *sys_setprofile;
static PyObject *fresh_context, *py_bootstrap, *py_tracing_per_tasklet, *py_end, *py_end_run, *py_run, *set_context,
                *permute, *tasklet_exit, *bomb_type, *s_raise;

/* The raised exception, normalized and with its traceback (new
 * reference), as `except BaseException as e` has it; the error is cleared. */
static PyObject *fetch_error(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value != NULL ? value : Py_NewRef(Py_None);
}

/* Raise e again, as fetch_error() took it (the reference is stolen). */
static void restore_error(PyObject *e)
{
    PyObject *tb = PyException_GetTraceback(e);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(e)), e, tb);
}

/* obj.<name>(arg) (no argument if arg is NULL), hidden */
static PyObject *call_hidden_method(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *meth = PyObject_GetAttr(obj, name);
    if (meth == NULL)
        return NULL;
    PyObject *r = call_hidden(meth, &arg, arg != NULL, NULL);
    Py_DECREF(meth);
    return r;
}

/* --- the trace and profile functions of each tasklet --------------------- */

/* _tracing_out(ts, cur): cur is leaving, keep the functions it has now.
 * Under run(timeout) the thread's trace function is the tick counter,
 * which stays in place. */
int accel_tracing_out(PyObject *ts, PyObject *cur)
{
    if (slot(ts, ts_timeout) == Py_None) {
        PyObject *f = PyObject_CallNoArgs(sys_gettrace);
        if (f == NULL)
            return -1;
        set_slot(cur, t_trace, f);
        Py_DECREF(f);
    }
    PyObject *p = PyObject_CallNoArgs(sys_getprofile);
    if (p == NULL)
        return -1;
    set_slot(cur, t_profile, p);
    Py_DECREF(p);
    return 0;
}

/* sys.set<what>(want) unless sys.get<what>() is want already: turning
 * tracing on or off costs much more than asking (3.12+ re-instruments
 * the code that runs) */
static int put_function(PyObject *get, PyObject *set, PyObject *want)
{
    PyObject *now = PyObject_CallNoArgs(get);
    if (now == NULL)
        return -1;
    Py_DECREF(now);
    if (now == want)
        return 0;
    PyObject *r = PyObject_CallOneArg(set, want);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* _tracing_in(ts, cur): cur runs (again), give the thread its functions */
int accel_tracing_in(PyObject *ts, PyObject *cur)
{
    if (slot(ts, ts_timeout) == Py_None
            && put_function(sys_gettrace, sys_settrace, slot(cur, t_trace)) < 0)
        return -1;
    return put_function(sys_getprofile, sys_setprofile, slot(cur, t_profile));
}

/* --- _bootstrap(cont, self) ----------------------------------------------- */

/* id(frame) as an int (borrowed).  The tasklets that one run() starts all
 * have the same frame below them: they share one int, not one each (it is
 * only an address, compared with id() of frames: a new frame at the same
 * address has the same id, so reusing the int is exact). */
static PyObject *base_id(PyFrameObject *below)
{
    static void *last_below;
    static PyObject *last_base;
    if (below != last_below || last_base == NULL) {
        PyObject *base = PyLong_FromVoidPtr(below);
        if (base == NULL)
            return NULL;
        Py_XSETREF(last_base, base);
        last_below = below;
    }
    return last_base;
}

/* Its first part, up to the call: what the tasklet needs on its own
 * stack before its function runs.  0, or -1 with the error that leaves
 * the tasklet unstarted (see _not_started). */
static OUT_OF_LINE int begin(PyObject *ts, PyObject *self)
{
    /* started before anything can fail: what lands in the start-up calls
       (a profile function's TaskletExit) is the tasklet's own (slp37) */
    set_flag(self, t_started, 1);
    /* the frame below ours (the starter's) ends tasklet.recursion_depth */
    PyFrameObject *below = PyEval_GetFrame();
    PyObject *base = below != NULL ? base_id(below) : Py_None;
    if (base == NULL)
        return -1;
    set_slot(self, t_base, base);
    int tracing = slot_true(ts, ts_tracing);
    if (tracing < 0)
        return -1;
    if (tracing) {
        if (accel_tracing_in(ts, self) < 0)
            return -1;
    }
    else {
        /* sys.gettrace() or sys.getprofile() is not None: read where they
         * read it (the same field on every version), not with two calls
         * of them for every tasklet that starts */
        PyThreadState *pts = PyThreadState_Get();
        PyObject *args[2] = {ts, self};
        if ((pts->c_traceobj != NULL || pts->c_profileobj != NULL)
                && discard(call_hidden(py_tracing_per_tasklet, args, 2, NULL)) < 0)
            return -1;
    }
    return 0;
}

/* The function's arguments go once it returned.  Out of line: the error
 * that this keeps aside would otherwise take three slots in the frame of
 * _bootstrap, which stays under the tasklet's function for its whole life
 * (copied at every switch, see accel_bootstrap). */
static OUT_OF_LINE void drop_args(PyObject *self)
{
    if (!PyErr_Occurred()) {
        /* (their release reports its own errors, leaving none set) */
        set_slot(self, t_args, Py_None);
        set_slot(self, t_kwargs, Py_None);
        return;
    }
    /* (what their release runs must not disturb the function's error) */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    set_slot(self, t_args, Py_None);
    set_slot(self, t_kwargs, Py_None);
    PyErr_Restore(type, value, tb);
}

/* The tasklet's function, with its tempval (a bomb is raised first) and
 * in its own context.  NULL with the error it ended with. */
static OUT_OF_LINE PyObject *raise_bomb(PyObject *self, PyObject *v)
{
    Py_INCREF(v);
    set_slot(self, t_tempval, Py_None);
    PyObject *r = call_hidden_method(v, s_raise, NULL);
    Py_DECREF(v);
    Py_XDECREF(r);
    return NULL;
}

/* The operands of the call as one array, positional arguments first,
 * and the names of the keyword ones: kept in the tasklet's slots for the
 * call (see body), as a vectorcall takes them.  -1 with an error; 0 when
 * a keyword is no string (PyObject_Call then reports it). */
static OUT_OF_LINE int flatten_kwargs(PyObject *self, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args), k = PyDict_GET_SIZE(kwargs), pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(kwargs, &pos, &key, &value))
        if (!PyUnicode_Check(key))
            return 0;
    PyObject *stack = PyTuple_New(n + k), *names = PyTuple_New(k);
    if (stack == NULL || names == NULL) {
        Py_XDECREF(stack);
        Py_XDECREF(names);
        return -1;
    }
    for (; i < n; i++)
        PyTuple_SET_ITEM(stack, i, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    pos = 0;
    for (Py_ssize_t j = 0; PyDict_Next(kwargs, &pos, &key, &value); j++) {
        PyTuple_SET_ITEM(stack, n + j, Py_NewRef(value));
        PyTuple_SET_ITEM(names, j, Py_NewRef(key));
    }
    set_slot(self, t_args, stack);
    set_slot(self, t_kwargs, names);
    Py_DECREF(stack);
    Py_DECREF(names);
    return 1;
}

/* The steps before the tasklet's function is called: begin(), its
 * tempval (a bomb is raised instead), its context, its operands.  NULL
 * when *x is the result already (NULL with an error); else the function
 * to vectorcall the tasklet's function with, with the operands in the
 * tasklet's slots, and *x the names of keyword arguments (a tuple, or
 * NULL).  Out of line: see accel_bootstrap. */
static OUT_OF_LINE vectorcallfunc call_begin(PyObject *ts, PyObject *self, PyObject **x)
{
    *x = NULL;
    if (begin(ts, self) < 0)
        return NULL;
    PyObject *v = slot(self, t_tempval);
    if (Py_IS_TYPE(v, (PyTypeObject *)bomb_type)) {
        *x = raise_bomb(self, v);
        return NULL;
    }
    PyObject *func = slot(self, t_func), *args = slot(self, t_args);
    PyObject *kwargs = slot(self, t_kwargs);
    PyObject *ctx = slot(self, t_context);
    if (ctx == fresh_context)
        ctx = Py_None;          /* the stack starts without one (_FRESH_CONTEXT) */
    if (discard(PyObject_CallOneArg(set_context, ctx)) < 0) {
        drop_args(self);
        return NULL;
    }
    if (!PyTuple_Check(args)) {
        PyErr_SetString(PyExc_TypeError, "tasklet arguments must be a tuple");
        drop_args(self);
        return NULL;
    }
    if (PyDict_Check(kwargs) && PyDict_GET_SIZE(kwargs) > 0) {
        int flat = flatten_kwargs(self, args, kwargs);
        if (flat == 0)
            *x = PyObject_Call(func, args, kwargs);
        if (flat <= 0) {
            drop_args(self);
            return NULL;
        }
        *x = slot(self, t_kwargs);      /* (borrowed, as the operands) */
    }
    /* Through the callable's own vectorcall function: the C frame of
       PyObject_Vectorcall (32 B on 3.11) would stay under the tasklet's
       frames for its whole life. */
    vectorcallfunc vc = PyVectorcall_Function(func);
    return vc != NULL ? vc : PyObject_Vectorcall;
}

/* After the function's vectorcall: as the call machinery checks a
 * result, and its arguments go. */
static OUT_OF_LINE PyObject *call_end(PyObject *self, PyObject *r)
{
    if (r == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "a tasklet's function failed without an exception");
    drop_args(self);
    return r;
}

/* The usual way out (no error, nothing interrupted): the C steps of the
 * Python _end().  1 when done, 0 when the Python _end must do it all
 * (idempotent, it simply runs after what was done here), -1 never: an
 * error is the Python _end's to handle too (*error gets it). */
static int usual_end(PyObject *cont, PyObject *ts, PyObject *self, PyObject **error)
{
    PyObject *nxt = accel_finish(ts, self);
    if (nxt == NULL) {
        *error = fetch_error();
        return 0;
    }
    /* its error does not stop the switch; one that is no Exception has
       nowhere to go here */
    if (accel_schedule_callback(self, nxt) < 0)
        PyErr_Clear();
    /* from here on no call may come before the switch: nxt is current */
    set_slot(ts, ts_current, nxt);
    int is_main = flag(nxt, t_is_main);
    PyObject *c = slot(nxt, t_cont);
    if (!is_main && c == Py_None)
        set_slot(ts, ts_launch, nxt);       /* main starts it (see _switch) */
    else if (!is_main) {
        /* returning now resumes nxt; main moves into c */
        PyObject *args[2] = {cont, c};
        PyObject *r = PyObject_Vectorcall(permute, args, 2, NULL);
        if (r == NULL) {
            /* it landed after the permute (the switch is decided): main gets it */
            PyObject *e = fetch_error();
            set_slot(ts, ts_pending, e);
            Py_DECREF(e);
        }
        Py_XDECREF(r);
    }
    Py_DECREF(nxt);
    return 1;
}

/* Its C frame stays at the bottom of the tasklet's stack while the
 * function runs, and the bytes of a tasklet's stack are copied at each of
 * its switches (between two tasklets, the whole stack out and in): so
 * only the call itself is here, the steps before and after it are out of
 * line, and across the call the frame holds cont and self (32 B with
 * the return address).  No reference of its own either:
 * the function and its operands stay borrowed from the tasklet's slots
 * until it returns, because the GC cannot see C locals on a suspended
 * stack, and a reference held here would keep a dropped paused tasklet
 * whose function or arguments refer to it (a bound method of an object
 * that holds the tasklet) from being found (stackless/_lifetime.py).  A
 * tasklet that moves to another thread (stackless/_transplant.py) leaves
 * this frame behind, never to run again, and the move empties those
 * slots. */
static PyObject *bootstrap_end(PyObject *cont, PyObject *self, PyObject *r);

/* call_begin's out-parameter: static, not a local of accel_bootstrap,
 * whose frame would hold it for the tasklet's whole life (16 B more
 * there, with the alignment).  Read at once after the call, under the
 * GIL, with no Python code in between. */
static PyObject *call_x;

static PyObject *accel_bootstrap(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_bootstrap(cont, tasklet)");
        return NULL;
    }
    PyObject *cont = args[0], *self = args[1];
    /* (borrowed: the tasklet holds it) */
    PyObject *ts = slot(self, t_ts);
    if (slot(ts, ts_timeout) != Py_None) {
        /* run(timeout) is Python code that counts the tasklet's trace
           events, from the frames above the Python _bootstrap's */
        return PyObject_Vectorcall(py_bootstrap, args, 2, NULL);
    }
    vectorcallfunc vc = call_begin(ts, self, &call_x);
    PyObject *x = call_x;
    if (vc != NULL) {
        /* the usual case: a vectorcall, whose Python callee runs in a new
           interpreter C frame, as the Python _bootstrap's call did */
        PyObject *func = slot(self, t_func), *stack = slot(self, t_args);
        size_t n = (size_t)(PyTuple_GET_SIZE(stack) - (x != NULL ? PyTuple_GET_SIZE(x) : 0));
        x = call_end(self, vc(func, &PyTuple_GET_ITEM(stack, 0), n, x));
    }
    return bootstrap_end(cont, self, x);
}

/* What follows the call: the tasklet's end */
static OUT_OF_LINE PyObject *bootstrap_end(PyObject *cont, PyObject *self, PyObject *r)
{
    PyObject *ts = slot(self, t_ts);
    if (ts == NULL) {
        /* The collector cleared the tasklet while its stack was suspended
           (at interpreter exit, a tasklet that outlived the exit kills is
           unwound with the rest of its cycle): no scheduler is left to go
           back to, and nothing can take an error. */
        Py_XDECREF(r);
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_INCREF(ts);
    PyObject *error = NULL;
    if (r == NULL && !PyErr_ExceptionMatches(tasklet_exit))
        error = fetch_error();
    PyErr_Clear();
    Py_XDECREF(r);
    r = NULL;
    if (error == NULL && usual_end(cont, ts, self, &error))
        r = Py_NewRef(Py_None);
    else {
        /* _end takes the error out of a box (it keeps no reference to it,
           see stackless/_switching.py).  An exception that lands at its
           entry (a signal handler's) or after its retry loop gave up is an
           uncaught exception of the tasklet, handed to _end again, as the
           Python _bootstrap does: returning it would end the stack with
           the tasklet alive ("continulet already finished" at the next
           switch to it). */
        for (int tries = 0; tries < 3 && r == NULL; tries++) {
            if (tries > 0) {
                if (!flag(self, t_alive))
                    break;      /* it landed after the switch: ours to raise */
                error = fetch_error();
            }
            PyObject *box = PyList_New(1);
            if (box == NULL)
                break;
            PyList_SET_ITEM(box, 0, error != NULL ? error : Py_NewRef(Py_None));
            error = NULL;
            PyObject *a[4] = {cont, self, ts, box};
            r = call_hidden(py_end, a, 4, NULL);
            Py_DECREF(box);
        }
    }
    Py_XDECREF(error);
    Py_DECREF(ts);
    return r;
}

/* --- run() -------------------------------------------------------------------
 * Only stackless.run() without arguments: with a timeout it is the
 * preemption machinery's (Python), and the rest is rare. */

static PyObject *accel_run(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    PyObject *ts = NULL;
    if (nargs != 0 || kwnames != NULL || (ts = accel_thread_state()) == NULL
            || slot(ts, ts_timeout) != Py_None || !PyList_CheckExact(slot(ts, ts_watchdogs))) {
        Py_XDECREF(ts);
        return PyErr_Occurred() ? NULL : call_hidden(py_run, args, (size_t)nargs, kwnames);
    }
    PyObject *cur = Py_NewRef(slot(ts, ts_current)), *rq = Py_NewRef(slot(ts, ts_rq));
    PyObject *wds = Py_NewRef(slot(ts, ts_watchdogs)), *entry = NULL, *result = NULL;
    PyObject *first = Py_SIZE(rq) > 0 ? accel_rq_first(rq) : NULL;
    if (first == NULL && PyErr_Occurred())
        goto done;
    Py_XDECREF(first);          /* only compared: rq holds it */
    if (first == cur && Py_SIZE(rq) == 1) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    int trap = slot_true(ts, ts_trap);
    if (trap != 0) {
        if (trap > 0)
            PyErr_SetString(PyExc_RuntimeError, "switch_trap");
        goto done;
    }
    if ((entry = PyList_New(2)) == NULL)
        goto done;
    PyList_SET_ITEM(entry, 0, Py_NewRef(cur));
    PyList_SET_ITEM(entry, 1, Py_NewRef(Py_False));
    if (PyList_Append(wds, entry) < 0)
        goto done;
    int rc = 0;
    if (first == cur) {
        rc = accel_rq_popleft(rq);
        if (rc == 0)
            set_flag(cur, t_scheduled, 0);
    }
    PyObject *nxt = rc == 0 && Py_SIZE(rq) > 0 ? accel_rq_first(rq) : NULL;
    if (nxt != NULL) {
        rc = accel_do_switch(ts, cur, nxt);
        Py_DECREF(nxt);
    }
    else if (PyErr_Occurred())
        rc = -1;
    /* finally: whatever surfaced, cur runs, and this run() is over */
    PyObject *err = rc < 0 ? fetch_error() : NULL;
    /* usually a dying tasklet's _finish woke us and took our entry off
       (or it is the last one still): the Python _end_run does the rest */
    Py_ssize_t n = PyList_GET_SIZE(wds), k = n;
    while (k > 0 && PyList_GET_ITEM(wds, k - 1) != entry)
        k--;
    if ((k == 0 || k == n) && flag(cur, t_scheduled)) {
        set_slot(ts, ts_current, cur);
        rc = k > 0 ? PyList_SetSlice(wds, k - 1, k, NULL) : 0;
    }
    else {
        PyObject *a[3] = {ts, cur, entry};
        rc = discard(call_hidden(py_end_run, a, 3, NULL));
        if (rc < 0) {
            /* a signal landed at its entry, before it did anything: again
               (it is idempotent, as mend() relies on), keeping that error */
            PyObject *second = fetch_error();
            if (discard(call_hidden(py_end_run, a, 3, NULL)) < 0)
                PyErr_Clear();
            restore_error(second);
        }
    }
    if (err != NULL) {
        if (rc < 0)
            PyErr_Clear();      /* the first error wins */
        restore_error(err);
        goto done;
    }
    if (rc == 0 && (result = accel_take_tempval(cur)) != NULL)
        Py_SETREF(result, Py_NewRef(Py_None));
done:
    Py_XDECREF(entry);
    Py_DECREF(wds);
    Py_DECREF(rq);
    Py_DECREF(cur);
    Py_DECREF(ts);
    return result;
}

PyMethodDef run_methods[] = {
    {"_bootstrap", (PyCFunction)(void (*)(void))accel_bootstrap, METH_FASTCALL,
     "The function at the bottom of every tasklet's stack (C version)."},
    {"run", (PyCFunction)(void (*)(void))accel_run, METH_FASTCALL | METH_KEYWORDS,
     "Run the scheduler until the run queue is empty (C version)."},
    {NULL, NULL, 0, NULL},
};

/* --- install ------------------------------------------------------------------ */

int run_accel_install(PyObject *ns, PyObject *tasklet, PyObject *tstate)
{
    PyObject *sys = PyImport_ImportModule("sys");
    if (sys == NULL)
        return -1;
    int bad = (sys_gettrace = PyObject_GetAttrString(sys, "gettrace")) == NULL
        || (sys_settrace = PyObject_GetAttrString(sys, "settrace")) == NULL
        || (sys_getprofile = PyObject_GetAttrString(sys, "getprofile")) == NULL
        || (sys_setprofile = PyObject_GetAttrString(sys, "setprofile")) == NULL;
    Py_DECREF(sys);
    if (bad || (py_tracing_per_tasklet = need(ns, "_tracing_per_tasklet")) == NULL
            || (py_bootstrap = need(ns, "_python_bootstrap")) == NULL
            || (py_end = need(ns, "_end")) == NULL || (py_end_run = need(ns, "_end_run")) == NULL
            || (py_run = need(ns, "run")) == NULL || (set_context = need(ns, "_set_stack_context")) == NULL
            || (fresh_context = need(ns, "_FRESH_CONTEXT")) == NULL
            || (permute = need(ns, "permute")) == NULL || (tasklet_exit = need(ns, "TaskletExit")) == NULL
            || (bomb_type = need(ns, "bomb")) == NULL
            || (s_raise = PyUnicode_InternFromString("raise_")) == NULL)
        return -1;
    if ((t_ts = slot_offset(tasklet, "_ts")) < 0
            || (t_trace = slot_offset(tasklet, "_trace")) < 0
            || (t_profile = slot_offset(tasklet, "_profile")) < 0
            || (t_started = flag_offset(tasklet, "_started")) < 0
            || (t_tempval = slot_offset(tasklet, "_tempval")) < 0
            || (t_func = slot_offset(tasklet, "_func")) < 0 || (t_args = slot_offset(tasklet, "_args")) < 0
            || (t_kwargs = slot_offset(tasklet, "_kwargs")) < 0
            || (t_context = slot_offset(tasklet, "_context")) < 0
            || (t_is_main = flag_offset(tasklet, "_is_main")) < 0
            || (t_cont = slot_offset(tasklet, "_cont")) < 0
            || (t_scheduled = flag_offset(tasklet, "_scheduled")) < 0
            || (t_base = slot_offset(tasklet, "_base")) < 0
            || (t_alive = flag_offset(tasklet, "_alive")) < 0
            || (ts_current = slot_offset(tstate, "current")) < 0 || (ts_rq = slot_offset(tstate, "rq")) < 0
            || (ts_timeout = slot_offset(tstate, "timeout")) < 0
            || (ts_tracing = slot_offset(tstate, "tasklet_tracing")) < 0
            || (ts_launch = slot_offset(tstate, "launch")) < 0
            || (ts_pending = slot_offset(tstate, "pending")) < 0
            || (ts_trap = slot_offset(tstate, "trap")) < 0
            || (ts_watchdogs = slot_offset(tstate, "watchdogs")) < 0)
        return -1;
    return 0;
}
