/* greenlet's public C API (the `greenlet._C_API` capsule) for
 * stackless.greenlet; see greenlet_capi.c. */
#ifndef GREENLET_CAPI_H
#define GREENLET_CAPI_H

#include <Python.h>

/* The capsule for the module whose globals are given (new reference). */
PyObject *greenlet_capi_capsule(PyObject *globals);

#endif
