"""The Stackless Python API of the ``stackless`` package.

The tests check what a program written for Stackless Python 3.7 relies on:
values, exception types and messages, run-queue order, threads, contexts,
preemption, pickling.  They run on CPython with this project's
``_continuation`` and on PyPy with PyPy's own.
"""

from __future__ import annotations

import builtins
import contextvars
import dis
import gc
import os
import pickle
import subprocess
import sys
import threading
import time
import types
import weakref

import pytest

import stackless
from stackless import bomb, channel, tasklet

PYPY = sys.implementation.name == "pypy"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLOCK = "Deadlock: the last runnable tasklet cannot be blocked."


@pytest.fixture(autouse=True)
def clean_scheduler():
    """Each test starts and must end with only the main tasklet runnable."""
    assert stackless.getcurrent() is stackless.getmain()
    assert stackless.getruncount() == 1
    yield
    for t in stackless._live_tasklets(threading.get_ident()):
        if t.alive and not t.is_main:
            t.kill()
    stackless.set_schedule_callback(None)
    stackless.set_channel_callback(None)
    stackless.set_error_handler(None)
    assert stackless.getcurrent() is stackless.getmain()
    assert stackless.getruncount() == 1


def run_script(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args, "-c", code] if code else
                          [sys.executable, *args],
                          capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------

def test_imports_this_package_not_pypys():
    assert stackless.__file__.endswith(os.path.join("stackless", "__init__.py"))
    assert hasattr(stackless, "tasklet") and hasattr(stackless, "coroutine")


def test_all_names_exist():
    for name in stackless.__all__:
        assert hasattr(stackless, name), name
    for name in ("run", "schedule", "schedule_remove", "getcurrent", "getmain",
                 "getruncount", "getcurrentid", "get_thread_info",
                 "set_schedule_callback", "get_schedule_callback",
                 "set_channel_callback", "get_channel_callback",
                 "set_error_handler", "switch_trap", "enable_softswitch",
                 "getthreads", "atomic", "bomb", "TaskletExit", "tasklet",
                 "channel", "current", "main", "runcount", "threads"):
        assert name in stackless.__all__, name


def test_tasklet_exit_is_system_exit_and_builtin():
    assert issubclass(stackless.TaskletExit, SystemExit)
    assert builtins.TaskletExit is stackless.TaskletExit


def test_module_attributes():
    assert stackless.current is stackless.getcurrent()
    assert stackless.main is stackless.getmain()
    assert stackless.main.is_main and stackless.current.is_current
    assert stackless.runcount == 1
    assert threading.get_ident() in stackless.threads
    assert stackless.stackless is stackless
    t = tasklet(lambda: None)()
    assert stackless.runcount == 2
    stackless.run()
    assert stackless.runcount == 1


def test_module_properties_are_read_only():
    # as in Stackless 3.7, whose module type has them as properties: they
    # can be neither replaced nor deleted, and stay right after the attempt
    for name in ("current", "main", "runcount", "threads", "uncollectables"):
        with pytest.raises(AttributeError):
            setattr(stackless, name, 1)
        with pytest.raises(AttributeError):
            delattr(stackless, name)
    assert stackless.current is stackless.getcurrent()
    assert stackless.runcount == 1
    assert stackless.uncollectables == []
    assert isinstance(stackless, types.ModuleType)


@pytest.mark.skipif(PYPY, reason="CPython's specializing interpreter")
def test_module_attribute_lookups_can_be_specialized():
    # A module __getattr__ keeps CPython from specializing any attribute
    # lookup on the module: `stackless.schedule()` would pay a dictionary
    # lookup at each call.  3.14 specializes lookups on a module of a
    # ModuleType subclass (3.11 and 3.13 on exact modules only).
    assert "__getattr__" not in vars(stackless)
    assert type(stackless).__getattribute__ is types.ModuleType.__getattribute__
    assert "__getattr__" not in vars(type(stackless))
    if sys.version_info < (3, 14):
        return
    ns = {}
    exec("def f(m):\n    for _ in range(100):\n        m.getruncount\n", ns)
    ns["f"](stackless)
    ops = [i.opname for i in dis.get_instructions(ns["f"], adaptive=True) if "ATTR" in i.opname]
    assert ops == ["LOAD_ATTR_MODULE"]


def test_enable_softswitch_is_one_setting_for_the_process():
    # as in Stackless 3.7: True by default, None only asks, the old value
    # comes back, any object counts by its truth
    e = stackless.enable_softswitch
    if PYPY:    # PyPy's continulets cannot show their frames: tasklets never move
        assert e(True) is False and e(None) is False
        return
    try:
        assert e(None) is True
        assert e(0) is True and e(None) is False
        assert e("x") is False and e(None) is True
        box = []
        th = threading.Thread(target=lambda: box.append(e(False)))
        th.start()
        th.join()
        assert box == [True] and e(None) is False      # the whole process
    finally:
        e(True)
    with pytest.raises(TypeError, match=r"^enable_softswitch\(\) takes exactly one argument \(0 given\)$"):
        e()
    with pytest.raises(TypeError, match=r"^enable_softswitch\(\) takes exactly one argument \(2 given\)$"):
        e(1, 2)


def test_getcurrentid_and_thread_info():
    ids = []

    def f():
        ids.append(stackless.getcurrentid())
        ids.append(id(stackless.getcurrent()))
        ids.append(stackless.get_thread_info(threading.get_ident()))

    t = tasklet(f)()
    assert stackless.getcurrentid() == id(stackless.main)
    stackless.run()
    assert ids[0] == ids[1] == id(t)
    main, current, runcount = ids[2]
    assert main is stackless.main and current is t and runcount == 1
    assert stackless.get_thread_info(threading.get_ident()) == (stackless.main, stackless.main, 1)


def test_schedule_callback():
    seen = []
    assert stackless.set_schedule_callback(lambda p, n: seen.append((p, n))) is None
    cb = stackless.get_schedule_callback()
    t = tasklet(lambda: None)()
    stackless.run()
    assert seen == [(stackless.main, t), (t, stackless.main)]
    assert stackless.set_schedule_callback(None) is cb
    assert stackless.get_schedule_callback() is None


def test_channel_callback():
    seen = []
    stackless.set_channel_callback(lambda *a: seen.append(a + (a[1].tempval,)))
    assert stackless.get_channel_callback() is not None
    ch = channel()
    t = tasklet(ch.receive)()
    stackless.run()
    ch.send(3)
    stackless.set_channel_callback(None)
    # as in Stackless: int flags, and the sender holds the value in tempval
    assert seen == [(ch, t, 0, 1, None), (ch, stackless.main, 1, 0, 3)]
    assert all(type(x) is int for s in seen for x in s[2:4])


def test_switch_trap():
    t = tasklet(lambda: None)()
    old = stackless.switch_trap(1)
    try:
        assert old == 0
        with pytest.raises(RuntimeError, match="switch_trap"):
            stackless.schedule()
        with pytest.raises(RuntimeError, match="switch_trap"):
            stackless.run()
    finally:
        assert stackless.switch_trap(-1) == 1
    stackless.run()
    assert not t.alive


def test_atomic_context_manager():
    cur = stackless.getcurrent()
    assert not cur.atomic
    with stackless.atomic():
        assert cur.atomic
        with stackless.atomic():
            assert cur.atomic
        assert cur.atomic
    assert not cur.atomic
    assert cur.set_atomic(True) is False
    assert cur.set_atomic(False) is True


def test_bomb():
    b = bomb(ValueError, ValueError("x"), None)
    assert b.type is ValueError and str(b.value) == "x" and b.traceback is None
    with pytest.raises(ValueError, match="x"):
        b.raise_()
    with pytest.raises(KeyError):
        bomb(KeyError).raise_()


# ---------------------------------------------------------------------------
# Tasklets
# ---------------------------------------------------------------------------

