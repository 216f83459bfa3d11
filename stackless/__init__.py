"""Stackless Python's API in pure Python, on top of ``_continuation``.

This module gives stock CPython (with the ``_continuation`` extension of this
project) and PyPy (with its built-in ``_continuation``) the ``stackless``
module of Stackless Python 3.7: tasklets, channels, the round-robin scheduler
and its helpers.  Every switch is a "hard" switch of a continulet; there is no
soft switching.  See ``docs/stackless.md`` for the reference and for every
difference from Stackless Python 3.7.
"""

from __future__ import annotations

import atexit
import builtins
import contextvars
import os
import sys
import threading
import _thread
from collections import deque
from typing import Any, Callable, Optional

from _continuation import continulet, permute

from stackless import _running

__all__ = [
    "TaskletExit", "atomic", "bomb", "channel", "current", "enable_softswitch",
    "get_channel_callback", "get_schedule_callback", "get_thread_info",
    "getcurrent", "getcurrentid", "getmain", "getruncount", "getthreads",
    "main", "run", "runcount", "schedule", "schedule_remove",
    "set_channel_callback", "set_error_handler", "set_schedule_callback",
    "switch_trap", "tasklet", "threads", "coroutine",
]

_DEADLOCK = "Deadlock: the last runnable tasklet cannot be blocked."
_CLOSED = "Send/receive operation on a closed channel"
_BLOCK_TRAP = "this tasklet does not like to be blocked."
_NOT_RESTORABLE = ("this tasklet was pickled while it was running; a hard-switched "
                   "tasklet cannot be restored: only unstarted, paused-before-start "
                   "and dead tasklets are restorable")

_PYPY = sys.implementation.name == "pypy"
_RUNNING = object()     # "the running stack", see tasklet._context_place
_getframe = sys._getframe
_get_ident = _thread.get_ident


class TaskletExit(SystemExit):
    """Raised in a tasklet to kill it (see :meth:`tasklet.kill`).

    When it leaves the tasklet's function uncaught the tasklet dies silently.
    """


if not hasattr(builtins, "TaskletExit"):
    builtins.TaskletExit = TaskletExit  # type: ignore[attr-defined]
else:  # pragma: no cover - another copy of this module was imported first
    TaskletExit = builtins.TaskletExit  # type: ignore[misc,attr-defined]


class bomb:
    """An exception packed as a value: it explodes when it is received.

    ``bomb(type, value, traceback)`` mirrors ``sys.exc_info()``.  A bomb that
    arrives as a tasklet's ``tempval`` (through a channel, ``throw`` or
    ``kill``) is raised in that tasklet when it resumes.
    """

    __slots__ = ("type", "value", "traceback")

    def __init__(self, exc_type: Any = None, exc_value: Any = None,
                 exc_traceback: Any = None) -> None:
        self.type = exc_type
        self.value = exc_value
        self.traceback = exc_traceback

    def raise_(self) -> None:
        """Raise the packed exception."""
        exc = _make_exception(self.type, self.value)
        if self.traceback is not None:
            raise exc.with_traceback(self.traceback)
        raise exc

    def __reduce__(self):
        return (bomb, (self.type, self.value, None))

    def __repr__(self) -> str:
        return "<stackless.bomb %r %r>" % (self.type, self.value)


def _make_exception(exc: Any, val: Any = None) -> BaseException:
    """Build the exception instance for ``raise exc`` / ``throw(exc, val)``."""
    if isinstance(exc, BaseException):
        if val is not None:
            raise TypeError("instance exception may not have a separate value")
        return exc
    if isinstance(exc, type) and issubclass(exc, BaseException):
        if val is None:
            return exc()
        if isinstance(val, exc):
            return val
        if isinstance(val, tuple):
            return exc(*val)
        return exc(val)
    raise TypeError("exceptions must be classes, or instances, not %s"
                    % type(exc).__name__)


# ----------------------------------------------------------------------------
# Per-thread scheduler state
# ----------------------------------------------------------------------------

class _ThreadState:
    """The scheduler of one thread: its main tasklet, run queue and watchdogs."""

    __slots__ = ("thread_id", "main", "current", "rq", "watchdogs", "cond",
                 "trap", "idle", "timeout", "launch", "tasklet_tracing",
                 "__weakref__")

    def __init__(self) -> None:
        self.thread_id = _get_ident()
        # rq holds the runnable tasklets; when the running tasklet is
        # scheduled it is rq[0].
        self.rq: deque = deque()
        self.watchdogs: list = []   # [tasklet, threadblock] of nested run()s
        self.cond = threading.Condition(threading.Lock())
        self.trap = 0
        self.idle = False
        self.timeout: Optional[_Preempt] = None
        self.launch: Optional[tasklet] = None
        # True once a tasklet's trace_function or profile_function has been
        # assigned: from then on every switch swaps them (_tracing_out/in)
        self.tasklet_tracing = False
        m = object.__new__(tasklet)
        m._init_fields(self)
        m._is_main = True
        m._alive = True
        m._started = True
        m._scheduled = True
        self.main = m
        self.current = m
        self.rq.append(m)


_local = threading.local()
_states: "dict[int, _ThreadState]" = {}
_lock = _thread.allocate_lock()     # guards channel queues across threads


def _new_ts() -> _ThreadState:
    ts = _ThreadState()
    _local.ts = ts
    _local.reaper = _ThreadReaper(ts)
    _states[ts.thread_id] = ts
    _hook_thread_end(ts)
    return ts


def _hook_thread_end(ts: _ThreadState) -> None:
    """Kill the thread's tasklets when its ``threading.Thread`` finishes.

    ``Thread._bootstrap_inner`` calls ``self._delete()`` in the thread itself
    once ``run()`` has returned: the tasklets are killed right there, while
    the thread can still run them.  Threads that are not ``threading``
    threads fall back on :class:`_ThreadReaper`.
    """
    if ts.thread_id == threading.main_thread().ident:
        return
    th = threading.current_thread()
    original = getattr(th, "_delete", None)
    if original is None or isinstance(th, threading._DummyThread):
        return

    def _delete() -> None:
        try:
            if _get_ident() == ts.thread_id and ts.current is ts.main:
                _kill_all(ts)
                _states.pop(ts.thread_id, None)
                _forget_thread()
        finally:
            original()

    th._delete = _delete


