/* Value-stack depths of code objects by bytecode analysis (codedepth.c),
 * for the frames whose stack pointer CPython 3.11 and 3.13 do not store. */
#ifndef CODEDEPTH_H
#define CODEDEPTH_H

#include <Python.h>

/* Reserve the co_extra slot; at module import.  -1 with an exception. */
int cdp_init(void);

/* The deoptimized instruction at code unit `unit` of `co` (its opcode and
 * argument, EXTENDED_ARG prefixes included) and the value-stack depth
 * before it: 1 if
 * known, else 0.  Never raises, keeps any pending exception: it may be
 * called inside a GC traversal.  Analyses the code on first use. */
int cdp_lookup(PyCodeObject *co, Py_ssize_t unit, int *opcode, int *oparg, int *depth);

/* The module's functions from here: _continuation._code_depths(code),
 * {offset: depth before it} of every instruction the analysis reached,
 * for the tests to compare with `dis` (3.11 and 3.13, where it is used). */
extern PyMethodDef cdp_methods[];

#endif
