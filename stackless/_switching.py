"""Switching: how control passes from one tasklet to another, how a tasklet
starts (``_bootstrap``) and ends (``_finish``), and which tasklet runs next
when the run queue empties.  The schedule callback and the error handler are
called from here."""

from __future__ import annotations

import atexit
import sys
import threading
import _thread
from typing import TYPE_CHECKING, Any, Callable, Optional

from _continuation import continulet, permute

from stackless._common import (TaskletExit, _DEADLOCK, _MAIN_RECEIVING, _MAIN_SENDING, _NOARG,
                               _PYPY, _callback, _getframe, _index, _no_args, _one_arg, _own_module,
                               bomb)
from stackless._lifetime import _live_tasklets, _new_cont, _register
from stackless._threads import _ThreadState, _states, _ts, _unregister
from stackless import _running

if TYPE_CHECKING:
    from stackless._tasklet import tasklet

_own_module(globals())

# Callbacks shared by all threads.
_schedule_cb: Optional[Callable] = None
_error_handler: Optional[Callable] = None

if _PYPY:
    from stackless._common import _get_ctx, _set_ctx
else:
    from stackless._common import _set_stack_context, _stack_start_context


def _switch(ts: _ThreadState, cur: "tasklet", nxt: "tasklet") -> None:
    """Suspend ``cur`` (the running tasklet) and resume ``nxt``.

    The caller has already arranged the run queue (``nxt`` is ``rq[0]``).
    Returns when ``cur`` is resumed again.

    The continulets obey one invariant: while the main tasklet runs every
    other tasklet's continulet holds that tasklet's own stack; while a
    non-main tasklet X runs, X's continulet holds the main tasklet's stack.
    The three switch forms below keep that invariant.

    Under ``run(timeout, soft=True)`` whose budget is spent, the switch goes
    to the waiting ``run()`` instead, everything else staying as it is.
    """
    pre = ts.timeout
    if pre is not None and nxt is not pre.watchdog and pre.soft_due(cur):
        nxt = pre.soft_interrupt(ts)
    if _schedule_cb is not None:
        _call_schedule_cb(cur, nxt)
    if ts.tasklet_tracing:
        _tracing_out(ts, cur)
    c = nxt._cont
    if c is None and cur._is_main:
        # before ts.current changes: the allocation may start a garbage
        # collection, whose finalizers must find cur running
        c = nxt._cont = _new_cont(_bootstrap, nxt)
    ts.current = nxt
    if _PYPY:
        # CPython reads a suspended tasklet's frame from its stack instead
        # (tasklet.frame); making a frame object at every switch costs time
        # and memory
        cur._frame = _getframe(1)
        cur._ctx = _get_ctx()
    if cur._is_main:
        try:
            c.switch()
        except BaseException:
            try:
                _not_started(nxt, c)
            finally:    # again if a second signal landed in it (idempotent)
                _not_started(nxt, c)
            raise
        while ts.launch is not None:
            _launch(ts)
    elif nxt._is_main:
        cur._cont.switch()
    elif nxt._cont is None:
        # New tasklets start from the main tasklet's stack, so that their
        # depth does not pile up on the stack of whoever started them.
        ts.launch = nxt
        cur._cont.switch()
    else:
        cur._cont.switch(to=nxt._cont)
    if _PYPY:
        _set_ctx(cur._ctx)
    if ts.tasklet_tracing:
        _tracing_in(ts, cur)
    if ts.timeout is not None:
        ts.timeout.resumed(cur)
    if _PYPY:
        cur._frame = None
    if ts.pending is not None and cur._is_main:
        _raise_pending(ts)


def _raise_pending(ts: _ThreadState) -> None:
    """Raise in main the exception that landed after a dying tasklet had
    switched away (see _bootstrap)."""
    e, ts.pending = ts.pending, None
    raise e


