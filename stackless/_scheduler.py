"""The scheduler's public functions: the running tasklet, ``schedule()``,
``run()`` (with its watchdogs and timeouts), switch traps and ``atomic``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from stackless._common import _NOARG, _at_most, _c_long, _no_args, _one_arg, _own_module
from stackless._preempt import _Preempt
from stackless._switching import _leave, _recover, _switch, _take_tempval
from stackless._threads import _ts

if TYPE_CHECKING:
    from stackless._tasklet import tasklet

_own_module(globals())


def getcurrent(*_more: Any) -> tasklet:
    """Return the running tasklet of this thread."""
    if _more:
        raise _no_args("getcurrent", _more)
    return _ts().current


def getmain(*_more: Any) -> tasklet:
    """Return the main tasklet of this thread."""
    if _more:
        raise _no_args("getmain", _more)
    return _ts().main


def getruncount(*_more: Any) -> int:
    """Return the number of runnable tasklets, the running one included."""
    if _more:
        raise _no_args("getruncount", _more)
    ts = _ts()
    return len(ts.rq)


def getcurrentid(*_more: Any) -> int:
    """Return a number that identifies the running tasklet."""
    if _more:
        raise _no_args("getcurrentid", _more)
    return id(_ts().current)


def schedule(retval: Any = None, *_more: Any) -> Any:
    """Let the next runnable tasklet run; the current one goes to the end.

    Returns ``retval`` (by default the current tasklet), or what another
    tasklet put into our ``tempval`` meanwhile.
    """
    if _more:
        raise _at_most("schedule", 1, _more)
    ts = _ts()
    cur = ts.current
    cur._tempval = cur if retval is None else retval
    rq = ts.rq
    pre = ts.timeout
    # a spent soft timeout interrupts here even when nothing else is runnable
    if len(rq) > 1 or (pre is not None and pre.soft_due(cur)):
        if ts.trap:
            raise RuntimeError("switch_trap")
        try:
            if rq[0] is cur:
                rq.rotate(-1)
            _switch(ts, cur, rq[0])
        except BaseException:
            try:
                _recover(ts, cur)
            finally:   # again if a second signal landed in it (idempotent)
                _recover(ts, cur)
            raise
    return _take_tempval(cur)


def schedule_remove(retval: Any = None, *_more: Any) -> Any:
    """Like :func:`schedule`, but the current tasklet leaves the run queue.

    It stays paused until someone inserts it again; returns the ``tempval``
    the inserting tasklet set (by default the current tasklet).
    """
    if _more:
        raise _at_most("schedule_remove", 1, _more)
    ts = _ts()
    cur = ts.current
    cur._tempval = cur if retval is None else retval
    if ts.trap:
        raise RuntimeError("switch_trap")
    _leave(ts, cur)
    return _take_tempval(cur)


def run(timeout: int = 0, threadblock: bool = False, soft: bool = False,
        ignore_nesting: bool = False, totaltimeout: bool = False,
        *_more: Any) -> Optional[tasklet]:
    """Run the scheduler until the run queue is empty.

    The calling tasklet (usually main) leaves the run queue while the others
    run and comes back when none is left.  With ``timeout`` (in ticks, see
    docs/stackless.md) a tasklet that runs too long is interrupted, taken off
    the run queue and returned.  ``threadblock`` waits for other threads to
    hand over work instead of returning when the queue is empty.
    """
    if _more:
        raise _at_most("run", 5, _more)
    # converted as Stackless converts them: TypeError for a str, the error
    # of a raising __int__ (docs/stackless.md)
    timeout = _c_long(timeout)
    threadblock, soft, ignore_nesting, totaltimeout = (
        _c_long(threadblock, 32), _c_long(soft, 32), _c_long(ignore_nesting, 32),
        _c_long(totaltimeout, 32))
    ts = _ts()
    cur = ts.current
    rq = ts.rq
    if rq and rq[0] is cur:
        if len(rq) == 1:
            return None
    if ts.trap:
        raise RuntimeError("switch_trap")
    entry = [cur, bool(threadblock)]
    pre = None
    try:
        # (inside: an exception that lands right after the append finds
        # the entry, and _end_run takes it off)
        ts.watchdogs.append(entry)
        # Inside a run(timeout), the outermost one keeps counting and is the
        # one interrupted (as in Stackless): a nested run() only waits.
        if timeout and timeout > 0 and ts.timeout is None:
            pre = _Preempt(ts, cur, int(timeout), soft, ignore_nesting, totaltimeout,
                           ts.timeout)
            pre.start()
        if rq and rq[0] is cur:
            del rq[0]
            cur._scheduled = False
        if rq:
            _switch(ts, cur, rq[0])
    finally:
        try:
            _end_run(ts, cur, entry)
        except BaseException:
            # a second signal landed at its entry, before it did anything
            # (S4): again (idempotent), and that exception goes on
            _end_run(ts, cur, entry)
            raise
        finally:
            if pre is not None:
                try:
                    pre.stop()
                except BaseException:
                    # a signal landed at its entry: again (idempotent), or
                    # the thread would stay timed, its tick counter on
                    pre.stop()
                    raise
    _take_tempval(cur)
    if pre is not None:
        return pre.interrupted
    return None


def _end_run(ts: Any, cur: tasklet, entry: list) -> None:
    """The end of a ``run()`` whose watchdog entry is ``entry``, whatever
    surfaced in it: ``cur`` runs again, first in the run queue."""
    ts.current = cur
    ts.launch = None    # (left by a switch that failed: see _recover)
    rq = ts.rq
    wds = ts.watchdogs
    for k in range(len(wds)):
        if wds[k] is entry:
            # the run()s nested in this one (woken by hand) end too
            for inner in wds[k + 1:]:
                t = inner[0]
                if t._alive and not t._scheduled and not t._blocked:
                    t._scheduled = True
                    rq.append(t)
            del wds[k:]
            break
    if not cur._scheduled:
        cur._scheduled = True
        rq.appendleft(cur)


def switch_trap(delta: int = 0, *_more: Any) -> int:
    """Add ``delta`` to this thread's switch trap level; return the old level.

    While the level is positive any tasklet switch raises ``RuntimeError``.
    """
    if _more:
        raise _at_most("switch_trap", 1, _more)
    ts = _ts()
    old = ts.trap
    ts.trap += delta
    return old


class atomic:
    """Context manager that makes the current tasklet atomic while it runs."""

    __slots__ = ("_old", "_t")

    def __enter__(self) -> "atomic":
        t = self._t = getcurrent()
        self._old = t.set_atomic(True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._t.set_atomic(self._old)
