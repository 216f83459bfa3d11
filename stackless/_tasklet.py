"""Tasklets: binding, scheduling, killing and throwing into them, and their
attributes (their contexts: stackless/_contexts.py)."""

from __future__ import annotations

import sys
from collections import deque
from typing import Any, Optional

from stackless import _contexts, _frames, _pickling, _transplant
from stackless._common import (TaskletExit, _NOARG, _PYPY, _accel_module, _at_least_one,
                               _at_most, _get_ident, _index, _make_exception, _may_switch,
                               _no_args, _one_arg, _own_module, _parse, bomb)
from stackless._switching import _recover, _switch, _take_tempval
from stackless._threads import (_ThreadState, _register, _states, _ts, _ts_of, _unregister,
                                _wake)

_own_module(globals())

# bind()'s parameters, which tasklet() takes too
_BIND = ("func", "args", "kwargs")


class _TaskletFlags:
    """The slots of a tasklet that hold only True/False, ints or None.

    They live in a base class of their own so that the accelerator can tell
    the cyclic garbage collector to skip them (no cycle can run through
    them): with thousands of live tasklets, walking every slot at every
    collection was a large part of the collector's time.
    """

    __slots__ = ("_blocked", "_scheduled", "_alive", "_started", "_is_main",
                 "_atomic", "_ignore_nesting", "_block_trap", "_orphaned",
                 "_unrestorable", "_base")


# With the accelerator, its C type with the same names, TaskletFlags, is the
# base instead: the flags that only this code and its tasklet parts use are
# C chars there, which no tasklet's creation or end counts references of
# (src/stackless_flags.c)
_accel = _accel_module()
_FlagsBase: type = _TaskletFlags if _accel is None else _accel.TaskletFlags


