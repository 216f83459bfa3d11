"""Pickling and copying suspended continulets and running tasklets.

A suspended stack is captured frame by frame and rebuilt so that it resumes
exactly where it stopped (docs/continuation.md, docs/stackless.md).  The
expected Stackless behaviour was checked against Stackless 3.7.
"""
from __future__ import annotations

import copy
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import traceback
import types

import pytest

if sys.implementation.name != "cpython":
    pytest.skip("frames as data: CPython only", allow_module_level=True)

import _continuation_pickle
from _continuation import continulet

import stackless
from stackless import channel, tasklet

LOG: list = []


# ---------------------------------------------------------------------------
# continulets
# ---------------------------------------------------------------------------

def summing(c, n):
    total = 0
    for i in range(n):
        total += c.switch(i)
    return total


def test_resumes_with_the_value_it_receives():
    c = continulet(summing, 5)
    assert [c.switch(), c.switch(10)] == [0, 1]
    c2 = pickle.loads(pickle.dumps(c))
    assert [c2.switch(100), c2.switch(1000), c2.switch(1), c2.switch(1)] == [2, 3, 4, 1112]
    assert not c2.is_pending()
    # the original is untouched
    assert [c.switch(10), c.switch(10), c.switch(10), c.switch(10)] == [2, 3, 4, 50]


def deep(c, depth):
    if depth == 0:
        try:
            return 2 * c.switch("bottom")
        finally:
            LOG.append("finally")
    return deep(c, depth - 1) + 1


class Recorder:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        LOG.append("exit %s" % (exc[0].__name__ if exc[0] else None))
        return False


def nested(c):
    with Recorder():
        for _k in {"a": 1, "b": 2}:
            pass
        r = deep(c, 5)
    return ("done", r)


def test_deepcopy_gives_two_independent_continuations():
    LOG.clear()
    c = continulet(nested)
    assert c.switch() == "bottom"
    c2 = copy.deepcopy(c)
    c3 = copy.deepcopy(c)
    assert c2.switch(10) == ("done", 25)
    assert LOG == ["finally", "exit None"]
    assert c3.switch(20) == ("done", 45)
    assert c.switch(30) == ("done", 65)
    assert LOG == ["finally", "exit None"] * 3
    assert not (c.is_pending() or c2.is_pending() or c3.is_pending())


def twice(c):
    with Recorder():
        try:
            a = c.switch(1)
            b = c.switch(2)
        finally:
            LOG.append("finally")
    return a + b


def test_finally_and_with_blocks_run_when_a_rebuilt_one_is_dropped():
    LOG.clear()
    c = continulet(twice)
    assert c.switch() == 1
    c2 = pickle.loads(pickle.dumps(c))
    del c2                          # never ran: nothing to unwind
    gc.collect()
    assert LOG == []
    c3 = pickle.loads(pickle.dumps(c))
    assert c3.switch(5) == 2        # now suspended inside its rebuilt frames
    c4 = pickle.loads(pickle.dumps(c3))
    del c3
    gc.collect()
    assert LOG == ["finally", "exit GeneratorExit"]
    assert c4.switch(6) == 11
    assert LOG == ["finally", "exit GeneratorExit", "finally", "exit None"]
    c.switch(0)


def raiser(c):
    x = c.switch()
    raise ValueError(x)


def caller(c):
    return raiser(c)


def test_exception_after_resume_has_a_traceback_through_the_rebuilt_frames():
    c = continulet(caller)
    c.switch()
    c2 = pickle.loads(pickle.dumps(c))
    with pytest.raises(ValueError, match="zap") as info:
        c2.switch("zap")
    tb = traceback.extract_tb(info.value.__traceback__)
    assert [(f.name, f.line) for f in tb[-2:]] == [
        ("caller", "return raiser(c)"), ("raiser", "raise ValueError(x)")]


def test_throw_into_a_rebuilt_continulet_raises_at_its_switch():
    c = continulet(caller)
    c.switch()
    c2 = pickle.loads(pickle.dumps(c))
    with pytest.raises(KeyError) as info:
        c2.throw(KeyError("k"))
    tb = traceback.extract_tb(info.value.__traceback__)
    assert [(f.name, f.line) for f in tb[-2:]] == [
        ("caller", "return raiser(c)"), ("raiser", "x = c.switch()")]
    assert not c2.is_pending()


def handling(c):
    try:
        raise KeyError("handled")
    except KeyError:
        c.switch()
        return repr(sys.exc_info()[1])


def test_the_exception_being_handled_comes_back():
    c = continulet(handling)
    c.switch()
    assert pickle.loads(pickle.dumps(c)).switch() == "KeyError('handled')"


