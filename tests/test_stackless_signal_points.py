"""A ``KeyboardInterrupt`` at every point where CPython can run a signal
handler inside stackless's own Python code (issue 8: the stress harness's
timer signal), in both accelerator modes.

CPython runs a signal handler, and raises what it raises, at the checks of
its "eval breaker": a function's entry, right after a call of a C
function, a backward jump.  Its pending calls (``Py_AddPendingCall``) run
at exactly the same checks, so a pending call that raises at the n-th
check in the package's frames is a signal landing there; unlike a trace
or profile function it also reaches the Python code that the accelerator
runs hidden from them, and the checks of the scheduler's loops.  After
each interruption the scheduler must be consistent, and every tasklet
killable.  The profile-function tests of tests/test_stackless_faults.py
cover the channel operations the same way (entries and returns only).

Without ``_testcapi`` (PyPy) a trace function with opcode events stands
for the checks: it raises before the instruction that follows an entry, a
call or a backward jump.
"""

from __future__ import annotations

import dis
import os
import sys
import threading
from typing import Any, Callable, Optional

import pytest

import stackless
from preempt_helpers import counter

try:
    from _testcapi import _pending_threadfunc
except (ImportError, OSError):  # PyPy: its _testcapi needs a C source it lacks
    _pending_threadfunc = None

try:
    # The pending call runs hidden from trace functions: 3.11 checks a
    # traced function's entry again and again while a call is pending, so
    # a traced pending call that adds the next one would never get past
    # its own entry.
    from _stackless_accel import hide as _hide
except ImportError:
    _hide = None

PKG = os.path.dirname(stackless.__file__) + os.sep
# the cases' Python points without the accelerator; with it most of the
# work is C, where no signal handler runs (some cases have none at all)
FEW = 0 if stackless._accelerated and sys.implementation.name == "cpython" else 10


class PendingCalls:
    """A pending call that raises KeyboardInterrupt at the n-th check in
    stackless's frames and, with ``then``, a second one ``then`` checks
    later (a second signal while the first is handled)."""

    def __init__(self, n: int, then: Optional[int] = None) -> None:
        self.n, self.then = n, then
        self.seen = 0
        self.armed = False
        self.fired: list = []
        self.at: Any = None

    def __call__(self) -> None:
        if not self.armed:
            return
        # again at the next check (CPython runs one that a pending call
        # adds at once, a few dozen times: the same check, counted once)
        _pending_threadfunc(_pending)
        f = sys._getframe(2)        # (below: _dispatch)
        at = (id(f), f.f_lasti)
        if at == self.at or not f.f_code.co_filename.startswith(PKG):
            self.at = at
            return
        self.at = at
        self.seen += 1
        if self.seen == self.n or (self.then is not None and self.seen == self.n + 1 + self.then):
            self.fired.append((f.f_code.co_name, f.f_lasti))
            self.armed = len(self.fired) == 1 and self.then is not None
            raise KeyboardInterrupt

    def start(self, tasklets: list) -> None:
        self.armed = True
        _current[0] = self
        # Two in the queue, each adding one as it runs: 3.13+ run a batch
        # of pending calls and ask for the next check only if one was left
        # in the queue when the last of the batch was taken out, so that
        # with one alone, re-added while it runs, the batch at the first
        # check was the last (only one point was ever reached there).
        _pending_threadfunc(_pending)
        _pending_threadfunc(_pending)

    def stop(self, tasklets: list) -> None:
        self.armed = False


_current: list = [None]


def _dispatch() -> None:
    _current[0]()


_pending = _dispatch if _hide is None else _hide(_dispatch)

_OPS = dis.opmap
# (3.11 has conditional backward jumps too; a jump that is not taken is
# no point)
_BACKWARD = {_OPS[n] for n in ("JUMP_BACKWARD", "JUMP_ABSOLUTE", "POP_JUMP_BACKWARD_IF_FALSE",
                               "POP_JUMP_BACKWARD_IF_TRUE", "POP_JUMP_BACKWARD_IF_NONE",
                               "POP_JUMP_BACKWARD_IF_NOT_NONE") if n in _OPS}