def test_tasklet_lifecycle_flags():
    def f(x):
        out.append(x)
    out = []
    t = tasklet(f)
    assert not t.alive and not t.scheduled and not t.paused and t.restorable
    t(1)
    assert t.alive and t.scheduled and not t.paused and not t.blocked
    stackless.run()
    assert out == [1] and not t.alive and not t.scheduled


def test_run_order_and_runcount():
    out = []
    for i in range(3):
        tasklet(out.append)(i)
    assert stackless.getruncount() == 4
    stackless.run()
    assert out == [0, 1, 2]


def test_schedule_round_robin():
    out = []

    def f(name):
        for i in range(3):
            out.append((name, i))
            stackless.schedule()

    tasklet(f)("a")
    tasklet(f)("b")
    stackless.run()
    assert out == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_schedule_returns_retval_or_current():
    res = []

    def f():
        res.append(stackless.schedule())
        res.append(stackless.schedule(42))

    t = tasklet(f)()
    stackless.run()
    assert res == [t, 42]


def test_runcount_inside_run_excludes_main():
    counts = []
    tasklet(lambda: counts.append(stackless.getruncount()))()
    tasklet(lambda: counts.append(stackless.getruncount()))()
    stackless.run()
    assert counts == [2, 1]


def test_bind_with_args_is_paused_then_insert():
    out = []
    t = tasklet()
    t.bind(out.append, (1,))
    assert t.alive and t.paused and not t.scheduled
    t.insert()
    assert t.scheduled and not t.paused
    stackless.run()
    assert out == [1]


def test_constructor_with_args_and_kwargs():
    out = []
    t = tasklet(lambda a, b: out.append((a, b)), (1,), {"b": 2})
    assert t.paused
    t.insert()
    stackless.run()
    assert out == [(1, 2)]


def test_setup_and_rebinding_errors():
    t = tasklet(lambda: None)
    t.setup()
    with pytest.raises(RuntimeError, match="^tasklet is alive$"):
        t.setup()
    with pytest.raises(RuntimeError, match="^tasklet is scheduled$"):
        t.bind(lambda: None)
    stackless.run()
    with pytest.raises(TypeError, match="must be a callable or None"):
        tasklet(42)
    with pytest.raises(RuntimeError, match="^the tasklet was not bound to a function$"):
        tasklet().setup()
    with pytest.raises(RuntimeError, match="^can't \\(re\\)bind the current tasklet$"):
        stackless.getcurrent().bind(lambda: None)


def test_bind_keeps_the_function_in_tempval():
    # Stackless: a tasklet bound to a function without arguments is not
    # alive, and its function waits in tempval until setup()
    def f(*a):
        pass
    t = tasklet(f)
    assert t.tempval is f and not t.alive
    t.bind(f, ())
    assert t.tempval is None and t.alive and t.paused
    t.bind(f)       # a paused, unstarted tasklet: its arguments are dropped
    assert t.tempval is f and not t.alive
    t.bind(None)
    assert t.tempval is None


def test_unbind_and_rebind():
    out = []
    t = tasklet(out.append, (1,))
    t.bind(None)
    assert not t.alive and not t.paused
    t.bind(out.append)
    t(2)
    stackless.run()
    assert out == [2]
    with pytest.raises(RuntimeError):
        stackless.getcurrent().bind(None)


def test_insert_remove_errors():
    ch = channel()
    t = tasklet(ch.receive)()
    stackless.run()
    assert t.blocked
    with pytest.raises(RuntimeError, match="You cannot run a blocked tasklet"):
        t.insert()
    with pytest.raises(RuntimeError, match="You cannot remove a blocked tasklet."):
        t.remove()
    ch.send(None)
    dead = tasklet(lambda: None)
    with pytest.raises(RuntimeError, match=r"You cannot run an unbound\(dead\) tasklet"):
        dead.insert()
    with pytest.raises(RuntimeError, match="You cannot run an unbound"):
        dead.run()


def test_remove_pauses_and_insert_resumes():
    out = []
    t = tasklet(out.append)(1)
    assert t.remove() is t
    assert t.paused and stackless.getruncount() == 1
    stackless.run()
    assert out == []
    t.insert()
    stackless.run()
    assert out == [1]


def test_run_rotates_queue_to_target():
    out = []

    def f(x):
        out.append(x)

    a, b, c = tasklet(f)("a"), tasklet(f)("b"), tasklet(f)("c")
    out.append("main")
    c.run()
    # c runs, then the main tasklet (right after c in the circle), then a, b
    out.append("back")
    stackless.run()
    assert out == ["main", "c", "back", "a", "b"]


def test_tasklet_switch_pauses_current():
    out = []

    def f():
        out.append("f")
        main.run()
        out.append("f again")

    main = stackless.getmain()
    t = tasklet(f)
    t.bind(f, ())
    t.switch()
    assert out == ["f"]
    assert t.alive and not t.paused  # f ran main.run(): it stays scheduled
    stackless.run()
    assert out == ["f", "f again"]

    def g():
        res.append(main.paused)
        main.insert()

    res = []
    t2 = tasklet(g, ())
    t2.switch()
    assert res == [True]


def test_schedule_remove_returns_tempval_of_inserter():
    got = []

    def f():
        got.append(stackless.schedule_remove())
        got.append(stackless.schedule_remove("default"))

    t = tasklet(f)()
    stackless.run()
    assert t.paused
    t.tempval = "from main"
    t.insert()
    stackless.run()
    assert got == ["from main"]
    t.insert()
    stackless.run()
    assert got == ["from main", "default"]


def test_kill_blocked_tasklet_fixes_balance():
    ch = channel()
    caught = []

    def f():
        try:
            ch.receive()
        except TaskletExit:
            caught.append("exit")
            raise

    t = tasklet(f)()
    stackless.run()
    assert ch.balance == -1 and t.blocked
    t.kill()
    assert caught == ["exit"]
    assert ch.balance == 0 and not t.alive and not t.blocked
    assert ch.queue is None


def test_kill_blocked_sender_fixes_balance():
    ch = channel()
    t = tasklet(ch.send)(1)
    u = tasklet(ch.send)(2)
    stackless.run()
    assert ch.balance == 2
    t.kill()
    assert ch.balance == 1
    assert ch.receive() == 2
    stackless.run()
    assert not u.alive


def test_kill_pending():
    out = []

    def f():
        try:
            stackless.schedule_remove()
        finally:
            out.append("finally")

    t = tasklet(f)()
    stackless.run()
    t.kill(pending=True)
    assert out == [] and t.scheduled
    stackless.run()
    assert out == ["finally"] and not t.alive


def test_kill_unstarted_never_runs_body():
    out = []
    t = tasklet(out.append)(1)
    t.kill()
    assert not t.alive and out == []
    assert stackless.getruncount() == 1
    t.kill()   # killing a dead tasklet does nothing


def test_kill_from_inside_is_silent():
    out = []

    def f():
        stackless.getcurrent().kill()
        out.append("unreachable")

    tasklet(f)()
    stackless.run()
    assert out == []


def test_throw_and_raise_exception():
    got = []

    def f():
        try:
            stackless.schedule_remove()
        except Exception as e:
            got.append((type(e), e.args))
        try:
            stackless.schedule_remove()
        except Exception as e:
            got.append((type(e), e.args))

    t = tasklet(f)()
    stackless.run()
    t.throw(ValueError, "v")
    assert got == [(ValueError, ("v",))]
    t.raise_exception(KeyError, 1, 2)
    assert got[1] == (KeyError, (1, 2))
    assert not t.alive


def test_throw_uncaught_reaches_main():
    t = tasklet(stackless.schedule_remove)()
    stackless.run()
    with pytest.raises(ZeroDivisionError):
        t.throw(ZeroDivisionError("x"))
    assert not t.alive


def test_throw_pending():
    got = []

    def f():
        try:
            stackless.schedule_remove()
        except IndexError:
            got.append("index")

    t = tasklet(f)()
    stackless.run()
    t.throw(IndexError, pending=True)
    assert got == []
    stackless.run()
    assert got == ["index"]


