/* A CPU-time budget for the main thread, for stackless.run(timeout).
 *
 * Counting ticks with a trace function makes every line of the code it
 * times many times slower.  Instead, a budget is armed in nanoseconds of
 * the main thread's CPU time, and a helper thread (the "ticker", plain C,
 * never holding the GIL) sleeps until the main thread's CPU clock has
 * passed it.  Then it asks the interpreter for a pending call
 * (Py_AddPendingCall).  CPython runs pending calls from its eval breaker,
 * which it checks at every function entry and backward jump, and which
 * costs nothing while nothing is pending: so the timed code runs at full
 * speed, and a loop without calls is reached as well.  The pending call
 * installs a C trace function, and the next trace event calls the Python
 * callback given when arming (see fire()); stackless's callback records
 * that the budget is spent and lets its trace-based machinery do the
 * interruption (docs/design.md, "Preemption").
 *
 * Pending calls run in the main thread of the main interpreter only, so
 * this is for that thread; other threads keep the trace-based path.
 *
 * The state lives in static variables: there is one main thread.  What the
 * ticker reads is guarded by `lock`; the callback is touched only by the
 * main thread, with the GIL.  A generation number tells a pending call
 * that the arming it was asked for has been replaced or cancelled.
 */
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#ifdef __linux__
#  include <sys/prctl.h>
#endif

#include "continulet.h"

#define IDLE_NS 50000000                /* a ticker unarmed for 50 ms ends */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake;             /* waits on CLOCK_MONOTONIC */
static int ticker_running;              /* under lock */
static clockid_t target_clock;          /* the main thread's CPU clock; under lock */
static int64_t deadline;                /* on target_clock, ns; 0: not armed; under lock */
static uintptr_t armed_gen;             /* under lock */
static int64_t period;                  /* ns between calls once spent; under lock */
static int in_flight;                   /* a call of armed_gen is queued; under lock */

static PyObject *callback;              /* main thread, GIL */
static uintptr_t callback_gen;          /* main thread, GIL */

static int64_t read_ns(clockid_t clk)
{
    struct timespec t;
    if (clock_gettime(clk, &t) != 0)
        return -1;
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* While the budget's callback waits for a trace event: the trace function
 * it displaced (restored before the callback runs), and the frame that was
 * asked for opcode events.  Main thread, GIL. */
static int tramp_set;
static Py_tracefunc saved_func;
static PyObject *saved_obj;
static PyObject *op_frame;

static int trampoline(PyObject *unused, PyFrameObject *frame, int what, PyObject *arg);

/* Undo what fire() did, if the trampoline has not run yet.  The trace
 * function it displaced comes back only while the trampoline is still in
 * place: a sys.settrace() since then (stackless restoring the tasklet's own
 * function, or the user's) is newer, and putting the displaced one back
 * would revive a trace function its owner has just removed. */
static void tramp_clear(void)
{
    if (!tramp_set)
        return;
    tramp_set = 0;
    PyObject *obj = saved_obj, *f = op_frame;
    saved_obj = op_frame = NULL;
    if (PyThreadState_Get()->c_tracefunc == trampoline)
        PyEval_SetTrace(saved_func, obj);
    Py_XDECREF(obj);
    if (f != NULL) {
        if (PyObject_SetAttrString(f, "f_trace_opcodes", Py_False) < 0)
            PyErr_Clear();
        Py_DECREF(f);
    }
}

/* The first trace event after the budget ran out.  A trace function may
 * run any Python code and switch (stackless interrupts from one), so the
 * callback runs here rather than in the pending call. */
static int trampoline(PyObject *unused, PyFrameObject *frame, int what, PyObject *arg)
{
    tramp_clear();
    if (callback == NULL)
        return 0;
    PyObject *cb = Py_NewRef(callback);
    PyObject *r = PyObject_CallNoArgs(cb);
    Py_DECREF(cb);
    if (r == NULL)
        return -1;      /* the exception surfaces in the traced code */
    Py_DECREF(r);
    return 0;
}

/* The pending call, in the main thread with the GIL, at an eval breaker
 * check point of whatever Python code runs there.  It runs no Python:
 * CPython marks its pending calls as being handled around this call
 * (3.11: a static flag in make_pending_calls), and Python code here could
 * switch away for good (a garbage collection may unwind a dropped tasklet,
 * whose end switches to the next one), leaving that mark set and every
 * later pending call stuck.  So it only installs `trampoline` as the C
 * trace function, which the next trace event calls, and asks the running
 * frame for opcode events: a loop on one line without calls makes no
 * other event.  The collector is off meanwhile, so that the frame object
 * it may create cannot start a collection. */
static int fire(void *arg)
{
    pthread_mutex_lock(&lock);
    if ((uintptr_t)arg == armed_gen)
        in_flight = 0;
    pthread_mutex_unlock(&lock);
    PyThreadState *ts = PyThreadState_Get();
    /* a trampoline that something has displaced waits for nothing */
    if (tramp_set && ts->c_tracefunc != trampoline)
        tramp_clear();
    if (callback == NULL || (uintptr_t)arg != callback_gen || tramp_set || cps_finalizing())
        return 0;
    int gc = PyGC_Disable();
    saved_func = ts->c_tracefunc;
    saved_obj = Py_XNewRef(ts->c_traceobj);
    tramp_set = 1;
    PyEval_SetTrace(trampoline, NULL);
    PyFrameObject *f = PyEval_GetFrame();
    if (f != NULL) {
        if (PyObject_SetAttrString((PyObject *)f, "f_trace_opcodes", Py_True) == 0)
            op_frame = Py_NewRef((PyObject *)f);
        else
            PyErr_Clear();
    }
    if (gc)
        PyGC_Enable();
    return 0;
}

static void *ticker(void *unused)
{
#ifdef __linux__
    /* Wake when asked, not up to 50 us later (the default timer slack). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
    pthread_mutex_lock(&lock);
    for (;;) {
        if (deadline == 0) {
            /* Idle: end after a while.  A process with a thread makes
               os.fork() warn (3.12+), and arming starts a new ticker. */
            int64_t until = read_ns(CLOCK_MONOTONIC) + IDLE_NS;
            struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
            if (pthread_cond_timedwait(&wake, &lock, &ts) == ETIMEDOUT && deadline == 0)
                break;
            continue;
        }
        int64_t now = read_ns(target_clock);
        if (now < 0 || now >= deadline) {
            /* Spent.  The callback is called again every `period` for as
               long as the arming stands: if what it did could not take
               effect (the code is atomic, or a soft budget waits for a
               switch, or something removed the trace function), it gets
               another chance.  One call at a time is queued. */
            uintptr_t gen = armed_gen;
            deadline = now < 0 ? 0 : now + period;
            if (in_flight)
                continue;
            in_flight = 1;
            pthread_mutex_unlock(&lock);
            /* Needs neither the GIL nor a thread state.  It fails only
               while the queue (32 calls) is full: try again shortly. */
            while (Py_AddPendingCall(fire, (void *)gen) < 0) {
                struct timespec pause = {0, 100000};
                nanosleep(&pause, NULL);
                pthread_mutex_lock(&lock);
                int gone = armed_gen != gen;
                pthread_mutex_unlock(&lock);
                if (gone)
                    break;
            }
            cps_wake_main();
            pthread_mutex_lock(&lock);
            continue;
        }
        /* A CPU clock never runs faster than the wall clock, so sleeping
           for what is left never sleeps past the deadline. */
        int64_t until = read_ns(CLOCK_MONOTONIC) + (deadline - now);
        struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
        pthread_cond_timedwait(&wake, &lock, &ts);
    }
    ticker_running = 0;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static int init_wake(void)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0
              || pthread_cond_init(&wake, &attr) != 0;
    pthread_condattr_destroy(&attr);
    return err ? -1 : 0;
}

