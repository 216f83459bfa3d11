/* Shared between the files of the _continuation module. */
#ifndef CONTINULET_H
#define CONTINULET_H

#include <Python.h>
#include <stdint.h>
#include "pystate.h"
#include "stk.h"
#include "capi.h"

/* One stack of frames: a thread's main stack, or the run of one callable. */
typedef struct cont_stack {
    stk_slice slice;
    cps_saved saved;
    uint64_t thread_id;
    /* (chars: the record is 8 B smaller, a pymalloc size class less) */
    char is_main;
    char started;
    char unlinked;          /* its bottom frame never links to a switcher */
    /* What the run holds on to for its whole life (the continulet passed
     * as first argument, the callable and its arguments).  Kept here, not
     * only on the C stack, so that tp_traverse can report them. */
    union {
        /* A run of callable(owner, arg) made through the C API (every
         * tasklet's) keeps its arguments here, not in a tuple: one object
         * and one allocation less per tasklet, and one less for the
         * collector to count and walk.  The owner and that argument, both
         * strong, are the array of the run's call (argv), so the owner is
         * not stored twice. */
        PyObject *argv[2];
        struct {
            PyObject *owner;
            PyObject *arg;  /* NULL for a run whose arguments are args */
        };
    };
    PyObject *callable;
    PyObject *args;         /* (owner, *args), or NULL: the arguments are argv */
    PyObject *kwargs;
    PyObject *context;      /* the context to start in, if set before it starts */
    PyObject *frames;       /* frames to rebuild when it starts (see framestate.c) */
    struct cfs_chain *chain;         /* rebuilt frames that have not returned yet */
    struct cont_stack *kill_return;  /* set while being unwound at GC time */
    struct cont_stack *next;         /* free list, orphan list */
    cps_root root;
    /* First data-stack chunk of the run (CPS_CHUNK_BYTES), taken when the
     * run starts and given back when its record is recycled: a bound but
     * unstarted continulet holds none, and runs that start and finish one
     * after the other reuse the same, cache-hot chunk (module.c). */
    void *chunk;
} cont_stack;

typedef struct {
    PyObject_HEAD
    cont_stack *h;          /* the stored continuation, NULL if unbound or finished */
    /* The thread it was initialized in (a transplant moves it), 0 before
     * __init__: no thread has id 0 (a pthread_t is an address), and no
     * flag of its own keeps stackless's tasklet continulet, which adds a
     * slot, in the 64 B pymalloc size class (80 B with one). */
    uint64_t thread_id;
    PyObject *weakrefs;
} Continulet;

/* Whether __init__ has run (see thread_id) */
static inline int cont_initialized(const Continulet *c)
{
    return c->thread_id != 0;
}

extern PyTypeObject Continulet_Type;

/* Whether the thread with this id (a thread state's) uses continulets and
 * has not ended. */
int cont_thread_alive(uint64_t id);

/* The stack running now in this thread (NULL: its main stack, never switched). */
cont_stack *cont_running_stack(void);
extern PyObject *cont_error;

/* switch(value, to) with PyPy's semantics; `call` is the Python-level call
 * that switches, or NULL (see cps_save). */
PyObject *cont_switch(Continulet *self, PyObject *value, PyObject *to, cps_call *call);

int cont_genlet_init(PyObject *module);

/* The arguments of a run after its owner, as a new tuple (NULL with an
 * error): what pickling records. */
PyObject *cont_run_args(const cont_stack *s);

/* src/preempt.c: a CPU-time budget per thread (run(timeout)); src/preempt_count.c:
   small budgets, counted in events */
extern PyMethodDef cont_preempt_methods[];
extern PyMethodDef cont_preempt_count_methods[];
extern PyMethodDef cont_preempt_monitor_methods[];

/* src/framestate.c: frames as data (pickling and copying continulets) */
extern PyMethodDef cfs_module_methods[];
PyObject *cfs_run(PyThreadState *ts, cont_stack *me, PyObject *value);
void cfs_release(cont_stack *s);
void cfs_retire(cont_stack *s);
int cfs_check_recipe(PyObject *recipe, PyObject *const *moving, Py_ssize_t nmoving);
PyObject *cfs_reduce(PyObject *self, PyObject *unused);
PyObject *cfs_setstate(PyObject *self, PyObject *state);

/* src/deferred.c: the package's callbacks called from C code that cannot
   raise.  cont_call_deferring calls fn(*args) until it returns (a new
   reference), at most 8 times (then NULL, no exception set); the
   exceptions that came out are raised again at the main thread's next
   checks (in another thread: reported unraisable, no retry). */
PyObject *cont_call_deferring(PyObject *fn, PyObject *const *args, Py_ssize_t nargs);
extern PyMethodDef cont_deferred_methods[];

/* src/transplant.c: moving a suspended stack's frames to a new stack */
extern PyMethodDef cont_transplant_methods[];
void cont_retire_stack(cont_stack *s);

#endif
