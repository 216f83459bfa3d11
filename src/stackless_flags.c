/* _stackless_accel.TaskletFlags: the base class of stackless.tasklet when
 * the accelerator is in use (stackless/_tasklet.py picks it), in place of
 * the Python class _TaskletFlags, with the same attribute names.
 *
 * Why a C type: each object slot of a tasklet costs a reference count
 * when the tasklet gets its value and another when it is freed
 * (subtype_dealloc walks every slot), and most tasklets live a few
 * microseconds.  The flags that are only ever True or False are C chars
 * here: T_BOOL members, True/False to Python, a TypeError for anything
 * that is not a bool (the Python code stores bools only), and 0 (False,
 * what _init_fields() sets) in a new instance, so that neither the
 * creation nor the end of a tasklet counts a reference for them.
 * _blocked (-1, 0 or 1) is a short (T_SHORT, an int to Python): a signed
 * char would be read back as 255 where char is unsigned (arm64), because
 * T_BYTE reads a plain char.  _base (an int or None) stays an object.  No
 * reference cycle can run through any of them, so the type has no
 * traverse: the collector never walks them (what accel_skip_flags_in_gc
 * does for the Python class).
 *
 * The tasklet's weak references are listed here too: declared by the
 * subclass, __weakref__ is a "managed" one on 3.12+, two words before the
 * object where one is used, and the tasklet was 8 B over a pymalloc
 * size class. */
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include "stackless_accel.h"

typedef struct {
    PyObject_HEAD
    PyObject *base;
    short blocked;
    char scheduled, alive, started, is_main, atomic, ignore_nesting, block_trap, orphaned, unrestorable;
    /* its place in its thread's registry (stackless_registry.c): no
       attribute, so that nothing else can change it */
    reg_link link;
    PyObject *weakrefs;
} TaskletFlags;

const Py_ssize_t accel_link_offset = offsetof(TaskletFlags, link);

#define OBJ(name, field) {name, T_OBJECT_EX, offsetof(TaskletFlags, field), 0, NULL}
#define FLAG(name, field) {name, T_BOOL, offsetof(TaskletFlags, field), 0, NULL}

static PyMemberDef flags_members[] = {
    {"_blocked", T_SHORT, offsetof(TaskletFlags, blocked), 0, NULL},
    FLAG("_scheduled", scheduled), FLAG("_alive", alive),
    FLAG("_started", started), FLAG("_is_main", is_main), FLAG("_atomic", atomic),
    FLAG("_ignore_nesting", ignore_nesting), FLAG("_block_trap", block_trap),
    FLAG("_orphaned", orphaned), FLAG("_unrestorable", unrestorable), OBJ("_base", base),
    {NULL, 0, 0, 0, NULL},
};

void accel_flags_clear(PyObject *self)
{
    TaskletFlags *f = (TaskletFlags *)self;
    accel_reg_dealloc(self);
    /* (subtype_dealloc leaves them to the base that lists them) */
    if (f->weakrefs != NULL)
        PyObject_ClearWeakRefs(self);
    Py_CLEAR(f->base);
}

/* subtype_dealloc has cleared the subclass's slots; this type's own */
static void flags_dealloc(PyObject *self)
{
    accel_flags_clear(self);
    Py_TYPE(self)->tp_free(self);
}

PyTypeObject accel_flags_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_stackless_accel.TaskletFlags",
    .tp_basicsize = sizeof(TaskletFlags),
    .tp_dealloc = flags_dealloc,
    .tp_weaklistoffset = offsetof(TaskletFlags, weakrefs),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The flags of a tasklet (stackless.tasklet's base with the accelerator).",
    .tp_members = flags_members,
};

int tasklet_flags_add(PyObject *module)
{
    /* object's own __new__: the Python code makes tasklets with
     * object.__new__(cls), which refuses a class whose nearest C base has
     * another one */
    accel_flags_type.tp_new = PyBaseObject_Type.tp_new;
    if (PyType_Ready(&accel_flags_type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "TaskletFlags", (PyObject *)&accel_flags_type);
}
