"""A pure-Python emulation of the greenlet 3.x API on top of ``_continuation``.

Each greenlet owns one continulet.  A suspended greenlet's continulet holds
that greenlet's own stack.  The thread's main greenlet owns an *unbound*
continulet, and while any other greenlet runs, the main greenlet's stack is
stored in the running greenlet's continulet.  With that invariant every switch
is a single three-way exchange, ``current.switch(value, to=target)``.

A greenlet's ``run`` is called directly by the continulet machinery (through
C-level callables only), so no emulation frame sits below it.  When ``run``
returns or raises, its outcome therefore comes out of the main greenlet's
pending switch; the main greenlet then forwards it to the dead greenlet's
parent.  See docs/greenlet.md.

This module holds the greenlet class and the module functions; the switch
machinery under them is in ``_switch.py``, the thread state and attributes
in ``_base.py``.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any, Callable, Optional

import _continuation
from _continuation import continulet

from . import _base
from ._base import (  # noqa: F401  (_ThreadState, _tls: for the accelerator)
    _ACTIVE, _DEAD, _NO_RUN, _UNSTARTED, GreenletExit, _Attributes, _ThreadState,
    _ThreadWatch, _check_thread, _tls, _unraisable, error)
from ._switch import (  # noqa: F401  (_Cont, _recover, _after: for the accelerator)
    _Cont, _after, _recover, _run_kills, _stripped, _switch_to)

__all__ = [
    "greenlet", "getcurrent", "settrace", "gettrace", "GreenletExit", "error",
    "install", "uninstall", "__version__",
]

#: The greenlet version whose API and semantics this module follows.
__version__ = "3.2.4"

GREENLET_USE_GC = True
GREENLET_USE_TRACING = True
GREENLET_USE_CONTEXT_VARS = True
GREENLET_USE_STANDARD_THREADING = True
CLOCKS_PER_SEC = 1000000

_getframe = sys._getframe
# (ours, on CPython: src/deferred.c)
_deferring = getattr(_continuation, "_deferring", None)
_is_finalizing = sys.is_finalizing


def _thread_state() -> _ThreadState:
    ts = _tls.ts
    if ts is None:
        ts = _ThreadState()
        main = object.__new__(greenlet)
        main._gl_c = continulet.__new__(continulet)
        main._gl_parent = None
        main._gl_run = _NO_RUN
        main._gl_ts = ts
        main._gl_top = None
        main._gl_state = _ACTIVE
        main._gl_ctx = None
        main._gl_ctx_set = False
        main._gl_main = True
        ts.main = ts.current = main
        _tls.ts = ts
        _tls.watch = _ThreadWatch(ts)
    return ts


class greenlet(_Attributes):
    """A micro-thread: ``greenlet(run=None, parent=None)``.

    ``run`` is called with the arguments of the first ``switch()``; its
    return value (or exception) goes to ``parent``, which defaults to the
    greenlet that creates this one.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> "greenlet":
        self = object.__new__(cls)
        self._gl_c = None
        self._gl_parent = getcurrent()
        self._gl_run = _NO_RUN
        self._gl_ts = None
        self._gl_top = None
        self._gl_state = _UNSTARTED
        self._gl_ctx = None
        self._gl_ctx_set = False
        self._gl_main = False
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > 2:
            raise TypeError("green() takes at most 2 arguments (%d given)"
                            % len(args))
        names = ("run", "parent")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names or key in values:
                if key in names:
                    raise TypeError("argument for green() given by name "
                                    "('%s') and position" % key)
                # CPython's own argument parser words it so (3.13 changed it).
                if sys.version_info >= (3, 13):
                    raise TypeError("green() got an unexpected keyword "
                                    "argument '%s'" % key)
                raise TypeError("'%s' is an invalid keyword argument for "
                                "green()" % key)
            values[key] = value
        parent = values.get("parent")
        if "run" in values:  # greenlet(run=None) has a run: None
            # the slot itself, as in C: a subclass's run method still wins
            _set_run(self, values["run"])
        if parent is not None:
            self.parent = parent

    # -- switching ------------------------------------------------------

    def switch(self, *args: Any, **kwargs: Any) -> Any:
        """Switch to this greenlet; ``args``/``kwargs`` become the value
        returned by the switch() it is suspended in (or ``run``'s
        arguments).  Returns what is sent back to the calling greenlet."""
        ts = _tls.ts
        if ts is None:
            ts = _thread_state()
        live = self._gl_ts is ts and self._gl_state == _ACTIVE and not kwargs
        if live:
            cur = ts.current
            if cur is self:
                return args[0] if len(args) == 1 else args
            try:
                cur._gl_top = _getframe(1)
            except ValueError:  # switch is run itself: greenlet(g.switch)
                cur._gl_top = None
            if ts.slow:
                ts.origin = cur  # for the tracer, cleared by _after()
            cur = None  # the suspended stack must not hold its greenlet
        else:
            _check_thread(ts, self)
        value, exc = _switch_to(ts, ts.current._gl_c, self, live, args, kwargs, None)
        if exc is not None:
            try:
                raise _stripped(exc)
            finally:
                exc = None  # no cycle exception -> traceback -> this frame
        return value

    def throw(self, typ: Any = GreenletExit, val: Any = None,
              tb: Optional[TracebackType] = None) -> Any:
        """Raise an exception in this greenlet at its switch point.

        An unstarted greenlet dies at once, and a dead one passes the
        exception to its parent.  Returns what is then sent back to the
        calling greenlet."""
        if tb is not None and not isinstance(tb, TracebackType):
            raise TypeError("throw() third argument must be a traceback object")
        if isinstance(typ, type) and issubclass(typ, BaseException):
            if val is None:
                exc = typ()
            elif isinstance(val, typ):
                exc = val
            elif isinstance(val, tuple):
                exc = typ(*val)
            else:
                exc = typ(val)
        elif isinstance(typ, BaseException):
            if val is not None:
                raise TypeError("instance exception may not have a separate value")
            exc = typ
        else:
            raise TypeError("exceptions must be classes, or instances, not %s"
                            % type(typ).__name__)
        if tb is not None:
            exc = exc.with_traceback(tb)
        ts = _tls.ts
        if ts is None:
            ts = _thread_state()
        _check_thread(ts, self)
        value, exc = _switch_to(ts, ts.current._gl_c, self, False, (), None, exc)
        if exc is not None:
            try:
                raise _stripped(exc)
            finally:
                exc = None  # no cycle exception -> traceback -> this frame
        return value

    # -- life and death -------------------------------------------------

    def _gl_finish(self) -> None:
        """Forget everything of a greenlet whose run() has ended."""
        self._gl_state = _DEAD
        if self._gl_c is not None:
            self._gl_ts.conts.discard(self._gl_c)
        self._gl_c = None
        self._gl_top = None
        # _gl_ctx stays: a dead greenlet's gr_context is the context it
        # ended in, as with the C greenlet

    def _gl_kill(self, ts: _ThreadState) -> bool:
        """Throw GreenletExit into this suspended greenlet, returning here.

        Returns False if the kill cannot switch now (``_continuation``
        refused the switch during a garbage collection, or the current
        greenlet has just died): it must be retried later."""
        if self._gl_state != _ACTIVE or self._gl_ts is not ts or not ts.alive:
            return True
        cur = ts.current
        if not cur._gl_main and (cur._gl_c is None or not cur._gl_c.is_pending()):
            # ts.current has just died and its outcome is on its way
            # (_after): the running stack is not its own, and a switch from
            # its finished continulet would fail.  Anything the frames that
            # were waiting for that outcome drop as they return (the run
            # callable a launch held) gets here.  The kill waits for the
            # end of _after, which runs ts.kills.
            return False
        # The kill returns here; afterwards the parent is what it was (a
        # store in the finally: no call, so no signal, before it).
        parent = self._gl_parent
        self._gl_parent = ts.current
        try:
            self.throw(GreenletExit)
        except GreenletExit:
            pass
        except BaseException as e:
            if self._gl_state == _ACTIVE and self._gl_c.is_pending():
                # The kill never reached it: a refused switch, or an
                # asynchronous exception in this module's code on the way
                # (what it raises once it has GreenletExit kills it).
                if isinstance(e, RuntimeError) and "garbage collect" in str(e):
                    return False
                raise           # the caller (__del__'s deferring, a switch) retries
            _unraisable(e, self)
        finally:
            self._gl_parent = parent
        return True

    def _gl_del(self) -> None:
        """``__del__``, called through ``_continuation._deferring``: a
        signal's exception anywhere in it is raised again in the main
        thread's code, and this starts over (docs/design.md)."""
        if self._gl_state != _ACTIVE or self._gl_main:
            return
        ts = self._gl_ts
        try:
            here = _tls.ts
        except Exception:  # interpreter shutdown
            return
        if not ts.alive:
            return
        if here is not ts or not self._gl_kill(ts):
            # Killed later, in its own thread (this resurrects it).
            ts.kills.append(self)
            ts.slow = True
        elif self._gl_state == _ACTIVE and ts.alive:
            # It caught GreenletExit and suspended itself again: like the C
            # greenlet, keep it (and its stack) alive rather than drop it.
            ts.undying.append(self)
            sys.stderr.write("GreenletExit did not kill %r\n" % (self,))

    __del__ = _deferring(_gl_del) if _deferring is not None else _gl_del

    # -- attributes -----------------------------------------------------