def _forget_thread() -> None:
    """The running thread's scheduler is going away (see _install_accel)."""


def _ts() -> _ThreadState:
    try:
        return _local.ts
    except AttributeError:
        return _new_ts()


class _ThreadReaper:
    """Kills the tasklets of a thread when the thread's locals are freed."""

    __slots__ = ("ts",)

    def __init__(self, ts: _ThreadState) -> None:
        self.ts = ts

    def __del__(self) -> None:
        if _states is None or _get_ident is None:   # interpreter shutdown
            return
        ts = self.ts
        _states.pop(ts.thread_id, None)
        if _get_ident() == ts.thread_id and ts.current is ts.main:
            _kill_all(ts)
            _forget_thread()
        else:
            _orphan_all(ts)


# Callbacks and traps shared by all threads.
_schedule_cb: Optional[Callable] = None
_channel_cb: Optional[Callable] = None
_error_handler: Optional[Callable] = None

# Every tasklet that has been bound and is not dead, per thread, so that the
# tasklets of a dying thread (or of the interpreter at exit) can be killed.
_alive_registry: "dict[int, dict[int, tasklet]]" = {}


# ----------------------------------------------------------------------------
# Switching
# ----------------------------------------------------------------------------

if _PYPY:
    # PyPy's continulets do not carry the contextvars context: do it here.
    from __pypy__ import get_contextvar_context as _get_ctx  # type: ignore
    from __pypy__ import set_contextvar_context as _set_ctx  # type: ignore
else:
    # Ours carry it, one context per stack, and let us read and replace the
    # context of the running stack or of a suspended one.
    from _continuation import _stack_context, _set_stack_context  # type: ignore


def _switch(ts: _ThreadState, cur: "tasklet", nxt: "tasklet") -> None:
    """Suspend ``cur`` (the running tasklet) and resume ``nxt``.

    The caller has already arranged the run queue (``nxt`` is ``rq[0]``).
    Returns when ``cur`` is resumed again.

    The continulets obey one invariant: while the main tasklet runs every
    other tasklet's continulet holds that tasklet's own stack; while a
    non-main tasklet X runs, X's continulet holds the main tasklet's stack.
    The three switch forms below keep that invariant.
    """
    if _schedule_cb is not None:
        _schedule_cb(cur, nxt)
    if ts.tasklet_tracing:
        _tracing_out(ts, cur)
    ts.current = nxt
    cur._frame = _getframe(1)
    if _PYPY:
        cur._ctx = _get_ctx()
    if cur._is_main:
        c = nxt._cont
        if c is None:
            c = nxt._cont = continulet(_bootstrap, nxt)
        c.switch()
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
    cur._frame = None


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


def _take_tempval(t: "tasklet") -> Any:
    """Return ``t``'s tempval, raising it if it is a bomb."""
    v = t._tempval
    if type(v) is bomb:
        t._tempval = None
        v.raise_()
    return v


def _bootstrap(cont: continulet, self: "tasklet") -> Any:
    """The function at the bottom of every tasklet's stack."""
    ts = self._ts
    if _PYPY:
        _set_ctx(self._ctx)
    self._frame = None
    if ts.tasklet_tracing:
        _tracing_in(ts, self)
    if ts.timeout is not None:
        ts.timeout.resumed(self)
    self._started = True
    error = None
    try:
        _take_tempval(self)
        func, args, kwargs = self._func, self._args, self._kwargs
        self._args = self._kwargs = None
        # the stack's own context (not entered with Context.run(), so that
        # set_context() can replace it while the tasklet lives)
        if _PYPY:
            _set_ctx(self._context)
        else:
            _set_stack_context(self._context)
        func(*args, **kwargs)
    except TaskletExit:
        pass
    except BaseException as e:
        error = e
    return _finish(cont, ts, self, error)


_running.install(_bootstrap.__code__, _ThreadState, _ts)


def _finish(cont: continulet, ts: _ThreadState, self: "tasklet",
            error: Optional[BaseException]) -> None:
    """Make ``self`` dead and pass control on; never raises."""
    handler = _error_handler
    while True:
        try:
            if error is not None and handler is not None:
                h, handler = handler, None
                error, e = None, error
                h(type(e), e, e.__traceback__)
            nxt = _end_switch_target(ts, self, error)
            break
        except TaskletExit:
            error = None
        except BaseException as e:  # the handler failed, or deadlock
            error = e
    if _schedule_cb is not None:
        try:
            _schedule_cb(self, nxt)
        except BaseException:
            pass
    ts.current = nxt
    if _PYPY:
        self._ctx = None
    if nxt._is_main:
        return None         # our continulet holds main's stack: resume it
    c = nxt._cont
    if c is None:
        ts.launch = nxt     # main starts it (see _switch)
        return None
    permute(cont, c)        # returning now resumes nxt; main moves into c
    return None


def _launch(ts: _ThreadState) -> None:
    """In the main tasklet's stack: start the new tasklet ``ts.launch``."""
    t = ts.launch
    ts.launch = None
    c = t._cont = continulet(_bootstrap, t)
    c.switch()


def _end_switch_target(ts: _ThreadState, self: "tasklet",
                       error: Optional[BaseException]) -> "tasklet":
    """Unschedule the dying ``self`` and pick the tasklet to resume."""
    if self._scheduled:
        rq = ts.rq
        if rq and rq[0] is self:
            rq.popleft()
        else:
            rq.remove(self)
    self._scheduled = False
    self._alive = False
    self._func = None
    self._context = None
    self._tempval = None
    _unregister(self)
    if error is not None:
        # An uncaught exception is re-raised in the main tasklet.
        m = ts.main
        m._tempval = bomb(type(error), error, error.__traceback__)
        _make_runnable_first(ts, m)
        return m
    if ts.rq:
        return ts.rq[0]
    return _idle_target(ts, self)


