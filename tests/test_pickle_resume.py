"""What a rebuilt stack resumes with, beyond its frames: its contextvars
context, its recursion depth, the events tracers see; and the frames that
cannot be captured (docs/stackless.md, "What is restorable").
"""
from __future__ import annotations

import contextvars
import pickle
import sys

import pytest

if sys.implementation.name != "cpython":
    pytest.skip("frames as data: CPython only", allow_module_level=True)

from _continuation import continulet

import stackless
from stackless import channel, tasklet

VAR = contextvars.ContextVar("VAR", default="unset")
OUT: list = []      # globals: a frame's own values are copied by pickling


# ---------------------------------------------------------------------------
# contexts
# ---------------------------------------------------------------------------

def context_user():
    VAR.set("mine")
    stackless.schedule_remove()
    OUT.append(VAR.get())
    VAR.set("after resume")
    stackless.schedule_remove()
    OUT.append(VAR.get())


def test_contexts_do_not_pickle():
    # as in Stackless 3.7 (and CPython): so a tasklet's context stays behind
    with pytest.raises(TypeError):
        pickle.dumps(contextvars.copy_context())
    with pytest.raises(TypeError):
        pickle.dumps(VAR)


def test_a_rebuilt_tasklet_runs_in_its_own_context_not_its_starters():
    OUT.clear()
    t = tasklet(context_user)()
    stackless.run()
    data = pickle.dumps(t)
    t.kill()
    token = VAR.set("loader")
    try:
        copy = pickle.loads(data)          # its context: a copy of this one
        VAR.set("starter")
        copy.insert()
        stackless.run()
        copy.insert()
        stackless.run()
        assert OUT == ["loader", "after resume"]
        assert VAR.get() == "starter"       # nothing leaked into main's
    finally:
        VAR.reset(token)


def test_set_context_before_a_rebuilt_tasklet_resumes():
    OUT.clear()
    t = tasklet(context_user)()
    stackless.run()
    copy = pickle.loads(pickle.dumps(t))
    t.kill()
    ctx = contextvars.Context()
    ctx.run(VAR.set, "given")
    copy.set_context(ctx)
    copy.insert()
    stackless.run()
    copy.kill()
    assert OUT == ["given"] and ctx[VAR] == "after resume"


# ---------------------------------------------------------------------------
# recursion depth
# ---------------------------------------------------------------------------

def probe(n=0):
    try:
        return probe(n + 1)
    except RecursionError:
        return n


def deep_probe(ch, depth):
    if depth:
        return deep_probe(ch, depth - 1)
    ch.receive()
    OUT.append(probe())


def test_the_frames_below_a_rebuilt_one_count_in_the_recursion_depth():
    # how deep the top frame can still call before RecursionError: the
    # same as in the original, 50 frames deeper than a fresh tasklet
    OUT.clear()
    ch = channel()
    t = tasklet(deep_probe)(ch, 50)
    stackless.run()
    data = pickle.dumps((t, ch))
    ch.send(None)
    copy, ch2 = pickle.loads(data)
    ch2.send(None)
    tasklet(deep_probe)(ch, 0)
    stackless.run()
    ch.send(None)
    live, rebuilt, fresh = OUT
    assert abs(live - rebuilt) <= 2, OUT
    assert fresh - rebuilt >= 45, OUT


def depth_reporter(ch, d):
    if d:
        return depth_reporter(ch, d - 1)
    ch.receive()
    OUT.append((stackless.getcurrent().recursion_depth, stackless.getcurrent().frame.f_code.co_name))


def test_recursion_depth_and_frame_of_a_rebuilt_tasklet_while_it_runs():
    # its bottom frame links to whoever switched in: those frames are not its
    OUT.clear()
    ch = channel()
    tasklet(depth_reporter)(ch, 3)
    stackless.run()
    data = pickle.dumps(ch)
    ch.send(None)
    ch2 = pickle.loads(data)
    ch2.send(None)              # from main
    ch3 = pickle.loads(data)
    tasklet(lambda: ch3.send(None))()   # from another tasklet
    stackless.run()
    assert OUT == [(4, "depth_reporter")] * 3


