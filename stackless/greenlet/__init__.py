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
import gc
import operator
import os
import _thread
import sys
import weakref
from types import FrameType, TracebackType
from typing import Any, Callable, Optional

import _continuation
from _continuation import continulet

# Our _continuation (CPython) can read and replace the context of the
# running stack and of a suspended one: gr_context then works on started
# greenlets as with the C greenlet.  PyPy's cannot.
_stack_context = getattr(_continuation, "_stack_context", None)
_set_stack_context = getattr(_continuation, "_set_stack_context", None)

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


class error(Exception):
    """Raised on an invalid switch, like ``greenlet.error``."""


class GreenletExit(BaseException):
    """Thrown into a greenlet to kill it; returned to the parent as a value."""


class _Cont(continulet):
    """A continulet whose start calls ``self.r()`` without any Python frame.

    The continulet calls ``operator.call(self)``, i.e. ``self()``, and
    ``__call__`` is a property whose getter is a C-level ``attrgetter``.
    ``g`` is a weak reference to the greenlet owning the continulet.
    """

    __slots__ = ("r", "g")
    __call__ = property(operator.attrgetter("r"))
    # our _continuation (CPython): run()'s frame has no caller, as in greenlet
    __continulet_unlinked__ = True


class _ThreadState:
    """Per-thread bookkeeping: current and main greenlet, tracer, kills."""

    __slots__ = ("current", "main", "origin", "trace", "kills", "slow",
                 "throwing", "alive", "undying", "conts", "swept")

    def __init__(self) -> None:
        self.current: Any = None
        self.main: Any = None
        # The greenlet that switched to ``current`` (for the trace callback).
        self.origin: Any = None
        self.trace: Optional[Callable[[str, tuple], Any]] = None
        # Greenlets of this thread dropped in another thread, to be killed.
        self.kills: list = []
        # Dropped greenlets that survived GreenletExit: kept, never freed.
        self.undying: list = []
        # The continulets of this thread's live greenlets.  Holding them here
        # keeps them out of the garbage collector's unreachable sets: a
        # greenlet found in a reference cycle is then killed by its own
        # __del__, never by the continulet's finalizer, which cannot see
        # that the greenlet resurrects itself to die properly.
        self.conts: set = set()
        # True when a switch must take the slow path (tracer or kills).
        self.slow = False
        # True while the transfer into ``current`` is a throw.
        self.throwing = False
        self.alive = True
        # Once the thread has exited: True after the next garbage
        # collection, when its suspended greenlets no longer show frames.
        self.swept = False


class _Local(_thread._local):
    """Thread-local storage (the C one: gevent may patch ``threading.local``)."""

    ts: Optional[_ThreadState] = None


class _ThreadWatch:
    """Lives in the thread-local storage: marks the main greenlet dead at exit."""

    __slots__ = ("ts", "ident")

    def __init__(self, ts: _ThreadState) -> None:
        self.ts = ts
        self.ident = _thread.get_ident()

    def __del__(self) -> None:
        ts = self.ts
        ts.alive = False
        main = ts.main
        if main is not None:
            main._gl_state = _DEAD
            main._gl_c = None
            main._gl_top = None
        ts.current = None
        _exited.append(ts)
        ts.kills = []
        ts.undying = []
        ts.conts = set()
        get_ident = getattr(_thread, "get_ident", None)     # None at shutdown
        if get_ident is not None and get_ident() == self.ident:
            _forget_thread()


_tls = _Local()
# Thread states of threads that have exited since the last collection.
_exited: list = []


def _sweep_exited(phase: str, info: dict) -> None:
    """A gc callback: like the C greenlet's deferred clean-up of an exited
    thread, the frames of greenlets left suspended in it are reachable
    (gr_frame) until the next collection."""
    while _exited:
        _exited.pop().swept = True


if hasattr(gc, "callbacks"):
    gc.callbacks.append(_sweep_exited)


def _forget_thread() -> None:
    """The running thread's state is going away (see _install_accel)."""

_UNSTARTED, _ACTIVE, _DEAD = 0, 1, 2
#: ``_gl_run`` of a greenlet without a ``run`` of its own (None is a value).
_NO_RUN = object()


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


def _thread_of(g: "greenlet") -> Optional[_ThreadState]:
    """The thread state a greenlet belongs to (through its parents if unstarted)."""
    while g is not None:
        ts = _ts_of(g)
        if ts is not None:
            return ts
        g = _parent(g)
    return None


