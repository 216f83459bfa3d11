/* What the two files of _stackless_accel share: stackless_accel.c (channels,
 * scheduling, switching, install()) and stackless_tasklet.c (creating and
 * setting up tasklets). */
#ifndef STACKLESS_ACCEL_H
#define STACKLESS_ACCEL_H

#include <Python.h>

/* The running thread's stackless._ThreadState (new reference), or NULL
 * without an exception when the thread has none yet. */
PyObject *accel_thread_state(void);

/* Called by install(): learn the tasklet class and put the C versions of
 * __new__, __init__, setup() and __call__ on it when its fields allow it,
 * and add the C _finish() to `replaced` (the names the Python code puts in
 * place).  `ns` holds stackless's names.  0, or -1 with an exception. */
int tasklet_accel_install(PyObject *ns, PyObject *tasklet, Py_ssize_t rq_offset,
                          PyObject *replaced);

#endif
