/* Frames as data: what pickling and copying a continulet need from C.
 *
 * Reading: _frames(c) describes the frames of the stack a continulet holds
 * (bottom first; or, given a frame object, those of the running stack up
 * to it); _frame_values(c, depths) reads their locals and value
 * stacks once the Python side (_continuation_pickle.py) has worked out
 * how deep each value stack is.  Rebuilding: _set_frames(c, recipe) gives
 * a fresh continulet frames to build when it is first switched to; they
 * are then run one at a time, top first, each getting the return value
 * (or the exception) of the one above it, by cfs_run.  The frame of a
 * generator running in the stack is its generator's own, run as
 * gen.send() would run it; the frame below takes its yield, return or
 * exception as its FOR_ITER, SEND or call would (deliver).  Everything that
 * depends on the CPython version is behind the cps_* calls of pystate.c.
 */
#include "continulet.h"

#include <string.h>

/* The rebuilt frames of a running stack that have not returned yet:
 * frames[0..live), bottom first.  Their links to each other were made by
 * us, not by an inlined call, and the boundary check must know that. */
typedef struct cfs_chain {
    Py_ssize_t live, n;
    struct cfs_wait *waits;     /* how each takes the outcome of the one above */
    PyObject *on_return;        /* the recipe's, called when they have all returned */
    void *frames[1];
} cfs_chain;

static int is_generator(PyObject *g)
{
    return PyGen_Check(g) || PyCoro_CheckExact(g);
}

/* The code of a frame record's function or generator (borrowed: they
 * hold it), NULL without an exception if it has none. */
static PyCodeObject *frame_code_of(PyObject *obj)
{
    if (PyFunction_Check(obj))
        return (PyCodeObject *)PyFunction_GET_CODE(obj);
    PyObject *co = PyObject_GetAttrString(obj, PyCoro_CheckExact(obj) ? "cr_code" : "gi_code");
    if (co == NULL || !PyCode_Check(co)) {
        PyErr_Clear();
        Py_XDECREF(co);
        return NULL;
    }
    Py_DECREF(co);
    return (PyCodeObject *)co;
}

static PyObject *call_helper(const char *name, PyObject *arg);

static PyObject *picking_error(void)
{
    static PyObject *cls;
    if (cls == NULL) {
        PyObject *m = PyImport_ImportModule("pickle");
        if (m == NULL)
            return NULL;
        cls = PyObject_GetAttrString(m, "PicklingError");
        Py_DECREF(m);
    }
    return cls;
}

/* The suspended stack that a continulet holds, with a clear error if it
 * holds none that this thread can read. */
static cont_stack *readable_stack(PyObject *c)
{
    if (!PyObject_TypeCheck(c, &Continulet_Type)) {
        PyErr_Format(PyExc_TypeError, "expected a continulet, not %.200s", Py_TYPE(c)->tp_name);
        return NULL;
    }
    Continulet *self = (Continulet *)c;
    cont_stack *h = self->h;
    PyObject *err = picking_error();
    if (err == NULL)
        return NULL;
    if (h == NULL || !h->started) {
        PyErr_SetString(err, "the continulet holds no suspended frames");
        return NULL;
    }
    if (h->is_main) {
        PyErr_SetString(err, "the continulet holds a thread's main stack (it is running, "
                             "or was switched to from the main stack): its frames cannot be pickled");
        return NULL;
    }
    /* Another live thread's suspended stack is read the same way (stackless
       moves a paused tasklet between threads, src/transplant.c): its frames
       live in memory of its own, and its bytes still on that thread's C
       stack lie above whatever that thread runs now (see stk.c), which
       cannot run anyway while we hold the GIL.  Not a dead thread's. */
    if (h->thread_id != PyThreadState_GetID(PyThreadState_Get()) && !cont_thread_alive(h->thread_id)) {
        PyErr_SetString(err, "the continulet's frames belong to another thread, which has ended");
        return NULL;
    }
    if (h->slice.state != STK_SUSPENDED) {
        PyErr_SetString(err, "the continulet's frames are running");
        return NULL;
    }
    if (!cps_frames_supported()) {
        PyErr_Format(err, "pickling suspended frames is not supported on Python %s yet",
                     Py_GetVersion());
        return NULL;
    }
    return h;
}

