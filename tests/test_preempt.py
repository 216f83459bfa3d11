"""run(timeout) with budgets that the main thread spends as CPU time
(src/preempt.c, docs/stackless.md "Preemption"), and the trace-based way
that other threads keep.  Each behaviour was checked against Stackless 3.7
first; the small-budget cases are in test_stackless.py."""
import gc
import signal
import sys
import threading
import time

import pytest

import stackless
from stackless import _preempt
from stackless._common import _PYPY

from preempt_helpers import _clean, counter  # noqa: F401 (_clean: autouse)

# budgets that use the CPU-time way in the main thread
BIG = max(_preempt._TIMER_MIN, 100000)


def tight():
    while True:
        pass


def one_line():
    while True: pass  # noqa: E701 (no line event: only the opcode events see it)


def deep(n):
    if n:
        return deep(n - 1)
    while True:
        pass


def test_a_loop_without_calls_is_preempted():
    t = stackless.tasklet(tight)()
    r = stackless.run(BIG)
    assert r is t
    assert t.alive and t.paused and not t.scheduled
    assert t.frame.f_code is tight.__code__     # the user's frame, not ours
    assert t.recursion_depth == 1
    t.kill()


@pytest.mark.parametrize("budget", [100, BIG])
def test_a_loop_on_one_line_is_preempted(budget):
    t = stackless.tasklet(one_line)()
    assert stackless.run(budget) is t
    assert t.frame.f_code is one_line.__code__ and t.recursion_depth == 1
    t.insert()
    assert stackless.run(budget) is t
    t.kill()


def test_the_interrupted_tasklet_is_the_users_and_resumable():
    t = stackless.tasklet(deep)(5)
    assert stackless.run(BIG) is t
    assert t.frame.f_code is deep.__code__ and t.frame.f_locals["n"] == 0
    assert t.recursion_depth == 6
    t.insert()
    assert stackless.run(BIG) is t
    assert t.frame.f_code is deep.__code__ and t.recursion_depth == 6
    t.kill()


def in_a_thread(fn, *args):
    """fn(*args) in a new thread (other than the main one); its result."""
    res = []
    th = threading.Thread(target=lambda: res.append(fn(*args)))
    th.start()
    th.join(60)
    assert res, "the thread failed or hung"
    return res[0]


def timed_code_sees_no_trace_function():
    seen = []

    def f():
        seen.append(sys.gettrace())
        for i in range(10000):
            pass
        seen.append(sys.gettrace())

    stackless.tasklet(f)()
    assert stackless.run(10 ** 9) is None
    return seen


@pytest.mark.skipif(sys.implementation.name == "pypy",
                    reason="PyPy counts trace events (docs/stackless.md, Preemption)")
def test_timed_code_runs_without_a_trace_function():
    assert timed_code_sees_no_trace_function() == [None, None]
    # in every thread: the ticker delivers to any thread
    assert in_a_thread(timed_code_sees_no_trace_function) == [None, None]


def one_line_loops_are_preempted(budget):
    t = stackless.tasklet(one_line)()
    r = stackless.run(budget)
    res = (r is t, t.frame.f_code is one_line.__code__, t.recursion_depth)
    t.kill()
    return res


@pytest.mark.skipif(sys.implementation.name == "pypy",
                    reason="PyPy has no CPU-time ticker (docs/stackless.md, Preemption)")
@pytest.mark.parametrize("budget", [100, BIG])
def test_a_loop_on_one_line_in_another_thread_is_preempted(budget):
    # 3.11 makes no trace event for it: only the ticker reaches it
    assert in_a_thread(one_line_loops_are_preempted, budget) == (True, True, 1)


def test_atomic_is_respected():
    out = []

    def f():
        with stackless.atomic():
            for i in range(300000):     # longer than the budget
                pass
            out.append("atomic done")
        tight()

    # (BIG: the tasklet's start counts against its budget, and on a debug
    # build the smallest one can be spent before the atomic block begins)
    t = stackless.tasklet(f)()
    assert stackless.run(BIG) is t
    assert out == ["atomic done"]
    t.kill()


class SlowFinalizer:
    """Garbage in a cycle whose __del__ spends CPU time beyond the budget."""

    def __init__(self, out):
        self.out = out
        self.me = self

    def __del__(self):
        t0 = time.process_time()
        while time.process_time() - t0 < 0.05:
            pass
        self.out.append("del done")


@pytest.mark.parametrize("budget", [100, BIG])
def test_a_finalizer_run_by_the_collector_is_not_interrupted(budget, monkeypatch):
    # No switch is possible while the collector runs a finalizer: the
    # interrupt waits until the collection is over (Stackless 3.7 too
    # interrupts right after gc.collect() returns).  It was refused
    # instead, which cut the finalizer short with a RuntimeError and left
    # the run never interrupted again.
    out, unraisable = [], []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    def f():
        SlowFinalizer(out)
        gc.collect()
        out.append("collected")
        tight()

    gc.disable()
    t = stackless.tasklet(f)()
    try:
        assert stackless.run(budget) is t
    finally:
        t.kill()
        gc.enable()
    # (with the CPU-time budget the ticker thread, slow to get a core on a
    # loaded machine, may deliver the interrupt after the collection: then
    # "collected" comes first; with trace events it never does on CPython,
    # while PyPy's finalizers make no trace events at all)
    assert out[0] == "del done" and unraisable == []
    assert out == ["del done"] or budget >= _preempt._TIMER_MIN or _PYPY