def _make_runnable_first(ts: _ThreadState, t: "tasklet") -> None:
    """Make ``t`` (a tasklet of this thread) ``rq[0]``, unblocking it."""
    if t._blocked:
        t._channel._remove_waiter(t)
    rq = ts.rq
    if t._scheduled:
        if rq[0] is not t:
            rq.remove(t)
            rq.appendleft(t)
    else:
        rq.appendleft(t)
        t._scheduled = True
    for w in ts.watchdogs:
        if w[0] is t:
            ts.watchdogs.remove(w)
            break


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


def _idle_target(ts: _ThreadState, cur: "tasklet") -> "tasklet":
    """The run queue is empty and ``cur`` left it: find what runs next.

    A waiting ``run()`` is woken first (unless it asked for ``threadblock``);
    then, while other threads may send us work, this thread sleeps; otherwise
    the main tasklet is revived.  If the main tasklet is the one that leaves,
    that is a deadlock and ``RuntimeError`` is raised in it.
    """
    rq = ts.rq
    while True:
        wds = ts.watchdogs
        if wds and not wds[-1][1]:
            break
        if _others_can_wake(ts):
            with ts.cond:
                ts.idle = True
                try:
                    if not rq:
                        ts.cond.wait(0.05)
                finally:
                    ts.idle = False
            if rq:
                return rq[0]
            continue
        break
    if ts.watchdogs:
        wd = ts.watchdogs.pop()[0]
        _make_runnable_first(ts, wd)
        return wd
    m = ts.main
    if m is cur:
        raise RuntimeError(_DEADLOCK)
    if m._blocked:
        m._channel._remove_waiter(m)
        m._tempval = bomb(RuntimeError, RuntimeError(_DEADLOCK), None)
    _make_runnable_first(ts, m)
    return m


def _leave(ts: _ThreadState, cur: "tasklet") -> None:
    """``cur`` (rq[0]) stops being runnable: switch to whatever runs next.

    Raises (in ``cur``, with the queue restored) when nothing else can run.
    """
    rq = ts.rq
    rq.popleft()
    cur._scheduled = False
    if rq:
        nxt = rq[0]
    else:
        try:
            nxt = _idle_target(ts, cur)
        except BaseException:
            rq.appendleft(cur)
            cur._scheduled = True
            raise
        if nxt is cur:
            return
    _switch(ts, cur, nxt)


def _register(t: "tasklet") -> None:
    d = _alive_registry.get(t._ts.thread_id)
    if d is None:
        d = _alive_registry[t._ts.thread_id] = {}
    d[id(t)] = t


def _unregister(t: "tasklet") -> None:
    d = _alive_registry.get(t._ts.thread_id)
    if d is not None:
        d.pop(id(t), None)


def _kill_all(ts: _ThreadState) -> None:
    """Kill every live tasklet of this thread (called from its main tasklet)."""
    d = _alive_registry.get(ts.thread_id)
    if not d:
        return
    for _ in range(3):
        for t in list(d.values()):
            if t._alive and not t._is_main:
                try:
                    t.kill()
                except BaseException:
                    pass
        if not any(t._alive for t in d.values()):
            break
    _orphan_all(ts)


def _orphan_all(ts: _ThreadState) -> None:
    """Forget the tasklets of a thread that ended: they report thread_id -1."""
    d = _alive_registry.pop(ts.thread_id, None)
    if d:
        for t in d.values():
            t._orphaned = True
            t._scheduled = False
            t._alive = False
    ts.rq.clear()


@atexit.register
def _kill_at_exit() -> None:
    ts = getattr(_local, "ts", None)
    if ts is not None and ts.current is ts.main:
        _kill_all(ts)


# ----------------------------------------------------------------------------
# Tasklets
# ----------------------------------------------------------------------------

