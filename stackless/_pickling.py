"""Pickling of tasklets and channels.

The functions here are the ``__reduce__``/``__setstate__`` methods of
:class:`stackless.tasklet` and :class:`stackless.channel` (the classes take
them in their bodies).  A tasklet that has started is captured with its
frames when they can be (stackless/_running.py), else it is restored as one
that raises ``RuntimeError``.
"""

from __future__ import annotations

import builtins
import contextvars
import copyreg
import importlib
import marshal
import pickle
import sys
import types
from typing import TYPE_CHECKING, Any

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

def tasklet_reduce(self: "tasklet") -> Any:
    """``tasklet.__reduce__``."""
    return (_restore_tasklet, (type(self),), self.__getstate__())


def frames_restorable(self: "tasklet") -> bool:
    """Whether a started tasklet's frames can be captured."""
    return (self is not self._ts.current and self._cont is not None
            and _running.blocker(self._cont, self) is None)


def tasklet_getstate(self: "tasklet") -> tuple:
    """``tasklet.__getstate__``: function, arguments, tempval, flags, dict."""
    if self._is_main:
        raise TypeError("cannot pickle the main tasklet")
    running = self._alive and self._started
    cont = self._cont if running and frames_restorable(self) else None
    flags = {
        "alive": self._alive, "scheduled": self._scheduled,
        "blocked": self._blocked, "atomic": self._atomic,
        "ignore_nesting": self._ignore_nesting,
        "block_trap": self._block_trap,
        "unrestorable": (running and cont is None) or self._unrestorable,
        "cont": _running.picklable(self, cont),
    }
    tempval = self._tempval
    d = getattr(self, "__dict__", None) or None
    return (_by_value(self._func), self._args, self._kwargs, _by_value(tempval), flags, d)


def tasklet_setstate(self: "tasklet", state: tuple) -> None:
    """``tasklet.__setstate__``."""
    func, args, kwargs, tempval, flags, d = state
    self._func = func
    self._args = args
    self._kwargs = kwargs
    self._atomic = flags["atomic"]
    self._ignore_nesting = flags["ignore_nesting"]
    self._block_trap = flags["block_trap"]
    self._unrestorable = flags["unrestorable"]
    self._context = contextvars.copy_context()
    if d:
        self.__dict__.update(d)
    if self._unrestorable and flags["alive"]:
        self._func = _unrestorable_body
        self._args, self._kwargs = (), {}
    if flags["alive"]:
        self._make_alive()      # paused: as in Stackless, never inserted
        if flags.get("cont") is not None:
            # its frames, rebuilt when it first runs (stackless/_running.py)
            self._cont = flags["cont"]
            self._started = True
    self._tempval = tempval


def _restore_tasklet(cls: type) -> "tasklet":
    return cls.__new__(cls)


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
# in the cells of such a function's closure.)

def _reduce_module(m: types.ModuleType) -> Any:
    return (importlib.import_module, (m.__name__,))


def _new_cell() -> Any:
    return types.CellType()


def _set_cell(cell: Any, state: Any) -> None:
    cell.cell_contents = state[0]


def _reduce_cell(cell: Any) -> Any:
    try:
        contents = cell.cell_contents
    except ValueError:                      # an empty cell
        return (_new_cell, ())
    # made empty first and filled afterwards, so that a cell that holds (a
    # closure over) itself pickles too
    return (_new_cell, (), (_by_value(contents),), None, None, _set_cell)


def _dict_view(mapping: dict, kind: str) -> Any:
    return getattr(mapping, kind)()


def _reduce_view(kind: str) -> Any:
    def reduce(view: Any) -> Any:
        return (_dict_view, (dict(view.mapping), kind))
    return reduce


def _reduce_code(code: types.CodeType) -> Any:
    return (marshal.loads, (marshal.dumps(code),))


def _make_function(code: types.CodeType, module: str, name: str, qualname: str,
                   defaults: Any, kwdefaults: Any, closure: Any, d: Any) -> types.FunctionType:
    g = importlib.import_module(module).__dict__ if module else {"__builtins__": builtins}
    f = types.FunctionType(code, g, name, defaults, closure)
    f.__qualname__ = qualname
    f.__kwdefaults__ = kwdefaults
    if d:
        f.__dict__.update(d)
    return f


def _found_by_name(f: types.FunctionType) -> bool:
    obj: Any = sys.modules.get(f.__module__) if f.__module__ else None
    for part in f.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is f


class _FunctionByValue:
    """Stands for a function that cannot be found by name, in a pickle."""

    __slots__ = ("f",)

    def __init__(self, f: types.FunctionType) -> None:
        self.f = f

    def __reduce__(self) -> Any:
        return _reduce_function(self.f)


def _by_value(obj: Any) -> Any:
    """``obj``, or what pickles it by value if it is a local function."""
    if type(obj) is types.FunctionType and not _found_by_name(obj):
        return _FunctionByValue(obj)
    return obj


def _reduce_function(f: types.FunctionType) -> Any:
    if _found_by_name(f):
        return f.__qualname__               # found by name: pickle by name
    module = f.__module__
    m = sys.modules.get(module) if module else None
    if m is None or m.__dict__ is not f.__globals__:
        raise pickle.PicklingError("cannot pickle %r: its globals are not a module's" % f)
    return (_make_function, (f.__code__, module, f.__name__, f.__qualname__,
                             f.__defaults__, f.__kwdefaults__, f.__closure__,
                             f.__dict__ or None))


copyreg.pickle(types.ModuleType, _reduce_module)
copyreg.pickle(types.CellType, _reduce_cell)
copyreg.pickle(types.CodeType, _reduce_code)
copyreg.pickle(types.FunctionType, _reduce_function)
for _kind in ("keys", "values", "items"):
    copyreg.pickle(type(getattr({}, _kind)()), _reduce_view(_kind))
del _kind
