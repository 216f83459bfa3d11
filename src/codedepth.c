/* Value-stack depths of a code object, by walking its bytecode.
 *
 * CPython 3.11 and 3.13 do not store the stack pointer of a frame that is
 * in a call made from C (it lives in a C local of the eval loop), so the
 * GC cannot see what such a frame holds on its value stack.  A suspended
 * continulet must report those references, or the cycles through them are
 * never collected (a `for` loop over a generator that switched, `f(*args)`).
 * This works out, once per code object, the depth of the value stack
 * before each instruction, as the compiler did: the control flow is
 * followed from the first instruction and from each exception handler
 * (whose depth its exception-table entry gives) with the interpreter's
 * own stack effects (PyCompile_OpcodeStackEffectWithJump, as `dis` does).
 * The result is cached in the code object's co_extra.
 *
 * Only public API and opcode names (tested with #ifdef) are used: which
 * instructions to trust, and how their operands lie, is pystate.c's job.
 */
#include <Python.h>
#include <opcode.h>

#include <stddef.h>
#include <string.h>

#include "codedepth.h"

#if PY_VERSION_HEX < 0x030C0000
#  define REQUEST_EXTRA_INDEX _PyEval_RequestCodeExtraIndex
#  define CODE_GET_EXTRA _PyCode_GetExtra
#  define CODE_SET_EXTRA _PyCode_SetExtra
#else
#  define REQUEST_EXTRA_INDEX PyUnstable_Eval_RequestCodeExtraIndex
#  define CODE_GET_EXTRA PyUnstable_Code_GetExtra
#  define CODE_SET_EXTRA PyUnstable_Code_SetExtra
#endif

/* One allocation: depth[n] then the n deoptimized code units (2 bytes
 * each).  depth[i] is -1 where no path of the analysis reached unit i
 * (caches, dead code) or the analysis failed. */
typedef struct {
    Py_ssize_t n;
    unsigned char *code;
    int32_t depth[1];
} table_t;

/* A code object that could not be analysed gets this marker instead, so
 * that the walk is not retried at every GC. */
static table_t no_table;

static Py_ssize_t extra_index = -1;

static void free_table(void *p)
{
    if (p != &no_table)
        PyMem_RawFree(p);
}

int cdp_init(void)
{
    if (extra_index < 0)
        extra_index = REQUEST_EXTRA_INDEX(free_table);
    if (extra_index < 0) {
        PyErr_SetString(PyExc_RuntimeError, "no co_extra slot left for _continuation");
        return -1;
    }
    return 0;
}

/* Relative jumps, as `dis` reads them: the target is counted from the
 * instruction after the jump's inline caches. */
static int jump_direction(int op)
{
    switch (op) {
#ifdef JUMP_BACKWARD
    case JUMP_BACKWARD:
#endif
#ifdef JUMP_BACKWARD_NO_INTERRUPT
    case JUMP_BACKWARD_NO_INTERRUPT:
#endif
#ifdef POP_JUMP_BACKWARD_IF_FALSE
    case POP_JUMP_BACKWARD_IF_FALSE:
    case POP_JUMP_BACKWARD_IF_TRUE:
    case POP_JUMP_BACKWARD_IF_NONE:
    case POP_JUMP_BACKWARD_IF_NOT_NONE:
#endif
        return -1;
    case FOR_ITER:
    case JUMP_FORWARD:
    case SEND:
#ifdef JUMP_IF_FALSE_OR_POP
    case JUMP_IF_FALSE_OR_POP:
    case JUMP_IF_TRUE_OR_POP:
#endif
#ifdef POP_JUMP_FORWARD_IF_FALSE
    case POP_JUMP_FORWARD_IF_FALSE:
    case POP_JUMP_FORWARD_IF_TRUE:
    case POP_JUMP_FORWARD_IF_NONE:
    case POP_JUMP_FORWARD_IF_NOT_NONE:
#endif
#ifdef POP_JUMP_IF_FALSE
    case POP_JUMP_IF_FALSE:
    case POP_JUMP_IF_TRUE:
    case POP_JUMP_IF_NONE:
    case POP_JUMP_IF_NOT_NONE:
#endif
        return 1;
    default:
        return 0;
    }
}

