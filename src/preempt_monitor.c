/* Which sys.monitoring tool feeds the counted budgets (3.12+), how many
 * budgets use it, and which code objects have line events for a spent
 * budget.  (Counting the events is src/preempt_count.c.)
 *
 * This bookkeeping is one for the process, shared by its threads.  It was
 * Python (stackless/_preempt.py), where a thread switch between reading it
 * and writing it let two threads each take a tool id: every event then
 * counted twice, and one id stayed taken for good.  Here each step runs
 * under the GIL without a thread switch: the sys.monitoring calls run no
 * Python code, and the collector, whose finalizers could, is held off
 * meanwhile.  Each step also sets the budget's own flag (`monitored`,
 * `opcode`) together with the count, so that an exception that lands at
 * a call's return (a signal handler's) never finds a count changed and
 * the flag that stands for it not (docs/design.md, "Preemption"). */
#include <Python.h>

#include "continulet.h"
#include "preempt.h"

static int tool = -1;                   /* the tool id in use, or -1 */
static Py_ssize_t users;                /* budgets that count its events */
static PyObject *local_users;           /* code -> budgets waiting for its line events */
static unsigned idle_events;
static long line_bits;                  /* LINE | INSTRUCTION, read when the tool is taken */

/* sys.monitoring.<name>(tool, ...), the result dropped; -1 on error */
static int mon_call(PyObject *mon, const char *name, const char *fmt, ...)
{
    PyObject *f = PyObject_GetAttrString(mon, name);
    if (f == NULL)
        return -1;
    va_list va;
    va_start(va, fmt);
    PyObject *args = Py_VaBuildValue(fmt, va);
    va_end(va);
    PyObject *r = args == NULL ? NULL : PyObject_Call(f, args, NULL);
    Py_XDECREF(args);
    Py_DECREF(f);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static long event_bits(PyObject *mon, const char *const *names)
{
    PyObject *ev = PyObject_GetAttrString(mon, "events");
    if (ev == NULL)
        return -1;
    long bits = 0;
    for (; *names != NULL; names++) {
        PyObject *v = PyObject_GetAttrString(ev, *names);
        long b = v == NULL ? -1 : PyLong_AsLong(v);
        Py_XDECREF(v);
        if (b == -1) {
            bits = -1;
            break;
        }
        bits |= b;
    }
    Py_DECREF(ev);
    return bits;
}

/* Take the first free id of `tools` and register the callbacks; with the
 * collector off, nothing else runs meanwhile.  0: none free; -1: error. */
static int take_tool(PyObject *module, PyObject *mon, PyObject *tools)
{
    static const char *const start[] = {"PY_START", "JUMP", NULL};
    static const char *const line[] = {"LINE", "INSTRUCTION", NULL};
    static const char *const callbacks[][2] = {
        {"PY_START", "_preempt_tick"}, {"JUMP", "_preempt_tick"},
        {"LINE", "_preempt_due"}, {"INSTRUCTION", "_preempt_due"}};
    int t = -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tools) && t < 0; i++) {
        int id = (int)PyLong_AsLong(PyTuple_GET_ITEM(tools, i));
        if (id == -1 && PyErr_Occurred())
            return -1;
        PyObject *name = PyObject_CallMethod(mon, "get_tool", "i", id);
        if (name == NULL)
            return -1;
        if (name == Py_None)
            t = id;
        Py_DECREF(name);
    }
    if (t < 0)
        return 0;
    if (mon_call(mon, "use_tool_id", "(is)", t, "stackless run(timeout)") < 0)
        return -1;
    /* ours from here: should the rest fail (memory), the idle check gives
       it back with whatever it got */
    tool = t;
    idle_events = 0;
    for (size_t i = 0; i < sizeof callbacks / sizeof callbacks[0]; i++) {
        const char *const ev[] = {callbacks[i][0], NULL};
        long bit = event_bits(mon, ev);
        PyObject *f = bit < 0 ? NULL : PyObject_GetAttrString(module, callbacks[i][1]);
        int rc = f == NULL ? -1 : mon_call(mon, "register_callback", "(ilO)", t, bit, f);
        Py_XDECREF(f);
        if (rc < 0)
            return -1;
    }
    long bits = event_bits(mon, start);
    if (bits < 0 || (line_bits = event_bits(mon, line)) < 0
            || mon_call(mon, "set_events", "(il)", t, bits) < 0)
        return -1;
    return 1;
}

/* Whether the budget's `monitored` is set: 1, 0, or -1 with an error */
static int monitored(PyObject *budget)
{
    PyObject *on = PyObject_GetAttrString(budget, "monitored");
    int was = on == NULL ? -1 : PyObject_IsTrue(on);
    Py_XDECREF(on);
    return was;
}

/* _preempt_monitor(budget, tools): have sys.monitoring feed this budget's
 * counting (a _Preempt; sets its `monitored`).  False where it cannot:
 * before 3.12, or no id of `tools` is free. */
