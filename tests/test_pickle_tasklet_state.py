"""The running tasklet's ``restorable`` and ``tasklet.__reduce__``'s state
layout, as Stackless 3.7 has them (each expectation asked of slp37 first).

Stackless's state is ``(flags, tempval, nesting_level, frames, exc_type,
exc_value, exc_traceback, None)``; the frames item is what each
implementation keeps of the tasklet's stack (docs/stackless.md).
"""
from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest

import stackless
from stackless import channel, tasklet

CPYTHON = sys.implementation.name == "cpython"
CURRENT = "You cannot __reduce__ the tasklet which is current."


def nop():
    pass


def pauser(a, b=2):
    stackless.schedule_remove()
    return a


def ask(seen, tag):
    t = stackless.getcurrent()
    seen.append((tag, t.restorable))
    with pytest.raises(RuntimeError) as e:
        pickle.dumps(t)
    assert str(e.value) == CURRENT


def gen(seen):
    ask(seen, "generator")
    yield 1


def asking(seen):
    ask(seen, "direct")
    list(map(lambda x: ask(seen, "map"), [1]))
    sorted([1], key=lambda x: ask(seen, "sorted key"))

    class Body:
        ask(seen, "class body")

    for _ in gen(seen):
        pass


# ---------------------------------------------------------------------------
# restorable of the running tasklet
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not CPYTHON, reason="frames are read on CPython only")
def test_the_running_tasklet_is_restorable_when_only_python_calls_lead_to_it():
    # slp37 (soft switching): True at nesting level 0, False under a C
    # call (map, a sort key, a class body); pickling it raises anyway
    seen: list = []
    tasklet(asking)(seen)
    stackless.run()
    assert seen == [("direct", True), ("map", False), ("sorted key", False),
                    ("class body", False),
                    # a generator that a for loop runs, as slp37
                    ("generator", True)]


def test_pickling_the_main_tasklet_while_it_runs_is_refused():
    with pytest.raises(RuntimeError) as e:
        pickle.dumps(stackless.getcurrent())
    assert str(e.value) == CURRENT


