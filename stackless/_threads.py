"""Threads: each thread's scheduler state, and what happens when a thread
(or the interpreter) ends while it still has tasklets."""

from __future__ import annotations

import _thread
import atexit
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Optional

from stackless._common import _at_most, _c_ulong, _get_ident, _no_args, _own_module
from stackless._lifetime import (_alive_registry, _doomed, _live_tasklets, _register,  # noqa: F401
                                 _unlink, _unregister)

if TYPE_CHECKING:
    from stackless._preempt import _Preempt
    from stackless._tasklet import tasklet

_own_module(globals())


class _ThreadState:
    """The scheduler of one thread: its main tasklet, run queue and watchdogs."""

    __slots__ = ("thread_id", "main", "current", "rq", "watchdogs", "wake",
                 "trap", "idle", "timeout", "launch", "tasklet_tracing",
                 "pending", "ended", "alive", "__weakref__")

    def __init__(self, thread_id: Optional[int] = None) -> None:
        # another thread's id when get_thread_info() asks about a thread
        # that has not used stackless yet
        self.thread_id = _get_ident() if thread_id is None else thread_id
        # True once the thread ended: its tasklets report thread_id -1
        self.ended = False
        # the thread's registry of live tasklets, _alive_registry[thread_id],
        # from its first registration until the thread ends: found here
        # without a lookup by thread id (stackless/_lifetime.py)
        self.alive: Optional[dict] = None
        # rq holds the runnable tasklets; when the running tasklet is
        # scheduled it is rq[0].
        self.rq: deque = deque()
        self.watchdogs: list = []   # [tasklet, threadblock] of nested run()s
        # A thread whose tasklets all wait sleeps on this lock (held while
        # it is armed); another thread that hands it work releases it.  A
        # lock, not a threading.Condition: its acquire and release are C
        # calls, so neither run(timeout) nor a signal handler can interrupt
        # them halfway and leave it held (docs/design.md).
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.trap = 0
        self.idle = False
        self.timeout: Optional[_Preempt] = None
        self.launch: Optional[tasklet] = None
        # True once a tasklet's trace_function or profile_function has been
        # assigned: from then on every switch swaps them (_tracing_out/in)
        self.tasklet_tracing = False
        # an exception for main that landed where it could not be raised
        # (after a dying tasklet switched away, see _bootstrap)
        self.pending: Optional[BaseException] = None
        from stackless._tasklet import tasklet  # it needs _ts(): import late
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


def _wake(ts: _ThreadState) -> None:
    """Wake the thread of ``ts`` if it sleeps waiting for work."""
    try:
        ts.wake.release()
    except RuntimeError:
        pass        # released already: it will not sleep before it looks



def _new_ts() -> _ThreadState:
    ts = _states.get(_get_ident())
    if ts is None or ts.ended or ts is getattr(_local, "ts", None):
        ts = _ThreadState()     # else: made by get_thread_info(), adopt it
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
    # not current_thread(): in a thread that threading did not start, it
    # would leave a _DummyThread behind
    th = threading._active.get(ts.thread_id)  # type: ignore[attr-defined]
    if th is None:
        return
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


def _kill_all(ts: _ThreadState) -> None:
    """Kill every live tasklet of this thread (called from its main tasklet)."""
    for _ in range(3):
        for t in _live_tasklets(ts.thread_id):
            if t._alive and not t._is_main:
                try:
                    t.kill()
                except BaseException:
                    pass
        if not any(t._alive for t in _live_tasklets(ts.thread_id)):
            break
    _orphan_all(ts)


def _orphan_all(ts: _ThreadState) -> None:
    """Forget the tasklets of a thread that ended: they report thread_id -1."""
    ts.ended = True
    for t in _live_tasklets(ts.thread_id):
        t._orphaned = True
        t._scheduled = False
        t._alive = False
        _unlink(t)
    _alive_registry.pop(ts.thread_id, None)
    ts.alive = None
    _doomed.pop(ts.thread_id, None)
    ts.rq.clear()


@atexit.register
def _kill_at_exit() -> None:
    ts = getattr(_local, "ts", None)
    if ts is not None and ts.current is ts.main:
        _kill_all(ts)


def get_thread_info(thread_id: int = -1, flags: int = 0, *_more: Any) -> tuple:
    """Return ``(main, current, runcount)`` for a thread's scheduler
    (this thread's for -1 or 0)."""
    if _more:
        raise _at_most("get_thread_info", 2, _more)
    if thread_id != -1 or type(thread_id) is not int:
        thread_id = _c_ulong("get_thread_info", 1, thread_id)
    _c_ulong("get_thread_info", 2, flags, check=False)
    if thread_id in (-1, 0):
        thread_id = _get_ident()
    ts = _ts_of(thread_id)
    if ts is None:
        raise RuntimeError("Thread id not found")
    return (ts.main, ts.current, len(ts.rq))


def _ts_of(thread_id: int) -> Optional[_ThreadState]:
    """The scheduler of a live thread, made now if the thread has none yet;
    None for a thread that does not exist (any more)."""
    if thread_id == _get_ident():
        return _ts()
    if thread_id not in sys._current_frames():
        return None
    ts = _states.get(thread_id)
    if ts is not None and not ts.ended:
        return ts
    # the thread adopts it when it first uses stackless (_new_ts)
    return _states.setdefault(thread_id, _ThreadState(thread_id))


def getthreads(*_more: Any) -> list:
    """Return the ids of all threads (that have a running Python thread state)."""
    if _more:
        raise _no_args("getthreads", _more)
    ids = {t.ident for t in threading.enumerate()}
    ids.update(_states)
    ids.add(_get_ident())
    return sorted(i for i in ids if i is not None)