_CALLS = {_OPS[n] for n in ("CALL", "CALL_KW", "CALL_FUNCTION_EX", "CALL_FUNCTION",
                            "CALL_METHOD") if n in _OPS}


@pytest.fixture(autouse=True)
def clean_scheduler():
    assert stackless.getcurrent() is stackless.getmain()
    assert stackless.getruncount() == 1
    yield
    sys.settrace(None)
    sys.setprofile(None)
    stackless.getmain().trace_function = stackless.getmain().profile_function = None
    for t in stackless._live_tasklets(threading.get_ident()):
        if t.alive and not t.is_main:
            t.kill()
    assert stackless.getcurrent() is stackless.getmain()
    assert stackless.getruncount() == 1


class TracePoints:
    """Without pending calls: a trace function that raises
    KeyboardInterrupt at the n-th point in stackless's frames, and, with
    ``then``, a second one ``then`` points later.

    A trace function that raises is removed (``sys.settrace(None)``, and
    the frame's ``f_trace``): for the second one, the profile function
    :meth:`profile` installs it again at its next event."""

    def __init__(self, n: int, then: Optional[int] = None) -> None:
        self.n, self.then = n, then
        self.seen = 0
        self.armed = False
        self.rearm = False
        self.fired: list = []
        self.last: dict = {}        # id(frame) -> offset of its last instruction
        self.profile = self._profile    # (one object: the scheduler compares them)

    def _point(self, frame: Any, what: str) -> None:
        self.seen += 1
        if self.seen == self.n or (self.then is not None and self.seen == self.n + 1 + self.then):
            self.fired.append((frame.f_code.co_name, frame.f_lasti, what))
            self.armed = self.rearm = len(self.fired) == 1 and self.then is not None
            raise KeyboardInterrupt

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(PKG):
            return self
        frame.f_trace_opcodes = True
        key = id(frame)
        if event == "call":
            self.last[key] = None
            if self.armed:
                self._point(frame, "entry")
        elif event == "return":
            self.last.pop(key, None)
        elif event == "exception":
            self.last[key] = None   # unwinding to a handler is no point
        elif event == "opcode":
            prev = self.last.get(key)
            self.last[key] = frame.f_lasti
            if self.armed and prev is not None:
                op = frame.f_code.co_code[prev]
                if op in _BACKWARD and frame.f_lasti <= prev:
                    self._point(frame, "backward jump at %d" % prev)
                elif op in _CALLS:
                    self._point(frame, "after the call at %d" % prev)
        return self

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if not self.rearm:
            return
        self.rearm = False
        # (what the frames did meanwhile was not seen: no point is known)
        self.last.clear()
        f = frame
        while f is not None:
            if f.f_code.co_filename.startswith(PKG) and f.f_trace is None:
                f.f_trace = self
                f.f_trace_opcodes = True
            f = f.f_back
        sys.settrace(self)

    def start(self, tasklets: list) -> None:
        sys.settrace(self)
        sys.setprofile(self.profile)
        for t in tasklets + [stackless.getmain()]:
            if t.alive:             # each tasklet has its own
                t.trace_function, t.profile_function = self, self.profile
        self.armed = True

    def stop(self, tasklets: list) -> None:
        self.armed = self.rearm = False
        sys.settrace(None)
        sys.setprofile(None)
        for t in tasklets + [stackless.getmain()]:
            if t.alive:
                t.trace_function = t.profile_function = None


Points = TracePoints if _pending_threadfunc is None else PendingCalls


# Each case's tasklets by name, for the reports (by id: a tasklet, as in
# Stackless, takes no attributes of its own)
NAMES: dict = {}