def test_uncaught_exception_reraised_in_main():
    def f():
        raise ValueError("boom")

    t = tasklet(f)()
    with pytest.raises(ValueError, match="boom") as info:
        stackless.run()
    assert not t.alive
    assert any(e.name == "f" for e in info.traceback)


def test_other_tasklets_survive_an_error():
    out = []
    tasklet(lambda: 1 / 0)()
    tasklet(out.append)(1)
    with pytest.raises(ZeroDivisionError):
        stackless.run()
    stackless.run()
    assert out == [1]


def test_error_handler():
    seen = []

    def handler(typ, val, tb):
        seen.append((typ, str(val), tb is not None))

    assert stackless.set_error_handler(handler) is None
    out = []
    tasklet(lambda: 1 / 0)()
    tasklet(out.append)(2)
    stackless.run()
    assert seen == [(ZeroDivisionError, "division by zero", True)]
    assert out == [2]
    assert stackless.set_error_handler(None) is handler


def test_error_handler_that_raises_reaches_main():
    def handler(typ, val, tb):
        raise KeyError("from handler")

    stackless.set_error_handler(handler)
    tasklet(lambda: 1 / 0)()
    with pytest.raises(KeyError):
        stackless.run()


def test_taskletexit_is_silent_but_systemexit_is_not():
    def f():
        raise TaskletExit

    tasklet(f)()
    stackless.run()

    def g():
        raise SystemExit(3)

    tasklet(g)()
    with pytest.raises(SystemExit) as info:
        stackless.run()
    assert info.value.code == 3


def test_deadlock_main_blocks():
    ch = channel()
    with pytest.raises(RuntimeError) as info:
        ch.receive()
    assert str(info.value) == DEADLOCK
    assert ch.balance == 0
    with pytest.raises(RuntimeError, match=DEADLOCK):
        ch.send(1)
    assert ch.balance == 0


def test_deadlock_when_last_tasklet_blocks_while_main_waits():
    # as in Stackless: the tasklet that blocks last gets the error; here it
    # does not catch it, so it dies and main gets it as its uncaught error
    a, b = channel(), channel()
    t = tasklet(b.receive)()
    with pytest.raises(RuntimeError, match=DEADLOCK):
        a.receive()
    assert a.balance == 0 and b.balance == 0 and not t.alive


def test_deadlock_is_raised_in_the_tasklet_that_blocks_last():
    main_ch = channel()
    got = []

    def task(op):
        c = channel()
        try:
            c.send(1) if op == "send" else c.receive()
        except RuntimeError as e:
            got.append(str(e))
        main_ch.send(None)

    for op in ("send", "receive"):
        tasklet(task)(op)
        assert main_ch.receive() is None
    assert got == [DEADLOCK, DEADLOCK]


@pytest.mark.parametrize("op, message", [
    ("receive", "the main tasklet is receiving without a sender available."),
    ("send", "the main tasklet is sending without a receiver available."),
])
def test_blocked_main_is_woken_when_the_last_tasklet_ends(op, message):
    c = channel()
    tasklet(lambda: None)()
    with pytest.raises(RuntimeError) as info:
        c.send(1) if op == "send" else c.receive()
    assert str(info.value) == message and c.balance == 0


def test_run_returns_when_all_blocked():
    ch = channel()
    ts = [tasklet(ch.receive)() for _ in range(3)]
    assert stackless.run() is None
    assert ch.balance == -3 and all(t.blocked for t in ts)
    for i in range(3):
        ch.send(i)
    assert all(not t.alive for t in ts)


def test_nested_run_in_tasklet():
    out = []

    def inner():
        out.append("inner")

    def outer():
        tasklet(inner)()
        out.append("outer before")
        stackless.run()
        out.append("outer after")

    tasklet(outer)()
    stackless.run()
    assert out == ["outer before", "inner", "outer after"]


def test_tasklet_subclass():
    class MyTasklet(tasklet):
        def __init__(self, func, tag):
            super().__init__(func)
            self.tag = tag

    out = []
    t = MyTasklet(lambda: out.append(stackless.getcurrent().tag), "x")
    t()
    assert isinstance(t, tasklet)
    stackless.run()
    assert out == ["x"]


def test_tasklet_and_channel_take_no_attributes_but_their_subclasses_do():
    """As in Stackless 3.7: a tasklet or a channel has no ``__dict__``, so
    storing an attribute raises AttributeError; the instances of a subclass
    have one, and the collector sees what it holds."""
    for obj in (tasklet(lambda: None), channel()):
        assert not hasattr(obj, "__dict__")
        with pytest.raises(AttributeError, match="object has no attribute 'tag'"):
            obj.tag = "x"

    class Named(tasklet):
        pass

    class Tagged(channel):
        pass

    for make in (lambda: Named(lambda: None), Tagged):
        obj = make()
        obj.tag = "x"
        obj.me = obj
        assert vars(obj) == {"tag": "x", "me": obj}
        r = weakref.ref(obj)
        del obj
        gc.collect()
        assert r() is None


def test_attributes_of_suspended_tasklet():
    ch = channel()

    def deep(n):
        if n:
            return deep(n - 1)
        return ch.receive()

    t = tasklet(deep)(3)
    assert t.frame is None and t.recursion_depth == 0
    stackless.run()
    assert t.frame.f_code.co_name == "deep"
    assert t.recursion_depth == 4
    assert t.nesting_level == 0
    assert t.thread_id == threading.get_ident()
    assert not t.is_main and not t.is_current
    # Python frames only (tests/test_pickle_running.py); PyPy's
    # _continuation cannot read frames
    assert t.restorable is not PYPY
    ch.send(None)
    assert t.frame is None



def test_frames_of_suspended_tasklets_seen_from_another_tasklet():
    # Stackless 3.7: a tasklet suspended in schedule() shows the frame it
    # called schedule() from, and so does main, which waits in run()
    seen = {}

    def a_func():
        stackless.schedule()
        stackless.schedule()

    def b_func(ta):
        seen["a"] = ta.frame.f_code.co_name
        seen["main"] = (stackless.main.frame.f_code.co_name, stackless.main.frame.f_lineno)
        seen["main_depth"] = stackless.main.recursion_depth > 0
        stackless.schedule()

    def runner():
        line = sys._getframe().f_lineno + 1
        stackless.run()
        return line

    ta = tasklet(a_func)()
    tasklet(b_func)(ta)
    line = runner()
    assert seen == {"a": "a_func", "main": ("runner", line), "main_depth": True}
    assert ta.frame is None         # finished


def test_tasklet_blocked_in_a_c_function_has_no_frame():
    ch = channel()
    t = tasklet(ch.receive)()
    stackless.run()
    assert t.blocked and t.frame is None
    ch.send(1)


def test_next_and_prev():
    main = stackless.getmain()
    a = tasklet(lambda: None)()
    b = tasklet(lambda: None)()
    assert main.next is a and a.next is b and b.next is main
    assert main.prev is b and b.prev is a
    stackless.run()
    assert main.next is main and a.next is None


def test_tempval_property():
    t = tasklet(lambda: None)
    t.tempval = 5
    assert t.tempval == 5


def test_set_ignore_nesting_and_block_trap():
    t = tasklet(lambda: None)
    assert t.set_ignore_nesting(True) is False
    assert t.ignore_nesting
    assert t.set_ignore_nesting(False) is True
    ch = channel()

    def f():
        stackless.getcurrent().block_trap = True
        try:
            ch.receive()
        except RuntimeError as e:
            out.append(str(e))

    out = []
    tasklet(f)()
    stackless.run()
    assert out == ["this tasklet does not like to be blocked."]
    assert ch.balance == 0


def test_trace_and_profile_function_attributes():
    t = tasklet(lambda: None, ())      # alive (paused): it may have them
    t.trace_function = print
    t.profile_function = repr
    assert t.trace_function is print and t.profile_function is repr
    assert stackless.getcurrent().trace_function is sys.gettrace()
    t.trace_function = t.profile_function = None    # before the fixture kills it


