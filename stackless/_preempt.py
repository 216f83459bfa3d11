"""Preemptive scheduling for ``stackless.run(timeout)``.

Two ways to spend a budget of ``timeout`` ticks (docs/stackless.md,
*Preemption*; docs/design.md says why):

* **CPU time** (``timeout >= _TIMER_MIN``, CPython, any thread): the
  budget is ``timeout * _NS_PER_TICK`` nanoseconds of the thread's CPU time,
  watched by ``_continuation``'s ticker (src/preempt.c): once it is spent,
  the next function entry or backward jump installs a C trace function,
  whose first event calls :meth:`_Preempt._expired`.  The timed code runs
  untraced, at full speed.
* **Counted events** (smaller budgets, CPython): ticks are events of the
  timed code, counted in C (src/preempt_count.c): on 3.12+ function starts
  and jumps (``sys.monitoring``, see ``_TOOLS``; a jump back weighs
  by the length of its loop), on 3.11 trace events (a line, call, return
  or exception) of a C trace function.  Python
  runs only once the budget is spent, as with CPU time.  The ticker is also
  armed, as a backstop for code that makes no event (a loop on one line
  without calls, 3.11).
* **Trace events** (PyPy, more threads at once than the ticker has slots
  for): a tick is one trace event of a ``sys.settrace`` function in
  Python, with the ticker (if any) as the backstop.

Either way the interruption itself happens from a trace function, at the
first trace event of the user's code once the budget is spent: with CPU
time, from the C trace function's event if it is the user's (else
:meth:`_Preempt._expired` installs the tick counter only then).  The trace
function exists only during a ``run(timeout)`` call, so code that never
passes a timeout pays nothing.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from stackless._common import _OWN_GLOBALS, _PYPY, _index, _may_switch, _own_module
from stackless._nesting import nested, still_nested
from stackless._switching import _make_runnable_first, _switch, _take_tempval

_own_module(globals())

# Budgets of at least this many ticks are measured in CPU time: a shorter
# one (under 100 us) is below what a timer thread resolves reliably, and
# the interruption costs about as much as the code it would let run.
_TIMER_MIN = 5000
# About one trace event (a line) of simple code with CPython 3.11 on a
# 2020s x86-64 core, so that both ways give similar slices.
_NS_PER_TICK = 20
# The least CPU time after which trace-event budgets get the backstop.
_BACKSTOP_NS = 1000000

# the trace events (PyTrace_LINE, PyTrace_OPCODE) that come before an
# instruction: a tasklet interrupted there can move to another thread or be
# pickled (it resumes at that instruction); at the others it could not
_LINE = 2
_BEFORE_INSTRUCTION = frozenset((_LINE, 7))

_timer_arm: Optional[Callable[..., bool]] = None
_timer_disarm: Optional[Callable[[], None]] = None
_monitor: Optional[Callable[[Any, tuple], bool]] = None
_unmonitor: Optional[Callable[[Any], None]] = None
_local_events: Optional[Callable[[Any, Any], None]] = None
_monitoring: Optional[Callable[[], "tuple[int, int]"]] = None
if not _PYPY:
    from _continuation import _preempt_arm as _timer_arm  # type: ignore[attr-defined]
    from _continuation import _preempt_disarm as _timer_disarm  # type: ignore[attr-defined]
    # src/preempt_monitor.c: the process's sys.monitoring tool, shared by
    # its threads, kept in C so that no thread switch splits a step
    from _continuation import _preempt_monitor as _monitor  # type: ignore[attr-defined]
    from _continuation import _preempt_unmonitor as _unmonitor  # type: ignore[attr-defined]
    from _continuation import _preempt_local as _local_events  # type: ignore[attr-defined]
    from _continuation import _preempt_monitoring as _monitoring  # type: ignore[attr-defined]

# sys.monitoring (3.12+): the tool ids no convention claims (0-2 and 5 are
# the debugger's, coverage's, the profiler's and the optimizer's).  Function
# starts and jumps (PY_START, JUMP) bound how long code runs without one,
# as a tick must; counting them costs about a third of the code's time
# (docs/performance.md), where a trace function of any kind costs most of
# it (3.12+ turn each line into a call).  The events are on while any
# thread of the process counts, so other threads' code pays the same
# meanwhile.  Switching them costs the re-instrumentation of all the code
# that runs next, so they stay on after the last counted budget until
# src/preempt_monitor.c has seen many events that no budget wanted: code
# that never passes a small timeout pays nothing.  Where no id is free the
# counting uses a C trace function (as on 3.11).
_TOOLS = (4, 3)


def _in_finalizer(f: Any) -> bool:
    """PyPy does not tell whether its collector is running a finalizer
    (CPython: ``_may_switch()``): a ``__del__`` frame on the stack stands
    for it, so that the interrupt waits until the finalizer is over."""
    while f is not None:
        if f.f_code.co_name == "__del__":
            return True
        f = f.f_back
    return False


class _Preempt:
    """The tick budget of one ``run(timeout)`` call."""

    __slots__ = ("ts", "watchdog", "timeout", "soft", "ignore_nesting",
                 "total", "outer", "ticks", "interrupted", "old_trace",
                 "fired", "timer", "armed", "counted", "monitored", "traced", "opframe", "opcode",
                 "nest_entry", "__weakref__")

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
        self.timer = False          # C says when the budget is spent (else: trace events)
        self.armed = False          # the ticker watches this run
        self.counted = False        # C counts events (else, with timer: CPU time)
        self.monitored = False      # ... fed by sys.monitoring (else: a C trace function)
        self.traced = False         # our trace function is installed
        self.opframe = None         # the frame we asked for opcode events
        self.opcode = None          # the code we asked sys.monitoring for line events
        self.nest_entry = None      # where the running tasklet's nesting began

    def start(self) -> None:
        """Start counting this thread's ticks."""
        self.old_trace = sys.gettrace()
        self.ts.timeout = self
        if _timer_arm is None:
            pass
        elif self.timeout >= _TIMER_MIN:
            self.armed = bool(_timer_arm(self._timer_ns(True), self._expired))
        else:
            _monitor(self, _TOOLS)      # (sets self.monitored)
            self.armed = self.counted = self._count()
            if not self.armed:
                _unmonitor(self)
        self.timer = self.armed
        if not self.timer:
            self._trace(sys._getframe(1))

    def _count(self) -> bool:
        # (re)arm the counted budget, with the ticker as its backstop
        return bool(_timer_arm(self._timer_ns(False), self._expired, self.timeout,
                               self._spent if self.monitored else True))

    def _spent(self, code: Any) -> None:
        # (sys.monitoring, src/preempt_count.c) the budget is spent in ``code``:
        # its next line or instruction calls _expired
        self._no_opcodes()
        _local_events(self, code)   # (sets self.opcode)

    def _timer_ns(self, big: bool) -> int:
        # Counting events, the ticker is only a backstop for code that makes
        # none (a one-line loop): far later than the budget would be spent
        # even with the counting's cost.
        ns = self.timeout * _NS_PER_TICK
        return ns if big else max(16 * ns, _BACKSTOP_NS)

    def stop(self) -> None:
        """Stop counting and restore the previous trace function."""
        self.fired = True
        self.nest_entry = None
        self.ts.timeout = self.outer
        if _timer_disarm is not None:
            # (whether or not start() got to note the arming: an exception
            # may land right after it)
            _timer_disarm()
        self._no_opcodes()
        # Each flag is cleared only once what it stands for is undone: an
        # exception that lands in between (a signal handler's, at a call's
        # return or a function's entry) makes run() call stop() again,
        # which then finishes the job.
        if self.monitored:
            _unmonitor(self)        # (clears it)
        if self.traced or self.counted:
            # (counted: a tasklet's sys.settrace() while it ran is not the
            # caller's, as the Python tick counter, which it replaced,
            # always made sure)
            if sys.gettrace() is not self.old_trace:
                sys.settrace(self.old_trace)
            self.traced = False

    def resumed(self, t: Any) -> None:
        """Tasklet ``t`` runs again: give it a fresh budget and trace its frames."""
        self.nest_entry = None
        if not self.total:
            self.ticks = 0
        self._no_opcodes()
        if not self.timer:
            self._arm(sys._getframe(1))
        elif self.ticks >= self.timeout:
            # a spent total budget: t is interrupted at its first tick
            if self.traced:
                self._arm(sys._getframe(1))
        elif self.total:
            pass
        elif self.counted:
            # the tick counter first: the C counter takes the place of the
            # thread's trace function as it finds it
            if self.traced:
                self.traced = False
                sys.settrace(self.old_trace)
            self._count()
        else:
            # re-arming first takes back a trampoline that waits (it would
            # otherwise put the tick counter back: src/preempt.c)
            _timer_arm(self._timer_ns(True), self._expired)
            if self.traced:
                self.traced = False
                sys.settrace(self.old_trace)

    def _expired(self, event: int = _LINE) -> None:
        # Called (src/preempt.c) from a trace event of this thread once the
        # budget is spent, and again every budget (CPU time: at least 1 ms)
        # until the next switch:
        # from now on every tick interrupts (the soft way: the next switch).
        if self.fired or self.ts.timeout is not self:
            return
        self.ticks = self.timeout
        if self.soft:
            return
        f = sys._getframe(1)
        if id(f.f_globals) not in _OWN_GLOBALS and event in _BEFORE_INSTRUCTION:
            # The event is the user's: interrupt right here.  Installing
            # the tick counter to wait for the next event would cost two
            # more changes of the trace function, each of which makes 3.12+
            # re-instrument every function that runs next.
            self._tick(f)
            if self.fired:
                return
            if self.nest_entry is not None and not self.counted:
                # nested (stackless/_nesting.py): the ticker asks again in
                # a budget's time, at no cost to the nested code meanwhile
                # (a counted budget, which is exact, interrupts at the
                # first tick after the nesting: the tick counter sees it)
                return
        self._trace(f)
        # A loop on one line without calls makes no line event: ask for an
        # event per instruction in the user's frame that runs.
        while f is not None and id(f.f_globals) in _OWN_GLOBALS:
            f = f.f_back
        if f is not None:
            f.f_trace_opcodes = True
            self.opframe = f

    def _no_opcodes(self) -> None:
        f, self.opframe = self.opframe, None
        if f is not None:
            f.f_trace_opcodes = False
        if self.opcode is not None:
            _local_events(self, None)   # (clears it)

    def _trace(self, f: Any) -> None:
        """Install the tick counter in this thread, and in the frames from ``f`` down."""
        if not self.traced:
            old = sys.gettrace()
            # Never our own tick counter: _expired can run again while
            # resumed() or stop() is putting the caller's function back,
            # from a Python sys.settrace (stackless.greenlet wraps it), and
            # keeping the tick counter there left it installed for good.
            if type(getattr(old, "__self__", None)) is not _Preempt:
                self.old_trace = old
            self.traced = True
        mine = self._global_trace
        if sys.gettrace() != mine:      # (again, if something removed it)
            sys.settrace(mine)
        self._arm(f)

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
        pre._tick(frame, event != "line" and event != "opcode")
        return pre._local_trace

    def _tick(self, frame: Any, count_only: bool = False) -> None:
        # count_only: a 'call', 'return' or 'exception' event, where the
        # frame is in the middle of an instruction; a tasklet interrupted
        # there could not move or be pickled (stackless/_running.py), so
        # the interruption waits for the next line or opcode event.
        self.ticks += 1
        if self.ticks < self.timeout or self.soft or count_only:
            return
        ts = self.ts
        cur = ts.current
        if cur._atomic or cur is self.watchdog or ts.timeout is not self:
            return
        if not _may_switch() or (_PYPY and _in_finalizer(frame)):
            # A finalizer that the garbage collector runs: no switch is
            # possible until it is over, and the next tick tries again (as
            # Stackless defers the interrupt of a tasklet in nested C calls).
            return
        # Python code that C code runs, or the scheduler's own code: the
        # next tick outside it interrupts (stackless/_nesting.py)
        entry = self.nest_entry
        if entry is not None and still_nested(frame, entry):
            return
        self.nest_entry = entry = nested(frame, self.ignore_nesting or cur._ignore_nesting)
        if entry is not None:
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
        """Take ``cur`` off the run queue and resume the waiting ``run()``.

        The searches come first; the state then changes in one transaction
        (no call before its last step, docs/design.md "Exception safety").
        From then on the interruption is decided: an asynchronous exception
        that lands before the switch (a signal handler's, at the entry of
        a call) is kept for main in ``ts.pending``, as one that lands after
        a dying tasklet's switch is decided, and the switch goes on; main
        raises it when it runs, out of ``run()``."""
        wd = self.watchdog
        rq = ts.rq
        wds = ts.watchdogs
        i = _index(rq, cur) if cur._scheduled else -1
        j = _index(rq, wd)
        k = len(wds) - 1
        while k >= 0 and wds[k][0] is not wd:
            k -= 1
        self._no_opcodes()
        # -- transaction
        self.fired = True
        self.interrupted = cur
        cur._scheduled = False
        wd._scheduled = True
        if k >= 0:
            del wds[k]
        if j >= 0:
            del rq[j]
        if i >= 0:
            del rq[i - (0 <= j < i)]
        try:
            rq.appendleft(wd)
            # -- end of transaction (an exception right after it lands here)
            _switch(ts, cur, wd)
        except BaseException as e:
            if not (rq and rq[0] is wd and not cur._scheduled):
                raise       # it landed after cur was resumed: cur's own
            if ts.pending is None:
                ts.pending = e
            e = None
            _switch(ts, cur, wd)
        _take_tempval(cur)