static cps_frame *read_frames(cont_stack *h, Py_ssize_t *np)
{
    Py_ssize_t n = cps_frames(&h->saved, &h->slice, NULL, 0);
    cps_frame *fr = PyMem_Calloc((size_t)(n ? n : 1), sizeof(cps_frame));
    if (fr == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    cps_frames(&h->saved, &h->slice, fr, n);
    *np = n;
    return fr;
}

/* What the run keeps of each record once the recipe is let go of: how
 * the frame takes the outcome of the one above it. */
typedef struct cfs_wait {
    PyObject *gen;          /* the generator whose frame it is, or NULL */
    PyObject *arg;          /* next(g, default)'s default; for WAIT_ITER and
                               WAIT_SEND, the stack slot of the generator */
    int wait, at;           /* WAIT_*, and the code unit of its FOR_ITER or SEND */
    Py_ssize_t nl, depth;   /* its locals, its stack's depth as rebuilt */
} cfs_wait;

/* 0 for a frame that no run of ours drives, else (wait, arg): how it
 * takes the outcome of the frame above it */
static PyObject *driven_info(cont_stack *h, void *frame)
{
    if (h != NULL && h->chain != NULL)
        for (Py_ssize_t i = 0; i < h->chain->live; i++)
            if (h->chain->frames[i] == frame) {
                cfs_wait *w = &h->chain->waits[i];
                return Py_BuildValue("(iO)", w->wait, w->arg ? w->arg : Py_None);
            }
    return PyLong_FromLong(0);
}

/* What the frame functions read: the suspended stack of a continulet, or,
 * given a frame object, the running stack of this thread from that frame
 * down to its bottom (`current_restorable` of a running tasklet). */
typedef struct {
    cont_stack *h;          /* the stack record (NULL: a main stack never switched) */
    int live;
    cps_frame *fr;
    Py_ssize_t n;
} frame_source;

static int open_source(PyObject *src, frame_source *out)
{
    out->live = PyFrame_Check(src);
    if (out->live) {
        out->h = cont_running_stack();
        if (!cps_frames_supported()) {
            PyErr_Format(PyExc_NotImplementedError, "reading frames is not supported on Python %s yet",
                         Py_GetVersion());
            return -1;
        }
        PyThreadState *ts = PyThreadState_Get();
        const cps_saved *saved = out->h ? &out->h->saved : NULL;
        Py_ssize_t n = cps_live_frames(ts, saved, src, NULL, 0);
        if (n < 0) {
            PyErr_SetString(PyExc_ValueError, "the frame is not running in this thread's stack");
            return -1;
        }
        out->fr = PyMem_Calloc((size_t)(n ? n : 1), sizeof(cps_frame));
        if (out->fr == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        cps_live_frames(ts, saved, src, out->fr, n);
        out->n = n;
        return 0;
    }
    out->h = readable_stack(src);
    if (out->h == NULL)
        return -1;
    out->fr = read_frames(out->h, &out->n);
    return out->fr == NULL ? -1 : 0;
}

/* _frames(c) -> ([(func, code, ip, depth, operands, from_c, kind, driven, gen)...], exc);
 * _frames(frame) -> the same for the running stack, exc None.  gen is
 * (generator, its exception being handled) for a generator's frame. */
static PyObject *fs_frames(PyObject *mod, PyObject *c)
{
    (void)mod;
    frame_source src;
    if (open_source(c, &src) < 0)
        return NULL;
    Py_ssize_t n = src.n;
    cps_frame *fr = src.fr;
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        cps_frame *f = &fr[i];
        PyObject *depth = f->depth >= 0 ? PyLong_FromLong(f->depth) : Py_NewRef(Py_None);
        PyObject *g = f->kind == CPS_FRAME_GENERATOR ? cps_frame_generator(f->frame) : NULL, *gen;
        if (g != NULL) {
            PyObject *e = cps_gen_exception(g);
            gen = Py_BuildValue("(OO)", g, e ? e : Py_None);
        }
        else
            gen = Py_NewRef(Py_None);
        PyObject *t = NULL, *driven = driven_info(src.h, f->frame);
        if (depth == NULL || gen == NULL || driven == NULL) {
            Py_XDECREF(depth);
            Py_XDECREF(gen);
            Py_XDECREF(driven);
        }
        else    /* (N: taken, even on failure) */
            t = Py_BuildValue("(OOiNiiiNN)", f->func ? f->func : Py_None, (PyObject *)f->code,
                              f->ip, depth, f->operands, f->from_c, f->kind, driven, gen);
        if (t == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, t);
    }
    PyMem_Free(fr);
    if (list == NULL)
        return NULL;
    PyObject *exc = src.live ? NULL : cps_handled_exception(&src.h->saved);
    return Py_BuildValue("(NO)", list, exc ? exc : Py_None);
}

/* Slots [lo, hi) of a frame as (values, indices of the empty ones, indices
 * of raw integers). */
static PyObject *read_slots(void *frame, Py_ssize_t lo, Py_ssize_t hi)
{
    PyObject *vals = PyTuple_New(hi - lo), *nulls = PyList_New(0), *ints = PyList_New(0);
    if (vals == NULL || nulls == NULL || ints == NULL)
        goto fail;
    for (Py_ssize_t i = lo; i < hi; i++) {
        int is_int;
        PyObject *v = cps_frame_slot(frame, i, &is_int);
        if (v == NULL && !is_int) {
            PyObject *k = PyLong_FromSsize_t(i - lo);
            if (k == NULL || PyList_Append(nulls, k) < 0) {
                Py_XDECREF(k);
                goto fail;
            }
            Py_DECREF(k);
            v = Py_None;
        }
        else if (is_int) {
            PyObject *k = PyLong_FromSsize_t(i - lo);
            if (k == NULL || v == NULL || PyList_Append(ints, k) < 0) {
                Py_XDECREF(k);
                Py_XDECREF(v);
                goto fail;
            }
            Py_DECREF(k);
            PyTuple_SET_ITEM(vals, i - lo, v);  /* new reference */
            continue;
        }
        PyTuple_SET_ITEM(vals, i - lo, Py_NewRef(v));
    }
    PyObject *r = Py_BuildValue("(NNN)", vals, PyList_AsTuple(nulls), PyList_AsTuple(ints));
    Py_DECREF(nulls);
    Py_DECREF(ints);
    return r;
fail:
    Py_XDECREF(vals);
    Py_XDECREF(nulls);
    Py_XDECREF(ints);
    return NULL;
}

/* _frame_values(c, depths) -> [(locals, stack)...] for the bottom
 * len(depths) frames; depths[i] is how many value-stack entries to read. */
static PyObject *fs_frame_values(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_frame_values(continulet, depths: list)");
        return NULL;
    }
    frame_source src;
    if (open_source(args[0], &src) < 0)
        return NULL;
    Py_ssize_t n = src.n;
    cps_frame *fr = src.fr;
    PyObject *depths = args[1];
    Py_ssize_t m = PyList_GET_SIZE(depths);
    PyObject *out = NULL;
    if (m > n) {
        PyErr_SetString(PyExc_ValueError, "more depths than frames");
        goto done;
    }
    out = PyList_New(m);
    for (Py_ssize_t i = 0; out != NULL && i < m; i++) {
        cps_frame *f = &fr[i];
        Py_ssize_t d = PyLong_AsSsize_t(PyList_GET_ITEM(depths, i));
        if (d == -1 && PyErr_Occurred()) {
            Py_CLEAR(out);
            break;
        }
        Py_ssize_t nl = f->code->co_nlocalsplus;
        if (d < 0 || d > f->code->co_stacksize) {
            PyErr_Format(PyExc_ValueError, "bad depth %zd for frame %zd", d, i);
            Py_CLEAR(out);
            break;
        }
        PyObject *loc = read_slots(f->frame, 0, nl);
        PyObject *stk = loc ? read_slots(f->frame, nl, nl + d) : NULL;
        if (stk == NULL) {
            Py_XDECREF(loc);
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, Py_BuildValue("(NN)", loc, stk));
    }
done:
    PyMem_Free(fr);
    return out;
}

