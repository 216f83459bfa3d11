/* run(timeout)'s budgets under 5000 ticks: events counted in C.
 * (The CPU-time ticker, the slots and the delivery are src/preempt.c.) */
#include <Python.h>

#include "continulet.h"
#include "preempt.h"

/* Counting events (budgets under 5000 ticks, which must be exact in the
 * thread itself: docs/design.md, "Preemption").  Each event of the timed
 * code is one tick, counted here in C; Python runs only once the budget
 * is spent, as when the ticker finds a CPU-time budget spent, and then
 * again every budget until the arming is replaced (the callback may have
 * to wait: atomic or nested code, a soft budget).  The events come from
 * one of two sources:
 * - `counter`, a C trace function (3.11; 3.12+ when no sys.monitoring
 *   tool id is free): every line, call, return and exception.  Tracing
 *   itself is most of the cost on 3.11 (the interpreter stops using its
 *   specialized instructions), not this function.
 * - sys.monitoring's PY_START and JUMP events (3.12+), which stackless
 *   registers `_preempt_tick` for (src/preempt_monitor.c): every function
 *   start and jump, which bound how long code can run without one, as the
 *   eval breaker's check points do.  They leave the trace function to the
 *   user, and only the instructions that make them are instrumented. */

/* The globals of stackless's own modules, whose frames make no tick (as
 * the Python tick counter skips them; most of that code runs hidden from
 * tracing anyway: src/stackless_hide.c).  Module dicts live as long as the
 * process; they are only compared, never used. */
#define NOWN 32
static PyObject *own_globals[NOWN];
static int n_own;

static int spent(struct slot *s, uint64_t n)
{
    /* borrowed, and made by no call: the running frame's; the globals
       last found not to be ours, first (compared only, like own_globals) */
    static PyObject *users;
    PyObject *g = PyEval_GetGlobals();
    if (g != users) {
        for (int i = 0; i < n_own; i++)
            if (own_globals[i] == g)
                return 0;
        users = g;
    }
    if ((s->ticks += n) < s->spend_at)
        return 0;
    s->spend_at = s->ticks + s->budget;
    return 1;
}

static int counter(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    struct slot *s = preempt_own_slot();
    if (s == NULL || !s->count_trace || !spent(s, 1))
        return 0;
    /* before an instruction: call back now, as the trampoline would */
    if (what == PyTrace_LINE || what == PyTrace_OPCODE)
        return preempt_call_back(s, what);
    preempt_install(s, s->callback_gen, PyThreadState_Get());
    return 0;
}

/* Put `counter` in place of the thread's trace function, keeping that
 * one's object as c_traceobj (so sys.gettrace() still says what the user
 * set) and its function in the slot.  PyEval_SetTrace drops the old
 * object before it takes the new one: hold it meanwhile. */
void preempt_counter_set(struct slot *s, PyThreadState *ts)
{
    if (ts->c_tracefunc == counter)
        return;
    PyObject *obj = Py_XNewRef(ts->c_traceobj);
    s->count_saved = ts->c_tracefunc;
    PyEval_SetTrace(counter, obj);
    Py_XDECREF(obj);
}

void preempt_counter_clear(struct slot *s, PyThreadState *ts)
{
    if (ts->c_tracefunc != counter)
        return;
    PyObject *obj = Py_XNewRef(ts->c_traceobj);
    PyEval_SetTrace(s->count_saved, obj);
    Py_XDECREF(obj);
}

static PyObject *preempt_own(PyObject *module, PyObject *globals)
{
    if (!PyDict_Check(globals) || n_own == NOWN) {
        PyErr_SetString(PyExc_ValueError, "_preempt_own: a module's globals, at most 32");
        return NULL;
    }
    own_globals[n_own++] = globals;
    Py_RETURN_NONE;
}

/* A tick from sys.monitoring.  Once the budget is spent, `on_spent(code)`
 * asks for LINE and INSTRUCTION events in that code object only, whose
 * callback _preempt_due calls back: a trace function (the trampoline)
 * would make 3.12+ instrument, then de-instrument, every function that
 * runs meanwhile, most of the cost of an interrupt there. */
static PyObject *preempt_tick(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    struct slot *s = preempt_own_slot();
    if (s == NULL || !s->counting || s->count_trace) {
        preempt_monitor_idle();
        Py_RETURN_NONE;
    }
    /* A jump back, a loop's iteration, weighs a tick per 8 code units of
       its body (caches included: about a line, which is what a 3.11
       trace event is), not one: a soft budget of 100 ticks must run out
       within 50 iterations of a three-line loop, as Stackless's ticks,
       which are instructions, do (the suite's test_watchdog).  JUMP
       gives (code, offset, target), offsets in bytes. */
    uint64_t n = 1;
    if (nargs == 3) {
        Py_ssize_t from = PyLong_AsSsize_t(args[1]), to = PyLong_AsSsize_t(args[2]);
        if (from == -1 || to == -1)
            PyErr_Clear();
        else if (to < from)
            n += (uint64_t)(from - to) / 16;      /* bytes: 2 per code unit */
    }
    if (!spent(s, n))
        Py_RETURN_NONE;
    PyObject *r = NULL;
    if (s->on_spent != NULL && nargs > 0) {
        PyObject *f = Py_NewRef(s->on_spent);
        r = PyObject_CallOneArg(f, args[0]);
        Py_DECREF(f);
    }
    if (r == NULL) {
        /* (not expected) the trampoline's way */
        PyErr_Clear();
        preempt_install(s, s->callback_gen, PyThreadState_Get());
    }
    else
        s->due = 1;
    Py_XDECREF(r);
    Py_RETURN_NONE;
}

static PyObject *preempt_due(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    struct slot *s = preempt_own_slot();
    if (s == NULL || !s->due)
        Py_RETURN_NONE;
    s->due = 0;
    if (preempt_call_back(s, PyTrace_LINE) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyMethodDef cont_preempt_count_methods[] = {
    {"_preempt_own", preempt_own, METH_O,
     "_preempt_own(globals)\n--\n\n"
     "Internal: the frames of a module with these globals make no tick."},
    {"_preempt_tick", (PyCFunction)(void (*)(void))preempt_tick, METH_FASTCALL,
     "_preempt_tick(*args)\n--\n\n"
     "Internal: one tick of this thread's counted budget (a sys.monitoring\n"
     "callback)."},
    {"_preempt_due", (PyCFunction)(void (*)(void))preempt_due, METH_FASTCALL,
     "_preempt_due(*args)\n--\n\n"
     "Internal: a sys.monitoring LINE or INSTRUCTION event once the\n"
     "counted budget is spent."},
    {NULL, NULL, 0, NULL}
};
