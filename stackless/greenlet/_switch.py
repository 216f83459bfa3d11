"""How a greenlet switches: the continulet operations behind ``switch()``
and ``throw()``, a greenlet's launch, and what runs once it is resumed.

The greenlet class and the module functions (``stackless/greenlet/__init__.py``)
call these; docs/greenlet.md describes the design.
"""

from __future__ import annotations

import contextvars
import functools
import operator
import sys
import weakref
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional

from _continuation import continulet

from ._base import (
    _ACTIVE, _DEAD, _NO_RUN, _UNSTARTED, GreenletExit, _ThreadState, _check_thread,
    _parent, _set_stack_context, _state, _tls)
from ._hide import HIDDEN as _OWN_CODES

if TYPE_CHECKING:
    from . import greenlet

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
    kills = ts.kills
    while kills:
        g = kills[-1]
        ts.slow = True
        try:
            # off the list while it is killed (the kill's own switches run
            # this again), back on it if an asynchronous exception comes out
            # of the pop's check or of a kill that never reached it
            kills.pop()
            if not g._gl_kill(ts):
                kills.append(g)     # still refused: try again later
                return
        except BaseException:
            kills.append(g)
            raise
        del g
    ts.slow = ts.trace is not None


def _stripped(exc: BaseException) -> BaseException:
    """``exc`` without this module's frames at the head of its traceback."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code in _OWN_CODES:
        exc.__traceback__ = _strip(tb)
    return exc