/* _kind(c) -> (kind, extra): "unbound", "finished", "unstarted" with
 * (callable, args, kwargs), "recipe" (frames given, not yet rebuilt) with
 * (recipe, callable, args), or "suspended" with (callable, args) of its run (None for a
 * thread's main stack). */
static PyObject *fs_kind(PyObject *mod, PyObject *c)
{
    (void)mod;
    if (!PyObject_TypeCheck(c, &Continulet_Type)) {
        PyErr_Format(PyExc_TypeError, "expected a continulet, not %.200s", Py_TYPE(c)->tp_name);
        return NULL;
    }
    Continulet *self = (Continulet *)c;
    cont_stack *h = self->h;
    if (!cont_initialized(self))
        return Py_BuildValue("(sO)", "unbound", Py_None);
    if (h == NULL)
        return Py_BuildValue("(sO)", "finished", Py_None);
    if (!h->started && h->frames != NULL) {
        PyObject *args = cont_run_args(h);
        if (args == NULL)
            return NULL;
        return Py_BuildValue("(s(OON))", "recipe", h->frames, h->callable, args);
    }
    if (!h->started && !h->is_main) {
        PyObject *args = cont_run_args(h);
        if (args == NULL)
            return NULL;
        return Py_BuildValue("(s(ONO))", "unstarted", h->callable, args,
                             h->kwargs ? h->kwargs : Py_None);
    }
    if (h->callable == NULL)     /* a thread's main stack */
        return Py_BuildValue("(sO)", "suspended", Py_None);
    PyObject *args = cont_run_args(h);
    if (args == NULL)
        return NULL;
    return Py_BuildValue("(s(ON))", "suspended", h->callable, args);
}

/* How a rebuilt frame takes the outcome of the frame above it (what its
 * record's `wait` says): a plain call returns what the frame above
 * returned; the others wait for a generator running above them, whose
 * yield, return or exception they take as the interpreter would. */