def _in_own_thread(fn):
    """Run fn in a new thread (its own scheduler, its own tracing state)."""
    out = []
    th = threading.Thread(target=lambda: out.append(fn()))
    th.start()
    th.join()
    return out[0]


def test_trace_function_of_a_tasklet_is_installed_while_it_runs():
    def scenario():
        events = []

        def tracer(frame, event, arg):
            if frame.f_code.co_name == "traced_call":
                events.append(event)
            return None

        def traced_call():
            return 1

        def body():
            seen.append(sys.gettrace() is tracer)
            traced_call()
            stackless.schedule()
            seen.append(sys.gettrace() is tracer)
            traced_call()

        seen = []
        t = tasklet(body)()
        t.trace_function = tracer           # t is not running yet
        stackless.schedule()
        main_in_between = sys.gettrace()
        traced_call()                       # main is not traced
        stackless.run()
        return seen, events, main_in_between, sys.gettrace(), t.trace_function is tracer

    seen, events, in_between, after, kept = _in_own_thread(scenario)
    assert seen == [True, True]
    assert events == ["call", "call"]       # only the tasklet's two calls
    assert in_between is None and after is None and kept


def test_each_tasklet_keeps_its_own_profile_function():
    def scenario():
        calls = []

        def profiler(frame, event, arg):
            if event == "call":
                calls.append(frame.f_code.co_name)

        def worker():
            seen.append(sys.getprofile())
            stackless.schedule()
            seen.append(sys.getprofile())

        seen = []
        main = stackless.getcurrent()
        main.profile_function = profiler    # main's own, set while it runs
        tasklet(worker)()
        stackless.run()

        def after_run():
            pass
        after_run()
        main.profile_function = None
        return seen, "after_run" in calls, "worker" in calls

    seen, main_profiled, worker_profiled = _in_own_thread(scenario)
    assert seen == [None, None]             # the tasklet has its own: none
    assert main_profiled and not worker_profiled


def test_exception_state_per_tasklet():
    seen = []

    def f():
        seen.append(sys.exc_info()[0])
        try:
            raise KeyError
        except KeyError:
            stackless.schedule()
            seen.append(sys.exc_info()[0])

    try:
        raise ValueError
    except ValueError:
        tasklet(f)()
        stackless.schedule()
        seen.append(sys.exc_info()[0])
        stackless.run()
    assert seen == [None, ValueError, KeyError]


# ---------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------

def test_classic_demo_order(capsys):
    from stackless.__main__ import channel_demo
    channel_demo()
    assert capsys.readouterr().out.splitlines() == [
        "Receiving tasklet started",
        "Sending tasklet started",
        "send from sending_tasklet",
        "Receiving tasklet finished",
        "Just another tasklet in the scheduler",
        "sending tasklet finished",
    ]


def _preference_order(pref, sender_first):
    ch = channel()
    ch.preference = pref
    out = []

    def sender():
        ch.send("v")
        out.append("sender after")

    def receiver():
        out.append(ch.receive())
        out.append("receiver after")

    def other():
        out.append("other")

    if sender_first:
        tasklet(sender)()
        tasklet(receiver)()
    else:
        tasklet(receiver)()
        tasklet(sender)()
    tasklet(other)()
    stackless.run()
    return out


def test_preference_receiver_default():
    assert channel().preference == -1
    assert _preference_order(-1, sender_first=False) == [
        "v", "receiver after", "other", "sender after"]
    assert _preference_order(-1, sender_first=True) == [
        "v", "receiver after", "other", "sender after"]


def test_preference_sender():
    assert _preference_order(1, sender_first=False) == [
        "sender after", "other", "v", "receiver after"]
    assert _preference_order(1, sender_first=True) == [
        "sender after", "other", "v", "receiver after"]


def test_preference_none():
    assert _preference_order(0, sender_first=False) == [
        "sender after", "other", "v", "receiver after"]
    assert _preference_order(0, sender_first=True) == [
        "v", "receiver after", "other", "sender after"]


def test_schedule_all():
    ch = channel()
    ch.schedule_all = True
    out = []

    def receiver():
        out.append(ch.receive())

    def sender():
        ch.send(1)
        out.append("sender after")

    tasklet(receiver)()
    tasklet(sender)()
    tasklet(out.append)("other")
    stackless.run()
    assert out == ["other", 1, "sender after"]


def test_main_sends_and_receives():
    ch = channel()
    tasklet(lambda: ch.send(ch.receive() * 2))()
    stackless.schedule()
    ch.send(21)
    assert ch.receive() == 42


def test_send_exception_and_send_throw():
    ch = channel()
    got = []

    def receiver():
        for _ in range(3):
            try:
                ch.receive()
            except Exception as e:
                got.append((type(e), e.args))

    tasklet(receiver)()
    stackless.run()
    ch.send_exception(ValueError, 1, 2)
    ch.send_throw(KeyError("k"))
    ch.send_throw(IndexError, "i")
    assert got == [(ValueError, (1, 2)), (KeyError, ("k",)), (IndexError, ("i",))]


def test_send_exception_to_waiting_sender_side():
    ch = channel()
    tasklet(ch.send_exception)(KeyError, "x")
    stackless.run()
    with pytest.raises(KeyError):
        ch.receive()


def test_send_sequence_and_iteration():
    ch = channel()
    got = []

    def receiver():
        for x in ch:
            got.append(x)
        got.append("end")

    tasklet(receiver)()
    stackless.run()
    assert ch.send_sequence(range(5)) == 5
    ch.send_exception(StopIteration)
    assert got == [0, 1, 2, 3, 4, "end"]


def test_balance_and_queue():
    ch = channel()
    ts = [tasklet(ch.receive)() for _ in range(3)]
    stackless.run()
    assert ch.balance == -3
    assert ch.queue is ts[0] and ts[0].next is ts[1] and ts[1].next is ts[2]
    assert ts[2].next is None
    for i in range(3):
        ch.send(i)
    assert ch.balance == 0 and ch.queue is None
    senders = [tasklet(ch.send)(i) for i in range(2)]
    stackless.run()
    assert ch.balance == 2 and ch.queue is senders[0]
    assert [ch.receive(), ch.receive()] == [0, 1]


def test_close_and_open():
    ch = channel()
    tasklet(ch.send)(1)
    stackless.run()
    ch.close()
    assert ch.closing and not ch.closed
    assert ch.receive() == 1
    assert ch.closed
    with pytest.raises(ValueError) as info:
        ch.send(2)
    assert str(info.value) == "Send/receive operation on a closed channel"
    with pytest.raises(ValueError):
        ch.receive()
    ch.open()
    assert not ch.closing and not ch.closed
    tasklet(ch.send)(3)
    assert ch.receive() == 3


def test_channel_subclass():
    class Counting(channel):
        def __init__(self):
            super().__init__()
            self.sent = 0

        def send(self, value):
            self.sent += 1
            return super().send(value)

    ch = Counting()
    tasklet(ch.receive)()
    stackless.run()
    ch.send(1)
    assert ch.sent == 1 and ch.balance == 0


def test_a_new_channel_ignores_its_arguments_and_starts_empty():
    """As Stackless 3.7: channel(1, 2, x=3) is an empty channel with the
    default settings; each new channel has a queue of its own."""
    ch, other = channel(1, 2, x=3), channel()
    assert (ch.balance, ch.preference, ch.schedule_all, ch.closing, ch.queue) == (0, -1, 0, False, None)
    tasklet(ch.receive)()
    stackless.run()
    assert ch.balance == -1 and other.balance == 0 and other.queue is None
    ch.send(1)
    assert ch.balance == 0


def test_a_replaced_channel_init_is_what_makes_channels(monkeypatch):
    """Replacing the class's __init__ (the Python reference's own
    definition) takes effect for every channel made afterwards, and
    undoing it restores the usual channels."""
    calls = []
    original = channel.__init__

    def init(self, *args, **kwargs):
        calls.append(args)
        original(self)
        self.preference = 1
    monkeypatch.setattr(channel, "__init__", init)
    assert channel(7).preference == 1 and calls == [(7,)]
    monkeypatch.undo()
    assert channel().preference == -1 and calls == [(7,)]


