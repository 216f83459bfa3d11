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
"""

from __future__ import annotations

import contextvars
import functools
import operator
import os
import sys
import weakref
from types import FrameType, TracebackType
from typing import Any, Callable, Optional

from _continuation import continulet

from . import _base
from ._base import (  # noqa: F401  (_ThreadState, _tls: for the accelerator)
    _ACTIVE, _DEAD, _NO_RUN, _UNSTARTED, GreenletExit, _Attributes, _ThreadState,
    _ThreadWatch, _check_thread, _parent, _set_stack_context, _state, _tls,
    _unraisable, error)

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
_is_finalizing = sys.is_finalizing
_Context = contextvars.Context
_partial = functools.partial
_call = operator.call
_weakref = weakref.ref


#: the run of each launched continulet until it starts, which takes it out:
#: a finished greenlet then keeps nothing of its run (often a bound method
#: of the greenlet itself: a cycle that only the cyclic GC would free, where
#: the C greenlet frees a finished greenlet at once)
_RUNS: dict = {}


class _Cont(continulet):
    """A continulet whose start calls its run without any Python frame.

    The continulet calls ``operator.call(self)``, i.e. ``self()``, and
    ``__call__`` is a property whose getter, the C ``dict.pop`` of
    ``_RUNS``, takes the run out.  ``g`` is a weak reference to the
    greenlet owning the continulet.
    """

    __slots__ = ("g",)
    __call__ = property(_RUNS.pop)
    # our _continuation (CPython): run()'s frame has no caller, as in greenlet
    __continulet_unlinked__ = True


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


def _pack(args: tuple, kwargs: Optional[dict]) -> Any:
    """greenlet's convention for the value a switch() returns."""
    if kwargs:
        return (args, kwargs) if args else kwargs
    return args[0] if len(args) == 1 else args