enum {
    WAIT_CALL,          /* a call (the value is its result) */
    WAIT_ITER,          /* FOR_ITER over the generator */
    WAIT_SEND,          /* SEND to it (yield from, await) */
    WAIT_GEN_CALL,      /* next(g), g.send(v), g.throw(...), g.__next__() */
    WAIT_GEN_DEFAULT,   /* next(g, default) */
    WAIT_AGAIN,         /* the top frame only: stopped before the instruction at
                           its resume point (a trace function switched away),
                           it runs that instruction; the value is dropped */
    WAIT_KINDS
};

/* A recipe, checked so that no value of it can make the eval loop read
 * out of bounds: (((func, next_ip, (locals, nulls, ints), (stack, nulls, ints),
 * wait, default, exc)...), exc, on_resume, on_return).  func is the
 * frame's function, or for the frame of a generator running in the stack,
 * that generator, held (cps_gen_hold) until the stack is rebuilt; its
 * record's exc is the exception it handles.  on_resume, if not None, is called on the
 * new stack before the frames run, and what it returns (or raises) is what
 * the top frame's call returns; the value of the switch is then dropped.
 * on_return, if not None, is called as on_return(exception, value) with
 * what the bottom frame returned (value) or raised (exception, value
 * None), and what it returns (or raises) ends the run: it stands for the
 * code below the frames that a library's run function would run (a
 * tasklet's end). */
static int check_slots(PyObject *spec, Py_ssize_t want, Py_ssize_t max)
{
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 3 || !PyTuple_Check(PyTuple_GET_ITEM(spec, 0)))
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(PyTuple_GET_ITEM(spec, 0));
    if ((want >= 0 && n != want) || n > max)
        return -1;
    for (int k = 1; k < 3; k++) {
        PyObject *idx = PyTuple_GET_ITEM(spec, k);
        if (!PyTuple_Check(idx))
            return -1;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(idx); j++) {
            Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(idx, j));
            if (v < 0 || v >= n) {
                PyErr_Clear();
                return -1;
            }
        }
    }
    return 0;
}

/* Whether gen is one of gens[0..n) (the generators running in a stack
 * whose frames move, see src/transplant.c). */
static int is_one_of(PyObject *gen, PyObject *const *gens, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (gens[i] == gen)
            return 1;
    return 0;
}

/* `moving`: the generators that may stand in a record although not held
 * yet (they run in the stack whose frames the recipe moves); NULL if none. */
int cfs_check_recipe(PyObject *recipe, PyObject *const *moving, Py_ssize_t nmoving)
{
    if (!PyTuple_Check(recipe) || PyTuple_GET_SIZE(recipe) != 4 || !PyTuple_Check(PyTuple_GET_ITEM(recipe, 0)))
        goto bad;
    PyObject *on_resume = PyTuple_GET_ITEM(recipe, 2), *on_return = PyTuple_GET_ITEM(recipe, 3);
    if ((on_resume != Py_None && !PyCallable_Check(on_resume))
            || (on_return != Py_None && !PyCallable_Check(on_return)))
        goto bad;
    PyObject *frames = PyTuple_GET_ITEM(recipe, 0);
    /* no frame: on_resume's result is on_return's argument */
    if (PyTuple_GET_SIZE(frames) < 1 && (on_resume == Py_None || on_return == Py_None))
        goto bad;
    Py_ssize_t nframes = PyTuple_GET_SIZE(frames);
    for (Py_ssize_t i = 0; i < nframes; i++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, i);
        if (!PyTuple_Check(fr) || PyTuple_GET_SIZE(fr) != 7)
            goto bad;
        PyObject *obj = PyTuple_GET_ITEM(fr, 0);
        int gen = is_generator(obj);
        if (gen) {
            /* held, and in no other record */
            if (!cps_gen_held(obj) && !is_one_of(obj, moving, nmoving))
                goto bad;
            for (Py_ssize_t j = 0; j < i; j++)
                if (PyTuple_GET_ITEM(PyTuple_GET_ITEM(frames, j), 0) == obj)
                    goto bad;
        }
        else if (!PyFunction_Check(obj))
            goto bad;
        PyCodeObject *co = frame_code_of(obj);
        if (co == NULL)
            goto bad;
        long wait = PyLong_AsLong(PyTuple_GET_ITEM(fr, 4));
        /* a frame that waits for a generator has one above it */
        if (wait < 0 || wait >= WAIT_KINDS || (wait == WAIT_AGAIN && i + 1 < nframes)
                || (wait != WAIT_CALL && wait != WAIT_AGAIN
                    && (i + 1 >= nframes || !is_generator(PyTuple_GET_ITEM(PyTuple_GET_ITEM(frames, i + 1), 0)))))
            goto bad;
        if (i + 1 < nframes && wait == WAIT_CALL
                && is_generator(PyTuple_GET_ITEM(PyTuple_GET_ITEM(frames, i + 1), 0)))
            goto bad;
        /* (call, next): code units of the call in progress and of the
           instruction after it; Py_SIZE of a code object is its length */
        PyObject *ips = PyTuple_GET_ITEM(fr, 1);
        if (!PyTuple_Check(ips) || PyTuple_GET_SIZE(ips) != 2)
            goto bad;
        long call = PyLong_AsLong(PyTuple_GET_ITEM(ips, 0)), next = PyLong_AsLong(PyTuple_GET_ITEM(ips, 1));
        int gen_code = (co->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
        if (call < 0 || (wait == WAIT_AGAIN ? next != call : next <= call) || next > Py_SIZE(co)
                || gen_code != gen)
            goto bad;
        if (check_slots(PyTuple_GET_ITEM(fr, 2), co->co_nlocalsplus, co->co_nlocalsplus) < 0
                || check_slots(PyTuple_GET_ITEM(fr, 3), -1, co->co_stacksize - 1) < 0)
            goto bad;
        if (wait == WAIT_ITER || wait == WAIT_SEND) {
            /* the generator above, in the slot where the instruction keeps it */
            PyObject *stack = PyTuple_GET_ITEM(PyTuple_GET_ITEM(fr, 3), 0);
            Py_ssize_t slot = PyLong_AsSsize_t(PyTuple_GET_ITEM(fr, 5));
            if (slot < 0 || slot >= PyTuple_GET_SIZE(stack) || PyTuple_GET_ITEM(stack, slot)
                    != PyTuple_GET_ITEM(PyTuple_GET_ITEM(frames, i + 1), 0)) {
                PyErr_Clear();
                goto bad;
            }
        }
    }
    return 0;
bad:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "_set_frames: malformed frame recipe");
    return -1;
}

