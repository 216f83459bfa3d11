"""Stackless Python's API in pure Python, on top of ``_continuation``.

This module gives stock CPython (with the ``_continuation`` extension of this
project) and PyPy (with its built-in ``_continuation``) the ``stackless``
module of Stackless Python 3.7: tasklets, channels, the round-robin scheduler
and its helpers.  Every switch is a "hard" switch of a continulet; a paused
tasklet moves between threads with its frames instead (``_transplant``).  See ``docs/stackless.md`` for the reference and for every
difference from Stackless Python 3.7.

The code lives in one module per concept; this one re-exports the API:

* ``_common``: ``TaskletExit``, ``bomb``, messages, the package's own frames;
* ``_threads``: each thread's scheduler state, thread and interpreter end;
* ``_lifetime``: the live tasklets, and the kill of a dropped paused one;
* ``_switching``: switching, tasklet start and end, what runs next;
* ``_scheduler``: ``schedule()``, ``run()`` and the other module functions;
* ``_tasklet`` (``_frames``: its frame and recursion depth; ``_contexts``:
  its ``contextvars`` context), ``_channel``,
  ``_pickling``; ``_transplant`` (``bind_thread`` of a started tasklet,
  ``enable_softswitch``); ``_preempt`` (``run(timeout)``);
  ``_coroutine`` (the plain coroutine API).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from stackless import (_channel, _common, _contexts, _lifetime, _pickling, _preempt, _running,
                       _scheduler, _switching, _tasklet, _threads, _transplant)
from stackless._channel import channel, get_channel_callback, set_channel_callback
from stackless._common import _PYPY, TaskletExit, _own_module, bomb
from stackless._lifetime import _live_tasklets  # (for tests and debugging)
from stackless._coroutine import coroutine
from stackless._scheduler import (atomic, getcurrent, getcurrentid, getmain, getruncount,
                                  run, schedule, schedule_remove, switch_trap)
from stackless._switching import (get_schedule_callback, set_error_handler,
                                  set_schedule_callback)
from stackless._tasklet import tasklet
from stackless._transplant import enable_softswitch
from stackless._threads import get_thread_info, getthreads

__all__ = [
    "TaskletExit", "atomic", "bomb", "channel", "current", "enable_softswitch",
    "get_channel_callback", "get_schedule_callback", "get_thread_info",
    "getcurrent", "getcurrentid", "getmain", "getruncount", "getthreads",
    "main", "run", "runcount", "schedule", "schedule_remove",
    "set_channel_callback", "set_error_handler", "set_schedule_callback",
    "switch_trap", "tasklet", "threads", "coroutine", "getdebug",
    "getuncollectables", "stackless",
]

debug = False
"""Whether this is a debug build of Stackless: never."""


def getdebug() -> bool:
    """Return ``debug``."""
    return debug


def __reduce__() -> str:
    """The module pickles by name, as Stackless's does."""
    return __name__


def __reduce_ex__(protocol: int = 0) -> str:
    """The module pickles by name, as Stackless's does."""
    return __name__


def getuncollectables() -> list:
    """Stackless's tasklets that its garbage collector could not free: none
    here (a tasklet's stack is an ordinary object to the collector)."""
    return []


_own_module(globals())

# The public classes and functions are stackless's, wherever they are
# defined: their repr, pickles and __module__ say "stackless".
for _obj in (TaskletExit, atomic, bomb, channel, enable_softswitch, get_channel_callback,
             get_schedule_callback, get_thread_info, getcurrent, getcurrentid, getmain,
             getruncount, getthreads, run, schedule, schedule_remove, set_channel_callback,
             set_error_handler, set_schedule_callback, switch_trap, tasklet, getdebug,
             getuncollectables):
    if _obj.__module__.startswith("stackless._"):
        _obj.__module__ = __name__
del _obj

stackless = sys.modules[__name__]


