"""Pickling of tasklets and channels.

The functions here are the ``__reduce__``/``__setstate__`` methods of
:class:`stackless.tasklet` and :class:`stackless.channel` (the classes take
them in their bodies).  A tasklet that has started is captured with its
frames when they can be (stackless/_running.py), else it is restored as one
that raises ``RuntimeError``.
"""

from __future__ import annotations

import contextvars
import copyreg
import importlib
import marshal
import sys
import types
from typing import TYPE_CHECKING, Any

from _continuation import continulet

from stackless import _running
from stackless._common import _NOT_RESTORABLE, _own_module

if TYPE_CHECKING:
    from stackless._channel import channel
    from stackless._tasklet import tasklet

_own_module(globals())


def reduce_ex(self: Any, proto: int) -> Any:
    """``__reduce_ex__``: every protocol pickles as ``__reduce__`` does."""
    return self.__reduce__()


# -- tasklets -----------------------------------------------------------------

# Stackless's state layout: (flags, tempval, nesting_level, frames,
# exc_type, exc_value, exc_traceback, None).  The flags are the bits of
# Stackless's tasklet flags that mean something here.
_BLOCKED, _ATOMIC, _IGNORE_NESTING, _BLOCK_TRAP = 0x3, 0x4, 0x8, 0x20
_CURRENT = "You cannot __reduce__ the tasklet which is current."


class Call:
    """The frames entry of an alive tasklet that has not started: the call
    it will make (Stackless keeps a frame for it)."""

    __slots__ = ("func", "args", "kwargs")

    def __init__(self, func: Any, args: tuple, kwargs: Any) -> None:
        self.func, self.args, self.kwargs = func, args, kwargs

    def __reduce__(self) -> tuple:
        return Call, (_by_value(self.func), self.args, self.kwargs or None)


class NotRestorable:
    """The frames entry of a tasklet that was running and whose frames could
    not be captured: its copy raises ``RuntimeError`` when it runs."""

    def __reduce__(self) -> str:
        return "NOT_RESTORABLE"


NOT_RESTORABLE = NotRestorable()


def tasklet_reduce(self: "tasklet") -> Any:
    """``tasklet.__reduce__``: ``(type, (), state)`` with Stackless's
    8-item state.  The frames item holds, for an alive tasklet, a
    :class:`Call` if it has not started, else the continulet that holds
    its stack (pickled frame by frame, stackless/_running.py) or
    :data:`NOT_RESTORABLE`."""
    if self.is_current:
        raise RuntimeError(_CURRENT)
    flags = ((self._blocked & _BLOCKED) | (_ATOMIC if self._atomic else 0)
             | (_IGNORE_NESTING if self._ignore_nesting else 0)
             | (_BLOCK_TRAP if self._block_trap else 0))
    frames: list = []
    exc: Any = None
    if self._is_main or (self._alive and self._unrestorable):
        frames = [NOT_RESTORABLE]
    elif self._alive and not self._started:
        frames = [Call(self._func, self._args, self._kwargs)]
    elif self._alive:
        if frames_restorable(self):
            frames = [self._cont]
            exc = _running.handled_exception(self._cont)
        else:
            frames = [NOT_RESTORABLE]
    state = (flags, _by_value(self._tempval), self.nesting_level, frames,
             type(exc) if exc is not None else None, exc, None, None)
    return (type(self), (), state)


def frames_restorable(self: "tasklet") -> bool:
    """Whether a started tasklet's frames can be captured."""
    return (self is not self._ts.current and self._cont is not None
            and _running.blocker(self._cont, self) is None)


def running_restorable(t: "tasklet") -> bool:
    """``restorable`` of the running tasklet: whether its frames, from the
    bottom of its stack up to the code that asks, could be captured (the
    rule of a suspended tasklet, docs/stackless.md).  It is never pickled
    while it runs: that raises ``RuntimeError``, as in Stackless."""
    cp = _running._pickle_support()
    if cp is None:
        return False
    f = sys._getframe(1)
    while f is not None and _running._internal(f.f_code):
        f = f.f_back
    if f is None or cp.running_blocker(f) is not None:
        return False
    import _continuation
    return t._is_main or _running.entered_through_c(_continuation._frames(f)[0], t._func) is None