class tasklet:
    """A microthread: a callable that runs on its own stack.

    ``tasklet(func)(*args, **kwargs)`` binds the function and its arguments
    and inserts the tasklet into the scheduler's run queue.
    """

    __slots__ = ("_func", "_args", "_kwargs", "_cont", "_ts", "_tempval",
                 "_blocked", "_channel", "_scheduled", "_alive", "_started",
                 "_is_main", "_atomic", "_ignore_nesting", "_block_trap",
                 "_context", "_ctx", "_frame", "_orphaned", "_unrestorable",
                 "_trace", "_profile", "__weakref__", "__dict__")

    def _init_fields(self, ts: _ThreadState) -> None:
        self._func = None
        self._args = None
        self._kwargs = None
        self._cont = None
        self._ts = ts
        self._tempval = None
        self._blocked = 0
        self._channel = None
        self._scheduled = False
        self._alive = False
        self._started = False
        self._is_main = False
        self._atomic = False
        self._ignore_nesting = False
        self._block_trap = False
        self._context = None
        self._ctx = None
        self._frame = None
        self._orphaned = False
        self._unrestorable = False
        self._trace = None
        self._profile = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "tasklet":
        self = object.__new__(cls)
        self._init_fields(_ts())
        return self

    def __init__(self, func: Optional[Callable] = None, args: Any = None,
                 kwargs: Any = None) -> None:
        if func is not None or args is not None or kwargs is not None:
            self.bind(func, args, kwargs)

    # -- binding ------------------------------------------------------------

    def bind(self, func: Optional[Callable] = None, args: Any = None,
             kwargs: Any = None) -> "tasklet":
        """Bind the tasklet to ``func`` and optionally to its arguments.

        With ``args`` or ``kwargs`` the tasklet becomes alive but paused (not
        scheduled).  ``bind(None)`` with no arguments unbinds a tasklet that is
        not running, making it dead and reusable.
        """
        if func is None and args is None and kwargs is None:
            if self._scheduled or self is self._ts.current or self._blocked:
                raise RuntimeError("You cannot unbind a scheduled or running tasklet")
            if self._started and self._alive:
                raise RuntimeError("You cannot unbind a tasklet that has started; kill() it")
            self._unbind()
            return self
        if func is not None and not callable(func):
            raise TypeError("tasklet function must be a callable or None")
        if self._started and self._alive:
            raise RuntimeError("tasklet is alive: it cannot be bound again")
        if self._scheduled or self._blocked or self is self._ts.current:
            raise RuntimeError("tasklet is scheduled: it cannot be bound again")
        if func is not None:
            self._func = func
            self._context = contextvars.copy_context()
            self._unrestorable = False
        if args is not None or kwargs is not None:
            if self._func is None:
                raise RuntimeError("the tasklet has no function to bind arguments to")
            self._args = tuple(args) if args is not None else ()
            self._kwargs = dict(kwargs) if kwargs is not None else {}
            if self._context is None:
                self._context = contextvars.copy_context()
            self._make_alive()
        return self

    def _unbind(self) -> None:
        if self._alive:
            _unregister(self)
        self._func = self._args = self._kwargs = None
        self._cont = None
        self._alive = self._started = False
        self._context = None
        self._tempval = None

    def _make_alive(self) -> None:
        if not self._alive:
            self._alive = True
            self._started = False
            self._cont = None
            if self._ts.thread_id != _get_ident():
                self._ts = _ts()
            _register(self)

    def setup(self, *args: Any, **kwargs: Any) -> "tasklet":
        """Bind the arguments and insert the tasklet into the run queue."""
        if self._alive:
            raise RuntimeError("tasklet is alive: it cannot be set up again")
        if self._func is None:
            raise TypeError("tasklet function must be a callable")
        self._args = args
        self._kwargs = kwargs
        if self._context is None:
            self._context = contextvars.copy_context()
        self._make_alive()
        self.insert()
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "tasklet":
        """Same as :meth:`setup`."""
        return self.setup(*args, **kwargs)

    # -- scheduling ---------------------------------------------------------

    def insert(self) -> "tasklet":
        """Append the tasklet to the end of its thread's run queue."""
        if self._blocked:
            raise RuntimeError("You cannot run a blocked tasklet")
        if not self._alive:
            raise RuntimeError("You cannot run an unbound(dead) tasklet")
        if not self._scheduled:
            ts = self._ts
            if ts.thread_id == _get_ident():
                ts.rq.append(self)
                self._scheduled = True
            else:
                with ts.cond:
                    ts.rq.append(self)
                    self._scheduled = True
                    ts.cond.notify()
        return self

    def remove(self) -> "tasklet":
        """Take the tasklet out of the run queue: it becomes paused."""
        if self._blocked:
            raise RuntimeError("You cannot remove a blocked tasklet.")
        ts = self._ts
        if self is ts.current:
            raise RuntimeError("The current tasklet cannot be removed.")
        if self._scheduled:
            try:
                ts.rq.remove(self)
            except ValueError:
                pass
            self._scheduled = False
        return self

    def run(self) -> Any:
        """Switch to this tasklet now; the current one stays scheduled."""
        return self._run(False)

    def switch(self) -> Any:
        """Switch to this tasklet now and pause the current tasklet."""
        return self._run(True)

    def _run(self, pause: bool) -> Any:
        if self._blocked:
            raise RuntimeError("You cannot run a blocked tasklet")
        if not self._alive:
            raise RuntimeError("You cannot run an unbound(dead) tasklet")
        ts = _ts()
        if self._ts is not ts:
            raise RuntimeError("You cannot run a tasklet of another thread")
        cur = ts.current
        if self is cur:
            return None
        if ts.trap:
            raise RuntimeError("switch_trap")
        rq = ts.rq
        if not self._scheduled:
            rq.append(self)
            self._scheduled = True
        if pause:
            rq.popleft()
            cur._scheduled = False
        i = rq.index(self)
        if i:
            rq.rotate(-i)
        _switch(ts, cur, self)
        return _take_tempval(cur)

    def kill(self, pending: bool = False) -> None:
        """Raise :class:`TaskletExit` in the tasklet (see :meth:`throw`)."""
        if not self._alive:
            return None
        return self.throw(TaskletExit, None, None, pending)

    def raise_exception(self, exc_class: Any, *args: Any) -> None:
        """Raise ``exc_class(*args)`` in the tasklet and run it now."""
        return self.throw(exc_class, args if args else None, None, False)

    def throw(self, exc: Any = None, val: Any = None, tb: Any = None,
              pending: bool = False) -> None:
        """Raise an exception in the tasklet.

        A blocked tasklet is first taken off its channel.  Unless ``pending``
        is true the tasklet runs immediately (the current tasklet stays
        scheduled); otherwise it is only made runnable.
        """
        if exc is None:
            raise TypeError("throw() needs an exception")
        e = _make_exception(exc, val)
        if tb is not None:
            e = e.with_traceback(tb)
        if not self._alive:
            if isinstance(e, TaskletExit):
                return None
            raise RuntimeError("You cannot throw to a dead tasklet")
        ts = _ts()
        if self is ts.current:
            raise e
        b = bomb(type(e), e, tb)
        if self._ts is not ts:
            with _lock:
                if self._blocked:
                    self._channel._remove_waiter(self)
            self._tempval = b
            self.insert()
            return None
        if self._blocked:
            with _lock:
                self._channel._remove_waiter(self)
        self._tempval = b
        if pending:
            if not self._scheduled:
                ts.rq.append(self)
                self._scheduled = True
            return None
        self._run(False)
        return None

    def set_atomic(self, flag: bool) -> bool:
        """Set the atomic flag; return the old value."""
        old = self._atomic
        self._atomic = bool(flag)
        return old

    def set_ignore_nesting(self, flag: bool) -> bool:
        """Set the ignore_nesting flag; return the old value."""
        old = self._ignore_nesting
        self._ignore_nesting = bool(flag)
        return old

    def bind_thread(self, thread_id: Optional[int] = None) -> None:
        """Move an unstarted, unscheduled tasklet to another thread."""
        if thread_id is None or thread_id == -1:
            thread_id = _get_ident()
        if self._ts.thread_id == thread_id and not self._orphaned:
            return
        if self._started and self._alive:
            raise RuntimeError("can't (re)bind a tasklet that has started")
        if self._scheduled or self._blocked:
            raise RuntimeError("can't (re)bind a scheduled tasklet")
        ts = _states.get(thread_id)
        if ts is None:
            if thread_id == _get_ident():
                ts = _ts()
            else:
                raise ValueError("bad thread id: no stackless scheduler in that thread")
        if self._alive:
            _unregister(self)
        self._ts = ts
        self._cont = None
        self._orphaned = False
        if self._alive:
            _register(self)

    # -- contexts -----------------------------------------------------------

    def set_context(self, context: contextvars.Context) -> "tasklet":
        """Set the ``contextvars.Context`` the tasklet runs in.

        For the current tasklet the change is immediate; a suspended one
        finds it when it resumes; an unstarted one starts in it.
        """
        if not isinstance(context, contextvars.Context):
            raise TypeError("context must be a contextvars.Context")
        if self._is_main:
            # its context is the thread's, which threading (3.14+) and
            # asyncio enter with Context.run(): replacing it would make
            # their exit fail
            raise RuntimeError("cannot change the context of the main tasklet")
        where = self._context_place()
        if where is _RUNNING:
            if _PYPY:
                _set_ctx(context)
            else:
                _set_stack_context(context)
        elif where is not None:
            if _PYPY:
                self._ctx = context     # _switch() puts it in place on resume
            else:
                _set_stack_context(context, where)
        self._context = context
        return self

    def _context_place(self) -> Any:
        """Where the context of this tasklet's stack lives now: _RUNNING, the
        continulet that holds its suspended stack (on PyPy: True), or None
        when it has no stack (unstarted or dead)."""
        if not self._alive or not (self._started or self._is_main):
            return None
        ts = self._ts
        if self is ts.current:
            if ts.thread_id != _get_ident():
                raise RuntimeError("cannot change the context of a tasklet "
                                   "running in another thread")
            return _RUNNING
        if _PYPY:
            return True
        # while a tasklet other than main runs, its continulet holds the
        # main tasklet's stack (see _switch)
        return ts.current._cont if self._is_main else self._cont

    def _live_context(self) -> Optional[contextvars.Context]:
        """The context the tasklet's stack is in now, else the one it will
        start in."""
        where = self._context_place() if self._ts.thread_id == _get_ident() \
            or self is not self._ts.current else None
        if where is _RUNNING:
            return _get_ctx() if _PYPY else _stack_context()
        if where is None:
            return self._context
        return self._ctx if _PYPY else _stack_context(where)

    def context_run(self, callable: Callable, *args: Any, **kwargs: Any) -> Any:
        """Call ``callable(*args, **kwargs)`` in the tasklet's context."""
        if self is self._ts.current:
            return callable(*args, **kwargs)
        ctx = self._live_context()
        if ctx is None:
            return callable(*args, **kwargs)
        return ctx.run(callable, *args, **kwargs)

    @property
    def context_id(self) -> int:
        """An id of the tasklet's context object."""
        ctx = self._live_context()
        return id(self) if ctx is None else id(ctx)

    # -- attributes ---------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the tasklet is bound to a function and has not ended."""
        return self._alive

    @property
    def blocked(self) -> bool:
        """True while the tasklet waits on a channel."""
        return bool(self._blocked)

    @property
    def paused(self) -> bool:
        """Alive, but neither runnable nor blocked."""
        return self._alive and not self._scheduled and not self._blocked

    @property
    def scheduled(self) -> bool:
        """True when the tasklet is in the run queue or blocked on a channel."""
        return self._scheduled or bool(self._blocked)

    @property
    def restorable(self) -> bool:
        """True when pickling captures the whole tasklet: it has not started,
        or is dead, or its frames can be captured (docs/stackless.md)."""
        if self._is_main:
            return False
        if not self._alive:
            return True
        if self._unrestorable:
            return False
        return not self._started or self._frames_restorable()

    def _frames_restorable(self) -> bool:
        return (self is not self._ts.current and self._cont is not None
                and _running.blocker(self._cont) is None)

    @property
    def atomic(self) -> bool:
        """The atomic flag: an atomic tasklet is never preempted."""
        return self._atomic

    @property
    def ignore_nesting(self) -> bool:
        """The ignore_nesting flag (kept for compatibility)."""
        return self._ignore_nesting

    @property
    def block_trap(self) -> bool:
        """When true, blocking on a channel raises ``RuntimeError``."""
        return self._block_trap

    @block_trap.setter
    def block_trap(self, value: bool) -> None:
        self._block_trap = bool(value)

    @property
    def is_main(self) -> bool:
        """True for the main tasklet of a thread."""
        return self._is_main

    @property
    def is_current(self) -> bool:
        """True for the running tasklet of its thread."""
        return self._ts.current is self and not self._orphaned

    @property
    def thread_id(self) -> int:
        """The id of the thread the tasklet belongs to; -1 after it ended."""
        return -1 if self._orphaned else self._ts.thread_id

    @property
    def tempval(self) -> Any:
        """The value passed to the tasklet when it resumes."""
        return self._tempval

    @tempval.setter
    def tempval(self, value: Any) -> None:
        self._tempval = value

    @property
    def next(self) -> Optional["tasklet"]:
        """The next tasklet in the run queue or channel queue."""
        q = self._queue()
        if q is None:
            return None
        i = q.index(self) + 1
        if i < len(q):
            return q[i]
        return q[0] if q is self._ts.rq else None

    @property
    def prev(self) -> Optional["tasklet"]:
        """The previous tasklet in the run queue or channel queue."""
        q = self._queue()
        if q is None:
            return None
        i = q.index(self)
        if i:
            return q[i - 1]
        return q[-1] if q is self._ts.rq else None

    def _queue(self) -> Optional[deque]:
        if self._blocked:
            return self._channel._queue
        if self._scheduled:
            return self._ts.rq
        return None

    @property
    def frame(self) -> Any:
        """The innermost frame of the tasklet (None when not started or dead)."""
        if not self._alive or not self._started:
            return None
        if self is self._ts.current:
            return _getframe(1)
        f = self._frame
        while f is not None and f.f_globals is globals():
            f = f.f_back
        return f

    @property
    def recursion_depth(self) -> int:
        """Number of Python frames in the tasklet's stack."""
        f = self.frame
        n = 0
        # _bootstrap is the lowest frame of a tasklet's stack
        while f is not None and f.f_code is not _bootstrap.__code__:
            if f.f_globals is not globals():
                n += 1
            f = f.f_back
        return n

    @property
    def nesting_level(self) -> int:
        """Always 0: there is no C-stack nesting state to report."""
        return 0

    @property
    def trace_function(self) -> Any:
        """The trace function of the tasklet (``sys.gettrace()`` when current)."""
        if self is self._ts.current:
            return sys.gettrace()
        return self._trace

    @trace_function.setter
    def trace_function(self, value: Any) -> None:
        ts = self._ts
        ts.tasklet_tracing = True   # from now on, each tasklet has its own
        self._trace = value
        if self is ts.current:
            sys.settrace(value)

    @property
    def profile_function(self) -> Any:
        """The profile function of the tasklet (``sys.getprofile()`` when current)."""
        if self is self._ts.current:
            return sys.getprofile()
        return self._profile

    @profile_function.setter
    def profile_function(self, value: Any) -> None:
        ts = self._ts
        ts.tasklet_tracing = True
        self._profile = value
        if self is ts.current:
            sys.setprofile(value)

    def __repr__(self) -> str:
        state = []
        if self._is_main:
            state.append("main")
        if self is self._ts.current:
            state.append("current")
        if not self._alive:
            state.append("dead")
        elif self._blocked:
            state.append("blocked")
        elif not self._scheduled and not self._is_main:
            state.append("paused")
        return "<%s.%s object at %#x%s>" % (
            type(self).__module__, type(self).__qualname__, id(self),
            (" " + ", ".join(state)) if state else "")

    # -- pickling -----------------------------------------------------------

    def __reduce__(self):
        return (_restore_tasklet, (type(self),), self.__getstate__())

    def __reduce_ex__(self, proto: int):
        return self.__reduce__()

    def __getstate__(self):
        if self._is_main:
            raise TypeError("cannot pickle the main tasklet")
        running = self._alive and self._started
        cont = self._cont if running and self._frames_restorable() else None
        flags = {
            "alive": self._alive, "scheduled": self._scheduled,
            "blocked": self._blocked, "atomic": self._atomic,
            "ignore_nesting": self._ignore_nesting,
            "block_trap": self._block_trap,
            "unrestorable": (running and cont is None) or self._unrestorable,
            "cont": cont,
        }
        tempval = self._tempval
        d = getattr(self, "__dict__", None) or None
        return (self._func, self._args, self._kwargs, tempval, flags, d)

    def __setstate__(self, state) -> None:
        func, args, kwargs, tempval, flags, d = state
        self._func = func
        self._args = args
        self._kwargs = kwargs
        self._tempval = tempval
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
            self._make_alive()
            if flags.get("cont") is not None:
                # its frames, rebuilt when it first runs (stackless/_running.py)
                self._cont = flags["cont"]
                self._started = True
            if flags["scheduled"] and not flags["blocked"]:
                self.insert()


