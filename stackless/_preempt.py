"""Preemptive scheduling for ``stackless.run(timeout)``.

A tick is one trace event (a line executed or a function called) of
``sys.settrace``.  The trace function is installed only for the duration of
a ``run(timeout)`` call, so code that never passes a timeout pays nothing.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from stackless._common import _OWN_GLOBALS, _index, _own_module
from stackless._switching import _make_runnable_first, _switch, _take_tempval

_own_module(globals())


class _Preempt:
    """The tick budget of one ``run(timeout)`` call."""

    __slots__ = ("ts", "watchdog", "timeout", "soft", "ignore_nesting",
                 "total", "outer", "ticks", "interrupted", "old_trace",
                 "fired", "__weakref__")

    def __init__(self, ts: Any, watchdog: Any, timeout: int, soft: bool,
                 ignore_nesting: bool, total: bool, outer: Optional["_Preempt"]) -> None:
        self.ts = ts
        self.watchdog = watchdog
        self.timeout = timeout
        self.soft = bool(soft)
        self.ignore_nesting = bool(ignore_nesting)
        self.total = bool(total)
        self.outer = outer
        self.ticks = 0
        self.interrupted = None
        self.old_trace = None
        self.fired = False

    def start(self) -> None:
        """Install the tick counter for this thread."""
        self.old_trace = sys.gettrace()
        self.ts.timeout = self
        sys.settrace(self._global_trace)
        self._arm(sys._getframe(1))

    def stop(self) -> None:
        """Remove the tick counter and restore the previous trace function."""
        self.fired = True
        self.ts.timeout = self.outer
        sys.settrace(self.old_trace)

    def resumed(self, t: Any) -> None:
        """Tasklet ``t`` runs again: give it a fresh budget and trace its frames."""
        if not self.total:
            self.ticks = 0
        # from our caller down (_arm skips the package's own frames): the C
        # switch calls us straight from the user's frame, which a C-started
        # tasklet may have no frame below
        self._arm(sys._getframe(1))

    def _arm(self, f: Any) -> None:
        # Frames that were already running before the trace function was
        # installed get no line events unless their f_trace is set.
        local = self._local_trace
        while f is not None:
            if id(f.f_globals) not in _OWN_GLOBALS:
                tr = f.f_trace
                if tr is None or type(getattr(tr, "__self__", None)) is _Preempt:
                    f.f_trace = local
            f = f.f_back

    def _global_trace(self, frame: Any, event: str, arg: Any) -> Any:
        if id(frame.f_globals) in _OWN_GLOBALS:
            return None
        return self._local_trace(frame, event, arg)

    def _local_trace(self, frame: Any, event: str, arg: Any) -> Any:
        # Always count for the innermost live run(timeout) of the thread,
        # whichever _Preempt installed this frame's f_trace.
        pre = self.ts.timeout
        if pre is None:
            return None
        pre._tick()
        return pre._local_trace

    def _tick(self) -> None:
        self.ticks += 1
        if self.ticks < self.timeout or self.soft:
            return
        ts = self.ts
        cur = ts.current
        if cur._atomic or cur is self.watchdog or ts.timeout is not self:
            return
        # Switch with the interpreter's "inside a trace function" state
        # reset, so that the tasklets that run meanwhile are traced.
        sys.call_tracing(self.interrupt, (ts, cur))

    def soft_due(self, cur: Any) -> bool:
        """True when a soft timeout has expired and ``cur`` may be interrupted."""
        return (self.soft and not self.fired and self.ticks >= self.timeout
                and not cur._atomic and cur is not self.watchdog)

    def soft_interrupt(self, ts: Any) -> Any:
        """At a switch after the soft budget ran out: the waiting ``run()``
        runs first (and returns None); the run queue stays as it is."""
        self.fired = True
        _make_runnable_first(ts, self.watchdog)
        return self.watchdog

    def interrupt(self, ts: Any, cur: Any) -> None:
        """Take ``cur`` off the run queue and resume the waiting ``run()``."""
        self.fired = True
        self.interrupted = cur
        rq = ts.rq
        if cur._scheduled:
            i = _index(rq, cur)
            if i >= 0:
                del rq[i]
            cur._scheduled = False
        _make_runnable_first(ts, self.watchdog)
        _switch(ts, cur, self.watchdog)
        _take_tempval(cur)