def _call_schedule_cb(prev: "tasklet", nxt: "tasklet") -> None:
    """Call the schedule callback in ``prev``, before the switch.  As in
    Stackless, its exception does not stop the switch: it is reported as
    unraisable ("Error in scheduling callback")."""
    try:
        _callback(_schedule_cb, prev, nxt)
    except Exception as e:
        _write_unraisable(e, "Error in scheduling callback")


_hook_args_type: Any = None


def _forget_hook_args_type() -> None:
    global _hook_args_type
    _hook_args_type = None


def _write_unraisable(e: BaseException, where: str) -> None:
    """Report ``e`` through ``sys.unraisablehook`` as C code reports an
    error it cannot raise (``PyErr_WriteUnraisable(where)``)."""
    global _hook_args_type
    if _PYPY:
        from __pypy__ import write_unraisable  # type: ignore
        write_unraisable("in", e, where)     # its message: "Exception ignored in"
        return
    if _hook_args_type is None:
        # the hook's argument type is not exposed: take it from one report
        seen: list = []
        hook, sys.unraisablehook = sys.unraisablehook, seen.append

        class _Probe:
            def __del__(self) -> None:
                raise RuntimeError

        try:
            _Probe()
        finally:
            sys.unraisablehook = hook
        _hook_args_type = type(seen[0])
        # The interpreter finalizes this static type after the modules; the
        # accelerator's cached functions keep this module's globals alive
        # until then, and a debug build aborts on the extra reference.
        atexit.register(_forget_hook_args_type)
    sys.unraisablehook(_hook_args_type((type(e), e, e.__traceback__, None, where)))


def _tracing_out(ts: _ThreadState, cur: "tasklet") -> None:
    """``cur`` is leaving: keep the trace and profile functions it has now.

    While ``run(timeout)`` is active the thread's trace function is its tick
    counter, which stays in place (docs/stackless.md)."""
    if ts.timeout is None:
        cur._trace = sys.gettrace()
    cur._profile = sys.getprofile()


def _tracing_in(ts: _ThreadState, cur: "tasklet") -> None:
    """``cur`` runs (again): give the thread its trace and profile functions."""
    if ts.timeout is None and sys.gettrace() is not cur._trace:
        sys.settrace(cur._trace)
    if sys.getprofile() is not cur._profile:
        sys.setprofile(cur._profile)


def _tracing_per_tasklet(ts: _ThreadState, new: "tasklet") -> None:
    """A tasklet starts while the thread has a trace or profile function: as
    in Stackless, it is not the new tasklet's.  It stays with the tasklets
    that ran until now, and from now on every switch swaps them."""
    trace, profile = sys.gettrace(), sys.getprofile()
    for t in [ts.main, *_live_tasklets(ts.thread_id)]:
        if t is not new and t._started:     # (those yet to start get none)
            t._trace, t._profile = trace, profile
    ts.tasklet_tracing = True
    _tracing_in(ts, new)


def _take_tempval(t: "tasklet") -> Any:
    """Take ``t``'s tempval (it becomes None, as in Stackless, where a
    resumed tasklet takes it as the switch's result); raise it if it is a
    bomb."""
    v = t._tempval
    t._tempval = None
    if type(v) is bomb:
        try:
            v.raise_()
        finally:
            v = None    # no cycle through this frame (see bomb.raise_)
    return v