def _restore_tasklet(cls: type) -> tasklet:
    return cls.__new__(cls)


def _unrestorable_body() -> None:
    raise RuntimeError(_NOT_RESTORABLE)


# ----------------------------------------------------------------------------
# Module functions
# ----------------------------------------------------------------------------

def getcurrent() -> tasklet:
    """Return the running tasklet of this thread."""
    return _ts().current


def getmain() -> tasklet:
    """Return the main tasklet of this thread."""
    return _ts().main


def getruncount() -> int:
    """Return the number of runnable tasklets, the running one included."""
    ts = _ts()
    return len(ts.rq)


def getcurrentid() -> int:
    """Return a number that identifies the running tasklet."""
    return id(_ts().current)


def get_thread_info(thread_id: int) -> tuple:
    """Return ``(main, current, runcount)`` for a thread's scheduler."""
    if thread_id == _get_ident():
        ts = _ts()
    else:
        ts = _states.get(thread_id)
        if ts is None:
            raise ValueError("unknown thread id")
    return (ts.main, ts.current, len(ts.rq))


def getthreads() -> list:
    """Return the ids of all threads (that have a running Python thread state)."""
    ids = {t.ident for t in threading.enumerate()}
    ids.update(_states)
    ids.add(_get_ident())
    return sorted(i for i in ids if i is not None)