def scheduler_problems(tasklets: list, channels: list) -> list:
    """What is wrong with this thread's scheduler (main should run)."""
    ts = stackless._scheduler._ts()
    main = stackless.getmain()
    rq = list(ts.rq)
    out = []
    if ts.current is not main or not rq or rq[0] is not main or main.blocked:
        out.append(f"main does not run: current {ts.current!r}, queue {rq!r}")
    if ts.watchdogs or ts.launch is not None:
        out.append(f"left over: watchdogs {ts.watchdogs!r}, launch {ts.launch!r}")
    if stackless.getruncount() != len(rq) or sum(x is main for x in rq) != 1:
        out.append(f"run queue {rq!r}, runcount {stackless.getruncount()}")
    for t in tasklets:
        queued = sum(x is t for x in rq)
        if queued != (t.alive and t.scheduled and not t.blocked):
            out.append(f"{NAMES.get(id(t))}: in the run queue {queued} times, {t!r}")
        if t.alive and t._started and (t._cont is None or not t._cont.is_pending()):
            out.append(f"{NAMES.get(id(t))}: alive, but its continulet finished")
        if t.blocked and (not t.alive or t not in list(t._channel._queue)):
            out.append(f"{NAMES.get(id(t))}: blocked, but not waiting on its channel")
    for ch in channels:
        q = list(ch._queue)
        if abs(ch.balance) != len(q) or any(
                t._channel is not ch or (t._blocked > 0) != (ch.balance > 0) for t in q):
            out.append(f"channel: balance {ch.balance}, waiting {q!r}")
    return out


def kill_all(tasklets: list) -> None:
    """Kill what is left; an error a tasklet left for main is dropped."""
    stackless.getmain().tempval = None
    for _ in range(3):
        for t in tasklets:
            if t.alive:
                try:
                    t.kill()
                except ZeroDivisionError:
                    pass
        try:
            stackless.run()
        except ZeroDivisionError:
            pass
    assert not [t for t in tasklets if t.alive]
    assert stackless.getruncount() == 1


class World:
    """The tasklets and channels of one case."""

    def __init__(self) -> None:
        self.tasklets: list = []
        self.channels: list = []

    def tasklet(self, name: str, func: Callable) -> Any:
        t = stackless.tasklet(func)
        NAMES[id(t)] = name
        self.tasklets.append(t)
        return t

    def channel(self, preference: int = -1) -> Any:
        ch = stackless.channel()
        ch.preference = preference
        self.channels.append(ch)
        return ch


def repair(tasklets: list) -> None:
    """Put a broken scheduler right by force, so that one failure does not
    fail the tests that follow."""
    ts = stackless._scheduler._ts()
    main = stackless.getmain()
    ts.current, ts.launch = main, None
    del ts.watchdogs[:]
    ts.rq.clear()
    ts.rq.append(main)
    main._scheduled = True
    for t in tasklets:
        if t.alive and t._started and (t._cont is None or not t._cont.is_pending()):
            t._alive = False        # (its stack is gone)
            stackless._lifetime._unregister(t)
        elif t.alive:
            t._scheduled = False
            try:
                t.kill()
            except BaseException:
                pass


def try_every_point(build: Callable[[World], Callable[[], Any]],
                    then: Optional[int] = None) -> tuple:
    """For n = 1, 2, ...: build a case, run its action with the n-th signal
    point interrupted (and with ``then``, a second one), check the
    scheduler, kill what is left.  Returns the number of points tried and
    of cases in which a second exception was raised."""
    twice = [0]
    for n in range(1, 2000):
        w = World()
        hook = Points(n, then)
        action = build(w)
        # (tasklets that the action starts get no trace function: the
        # cases make theirs beforehand)
        hook.start(w.tasklets)
        try:
            try:
                action()
            finally:
                hook.stop(w.tasklets)
        except KeyboardInterrupt:
            pass
        if not hook.fired:
            return n - 1, twice[0]
        problems = scheduler_problems(w.tasklets, w.channels)
        if problems:
            repair(w.tasklets)      # for the tests that follow
        assert problems == [], hook.fired
        if then is not None and len(hook.fired) == 2:
            twice[0] += 1
        kill_all(w.tasklets)
    raise AssertionError("no end")


