"""Trace and profile functions see the user's code only, as with Stackless's C
scheduler (issue 9, item 7): with the C accelerator no event names a frame of
the package, and the user's own events, around every switch, are the ones
Stackless 3.7 gives (recorded from ../shared/tools/slp37 running PROGRAM).
Without the accelerator the scheduler's Python frames are seen: a documented
difference of the reference mode (docs/stackless.md)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import stackless

accelerated_only = pytest.mark.skipif(
    not stackless._accelerated,
    reason="the pure-Python reference shows its own frames (docs/stackless.md, Differences)")

# sys.setprofile in main and in tasklets, sys.settrace in a tasklet,
# tasklet.trace_function/profile_function, through creation, run(), send,
# receive, channel iteration, close, schedule, schedule_remove,
# raise_exception, insert, remove, kill, throw, atomic, getcurrent,
# tasklet.run/switch, both callbacks, a channel with preference 1 and
# send_sequence (a callback inside hidden code inside hidden code).
PROGRAM = r'''
import os, sys, stackless
PKG = os.path.dirname(stackless.__file__) + os.sep
ev = []
def where(frame):
    return "INTERNAL " if frame.f_code.co_filename.startswith(PKG) else ""
def prof(frame, event, arg):
    ev.append("%sP %s %s" % (where(frame), frame.f_code.co_name, event))
def trace(frame, event, arg):
    ev.append("%sT %s %s %s" % (where(frame), frame.f_code.co_name, event,
                                frame.f_lineno - frame.f_code.co_firstlineno))
    return trace
def helper(x):
    return x + 1
ch = stackless.channel()
def cb_sched(prev, nxt):
    helper(0)
def cb_chan(chan, t, sending, willblock):
    helper(0)
def receiver():
    sys.setprofile(prof)
    v = ch.receive()
    for x in ch:
        helper(x)
    stackless.schedule()
    return v
def sleeper():
    sys.settrace(trace)
    helper(1)
    try:
        stackless.schedule_remove()
    except ZeroDivisionError:
        helper(2)
    stackless.schedule_remove()
def victim():
    sys.setprofile(prof)
    stackless.schedule_remove()
def idle():
    helper(3)
    return stackless.getcurrent()
def traced():
    helper(4)
    stackless.schedule()
    helper(5)

sys.setprofile(prof)
r = stackless.tasklet(receiver)()
s = stackless.tasklet(sleeper)()
v = stackless.tasklet(victim)()
i = stackless.tasklet(idle)()
stackless.run()
ch.send(1)
ch.send(2)
ch.close()
s.raise_exception(ZeroDivisionError)
s.insert()
s.remove()
s.kill()
v.throw(TaskletExit)
ev.append("M with")
with stackless.atomic():
    stackless.getcurrent()
ev.append("M end")
stackless.set_schedule_callback(cb_sched)
stackless.set_channel_callback(cb_chan)
t = stackless.tasklet(idle)()
t.run()
stackless.set_schedule_callback(None)
t = stackless.tasklet(traced)()
t.trace_function = trace
t.profile_function = prof
stackless.schedule()
helper(6)
t.switch()
ch2 = stackless.channel()
ch2.preference = 1
t = stackless.tasklet(lambda: ch2.send(helper(7)))()
ch2.receive()
ch3 = stackless.channel()
def drain():
    ch3.receive()
    ch3.receive()
t = stackless.tasklet(drain)()
ch3.send_sequence([1, 2])
stackless.set_channel_callback(None)
t = stackless.tasklet(helper)(8)
t.remove()
t.kill()
sys.setprofile(None)
print("\n".join(ev))
'''

# what Stackless 3.7.5 prints for PROGRAM
SLP37 = [
    'P <module> c_call', 'P receiver c_call', 'T helper call 0', 'T helper line 1',
    'T helper return 1', 'P victim c_call', 'P <module> c_return', 'P <module> c_call',
    'P receiver c_return', 'P <module> c_return', 'P <module> c_call', 'P helper call',
    'P helper return', 'P <module> c_return', 'P <module> c_call', 'P <module> c_return',
    'P <module> c_call', 'T helper call 0', 'T helper line 1', 'T helper return 1',
    'P <module> c_return', 'P <module> c_call', 'P <module> c_return', 'P <module> c_call',
    'P <module> c_return', 'P <module> c_call', 'P <module> c_return', 'P <module> c_call',
    'P victim c_exception', 'P victim return', 'P <module> c_return', 'P <module> c_call',
    'M with', 'P <module> c_return', 'P <module> c_call', 'P <module> c_return',
    'P <module> c_call', 'M end', 'P <module> c_return', 'P <module> c_call',
    'P <module> c_return', 'P <module> c_call', 'P <module> c_return', 'P <module> c_call',
    'P cb_sched call', 'P helper call', 'P helper return', 'P cb_sched return',
    'P <module> c_return', 'P <module> c_call', 'P <module> c_return', 'P <module> c_call',
    'T traced call 0', 'P traced call', 'T traced line 1', 'T helper call 0',
    'P helper call', 'T helper line 1', 'T helper return 1', 'P helper return',
    'T traced line 2', 'P traced c_call', 'P <module> c_return', 'P helper call',
    'P helper return', 'P <module> c_call', 'P traced c_return', 'T traced line 3',
    'T helper call 0', 'P helper call', 'T helper line 1', 'T helper return 1',
    'P helper return', 'T traced return 3', 'P traced return', 'P <module> c_return',
    'P <module> c_call', 'P cb_chan call', 'P helper call', 'P helper return',
    'P cb_chan return', 'P <module> c_return', 'P <module> c_call', 'P cb_chan call',
    'P helper call', 'P helper return', 'P cb_chan return', 'P cb_chan call',
    'P helper call', 'P helper return', 'P cb_chan return', 'P <module> c_return',
    'P <module> c_call', 'P <module> c_return', 'P <module> c_call', 'P <module> c_return',
    'P <module> c_call', 'P <module> c_return', 'P <module> c_call',
]


def without_with_block(events: list) -> list:
    """The events with those of the with statement of atomic replaced by
    one mark.  They are c_call/c_return of <module> only, but how many
    depends on how this CPython calls a context manager's __enter__ and
    __exit__ (3.14 with CALL for both: a C one, like Stackless's atomic,
    then makes c_call/c_return events there; 3.11 and 3.13 differ between
    builtin methods and others)."""
    i, j = events.index("M with"), events.index("M end")
    block = events[i + 1:j]
    assert set(block) == {"P <module> c_call", "P <module> c_return"}, block
    assert len(block) >= 4      # append's return, getcurrent(), append's call
    return events[:i] + ["with block"] + events[j:]


def run_program() -> list:
    p = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


@accelerated_only
def test_trace_functions_never_see_the_package_frames():
    events = run_program()
    assert [e for e in events if e.startswith("INTERNAL")] == []
    assert len(events) > 50


@accelerated_only
def test_user_events_around_switches_are_stackless_ones():
    assert without_with_block(run_program()) == without_with_block(SLP37)


def test_the_api_pickles_by_name():
    """Stackless's functions and methods pickle by reference; so do ours
    when they are hidden builtins."""
    for f in (stackless.getcurrent, stackless.schedule_remove, stackless.run,
              stackless.tasklet.kill, stackless.channel.close):
        assert pickle.loads(pickle.dumps(f)) is f
    t = stackless.tasklet(stackless.getcurrent)()
    t2 = pickle.loads(pickle.dumps(t))
    assert t2._func is stackless.getcurrent
    t.kill()
    t2.kill()