/* Instructions after which control never falls through to the next one. */
static int ends_block(int op)
{
    switch (op) {
    case RETURN_VALUE:
#ifdef RETURN_CONST
    case RETURN_CONST:
#endif
    case RAISE_VARARGS:
    case RERAISE:
    case JUMP_FORWARD:
    case JUMP_BACKWARD:
#ifdef JUMP_BACKWARD_NO_INTERRUPT
    case JUMP_BACKWARD_NO_INTERRUPT:
#endif
#ifdef INTERPRETER_EXIT
    case INTERPRETER_EXIT:
#endif
        return 1;
    default:
        return 0;
    }
}

static int read_varint(const unsigned char **p, const unsigned char *end, Py_ssize_t *out)
{
    Py_ssize_t v = 0;
    for (;;) {
        if (*p >= end)
            return -1;
        unsigned char b = *(*p)++;
        v = (v << 6) | (b & 63);
        if (!(b & 64))
            break;
    }
    *out = v;
    return 0;
}

typedef struct {
    Py_ssize_t unit;
    int32_t depth;
} work_t;

/* Follow the control flow from every entry; 0 on success. */
static int walk(table_t *t, PyObject *exctable, work_t *work, Py_ssize_t cap)
{
    Py_ssize_t n = t->n, nwork = 0;
    const unsigned char *code = t->code;
    work[nwork++] = (work_t){0, 0};
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(exctable);
    const unsigned char *end = p + PyBytes_GET_SIZE(exctable);
    while (p < end) {
        Py_ssize_t start, size, target, dl;
        if (read_varint(&p, end, &start) || read_varint(&p, end, &size)
                || read_varint(&p, end, &target) || read_varint(&p, end, &dl))
            return -1;
        if (nwork >= cap)
            return -1;
        /* the handler finds the exception (and lasti) on the entry depth */
        work[nwork++] = (work_t){target, (int32_t)((dl >> 1) + (dl & 1) + 1)};
    }
    while (nwork > 0) {
        work_t w = work[--nwork];
        Py_ssize_t u = w.unit;
        int32_t d = w.depth;
        int oparg = 0;
        while (u >= 0 && u < n) {
            if (t->depth[u] >= 0) {
                if (t->depth[u] != d)
                    return -1;      /* inconsistent: trust nothing */
                break;
            }
            if (d < 0)
                return -1;
            t->depth[u] = d;
            int op = code[2 * u];
            oparg = (oparg << 8) | code[2 * u + 1];
            if (op == EXTENDED_ARG) {
                u++;
                continue;
            }
            Py_ssize_t next = u + 1;
            while (next < n && code[2 * next] == CACHE)
                next++;
            int arg = op >= HAVE_ARGUMENT ? oparg : 0;
            oparg = 0;
            int dir = jump_direction(op);
            if (dir != 0) {
                int e = PyCompile_OpcodeStackEffectWithJump(op, arg, 1);
                if (e == PY_INVALID_STACK_EFFECT || nwork >= cap)
                    return -1;
                work[nwork++] = (work_t){next + dir * (Py_ssize_t)arg, d + e};
            }
            if (ends_block(op))
                break;
            int e = PyCompile_OpcodeStackEffectWithJump(op, arg, 0);
            if (e == PY_INVALID_STACK_EFFECT)
                return -1;
            /* the frame is resumed with the value sent in (3.11 counts
               RETURN_GENERATOR as pushing nothing, 3.13 as pushing it) */
            d = op == RETURN_GENERATOR ? d + 1 : d + e;
            u = next;
        }
    }
    return 0;
}