# -- the cases -----------------------------------------------------------------

def receiver(ch: Any, got: list) -> Callable[[], None]:
    def body() -> None:
        got.append(ch.receive())
    return body


def sender(ch: Any) -> Callable[[], None]:
    def body() -> None:
        ch.send("v")
    return body


def channel_case(op: str, partner_waits: bool, preference: int):
    def build(w: World) -> Callable[[], Any]:
        ch, got = w.channel(preference), []
        w.tasklet("partner", sender(ch) if op == "receive" else receiver(ch, got))()
        if partner_waits:
            stackless.run()

        def action() -> None:
            ch.send("x") if op == "send" else got.append(ch.receive())
            stackless.run()
        return action
    return build


def kill_case(state: str, pending: bool):
    def build(w: World) -> Callable[[], Any]:
        ch = w.channel()

        def body() -> None:
            ch.receive() if state == "blocked" else stackless.schedule_remove()
        victim = w.tasklet("victim", body)()
        w.tasklet("other", lambda: None)()
        if state != "unstarted":
            stackless.schedule()

        def action() -> None:
            victim.kill(pending)
            stackless.run()
        return action
    return build


def throw_pending_case(w: World) -> Callable[[], Any]:
    def body() -> None:
        try:
            stackless.schedule_remove()
        except ZeroDivisionError:
            pass
    victim = w.tasklet("victim", body)()
    stackless.run()

    def action() -> None:
        victim.throw(ZeroDivisionError, None, None, True)
        victim.insert()         # (a no-op: it is scheduled)
        stackless.run()
    return action


def run_case(ending: str):
    def build(w: World) -> Callable[[], Any]:
        def body() -> None:
            if ending == "error":
                raise ZeroDivisionError
            stackless.schedule()
        w.tasklet("a", body)()
        w.tasklet("b", body)()

        def action() -> None:
            try:
                stackless.run()
            except ZeroDivisionError:
                pass
        return action
    return build


def switch_case(w: World) -> Callable[[], Any]:
    t = w.tasklet("t", stackless.schedule_remove)()
    w.tasklet("u", stackless.schedule)()

    def action() -> None:
        t.switch()
        t.insert()
        stackless.run()
    return action


def block_while_main_runs_case(w: World) -> Callable[[], Any]:
    # the last runnable tasklet blocks while main waits in run(): main's
    # run() is woken, unless the exception lands in the receive, which
    # then raises it and does not block
    ch = w.channel()

    def body() -> None:
        try:
            ch.receive()
        except KeyboardInterrupt:
            pass
        ch.receive()            # (blocks: main's run() must return now)
    w.tasklet("receiver", body)()
    return stackless.run


CASES = {
    "send to a waiting receiver": channel_case("send", True, -1),
    "send to a waiting receiver, sender first": channel_case("send", True, 1),
    "receive from a waiting sender": channel_case("receive", True, -1),
    "send that blocks": channel_case("send", False, -1),
    "receive that blocks": channel_case("receive", False, 1),
    "kill unstarted": kill_case("unstarted", False),
    "kill paused": kill_case("paused", False),
    "kill blocked": kill_case("blocked", False),
    "kill paused, pending": kill_case("paused", True),
    "throw pending": throw_pending_case,
    "run, tasklets end": run_case("end"),
    "run, a tasklet fails": run_case("error"),
    "switch and insert": switch_case,
    "block while main waits in run": block_while_main_runs_case,
}