def test_channel_many_tasklets():
    ch = channel()
    n = 2000
    total = []

    def worker(i):
        ch.send(i)

    for i in range(n):
        tasklet(worker)(i)
    for _ in range(n):
        total.append(ch.receive())
    stackless.run()
    assert sorted(total) == list(range(n))


# ---------------------------------------------------------------------------
# Contexts
# ---------------------------------------------------------------------------

VAR = contextvars.ContextVar("VAR", default="unset")


def test_context_isolated_per_tasklet():
    VAR.set("main")
    seen = []

    def f(name):
        seen.append((name, VAR.get()))
        VAR.set(name)
        stackless.schedule()
        seen.append((name, VAR.get()))

    tasklet(f)("a")
    tasklet(f)("b")
    stackless.schedule()
    seen.append(("main", VAR.get()))
    stackless.run()
    assert seen == [("a", "main"), ("b", "main"), ("main", "main"),
                    ("a", "a"), ("b", "b")]
    assert VAR.get() == "main"


def test_a_tasklet_bound_in_an_empty_context_makes_one_only_when_it_needs_one():
    # A copy of an empty context is an empty context: on CPython a tasklet
    # bound where no variable is set starts without one, and one is made
    # when its code first uses contextvars or context_id/context_run ask
    # for it (thousands of tasklets that never use them own no Context:
    # docs/performance.md).  What the tasklets see is a copy's all the
    # same.  (In a new thread, whose context is empty.)
    out = {}

    def contexts():
        return sum(type(o) is contextvars.Context for o in gc.get_objects())

    def body():
        contextvars.copy_context()      # (the thread's own context exists)
        ch = stackless.channel()
        seen = []

        def g():
            seen.append(VAR.get())
            VAR.set("g")
            ch.receive()
            seen.append(VAR.get())
        before = contexts()
        idle = [tasklet(ch.receive)() for _ in range(100)]
        t = tasklet(g)()
        VAR.set("creator")              # after the binding: not in the copy
        stackless.run()
        out["made"] = contexts() - before
        ids = (t.context_id, idle[0].context_id)
        out["stable"] = ids == (t.context_id, idle[0].context_id)
        out["peek"] = (t.context_run(VAR.get), idle[0].context_run(VAR.get))
        for x in idle:
            x.kill()
        ch.send(None)
        out["seen"] = seen
        out["creator"] = VAR.get()
    th = threading.Thread(target=body)
    th.start()
    th.join()
    if sys.implementation.name != "pypy":     # (PyPy's tasklets copy it: docs/stackless.md)
        assert out["made"] == 1
    assert out["stable"] and out["peek"] == ("g", "unset")
    assert out["seen"] == ["unset", "g"] and out["creator"] == "creator"


def test_set_context_and_context_run():
    ctx = contextvars.Context()
    ctx.run(VAR.set, "in ctx")
    seen = []
    t = tasklet(lambda: seen.append(VAR.get()))
    t.set_context(ctx)
    assert t.context_id == id(ctx)
    assert t.context_run(VAR.get) == "in ctx"
    t()
    stackless.run()
    assert seen == ["in ctx"]
    with pytest.raises(TypeError):
        t.set_context("nope")


def _ctx_with(value):
    ctx = contextvars.Context()
    ctx.run(VAR.set, value)
    return ctx


def test_set_context_of_a_suspended_tasklet_applies_when_it_resumes():
    seen = []
    ch = stackless.channel()

    def f():
        VAR.set("own")
        seen.append(VAR.get())
        stackless.schedule()        # paused in the run queue
        seen.append(VAR.get())
        ch.receive()                # blocked on a channel
        seen.append(VAR.get())

    before = VAR.get()
    t = tasklet(f)()
    stackless.schedule()
    assert seen == ["own"]
    first = _ctx_with("first")
    t.set_context(first)
    assert t.context_id == id(first)
    assert t.context_run(VAR.get) == "first"
    stackless.schedule()
    assert seen == ["own", "first"] and t.blocked
    t.set_context(_ctx_with("second"))
    ch.send(None)
    stackless.run()
    assert seen == ["own", "first", "second"]
    assert VAR.get() == before      # main's own context untouched


def test_set_context_of_the_current_tasklet_is_immediate():
    seen = []
    other = _ctx_with("other")

    def f():
        VAR.set("own")
        me = stackless.getcurrent()
        me.set_context(other)
        seen.append((VAR.get(), me.context_id == id(other)))
        VAR.set("changed")

    tasklet(f)()
    stackless.run()
    assert seen == [("other", True)]
    assert other[VAR] == "changed"


def test_set_context_of_the_main_tasklet_is_refused():
    # its context is the thread's, which threading and asyncio enter with
    # Context.run(): they must find it in place when they leave
    main = stackless.getmain()
    with pytest.raises(RuntimeError, match="main tasklet"):
        main.set_context(_ctx_with("nope"))
    assert main.context_run(VAR.get) == VAR.get()


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------

def test_each_thread_has_its_own_scheduler():
    res = {}

    def thread_main():
        out = []
        tasklet(out.append)("in thread")
        res["main_differs"] = stackless.getmain() is not main
        res["runcount"] = stackless.getruncount()
        stackless.run()
        res["out"] = out
        res["current_is_main"] = stackless.getcurrent() is stackless.getmain()

    main = stackless.getmain()
    t = tasklet(lambda: None)()
    th = threading.Thread(target=thread_main)
    th.start()
    th.join()
    assert res == {"main_differs": True, "runcount": 2, "out": ["in thread"],
                   "current_is_main": True}
    assert stackless.getruncount() == 2
    stackless.run()
    assert not t.alive


def test_channel_between_threads():
    ch = channel()
    got = []

    def thread_main():
        for i in range(5):
            ch.send(i)
        got.append(ch.receive())

    th = threading.Thread(target=thread_main)
    th.start()
    for _ in range(5):
        got.append(ch.receive())
    ch.send("back")
    th.join(10)
    assert not th.is_alive()
    assert got == [0, 1, 2, 3, 4, "back"]


def test_threadblock_run_waits_for_other_thread():
    ch = channel()
    got = []

    def receiver():
        got.append(ch.receive())

    tasklet(receiver)()

    def thread_main():
        time.sleep(0.2)
        ch.send("late")

    th = threading.Thread(target=thread_main)
    th.start()
    stackless.run(threadblock=True)
    th.join(10)
    assert got == ["late"]


def test_tasklets_killed_when_thread_ends():
    out = []

    def worker():
        try:
            stackless.schedule_remove()
        finally:
            out.append("finally ran")

    holder = []

    def thread_main():
        t = tasklet(worker)()
        stackless.run()
        holder.append(t)

    th = threading.Thread(target=thread_main)
    th.start()
    th.join(10)
    deadline = time.time() + 5
    while not out and time.time() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert out == ["finally ran"]
    assert holder[0].thread_id == -1 or not holder[0].alive


def test_tasklets_killed_at_interpreter_exit():
    code = (
        "import stackless\n"
        "def f():\n"
        "    try:\n"
        "        stackless.schedule_remove()\n"
        "    finally:\n"
        "        print('cleanup', flush=True)\n"
        "ch = stackless.channel()\n"
        "def g():\n"
        "    try:\n"
        "        ch.receive()\n"
        "    except TaskletExit:\n"
        "        print('blocked killed', flush=True)\n"
        "        raise\n"
        "stackless.tasklet(f)(); stackless.tasklet(g)(); stackless.run()\n"
        "print('exiting', flush=True)\n")
    r = run_script(code)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["blocked killed", "cleanup", "exiting"]
    assert r.stdout.splitlines()[0] == "exiting"