/* _set_frames(c, recipe): c was just __init__ialized; instead of calling
 * its callable, its first switch builds and resumes these frames. */
static PyObject *fs_set_frames(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &Continulet_Type)) {
        PyErr_SetString(PyExc_TypeError, "_set_frames(continulet, recipe)");
        return NULL;
    }
    cont_stack *h = ((Continulet *)args[0])->h;
    if (h == NULL || h->started || h->frames != NULL) {
        PyErr_SetString(cont_error, "_set_frames needs a continulet that has not started");
        return NULL;
    }
    if (!cps_frames_supported()) {
        PyErr_Format(PyExc_NotImplementedError, "rebuilding frames is not supported on Python %s yet",
                     Py_GetVersion());
        return NULL;
    }
    if (cfs_check_recipe(args[1], NULL, 0) < 0)
        return NULL;
    h->frames = Py_NewRef(args[1]);
    Py_RETURN_NONE;
}

static void fill_slots(void *frame, Py_ssize_t base, PyObject *spec)
{
    PyObject *vals = PyTuple_GET_ITEM(spec, 0), *nulls = PyTuple_GET_ITEM(spec, 1), *ints = PyTuple_GET_ITEM(spec, 2);
    Py_ssize_t n = PyTuple_GET_SIZE(vals);
    for (Py_ssize_t i = 0; i < n; i++)
        cps_frame_set_slot(frame, base + i, Py_NewRef(PyTuple_GET_ITEM(vals, i)));
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(nulls); j++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(nulls, j));
        Py_DECREF(PyTuple_GET_ITEM(vals, i));
        cps_frame_set_slot(frame, base + i, NULL);
    }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(ints); j++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(ints, j));
        PyObject *v = PyTuple_GET_ITEM(vals, i);
        Py_ssize_t x = PyLong_AsSsize_t(v);
        Py_DECREF(v);
        cps_frame_set_int(frame, base + i, x);
    }
}

static void release_waits(cfs_wait *w, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_CLEAR(w[i].gen);
        Py_CLEAR(w[i].arg);
    }
}

/* A generator that returns `value` when first sent None: what a SEND that
 * starts again finds in place of the generator that has just returned. */
static PyObject *returning(PyObject *value)
{
    return call_helper("_returning", value);
}

/* Hand the frame f, waiting as `w` says, the outcome of the generator
 * above it (`value` stolen, or NULL with an exception; `yielded`: a
 * yield, else a return), as the instruction it waits in would take it.
 * Returns what f resumes with, its resume point set. */
static PyObject *deliver(void *f, cfs_wait *w, PyObject *gen, PyObject *value, int yielded)
{
    if (value == NULL || yielded || w->wait == WAIT_CALL)
        return value;   /* a yield or an exception: the call's own outcome */
    switch (w->wait) {
    case WAIT_ITER:
        /* the generator has returned: FOR_ITER runs again (nothing pushed)
           and finds it exhausted */
        Py_DECREF(value);
        cps_frame_set_resume(f, w->at, w->at, w->depth);
        return NULL;
    case WAIT_SEND: {
        /* SEND runs again, with a generator in the receiver's slot that
           returns the value when sent the None pushed */
        PyObject *r = returning(value);
        Py_DECREF(value);
        if (r == NULL)
            return NULL;
        cps_frame_set_slot(f, w->nl + PyLong_AsSsize_t(w->arg), r);
        Py_DECREF(gen);         /* the slot's reference */
        cps_frame_set_resume(f, w->at, w->at, w->depth);
        return Py_NewRef(Py_None);
    }
    case WAIT_GEN_DEFAULT:
        Py_DECREF(value);
        return Py_NewRef(w->arg);
    default:
        /* as gen.send() and next() report a return */
        if (value == Py_None)
            PyErr_SetNone(PyExc_StopIteration);
        else {
            PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, value);
            if (e != NULL) {
                PyErr_SetObject(PyExc_StopIteration, e);
                Py_DECREF(e);
            }
        }
        Py_DECREF(value);
        return NULL;
    }
}