def _bootstrap(cont: continulet, self: "tasklet") -> Any:
    """The function at the bottom of every tasklet's stack."""
    ts = self._ts
    if _PYPY:
        _set_ctx(self._ctx)
        self._frame = None
    self._started = True
    error: Optional[BaseException] = None
    try:
        # Python calls: what lands in them (a signal handler's exception,
        # or a kill while run(timeout) interrupted that handler) is the
        # tasklet's own, as if it came from its function
        if ts.tasklet_tracing:
            _tracing_in(ts, self)
        elif ts.timeout is None and (sys.gettrace() is not None or sys.getprofile() is not None):
            _tracing_per_tasklet(ts, self)
        if ts.timeout is not None:
            ts.timeout.resumed(self)
        _take_tempval(self)
        func, args, kwargs = self._func, self._args, self._kwargs
        self._args = self._kwargs = None
        # the stack's own context (not entered with Context.run(), so that
        # set_context() can replace it while the tasklet lives)
        if _PYPY:
            _set_ctx(self._context)
        else:
            _set_stack_context(_stack_start_context(self._context))
        # A plain call where it can be: CPython runs a Python function
        # called with CALL (not CALL_FUNCTION_EX) in the interpreter's C
        # frame that runs us, so a suspended tasklet saves one C frame of
        # the interpreter less (about 400 bytes: its saved C stack then
        # fits in its continulet's spare memory, docs/performance.md).
        if kwargs:
            func(*args, **kwargs)
        elif not args:
            func()
        elif len(args) == 1:
            func(args[0])
        else:
            func(*args)
    except TaskletExit:
        pass
    except BaseException as e:
        error = e
    # The way out.  An exception that lands on the way into _end (at its
    # entry, where a signal handler or a profile function runs) or after
    # its retry loop gave up is an uncaught exception of the tasklet, as in
    # _end: it is tried again, three times, written out.  A loop would not
    # do: its backward jump is where a signal handler runs too, outside any
    # try (the exception would end the stack with the tasklet alive), while
    # falling from an except clause into the next try passes no such point.
    # The error is handed over in a box: main raises it with this frame in
    # its traceback, so this frame must not keep it (see _end).
    box, error = [error], None
    try:
        return _end(cont, self, ts, box)
    except BaseException as e:
        if not self._alive:
            raise       # after the switch, as from our own return
        box = [e]
    try:
        return _end(cont, self, ts, box)
    except BaseException as e:
        if not self._alive:
            raise
        box = [e]
    return _end(cont, self, ts, box)


def _end(cont: continulet, self: "tasklet", ts: _ThreadState, box: list) -> None:
    """The way out of a tasklet whose function ended (with the uncaught
    exception in ``box``, or None): finish it and resume the next one.

    An exception that lands here (a signal handler's, a trace function's)
    is an uncaught exception of the tasklet: main gets it.  _finish is
    idempotent, so it is simply run again."""
    error = box.pop()
    nxt = None
    handler = _error_handler
    tries = 0
    while nxt is None:
        try:
            if error is not None and handler is not None:
                h, handler = handler, None
                error, e = None, error
                _callback(h, type(e), e, e.__traceback__)
            nxt = _finish(ts, self, error)
        except TaskletExit:
            error = None
        except BaseException as e:  # the handler failed, or an async exception
            error = e
            tries += 1
            if tries > 3:
                # not an interruption: a tasklet the GC has cleared, while
                # the interpreter finalizes.  Never spin: end the stack.
                if not sys.is_finalizing():
                    _write_unraisable(e, "Error in tasklet end")
                return None
    # main raises the error with this frame in its traceback: this frame
    # must not keep it (a cycle would free what main's frames hold in a
    # garbage collection, where a __del__ cannot switch)
    error = e = None
    try:
        if _schedule_cb is not None:
            _call_schedule_cb(self, nxt)
    except BaseException:
        pass    # (an asynchronous exception here has nowhere to go)
    # From here on no call may come before the switch: nxt is current.
    ts.current = nxt
    if _PYPY:
        self._ctx = None
    if nxt._is_main:
        return None         # our continulet holds main's stack: resume it
    c = nxt._cont
    if c is None:
        ts.launch = nxt     # main starts it (see _switch)
        return None
    try:
        permute(cont, c)    # returning now resumes nxt; main moves into c
    except BaseException as e:
        # it landed after the permute (the switch is decided): main gets it
        ts.pending = e
    return None


# a running tasklet pickles with its frames (stackless/_running.py)
_running.install(_bootstrap, _ThreadState, _ts)


