/* What src/preempt.c (the CPU-time ticker and the delivery of a spent
 * budget) and src/preempt_count.c (budgets counted in events) share: a
 * thread's arming.  Internal to _continuation. */
#ifndef CONTINULET_PREEMPT_H
#define CONTINULET_PREEMPT_H

#include <Python.h>
#include <stdint.h>
#include <time.h>

#define NSLOTS 16                       /* threads timed at once; more count trace events */

struct slot {
    /* under lock */
    unsigned long tid;                  /* the owner; 0: free */
    int is_main;                        /* the main thread: pending calls */
    clockid_t clock;                    /* the owner's CPU clock */
    int64_t deadline;                   /* on clock, ns; 0: not armed */
    int64_t period;                     /* ns between calls once spent */
    uintptr_t gen;
    int in_flight;                      /* a delivery of gen is under way */
    /* GIL */
    PyThreadState *ts;
    PyObject *callback;
    uintptr_t callback_gen;
    /* While the callback waits for a trace event: the trace function the
       trampoline displaced (restored before the callback runs), and the
       frame that was asked for opcode events. */
    int tramp_set;
    Py_tracefunc saved_func;
    PyObject *saved_obj;
    PyObject *op_frame;
    /* A budget counted in events (small budgets: see count_event()).  The
       ticker then only backs it up, for code that makes no event. */
    int counting;
    int count_trace;                    /* `counter` is the trace function */
    uint64_t ticks;                     /* events since the arming */
    uint64_t spend_at;                  /* ticks at which the budget is spent */
    uint64_t budget;
    uint64_t seen;                      /* ticks at the backstop's last look */
    Py_tracefunc count_saved;           /* what `counter` displaced (its
                                           object stays c_traceobj) */
    PyObject *on_spent;                 /* sys.monitoring: on_spent(code) */
    int due;                            /* ... and _preempt_due calls back */
};

/* the running thread's slot, or NULL (GIL) */
struct slot *preempt_own_slot(void);
/* call the slot's callback with trace event `what`; -1 on its error */
int preempt_call_back(struct slot *s, int what);
/* install the trampoline in `ts` for the arming `gen` (GIL) */
void preempt_install(struct slot *s, uintptr_t gen, PyThreadState *ts);
/* src/preempt_count.c: put the C counter in place of, or take it from, the
   running thread's trace function */
void preempt_counter_set(struct slot *s, PyThreadState *ts);
void preempt_counter_clear(struct slot *s, PyThreadState *ts);
/* src/preempt_monitor.c: an event that no counted budget wanted; enough of
   them in a row with no budget left give the sys.monitoring tool back */
void preempt_monitor_idle(void);

#endif