/* Fill a frame from its record.  The slots above its stack are emptied
 * (3.11 and 3.13 read a waiting frame's stack from the analysis of its
 * code, not from a stack pointer). */
static void fill_frame(void *f, PyObject *fr, PyCodeObject *co, cfs_wait *w)
{
    Py_ssize_t nl = co->co_nlocalsplus;
    fill_slots(f, 0, PyTuple_GET_ITEM(fr, 2));
    PyObject *stack = PyTuple_GET_ITEM(fr, 3);
    fill_slots(f, nl, stack);
    Py_ssize_t depth = PyTuple_GET_SIZE(PyTuple_GET_ITEM(stack, 0));
    w->nl = nl;
    w->depth = depth;
    for (Py_ssize_t i = nl + depth; i < nl + co->co_stacksize; i++)
        cps_frame_set_slot(f, i, NULL);
    PyObject *ips = PyTuple_GET_ITEM(fr, 1);
    cps_frame_set_resume(f, (int)PyLong_AsLong(PyTuple_GET_ITEM(ips, 0)),
                         (int)PyLong_AsLong(PyTuple_GET_ITEM(ips, 1)), depth);
}

/* The body of a run whose continulet was given frames: build them on this
 * new stack, then run them top first.  `value` (stolen; NULL with an
 * exception set when thrown into) is the result of the top frame's call. */
PyObject *cfs_run(PyThreadState *ts, cont_stack *me, PyObject *value)
{
    PyObject *recipe = me->frames;
    me->frames = NULL;
    PyObject *frames = PyTuple_GET_ITEM(recipe, 0);
    Py_ssize_t n = PyTuple_GET_SIZE(frames);
    cfs_chain *chain = PyMem_Calloc(1, sizeof(cfs_chain) + (size_t)n * sizeof(void *));
    cfs_wait *waits = PyMem_Calloc((size_t)(n ? n : 1), sizeof(cfs_wait));
    if (chain == NULL || waits == NULL) {
        PyMem_Free(chain);
        PyMem_Free(waits);
        Py_XDECREF(value);
        Py_DECREF(recipe);
        return PyErr_NoMemory();
    }
    /* first what takes memory (the frames of functions), so that running
       out of it leaves nothing half built */
    void *below = cps_top_frame(ts);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *obj = PyTuple_GET_ITEM(PyTuple_GET_ITEM(frames, i), 0);
        void *f = is_generator(obj) ? cps_gen_iframe(obj)
            : cps_push_frame(ts, (PyFunctionObject *)obj, i ? chain->frames[i - 1] : below);
        if (f == NULL)
            break;
        chain->frames[chain->live++] = f;
    }
    if (chain->live < n) {
        /* out of memory: nothing ran, let go of what was built */
        Py_XDECREF(value);
        while (chain->live > 0) {
            Py_ssize_t k = --chain->live;
            if (!is_generator(PyTuple_GET_ITEM(PyTuple_GET_ITEM(frames, k), 0)))
                cps_drop_frame(ts, chain->frames[k]);
        }
        PyMem_Free(chain);
        PyMem_Free(waits);
        Py_DECREF(recipe);
        return NULL;
    }
    PyObject *exc = PyTuple_GET_ITEM(recipe, 1);
    if (exc != Py_None)
        cps_set_handled_exception(ts, Py_NewRef(exc));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, i), *obj = PyTuple_GET_ITEM(fr, 0);
        cfs_wait *w = &waits[i];
        w->wait = (int)PyLong_AsLong(PyTuple_GET_ITEM(fr, 4));
        w->at = (int)PyLong_AsLong(PyTuple_GET_ITEM(PyTuple_GET_ITEM(fr, 1), 0));
        if (w->wait != WAIT_CALL && w->wait != WAIT_GEN_CALL)
            w->arg = Py_NewRef(PyTuple_GET_ITEM(fr, 5));
        if (is_generator(obj)) {
            PyObject *gexc = PyTuple_GET_ITEM(fr, 6);
            w->gen = Py_NewRef(obj);
            cps_gen_enter(ts, obj, i ? chain->frames[i - 1] : below,
                          gexc == Py_None ? NULL : Py_NewRef(gexc));
        }
        fill_frame(chain->frames[i], fr, frame_code_of(obj), w);
    }
    chain->waits = waits;
    chain->n = n;
    PyObject *on_resume = PyTuple_GET_ITEM(recipe, 2);
    PyObject *on_return = PyTuple_GET_ITEM(recipe, 3);
    /* in the chain, where a move of these frames finds it (cfs_retire) */
    chain->on_return = on_return == Py_None ? NULL : Py_NewRef(on_return);
    me->chain = chain;
    if (on_resume != Py_None && value != NULL) {
        /* called as if by the top frame, so that its frames link onto the
           rebuilt ones */
        Py_DECREF(value);
        if (n > 0)
            cps_link_top(ts, chain->frames[n - 1]);
        value = PyObject_CallNoArgs(on_resume);
    }
    Py_DECREF(recipe);
    int yielded = 0;
    while (chain->live > 0) {
        Py_ssize_t k = chain->live - 1;
        void *f = chain->frames[k];
        if (k + 1 < n)
            value = deliver(f, &waits[k], waits[k + 1].gen, value, yielded);
        else if (waits[k].wait == WAIT_AGAIN && value != NULL)
            Py_CLEAR(value);    /* nothing pushed: the instruction runs (again) */
        if (waits[k].gen != NULL)
            value = cps_run_gen_frame(ts, waits[k].gen, f, value, (int)k, &yielded);
        else {
            value = cps_run_frame(ts, f, value, (int)k);
            yielded = 0;
        }
        chain->live = k;
        if (k + 1 < n)
            release_waits(&waits[k + 1], 1);
    }
    release_waits(waits, n ? 1 : 0);
    PyMem_Free(waits);
    me->chain = NULL;
    on_return = chain->on_return;
    PyMem_Free(chain);
    if (on_return != NULL) {
        PyObject *exc = value == NULL ? cps_fetch_exception() : NULL;
        PyObject *r = PyObject_CallFunctionObjArgs(on_return, exc ? exc : Py_None,
                                                   value ? value : Py_None, NULL);
        Py_XDECREF(exc);
        Py_XDECREF(value);
        Py_DECREF(on_return);
        value = r;
    }
    return value;
}

