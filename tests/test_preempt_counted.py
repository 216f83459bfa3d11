"""run(timeout) with budgets under 5000 ticks, which CPython counts in C
(src/preempt.c: sys.monitoring's function starts and jumps on 3.12+, a C
trace function's events on 3.11; docs/design.md, "Preemption").  Counting
is exact, so these tests need no timing slack; Stackless 3.7 (slp37) gave
the same answers where the behaviour is one it has."""
import sys
import threading

import pytest

import stackless
from stackless import _preempt

from preempt_helpers import _clean, counter  # noqa: F401 (_clean: autouse)

pytestmark = pytest.mark.skipif(_preempt._timer_arm is None,
                                reason="PyPy counts with a Python trace function")
monitoring = pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="3.12+: sys.monitoring")


def test_a_small_budget_interrupts_a_loop_before_it_ends():
    out = []

    def f():
        for i in range(1000):
            out.append(i)
        out.append("done")

    t = stackless.tasklet(f)()
    try:
        assert stackless.run(100) is t
        assert 0 < len(out) < 1000
    finally:
        t.kill()


def test_the_slice_grows_with_the_budget():
    # the same code, counted exactly: ten times the budget, about ten times
    # the work (the tasklet's start counts a few ticks of its first turn)
    counts = []
    for n in (300, 3000):
        box = [0]
        t = stackless.tasklet(counter)(box)
        try:
            assert stackless.run(n) is t
            first = box[0]
            t.insert()
            assert stackless.run(n) is t
        finally:
            t.kill()
        counts.append(box[0] - first)
    assert 9 * counts[0] <= counts[1] <= 11 * counts[0], counts


def test_the_callers_trace_function_comes_back():
    # A tasklet that sets its own trace function while it runs under a
    # small budget: on 3.11 that replaces the C counter, which used to
    # leave the tasklet's function installed in main after run() returned.
    def tracer(frame, event, arg):
        return None

    def mine(frame, event, arg):
        return None

    def body():
        sys.settrace(tracer)
        counter([0])

    sys.settrace(mine)
    try:
        t = stackless.tasklet(body)()
        assert stackless.run(100) is t
        assert sys.gettrace() is mine
        t.kill()
    finally:
        sys.settrace(None)


def turns_of(budget, turns):
    """How far a counter gets in each of its turns under run(budget)."""
    box = [0]
    t = stackless.tasklet(counter)(box)
    got = []
    try:
        for _ in range(turns):
            before = box[0]
            assert stackless.run(budget) is t
            got.append(box[0] - before)
            t.insert()
    finally:
        t.remove()
        t.kill()
    return got


def test_every_turn_gets_the_same_slice():
    got = turns_of(500, 20)
    assert len(set(got[1:])) == 1, got


def test_threads_count_their_own_budgets():
    # every thread's events are counted for that thread's budget only: the
    # same slices as alone, while the threads take turns for the GIL
    alone = [turns_of(300 + 200 * i, 3)[-1] for i in range(3)]
    results = [None] * 3

    def run(i):
        results[i] = turns_of(300 + 200 * i, 40)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        ths = [threading.Thread(target=run, args=(i,)) for i in (1, 2)]
        for th in ths:
            th.start()
        run(0)
        for th in ths:
            th.join(60)
    finally:
        sys.setswitchinterval(old)
    # Each slice is that thread's own; now and then (seen once, in CI on
    # 3.13-i386) a slice runs on to a second budget before it is cut, never
    # a part of one: so counts of other threads' events would show.
    for r, n in zip(results, alone):
        assert all(x % n == 0 for x in r[1:]), (r, n)
        assert sum(x == n for x in r[1:]) >= 0.9 * len(r[1:]), (r, n)


@monitoring
def test_threads_share_one_monitoring_tool():
    # The sys.monitoring tool is one for the process.  Threads that start
    # and end counted budgets while it comes and goes (each turn is
    # followed by more events than it stays on for without a budget) used
    # to take one id each, when a thread switch split the taking: every
    # event then counted twice (half slices), or use_tool_id() raised, and
    # an id stayed taken (src/preempt_monitor.c keeps it now).
    slices, errors = [], []

    def run():
        try:
            for _ in range(100):
                box = [0]
                t = stackless.tasklet(counter)(box)
                assert stackless.run(300) is t
                t.kill()
                slices.append(box[0])
                for i in range(3000):       # events that no budget wants
                    pass
        except BaseException as e:
            errors.append(e)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ths = [threading.Thread(target=run) for _ in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(120)
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert len(slices) == 400
    usual = max(set(slices), key=slices.count)
    assert min(slices) >= usual, sorted(set(slices))
    assert slices.count(usual) >= 0.9 * len(slices), sorted(set(slices))
    for i in range(30000):
        pass
    assert _preempt._monitoring() == (-1, 0)
    assert [sys.monitoring.get_tool(i) for i in _preempt._TOOLS] == [None] * len(_preempt._TOOLS)


@monitoring
def test_the_monitoring_events_go_when_no_budget_wants_them():
    # code that never passes a small timeout pays nothing: some thousands
    # of events after the last counted budget, the tool id is given back
    box = [0]
    t = stackless.tasklet(counter)(box)
    assert stackless.run(100) is t
    t.kill()
    for i in range(30000):
        pass
    assert _preempt._monitoring() == (-1, 0)
    assert all(sys.monitoring.get_tool(i) is None for i in _preempt._TOOLS)


@monitoring
def test_the_users_monitoring_tools_are_left_alone():
    # with the free tool ids taken, the counting uses a C trace function
    mon = sys.monitoring
    taken = [i for i in _preempt._TOOLS if mon.get_tool(i) is None]
    for i in taken:
        mon.use_tool_id(i, "user")
    try:
        seen = []

        def f():
            for i in range(1000):
                seen.append(i)
            counter([0])

        t = stackless.tasklet(f)()
        assert stackless.run(100) is t
        assert len(seen) < 1000
        t.kill()
        assert [mon.get_tool(i) for i in _preempt._TOOLS] == ["user"] * len(_preempt._TOOLS)
    finally:
        for i in taken:
            mon.free_tool_id(i)