def _strip(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """Drop the leading traceback entries that belong to this module."""
    while tb is not None and tb.tb_frame.f_code in _OWN_CODES:
        tb = tb.tb_next
    return tb


def _user_frame() -> Optional[FrameType]:
    """The innermost frame that is not this module's."""
    f = _getframe(1)
    while f is not None and f.f_code in _OWN_CODES:
        f = f.f_back
    return f


def _owner(ts: _ThreadState, mc: continulet) -> "greenlet":
    """The greenlet of this thread whose continulet is ``mc``."""
    main = ts.main
    return main if main._gl_c is mc else mc.g()


def _refused(ts: _ThreadState, mc: continulet, target: "greenlet",
             c: continulet) -> bool:
    """After a continulet operation raised: True if it never switched.

    ``_continuation`` refuses some switches before doing anything (during
    a garbage collection, for instance); then ``ts.current`` still names the
    target, which is alive.  Undo the bookkeeping done for the switch.
    """
    if target is not ts.current or c is None or not (target._gl_main or c.is_pending()):
        return False
    me = _owner(ts, mc)
    if me is None:
        # _continuation is unwinding the stack of a greenlet that no longer
        # exists: let the exception through, the bookkeeping is not ours.
        return True
    ts.current = me
    ts.origin = None
    ts.throwing = False
    me._gl_top = None
    return True


def _launch(g: "greenlet", run: Callable[..., Any], args: tuple,
            kwargs: Optional[dict], traced: bool) -> _Cont:
    """Make the continulet that will run ``run(*args, **kwargs)`` for ``g``.

    Nothing of ``g`` changes but its context, made if it has none: an
    asynchronous exception raised here leaves ``g`` as it was, unstarted
    and startable.  ``_leap`` commits the launch, with no call between it
    and the switch."""
    ctx = g._gl_ctx
    if ctx is None:
        ctx = g._gl_ctx = _Context()
    c = _Cont(_call)
    c.g = _weakref(g)
    if _set_stack_context is not None:
        # the run's stack starts in ctx, and the context stays the stack's
        # own (gr_context may replace it later)
        _set_stack_context(ctx, c)
        call = run
    else:
        call = _partial(ctx.run, run)
    stored = g._gl_run
    if stored is not _NO_RUN and stored is not run:
        # run came from elsewhere (a __getattribute__): the stored one is
        # dropped in the new greenlet, where its __del__ may switch
        _RUNS[c] = _partial(_guarded_start, c, [stored], call, args, kwargs)
    elif traced:
        # the tracer's 'switch' event runs in the new greenlet, before run
        _RUNS[c] = _partial(_guarded_start, c, [], call, args, kwargs)
    elif kwargs:
        _RUNS[c] = _partial(call, *args, **kwargs)
    else:
        _RUNS[c] = _partial(call, *args)
    return c


def _start_run(ts: _ThreadState, g: "greenlet") -> Any:
    """Read ``g.run`` before starting ``g``, as the C greenlet does.

    The read goes through ``getattr`` and may run any code, switches
    included.  Returns the callable, or _NO_RUN if ``g`` was started
    meanwhile (then it is switched to as a started greenlet).  Raises what the read
    raises, or ``error`` if ``g`` now belongs to another thread; ``g`` then
    stays unstarted."""
    run = g.run  # AttributeError('run') leaves g unstarted, as greenlet does
    if _state(g) != _UNSTARTED:
        return _NO_RUN
    _check_thread(ts, g)
    return run


def _leap(ts: _ThreadState, mc: continulet, origin: "greenlet",
          target: "greenlet", args: tuple, kwargs: Optional[dict],
          exc: Optional[BaseException]) -> tuple:
    """Leave the running greenlet, whose continulet is ``mc``, for ``target``.

    ``target`` may be dead (its first live ancestor is used) or unstarted (it
    starts with ``args``/``kwargs``, or dies at once if ``exc`` is given).
    Returns ``(value, exception)`` as they come out of the continulet
    operation once the greenlet is resumed; ``_after`` handles the rest.

    While suspended here, no frame of this module holds the greenlet that
    is leaving: dropping its last reference must kill it at once.
    """
    run = _NO_RUN
    while True:
        state = _state(target)
        if state == _ACTIVE:
            break
        if state == _UNSTARTED:
            try:
                run = _start_run(ts, target)
            except BaseException as e:
                if ts.current._gl_c is mc:
                    raise  # to the caller of switch() or throw()
                # Forwarding the outcome of a greenlet that has just died:
                # the parent that cannot start passes its error on.
                args, kwargs, exc = (), None, e
                target = _parent(target)
                continue
            if run is _NO_RUN:
                continue  # started by the read of its run: a plain switch
            if exc is None:
                break
            # Throwing into an unstarted greenlet: it starts and dies at once.
            run = _NO_RUN
            target._gl_state = _DEAD
            target._gl_run = _NO_RUN
            target._gl_ts = ts
            origin = target
        # A dead greenlet hands what it gets to its parent, as if it had
        # just finished with it: GreenletExit becomes a value.
        if exc is not None and isinstance(exc, GreenletExit):
            args, kwargs, exc = (exc,), None, None
        target = _parent(target)
    if target._gl_c is mc:
        ts.current = target
        ts.origin = origin if ts.slow else None
        ts.throwing = exc is not None
        if exc is not None:
            return None, exc
        return _pack(args, kwargs), None
    cur = ts.current
    if cur._gl_c is mc:  # else cur has just died and this is the main greenlet
        cur._gl_top = _user_frame()
    cur = None
    ts.origin = origin if ts.slow else None
    origin = None
    launching = run is not _NO_RUN
    c = None
    try:
        if launching:
            c = _launch(target, run, args, kwargs, ts.trace is not None)
            ts.conts.add(c)
            # The launch, committed: no call and no reference dropped from
            # here to the switch, so no signal handler, __del__ or tracer
            # can interrupt it (the stored run is `run`, or c holds it).
            target._gl_run = _NO_RUN
            target._gl_c = c
            target._gl_ts = ts
            target._gl_state = _ACTIVE
            ts.current = target
            ts.throwing = False
            value = mc.switch(None, to=c)
        elif exc is None:
            ts.current = target
            ts.throwing = False
            c = target._gl_c
            value = mc.switch(_pack(args, kwargs), to=c)
        else:
            ts.current = target
            ts.throwing = True
            c = target._gl_c
            # No frame here may hold the exception while it is away: it
            # comes back with a traceback through this frame (a cycle that
            # would keep this frame, and its callers' locals, alive).
            thrown = [exc]
            exc = None
            value = mc.throw(*_throw_args(thrown), to=c)
    except BaseException as e:
        if launching and (c is None or target._gl_c is not c):
            # An asynchronous exception before the launch was committed:
            # nothing happened, the target is still startable.
            if c is not None:
                ts.conts.discard(c)
                _RUNS.pop(c, None)
            me = ts.current
            if me._gl_c is mc:
                me._gl_top = None
            ts.origin = None
            raise
        if ts.current is target and _refused(ts, mc, target, target._gl_c):
            if launching:  # back to unstarted
                target._gl_state = _UNSTARTED
                target._gl_run = run
                ts.conts.discard(target._gl_c)
                _RUNS.pop(target._gl_c, None)
                target._gl_c = None
                target._gl_ts = None
            raise
        return None, e
    return value, None


def _guarded_start(c: _Cont, stored: list, run: Callable[..., Any], args: tuple,
                   kwargs: Optional[dict]) -> Any:
    """The start of a greenlet that runs code of its own before ``run``.

    As in the C greenlet, in the new greenlet: the run callable stored in
    the greenlet but not used (``stored``) is released, and its
    ``__del__`` may switch away; the tracer sees the 'switch' event, and
    may switch elsewhere and come back.  If the tracer raises, the greenlet
    dies of that exception without running (its parent gets it) and the
    tracer is removed.  This frame sits below ``run`` only in these two
    cases."""
    stored.clear()
    value, exc = _after(_tls.ts, c, None, None)
    if exc is not None:
        try:
            raise exc
        finally:
            exc = None
    # this line shows in stack dumps while the frame is there: gevent's
    # test__util rejects '{}' (an empty mapping) anywhere in its run info
    if kwargs:
        return run(*args, **kwargs)
    return run(*args)


def _throw_args(box: list) -> tuple:
    """``(type, value, traceback)`` of the exception in ``box``, emptying it."""
    exc = box.pop()
    return type(exc), exc, exc.__traceback__


def _after(ts: _ThreadState, mc: continulet, value: Any,
           exc: Optional[BaseException]) -> tuple:
    """Run in the greenlet owning ``mc`` once it is resumed: forward the
    outcome of greenlets that died into this stack to their parents, then
    run the tracer and the deferred kills.  Returns ``(value, exception)``
    for the resumed greenlet."""
    while ts.current._gl_c is not mc:
        # ts.current is a greenlet whose run() has just ended.
        ts.current._gl_finish()
        if exc is not None and isinstance(exc, GreenletExit):
            # a value now: without this stack's frames in its traceback
            # (they would hold whoever keeps the value, in a cycle)
            value, exc = _stripped(exc), None
        ts.throwing = exc is not None
        value, exc = _leap(ts, mc, ts.current, ts.current._gl_parent, (value,),
                           None, exc)
    ts.current._gl_top = None
    throwing = ts.throwing
    ts.throwing = False
    if ts.slow:
        trace = ts.trace
        origin = ts.origin
        ts.origin = None
        if trace is not None and origin is not None:
            try:
                trace("throw" if throwing else "switch",
                      (origin, ts.current))
            except BaseException as e:
                # A failing tracer is removed and its error raised here.
                ts.trace = None
                ts.slow = bool(ts.kills)
                return None, e
        if ts.kills:
            _run_kills(ts)
    return value, exc


def _switch_to(ts: _ThreadState, mc: continulet, target: "greenlet", live: bool,
               args: tuple, kwargs: Optional[dict],
               exc: Optional[BaseException]) -> tuple:
    """Switch (or throw ``exc``) from the running greenlet, whose continulet
    is ``mc``, to ``target``; returns ``(value, exception)`` for the caller
    once it is resumed.  ``live``: ``target`` is a started greenlet of this
    thread and the switch carries positional arguments only (the fast way).

    An asynchronous exception (a signal) that lands anywhere in here after
    the switch has begun ends up as the outcome, with the bookkeeping done:
    it never leaves a greenlet half-launched or a dead one current."""
    try:
        if live:
            ts.current = target
            value = mc.switch(args[0] if len(args) == 1 else args, to=target._gl_c)
            cur = ts.current
            if cur._gl_c is mc and not ts.slow:
                cur._gl_top = None
                return value, None
            cur = None
            return _after(ts, mc, value, None)
        value, exc = _leap(ts, mc, ts.current, target, args, kwargs, exc)
        return _after(ts, mc, value, exc)
    except BaseException as e:
        try:
            return _recover(ts, mc, target, e)
        except BaseException as e:  # a signal in the recovery
            return _recover(ts, mc, target, e)


def _recover(ts: _ThreadState, mc: continulet, target: "greenlet",
             exc: BaseException) -> tuple:
    """The outcome of a switch from the greenlet owning ``mc`` to ``target``
    that raised ``exc``: ``exc`` itself if the switch never happened (the
    bookkeeping undone), else what ``_after`` makes of it.

    Every caller calls it a second time, with the new exception, if an
    asynchronous one (a signal) interrupts it: a second call finishes what
    the first left, as the C greenlet's switch, which is C code, is never
    interrupted half-way.  The same goes for a switch's call of ``_after``:
    an exception landing in it is handed to ``_recover`` (see _switch_to,
    and _greenlet_accel, which calls these two)."""
    if _refused(ts, mc, target, target._gl_c):
        return None, exc
    return _after(ts, mc, None, exc)


def _run_kills(ts: _ThreadState) -> None:
    """Kill the greenlets of this thread whose kill had to wait: dropped in
    another thread, or found by the garbage collector (no switch can happen
    during a collection)."""
    while ts.kills:
        g = ts.kills.pop()
        ts.slow = True
        if not g._gl_kill(ts):
            ts.kills.append(g)  # still refused: try again later
            return
        del g
    ts.slow = ts.trace is not None


def _stripped(exc: BaseException) -> BaseException:
    """``exc`` without this module's frames at the head of its traceback."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code in _OWN_CODES:
        exc.__traceback__ = _strip(tb)
    return exc


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

        Returns False if ``_continuation`` refused the switch (during a
        garbage collection): the kill must be retried later."""
        if self._gl_state != _ACTIVE or self._gl_ts is not ts or not ts.alive:
            return True
        # The kill returns here; afterwards the parent is what it was.
        parent = self._gl_parent
        self._gl_parent = ts.current
        try:
            self.throw(GreenletExit)
        except GreenletExit:
            pass
        except RuntimeError as e:
            if self._gl_state == _ACTIVE and self._gl_c.is_pending() \
                    and "garbage collect" in str(e):
                self._gl_parent = parent
                return False
            _unraisable(e, self)
        except BaseException as e:
            _unraisable(e, self)
        self._gl_parent = parent
        return True

    def __del__(self) -> None:
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
from . import _hide  # noqa: E402

_hide.hide([sys.modules[__name__], _activate_module, _base, _extras],
           {greenlet.switch: greenlet.switch, greenlet.throw: greenlet.throw,
            getcurrent: getcurrent, settrace: settrace, gettrace: gettrace})
_OWN_CODES = _hide.HIDDEN


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