void cfs_release(cont_stack *s)
{
    Py_CLEAR(s->frames);
}

/* The frames of the suspended stack s moved elsewhere and it will never
 * run again: let go of what cfs_run holds in its C frame for the rebuilt
 * frames that have not returned (see src/transplant.c). */
void cfs_retire(cont_stack *s)
{
    cfs_chain *chain = s->chain;
    if (chain == NULL)
        return;
    s->chain = NULL;
    /* waits[k + 1] is let go of when frame k returns, waits[0] after
       the run: while frame live - 1 runs, waits [0, live] are held */
    release_waits(chain->waits, chain->live < chain->n ? chain->live + 1 : chain->n);
    PyMem_Free(chain->waits);
    Py_XDECREF(chain->on_return);
    PyMem_Free(chain);
}

/* Generators and coroutines that are not running: their frame is read and
 * written the same way.  _gen_state(gen) -> None if finished, else
 * (func, state, ip, (locals...), (stack...), exc); a running one raises. */

static PyObject *fs_gen_state(PyObject *mod, PyObject *gen)
{
    (void)mod;
    if (!is_generator(gen)) {
        PyErr_Format(PyExc_TypeError, "expected a generator or coroutine, not %.200s", Py_TYPE(gen)->tp_name);
        return NULL;
    }
    if (cps_gen_finished(gen))
        Py_RETURN_NONE;
    int state;
    Py_ssize_t depth;
    void *f = cps_gen_frame(gen, &state, &depth);
    if (f == NULL || !cps_frames_supported()) {
        PyObject *err = picking_error();
        if (err != NULL)
            PyErr_Format(err, "cannot pickle %R: it is running", gen);
        return NULL;
    }
    PyCodeObject *co = (PyCodeObject *)PyObject_GetAttrString(gen, PyCoro_CheckExact(gen) ? "cr_code" : "gi_code");
    if (co == NULL)
        return NULL;
    Py_ssize_t nl = co->co_nlocalsplus;
    Py_DECREF(co);
    PyObject *loc = read_slots(f, 0, nl);
    PyObject *stk = loc ? read_slots(f, nl, nl + depth) : NULL;
    if (stk == NULL) {
        Py_XDECREF(loc);
        return NULL;
    }
    PyObject *func = cps_frame_func(f);
    PyObject *exc = cps_gen_exception(gen);
    return Py_BuildValue("(OiiNNO)", func ? func : Py_None, state, cps_frame_ip(f), loc, stk,
                         exc ? exc : Py_None);
}

/* _gen_set_state(gen, (state, ip, locals, stack, exc)): gen was just made
 * by calling its function (it has not started); it becomes the captured one. */