def make_counter():
    count = 0

    def counter(c):
        nonlocal count
        while True:
            count += c.switch(count)
    return counter


def sharing(c):
    total = 0

    def bump():
        nonlocal total
        total += c.switch("bump")
        return total
    return bump(), bump(), total


def test_closures_and_cells_shared_between_frames():
    c = continulet(make_counter())
    c.switch()
    c.switch(5)
    c2 = pickle.loads(pickle.dumps(c))
    assert [c2.switch(1), c2.switch(1), c.switch(100)] == [6, 7, 105]
    c = continulet(sharing)
    c.switch()
    c2 = pickle.loads(pickle.dumps(c))
    # bump's free variable and sharing's cell variable are still one cell
    assert c2.switch(5) == "bump"
    assert c2.switch(7) == (5, 12, 12)


def loops(c):
    out = []
    for i in range(3):
        for s in ["a", "b"]:
            for k in {"p": 1, "q": 2}:
                out.append((i, s, k, c.switch()))
    return out


def test_for_loops_over_range_list_and_dict_iterators():
    c = continulet(loops)
    c.switch()
    for n in range(5):
        c = pickle.loads(pickle.dumps(c))     # pickled again after each resume
        c.switch(n)
    while c.is_pending():
        res = c.switch("z")
    assert res[:6] == [(0, "a", "p", 0), (0, "a", "q", 1), (0, "b", "p", 2),
                       (0, "b", "q", 3), (1, "a", "p", 4), (1, "a", "q", "z")]
    assert len(res) == 12


def test_unstarted_finished_and_unbound_continulets():
    c = pickle.loads(pickle.dumps(continulet(summing, 2)))
    assert [c.switch(), c.switch(1), c.switch(2)] == [0, 1, 3]
    assert not pickle.loads(pickle.dumps(c)).is_pending()
    with pytest.raises(Exception, match="already finished"):
        pickle.loads(pickle.dumps(c)).switch()
    u = pickle.loads(pickle.dumps(continulet.__new__(continulet)))
    assert not u.is_pending() and u.switch(4) == 4


def in_sort_key(c):
    return sorted([2, 1], key=lambda x: c.switch())


def running_generator(c):
    def gen():
        c.switch()
        yield 1
    return list(gen())


def test_not_restorable_stacks_raise_a_clear_error():
    c = continulet(in_sort_key)
    c.switch()
    with pytest.raises(pickle.PicklingError,
                       match=r"in_sort_key .* calls in_sort_key.<locals>.<lambda> .*through C code"):
        pickle.dumps(c)
    c.switch(0)
    c.switch(0)
    c = continulet(running_generator)
    c.switch()
    # list() is C code that runs the generator: only the interpreter's own
    # ways of running one (for, next(), send(), yield from, await) restore
    with pytest.raises(pickle.PicklingError,
                       match=r"running_generator .* runs the generator running_generator.<locals>.gen "
                             r".*through C code; only for loops, next\(\), send\(\)"):
        pickle.dumps(c)
    c.switch()

    def inside(c):
        with pytest.raises(pickle.PicklingError, match="main stack"):
            pickle.dumps(c)
    continulet(inside).switch()


def test_a_continulet_of_another_thread_does_not_pickle():
    box = []

    def make():
        c = continulet(summing, 3)
        c.switch()
        box.append(c)
    th = threading.Thread(target=make)
    th.start()
    th.join()
    with pytest.raises(pickle.PicklingError, match="another thread"):
        pickle.dumps(box[0])


def test_pickles_are_tied_to_the_python_version(monkeypatch):
    c = continulet(summing, 3)
    c.switch()
    monkeypatch.setattr(_continuation_pickle, "VERSION", ("cpython", (3, 99)))
    data = pickle.dumps(c)
    monkeypatch.undo()
    with pytest.raises(pickle.UnpicklingError, match=r"pickled on cpython 3\.99 .*not on cpython 3\.\d+"):
        pickle.loads(data)


def test_changed_code_is_refused(monkeypatch):
    c = continulet(summing, 3)
    c.switch()
    data = pickle.dumps(c)

    def other(c, n):           # same name, other code
        return n
    monkeypatch.setattr(sys.modules[__name__], "summing", other)
    with pytest.raises(pickle.UnpicklingError, match="summing: its code has changed"):
        pickle.loads(data)