def schedule(retval: Any = None) -> Any:
    """Let the next runnable tasklet run; the current one goes to the end.

    Returns ``retval`` (by default the current tasklet), or what another
    tasklet put into our ``tempval`` meanwhile.
    """
    ts = _ts()
    cur = ts.current
    cur._tempval = cur if retval is None else retval
    rq = ts.rq
    if ts.timeout is not None and ts.timeout.soft_due(cur):
        ts.timeout.interrupt(ts, cur)
    elif len(rq) > 1:
        if ts.trap:
            raise RuntimeError("switch_trap")
        if rq[0] is cur:
            rq.rotate(-1)
        _switch(ts, cur, rq[0])
    return _take_tempval(cur)


def schedule_remove(retval: Any = None) -> Any:
    """Like :func:`schedule`, but the current tasklet leaves the run queue.

    It stays paused until someone inserts it again; returns the ``tempval``
    the inserting tasklet set (by default the current tasklet).
    """
    ts = _ts()
    cur = ts.current
    cur._tempval = cur if retval is None else retval
    if ts.trap:
        raise RuntimeError("switch_trap")
    _leave(ts, cur)
    return _take_tempval(cur)


def run(timeout: int = 0, threadblock: bool = False, soft: bool = False,
        ignore_nesting: bool = False, totaltimeout: bool = False) -> Optional[tasklet]:
    """Run the scheduler until the run queue is empty.

    The calling tasklet (usually main) leaves the run queue while the others
    run and comes back when none is left.  With ``timeout`` (in ticks, see
    docs/stackless.md) a tasklet that runs too long is interrupted, taken off
    the run queue and returned.  ``threadblock`` waits for other threads to
    hand over work instead of returning when the queue is empty.
    """
    ts = _ts()
    cur = ts.current
    rq = ts.rq
    if rq and rq[0] is cur:
        if len(rq) == 1:
            return None
    if ts.trap:
        raise RuntimeError("switch_trap")
    entry = [cur, bool(threadblock)]
    ts.watchdogs.append(entry)
    pre = None
    if timeout and timeout > 0:
        pre = _Preempt(ts, cur, int(timeout), soft, ignore_nesting, totaltimeout,
                       ts.timeout)
        pre.start()
    try:
        if rq and rq[0] is cur:
            rq.popleft()
            cur._scheduled = False
        if rq:
            _switch(ts, cur, rq[0])
        elif entry in ts.watchdogs:
            ts.watchdogs.remove(entry)
            rq.appendleft(cur)
            cur._scheduled = True
    finally:
        if entry in ts.watchdogs:
            ts.watchdogs.remove(entry)
        if not cur._scheduled:
            rq.appendleft(cur)
            cur._scheduled = True
        if pre is not None:
            pre.stop()
    v = cur._tempval
    if type(v) is bomb:
        cur._tempval = None
        v.raise_()
    if pre is not None:
        return pre.interrupted
    return None