@pytest.mark.parametrize("case", list(CASES))
def test_keyboardinterrupt_at_any_signal_point(case):
    # throw(pending=True) queued the tasklet before it set its flag: an
    # exception in between left it queued but "not scheduled", and insert()
    # queued it twice ("continulet already finished" at the next run()).
    # run() appended its watchdog entry before its try: an exception right
    # after the append left the entry, and the next idle run queue woke main
    # out of whatever it waited in.  The last runnable tasklet that blocked
    # while main waited in run() took run()'s entry off before it queued
    # main: an exception in between lost main (the tasklet's next block
    # raised the deadlock error; with another thread alive, the thread
    # waited for it, and the xsignals stress kind's other thread reported a
    # deadlock).
    points, _ = try_every_point(CASES[case])
    assert points >= FEW


@pytest.mark.parametrize("case", ["run, tasklets end", "run, a tasklet fails", "kill paused",
                                  "throw pending", "block while main waits in run"])
@pytest.mark.parametrize("then", [0, 1, 3])
def test_two_keyboardinterrupts_at_signal_points(case, then):
    # run()'s _end_run put the running tasklet back in the queue before it
    # set its flag; a second exception at that point, and the retry of
    # _end_run queued it twice.
    points, seconds = try_every_point(CASES[case], then)
    assert points >= FEW and seconds >= FEW


@pytest.mark.skipif(_pending_threadfunc is None, reason="the preemption's own steps run inside "
                    "its trace function, where no other trace or profile function runs: "
                    "only pending calls reach them (CPython's _testcapi)")
def test_keyboardinterrupt_inside_a_preemption(monkeypatch):
    # run(timeout) interrupts the running tasklet in several steps
    # (_Preempt.interrupt: its flags, the run queue, the watchdog entry,
    # the switch).  An exception between two of them left the tasklet
    # running off the run queue, or main queued while the tasklet ran.
    # Now the steps are one transaction, and an exception that lands after
    # it goes to main (ts.pending): run() raises it, the tasklet stays
    # interrupted.
    from stackless._preempt import _Preempt
    interrupt = _Preempt.interrupt
    hook: Any = None
    # The C function: stackless.greenlet, once imported, puts a Python
    # wrapper in sys.settrace, a traced function whose entry 3.11 would
    # check over and over (the hang below).
    settrace = getattr(sys.modules.get("stackless.greenlet._hide"), "_orig_settrace",
                       sys.settrace)

    def counted_from_here(self: Any, ts: Any, cur: Any) -> None:
        # (the trace function goes: while one is on and a call is pending,
        # 3.11 runs a function entry's check over and over; run() puts it
        # back when it ends)
        settrace(None)
        hook.start([])
        interrupt(self, ts, cur)
    monkeypatch.setattr(_Preempt, "interrupt", counted_from_here)
    resumed = _Preempt.resumed

    def resumed_untraced(self: Any, t: Any) -> None:
        resumed(self, t)
        if hook.armed:
            settrace(None)          # (the same)
    monkeypatch.setattr(_Preempt, "resumed", resumed_untraced)

    seen_running: list = []

    def spin() -> None:
        try:
            for _ in range(100000):
                pass
        except KeyboardInterrupt:
            # (it landed before the interruption was decided: the tasklet
            # runs on, and must be where a running tasklet is)
            seen_running.append(stackless.getcurrent().scheduled)
            for _ in range(100000):
                pass
    ts = stackless._scheduler._ts()
    points = 0
    for n in range(1, 500):
        t = stackless.tasklet(spin)()
        NAMES[id(t)] = "spin"
        hook = PendingCalls(n)
        del seen_running[:]
        try:
            raised = False
            try:
                try:
                    stackless.run(50)       # (trace events: deterministic)
                finally:
                    hook.stop([])
            except KeyboardInterrupt:
                raised = True
            if not hook.fired:
                break
            points += 1
            assert raised or seen_running, hook.fired
            assert all(seen_running), hook.fired
            assert scheduler_problems([t], []) == [], hook.fired
            assert not ts.watchdogs and ts.timeout is None and ts.pending is None, hook.fired
            assert sys.gettrace() is None, hook.fired
        finally:
            if t.alive:
                t.kill()
        assert stackless.getruncount() == 1
    assert points > 5