def _finish(ts: _ThreadState, self: "tasklet",
            error: Optional[BaseException]) -> "tasklet":
    """Make the dying ``self`` dead and return the tasklet to resume.

    Idempotent: an exception that interrupts it leaves a state from which
    running it again completes the job.
    """
    # what the tasklet holds goes first, while it still lives: the
    # finalizers this runs may use the scheduler
    self._func = self._context = self._tempval = None
    if error is not None:
        # An uncaught exception is re-raised in the innermost waiting run()
        # (a "watchdog"), else in the main tasklet.  The value that tasklet
        # was sending and its old tempval go first too: from the moment
        # this tasklet is dead nothing may be dropped until the next one runs.
        b = bomb(type(error), error, error.__traceback__)
        for _ in range(3):
            m = _error_target(ts)
            if m._blocked:
                m._channel._remove_waiter(m)
            elif m._tempval is not None:
                m._tempval = None
            else:
                break
    rq = ts.rq
    i = _index(rq, self)
    if i >= 0:
        del rq[i]
    self._scheduled = False
    self._alive = False
    _unregister(self)
    if error is not None:
        m = _error_target(ts)
        removed = _make_runnable_first(ts, m)
        # what a __del__ above put back is dropped with the bomb, by m
        b._freight = removed if removed is not None else m._tempval
        m._tempval = b
        return m
    if rq:
        return rq[0]
    return _idle_target(ts, self, True)


def _error_target(ts: _ThreadState) -> "tasklet":
    """The tasklet that gets an uncaught exception: the innermost waiting
    run(), else main."""
    wds = ts.watchdogs
    return wds[-1][0] if wds else ts.main


def _launch(ts: _ThreadState) -> None:
    """In the main tasklet's stack: start the new tasklet ``ts.launch``."""
    t = ts.launch
    ts.launch = None
    c = t._cont = _new_cont(_bootstrap, t)
    try:
        c.switch()
    except BaseException:
        try:
            _not_started(t, c)
        finally:    # again if a second signal landed in it (idempotent)
            _not_started(t, c)
        raise


def _not_started(t: "tasklet", c: continulet) -> None:
    """An exception came out of the first switch into ``t``: if it landed
    before ``_bootstrap`` began (the trace or profile event of its call),
    ``t`` has not started and starts afresh next time."""
    if not t._started and t._cont is c and not c.is_pending():
        # held strongly again, as an unstarted tasklet is: before c goes,
        # which held it (a second signal between the two lines finds
        # t._cont still c, and this runs again)
        _register(t)
        t._cont = None


def _make_runnable_first(ts: _ThreadState, t: "tasklet") -> Any:
    """Make ``t`` (a tasklet of this thread) ``rq[0]``, unblocking it.

    Idempotent, and each step leaves a consistent state.  Returns the value
    ``t`` was sending, for the caller to drop once all is consistent."""
    removed = t._channel._remove_waiter(t) if t._blocked else None
    rq = ts.rq
    if not (rq and rq[0] is t):
        i = _index(rq, t)
        if i >= 0:
            del rq[i]
        t._scheduled = True
        rq.appendleft(t)
    wds = ts.watchdogs
    for i in range(len(wds)):
        if wds[i][0] is t:
            del wds[i]
            break
    return removed


def _recover(ts: _ThreadState, cur: "tasklet") -> None:
    """An exception surfaced in the running tasklet ``cur`` in the middle of
    a scheduler operation (an error, a callback's, a signal handler's or a
    trace function's): make the state say again that ``cur`` runs.

    ``cur`` becomes current and ``rq[0]``; if it was about to block on a
    channel, it is taken off again; a request to start a tasklet that the
    failed switch left (``ts.launch``) is dropped.  Idempotent."""
    ts.current = cur
    ts.launch = None
    removed = _make_runnable_first(ts, cur)
    del removed     # now: its __del__ may use the scheduler


def _others_can_wake(ts: _ThreadState) -> bool:
    """True when another thread could still hand us a tasklet."""
    others = max(threading.active_count(), _thread._count() + 1) - 1
    if others <= 0:
        return False
    stuck = 0
    for s in list(_states.values()):
        if s is not ts and s.idle and not s.rq:
            stuck += 1
    return others > stuck