def test_kill_tasklet_of_other_thread_is_pending():
    started = threading.Event()
    done = threading.Event()
    box = []

    def thread_main():
        ch = channel()

        def worker():
            try:
                ch.receive()
            except TaskletExit:
                box.append("killed")
                raise

        box.append(tasklet(worker)())
        stackless.run()
        started.set()
        done.wait(10)
        stackless.run()

    th = threading.Thread(target=thread_main)
    th.start()
    started.wait(10)
    t = box[0]
    assert t.blocked and t.thread_id == th.ident
    t.kill()
    done.set()
    th.join(10)
    assert box[1:] == ["killed"]


# ---------------------------------------------------------------------------
# Preemption
# ---------------------------------------------------------------------------

def spin(box):
    n = 0
    while True:
        n += 1
        box[0] = n


def test_run_timeout_interrupts_and_returns_tasklet():
    box = [0]
    t = tasklet(spin)(box)
    r = stackless.run(1000)
    assert r is t
    assert t.alive and not t.scheduled and t.paused
    assert box[0] > 0
    assert stackless.getruncount() == 1
    first = box[0]
    t.insert()
    assert stackless.run(1000) is t
    assert box[0] > first
    t.kill()


def test_run_without_timeout_installs_no_tracer():
    seen = []
    tasklet(lambda: seen.append(sys.gettrace()))()
    stackless.run()
    assert seen == [sys.gettrace()]
    box = [0]
    t = tasklet(spin)(box)
    stackless.run(100)
    assert sys.gettrace() is seen[0]
    t.kill()


def test_timeout_round_robin_between_spinners():
    a, b = [0], [0]
    ta = tasklet(spin)(a)
    tb = tasklet(spin)(b)
    interrupted = []
    for _ in range(4):
        r = stackless.run(500)
        interrupted.append(r)
        r.insert()
    assert interrupted == [ta, tb, ta, tb]
    assert a[0] > 0 and b[0] > 0
    ta.remove()
    tb.remove()
    ta.kill()
    tb.kill()


def test_atomic_tasklet_is_not_preempted():
    out = []

    def f():
        with stackless.atomic():
            for i in range(3000):
                pass
            out.append("atomic done")
        spin([0])

    t = tasklet(f)()
    assert stackless.run(100) is t
    assert out == ["atomic done"]
    t.kill()


def test_soft_timeout_interrupts_only_at_schedule():
    out = []

    def f():
        for i in range(2000):
            pass
        out.append("loop done")
        stackless.schedule()
        out.append("after schedule")

    t = tasklet(f)()
    r = stackless.run(50, soft=True)
    # as in Stackless: run() returns None and the tasklet stays scheduled
    assert r is None and out == ["loop done"]
    assert t.scheduled and stackless.getruncount() == 2
    stackless.run()
    assert out == ["loop done", "after schedule"]


def test_soft_timeout_interrupts_at_a_channel_switch():
    # a soft timeout ends run() at the next switch of any kind, not only at
    # schedule(): a ring of tasklets that only talk through channels
    chans = [channel() for i in range(3)]

    def ring(i):
        if i:
            chans[i].receive()
        while True:
            for _ in range(200):
                pass
            chans[(i + 1) % 3].send(None)
            chans[i].receive()

    ts = [tasklet(ring)(i) for i in range(3)]
    for _ in range(3):
        assert stackless.run(1000, soft=True, totaltimeout=True) is None
        assert stackless.getruncount() in (2, 3)
    for t in ts:
        t.kill()


def test_totaltimeout():
    def polite(n):
        for i in range(n):
            stackless.schedule()

    # every turn is short: a per-tasklet budget never runs out
    tasklet(polite)(300)
    tasklet(polite)(300)
    assert stackless.run(200) is None
    # the budget of the whole run() does
    a = tasklet(polite)(300)
    b = tasklet(polite)(300)
    r = stackless.run(200, totaltimeout=True)
    assert r in (a, b) and r.alive and not r.scheduled
    r.insert()
    stackless.run()
    assert not a.alive and not b.alive


def test_finished_run_with_timeout_returns_none():
    tasklet(lambda: None)()
    assert stackless.run(100000) is None


# ---------------------------------------------------------------------------
# Pickling
# ---------------------------------------------------------------------------

def pickled_func(x, y=0):
    RESULTS.append(x + y)


RESULTS: list = []


def test_pickle_unstarted_tasklet():
    RESULTS.clear()
    t = tasklet(pickled_func)(1, y=2)
    assert t.restorable
    data = pickle.dumps(t)
    t.kill()
    t2 = pickle.loads(data)
    # as in Stackless: it comes back paused, never in the run queue
    assert t2.alive and t2.paused and stackless.getruncount() == 1
    t2.insert()
    stackless.run()
    assert RESULTS == [3]


def test_tasklets_of_local_functions_pickle():
    def make():
        n = 2
        seen = []

        def inner(x):
            seen.append(x * n)
        return inner, seen

    inner, seen = make()
    t = tasklet(inner, (21,))
    t2 = pickle.loads(pickle.dumps(t))
    t3 = pickle.loads(pickle.dumps(tasklet(lambda: RESULTS.append("lambda"), ())))
    RESULTS.clear()
    t2.insert()
    t3.insert()
    stackless.run()
    assert RESULTS == ["lambda"] and seen == []     # t2's closure is a copy
    assert t2.alive is False


def test_reducers_stackless_registers():
    def outer():
        y = 5
        return lambda: y
    cell = outer().__closure__[0]
    assert pickle.loads(pickle.dumps(cell)).cell_contents == 5
    d = {1: "a"}
    for view in (d.keys(), d.values(), d.items()):
        copy = pickle.loads(pickle.dumps(view))
        assert type(copy) is type(view) and list(copy) == list(view)
    code = pickle.loads(pickle.dumps(outer.__code__))
    assert code == outer.__code__
    assert pickle.loads(pickle.dumps(os)) is os
    assert pickle.loads(pickle.dumps(stackless)) is stackless
    assert pickle.loads(pickle.dumps(pickled_func)) is pickled_func   # still by name


def test_pickle_paused_before_start_and_dead():
    RESULTS.clear()
    t = tasklet(pickled_func, (5,))
    t2 = pickle.loads(pickle.dumps(t))
    assert t2.paused
    t2.insert()
    stackless.run()
    assert RESULTS == [5]
    t.bind(None)
    dead = pickle.loads(pickle.dumps(t))
    assert not dead.alive and dead.restorable
    unbound = pickle.loads(pickle.dumps(tasklet(pickled_func)))
    assert not unbound.alive
    unbound(7)
    stackless.run()
    assert RESULTS == [5, 7]


def pause_then_record():
    stackless.schedule_remove()
    RESULTS.append("resumed")


def test_pickle_paused_tasklet_resumes_where_it_stopped():
    RESULTS.clear()
    t = tasklet(pause_then_record)()
    stackless.run()
    assert t.paused
    copy = pickle.loads(pickle.dumps(t))
    assert copy.alive and copy.paused and not copy.scheduled
    copy.insert()
    if PYPY:
        # PyPy's _continuation cannot read frames: as a hard-switched
        # tasklet in Stackless, it pickles but cannot run
        assert not t.restorable
        with pytest.raises(RuntimeError, match="pickled while it was running"):
            stackless.run()
        assert not copy.alive and RESULTS == []
    else:
        assert t.restorable and copy.restorable
        stackless.run()
        assert not copy.alive and RESULTS == ["resumed"]
    t.insert()
    stackless.run()
    assert RESULTS[-1:] == ["resumed"]


def pause_in_sort_key():
    sorted([2, 1], key=lambda x: stackless.schedule_remove())
    RESULTS.append("sorted")


def test_pickle_tasklet_with_c_frame_is_not_restorable():
    # as in Stackless 3.7: it pickles, and the copy fails when it runs
    RESULTS.clear()
    t = tasklet(pause_in_sort_key)()
    stackless.run()
    assert t.paused and not t.restorable
    copy = pickle.loads(pickle.dumps(t))
    assert copy.alive and copy.paused
    copy.insert()
    with pytest.raises(RuntimeError, match="pickled while it was running"):
        stackless.run()
    assert not copy.alive and RESULTS == []
    t.kill()
    assert RESULTS == []


