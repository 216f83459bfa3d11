/* A CPU-time budget per thread, for stackless.run(timeout).
 *
 * Counting ticks with a trace function makes every line of the code it
 * times many times slower.  Instead, a budget is armed in nanoseconds of
 * the calling thread's CPU time, and a helper thread (the "ticker", plain C,
 * holding the GIL only to deliver) sleeps until that thread's CPU clock has
 * passed it.  Then the spent thread is made to call the Python callback
 * given when arming, from a trace event (see deliver()); stackless's
 * callback records that the budget is spent and lets its trace-based
 * machinery do the interruption (docs/design.md, "Preemption").
 *
 * How the ticker reaches the spent thread:
 * - the main thread: a pending call (Py_AddPendingCall).  CPython runs it
 *   from the main thread's eval breaker, checked at every function entry
 *   and backward jump and free while nothing is pending, so it lands within
 *   microseconds, in loops without calls too.
 * - any other thread, 3.13+: a pending call that whichever thread holds
 *   the GIL runs (cps_add_pending_call_any); that is the spent thread
 *   nearly always, since its CPU clock just advanced (else the ticker
 *   tries again a period later: deliver()).
 * - any other thread, 3.11 and 3.12, where pending calls run in the main
 *   thread only: the ticker takes the GIL itself (PyGILState_Ensure).  The
 *   spent thread, which holds it while it runs Python, gives it up at its
 *   eval breaker once the switch interval (sys.getswitchinterval(), 5 ms by
 *   default) has passed: that is the extra delay there.
 * Either way only a C trace function (the trampoline) and the frame's
 * opcode events are set at the delivery point; the callback runs at the
 * thread's next trace event.
 *
 * Budgets under 5000 ticks count events instead, in src/preempt_count.c,
 * and use the ticker only as a backstop.
 *
 * Each thread with an arming has a slot.  What the ticker reads is guarded
 * by `lock`; the rest of a slot is touched only with the GIL.  A generation
 * number, unique over all armings, tells a delivery that the arming it was
 * asked for has been replaced or cancelled.
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
#include "clockns.h"
#include "preempt.h"

#define IDLE_NS 50000000                /* a ticker unarmed for 50 ms ends */

/* struct slot: src/preempt.h */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake;             /* waits on CLOCK_MONOTONIC */
static int ticker_running;              /* under lock */
static int64_t next_wake;               /* CLOCK_MONOTONIC; 0: idle; under lock */
static uintptr_t last_gen;              /* under lock */
/* Interpreter exit: the ticker must not touch the interpreter once it is
 * being torn down (a pending call queued then dereferences a freed
 * interpreter; PyGILState_Ensure() a finalized one).  `closed` is set at
 * exit (an atexit handler, while daemon threads may still run timed code),
 * which then waits until no delivery that started before is under way;
 * from then on nothing is delivered, and arming fails (the trace-event way
 * takes over).  Under lock. */
static int closed;
static int delivering;                  /* the ticker is queuing or delivering */
static pthread_cond_t settled;          /* signalled when delivering ends */
static struct slot slots[NSLOTS];

/* The slot of the running thread, or NULL.  GIL. */
struct slot *preempt_own_slot(void)
{
    /* called at every counted event: the last thread's first */
    static struct slot *last;
    PyThreadState *ts = PyThreadState_Get();
    if (last != NULL && last->ts == ts)
        return last;
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].ts == ts)
            return last = &slots[i];
    return NULL;
}

static int trampoline(PyObject *unused, PyFrameObject *frame, int what, PyObject *arg);

/* Undo what preempt_install() did, if the trampoline has not run yet.  For the
 * slot's thread `ts` (current, or parked: see deliver()), with the GIL.  The trace function it displaced
 * comes back only while the trampoline is still in place: a sys.settrace()
 * since then (stackless restoring the tasklet's own function, or the
 * user's) is newer, and putting the displaced one back would revive a
 * trace function its owner has just removed. */
