/* Moving the frames of a suspended stack to a new stack, possibly of
 * another thread (stackless's bind_thread() of a paused tasklet).
 *
 * A stack's C frames belong to its thread: their bytes hold addresses in
 * that thread's C stack.  Its Python frames do not: the Python side
 * (_continuation_pickle.capture_ex) reads them as a recipe of the same
 * objects, no copies, and _transplant() gives that recipe to a fresh
 * continulet bound to the target thread, which rebuilds the frames when
 * it first runs there (src/framestate.c, cfs_run).  The old stack is then
 * retired without unwinding it: its frames moved, they did not end, so no
 * finally block runs.  The generators running in it move too: they become
 * held shells that the new stack enters again, and keep their identity.
 */
#include "continulet.h"

/* The generators running in the suspended stack h, into *out (a new
 * array, NULL when there are none); -1 with an exception on failure. */
static Py_ssize_t running_generators(cont_stack *h, PyObject ***out)
{
    *out = NULL;
    Py_ssize_t n = cps_frames(&h->saved, &h->slice, NULL, 0), k = 0;
    cps_frame *fr = PyMem_Calloc((size_t)(n ? n : 1), sizeof(cps_frame));
    PyObject **gens = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    if (fr == NULL || gens == NULL) {
        PyMem_Free(fr);
        PyMem_Free(gens);
        PyErr_NoMemory();
        return -1;
    }
    cps_frames(&h->saved, &h->slice, fr, n);
    for (Py_ssize_t i = 0; i < n; i++)
        if (fr[i].kind == CPS_FRAME_GENERATOR)
            gens[k++] = cps_frame_generator(fr[i].frame);
    PyMem_Free(fr);
    *out = gens;
    return k;
}

/* Whether every one of gens[0..n) stands in a record of the recipe: a
 * generator left out would stay marked as running for good. */
static int all_in_recipe(PyObject *recipe, PyObject *const *gens, Py_ssize_t n)
{
    PyObject *frames = PyTuple_GET_ITEM(recipe, 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        int found = 0;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(frames) && !found; j++)
            found = PyTuple_GET_ITEM(PyTuple_GET_ITEM(frames, j), 0) == gens[i];
        if (!found)
            return 0;
    }
    return 1;
}

/* The thread given by its threading.get_ident(), as _continuation
 * names threads (their thread states' ids). */
static int parse_thread_id(PyObject *o, uint64_t *id)
{
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (cps_thread_id_of(v, id) < 0) {
        PyErr_SetString(PyExc_ValueError, "bad thread");
        return -1;
    }
    return 0;
}

static Continulet *continulet_arg(PyObject *o)
{
    if (!PyObject_TypeCheck(o, &Continulet_Type) || !cont_initialized((Continulet *)o)) {
        PyErr_SetString(PyExc_TypeError, "_transplant: expected an initialized continulet");
        return NULL;
    }
    return (Continulet *)o;
}

/* _transplant(old, new, recipe, thread_id): (thread_id as
 * threading.get_ident() gives it) old holds a suspended stack
 * (of any thread) whose frames `recipe` describes (capture_ex, without
 * copies); new was just __init__ialized with the same run.  new then
 * holds those frames, to rebuild in thread `thread_id` when it first
 * runs; old is finished, and its stack is retired.  With new and recipe
 * None, old holds frames not yet rebuilt (a recipe): it only changes
 * thread.  Everything is checked before anything changes. */
static PyObject *transplant(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    uint64_t tid;
    if (nargs != 4 || parse_thread_id(args[3], &tid) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "_transplant(old, new, recipe, thread_id)");
        return NULL;
    }
    Continulet *old = continulet_arg(args[0]);
    if (old == NULL)
        return NULL;
    cont_stack *s = old->h;
    if (args[1] == Py_None && args[2] == Py_None) {
        if (s == NULL || s->started || s->is_main || s->frames == NULL) {
            PyErr_SetString(cont_error, "_transplant: the continulet holds no frames to rebuild");
            return NULL;
        }
        old->thread_id = s->thread_id = tid;
        Py_RETURN_NONE;
    }
    Continulet *new = continulet_arg(args[1]);
    if (new == NULL)
        return NULL;
    cont_stack *n = new->h;
    if (s == NULL || !s->started || s->is_main || s->slice.state != STK_SUSPENDED
            || s->kill_return != NULL) {
        PyErr_SetString(cont_error, "_transplant: the continulet holds no suspended stack");
        return NULL;
    }
    if (n == NULL || n->started || n->is_main || n->frames != NULL || new == old) {
        PyErr_SetString(cont_error, "_transplant: the new continulet must not have started");
        return NULL;
    }
    PyObject **gens;
    Py_ssize_t ngens = running_generators(s, &gens);
    if (ngens < 0)
        return NULL;
    int ok = cfs_check_recipe(args[2], gens, ngens) == 0;
    if (ok && !all_in_recipe(args[2], gens, ngens)) {
        PyErr_SetString(PyExc_ValueError, "_transplant: a generator running in the stack is not in the recipe");
        ok = 0;
    }
    PyMem_Free(gens);
    if (!ok)
        return NULL;
    /* the move: no Python code runs from here until the retirement */
    old->h = NULL;
    n->frames = Py_NewRef(args[2]);
    new->thread_id = n->thread_id = tid;
    cont_retire_stack(s);
    Py_RETURN_NONE;
}

PyMethodDef cont_transplant_methods[] = {
    {"_transplant", (PyCFunction)(void (*)(void))transplant, METH_FASTCALL,
     "_transplant(old, new, recipe, thread_id)\n--\n\n"
     "Internal (stackless's bind_thread): move the frames of old's suspended\n"
     "stack, captured as recipe, to the fresh continulet new, bound to the\n"
     "thread thread_id; old's stack is retired without unwinding."},
    {NULL, NULL, 0, NULL}
};