def test_pickle_channel_with_waiting_tasklets():
    ch = channel()
    senders = [tasklet(ch.send)(i) for i in range(2)]
    stackless.run()
    assert ch.balance == 2
    ch2 = pickle.loads(pickle.dumps(ch))
    assert ch2.balance == 2
    assert ch2.queue.blocked and ch2.queue.next.blocked
    assert ch2.queue.tempval == 0 and ch2.queue.next.tempval == 1
    for t in list(ch2._queue):
        t.kill()
    assert ch2.balance == 0
    assert [ch.receive(), ch.receive()] == [0, 1]
    ch3 = pickle.loads(pickle.dumps(channel()))
    assert ch3.balance == 0 and ch3.preference == -1


# ---------------------------------------------------------------------------
# GC and the demo
# ---------------------------------------------------------------------------

def test_dead_tasklets_are_collected():
    import weakref
    refs = []
    for _ in range(50):
        t = tasklet(lambda: None)()
        refs.append(weakref.ref(t))
    del t
    stackless.run()
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_many_tasklets_do_not_pile_up_stack_depth():
    ch = channel()
    depths = []

    def f():
        depths.append(len_stack())
        ch.receive()

    def len_stack():
        f, n = sys._getframe(), 0
        while f is not None and n < 100000:
            n, f = n + 1, f.f_back
        return n

    for _ in range(3000):
        tasklet(f)()
    stackless.run()
    assert max(depths) - min(depths) < 5
    for _ in range(3000):
        ch.send(None)


def test_demo_command():
    r = run_script("", "-m", "stackless", "--players", "200", "--turns", "300")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:6] == [
        "Receiving tasklet started",
        "Sending tasklet started",
        "send from sending_tasklet",
        "Receiving tasklet finished",
        "Just another tasklet in the scheduler",
        "sending tasklet finished",
    ]
    # then a tasklet pickled in one process and resumed in another
    # (tests/test_pickle_running.py), then the game
    assert lines[-1].startswith("hackysack: 200 tasklets, 300 turns: ")
    assert lines[-1].endswith(" s")


