/* _stackless_accel: how the collector and the deallocator walk the
 * tasklet and channel classes.  CPython gives a class with __slots__ the
 * generic subtype_traverse and subtype_dealloc, which walk the class chain
 * and each class's member list, testing each member's kind, at every
 * visit and at every deallocation; these use a list of offsets made once
 * instead, where the classes are what this code knows (each install
 * function checks, and otherwise leaves CPython's). */
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include "stackless_accel.h"

/* The bases _TaskletFlags and _ChannelFlags hold only flags (True/False,
 * small ints, None): no reference cycle can run through them.  CPython's
 * traverse of a class with __slots__ (subtype_traverse) walks its own
 * slots, its instance dict, and then calls the traverse of the first base
 * that has a different one, which must visit the instance's (heap) type;
 * with this one as the base's traverse, the flag slots are never walked.
 * Skipping a reference can only keep objects alive, never free a live
 * one: a flag slot that someone fills with a container would at worst
 * keep a cycle through it uncollected. */
static int flags_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

/* Give the base `name` of `cls` the traverse above, if it is what this
 * code knows: a direct base of cls, under object, with slots only (no
 * dict, no weak references), all of them named in `flags`. */
void accel_skip_flags_in_gc(PyObject *ns, const char *name, PyTypeObject *cls,
                            const char *const *flags)
{
    PyObject *f = PyDict_GetItemString(ns, name);
    if (f == NULL || !PyType_Check(f))
        return;
    PyTypeObject *base = (PyTypeObject *)f;
    if (cls->tp_base != base || base->tp_base != &PyBaseObject_Type
            || !(base->tp_flags & Py_TPFLAGS_HEAPTYPE) || base->tp_traverse != cls->tp_traverse
            || base->tp_dictoffset != 0 || base->tp_weaklistoffset != 0)
        return;
    for (PyMemberDef *m = base->tp_members; m && m->name; m++) {
        int known = 0;
        for (const char *const *n = flags; *n && !known; n++)
            known = strcmp(m->name, *n) == 0;
        if (!known)
            return;
    }
    base->tp_traverse = flags_traverse;
}

/* The traverse of the tasklet and the channel class themselves.  CPython
 * gives a class with __slots__ the generic subtype_traverse, which at
 * every visit of every instance walks the class chain and each class's
 * member list, testing each member's kind: ~1,100 instructions per
 * hackysack kick on 3.11, where the collector visits every blocked
 * player.  These visit the same references from a list of offsets made
 * once: the instance's (heap) type and the class's own object slots.  The
 * bases hold only flags (above, and TaskletFlags has no traverse), and a
 * subclass keeps subtype_traverse, which walks its own slots and dict and
 * then calls this one for the rest, leaving the type to it. */
#define MAX_SLOTS 16
typedef struct {
    int n;
    Py_ssize_t off[MAX_SLOTS];
} slot_list;
static slot_list tasklet_slots, channel_slots;

static inline int visit_slots(PyObject *self, const slot_list *l, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    for (int i = 0; i < l->n; i++)
        Py_VISIT(*(PyObject **)((char *)self + l->off[i]));
    return 0;
}

static int tasklet_traverse(PyObject *self, visitproc visit, void *arg)
{
    return visit_slots(self, &tasklet_slots, visit, arg);
}

static int channel_traverse(PyObject *self, visitproc visit, void *arg)
{
    return visit_slots(self, &channel_slots, visit, arg);
}

/* Give cls (the tasklet class, or the channel class when `channel`) the
 * traverse above, if it is what this code knows: a heap type without an
 * instance dict, whose own members are object slots, and whose base has
 * no traverse or flags_traverse (visiting the type only). */
void accel_fast_traverse(PyTypeObject *cls, int channel)
{
    slot_list *l = channel ? &channel_slots : &tasklet_slots;
    PyTypeObject *base = cls->tp_base;
    if (!(cls->tp_flags & Py_TPFLAGS_HEAPTYPE) || !(cls->tp_flags & Py_TPFLAGS_HAVE_GC)
            || cls->tp_dictoffset != 0 || base == NULL || cls->tp_traverse == base->tp_traverse
            || (base->tp_traverse != NULL && base->tp_traverse != flags_traverse)
            || base->tp_dictoffset != 0)
        return;
    slot_list found = {0, {0}};
    for (PyMemberDef *m = cls->tp_members; m && m->name; m++) {
        if (m->type != T_OBJECT_EX || found.n == MAX_SLOTS)
            return;
        found.off[found.n++] = m->offset;
    }
    *l = found;
    cls->tp_traverse = channel ? channel_traverse : tasklet_traverse;
}

/* The tasklet class's deallocation.  subtype_dealloc, CPython's for a
 * class with __slots__, walks the class chain twice and the member list
 * of each class, tracks and untracks the object around the base's
 * dealloc, and checks for finalizers: ~200 instructions of every
 * tasklet's end on 3.14.  This clears the same slots from tasklet_slots.
 * It is also the base dealloc that a subclass's subtype_dealloc calls,
 * after it ran the subclass's finalizer and cleared the subclass's own
 * slots: the type it releases is the instance's, as a heap type's dealloc
 * must.  A finalizer given to the class itself later (`__del__` set on
 * it) runs as subtype_dealloc would run it: first, the object tracked,
 * and the object may come back to life in it. */
static PyTypeObject *tasklet_class;

static void tasklet_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (tp == tasklet_class && tp->tp_finalize != NULL
            && PyObject_CallFinalizerFromDealloc(self) < 0)
        return;         /* (resurrected) */
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, tasklet_dealloc)
    accel_flags_clear(self);
    for (int i = 0; i < tasklet_slots.n; i++)
        Py_CLEAR(*(PyObject **)((char *)self + tasklet_slots.off[i]));
    tp->tp_free(self);
    Py_DECREF(tp);
    Py_TRASHCAN_END
}

void accel_fast_dealloc(PyTypeObject *cls)
{
    if (cls->tp_traverse != tasklet_traverse || cls->tp_base != &accel_flags_type
            || cls->tp_finalize != NULL || cls->tp_del != NULL || cls->tp_itemsize != 0
            || cls->tp_weaklistoffset != accel_flags_type.tp_weaklistoffset
            || cls->tp_free != PyObject_GC_Del)
        return;
    tasklet_class = cls;
    cls->tp_dealloc = tasklet_dealloc;
}