def set_schedule_callback(callback: Optional[Callable]) -> Optional[Callable]:
    """Install ``callback(prev, next)``, called before every switch.

    Returns the previous callback.  ``None`` removes it.
    """
    global _schedule_cb
    if callback is not None and not callable(callback):
        raise TypeError("schedule callback must be callable")
    old, _schedule_cb = _schedule_cb, callback
    return old


def get_schedule_callback() -> Optional[Callable]:
    """Return the installed schedule callback, or None."""
    return _schedule_cb


def set_channel_callback(callback: Optional[Callable]) -> Optional[Callable]:
    """Install ``callback(channel, tasklet, sending, willblock)``.

    It is called on every channel action.  Returns the previous callback.
    """
    global _channel_cb
    if callback is not None and not callable(callback):
        raise TypeError("channel callback must be callable")
    old, _channel_cb = _channel_cb, callback
    return old


def get_channel_callback() -> Optional[Callable]:
    """Return the installed channel callback, or None."""
    return _channel_cb


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


def switch_trap(delta: int) -> int:
    """Add ``delta`` to this thread's switch trap level; return the old level.

    While the level is positive any tasklet switch raises ``RuntimeError``.
    """
    ts = _ts()
    old = ts.trap
    ts.trap += delta
    return old


def enable_softswitch(flag: Optional[bool]) -> bool:
    """Soft switching does not exist here: every switch is a hard switch.

    Always returns False, whatever ``flag`` is.
    """
    return False