static void tramp_clear(struct slot *s, PyThreadState *ts)
{
    if (s == NULL || !s->tramp_set)
        return;
    s->tramp_set = 0;
    PyObject *obj = s->saved_obj, *f = s->op_frame;
    s->saved_obj = s->op_frame = NULL;
    if (ts->c_tracefunc == trampoline && cps_set_trace_of(ts, s->saved_func, obj) < 0)
        PyErr_Clear();
    Py_XDECREF(obj);
    if (f != NULL) {
        if (PyObject_SetAttrString(f, "f_trace_opcodes", Py_False) < 0)
            PyErr_Clear();
        Py_DECREF(f);
    }
}

/* The first trace event after the budget ran out.  A trace function may
 * run any Python code and switch (stackless interrupts from one), so the
 * callback runs here rather than at the delivery point.  It gets the
 * event (PyTrace_*): only before an instruction (a line or opcode event)
 * does the frame stand where it can be captured and moved (stackless's
 * bind_thread, pickling: _continuation_frames). */
int preempt_call_back(struct slot *s, int what)
{
    if (s == NULL || s->callback == NULL)
        return 0;
    PyObject *cb = Py_NewRef(s->callback), *ev = PyLong_FromLong(what);
    PyObject *r = ev != NULL ? PyObject_CallOneArg(cb, ev) : NULL;
    Py_XDECREF(ev);
    Py_DECREF(cb);
    if (r == NULL)
        return -1;      /* the exception surfaces in the traced code */
    Py_DECREF(r);
    return 0;
}

static int trampoline(PyObject *unused, PyFrameObject *frame, int what, PyObject *arg)
{
    struct slot *s = preempt_own_slot();
    tramp_clear(s, PyThreadState_Get());
    return preempt_call_back(s, what);
}

/* Install the trampoline in the slot's thread `ts`, stopped at an eval
 * breaker check point: current, or parked (see deliver()).  It runs no Python: a pending call runs
 * while CPython marks pending calls as being handled (3.11: a static flag
 * in make_pending_calls), and Python code here could switch away for good
 * (a garbage collection may unwind a dropped tasklet, whose end switches to
 * the next one), leaving that mark set and every later pending call stuck.
 * So it only installs `trampoline` as the C trace function, which the next
 * trace event calls, and asks the running frame for opcode events: a loop
 * on one line without calls makes no other event.  The collector is off
 * meanwhile, so that the frame object it may create cannot start a
 * collection. */
void preempt_install(struct slot *s, uintptr_t gen, PyThreadState *ts)
{
    /* a trampoline that something has displaced waits for nothing */
    if (s->tramp_set && ts->c_tracefunc != trampoline)
        tramp_clear(s, ts);
    if (s->callback == NULL || gen != s->callback_gen || s->tramp_set || cps_finalizing())
        return;
    int gc = PyGC_Disable();
    Py_tracefunc func = ts->c_tracefunc;
    PyObject *obj = Py_XNewRef(ts->c_traceobj);
    if (cps_set_trace_of(ts, trampoline, NULL) < 0) {
        PyErr_Clear();
        Py_XDECREF(obj);
        if (gc)
            PyGC_Enable();
        return;
    }
    s->saved_func = func;
    s->saved_obj = obj;
    s->tramp_set = 1;
    PyFrameObject *f = PyThreadState_GetFrame(ts);
    if (f != NULL) {
        if (PyObject_SetAttrString((PyObject *)f, "f_trace_opcodes", Py_True) == 0)
            s->op_frame = (PyObject *)f;
        else {
            PyErr_Clear();
            Py_DECREF(f);
        }
    }
    if (gc)
        PyGC_Enable();
}

static struct slot *slot_of_gen(uintptr_t gen)
{
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].callback != NULL && slots[i].callback_gen == gen)
            return &slots[i];
    return NULL;
}

static void done_in_flight(uintptr_t gen)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].gen == gen)
            slots[i].in_flight = 0;
    pthread_mutex_unlock(&lock);
}

/* With the GIL: install the trampoline in the thread of the arming `gen`.
 * The ticker delivers from its own thread (3.11, 3.12), and 3.13+ run a
 * pending call for another thread in whichever holds the GIL.  Another
 * thread's state is used only while it is still one of the interpreter's
 * (a thread that ended without disarming leaves a stale pointer), and only
 * where its trace function can be set from outside (3.11, 3.12:
 * cps_set_trace_of).  Where it cannot, nothing happens: the spent thread,
 * which does not hold the GIL now, spends no CPU time in Python, and the
 * ticker calls again one period later. */