class tasklet(_FlagsBase):  # type: ignore[valid-type,misc]
    """A microthread: a callable that runs on its own stack.

    ``tasklet(func)(*args, **kwargs)`` binds the function and its arguments
    and inserts the tasklet into the scheduler's run queue.
    """

    __slots__ = ("_func", "_args", "_kwargs", "_cont", "_ts", "_tempval",
                 "_channel", "_context", "_trace", "_profile") + (
        # (the accelerator's base lists the weak references itself; PyPy's
        # types have no __weakrefoffset__)
        () if getattr(_FlagsBase, "__weakrefoffset__", 0) else ("__weakref__",)) + (
        # PyPy's switch keeps a suspended tasklet's frame and context here;
        # CPython reads them from its suspended stack (16 B less a tasklet)
        ("_ctx", "_frame") if _PYPY else ())

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
        if _PYPY:
            self._ctx = None
            self._frame = None
        self._orphaned = False
        self._unrestorable = False
        self._trace = None
        self._profile = None
        # with the C _bootstrap, the id of the frame below the tasklet's own
        self._base = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "tasklet":
        self = object.__new__(cls)
        self._init_fields(_ts())
        return self

    def __init__(self, *args: Any, **kw: Any) -> None:
        """``tasklet(func=None, args=None, kwargs=None)``: ``bind()`` them."""
        func, args, kwargs = _parse("bind", _BIND, args, kw)
        if func is not None or args is not None or kwargs is not None:
            self.bind(func, args, kwargs)

    # -- binding ------------------------------------------------------------

    def bind(self, *args: Any, **kw: Any) -> "tasklet":
        """``bind(func=None, args=None, kwargs=None)``: bind the tasklet to
        ``func`` and optionally to its arguments.

        With ``args`` or ``kwargs`` the tasklet becomes alive but paused (not
        scheduled).  ``bind(func)`` alone makes it not alive, ``func`` waiting
        in ``tempval`` for ``setup()``.  ``bind(None)`` with no arguments
        unbinds a tasklet that is not running, making it dead and reusable.
        """
        func, args, kwargs = _parse("bind", _BIND, args, kw)
        if self is self._ts.current and not self._orphaned:
            raise RuntimeError("can't (re)bind the current tasklet")
        if self._scheduled or self._blocked:
            raise RuntimeError("tasklet is scheduled")
        if self._started and self._alive:
            raise RuntimeError("can't (re)bind a tasklet that has started; kill() it")
        if func is None and args is None and kwargs is None:
            self._unbind()
            return self
        if func is not None and not callable(func):
            raise TypeError("tasklet function must be a callable or None")
        if func is not None:
            self._func = func
            self._context = _contexts.new_context()
            self._unrestorable = False
            if args is None and kwargs is None:
                # Stackless keeps the function in tempval until setup()
                if self._alive:
                    _unregister(self)
                    self._alive = False
                self._args = self._kwargs = None
                self._tempval = func
                return self
        if args is not None or kwargs is not None:
            if self._func is None:
                raise RuntimeError("the tasklet has no function to bind arguments to")
            self._args = tuple(args) if args is not None else ()
            self._kwargs = dict(kwargs) if kwargs is not None else {}
            if self._context is None:
                self._context = _contexts.new_context()
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
        if self._ts.ended:
            raise RuntimeError("Target thread isn't initialized")
        if not self._alive:
            self._alive = True
            self._started = False
            self._cont = None
            self._tempval = None
            if self._ts.thread_id != _get_ident():
                self._ts = _ts()
            _register(self)

    def setup(self, *args: Any, **kwargs: Any) -> "tasklet":
        """Bind the arguments and insert the tasklet into the run queue."""
        if self._alive:
            raise RuntimeError("tasklet is alive")
        if self._func is None:
            raise RuntimeError("the tasklet was not bound to a function")
        self._args = args
        self._kwargs = kwargs or None       # (none: 64 B less per tasklet)
        if self._context is None:
            self._context = _contexts.new_context()
        self._make_alive()
        self.insert()
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "tasklet":
        """Same as :meth:`setup`."""
        return self.setup(*args, **kwargs)

    # -- scheduling ---------------------------------------------------------

    def insert(self, *_more: Any) -> "tasklet":
        """Append the tasklet to the end of its thread's run queue."""
        if _more:
            raise _no_args("insert", _more)
        if self._ts.ended:
            raise RuntimeError("Target thread isn't initialized")
        if self._blocked:
            raise RuntimeError("You cannot run a blocked tasklet")
        if not self._alive:
            raise RuntimeError("You cannot run an unbound(dead) tasklet")
        if not self._scheduled:
            ts = self._ts
            self._scheduled = True
            ts.rq.append(self)
            if ts.thread_id != _get_ident():
                _wake(ts)
        return self

    def remove(self, *_more: Any) -> "tasklet":
        """Take the tasklet out of the run queue: it becomes paused."""
        if _more:
            raise _no_args("remove", _more)
        if self._blocked:
            raise RuntimeError("You cannot remove a blocked tasklet.")
        ts = self._ts
        if self is ts.current:
            raise RuntimeError("The current tasklet cannot be removed.")
        if self._scheduled:
            i = _index(ts.rq, self)
            if i >= 0:
                del ts.rq[i]
            self._scheduled = False
        return self

    def run(self, *_more: Any) -> Any:
        """Switch to this tasklet now; the current one stays scheduled."""
        if _more:
            raise _no_args("run", _more)
        return self._run(False)

    def switch(self, *_more: Any) -> Any:
        """Switch to this tasklet now and pause the current tasklet."""
        if _more:
            raise _no_args("switch", _more)
        return self._run(True)

    def _run(self, pause: bool) -> Any:
        if self._ts.ended:
            raise RuntimeError("tasklet has no thread")
        if self._blocked:
            raise RuntimeError("You cannot run a blocked tasklet")
        if not self._alive:
            raise RuntimeError("You cannot run an unbound(dead) tasklet")
        ts = _ts()
        if self._ts is not ts:
            if pause:
                raise RuntimeError("can't switch to a different thread.")
            self._run_remote()
            return None
        cur = ts.current
        if self is cur:
            return None
        if ts.trap:
            raise RuntimeError("switch_trap")
        rq = ts.rq
        if not self._scheduled:
            self._scheduled = True
            rq.append(self)
        if pause and rq[0] is cur:
            del rq[0]
            cur._scheduled = False
        try:
            i = _index(rq, self)
            if i:
                rq.rotate(-i)
            _switch(ts, cur, self)
        except BaseException:
            try:
                _recover(ts, cur)
            finally:   # again if a second signal landed in it (idempotent)
                _recover(ts, cur)
            raise
        return _take_tempval(cur)

    def _run_remote(self) -> None:
        """``run()`` of a tasklet of another thread: it runs next there."""
        ts = self._ts
        rq = ts.rq
        i = _index(rq, self) if self._scheduled else -1
        # -- transaction
        if i >= 0:
            del rq[i]
        self._scheduled = True
        # right after that thread's running tasklet, if it is scheduled
        rq.insert(1 if rq and rq[0] is ts.current else 0, self)
        # -- end of transaction
        _wake(ts)

    def kill(self, pending: bool = False, *_more: Any) -> None:
        """Raise :class:`TaskletExit` in the tasklet (see :meth:`throw`)."""
        if _more:
            raise _at_most("kill", 1, _more)
        if not self._alive:
            return None
        return self.throw(TaskletExit, None, None, pending)

    def raise_exception(self, exc_class: Any = _NOARG, *args: Any) -> None:
        """Raise ``exc_class(*args)`` in the tasklet and run it now."""
        if exc_class is _NOARG:
            raise _at_least_one("raise_exception")
        return self.throw(exc_class, args if args else None, None, False)

    def throw(self, exc: Any = _NOARG, val: Any = None, tb: Any = None,
              pending: bool = False, *_more: Any) -> None:
        """Raise an exception in the tasklet.

        A blocked tasklet is first taken off its channel.  Unless ``pending``
        is true the tasklet runs immediately (the current tasklet stays
        scheduled); otherwise it is only made runnable.
        """
        if _more:
            raise _at_most("throw", 4, _more)
        if exc is _NOARG:
            raise TypeError("throw() missing required argument 'exc' (pos 1)")
        e = _make_exception(exc, val)
        if tb is not None:
            e = e.with_traceback(tb)
        if not self._alive:
            if isinstance(e, TaskletExit):
                return None
            if self._ts.ended:
                raise RuntimeError("tasklet has no thread")
            raise RuntimeError("You cannot throw to a dead tasklet")
        ts = _ts()
        if self is ts.current:
            raise e
        b = bomb(type(e), e, tb)
        if self._blocked:
            self._channel._remove_waiter(self)
        self._tempval = b
        if self._ts is not ts:
            self.insert()
            return None
        if pending or not _may_switch():
            # A collection of this thread allows no switch (a __del__ or a
            # gc callback): the tasklet gets the exception when it next
            # runs, as a channel operation there pairs without switching
            # (docs/stackless.md); raising instead would leave it queued
            # with the bomb and the caller told that nothing happened.
            if not self._scheduled:
                # the flag first: the C call ends the transaction (an
                # exception right after it finds the tasklet queued once)
                self._scheduled = True
                ts.rq.append(self)
            return None
        self._run(False)
        return None

    def set_atomic(self, flag: Any = _NOARG, *_more: Any) -> bool:
        """Set the atomic flag; return the old value."""
        if flag is _NOARG or _more:
            raise _one_arg("set_atomic", flag, _more)
        old = self._atomic
        self._atomic = bool(flag)
        return old

    def set_ignore_nesting(self, flag: Any = _NOARG, *_more: Any) -> bool:
        """Set the ignore_nesting flag; return the old value."""
        if flag is _NOARG or _more:
            raise _one_arg("set_ignore_nesting", flag, _more)
        old = self._ignore_nesting
        self._ignore_nesting = bool(flag)
        return old

    def bind_thread(self, thread_id: Optional[int] = None, *_more: Any) -> None:
        """Move a tasklet that is not runnable to another thread.

        A started one (paused or blocked) moves with its frames, when they
        can move (stackless/_transplant.py): it resumes in that thread.
        """
        if _more:
            raise _at_most("bind_thread", 1, _more)
        if thread_id is None or thread_id == -1:
            thread_id = _get_ident()
        elif not isinstance(thread_id, int):
            raise TypeError("thread_id must be an integer")
        elif thread_id < 0:
            raise OverflowError("can't convert negative value to unsigned int")
        elif thread_id >= 1 << 64:
            raise OverflowError("Python int too large to convert to C unsigned long")
        if self._ts.thread_id == thread_id and not self._orphaned and not self._ts.ended:
            return
        if self._scheduled:
            raise RuntimeError("can't (re)bind a runnable tasklet")
        ts = _ts_of(thread_id)
        if ts is None:
            raise ValueError("bad thread")
        if self._started and self._alive:
            if self._is_main or self is self._ts.current:
                raise RuntimeError(_transplant.C_STATE)
            _transplant.move(self, ts)
            return
        if self._alive:
            _unregister(self)
        self._ts = ts
        self._cont = None
        self._orphaned = False
        if self._alive:
            _register(self)

    # -- contexts (stackless/_contexts.py) ----------------------------------

    set_context = _contexts.set_context
    _context_place = _contexts.context_place
    _live_context = _contexts.live_context
    context_run = _contexts.context_run
    context_id = property(_contexts.context_id, doc="An id of the tasklet's context object.")

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
            return self.is_current and _pickling.running_restorable(self)
        if not self._alive:
            return True
        if self._unrestorable:
            return False
        if self.is_current:
            return _pickling.running_restorable(self)
        return not self._started or _pickling.frames_restorable(self)

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
        return self._ts.current is self and not self._orphaned and not self._ts.ended

    @property
    def thread_id(self) -> int:
        """The id of the thread the tasklet belongs to; -1 after it ended."""
        return -1 if self._orphaned or self._ts.ended else self._ts.thread_id

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
        i = _index(q, self) + 1
        if i < len(q):
            return q[i]
        return q[0] if q is self._ts.rq else None

    @property
    def prev(self) -> Optional["tasklet"]:
        """The previous tasklet in the run queue or channel queue."""
        q = self._queue()
        if q is None:
            return None
        i = _index(q, self)
        if i:
            return q[i - 1]
        return q[-1] if q is self._ts.rq else None

    def _queue(self) -> Optional[deque]:
        if self._blocked:
            return self._channel._queue
        if self._scheduled:
            return self._ts.rq
        return None

    # (stackless/_frames.py)
    frame = property(_frames.frame)
    recursion_depth = property(_frames.recursion_depth)

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
        if not self._alive:
            raise RuntimeError("tasklet is not alive")
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
        if not self._alive:
            raise RuntimeError("tasklet is not alive")
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
    # -- pickling (stackless/_pickling.py) ----------------------------------

    __reduce__ = _pickling.tasklet_reduce
    __reduce_ex__ = _pickling.reduce_ex
    __setstate__ = _pickling.tasklet_setstate