@pytest.mark.skipif(_pending_threadfunc is None, reason="no pending calls (CPython's _testcapi): "
                    "the trace-function fallback would itself be the trace function at stake")
@pytest.mark.parametrize("way", ["trace events", "counted"])
def test_keyboardinterrupt_at_the_end_of_a_preemption(monkeypatch, way):
    # run(timeout) ends with _Preempt.stop(): it puts the caller's trace
    # function back and gives back the sys.monitoring tool (3.12+, counted
    # budgets); run() calls it again if an exception lands in it.  It
    # cleared its flags first: a signal right after its sys.gettrace() left
    # the Python tick counter installed in main for good, and one at
    # _monitor()'s entry kept the tool id taken (now one C call: src/preempt_monitor.c).
    from stackless import _preempt
    if way == "trace events":
        # (the way of PyPy, and of threads that find no slot of the ticker)
        monkeypatch.setattr(_preempt, "_timer_arm", None)
    stop = _preempt._Preempt.stop
    hook: Any = None
    started = [False]

    def counted_from_here(self: Any) -> None:
        if not started[0]:      # (not again when run() calls it again)
            started[0] = True
            hook.start([])
        stop(self)
    if _hide is not None:
        # hidden from trace functions, as the accelerator runs run()
        # (3.11 checks a traced function's entry again and again while a
        # call is pending: with the tick counter on, the pending calls
        # would never get past stop()'s entry)
        counted_from_here = _hide(counted_from_here, True)
    monkeypatch.setattr(_preempt._Preempt, "stop", counted_from_here)
    ts = stackless._scheduler._ts()
    points = 0
    for n in range(1, 200):
        t = stackless.tasklet(counter)([0])
        hook = PendingCalls(n)
        started[0] = False
        try:
            try:
                try:
                    r = stackless.run(50)
                finally:
                    hook.armed = False      # (no call: nothing lands here)
                assert r is t
            except KeyboardInterrupt:
                pass
            if not hook.fired:
                break
            points += 1
            assert sys.gettrace() is None, hook.fired
            assert ts.timeout is None and not ts.watchdogs, hook.fired
            assert _preempt._monitoring is None or _preempt._monitoring()[1] == 0, hook.fired
            assert scheduler_problems([t], []) == [], hook.fired
        finally:
            if t.alive:
                t.kill()
    assert points >= 3


@pytest.mark.skipif(_pending_threadfunc is None, reason="no pending calls (CPython's _testcapi)")
def test_keyboardinterrupt_while_a_failed_run_puts_its_caller_back():
    # A run() that something stopped before any tasklet woke its caller
    # (here the schedule callback's KeyboardInterrupt, which stops the
    # switch: Stackless raises it in the caller) ends in _end_run, which
    # puts the caller back first in the run queue; run() calls it again if
    # an exception lands in it.  It queued the caller before it set its
    # flag: a second exception right after the queueing, and the retry
    # queued it again (main twice in the run queue).
    main = stackless.getmain()
    hook: Any = None

    def callback(prev: Any, nxt: Any) -> None:
        if prev is main and not hook.armed and not hook.fired:
            hook.start([])
            raise KeyboardInterrupt("the first")
    points = 0
    for n in range(1, 200):
        w = World()
        w.tasklet("t", lambda: None)()
        hook = PendingCalls(n)
        stackless.set_schedule_callback(callback)
        try:
            try:
                stackless.run()
            finally:
                hook.armed = False      # (no call: nothing lands here)
        except KeyboardInterrupt:
            pass
        stackless.set_schedule_callback(None)
        if not hook.fired:
            break
        points += 1
        problems = scheduler_problems(w.tasklets, w.channels)
        if problems:
            repair(w.tasklets)
        assert problems == [], hook.fired
        kill_all(w.tasklets)
    assert points >= 3