static void deliver(uintptr_t gen)
{
    struct slot *s = slot_of_gen(gen);
    if (s == NULL || cps_finalizing())
        return;
    if (s->counting && s->ticks != s->seen) {
        /* the backstop of a counted budget: events came since its last
           look, so the counting works; it acts only on code that makes
           none */
        s->seen = s->ticks;
        return;
    }
    PyThreadState *me = PyThreadState_Get(), *p;
    if (s->ts == me) {
        preempt_install(s, gen, me);
        return;
    }
    for (p = PyInterpreterState_ThreadHead(me->interp); p != NULL; p = PyThreadState_Next(p))
        if (p == s->ts && (unsigned long)p->thread_id == s->tid)
            break;
    if (p != NULL)
        preempt_install(s, gen, p);
}

/* The pending call. */
static int fire(void *arg)
{
    done_in_flight((uintptr_t)arg);
    deliver((uintptr_t)arg);
    return 0;
}

/* In the ticker, where no pending call reaches the spent thread (3.11 and
 * 3.12, threads other than the main one): take the GIL, which the spent
 * thread gives up within the switch interval. */
static void fire_from_ticker(uintptr_t gen)
{
    if (cps_finalizing())
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    deliver(gen);
    PyGILState_Release(g);
    done_in_flight(gen);
}

/* Queue a pending call that delivers `gen`; without `lock`.  Returns -1
 * where no pending call reaches the slot's thread.  The queue (32 calls)
 * is full only briefly: try again shortly, while the arming stands. */
static int queue_fire(struct slot *s, uintptr_t gen, int is_main)
{
    for (;;) {
        int r = is_main ? Py_AddPendingCall(fire, (void *)gen) == 0
                        : cps_add_pending_call_any(fire, (void *)gen);
        if (r != 0) {
            if (is_main)
                cps_wake_main();
            return r;
        }
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&lock);
        int gone = s->gen != gen || closed;
        pthread_mutex_unlock(&lock);
        if (gone)
            return 1;
    }
}

/* Wait on `wake` until `until` (CLOCK_MONOTONIC ns); lock held. */
static int wait_until(int64_t until)
{
    struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
    return pthread_cond_timedwait(&wake, &lock, &ts);
}

static void *ticker(void *unused)
{
#ifdef __linux__
    /* Wake when asked, not up to 50 us later (the default timer slack). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
    pthread_mutex_lock(&lock);
    for (;;) {
        /* The first spent slot, and how long until the next one is. */
        int64_t left = -1;
        struct slot *spent = NULL;
        for (int i = 0; i < NSLOTS && spent == NULL; i++) {
            struct slot *s = &slots[i];
            if (s->deadline == 0)
                continue;
            int64_t now = cont_clock_ns(s->clock);
            if (now < 0 || now >= s->deadline) {
                /* Spent.  The callback is called again every `period`
                   for as long as the arming stands: if what it did could
                   not take effect (the code is atomic, or a soft budget
                   waits for a switch, or something removed the trace
                   function), it gets another chance.  One delivery at a
                   time. */
                s->deadline = now < 0 ? 0 : now + s->period;
                if (!s->in_flight)
                    spent = s;
                else if (now >= 0 && (left < 0 || s->period < left))
                    left = s->period;
            }
            else if (left < 0 || s->deadline - now < left)
                left = s->deadline - now;
        }
        if (spent != NULL) {
            uintptr_t gen = spent->gen;
            spent->in_flight = 1;
            int is_main = spent->is_main;
            delivering = 1;
            pthread_mutex_unlock(&lock);
            /* Neither needs the GIL. */
            if (queue_fire(spent, gen, is_main) < 0)
                fire_from_ticker(gen);
            pthread_mutex_lock(&lock);
            delivering = 0;
            pthread_cond_broadcast(&settled);
            continue;
        }
        if (left < 0) {
            /* Idle: end after a while.  A process with a thread makes
               os.fork() warn (3.12+), and arming starts a new ticker. */
            next_wake = 0;
            if (wait_until(cont_clock_ns(CLOCK_MONOTONIC) + IDLE_NS) == ETIMEDOUT && next_wake == 0) {
                int armed = 0;
                for (int i = 0; i < NSLOTS; i++)
                    armed |= slots[i].deadline != 0;
                if (!armed)
                    break;
            }
            continue;
        }
        /* A CPU clock never runs faster than the wall clock, so sleeping
           for what is left never sleeps past the deadline. */
        next_wake = cont_clock_ns(CLOCK_MONOTONIC) + left;
        wait_until(next_wake);
    }
    ticker_running = 0;
    next_wake = 0;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static int init_wake(void)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0
              || pthread_cond_init(&wake, &attr) != 0
              || pthread_cond_init(&settled, NULL) != 0;
    pthread_condattr_destroy(&attr);
    return err ? -1 : 0;
}