static table_t *build(PyCodeObject *co)
{
    PyObject *bytes = PyCode_GetCode(co);
    if (bytes == NULL)
        return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(bytes) / 2;
    table_t *t = PyMem_RawMalloc(offsetof(table_t, depth) + (size_t)(n ? n : 1) * sizeof(int32_t)
                                 + (size_t)n * 2);
    /* every instruction queues at most one jump; every handler one entry */
    Py_ssize_t cap = n + PyBytes_GET_SIZE(co->co_exceptiontable) + 1;
    work_t *work = PyMem_RawMalloc((size_t)cap * sizeof(work_t));
    if (t == NULL || work == NULL) {
        PyMem_RawFree(t);
        PyMem_RawFree(work);
        Py_DECREF(bytes);
        return NULL;
    }
    t->n = n;
    t->code = (unsigned char *)&t->depth[n ? n : 1];
    memcpy(t->code, PyBytes_AS_STRING(bytes), (size_t)n * 2);
    Py_DECREF(bytes);
    for (Py_ssize_t i = 0; i < n; i++)
        t->depth[i] = -1;
    int r = walk(t, co->co_exceptiontable, work, cap);
    PyMem_RawFree(work);
    if (r < 0) {
        PyMem_RawFree(t);
        return NULL;
    }
    return t;
}

int cdp_lookup(PyCodeObject *co, Py_ssize_t unit, int *opcode, int *oparg, int *depth)
{
    if (extra_index < 0 || unit < 0)
        return 0;
    /* Reading co_extra of a code object with a valid index raises
       nothing, so only the first call per code object, which builds the
       table, saves the pending exception: this may run inside a GC
       traversal, which must leave it alone and raise none. */
    void *extra = NULL;
    if (CODE_GET_EXTRA((PyObject *)co, extra_index, &extra) < 0) {
        PyErr_Clear();      /* not reached: co is a code object */
        extra = &no_table;
    }
    if (extra == NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        table_t *t = build(co);
        extra = t != NULL ? (void *)t : (void *)&no_table;
        if (CODE_SET_EXTRA((PyObject *)co, extra_index, extra) < 0) {
            free_table(extra);
            extra = &no_table;
        }
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    table_t *t = extra;
    if (t == &no_table || unit >= t->n || t->depth[unit] < 0)
        return 0;
    *opcode = t->code[2 * unit];
    int arg = t->code[2 * unit + 1], shift = 8;
    for (Py_ssize_t u = unit - 1; u >= 0 && t->code[2 * u] == EXTENDED_ARG && shift < 32; u--, shift += 8)
        arg |= t->code[2 * u + 1] << shift;
    *oparg = arg;
    *depth = t->depth[unit];
    return 1;
}

#if PY_VERSION_HEX < 0x030E0000
static PyObject *code_depths(PyObject *mod, PyObject *code)
{
    (void)mod;
    if (!PyCode_Check(code)) {
        PyErr_Format(PyExc_TypeError, "expected a code object, not %.200s", Py_TYPE(code)->tp_name);
        return NULL;
    }
    PyCodeObject *co = (PyCodeObject *)code;
    PyObject *bytes = PyCode_GetCode(co);
    if (bytes == NULL)
        return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(bytes) / 2;
    Py_DECREF(bytes);
    PyObject *d = PyDict_New();
    for (Py_ssize_t u = 0; d != NULL && u < n; u++) {
        int op, arg, depth;
        if (!cdp_lookup(co, u, &op, &arg, &depth))
            continue;
        PyObject *k = PyLong_FromSsize_t(2 * u), *v = PyLong_FromLong(depth);
        if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return d;
}
#endif

PyMethodDef cdp_methods[] = {
#if PY_VERSION_HEX < 0x030E0000
    {"_code_depths", code_depths, METH_O,
     "_code_depths(code)\n--\n\nInternal: {offset: value-stack depth before it} of the code's\n"
     "instructions, as the GC support of suspended frames works it out."},
#endif
    {NULL, NULL, 0, NULL}
};