static PyObject *preempt_monitor(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_preempt_monitor(budget, tools: tuple)");
        return NULL;
    }
    PyObject *mon = PySys_GetObject("monitoring");      /* borrowed */
    if (mon == NULL)
        Py_RETURN_FALSE;
    if (tool < 0) {
        int gc = PyGC_Disable();
        int rc = take_tool(module, mon, args[1]);
        if (gc)
            PyGC_Enable();
        if (rc <= 0)
            return rc < 0 ? NULL : Py_NewRef(Py_False);
    }
    int was = monitored(args[0]);
    if (was < 0 || (!was && PyObject_SetAttrString(args[0], "monitored", Py_True) < 0))
        return NULL;
    users += !was;
    Py_RETURN_TRUE;
}

/* _preempt_unmonitor(budget): the budget no longer counts (if it did).
 * The events stay on until preempt_monitor_idle() finds them unwanted. */
static PyObject *preempt_unmonitor(PyObject *module, PyObject *budget)
{
    int was = monitored(budget);
    if (was < 0)
        return NULL;
    if (was) {
        if (PyObject_SetAttrString(budget, "monitored", Py_False) < 0)
            return NULL;
        users--;
    }
    Py_RETURN_NONE;
}

/* Switching sys.monitoring's events on and off costs 3.12+ the
 * re-instrumentation of all the code that runs next (about 40 us per
 * run(timeout) call on 3.14), so they stay on after the last counted
 * budget; after this many events that no counted budget wanted (far less
 * than a millisecond), no budget uses them, and they go with the id. */
#define IDLE_EVENTS 10000

void preempt_monitor_idle(void)
{
    if (tool < 0 || ++idle_events < IDLE_EVENTS)
        return;
    idle_events = 0;
    if (users > 0)
        return;
    PyObject *mon = PySys_GetObject("monitoring");
    int t = tool;
    tool = -1;
    if (mon == NULL)
        return;                 /* (sys.monitoring gone: nothing to give back to) */
    int gc = PyGC_Disable();
    if (mon_call(mon, "set_events", "(ii)", t, 0) < 0
            || mon_call(mon, "free_tool_id", "(i)", t) < 0)
        /* (a monitoring callback must not raise into the code it watches) */
        PyErr_WriteUnraisable(NULL);
    if (gc)
        PyGC_Enable();
}

/* _preempt_local(budget, code): the budget's counting is spent in `code`
 * (a code object: its line and instruction events call _preempt_due) or,
 * with None, no longer waits for the events of the code it named; the
 * budget's `opcode` says which.  A code object's local events are one for
 * all threads: they go when no budget waits for them. */
static PyObject *preempt_local(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_preempt_local(budget, code or None)");
        return NULL;
    }
    PyObject *budget = args[0], *code = args[1];
    int delta = code == Py_None ? -1 : 1;
    if (delta < 0) {
        code = PyObject_GetAttrString(budget, "opcode");
        if (code == NULL)
            return NULL;
        if (code == Py_None) {
            Py_DECREF(code);
            Py_RETURN_NONE;
        }
    }
    else
        Py_INCREF(code);
    PyObject *mon = PySys_GetObject("monitoring"), *n = NULL;
    if (local_users == NULL && (local_users = PyDict_New()) == NULL)
        goto done;
    Py_ssize_t count = 0;
    PyObject *was = PyDict_GetItemWithError(local_users, code);    /* borrowed */
    if (was != NULL)
        count = PyLong_AsSsize_t(was);
    else if (PyErr_Occurred())
        goto done;
    count += delta;
    PyObject *now = count > 0 ? PyLong_FromSsize_t(count) : NULL;
    int rc = count > 0 ? (now == NULL ? -1 : PyDict_SetItem(local_users, code, now))
                       : PyDict_DelItem(local_users, code);
    Py_XDECREF(now);
    if (rc < 0 || PyObject_SetAttrString(budget, "opcode", delta > 0 ? code : Py_None) < 0)
        goto done;
    n = Py_NewRef(Py_None);
    if (count == (delta > 0) && tool >= 0 && mon != NULL) {
        /* the first budget to wait, or the last one gone */
        if (mon_call(mon, "set_local_events", "(iOl)", tool, code, count ? line_bits : 0) < 0)
            Py_CLEAR(n);
    }
done:
    Py_DECREF(code);
    return n;
}

/* _preempt_monitoring() -> (tool id or -1, budgets using it): for tests */
static PyObject *preempt_monitoring(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(in)", tool, users);
}

PyMethodDef cont_preempt_monitor_methods[] = {
    {"_preempt_monitor", (PyCFunction)(void (*)(void))preempt_monitor, METH_FASTCALL,
     "_preempt_monitor(budget, tools)\n--\n\n"
     "Internal: sys.monitoring feeds the counting of `budget` (sets its\n"
     "`monitored`), on the first free id of `tools`; False if it cannot."},
    {"_preempt_unmonitor", preempt_unmonitor, METH_O,
     "_preempt_unmonitor(budget)\n--\n\n"
     "Internal: `budget` no longer counts sys.monitoring's events."},
    {"_preempt_local", (PyCFunction)(void (*)(void))preempt_local, METH_FASTCALL,
     "_preempt_local(budget, code)\n--\n\n"
     "Internal: `budget` waits for the line events of `code` (sets its\n"
     "`opcode`); with None, no longer."},
    {"_preempt_monitoring", preempt_monitoring, METH_NOARGS,
     "_preempt_monitoring()\n--\n\n"
     "Internal: (the sys.monitoring tool id in use or -1, its users)."},
    {NULL, NULL, 0, NULL}
};