def test_a_larger_timeout_preempts_later():
    counts = []
    # (the tasklet's start counts against its first budget: on a debug
    # build the smallest one can be spent before the loop's first line)
    for n in (BIG, 2 * 10 ** 6):
        box = [0]
        t = stackless.tasklet(counter)(box)
        assert stackless.run(n) is t
        counts.append(box[0])
        t.kill()
    assert 0 < counts[0] < counts[1]


def test_round_robin_and_totaltimeout():
    a, b = [0], [0]
    ta = stackless.tasklet(counter)(a)
    tb = stackless.tasklet(counter)(b)
    got = []
    for _ in range(4):
        r = stackless.run(BIG, totaltimeout=True)
        got.append(r)
        r.insert()
    assert got == [ta, tb, ta, tb]
    for t in (ta, tb):
        t.remove()
        t.kill()


def test_soft_timeout_returns_none_at_the_next_switch():
    out = []

    def f():
        for i in range(10 ** 6):
            pass
        out.append("loop done")
        stackless.schedule()
        out.append("resumed")

    t = stackless.tasklet(f)()
    assert stackless.run(BIG, soft=True) is None
    assert out == ["loop done"] and t.scheduled and stackless.getruncount() == 2
    stackless.run()
    assert out == ["loop done", "resumed"]


def test_a_run_that_ends_early_leaves_nothing_armed():
    # a budget (2 ms of CPU) that starting and ending a tasklet never
    # spends, even on a loaded machine; 100 us was spent there at times
    stackless.tasklet(lambda: None)()
    assert stackless.run(BIG) is None
    # far longer than the budget, in main: no interruption, no trace function
    box = [0]
    for i in range(3000000):
        box[0] += 1
    assert sys.gettrace() is None and box[0] == 3000000


def test_keyboardinterrupt_from_a_signal_kills_the_tasklet_and_reaches_main():
    def handler(*a):
        raise KeyboardInterrupt("sig")

    old = signal.signal(signal.SIGALRM, handler)
    try:
        t = stackless.tasklet(tight)()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt, match="sig"):
            stackless.run(10 ** 9)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not t.alive


def test_another_thread_is_preempted_too():
    res = []

    def thread_main():
        t = stackless.tasklet(tight)()
        r = stackless.run(BIG)
        res.append((r is t, t.frame.f_code is tight.__code__, t.recursion_depth))
        t.kill()

    th = threading.Thread(target=thread_main)
    th.start()
    th.join(60)
    assert res == [(True, True, 1)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_no_helper_thread_is_left_behind():
    # the CPU-time way's helper thread ends soon after the last run(timeout),
    # so that os.fork() (which warns in a process with threads) and thread
    # counts see what they would see without run(timeout), as in Stackless
    import os
    import time

    def foreign():
        # OS threads that are not Python threads
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    t = stackless.tasklet(tight)()
    assert stackless.run(BIG) is t
    t.kill()
    deadline = time.monotonic() + 10
    while foreign() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert foreign() == 0


@pytest.mark.skipif(_preempt._timer_arm is None, reason="PyPy has no CPU-time ticker")
def test_a_trace_function_set_while_the_ticker_waits_is_not_undone():
    # Once the budget is spent the ticker's pending call puts a C trampoline
    # in place of the thread's trace function, until the next trace event.
    # No event reaches a trace function that runs, so one can watch it wait.
    # If Python code replaces the trampoline meanwhile (stackless restoring
    # a tasklet's own trace function on a switch, or the user), re-arming
    # or disarming must not bring back the function the trampoline had
    # displaced: that left run(timeout)'s tick counter installed for good.
    import time
    from _continuation import _preempt_arm, _preempt_disarm
    seen = []
    calls = []

    def waiting(frame, event, arg):
        if frame.f_code is not f.__code__:
            return None     # (a weakref callback of an earlier test's garbage)
        assert _preempt_arm(0, lambda event: calls.append(1))
        until = time.monotonic() + 10
        while sys.gettrace() is waiting and time.monotonic() < until:
            pass
        seen.append(sys.gettrace())     # None: the trampoline is C
        sys.settrace(None)
        _preempt_disarm()
        seen.append(sys.gettrace())
        return None

    def f():
        return 1

    sys.settrace(waiting)
    try:
        f()
    finally:
        sys.settrace(None)
        _preempt_disarm()
    assert seen == [None, None] and calls == []


@pytest.mark.skipif(_preempt._timer_arm is None, reason="PyPy has no CPU-time ticker")
def test_exit_while_daemon_threads_are_preempted_does_not_crash():
    # The ticker thread is plain C: once the interpreter is being torn
    # down it must queue no pending call and take no GIL (3.13: a pending
    # call queued then crashed in a freed interpreter, about 1 exit in 5).
    import subprocess
    import textwrap
    code = textwrap.dedent("""
        import threading, time, stackless
        def busy():
            while True:
                pass
        def worker():
            while True:
                t = stackless.tasklet(busy)()
                assert stackless.run(5000) is t
                t.kill()
        for i in range(3):
            threading.Thread(target=worker, daemon=True).start()
        time.sleep(0.2)
        print("exit")
    """)
    for _ in range(10):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                           text=True, timeout=60)
        assert (r.returncode, r.stdout) == (0, "exit\n"), r.stderr