class atomic:
    """Context manager that makes the current tasklet atomic while it runs."""

    __slots__ = ("_old", "_t")

    def __enter__(self) -> "atomic":
        t = self._t = getcurrent()
        self._old = t.set_atomic(True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._t.set_atomic(self._old)


# ----------------------------------------------------------------------------
# Channels
# ----------------------------------------------------------------------------

class channel:
    """A rendezvous point for tasklets: ``send`` waits for ``receive``.

    ``balance`` is the number of waiting senders (positive) or receivers
    (negative).  ``preference`` says who runs first after a rendezvous:
    -1 the receiver (default), 1 the sender, 0 nobody switches.
    """

    __slots__ = ("_queue", "_balance", "preference", "schedule_all",
                 "_closing", "__weakref__", "__dict__")

    def __init__(self) -> None:
        self._queue: deque = deque()
        self._balance = 0
        self.preference = -1
        self.schedule_all = False
        self._closing = False

    # -- waiting queue --------------------------------------------------------

    def _remove_waiter(self, t: tasklet) -> None:
        """Take ``t`` off this channel (killed or revived), fixing balance."""
        try:
            self._queue.remove(t)
        except ValueError:
            return
        if t._blocked > 0:
            self._balance -= 1
            t._tempval = None
        else:
            self._balance += 1
        t._blocked = 0
        t._channel = None

    # -- sending and receiving ------------------------------------------------

    def send(self, value: Any) -> None:
        """Send ``value``; block until a receiver takes it."""
        ts = _ts()
        cur = ts.current
        if _channel_cb is not None:
            _channel_cb(self, cur, True, self._balance >= 0)
        _lock.acquire()
        if self._balance < 0:
            target = self._queue.popleft()
            self._balance += 1
            target._blocked = 0
            target._channel = None
            target._tempval = value
            _lock.release()
            if (target._ts is ts and self.preference == -1 and not ts.trap
                    and not self.schedule_all):
                # the usual case, inlined: the receiver runs now, we go last
                rq = ts.rq
                rq.insert(1, target)
                rq.rotate(-1)
                target._scheduled = True
                _switch(ts, cur, target)
                v = cur._tempval
                if type(v) is bomb:
                    cur._tempval = None
                    v.raise_()
            else:
                self._wake(ts, cur, target, -1)
            return None
        if self._closing:
            _lock.release()
            raise ValueError(_CLOSED)
        if cur._block_trap:
            _lock.release()
            raise RuntimeError(_BLOCK_TRAP)
        self._queue.append(cur)
        self._balance += 1
        cur._blocked = 1
        cur._channel = self
        cur._tempval = value
        _lock.release()
        rq = ts.rq
        if len(rq) > 1 and not ts.trap:
            rq.popleft()                    # the usual case, inlined
            cur._scheduled = False
            _switch(ts, cur, rq[0])
        else:
            self._block(ts, cur)
        v = cur._tempval
        if type(v) is bomb:
            cur._tempval = None
            v.raise_()
        return None

    def receive(self) -> Any:
        """Receive a value; block until a sender provides one."""
        ts = _ts()
        cur = ts.current
        if _channel_cb is not None:
            _channel_cb(self, cur, False, self._balance <= 0)
        _lock.acquire()
        if self._balance > 0:
            target = self._queue.popleft()
            self._balance -= 1
            target._blocked = 0
            target._channel = None
            v = target._tempval
            target._tempval = None
            _lock.release()
            if target._ts is ts and self.preference != 1 and not self.schedule_all:
                ts.rq.append(target)        # the usual case, inlined
                target._scheduled = True
            else:
                self._wake(ts, cur, target, 1)
            if type(v) is bomb:
                v.raise_()
            return v
        if self._closing:
            _lock.release()
            raise ValueError(_CLOSED)
        if cur._block_trap:
            _lock.release()
            raise RuntimeError(_BLOCK_TRAP)
        self._queue.append(cur)
        self._balance -= 1
        cur._blocked = -1
        cur._channel = self
        _lock.release()
        rq = ts.rq
        if len(rq) > 1 and not ts.trap:
            rq.popleft()                    # the usual case, inlined
            cur._scheduled = False
            _switch(ts, cur, rq[0])
        else:
            self._block(ts, cur)
        v = cur._tempval
        cur._tempval = None
        if type(v) is bomb:
            v.raise_()
        return v

    def _block(self, ts: _ThreadState, cur: tasklet) -> None:
        """Block ``cur`` (already queued here) until another tasklet wakes it."""
        if ts.trap:
            with _lock:
                self._remove_waiter(cur)
            raise RuntimeError("switch_trap")
        try:
            _leave(ts, cur)
        except RuntimeError:
            with _lock:
                self._remove_waiter(cur)
            raise

    def _wake(self, ts: _ThreadState, cur: tasklet, target: tasklet,
              pref: int) -> None:
        """``target`` was unblocked by ``cur``: make it runnable, maybe run it."""
        tts = target._ts
        if tts is not ts:
            with tts.cond:
                tts.rq.append(target)
                target._scheduled = True
                tts.cond.notify()
            return
        rq = ts.rq
        if self.schedule_all:
            rq.append(target)
            target._scheduled = True
            if ts.trap:
                return
            if rq[0] is cur:
                rq.rotate(-1)
            _switch(ts, cur, rq[0])
            _take_tempval(cur)
        elif self.preference == pref and not ts.trap:
            if rq and rq[0] is cur:
                rq.insert(1, target)
                rq.rotate(-1)
            else:
                rq.appendleft(target)
            target._scheduled = True
            _switch(ts, cur, target)
            _take_tempval(cur)
        else:
            rq.append(target)
            target._scheduled = True

    def send_exception(self, exc: Any, *args: Any) -> None:
        """Send an exception: the receiver raises ``exc(*args)``."""
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            raise TypeError("send_exception: exception class expected")
        e = exc(*args)
        return self.send(bomb(exc, e, None))

    def send_throw(self, exc: Any, val: Any = None, tb: Any = None) -> None:
        """Send an exception like ``throw``: type, instance or (type, value, tb)."""
        e = _make_exception(exc, val)
        return self.send(bomb(type(e), e, tb))

    def send_sequence(self, seq: Any) -> int:
        """Send every item of ``seq``; return how many were sent."""
        n = 0
        send = self.send
        for item in seq:
            send(item)
            n += 1
        return n

    def __iter__(self) -> "channel":
        return self

    def __next__(self) -> Any:
        return self.receive()

    # -- attributes -----------------------------------------------------------

    @property
    def balance(self) -> int:
        """Waiting senders (positive) or receivers (negative)."""
        return self._balance

    @property
    def queue(self) -> Optional[tasklet]:
        """The first waiting tasklet (the others follow through ``.next``)."""
        q = self._queue
        return q[0] if q else None

    @property
    def closing(self) -> bool:
        """True after :meth:`close`."""
        return self._closing

    @property
    def closed(self) -> bool:
        """True when closing and nobody waits any more."""
        return self._closing and self._balance == 0

    def close(self) -> None:
        """Refuse further blocking operations; waiting tasklets may finish."""
        self._closing = True

    def open(self) -> None:
        """Undo :meth:`close`."""
        self._closing = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "preference":
            value = int(value)
            if value not in (-1, 0, 1):
                value = 1 if value > 0 else -1
        elif name == "schedule_all":
            value = bool(value)
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return "<%s.%s object at %#x balance=%d>" % (
            type(self).__module__, type(self).__qualname__, id(self), self._balance)

    # -- pickling -------------------------------------------------------------

    def __reduce__(self):
        d = getattr(self, "__dict__", None) or None
        return (_restore_channel, (type(self),),
                (self._balance, self.preference, self.schedule_all,
                 self._closing, list(self._queue), d))

    def __reduce_ex__(self, proto: int):
        return self.__reduce__()

    def __setstate__(self, state) -> None:
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


def _restore_channel(cls: type) -> channel:
    return cls.__new__(cls)


# ----------------------------------------------------------------------------
# Preemption: run(timeout)
# ----------------------------------------------------------------------------

from stackless._preempt import _Preempt  # noqa: E402  (needs the names above)
from stackless._coroutine import coroutine  # noqa: E402

# ----------------------------------------------------------------------------
# Dynamic module attributes: current, main, runcount, threads, stackless
# ----------------------------------------------------------------------------

stackless = sys.modules[__name__]


def __getattr__(name: str) -> Any:
    if name == "current":
        return getcurrent()
    if name == "main":
        return getmain()
    if name == "runcount":
        return getruncount()
    if name == "threads":
        return getthreads()
    raise AttributeError("module 'stackless' has no attribute %r" % name)


def _install_accel() -> bool:
    """Swap in the C versions of the hot paths (``_stackless_accel``).

    The Python code above stays the reference, as ``heapq`` is for
    ``_heapq``: the C functions handle the usual case exactly as it does and
    call it for everything else.  ``STACKLESS_ACCEL=0`` in the environment
    keeps the pure-Python code.  Returns whether the C versions are in use.
    """
    if _PYPY or os.environ.get("STACKLESS_ACCEL", "1") == "0":
        return False
    try:
        import _stackless_accel  # type: ignore[import-not-found]
    except ImportError:
        return False
    _stackless_accel.install(globals())
    global _forget_thread
    _forget_thread = _stackless_accel.forget_thread  # it caches each thread's scheduler
    return True


_accelerated = _install_accel()
