"""Every test must leave the thread's tracing as it found it.

A trace or profile function, a ``threading`` hook or a ``sys.monitoring``
tool left behind by one test changes what every later test sees: in one
CI run ``run(timeout)``'s tick counter, left installed by an earlier test,
made ``test_run_without_timeout_installs_no_tracer`` fail far from the
cause.  This check names the test that leaked (an error at its teardown)
and puts the state back, so that the tests after it run as usual.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

_MONITORING = getattr(sys, "monitoring", None)


def _idle_tool() -> int:
    """The tool id that run(timeout) keeps after its last counted budget
    (src/preempt_monitor.c gives it back after a few thousand events that
    no budget wanted: by design, not a leak), or -1."""
    pre = sys.modules.get("stackless._preempt")
    if pre is None or pre._monitoring is None:
        return -1
    tool, users = pre._monitoring()
    return -1 if users else tool


def _state() -> dict:
    state = {"sys.gettrace()": sys.gettrace(), "sys.getprofile()": sys.getprofile(),
             "threading.gettrace()": threading._trace_hook,
             "threading.getprofile()": threading._profile_hook}
    if _MONITORING is not None:
        idle = _idle_tool()
        state["sys.monitoring tools"] = [(i, _MONITORING.get_tool(i)) for i in range(6)
                                         if i != idle and _MONITORING.get_tool(i) is not None]
    pre = sys.modules.get("stackless._preempt")
    if pre is not None and pre._monitoring is not None:
        state["run(timeout)'s sys.monitoring users"] = pre._monitoring()[1]
    return state


def _restore(before: dict, after: dict) -> None:
    # (threading.gettrace() is 3.10+, and not PyPy's)
    sys.settrace(before["sys.gettrace()"])
    sys.setprofile(before["sys.getprofile()"])
    threading.settrace(before["threading.gettrace()"])
    threading.setprofile(before["threading.getprofile()"])
    for i, _ in after.get("sys.monitoring tools", []):
        if (i, _MONITORING.get_tool(i)) not in before["sys.monitoring tools"]:
            _MONITORING.set_events(i, 0)
            _MONITORING.free_tool_id(i)


@pytest.fixture(autouse=True)
def _no_tracing_left_behind() -> Any:
    before = _state()
    yield
    after = _state()
    if after != before:
        _restore(before, after)
        leaked = {k: (before[k], after[k]) for k in after if after[k] != before.get(k)}
        pytest.fail("this test left tracing behind (before, after): %r" % (leaked,),
                    pytrace=False)