def test_pypy_path_finder_prefers_the_package(tmp_path):
    """continulet_stackless.pth's finder skips a single-file stackless.py."""
    (tmp_path / "stackless.py").write_text(
        "raise ImportError('the single-file stackless.py was imported')\n")
    finder = os.path.join(ROOT, "stackless", "_pypy_path.py")
    code = ("import sys; sys.path.insert(0, %r); "
            "exec(compile(open(%r).read(), %r, 'exec'), {}); "
            "import stackless; print(stackless.__file__)" % (str(tmp_path), finder, finder))
    r = run_script(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.path.join(ROOT, "stackless", "__init__.py")
    with open(os.path.join(ROOT, "stackless", "continulet_stackless.pth")) as f:
        pth = f.read()
    assert pth.startswith("import ") and pth.count("\n") == 1


def test_bind_thread_moves_unstarted_tasklet():
    ready = threading.Event()
    release = channel()
    result = channel()
    box = {}

    def worker():
        box["id"] = threading.get_ident()
        stackless.getcurrent()          # this thread gets a scheduler
        ready.set()
        release.receive()               # wait (other threads are alive)

    th = threading.Thread(target=worker)
    th.start()
    assert ready.wait(10)
    t = tasklet(lambda: result.send(threading.get_ident()), ())
    assert t.thread_id == threading.get_ident()
    t.bind_thread(box["id"])
    assert t.thread_id == box["id"]
    assert box["id"] in stackless.getthreads()
    t.insert()                          # into the worker's run queue
    assert result.receive() == box["id"]
    release.send(None)
    th.join(10)
    assert not th.is_alive() and not t.alive


def test_bind_thread_of_a_started_tasklet_without_soft_switching():
    t = tasklet(stackless.schedule_remove)()
    stackless.run()
    with pytest.raises(ValueError, match="^bad thread$"):      # as in Stackless
        t.bind_thread(12345)
    t.bind_thread()             # its own thread: nothing to do
    go, done = threading.Event(), threading.Event()
    th = threading.Thread(target=lambda: (go.set(), done.wait()))
    th.start()
    go.wait()
    old = stackless.enable_softswitch(False)
    try:
        # Stackless 3.7 with hard switching says so too
        with pytest.raises(RuntimeError, match="^tasklet has C state on its stack$"):
            t.bind_thread(th.ident)
        assert t.thread_id == threading.get_ident() and t.paused
    finally:
        stackless.enable_softswitch(old)
        done.set()
        th.join()
    t.kill()
    assert not t.alive


def test_bind_thread_errors_like_stackless():
    t = tasklet(lambda: None)()
    with pytest.raises(OverflowError):
        t.bind_thread(-2)
    with pytest.raises(OverflowError):
        t.bind_thread(1 << 70)
    t.bind_thread()             # runnable, but already in this thread
    t.bind_thread(-1)           # -1 is this thread too
    with pytest.raises(RuntimeError, match="^can't \\(re\\)bind a runnable tasklet$"):
        t.bind_thread(12345)
    t.kill()


def test_tasklets_of_another_thread():
    # run() schedules a paused tasklet of another thread there, first in line;
    # switch() refuses; once the thread is gone its tasklets report -1
    box, ready, done = [], threading.Event(), threading.Event()
    ran_in = []

    def body():
        ran_in.append(threading.get_ident())

    def thread_main():
        box.append(tasklet(body)().remove())
        box.append(tasklet(body)().remove())
        ready.set()
        while not done.is_set():
            stackless.run()
            time.sleep(0.001)

    th = threading.Thread(target=thread_main)
    th.start()
    ready.wait()
    t1, t2 = box
    with pytest.raises(RuntimeError, match="^can't switch to a different thread.$"):
        t1.switch()
    assert t1.run() is None
    for _ in range(1000):
        if ran_in:
            break
        time.sleep(0.005)
    assert ran_in == [th.ident] and not t1.alive
    assert stackless.getruncount() == 1
    done.set()
    th.join()
    assert t1.thread_id == -1 and t2.thread_id == -1 and not t2.alive
    with pytest.raises(RuntimeError, match="^tasklet has no thread$"):
        t2.run()
    with pytest.raises(RuntimeError, match="^tasklet has no thread$"):
        t2.throw(ValueError, pending=True)
    with pytest.raises(RuntimeError, match="^Target thread isn't initialized$"):
        t2.insert()
    t2.kill()                   # a dead tasklet: nothing to do
    t2.bind_thread()
    assert t2.thread_id == threading.get_ident()


def test_get_thread_info_of_a_thread_without_tasklets():
    go, done = threading.Event(), threading.Event()
    th = threading.Thread(target=lambda: (go.set(), done.wait()))
    th.start()
    go.wait()
    try:
        main, current, runcount = stackless.get_thread_info(th.ident)
        assert main is current and runcount == 1 and main.thread_id == th.ident
    finally:
        done.set()
        th.join()
    with pytest.raises(RuntimeError, match="^Thread id not found$"):
        stackless.get_thread_info(th.ident)


def test_coroutine_throw_and_getcurrent_inside():
    from stackless import coroutine
    got = []
    main = coroutine.getcurrent()

    def body():
        try:
            main.switch()
        except KeyError as e:
            got.append(e.args)

    c = coroutine()
    c.bind(body)
    c.switch()
    c.throw(KeyError, "k")
    assert got == [("k",)] and not c.alive


@pytest.mark.parametrize("call, message", [
    (lambda t, c: c.send(), r"^send\(\) takes exactly one argument \(0 given\)$"),
    (lambda t, c: c.send(1, 2), r"^send\(\) takes exactly one argument \(2 given\)$"),
    (lambda t, c: c.receive(1), r"^receive\(\) takes no arguments \(1 given\)$"),
    (lambda t, c: c.send_exception(), r"^send_exception\(\) takes at least 1 argument"),
    (lambda t, c: c.close(1), r"^close\(\) takes no arguments \(1 given\)$"),
    (lambda t, c: t.bind(1, 2, 3, 4), r"^bind\(\) takes at most 3 arguments \(4 given\)$"),
    (lambda t, c: t.bind(len, (), {}, kwargs={}), r"^bind\(\) takes at most 3 arguments \(4 given\)$"),
    (lambda t, c: t.bind(len, func=len), r"^argument for bind\(\) given by name \('func'\) and position \(1\)$"),
    (lambda t, c: t.bind(function=len), r"^'function' is an invalid keyword argument for bind\(\)$"),
    (lambda t, c: tasklet(len, (), args=()), r"^argument for bind\(\) given by name \('args'\) and position \(2\)$"),
    (lambda t, c: tasklet(len, bogus=1, other=2), r"^'bogus' is an invalid keyword argument for bind\(\)$"),
    (lambda t, c: tasklet(len, (), {}, 4, 5), r"^bind\(\) takes at most 3 arguments \(5 given\)$"),
    (lambda t, c: t.insert(1), r"^insert\(\) takes no arguments \(1 given\)$"),
    (lambda t, c: t.kill(1, 2), r"^kill\(\) takes at most 1 argument \(2 given\)$"),
    (lambda t, c: t.throw(), r"^throw\(\) missing required argument 'exc' \(pos 1\)$"),
    (lambda t, c: t.throw(1, 2, 3, 4, 5), r"^throw\(\) takes at most 4 arguments \(5 given\)$"),
    (lambda t, c: t.set_atomic(), r"^set_atomic\(\) takes exactly one argument \(0 given\)$"),
    (lambda t, c: t.raise_exception(), r"^raise_exception\(\) takes at least 1 argument"),
    (lambda t, c: stackless.getcurrent(1), r"^getcurrent\(\) takes no arguments \(1 given\)$"),
    (lambda t, c: stackless.schedule(1, 2), r"^schedule\(\) takes at most 1 argument \(2 given\)$"),
    (lambda t, c: stackless.get_thread_info(1, 2, 3),
     r"^get_thread_info\(\) takes at most 2 arguments \(3 given\)$"),
    (lambda t, c: stackless.set_schedule_callback(),
     r"^set_schedule_callback\(\) takes exactly one argument \(0 given\)$"),
])
def test_argument_errors_read_like_stackless(call, message):
    # (each message and its precedence checked with slp37)
    # Stackless's functions are C functions: their argument errors say so
    t = tasklet(lambda: None)
    with pytest.raises(TypeError, match=message):
        call(t, channel())


def test_module_contents_like_stackless():
    ns = {}
    exec("from stackless import *", ns)
    assert ns["stackless"] is stackless
    assert stackless.debug is False and stackless.getdebug() is False
    assert stackless.uncollectables == [] and stackless.getuncollectables() == []
    assert stackless.get_thread_info() == (stackless.getmain(), stackless.getcurrent(), 1)


def test_channel_attribute_types_are_checked():
    c = channel()
    with pytest.raises(TypeError, match="^preference must be set to an integer$"):
        c.preference = 2.5
    with pytest.raises(TypeError, match="^schedule_all must be set to a bool or integer$"):
        c.schedule_all = None
    c.preference, c.schedule_all = -7, -1
    assert (c.preference, c.schedule_all) == (-1, 1)
    assert type(c.schedule_all) is int


def test_iterating_a_closed_channel_stops():
    c = channel()
    tasklet(c.send)(1)
    stackless.run()
    c.close()
    assert list(c) == [1]           # the waiting sender's value, then the end
    with pytest.raises(ValueError, match="closed channel"):
        c.receive()


def test_uncaught_error_goes_to_the_innermost_run():
    got = []

    def bad():
        raise KeyError("inner")

    def runner():
        tasklet(bad)()
        try:
            stackless.run()
        except KeyError as e:
            got.append(e.args)

    tasklet(runner)()
    stackless.run()             # as in Stackless: the outer run() sees nothing
    assert got == [("inner",)]


def test_waking_an_outer_run_by_hand_ends_the_inner_ones():
    out = []

    def wake_main():
        stackless.getmain().run()
        out.append("wake_main")

    def runner():
        tasklet(wake_main)()
        stackless.run()
        out.append("inner run returned")

    tasklet(runner)()
    stackless.run()
    # main's run() returned; the run() nested in it is runnable again
    assert out == [] and stackless.getruncount() == 3
    stackless.run()
    assert out == ["wake_main", "inner run returned"]


def test_nested_timeouts_interrupt_the_outermost_run():
    order = []

    def spin():
        while True:
            for _ in range(50):
                pass
            stackless.schedule()

    def runner(depth):
        if depth:
            tasklet(runner)(depth - 1)
        with stackless.atomic():
            stackless.run(500, totaltimeout=True)
            order.append(depth)
        for t in spinners:
            t.kill()

    spinners = [tasklet(spin)(), tasklet(spin)()]
    tasklet(runner)(2)
    stackless.run()
    assert order[0] == 2 and sorted(order) == [0, 1, 2]


def test_a_new_tasklet_does_not_inherit_the_trace_function():
    events = []

    def tracer(frame, event, arg):
        if frame.f_code is body.__code__:
            events.append(event)
        return tracer

    def body():
        stackless.schedule()

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        tasklet(body)()
        stackless.run()
        assert sys.gettrace() is tracer        # main keeps its own
    finally:
        sys.settrace(old)
    assert events == []                         # as in Stackless


def test_trace_function_of_a_dead_or_unbound_tasklet():
    for t in (tasklet(), tasklet(lambda: None)):
        assert t.trace_function is None and t.profile_function is None
        with pytest.raises(RuntimeError, match="^tasklet is not alive$"):
            t.trace_function = lambda *a: None
        with pytest.raises(RuntimeError, match="^tasklet is not alive$"):
            t.profile_function = lambda *a: None


def test_a_foreign_thread_leaves_no_dummy_thread():
    import _thread
    done = threading.Event()
    box = []

    def body():
        box.append(stackless.getcurrent().is_main)
        done.set()

    before = threading.active_count()
    _thread.start_new_thread(body, ())
    done.wait()
    time.sleep(0.05)
    assert box == [True]
    assert threading.active_count() == before
    assert not any(isinstance(t, threading._DummyThread) for t in threading.enumerate())


def test_tasklet_and_bind_take_their_parameters_by_name():
    # as Stackless's C argument parser (slp37): any of func, args, kwargs
    t = tasklet(kwargs={"b": 2}, func=lambda a=1, b=0: got.append((a, b)))
    got = []
    assert t.alive and not t.scheduled
    t.insert()
    stackless.run()
    u = tasklet().bind(len, args=("abc",))
    assert u.alive and not u.scheduled
    u.kill()
    assert got == [(1, 2)]


@pytest.mark.parametrize("call, name", [
    (lambda t, c: t.insert(bogus=1), "tasklet.insert"),
    (lambda t, c: t.kill(bogus=1), "tasklet.kill"),
    (lambda t, c: t.throw(ValueError, bogus=1), "tasklet.throw"),
    (lambda t, c: c.close(bogus=1), "channel.close"),
    (lambda t, c: c.send_sequence([], bogus=1), "channel.send_sequence"),
    (lambda t, c: stackless.getcurrent(bogus=1), "getcurrent"),
    (lambda t, c: stackless.schedule_remove(bogus=1), "schedule_remove"),
    (lambda t, c: stackless.get_thread_info(bogus=1), "get_thread_info"),
])
def test_an_unknown_keyword_is_named_with_the_function(call, name):
    # the same message in both modes; the accelerator's hidden functions
    # once named themselves 'tasklet.insert.__self__()'
    t = tasklet(lambda: None)
    with pytest.raises(TypeError) as info:
        call(t, channel())
    assert str(info.value) == "%s() got an unexpected keyword argument 'bogus'" % name
    assert t.alive is False and t.tempval is not None