/* A forked child has no ticker (the next arming starts one), only the
   forking thread, and the lock and condition may have been in use by the
   parent's. */
static void after_fork_child(void)
{
    pthread_mutex_init(&lock, NULL);
    init_wake();
    ticker_running = 0;
    next_wake = 0;
    delivering = 0;
    for (int i = 0; i < NSLOTS; i++)
        slots[i].deadline = 0;
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

/* The atexit handler: close the ticker (see `closed`).  The wait gives up
 * the GIL, which a delivery under way (3.11, 3.12) may be waiting for. */
static PyObject *preempt_close(PyObject *module, PyObject *unused)
{
    pthread_mutex_lock(&lock);
    /* no deadline is left, and arming sets none from now on: the ticker
       finds nothing spent again */
    closed = 1;
    for (int i = 0; i < NSLOTS; i++)
        slots[i].deadline = 0;
    int busy = delivering;
    pthread_mutex_unlock(&lock);
    if (busy) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&lock);
        while (delivering)
            pthread_cond_wait(&settled, &lock);
        pthread_mutex_unlock(&lock);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyMethodDef close_def = {
    "_preempt_close", preempt_close, METH_NOARGS,
    "Internal: at interpreter exit, stop the ticker's deliveries."};

/* Once, with the GIL and before the first arming: register
 * preempt_close with atexit.  No lock is held: this runs Python code. */
static int register_close(void)
{
    static int done;
    if (done)
        return 0;
    PyObject *f = PyCFunction_New(&close_def, NULL), *r = NULL;
    PyObject *atexit = f != NULL ? PyImport_ImportModule("atexit") : NULL;
    if (atexit != NULL)
        r = PyObject_CallMethod(atexit, "register", "O", f);
    Py_XDECREF(atexit);
    Py_XDECREF(f);
    if (r == NULL) {
        PyErr_Clear();      /* arming fails; the trace-event way is used */
        return -1;
    }
    Py_DECREF(r);
    done = 1;
    return 0;
}

static PyObject *preempt_arm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError,
                        "_preempt_arm(ns, callback, ticks=0, trace=False) takes 2 to 4 arguments");
        return NULL;
    }
    long long ns = PyLong_AsLongLong(args[0]);
    if (ns == -1 && PyErr_Occurred())
        return NULL;
    long long ticks = nargs > 2 ? PyLong_AsLongLong(args[2]) : 0;
    if (ticks == -1 && PyErr_Occurred())
        return NULL;
    /* a callable: on_spent (sys.monitoring) */
    PyObject *on_spent = nargs > 3 && PyCallable_Check(args[3]) ? args[3] : NULL;
    int trace = nargs > 3 && on_spent == NULL ? PyObject_IsTrue(args[3]) : 0;
    if (trace < 0)
        return NULL;
    if (ns < 0 || ticks < 0 || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_ValueError, "_preempt_arm: ns >= 0, a callable and ticks >= 0");
        return NULL;
    }
    /* PyGILState_Ensure() (other threads' deliveries) serves the main
       interpreter only. */
    clockid_t clk;
    if (PyInterpreterState_Get() != PyInterpreterState_Main()
        || pthread_getcpuclockid(pthread_self(), &clk) != 0)
        Py_RETURN_FALSE;
    int64_t now = cont_clock_ns(clk), mono = cont_clock_ns(CLOCK_MONOTONIC);
    if (now < 0 || mono < 0)
        Py_RETURN_FALSE;
    PyThreadState *ts = PyThreadState_Get();
    struct slot *s = preempt_own_slot();
    for (int i = 0; i < NSLOTS && s == NULL; i++)
        if (slots[i].ts == NULL)
            s = &slots[i];
    if (s == NULL || register_close() < 0)
        Py_RETURN_FALSE;
    pthread_mutex_lock(&lock);
    if (closed || (!ticker_running && start_ticker() < 0)) {
        pthread_mutex_unlock(&lock);
        Py_RETURN_FALSE;
    }
    int64_t left = (ns > 0 ? ns : 0) + 1;
    s->tid = PyThread_get_thread_ident();
    s->is_main = cps_main_thread();
    s->clock = clk;
    s->deadline = now + left;
    s->period = ns > 1000000 ? ns : 1000000;
    s->in_flight = 0;
    uintptr_t gen = s->gen = ++last_gen;
    /* Wake the ticker only if it must wake earlier than it will anyway:
       re-arming on every switch of a tasklet then costs no thread switch. */
    if (next_wake == 0 || mono + left < next_wake)
        pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    s->ts = ts;
    tramp_clear(s, ts);
    Py_XSETREF(s->callback, Py_NewRef(args[1]));
    s->callback_gen = gen;
    s->counting = ticks > 0;
    s->count_trace = s->counting && trace;
    s->due = 0;
    Py_XSETREF(s->on_spent, Py_XNewRef(on_spent));
    s->ticks = 0;
    s->seen = (uint64_t)-1;
    s->budget = s->spend_at = (uint64_t)ticks;
    if (s->count_trace)
        preempt_counter_set(s, ts);
    else
        preempt_counter_clear(s, ts);
    Py_RETURN_TRUE;
}