def getcurrent() -> greenlet:
    """The greenlet running in the calling thread.

    Raises RuntimeError once the interpreter is finalizing (from a
    ``__del__`` run by its last collections, say), as the C greenlet does:
    the greenlets' thread state may be gone by then."""
    if _is_finalizing():
        raise RuntimeError("greenlet is being finalized")
    ts = _tls.ts
    if ts is None:
        ts = _thread_state()
    elif ts.kills:
        _run_kills(ts)
    return ts.current


def settrace(callback: Optional[Callable[[str, tuple], Any]]) -> Any:
    """Set this thread's switch tracer; returns the previous one.

    The callback gets ``('switch' | 'throw', (origin, target))``."""
    ts = _thread_state()
    previous = ts.trace
    ts.trace = callback
    ts.slow = callback is not None or bool(ts.kills)
    return previous


def gettrace() -> Optional[Callable[[str, tuple], Any]]:
    """This thread's switch tracer, or None."""
    return _thread_state().trace


def _class_api() -> None:
    """What the C greenlet type carries besides its methods: the module's
    functions as static methods (so ``g.getcurrent()`` works too) and its
    exceptions."""
    greenlet.getcurrent = staticmethod(getcurrent)
    greenlet.settrace = staticmethod(settrace)
    greenlet.gettrace = staticmethod(gettrace)
    greenlet.GreenletExit = GreenletExit
    greenlet.error = error