@pytest.mark.skipif(not CPYTHON, reason="frames are read on CPython only")
def test_the_running_main_tasklet_of_a_script():
    # slp37: True at module level and in a function called from it, False
    # under a C call; under pytest, main's stack has C calls below the test
    assert not stackless.getcurrent().restorable
    script = textwrap.dedent("""
        import stackless
        def f():
            return stackless.current.restorable
        print(stackless.current.restorable, f(), list(map(lambda x: f(), [1]))[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr


@pytest.mark.skipif(not CPYTHON, reason="frames are read on CPython only")
def test_the_running_main_tasklet_of_a_module_run_with_dash_m(tmp_path):
    # slp37 says the same: runpy's frames below the module's are not its
    (tmp_path / "modmain.py").write_text(textwrap.dedent("""
        import stackless
        def f():
            return stackless.current.restorable
        print(stackless.current.restorable, f(), list(map(lambda x: f(), [1]))[0])
    """))
    out = subprocess.run([sys.executable, "-m", "modmain"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr


def in_exec(seen):
    exec("ask(seen, 'exec')", {"ask": ask, "seen": seen})


@pytest.mark.skipif(not CPYTHON, reason="frames are read on CPython only")
def test_a_tasklet_running_exec_code_is_not_restorable():
    # slp37 says True (it soft-switches through exec); module-level code is
    # not captured here (docs/stackless.md, Differences)
    seen: list = []
    tasklet(in_exec)(seen)
    stackless.run()
    assert seen == [("exec", False)]


SEEN: list = []     # a global: a frame's own values are copied by pickling


def resumer(ch):
    v = ch.receive()
    ask(SEEN, v)


@pytest.mark.skipif(not CPYTHON, reason="frames are read on CPython only")
def test_a_rebuilt_tasklet_is_restorable_while_it_runs():
    ch = channel()
    SEEN.clear()
    t = tasklet(resumer)(ch)
    stackless.run()
    copy = pickle.loads(pickle.dumps((t, ch)))
    t.kill()
    copy_t, copy_ch = copy
    assert copy_t.blocked                   # on the new channel
    copy_ch.send("rebuilt")
    stackless.run()
    assert SEEN == [("rebuilt", True)]


# ---------------------------------------------------------------------------
# __reduce__ / __setstate__
# ---------------------------------------------------------------------------

def test_reduce_of_tasklets_that_have_not_started():
    # slp37: (cls, (), (flags, tempval, 0, frames, None, None, None, None))
    assert tasklet().__reduce__() == (tasklet, (), (0, None, 0, [], None, None, None, None))
    assert tasklet(nop).__reduce__() == (tasklet, (), (0, nop, 0, [], None, None, None, None))
    t = tasklet(pauser)(1, b=3)
    cls, args, state = t.__reduce__()
    assert (cls, args, state[:3], state[4:]) == (tasklet, (), (0, None, 0), (None,) * 4)
    # one entry: the call it will make
    (call,) = state[3]
    assert (call.func, call.args, call.kwargs) == (pauser, (1,), {"b": 3})
    t.remove()


def test_reduce_flags_are_stackless_bits():
    t = tasklet(nop)()
    t.set_atomic(True)
    t.set_ignore_nesting(True)
    t.block_trap = True
    assert t.__reduce__()[2][0] == 4 | 8 | 32
    t.remove()
    ch = channel()
    r = tasklet(ch.receive)()
    s = tasklet(channel().send)(7)
    stackless.run()
    assert r.__reduce__()[2][0] == 3        # blocked receiving: -1 in 2 bits
    assert s.__reduce__()[2][:2] == (1, 7)  # blocked sending, with its value
    r.kill()
    s.kill()
    assert r.__reduce__() == (tasklet, (), (0, None, 0, [], None, None, None, None))  # dead


def handling():
    try:
        raise ValueError("boom")
    except ValueError:
        stackless.schedule_remove()


@pytest.mark.skipif(not CPYTHON, reason="frames are read on CPython only")
def test_reduce_of_a_started_tasklet_holds_its_stack_and_exception():
    t = tasklet(handling)()
    stackless.run()
    flags, tempval, nesting, frames, etype, evalue, etb, last = t.__reduce__()[2]
    assert (flags, tempval, nesting, etype, etb, last) == (0, t, 0, ValueError, None, None)
    assert str(evalue) == "boom"
    # the continulet that holds its stack: it pickles frame by frame
    assert len(frames) == 1 and frames[0] is t._cont
    copy = pickle.loads(pickle.dumps(t))
    assert copy.paused and copy.restorable and copy.tempval is copy
    t.kill()
    copy.kill()


def test_setstate_takes_stackless_states():
    t = tasklet()
    assert t.__setstate__((4 | 8 | 32, 99, 0, [], None, None, None, None)) is t
    assert (t.atomic, t.ignore_nesting, t.block_trap, t.tempval, t.alive) == (True, True, True, 99, False)
    b = tasklet()
    b.__setstate__((3, None, 0, [], None, None, None, None))
    assert not b.blocked and not b.alive    # blocked again only by its channel
    bound = tasklet()
    bound.__setstate__(tasklet(nop).__reduce__()[2])
    assert bound.tempval is nop and not bound.alive
    bound.setup()
    assert bound.scheduled
    stackless.run()
    assert not bound.alive


def test_setstate_refuses_malformed_states():
    t = tasklet()
    with pytest.raises(TypeError, match=r"takes exactly 8 arguments \(7 given\)"):
        t.__setstate__((0, None, 0, [], None, None, None))
    with pytest.raises(TypeError, match="argument 4 must be list, not int"):
        t.__setstate__((0, None, 0, 5, None, None, None, None))
    with pytest.raises(TypeError, match="an integer is required"):
        t.__setstate__(("x", None, 0, [], None, None, None, None))
    with pytest.raises(TypeError):
        t.__setstate__(5)
    assert not t.alive


def test_unpickled_tasklets_come_back_paused_in_each_state():
    t = tasklet(pauser)(5)
    copy = pickle.loads(pickle.dumps(t))
    assert copy.paused and not copy.scheduled
    copy.insert()
    t.remove()
    stackless.run()
    assert copy.paused      # it started, and paused itself
    copy.insert()
    stackless.run()
    assert not copy.alive


def in_main(out):
    out.append(pickle.loads(pickle.dumps(stackless.getmain())))


def test_the_main_tasklet_pickles_as_not_restorable_from_another_tasklet():
    # slp37 pickles it (restorable there); its stack cannot be captured here
    out: list = []
    tasklet(in_main)(out)
    stackless.run()
    (copy,) = out
    assert copy.alive and copy.paused and not copy.is_main and not copy.restorable
    copy.insert()
    with pytest.raises(RuntimeError, match="pickled while it was running"):
        stackless.run()
    assert not copy.alive


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="frames are read on CPython only")
def test_a_c_function_between_the_tasklet_and_its_code_makes_it_not_restorable():
    # Stackless 3.7: a tasklet whose function is C code that calls Python
    # code (reduce, a functools.partial) is not restorable, running or not,
    # and pickles as not restorable; a function or bound method is
    import functools
    ch = channel()
    seen = {}

    def waits(a, b):
        seen["running"] = stackless.current.restorable
        return ch.receive()

    class Holder:
        def waits(self):
            seen["method"] = stackless.current.restorable
            return ch.receive()

    through_c = [tasklet(functools.reduce)(waits, [1, 2]), tasklet(functools.partial(waits, 1))(2)]
    method = tasklet(Holder().waits)()
    stackless.run()
    assert seen == {"running": False, "method": True}
    for t in through_c:
        assert t.blocked and not t.restorable
        copy = pickle.loads(pickle.dumps(t))
        assert not copy.restorable
        with pytest.raises(RuntimeError):
            copy.insert()
            stackless.run()
    assert method.blocked and method.restorable
    for _ in range(3):
        ch.send(None)
    assert not any(t.alive for t in through_c + [method])
