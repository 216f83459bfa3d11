"""Keep this package's frames out of ``sys.settrace`` and ``sys.setprofile``.

The C greenlet's API is made of C functions, so tracers and profilers never
see frames for it: a profiler sees ``c_call``/``c_return`` around
``switch()``.  The emulation is Python code, so :func:`hide` wraps every
tracer and profiler set through ``sys`` (and so through ``threading``) in a
filter that drops the events of the package's frames, reports calls of its
API functions as ``c_call``/``c_return`` events of the calling frame, and
makes ``sys.gettrace()``/``sys.getprofile()`` return what was set.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable, Optional

_orig_settrace = sys.settrace
_orig_setprofile = sys.setprofile
_orig_gettrace = sys.gettrace
_orig_getprofile = sys.getprofile

#: Code objects of the emulation: their events are never reported.
HIDDEN: set = set()
#: Code of the emulation's API functions -> what a profiler is told it called.
API: dict = {}
#: ids of the API frames whose call a profiler was told of.  As with a C
#: call, the return is reported only if the call was (to whatever profiler
#: is active at the return): a profiler set meanwhile, in this greenlet or
#: another, sees no return of a call it did not see.
_CALLED: set = set()


class _Trace:
    """A ``sys.settrace`` function that skips the emulation's frames."""

    __slots__ = ("func",)

    def __init__(self, func: Callable) -> None:
        self.func = func

    def __call__(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code in HIDDEN:
            return None
        return self.func(frame, event, arg)


class _Profile:
    """A ``sys.setprofile`` function that shows the emulation's API as C calls."""

    __slots__ = ("func",)

    def __init__(self, func: Callable) -> None:
        self.func = func

    def __call__(self, frame: types.FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if code not in HIDDEN:
            self.func(frame, event, arg)
            return
        if event == "call" or event == "return":
            api = API.get(code)
            if api is not None:
                back = frame.f_back
                if back is not None and back.f_code not in HIDDEN:
                    if event == "call":
                        _CALLED.add(id(frame))
                        self.func(back, "c_call", api)
                    elif id(frame) in _CALLED:
                        _CALLED.discard(id(frame))
                        self.func(back, "c_return", api)


def settrace(func: Optional[Callable]) -> None:
    """``sys.settrace``, hiding the greenlet emulation's frames."""
    _orig_settrace(None if func is None else _Trace(func))


def setprofile(func: Optional[Callable]) -> None:
    """``sys.setprofile``, hiding the greenlet emulation's frames."""
    # Calls seen by the profiler being replaced: their returns are lost,
    # as in CPython, except for this very call if the new one sees it.
    me = id(sys._getframe())
    seen = me in _CALLED
    _CALLED.clear()
    _orig_setprofile(None if func is None else _Profile(func))
    if seen and func is not None:
        _CALLED.add(me)


def gettrace() -> Optional[Callable]:
    """``sys.gettrace``: the function given to settrace()."""
    func = _orig_gettrace()
    return func.func if isinstance(func, _Trace) else func


def getprofile() -> Optional[Callable]:
    """``sys.getprofile``: the function given to setprofile()."""
    func = _orig_getprofile()
    return func.func if isinstance(func, _Profile) else func


def _codes(obj: Any, seen: set) -> None:
    """Add the code objects reachable from a function, class or property."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        for part in (obj.fget, obj.fset, obj.fdel):
            if part is not None:
                _codes(part, seen)
    elif isinstance(obj, types.FunctionType):
        _add_code(obj.__code__)
    elif isinstance(obj, type):
        for value in vars(obj).values():
            _codes(value, seen)


def _add_code(code: types.CodeType) -> None:
    HIDDEN.add(code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _add_code(const)


def hide(modules: list, api: dict) -> None:
    """Hide the frames of ``modules`` from tracers and profilers from now on.

    ``api`` maps functions to the object a profiler's ``c_call`` names.
    """
    seen: set = set()
    for module in modules:
        for value in vars(module).values():
            if getattr(value, "__module__", module.__name__) == module.__name__:
                _codes(value, seen)
    for func, shown in api.items():
        API[func.__code__] = shown
    _codes(_Trace, seen)
    _codes(_Profile, seen)
    for func in (settrace, setprofile, gettrace, getprofile):
        _add_code(func.__code__)
    API[settrace.__code__] = _orig_settrace
    API[setprofile.__code__] = _orig_setprofile
    if sys.settrace is not settrace:
        current_trace = _orig_gettrace()
        current_profile = _orig_getprofile()
        sys.settrace, sys.setprofile = settrace, setprofile
        sys.gettrace, sys.getprofile = gettrace, getprofile
        # Wrap what this thread already had.
        if current_trace is not None and not isinstance(current_trace, _Trace):
            settrace(current_trace)
        if current_profile is not None and not isinstance(current_profile, _Profile):
            setprofile(current_profile)