def test_no_leak_over_10000_cycles():
    c = continulet(nested)
    c.switch()
    data = pickle.dumps(c)
    LOG.clear()

    def cycle():
        c2 = pickle.loads(data)
        assert c2.switch(1) == ("done", 7)
        pickle.dumps(c)
    for _ in range(200):
        cycle()
    gc.collect()
    before = len(gc.get_objects())
    refs = sys.getrefcount(deep), sys.getrefcount(deep.__code__)
    for _ in range(10_000):
        cycle()
    LOG.clear()
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert (sys.getrefcount(deep), sys.getrefcount(deep.__code__)) == refs
    c.switch(0)


# ---------------------------------------------------------------------------
# tasklets
# ---------------------------------------------------------------------------

def recurs(ch, depth, level=1):
    LOG.append("enter %d" % level)
    if level >= depth:
        ch.send("hi")
    if level < depth:
        recurs(ch, depth, level + 1)
    LOG.append("leave %d" % level)


def test_the_demo_round_trips_inside_one_process():
    LOG.clear()
    ch = channel()
    t = tasklet(recurs)(ch, 9)
    assert ch.receive() == "hi"
    copies = [pickle.loads(pickle.dumps(t)) for _ in range(3)]
    # unpickled tasklets come back paused, as in Stackless
    assert all(x.restorable and x.alive and not x.scheduled for x in copies)
    t.kill()
    for x in copies:
        x.insert()
    stackless.run()
    assert not any(x.alive for x in copies)
    leaves = ["leave %d" % i for i in range(9, 0, -1)]
    assert LOG == ["enter %d" % i for i in range(1, 10)] + leaves * 3


def bounce(ch, depth, level=1):
    if level < depth:
        bounce(ch, depth, level + 1)
    v = ch.receive()        # (a value on the stack would be pickled: a copy)
    LOG.append(v * level)


def test_the_same_tasklet_pickled_again_after_it_resumes():
    LOG.clear()
    ch = channel()
    t = tasklet(bounce)(ch, 4)
    stackless.run()
    assert t.blocked and t.restorable
    for i in range(4):
        # the channel and its blocked tasklet go together
        t2, ch2 = pickle.loads(pickle.dumps((t, ch)))
        assert t2.blocked and ch2.balance == -1 and t2.restorable
        t.kill()
        t, ch = t2, ch2
        ch.send(i + 1)
    assert LOG == [1 * 4, 2 * 3, 3 * 2, 4 * 1]
    assert not t.alive


DEMO = '''
import pickle, sys
import stackless

ch = stackless.channel()

def recurs(depth, level=1):
    print('enter level %s%d' % (level * ' ', level))
    if level >= depth:
        ch.send('hi')
    if level < depth:
        recurs(depth, level + 1)
    print('leave level %s%d' % (level * ' ', level))

def demo(depth):
    t = stackless.tasklet(recurs)(depth)
    print(ch.receive())
    with open('tasklet.pickle', 'wb') as f:
        pickle.dump(t, f)
    t.kill()

if __name__ == '__main__':
    if len(sys.argv) > 2:
        with open(sys.argv[2], 'rb') as f:
            t = pickle.load(f)
        t.insert()
    else:
        t = stackless.tasklet(demo)(int(sys.argv[1]))
    stackless.run()
'''


@pytest.mark.parametrize("depth", [14, 9])
def test_the_demo_round_trips_between_two_processes(tmp_path, depth):
    script = tmp_path / "demo.py"
    script.write_text(DEMO)
    run = lambda *a: subprocess.run([sys.executable, str(script), *a], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=60)
    first = run(str(depth))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "enter level %s%d" % (i * " ", i) for i in range(1, depth + 1)] + ["hi"]
    second = run(str(depth), "tasklet.pickle")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "leave level %s%d" % (i * " ", i) for i in range(depth, 0, -1)]