class _StacklessModule(types.ModuleType):
    """The type of the ``stackless`` module: ``current``, ``main``,
    ``runcount``, ``threads`` and ``uncollectables`` are read-only
    properties of the module, as in Stackless 3.7.  (Not a module
    ``__getattr__``: CPython specializes no attribute lookup on a module
    that has one, and ``stackless.schedule()`` would pay a dictionary
    lookup at every call; on 3.14 a module of a subclass like this one is
    specialized.)"""

    @property
    def current(self) -> tasklet:
        """The running tasklet of this thread."""
        return getcurrent()

    @property
    def main(self) -> tasklet:
        """The main tasklet of this thread."""
        return getmain()

    @property
    def runcount(self) -> int:
        """The number of tasklets in this thread's run queue."""
        return getruncount()

    @property
    def threads(self) -> list:
        """The ids of the threads that have a main tasklet."""
        return getthreads()

    @property
    def uncollectables(self) -> list:
        """``getuncollectables()``."""
        return getuncollectables()


stackless.__class__ = _StacklessModule


def _install_accel() -> bool:
    """Swap in the C versions of the hot paths (``_stackless_accel``).

    The Python code stays the reference, as ``heapq`` is for ``_heapq``: the
    C functions handle the usual case exactly as it does and call it for
    everything else.  ``STACKLESS_ACCEL=0`` in the environment keeps the
    pure-Python code.  Returns whether the C versions are in use.
    """
    _stackless_accel = _common._accel_module()
    if _stackless_accel is None:
        return False
    names = {}
    for part in (_common, _lifetime, _threads, _switching, _scheduler, _tasklet, _channel):
        names.update(vars(part))
    # new tasklets start in the C _bootstrap; the Python one stays for
    # the tasklets that pickling restores (stackless/_running.py)
    names["_bootstrap"] = _stackless_accel._bootstrap
    names["_python_bootstrap"] = _switching._bootstrap
    # their stacks pickle by the same policy (docs/design.md, "the
    # bottom-frame contract")
    _running.install(_stackless_accel._bootstrap, _threads._ThreadState, _threads._ts)
    replaced = _stackless_accel.install(names, vars(_switching), vars(_channel))
    replaced["run"] = _stackless_accel.run
    replaced["_callback"] = _stackless_accel._callback
    _hide_python_api(_stackless_accel.hide, replaced)
    # Every module that uses one of the replaced names gets the C version;
    # _preempt keeps calling the Python _switch (it interrupts from a trace
    # function and re-arms the frames above its caller).
    for module in (sys.modules[__name__], _lifetime, _threads, _switching, _scheduler, _tasklet,
                   _contexts, _channel, _transplant):
        d = vars(module)
        for name, value in replaced.items():
            if name in d:
                d[name] = value
    _threads._forget_thread = _stackless_accel.forget_thread  # it caches each thread's scheduler
    _lifetime._in_schedule_callback = _stackless_accel.in_schedule_callback
    return True


def _hide_python_api(hide: Any, replaced: dict) -> None:
    """Keep the rest of the API's Python code out of trace and profile
    functions, as Stackless's C code is (src/stackless_hide.c): the public
    functions and the methods and properties of the classes become
    builtins that run the Python code with tracing suspended."""
    def hidden(func: types.FunctionType, method: bool = False) -> Any:
        h = hide(func, method)
        # pickle saves a builtin as getattr(its __self__, its name), and
        # its __self__ is this function: let it find itself by name again
        func.__qualname__ += ".__self__"
        setattr(func, func.__name__, h.__func__ if method else h)
        return h

    for name, value in list(globals().items()):
        if (isinstance(value, types.FunctionType) and not name.startswith("_")
                and name not in replaced and value.__module__.startswith("stackless")):
            replaced[name] = hidden(value)
    for cls in (tasklet, channel, atomic, bomb, _StacklessModule):
        for name, value in list(vars(cls).items()):
            if name.startswith("_") and not name.startswith("__"):
                continue        # reached only from the code hidden already
            if isinstance(value, types.FunctionType):
                setattr(cls, name, hidden(value, True))
            elif isinstance(value, property):
                acc = [None if f is None else hide(f) for f in (value.fget, value.fset, value.fdel)]
                setattr(cls, name, property(*acc, value.__doc__))


_accelerated = _install_accel()