static PyObject *fs_gen_set_state(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 2 || !is_generator(args[0]) || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 5) {
        PyErr_SetString(PyExc_TypeError, "_gen_set_state(generator, (state, ip, locals, stack, exc))");
        return NULL;
    }
    PyObject *gen = args[0], *st = args[1];
    int state = (int)PyLong_AsLong(PyTuple_GET_ITEM(st, 0));
    int ip = (int)PyLong_AsLong(PyTuple_GET_ITEM(st, 1));
    if (PyErr_Occurred())
        return NULL;
    PyCodeObject *co = (PyCodeObject *)PyObject_GetAttrString(gen, PyCoro_CheckExact(gen) ? "cr_code" : "gi_code");
    if (co == NULL)
        return NULL;
    Py_ssize_t nl = co->co_nlocalsplus, room = co->co_stacksize, size = Py_SIZE(co);
    Py_DECREF(co);
    PyObject *loc = PyTuple_GET_ITEM(st, 2), *stk = PyTuple_GET_ITEM(st, 3);
    void *f;
    int probe_state;
    Py_ssize_t probe_depth;
    if (check_slots(loc, nl, nl) < 0 || check_slots(stk, -1, room) < 0 || ip < 0 || ip >= size
            || cps_gen_frame(gen, &probe_state, &probe_depth) == NULL || cps_gen_prepare(gen, &f) < 0) {
        PyErr_SetString(PyExc_ValueError, "_gen_set_state: malformed state or a generator that has started");
        return NULL;
    }
    fill_slots(f, 0, loc);
    fill_slots(f, nl, stk);
    PyObject *exc = PyTuple_GET_ITEM(st, 4);
    cps_gen_finish(gen, state, ip, PyTuple_GET_SIZE(PyTuple_GET_ITEM(stk, 0)),
                   exc == Py_None ? NULL : Py_NewRef(exc));
    Py_RETURN_NONE;
}

/* _gen_hold(gen): a generator just made by calling its function becomes
 * the held shell of one that was running in a captured stack (see
 * check_recipe); nothing can run it until the stack is rebuilt. */
static PyObject *fs_gen_hold(PyObject *mod, PyObject *gen)
{
    (void)mod;
    if (!is_generator(gen) || cps_gen_hold(gen) < 0) {
        PyErr_SetString(PyExc_ValueError, "_gen_hold: expected a generator that has not started");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* continulet.__reduce__ and __setstate__: the work is done in Python. */
static PyObject *helper(const char *name)
{
    PyObject *m = PyImport_ImportModule("_continuation_pickle");
    if (m == NULL)
        return NULL;
    PyObject *f = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return f;
}

static PyObject *call_helper(const char *name, PyObject *arg)
{
    PyObject *f = helper(name);
    if (f == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(f, arg);
    Py_DECREF(f);
    return r;
}

PyObject *cfs_reduce(PyObject *self, PyObject *unused)
{
    (void)unused;
    return call_helper("reduce", self);
}

PyObject *cfs_setstate(PyObject *self, PyObject *state)
{
    PyObject *f = helper("setstate");
    if (f == NULL)
        return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(f, self, state, NULL);
    Py_DECREF(f);
    return r;
}

PyMethodDef cfs_module_methods[] = {
    {"_kind", fs_kind, METH_O,
     "_kind(continulet)\n--\n\nInternal (pickling): what state a continulet is in."},
    {"_frames", fs_frames, METH_O,
     "_frames(continulet)\n--\n\n"
     "Internal (pickling): the frames of the stack a continulet holds, bottom\n"
     "first, as (func, code, ip, depth, operands, from_c, kind, driven), and the\n"
     "exception being handled there.  Given a frame object running in this\n"
     "thread instead: the running stack's frames from its bottom up to that one."},
    {"_frame_values", (PyCFunction)(void (*)(void))fs_frame_values, METH_FASTCALL,
     "_frame_values(continulet, depths)\n--\n\n"
     "Internal (pickling): locals and value stacks of the bottom frames\n"
     "(of a continulet's suspended stack, or of the running stack, as _frames)."},
    {"_gen_state", fs_gen_state, METH_O,
     "_gen_state(generator)\n--\n\nInternal (pickling): the frame of a generator that is not running."},
    {"_gen_set_state", (PyCFunction)(void (*)(void))fs_gen_set_state, METH_FASTCALL,
     "_gen_set_state(generator, state)\n--\n\nInternal (unpickling): a new generator takes that frame."},
    {"_gen_hold", fs_gen_hold, METH_O,
     "_gen_hold(generator)\n--\n\n"
     "Internal (unpickling): a new generator stands for one running in a stack\n"
     "that is rebuilt later: it runs then, and cannot run before."},
    {"_set_frames", (PyCFunction)(void (*)(void))fs_set_frames, METH_FASTCALL,
     "_set_frames(continulet, recipe)\n--\n\n"
     "Internal (unpickling): frames to rebuild and resume at the first switch."},
    {NULL, NULL, 0, NULL}
};