static PyObject *preempt_disarm(PyObject *module, PyObject *unused)
{
    struct slot *s = preempt_own_slot();
    if (s == NULL)
        Py_RETURN_NONE;
    pthread_mutex_lock(&lock);
    s->deadline = 0;
    s->gen = ++last_gen;
    s->tid = 0;
    pthread_mutex_unlock(&lock);
    tramp_clear(s, PyThreadState_Get());
    preempt_counter_clear(s, PyThreadState_Get());
    s->counting = s->count_trace = s->due = 0;
    Py_CLEAR(s->on_spent);
    Py_CLEAR(s->callback);
    s->ts = NULL;
    Py_RETURN_NONE;
}

PyMethodDef cont_preempt_methods[] = {
    {"_preempt_arm", (PyCFunction)(void (*)(void))preempt_arm, METH_FASTCALL,
     "_preempt_arm(ns, callback, ticks=0, trace=False)\n--\n\n"
     "Internal (stackless.run(timeout)): once this thread has used `ns`\n"
     "more nanoseconds of CPU time, call `callback(event)` (the PyTrace_*\n"
     "number of the trace event it came with) here, at the next\n"
     "function entry or backward jump (other threads than the main one:\n"
     "at the next switch interval), and again every `ns` (at least 1 ms)\n"
     "of CPU time until disarmed or re-armed.  Replaces this thread's\n"
     "previous arming.  Returns False (and arms nothing) in a\n"
     "subinterpreter, where threads have no CPU clock, and while too many\n"
     "threads are armed.\n\n"
     "With `ticks`, the budget is also `ticks` events of this thread: those\n"
     "of a C trace function that it installs if `trace` is true, else the\n"
     "calls of _preempt_tick (sys.monitoring), and then `trace`, if\n"
     "callable, is called with the code object once the budget is spent,\n"
     "and `callback` at the next call of _preempt_due; `ns` is then a\n"
     "backstop that calls only if no event came for that long."},
    {"_preempt_disarm", preempt_disarm, METH_NOARGS,
     "_preempt_disarm()\n--\n\nInternal: cancel this thread's arming."},
    {NULL, NULL, 0, NULL}
};
