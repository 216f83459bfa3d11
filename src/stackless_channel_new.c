/* _stackless_accel: creating channels in C.
 *
 * `channel()` ran type.__call__, object.__new__ (which before 3.13 also
 * gives the instance an empty block for the values of its __dict__) and
 * the Python __init__ (a frame, a queue and five attribute stores): a
 * program that makes a channel per tasklet (hackysack) paid it for each.
 * The class's vectorcall below does the same in C while the class's
 * __new__ and __init__ are the originals (Stackless's channel ignores its
 * arguments, as the Python __init__ does): it fills the new channel's
 * slots from a template that install learns by running the Python
 * __init__ once on a probe, so that __init__ stays the one definition of
 * a new channel.  Anything else (a subclass, a replaced __new__ or
 * __init__) goes through type.__call__.
 */
#include <Python.h>
#include <structmember.h>
#include "slots.h"
#include "stackless_accel.h"

#define MAX_FIELDS 16

static PyTypeObject *channel_type;
static PyObject *py_init, *object_new, *s_new, *s_init, *empty_tuple;
/* the slots __init__ fills: their values, NULL for a new empty WaitQueue */
static Py_ssize_t tpl_off[MAX_FIELDS];
static PyObject *tpl_val[MAX_FIELDS];
static int tpl_n;
/* the class's version tag when __new__ and __init__ were last found to be
 * the originals, else 0 (see own_new_init in stackless_tasklet.c) */
static unsigned int own_tag;

/* (after install, the class's __init__ is the original hidden from trace
 * functions, stackless_hide.c) */
static int own_new_init(void)
{
    if (own_tag != 0 && channel_type->tp_version_tag == own_tag)
        return 1;
    PyObject *init = _PyType_Lookup(channel_type, s_init);
    if (_PyType_Lookup(channel_type, s_new) != object_new
            || (init != py_init && !accel_is_hidden(init, py_init)))
        return 0;
    own_tag = channel_type->tp_version_tag;
    return 1;
}

static PyObject *new_queue(void)
{
    return accel_waitqueue_type.tp_new(&accel_waitqueue_type, empty_tuple, NULL);
}

static PyObject *channel_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames)
{
    if ((PyTypeObject *)type != channel_type || !own_new_init())
        return accel_type_call(type, args, PyVectorcall_NARGS(nargsf), kwnames);
    /* the type's allocator: no values block (see tasklet_new) */
    PyObject *self = channel_type->tp_alloc(channel_type, 0);
    if (self == NULL)
        return NULL;
    for (int i = 0; i < tpl_n; i++) {
        PyObject *v = tpl_val[i] != NULL ? Py_NewRef(tpl_val[i]) : new_queue();
        if (v == NULL) {
            Py_DECREF(self);
            return NULL;
        }
        set_slot(self, tpl_off[i], v);
        Py_DECREF(v);
    }
    return self;
}

/* What the Python __init__ stored in the probe's slots, if the template
 * can make it: immutable values and empty WaitQueues, nothing in its dict.
 * 1 when usable, 0 when not, -1 with an error. */
static int learn(PyObject *probe)
{
    PyObject *r = PyObject_CallOneArg(py_init, probe);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    int ok = 1;
    if (channel_type->tp_dictoffset != 0) {     /* (Stackless's channel has no __dict__) */
        PyObject *dict = PyObject_GenericGetDict(probe, NULL);
        if (dict == NULL)
            return -1;
        ok = PyDict_GET_SIZE(dict) == 0;
        Py_DECREF(dict);
    }
    for (PyTypeObject *c = channel_type; c != NULL && ok; c = c->tp_base)
        for (PyMemberDef *m = c->tp_members; m && m->name && ok; m++) {
            PyObject *v = m->type == T_OBJECT_EX ? slot(probe, m->offset) : NULL;
            if (v == NULL)
                continue;
            if (tpl_n == MAX_FIELDS)
                ok = 0;
            else if (Py_IS_TYPE(v, &accel_waitqueue_type)) {
                ok = Py_SIZE(v) == 0;
                tpl_off[tpl_n] = m->offset;
                tpl_val[tpl_n++] = NULL;
            }
            else if (accel_immutable(v)) {
                tpl_off[tpl_n] = m->offset;
                tpl_val[tpl_n++] = Py_NewRef(v);
            }
            else
                ok = 0;
        }
    return ok;
}

int channel_accel_install(PyObject *channel)
{
    PyObject *probe = NULL;
    int rc = -1;
    if (!PyType_Check(channel) || !Py_IS_TYPE(channel, &PyType_Type))
        return 0;       /* (a metaclass: its own call) */
    channel_type = (PyTypeObject *)Py_NewRef(channel);
    if ((s_new = PyUnicode_InternFromString("__new__")) == NULL
            || (s_init = PyUnicode_InternFromString("__init__")) == NULL
            || (empty_tuple = PyTuple_New(0)) == NULL)
        goto done;
    object_new = _PyType_Lookup(&PyBaseObject_Type, s_new);     /* (object's: kept) */
    py_init = Py_XNewRef(_PyType_Lookup(channel_type, s_init));
    if (object_new == NULL || py_init == NULL || !PyFunction_Check(py_init)
            || !own_new_init()
            || (channel_type->tp_flags & Py_TPFLAGS_IS_ABSTRACT)) {
        rc = 0;         /* not what this code knows: keep the Python way */
        goto done;
    }
    if ((probe = channel_type->tp_alloc(channel_type, 0)) == NULL)
        goto done;
    int usable = learn(probe);
    if (usable < 0)
        goto done;
    if (usable)
        channel_type->tp_vectorcall = channel_vectorcall;
    rc = 0;
done:
    Py_XDECREF(probe);
    return rc;
}