/* A forked child has no ticker (the next arming starts one), and the lock
   and condition may have been in use by the parent's. */
static void after_fork_child(void)
{
    pthread_mutex_init(&lock, NULL);
    init_wake();
    ticker_running = 0;
    deadline = 0;
}

/* Called with `lock` held. */
static int start_ticker(void)
{
    static int once;
    if (!once) {
        if (init_wake() < 0 || pthread_atfork(NULL, NULL, after_fork_child) != 0)
            return -1;
        once = 1;
    }
    pthread_attr_t attr;
    pthread_t t;
    if (pthread_attr_init(&attr) != 0)
        return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    int err = pthread_create(&t, &attr, ticker, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0)
        return -1;
    ticker_running = 1;
    return 0;
}

static PyObject *preempt_arm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_preempt_arm(ns, callback) takes 2 arguments");
        return NULL;
    }
    long long ns = PyLong_AsLongLong(args[0]);
    if (ns == -1 && PyErr_Occurred())
        return NULL;
    if (ns < 0 || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_ValueError, "_preempt_arm: ns >= 0 and a callable");
        return NULL;
    }
    clockid_t clk;
    if (!cps_main_thread() || pthread_getcpuclockid(pthread_self(), &clk) != 0)
        Py_RETURN_FALSE;
    int64_t now = read_ns(clk);
    if (now < 0)
        Py_RETURN_FALSE;
    pthread_mutex_lock(&lock);
    if (!ticker_running && start_ticker() < 0) {
        pthread_mutex_unlock(&lock);
        Py_RETURN_FALSE;
    }
    /* Wake the ticker only if it must wake earlier than it will anyway:
       re-arming on every switch of a tasklet then costs no thread switch. */
    int64_t when = now + (ns > 0 ? ns : 0) + 1;
    int earlier = deadline == 0 || when < deadline;
    target_clock = clk;
    deadline = when;
    period = ns > 1000000 ? ns : 1000000;
    in_flight = 0;
    uintptr_t gen = ++armed_gen;
    if (earlier)
        pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    tramp_clear();
    Py_XSETREF(callback, Py_NewRef(args[1]));
    callback_gen = gen;
    Py_RETURN_TRUE;
}

static PyObject *preempt_disarm(PyObject *module, PyObject *unused)
{
    if (!cps_main_thread())
        Py_RETURN_NONE;
    pthread_mutex_lock(&lock);
    deadline = 0;
    armed_gen++;
    pthread_mutex_unlock(&lock);
    tramp_clear();
    Py_CLEAR(callback);
    Py_RETURN_NONE;
}

PyMethodDef cont_preempt_methods[] = {
    {"_preempt_arm", (PyCFunction)(void (*)(void))preempt_arm, METH_FASTCALL,
     "_preempt_arm(ns, callback)\n--\n\n"
     "Internal (stackless.run(timeout)): once the main thread has used `ns`\n"
     "more nanoseconds of CPU time, call `callback()` there, at the next\n"
     "function entry or backward jump, and again every `ns` (at least 1 ms)\n"
     "of CPU time until disarmed or re-armed.  Replaces the previous arming.\n"
     "Returns False (and arms nothing) in other threads and where threads\n"
     "have no CPU clock."},
    {"_preempt_disarm", preempt_disarm, METH_NOARGS,
     "_preempt_disarm()\n--\n\nInternal: cancel the main thread's arming."},
    {NULL, NULL, 0, NULL}
};