def _check_thread(ts: _ThreadState, target: "greenlet") -> None:
    tts = _thread_of(target)
    if tts is not ts:
        if tts is not None and not tts.alive:
            raise error("cannot switch to a different thread (which happens "
                        "to have exited)")
        expected = tts.main if tts is not None else None
        raise error("Cannot switch to a different thread\n\tCurrent:  %r\n\t"
                    "Expected: %r" % (ts.current, expected))


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
    if target is not ts.current or not (target._gl_main or c.is_pending()):
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


def _launch(ts: _ThreadState, g: "greenlet", run: Callable[..., Any],
            args: tuple, kwargs: Optional[dict]) -> _Cont:
    """Make the continulet that will run ``run(*args, **kwargs)`` for ``g``."""
    ctx = g._gl_ctx
    if ctx is None:
        ctx = g._gl_ctx = _Context()
    c = _Cont(_call)
    c.g = _weakref(g)
    ts.conts.add(c)
    if _set_stack_context is not None:
        # the run's stack starts in ctx, and the context stays the stack's
        # own (gr_context may replace it later)
        _set_stack_context(ctx, c)
        call = run
    else:
        call = _partial(ctx.run, run)
    if ts.trace is not None:
        # the tracer's 'switch' event runs in the new greenlet, before run
        c.r = _partial(_traced_start, c, call, args, kwargs)
    elif kwargs:
        c.r = _partial(call, *args, **kwargs)
    else:
        c.r = _partial(call, *args)
    g._gl_c = c
    g._gl_ts = ts
    g._gl_run = _NO_RUN
    g._gl_state = _ACTIVE
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
    try:
        if launching:
            c = _launch(ts, target, run, args, kwargs)
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
            value = mc.throw(type(exc), exc, exc.__traceback__, to=c)
    except BaseException as e:
        if ts.current is target and _refused(ts, mc, target, target._gl_c):
            if launching:  # back to unstarted
                target._gl_state = _UNSTARTED
                target._gl_run = run
                ts.conts.discard(target._gl_c)
                target._gl_c = None
                target._gl_ts = None
            raise
        return None, e
    return value, None


def _traced_start(c: _Cont, run: Callable[..., Any], args: tuple,
                  kwargs: Optional[dict]) -> Any:
    """The start of a greenlet launched while a tracer is set.

    As in the C greenlet, the tracer sees the 'switch' event in the new
    greenlet, before ``run``: it may switch elsewhere and come back.  If
    it raises, the greenlet dies of that exception without running (its
    parent gets it) and the tracer is removed.  This frame sits below
    ``run`` only in this case."""
    value, exc = _after(_tls.ts, c, None, None)
    if exc is not None:
        try:
            raise exc
        finally:
            exc = None
    return run(*args, **(kwargs or {}))


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
            value, exc = exc, None
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


def _unraisable(exc: BaseException, obj: Any) -> None:
    """Report an exception that nobody can catch through
    ``sys.unraisablehook``, as the C greenlet does for a failed kill."""
    hook = getattr(sys, "unraisablehook", None)
    if hook is None:  # interpreter shutdown
        return
    try:
        hook(_UnraisableArgs((type(exc), exc, exc.__traceback__, None, obj)))
    except BaseException:
        pass  # a failing hook must not stop the kill


def _unraisable_args_type() -> type:
    """``sys.UnraisableHookArgs``, which CPython does not export by name."""
    got: list = []
    hook = sys.unraisablehook
    sys.unraisablehook = got.append

    class Probe:
        def __del__(self) -> None:
            raise RuntimeError

    try:
        Probe()
    finally:
        sys.unraisablehook = hook
    if got:
        return type(got[0])
    import collections  # PyPy: a record with the same fields
    return collections.namedtuple("UnraisableHookArgs", "exc_type exc_value "
                                  "exc_traceback err_msg object")


_UnraisableArgs = _unraisable_args_type()