_class_api()
_set_run = vars(_Attributes)["run"].fset


def enable_optional_cleanup(enabled: bool) -> None:
    """Accepted for compatibility; the emulation has no optional cleanup."""


def get_clocks_used_doing_optional_cleanup() -> Optional[int]:
    """Always None: the emulation has no optional cleanup."""
    return None


from ._activate import install, uninstall  # noqa: E402

#: ``greenlet._greenlet``, the C greenlet's extension module, is an
#: attribute of the package once ``greenlet`` is imported; here both
#: names are this module (see install()).
_greenlet = sys.modules[__name__]

from . import _activate as _activate_module  # noqa: E402
from . import _extras  # noqa: E402
from ._extras import UnswitchableGreenlet, _c_api  # noqa: E402,F401
from . import _hide, _switch  # noqa: E402

_hide.hide([sys.modules[__name__], _activate_module, _base, _extras, _switch],
           {greenlet.switch: greenlet.switch, greenlet.throw: greenlet.throw,
            getcurrent: getcurrent, settrace: settrace, gettrace: gettrace})


def _install_accel() -> bool:
    """Swap in the C version of switch() and getcurrent() (``_greenlet_accel``).

    The Python code above stays the reference: the C functions take the
    usual case exactly as it does and call it for everything else.
    ``STACKLESS_ACCEL=0`` in the environment keeps the pure-Python code.
    Returns whether the C versions are in use.
    """
    if sys.implementation.name != "cpython" or os.environ.get("STACKLESS_ACCEL", "1") == "0":
        return False
    try:
        import _greenlet_accel  # type: ignore[import-not-found]
    except ImportError:
        return False
    py_functions = (greenlet.switch, getcurrent)
    _greenlet_accel.install(globals())
    greenlet.getcurrent = staticmethod(globals()["getcurrent"])
    # The C functions are C calls to profilers by themselves; the Python
    # ones now run only inside them, and must not look like a second call.
    for func in py_functions:
        _hide.API.pop(func.__code__, None)
    _base._forget_thread = _greenlet_accel.forget_thread  # it caches each thread's state
    return True


_accelerated = _install_accel()


_C_API = _c_api()
if _C_API is None:
    del _C_API