def _idle_target(ts: _ThreadState, cur: "tasklet", dying: bool = False) -> "tasklet":
    """The run queue is empty and ``cur`` left it: find what runs next.

    A waiting ``run()`` is woken first (unless it asked for ``threadblock``);
    then, while other threads may send us work, this thread sleeps.
    Otherwise it is a deadlock, and as in Stackless ``RuntimeError`` is
    raised in ``cur``, the tasklet that blocks last, unless it is ``dying``:
    then the main tasklet is revived, taken off its channel with an error.
    """
    rq = ts.rq
    while True:
        wds = ts.watchdogs
        if wds and not wds[-1][1]:
            break
        if _others_can_wake(ts):
            ts.idle = True
            try:
                if not rq:
                    ts.wake.acquire(True, 0.05)
            finally:
                ts.idle = False
            if rq:
                return rq[0]
            continue
        break
    wds = ts.watchdogs
    if wds:
        # The waiting run() is woken: its entry goes as its tasklet is
        # queued, in one transaction (docs/design.md, "Exception safety").
        # The entry popped first and the tasklet queued by a call, a signal
        # landing in between lost the run(): nothing named it any more, and
        # the thread waited for good (or, with other threads, made one of
        # them report a deadlock).  The tasklet waits in run(): it is
        # neither blocked nor queued (rq may have gained tasklets that
        # another thread's channel operation woke).
        wd = wds[-1][0]
        # -- transaction
        del wds[-1]
        wd._scheduled = True
        rq.appendleft(wd)
        # -- end of transaction
        return wd
    if not dying:
        raise RuntimeError(_DEADLOCK)
    m = ts.main
    blocked = m._blocked
    removed = _make_runnable_first(ts, m)
    if blocked:
        e = RuntimeError(_MAIN_RECEIVING if blocked < 0 else _MAIN_SENDING)
        b = bomb(RuntimeError, e, None)
        # the value main was sending: dropped with the bomb, by main (the
        # dying tasklet may not run a __del__ that uses the scheduler)
        b._freight = removed
        m._tempval = b
    return m


def _leave(ts: _ThreadState, cur: "tasklet") -> None:
    """``cur`` (rq[0]) stops being runnable: switch to whatever runs next.

    Raises (in ``cur``, with the queue restored) when nothing else can run.
    """
    rq = ts.rq
    i = 0 if rq and rq[0] is cur else _index(rq, cur)
    if i >= 0:
        del rq[i]
    cur._scheduled = False
    try:
        nxt = rq[0] if rq else _idle_target(ts, cur)
        if nxt is not cur:
            _switch(ts, cur, nxt)
    except BaseException:
        try:
            _recover(ts, cur)
        finally:   # again if a second signal landed in it (idempotent)
            _recover(ts, cur)
        raise


def set_schedule_callback(callback: Any = _NOARG, *_more: Any) -> Optional[Callable]:
    """Install ``callback(prev, next)``, called before every switch.

    Returns the previous callback.  ``None`` removes it.
    """
    if callback is _NOARG or _more:
        raise _one_arg("set_schedule_callback", callback, _more)
    global _schedule_cb
    if callback is not None and not callable(callback):
        raise TypeError("schedule callback must be callable")
    old, _schedule_cb = _schedule_cb, callback
    return old


def get_schedule_callback(*_more: Any) -> Optional[Callable]:
    """Return the installed schedule callback, or None."""
    if _more:
        raise _no_args("get_schedule_callback", _more)
    return _schedule_cb


def set_error_handler(handler: Optional[Callable]) -> Optional[Callable]:
    """Install ``handler(exc_type, exc_value, exc_tb)`` for uncaught errors.

    It is called in the dying tasklet instead of re-raising the error in
    the main tasklet.  Returns the previous handler.
    """
    global _error_handler
    if handler is not None and not callable(handler):
        raise TypeError("error handler must be callable")
    old, _error_handler = _error_handler, handler
    return old