def _stripped(exc: BaseException) -> BaseException:
    """``exc`` without this module's frames at the head of its traceback."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code in _OWN_CODES:
        exc.__traceback__ = _strip(tb)
    return exc


class _Instance:
    """Where a greenlet's ``__dict__`` and weak references live: the
    greenlet class replaces the ``__dict__`` descriptor with one that, as in
    C, accepts only dicts and cannot be deleted."""

    __slots__ = ("__dict__", "__weakref__")


_dict_slot = vars(_Instance)["__dict__"]


class greenlet(_Instance):
    """A micro-thread: ``greenlet(run=None, parent=None)``.

    ``run`` is called with the arguments of the first ``switch()``; its
    return value (or exception) goes to ``parent``, which defaults to the
    greenlet that creates this one.
    """

    # Private names are prefixed: subclasses (gevent's Greenlet has ``_run``)
    # must not collide with them.
    __slots__ = ("_gl_c", "_gl_parent", "_gl_run", "_gl_ts", "_gl_top",
                 "_gl_state", "_gl_ctx", "_gl_ctx_set", "_gl_main")

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
        if self._gl_ts is ts and self._gl_state == _ACTIVE and not kwargs:
            cur = ts.current
            if cur is self:
                return args[0] if len(args) == 1 else args
            mc = cur._gl_c
            cur._gl_top = _getframe(1)
            if ts.slow:
                ts.origin = cur  # for the tracer, cleared by _after()
            cur = None  # the suspended stack must not hold its greenlet
            ts.current = self
            try:
                value = mc.switch(args[0] if len(args) == 1 else args,
                                  to=self._gl_c)
            except BaseException as e:
                if _refused(ts, mc, self, self._gl_c):
                    raise
                value, exc = _after(ts, mc, None, e)
            else:
                cur = ts.current
                if cur._gl_c is mc and not ts.slow:
                    cur._gl_top = None
                    return value
                cur = None
                value, exc = _after(ts, mc, value, None)
        else:
            _check_thread(ts, self)
            mc = ts.current._gl_c
            value, exc = _leap(ts, mc, ts.current, self, args, kwargs, None)
            value, exc = _after(ts, mc, value, exc)
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
        mc = ts.current._gl_c
        value, exc = _leap(ts, mc, ts.current, self, (), None, exc)
        value, exc = _after(ts, mc, value, exc)
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

    @property
    def run(self) -> Callable[..., Any]:
        """The callable run by the first switch(); gone once started."""
        run = self._gl_run
        if run is _NO_RUN or self._gl_state != _UNSTARTED:
            raise AttributeError("run")
        return run

    @run.setter
    def run(self, value: Callable[..., Any]) -> None:
        if self._gl_state != _UNSTARTED:
            raise AttributeError("run cannot be set after the start of the greenlet")
        self._gl_run = value

    @run.deleter
    def run(self) -> None:
        if self._gl_state != _UNSTARTED:
            raise AttributeError("run cannot be set after the start of the greenlet")
        self._gl_run = _NO_RUN

    @property
    def parent(self) -> Optional["greenlet"]:
        """The greenlet that receives this one's result; None for a main greenlet."""
        return self._gl_parent

    @parent.setter
    def parent(self, value: "greenlet") -> None:
        if self._gl_main:
            raise AttributeError("cannot set the parent of a main greenlet")
        if not isinstance(value, greenlet):
            raise TypeError("GreenletChecker: Expected any type of greenlet, "
                            "not %s" % type(value).__name__)
        p = value
        while p is not None:
            if p is self:
                raise ValueError("cyclic parent chain")
            p = p._gl_parent
        if self._gl_ts is not None and _thread_of(value) is not self._gl_ts:
            raise ValueError("parent cannot be on a different thread")
        self._gl_parent = value

    @parent.deleter
    def parent(self) -> None:
        raise AttributeError("can't delete attribute")

    @property
    def dead(self) -> bool:
        """True once run() has finished, or once the greenlet's thread has."""
        state = self._gl_state
        return state == _DEAD or (state == _ACTIVE and not self._gl_ts.alive)

    def __bool__(self) -> bool:
        return self._gl_state == _ACTIVE and self._gl_ts.alive

    @property
    def gr_frame(self) -> Optional[FrameType]:
        """The innermost frame of a suspended greenlet, else None."""
        ts = self._gl_ts
        if self._gl_state != _ACTIVE or (ts.current is self and ts.alive) or ts.swept:
            return None
        # the frames of a greenlet left suspended in a thread that has
        # exited stay reachable, as with the C greenlet
        return self._gl_top

    @property
    def gr_context(self) -> Optional[contextvars.Context]:
        """The contextvars.Context this greenlet runs in (None if none yet)."""
        self._gl_check_context_thread("get")
        holder = self._gl_stack_holder()
        ctx = self._gl_ctx if holder is False else _stack_context(holder)
        if ctx is not None and ctx is self._gl_ctx and not self._gl_ctx_set and len(ctx) == 0:
            return None  # greenlet creates a context only on first use
        return ctx

    @gr_context.deleter
    def gr_context(self) -> None:
        raise AttributeError("can't delete context attribute")

    @gr_context.setter
    def gr_context(self, value: Optional[contextvars.Context]) -> None:
        if value is not None and not isinstance(value, contextvars.Context):
            raise TypeError("greenlet context must be a contextvars.Context or None")
        self._gl_check_context_thread("set")
        holder = self._gl_stack_holder()
        if holder is not False:
            _set_stack_context(value, holder)
        self._gl_ctx = value
        self._gl_ctx_set = value is not None

    def _gl_stack_holder(self) -> Any:
        """Where this started greenlet's context lives: None for the running
        stack, else the continulet holding its stack; False when it has no
        stack (unstarted, dead) or the context cannot be reached (PyPy)."""
        ts = self._gl_ts
        if (_stack_context is None or self._gl_state != _ACTIVE or ts is None
                or not ts.alive):
            return False
        if ts.current is self:
            return None
        # while another greenlet runs, the main greenlet's stack is kept in
        # the running greenlet's continulet (see "How it works")
        return ts.current._gl_c if self._gl_main else self._gl_c

    def _gl_check_context_thread(self, verb: str) -> None:
        ts = self._gl_ts
        if ts is not None and ts.current is self and ts is not _tls.ts:
            raise ValueError("cannot %s context of a greenlet that is running "
                             "in a different thread" % verb)

    def __repr__(self) -> str:
        cls = type(self)
        name = "greenlet.greenlet" if cls is greenlet else cls.__name__
        ts = self._gl_ts
        if ts is None or not ts.alive:
            otid = "0x(nil)"
        else:
            otid = "0x%x" % id(ts)
        if self._gl_state == _ACTIVE and ts.alive:
            here = ts.current is self and ts is _tls.ts
            where = " current" if here else " suspended"
            return "<%s object at 0x%x (otid=%s)%s active started%s>" % (
                name, id(self), otid, where, " main" if self._gl_main else "")
        if self._gl_state == _UNSTARTED:
            return "<%s object at 0x%x (otid=%s) pending>" % (name, id(self), otid)
        exited = "(thread exited) " if ts is not None and not ts.alive else ""
        return "<%s object at 0x%x (otid=%s) %sdead>" % (name, id(self), otid, exited)

    @property
    def __dict__(self) -> dict:  # type: ignore[override]
        return _dict_slot.__get__(self)

    @__dict__.setter
    def __dict__(self, value: dict) -> None:
        if not isinstance(value, dict):
            raise TypeError("__dict__ must be a dictionary")
        _dict_slot.__set__(self, value)

    @__dict__.deleter
    def __dict__(self) -> None:
        raise TypeError("__dict__ may not be deleted")

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle '%s' object" % type(self).__name__)


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
# The slots of greenlets as seen by the type itself: a subclass's
# __getattribute__ must not change what the emulation reads.
_state = vars(greenlet)["_gl_state"].__get__
_parent = vars(greenlet)["_gl_parent"].__get__
_ts_of = vars(greenlet)["_gl_ts"].__get__
_set_run = vars(greenlet)["run"].fset


class UnswitchableGreenlet(greenlet):
    """The C greenlet's test hook (``greenlet._greenlet``, which is this
    module under the emulation): a greenlet whose stack switch can be made
    to fail.  ``force_switch_error`` fails it before anything changed (a
    SystemError; the greenlet stays usable), ``force_slp_switch_error``
    in the middle, which no interpreter survives: the process aborts with
    a fatal error, as with the C greenlet."""

    force_switch_error = False
    force_slp_switch_error = False

    def switch(self, *args: Any, **kwargs: Any) -> Any:
        if self.force_slp_switch_error:
            os.write(2, b"Fatal Python error: greenlet: failed to switch stacks\n")
            os.abort()
        if self.force_switch_error:
            if _state(self) == _UNSTARTED:
                raise SystemError("Failed to switch stacks into a greenlet "
                                  "for the first time.")
            raise SystemError("Failed to switch stacks into a running greenlet.")
        return greenlet.switch(self, *args, **kwargs)


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
from . import _hide  # noqa: E402

_hide.hide([sys.modules[__name__], _activate_module],
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
    global _forget_thread
    _forget_thread = _greenlet_accel.forget_thread  # it caches each thread's state
    return True


_accelerated = _install_accel()
