"""run(timeout) does not interrupt a tasklet while it runs Python code that
C code called (Stackless's nesting level above 0), unless ignore_nesting is
set (stackless/_nesting.py).  Every expectation here was checked against
Stackless 3.7 first: the first interruption comes when the nested code is
done, and only there."""
import functools
import signal
import sys
import threading

import pytest

import stackless
from stackless import _preempt

ON_PYPY = sys.implementation.name == "pypy"
# the trace-event way, and the CPU-time way (main thread, CPython)
BUDGETS = [1000] if ON_PYPY else [1000, max(_preempt._TIMER_MIN, 100000)]
# PyPy's frames are not ours to read: nesting is not seen there
# (docs/stackless.md, "Preemption")
c_nesting = pytest.mark.skipif(ON_PYPY, reason="PyPy: nesting is not seen there")


def spin(budget):
    # longer than the budget: 20000 lines, or several ms of CPU time
    s = 0
    for i in range(20000 if budget < _preempt._TIMER_MIN else 400000):
        s += i
    return s


def first_interruption(body, budget, **flags):
    """Run body(log) under run(budget): the log as it was at the first
    interruption, and at the end."""
    log = []
    stackless.tasklet(body)(log)
    r = stackless.run(budget, **flags)
    at_first = list(log)
    assert r is not None, "never interrupted"
    while r is not None:
        r.insert()
        r = stackless.run(budget, **flags)
    return at_first, log


def by_sorted_key(budget):
    def body(log):
        sorted(range(3), key=lambda x: (spin(budget), log.append(x)))
        log.append("done")
        spin(budget)
    return body


@c_nesting
@pytest.mark.parametrize("budget", BUDGETS)
def test_python_code_that_c_code_runs_is_not_interrupted(budget):
    at_first, log = first_interruption(by_sorted_key(budget), budget)
    # at the first tick after sorted() (CPU time: the ticker may come a
    # little later)
    assert at_first == [0, 1, 2] or (budget >= _preempt._TIMER_MIN and at_first == log)
    assert log == [0, 1, 2, "done"]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("where", ["run", "tasklet"])
def test_ignore_nesting_interrupts_it(budget, where):
    body = by_sorted_key(budget)
    if where == "tasklet":
        def flagged(log):
            stackless.getcurrent().set_ignore_nesting(1)
            body(log)
        at_first, log = first_interruption(flagged, budget)
    else:
        at_first, log = first_interruption(body, budget, ignore_nesting=True)
    assert at_first == []
    assert log == [0, 1, 2, "done"]


@c_nesting
def test_a_function_called_through_a_partial_is_not_interrupted():
    log = []

    def body(box):
        spin(1000)
        log.append("spun")
    stackless.tasklet(functools.partial(body, None))()
    assert stackless.run(1000) is None and log == ["spun"]


class Init:
    def __init__(self, log, budget):
        spin(budget)
        log.append("init")


class Ctx:
    def __init__(self, budget):
        self.budget = budget

    def __enter__(self):
        spin(self.budget)

    def __exit__(self, *exc):
        return False


def star(log, budget):
    spin(budget)
    log.append("star")


CALLS = {
    "f(*args)": lambda log, budget: star(*[log, budget]),
    "__init__": lambda log, budget: Init(log, budget),
    "with": lambda log, budget: _with(log, budget),
}


def _with(log, budget):
    with Ctx(budget):
        log.append("with")


@pytest.mark.parametrize("call", list(CALLS))
def test_calls_through_the_call_machinery_are_interrupted(call):
    # as in Stackless, which makes these calls without nesting
    at_first, log = first_interruption(lambda log: CALLS[call](log, 1000), 1000)
    assert at_first == [] and len(log) == 1


@c_nesting
@pytest.mark.parametrize("budget", BUDGETS)
def test_a_channel_callback_is_not_interrupted(budget):
    seen = []

    def callback(ch, t, sending, willblock):
        if sending:
            for i in range(3):
                spin(budget)
                seen.append(i)

    def body(log):
        ch = stackless.channel()
        ch.preference = 1
        stackless.tasklet(ch.receive)()
        stackless.set_channel_callback(callback)
        try:
            ch.send(1)
        finally:
            stackless.set_channel_callback(None)
        log.append("sent")
        spin(budget)
    at_first, log = first_interruption(body, budget)
    assert at_first == ["sent"] and seen == [0, 1, 2]


@c_nesting
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="no pthread_kill")
def test_a_signal_handler_run_inside_a_c_call_is_not_interrupted():
    # the stress harness's seed 43: the handler ran inside a buffered
    # write, was interrupted, and another tasklet's write of the same file
    # raised "reentrant call"
    logs = []

    def handler(signum, frame):
        for i in range(3):
            spin(1000)
            logs[0].append(i)

    def body(log):
        logs.append(log)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # runs handler
        log.append("after")
        spin(1000)
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        at_first, log = first_interruption(body, 1000)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert at_first == [0, 1, 2]        # at the first tick after the handler
    assert log == [0, 1, 2, "after"]