# ---------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------

def inner(ch):
    x = ch.receive()
    return x


def outer(ch):
    v = inner(ch)
    OUT.append(v)


def test_a_tracer_sees_a_call_event_for_each_resumed_frame():
    # as a generator's frame gets one when it resumes: the tracer learns of
    # the frame (and sets its f_trace), then sees its lines.  (Stackless
    # 3.7 reports nothing for a resumed tasklet: trace_function does not
    # take effect on a tasklet that has started.)
    OUT.clear()
    events = []

    def tracer(frame, event, arg):
        if frame.f_code in (inner.__code__, outer.__code__):
            events.append((event, frame.f_code.co_name, frame.f_lineno - frame.f_code.co_firstlineno))
        return tracer
    ch = channel()
    t = tasklet(outer)(ch)
    stackless.run()
    copy, ch2 = pickle.loads(pickle.dumps((t, ch)))
    t.kill()
    copy.trace_function = tracer
    ch2.send(5)
    stackless.run()
    assert OUT == [5]
    assert events == [("call", "inner", 1), ("line", "inner", 2), ("return", "inner", 2),
                      ("call", "outer", 1), ("line", "outer", 2), ("return", "outer", 2)]


def calls_locals(ch):
    names = sorted(locals())        # 3.11 gives the frame an f_locals dict
    v = inner(ch)
    OUT.append((names, v))


def test_a_frame_that_called_locals_is_still_a_function_frame():
    OUT.clear()
    ch = channel()
    t = tasklet(calls_locals)(ch)
    stackless.run()
    assert t.blocked and t.restorable
    copy, ch2 = pickle.loads(pickle.dumps((t, ch)))
    t.kill()
    ch2.send(7)
    stackless.run()
    assert OUT == [(["ch"], 7)]


def test_an_error_of_the_tracer_at_resume_is_raised_in_the_frame():
    OUT.clear()

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code is inner.__code__:
            raise KeyError("from the tracer")
        return None
    ch = channel()
    t = tasklet(outer)(ch)
    stackless.run()
    copy, ch2 = pickle.loads(pickle.dumps((t, ch)))
    t.kill()
    copy.trace_function = tracer
    with pytest.raises(KeyError, match="from the tracer"):
        ch2.send(5)
        stackless.run()
    assert not copy.alive and OUT == []


# ---------------------------------------------------------------------------
# frames that are not restorable
# ---------------------------------------------------------------------------

def in_module_code(c):
    exec("c.switch()", {"c": c})


def in_class_body(c):
    class Body:
        c.switch()
    return Body


def test_module_level_and_class_body_frames_raise_a_clear_error():
    c = continulet(in_module_code)
    c.switch()
    with pytest.raises(pickle.PicklingError,
                       match=r"<module> \(<string>, line 1\) is module-level code"):
        pickle.dumps(c)
    c.switch()
    c = continulet(in_class_body)
    c.switch()
    with pytest.raises(pickle.PicklingError,
                       match=r"in_class_body.<locals>.Body \(.*test_pickle_resume.py, line \d+\) "
                             r"is class-body code"):
        pickle.dumps(c)
    c.switch()


def pause_in_class_body():
    class Body:
        stackless.schedule_remove()
    return Body


def test_a_tasklet_paused_in_a_class_body_pickles_as_not_restorable():
    t = tasklet(pause_in_class_body)()
    stackless.run()
    assert t.paused and not t.restorable
    copy = pickle.loads(pickle.dumps(t))
    assert copy.alive and not copy.restorable
    copy.insert()
    with pytest.raises(RuntimeError, match="pickled while it was running"):
        stackless.run()
    t.kill()