def _check_state(state: Any) -> None:
    if not isinstance(state, tuple):
        raise TypeError("tasklet state must be a tuple, not %s" % type(state).__name__)
    if len(state) != 8:
        raise TypeError("tasklet() takes exactly 8 arguments (%d given)" % len(state))
    if not isinstance(state[0], int) or not isinstance(state[2], int):
        bad = state[0] if not isinstance(state[0], int) else state[2]
        raise TypeError("an integer is required (got type %s)" % type(bad).__name__)
    if not isinstance(state[3], list):
        raise TypeError("tasklet() argument 4 must be list, not %s" % type(state[3]).__name__)


def tasklet_setstate(self: "tasklet", state: tuple) -> "tasklet":
    """``tasklet.__setstate__``: the tasklet comes back paused (as in
    Stackless, never inserted; a channel's state blocks it again).  The
    exception items are informational: a captured stack carries the
    exception it was handling.  An alive tasklet is left as it is."""
    _check_state(state)
    if self._alive:
        return self
    flags, tempval, _nesting, frames = state[:4]
    self._atomic = bool(flags & _ATOMIC)
    self._ignore_nesting = bool(flags & _IGNORE_NESTING)
    self._block_trap = bool(flags & _BLOCK_TRAP)
    self._context = contextvars.copy_context()
    self._unrestorable = False
    entry = frames[0] if frames else None
    if entry is None:
        # not alive; bound if tempval holds its function
        self._func = tempval if callable(tempval) else None
        self._args = self._kwargs = None
    elif isinstance(entry, Call):
        self._func, self._args, self._kwargs = entry.func, tuple(entry.args), dict(entry.kwargs or {})
        self._make_alive()
    elif isinstance(entry, continulet):
        self._make_alive()
        # its frames, rebuilt when it first runs (stackless/_running.py)
        self._cont = entry
        self._started = True
    else:
        self._func, self._args, self._kwargs = _unrestorable_body, (), {}
        self._unrestorable = True
        self._make_alive()
    self._tempval = tempval
    return self


def _unrestorable_body() -> None:
    raise RuntimeError(_NOT_RESTORABLE)


# -- channels -----------------------------------------------------------------

def channel_reduce(self: "channel") -> Any:
    """``channel.__reduce__``: its settings, waiters and dict."""
    d = getattr(self, "__dict__", None) or None
    return (_restore_channel, (type(self),),
            (self._balance, self.preference, self.schedule_all,
             self._closing, list(self._queue), d))


def channel_setstate(self: "channel", state: tuple) -> None:
    """``channel.__setstate__``: the waiters are blocked on it again."""
    from stackless._channel import channel  # it imports this module
    balance, pref, sched_all, closing, waiters, d = state
    channel.__init__(self)
    self.preference = pref
    self.schedule_all = sched_all
    self._closing = closing
    if d:
        self.__dict__.update(d)
    direction = 1 if balance > 0 else -1
    for t in waiters:
        if t._scheduled:
            t.remove()
        t._blocked = direction
        t._channel = self
        self._queue.append(t)
        self._balance += direction


def _restore_channel(cls: type) -> "channel":
    return cls.__new__(cls)


# -- the reducers Stackless registers -------------------------------------------
#
# Stackless makes more of the language picklable so that tasklets and their
# functions pickle: modules (by name), cells, dict views, code objects and
# functions that cannot be found by name (local functions, lambdas).
# Functions that can be found by name still pickle by name.  (The pickle
# module saves every function by name before it asks copyreg, so a function
# pickles by value only where stackless puts it: as a tasklet's function and
# in the cells of such a function's closure.)  On CPython, cells and
# functions by value are _continuation_pickle's, which frames use too; on
# PyPy, stackless/_pickling_pypy.py has them.

def _reduce_module(m: types.ModuleType) -> Any:
    return (importlib.import_module, (m.__name__,))


def _dict_view(mapping: dict, kind: str) -> Any:
    return getattr(mapping, kind)()


def _reduce_view(kind: str) -> Any:
    def reduce(view: Any) -> Any:
        return (_dict_view, (dict(view.mapping), kind))
    return reduce


def _reduce_code(code: types.CodeType) -> Any:
    return (marshal.loads, (marshal.dumps(code),))


_support: Any = _running._pickle_support()
if _support is None:
    from stackless import _pickling_pypy as _support
#: ``obj``, or what pickles it by value if it is a local function
_by_value = _support.by_value

copyreg.pickle(types.ModuleType, _reduce_module)
copyreg.pickle(types.CodeType, _reduce_code)
copyreg.pickle(types.FunctionType, _support.reduce_function)
for _kind in ("keys", "values", "items"):
    copyreg.pickle(type(getattr({}, _kind)()), _reduce_view(_kind))
del _kind