def test_python_m_stackless_demonstrates_it():
    out = subprocess.run([sys.executable, "-m", "stackless", "--no-hackysack", "--depth", "3"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    i = lines.index("--- process 2: load the pickle, resume the tasklet")
    assert lines[i - 4:i] == ["enter level  1", "enter level   2", "enter level    3", "hi"]
    assert lines[i + 1:] == ["leave level    3", "leave level   2", "leave level  1"]


def receiver(ch):
    try:
        v = ch.receive()
        LOG.append(("got", v))
        raise ValueError(v)
    finally:
        LOG.append("finally")


def test_a_rebuilt_tasklet_receives_raises_and_runs_finally():
    LOG.clear()
    ch = channel()
    t = tasklet(receiver)(ch)
    stackless.run()
    t2, ch2 = pickle.loads(pickle.dumps((t, ch)))
    t.kill()
    assert LOG == ["finally"]
    LOG.clear()
    with pytest.raises(ValueError, match="42") as info:
        ch2.send(42)
        stackless.run()
    assert LOG == [("got", 42), "finally"]
    assert traceback.extract_tb(info.value.__traceback__)[-1].name == "receiver"
    # killing a rebuilt tasklet unwinds its frames
    LOG.clear()
    t3 = tasklet(receiver)(ch)
    stackless.run()
    t4, _ = pickle.loads(pickle.dumps((t3, ch)))
    t3.kill()
    LOG.clear()
    t4.kill()
    assert LOG == ["finally"] and not t4.alive


def pauser():
    stackless.schedule_remove()
    return LOG.append("resumed")


def in_generator():
    def gen():
        stackless.schedule_remove()
        yield 1
    for _ in gen():
        pass


def test_restorable_for_each_kind_of_tasklet():
    main = stackless.getcurrent()
    assert not main.restorable
    t = tasklet(pauser)
    assert t.restorable                     # bound, not alive
    t()
    assert t.restorable                     # scheduled, not started
    stackless.run()
    assert t.paused and t.restorable        # paused in schedule_remove()
    ch = channel()
    b = tasklet(ch.receive)()
    stackless.run()
    assert b.blocked and b.restorable       # blocked, no Python frame of its own
    r = tasklet(receiver)(ch)
    stackless.run()
    assert r.blocked and r.restorable       # blocked in its own code
    g = tasklet(in_generator)()
    stackless.run()
    assert g.paused and g.restorable        # a generator runs in it (for loop)
    s = tasklet(lambda: sorted([2, 1], key=lambda x: stackless.schedule_remove()))()
    stackless.run()
    assert not s.restorable                 # C code between its frames
    for x in (t, b, r, g, s):
        x.kill()
    assert t.restorable and not t.alive     # dead


def test_a_restored_tasklet_blocked_on_its_own_receives_through_the_channel():
    ch = channel()
    b = tasklet(ch.receive)()
    stackless.run()
    b2, ch2 = pickle.loads(pickle.dumps((b, ch)))
    b.kill()
    assert b2.blocked and ch2.balance == -1
    ch2.send("x")
    stackless.run()
    assert not b2.alive and ch2.balance == 0


# ---------------------------------------------------------------------------
# generators and coroutines that are not running
# ---------------------------------------------------------------------------

def counting(n, *, step=1):
    total = 0
    try:
        for i in range(0, n, step):
            total += (yield i) or 0
    finally:
        LOG.append(("finally", total))
    return total


def inner_gen():
    v = yield "a"
    w = yield "b"
    return (v, w)


def delegating():
    r = yield from inner_gen()
    yield r


class Later:
    def __await__(self):
        return (yield "paused")


async def awaiting():
    v = await Later()
    return v * 2


def test_suspended_generators_pickle_and_copy():
    LOG.clear()
    g = counting(5)
    assert [next(g), g.send(10)] == [0, 1]
    g2 = pickle.loads(pickle.dumps(g))
    g3 = copy.deepcopy(g)
    assert list(g2) == [2, 3, 4] and LOG == [("finally", 10)]
    assert [g.send(1), g3.send(100)] == [2, 2]
    d = delegating()
    assert [next(d), d.send(1)] == ["a", "b"]
    assert [pickle.loads(pickle.dumps(d)).send(2), d.send(3)] == [(1, 2), (1, 3)]
    assert list(pickle.loads(pickle.dumps(counting(2)))) == [0, 1]      # not started
    spent = counting(1)
    list(spent)
    assert list(pickle.loads(pickle.dumps(spent))) == []                # finished
    g.close()
    g3.close()


def test_suspended_coroutines_pickle():
    c = awaiting()
    assert c.send(None) == "paused"
    c2 = pickle.loads(pickle.dumps(c))
    with pytest.raises(StopIteration) as info:
        c2.send(21)
    assert info.value.value == 42
    c.close()


def iterating(c):
    out = []
    for v in counting(4):
        out.append((v, c.switch(v)))
    return out


def test_a_generator_suspended_in_a_frame_comes_along():
    LOG.clear()
    c = continulet(iterating)
    assert [c.switch(), c.switch("x")] == [0, 1]
    c2 = pickle.loads(pickle.dumps(c))
    res = None
    while c2.is_pending():
        res = c2.switch("y")
    assert res == [(0, "x"), (1, "y"), (2, "y"), (3, "y")]
    assert LOG == [("finally", 0)]
    c.switch("z")


def test_a_running_generator_does_not_pickle():
    def selfish():
        yield pickle.dumps(me)
    me = selfish()
    with pytest.raises(pickle.PicklingError, match="it is running"):
        next(me)
