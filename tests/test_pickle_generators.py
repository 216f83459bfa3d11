"""Pickling and copying stacks with a generator or coroutine *running* in
them: the stack is blocked inside the generator's body, which the frame
below runs with a for loop, next(), send(), throw(), yield from or await.

Stackless 3.7 pickles such tasklets (a for loop, yield from, a coroutine
driven by send()) and they resume; its next(g) is C code there and does not
restore, here it does.  The generator comes back as the same object for
every reference to it, running while the stack runs in it
(docs/continuation.md, "Generators running in the stack").
"""
from __future__ import annotations

import copy
import gc
import pickle
import subprocess
import sys
import textwrap

import pytest

if sys.implementation.name != "cpython":
    pytest.skip("frames as data: CPython only", allow_module_level=True)

from _continuation import continulet

import stackless


def counting(c, n, box=()):
    for i in range(n):
        me = box[0] if box else None
        x = c.switch(("in gen", i, me.gi_running if me is not None else None))
        yield (i, x)
    return "ret"


def for_loop(c):
    out = []
    keep: list = []
    g = counting(c, 2, keep)
    keep.append(g)
    for v in g:
        out.append(v)
    return ("done", out, keep[0] is g, g.gi_running, g.gi_frame)


def nexts(c):
    g = counting(c, 1)
    a = next(g)
    b = next(g, "default")
    return ("nexts", a, b)


def next_to_the_end(c):
    g = counting(c, 1)
    a = next(g)
    try:
        next(g)
    except StopIteration as e:
        return ("stop", a, e.value)


def sub(c):
    v = c.switch("sub")
    yield v
    return "sub returned"


def middle(c):
    r = yield from sub(c)
    return ("middle", r)


def yield_from(c):
    out = [v for v in middle(c)]
    g = middle(c)
    out.append(g.send(None))
    try:
        g.send("X")
    except StopIteration as e:
        out.append(e.value)
    return out


class Awaitable:
    def __init__(self, c):
        self.c = c

    def __await__(self):
        v = self.c.switch("awaiting")
        return (yield v)


async def coro(c):
    x = await Awaitable(c)
    return ("coro", x)


def drive(c):
    co = coro(c)
    y = co.send(None)
    try:
        co.send("sent")
    except StopIteration as e:
        return ("drive", y, e.value)


def raising(c):
    c.switch("raising")
    raise ValueError("boom")
    yield


def catch(c):
    try:
        for _ in raising(c):
            pass
    except ValueError as e:
        return ("caught", str(e))


def stop_inside(c):
    c.switch("stopping")
    raise StopIteration("x")
    yield


def catch_stop(c):
    try:
        for _ in stop_inside(c):
            pass
    except RuntimeError as e:
        return ("runtime error", str(e), type(e.__cause__).__name__)


def handling(c):
    try:
        yield 1
    except KeyError:
        v = c.switch("handling")
        yield ("handled", v, sys.exc_info()[0].__name__)


def throw_in(c):
    g = handling(c)
    next(g)
    return ("thrown", g.throw(KeyError))


def twice_inside(c):
    a = c.switch("one")
    b = c.switch("two")     # (copied again here: still in the first run of it)
    yield a + b
    return "twice"


def comprehension(c):
    return [v for v in twice_inside(c)]


def delegating(c):
    r = yield from twice_inside(c)
    yield r


def loop_over_delegating(c):
    return [v for v in delegating(c)]


def ending(c):
    # returns right after the switch: in the first run of its copy
    x = c.switch("ending")
    if x == "more":
        yield x
    return ("ended", x)


def loop_ending(c):
    return ("loop", [v for v in ending(c)])


def next_ending(c):
    try:
        next(ending(c))
    except StopIteration as e:
        return ("stopped", e.value)


def next_default_ending(c):
    return ("default", next(ending(c), "dflt"))


def send_ending(c):
    try:
        ending(c).send(None)
    except StopIteration as e:
        return ("sent", e.value)


def delegating_ending(c):
    r = yield from ending(c)
    yield r


def loop_delegating_ending(c):
    return [v for v in delegating_ending(c)]


class AwaitableNow:
    def __init__(self, c):
        self.c = c

    def __await__(self):
        return self.c.switch("awaiting")
        yield


async def coro_now(c):
    return ("coro", await AwaitableNow(c))


def drive_now(c):
    try:
        coro_now(c).send(None)
    except StopIteration as e:
        return ("drive", e.value)


# (function, values sent in after the first switch, the final result)
CASES = [
    (for_loop, ["A", "B"], ("done", [(0, "A"), (1, "B")], True, False, None)),
    (nexts, ["A"], ("nexts", (0, "A"), "default")),
    (next_to_the_end, ["A"], ("stop", (0, "A"), "ret")),
    (yield_from, ["A", "B"], ["A", "B", ("middle", "sub returned")]),
    (drive, ["A"], ("drive", "A", ("coro", "sent"))),
    (catch, ["A"], ("caught", "boom")),
    (catch_stop, ["A"], ("runtime error", "generator raised StopIteration", "StopIteration")),
    (throw_in, ["A"], ("thrown", ("handled", "A", "KeyError"))),
    (comprehension, ["A", "B"], ["AB"]),
    (loop_ending, ["A"], ("loop", [])),
    (next_ending, ["A"], ("stopped", ("ended", "A"))),
    (next_default_ending, ["A"], ("default", "dflt")),
    (send_ending, ["A"], ("sent", ("ended", "A"))),
    (loop_delegating_ending, ["A"], [("ended", "A")]),
    (drive_now, ["A"], ("drive", ("coro", "A"))),
    (loop_over_delegating, ["A", "B"], ["AB", "twice"]),
]


def finish(c):
    while c.is_pending():
        c.switch(0)


def run_through(c, values, again=None):
    out = []
    for v in values:
        if again is not None:
            c = again(c)
        out.append(c.switch(v))
    assert not c.is_pending()
    return out


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("again", [False, True], ids=["once", "again-at-each-step"])
@pytest.mark.parametrize("func, values, result", CASES, ids=[c[0].__name__ for c in CASES])
def test_a_running_generator_resumes_as_the_original(func, values, result, how, again):
    copy_ = (lambda c: pickle.loads(pickle.dumps(c))) if how == "pickle" else copy.deepcopy
    c = continulet(func)
    first = c.switch()
    expected = run_through(continulet(func), [None] + values)
    assert expected[-1] == result
    c2 = copy_(c)
    assert [first] + run_through(c2, values, copy_ if again else None) == expected
    # and the original, untouched
    assert [first] + run_through(c, values) == expected


def test_the_generator_is_the_same_object_and_runs_while_inside():
    c = continulet(for_loop)
    assert c.switch() == ("in gen", 0, True)
    c2 = pickle.loads(pickle.dumps(c))
    # gi_running as seen from inside, and the for loop's iterator is the
    # object the list in its locals holds
    assert c2.switch("A") == ("in gen", 1, True)
    assert c2.switch("B") == ("done", [(0, "A"), (1, "B")], True, False, None)
    finish(c)


def test_an_unpickled_generator_is_running_until_its_stack_resumes():
    c = continulet(nexts)
    c.switch()
    g = next(o for o in gc.get_referrers(counting.__code__)
             if getattr(o, "gi_code", None) is counting.__code__)
    assert g.gi_running
    c2, g2 = pickle.loads(pickle.dumps((c, g)))
    assert g2 is not g and g2.gi_running
    with pytest.raises(ValueError, match="generator already executing"):
        next(g2)
    assert c2.switch("A") == ("nexts", (0, "A"), "default")
    assert not g2.gi_running and g2.gi_frame is None
    finish(c)


def test_a_running_generator_alone_does_not_pickle():
    c = continulet(nexts)
    c.switch()
    g = next(o for o in gc.get_referrers(counting.__code__)
             if getattr(o, "gi_code", None) is counting.__code__)
    with pytest.raises(pickle.PicklingError, match="it is running"):
        pickle.dumps(g)
    # after the stack that holds it, it is memoized
    pickle.dumps((c, g))
    with pytest.raises(pickle.PicklingError, match="it is running"):
        pickle.dumps(g)
    finish(c)


def test_dropping_a_copy_that_never_ran_runs_nothing_and_reports_nothing(monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    c = continulet(for_loop)
    c.switch()
    for _ in range(3):
        c2 = pickle.loads(pickle.dumps(c))
        del c2
        gc.collect()
    assert reported == []
    finish(c)


def test_no_leak_over_many_cycles():
    c = continulet(yield_from)
    c.switch()
    data = pickle.dumps(c)

    def cycle():
        c2 = pickle.loads(data)
        c2.switch(1)
        assert c2.switch(2) == [1, 2, ("middle", "sub returned")]
        pickle.dumps(c)
    for _ in range(100):
        cycle()
    gc.collect()
    before = len(gc.get_objects())
    refs = sys.getrefcount(sub), sys.getrefcount(middle.__code__)
    for _ in range(2000):
        cycle()
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert (sys.getrefcount(sub), sys.getrefcount(middle.__code__)) == refs
    finish(c)


def list_of(c):
    return list(sub(c))


def enumerating(c):
    for _ in enumerate(sub(c)):
        pass


@pytest.mark.parametrize("func", [list_of, enumerating])
def test_a_generator_that_c_code_runs_does_not_pickle(func):
    c = continulet(func)
    c.switch()
    with pytest.raises(pickle.PicklingError,
                       match=r"%s .* runs the generator sub .*through C code; only for loops, "
                             r"next\(\), send\(\), throw\(\), yield from and await" % func.__name__):
        pickle.dumps(c)
    finish(c)


async def agen(c):
    c.switch("in agen")
    yield 1


def drive_agen(c):
    return agen(c).asend(None).send(None)


def test_an_asynchronous_generator_does_not_pickle():
    c = continulet(drive_agen)
    assert c.switch() == "in agen"
    with pytest.raises(pickle.PicklingError,
                       match=r"an asynchronous generator is running in it: agen "):
        pickle.dumps(c)
    with pytest.raises(StopIteration):
        c.switch(0)


# ---------------------------------------------------------------------------
# tasklets (the Stackless way: checked against Stackless 3.7)
# ---------------------------------------------------------------------------

LOG: list = []


def receiving(ch, n):
    for i in range(n):
        x = ch.receive()
        yield (i, x)
    return "end"


def consumer(ch):
    for v in receiving(ch, 2):
        LOG.append(v)
    LOG.append("consumer done")


def test_a_tasklet_blocked_inside_a_generator_round_trips():
    # (the same in Stackless 3.7)
    LOG.clear()
    ch = stackless.channel()
    t = stackless.tasklet(consumer)(ch)
    stackless.run()
    assert t.blocked and t.restorable
    # the channel and its blocked tasklet go together
    t2, ch2 = pickle.loads(pickle.dumps((t, ch)))
    assert t2.blocked and ch2.balance == -1 and t2.restorable
    t.kill()
    ch2.send("first")
    assert LOG == [(0, "first")]
    ch2.send("second")
    assert LOG == [(0, "first"), (1, "second"), "consumer done"]
    assert not t2.alive


SCRIPT = textwrap.dedent('''
    import pickle, sys
    import stackless

    ch = stackless.channel()

    def receiving(n):
        for i in range(n):
            x = ch.receive()
            print("got", i, x)
            yield i
        return "end"

    def middle():
        r = yield from receiving(2)
        print("middle", r)
        yield "last"

    def consumer():
        g = middle()
        first = next(g)
        for v in g:
            print("loop", v)
        print("done", first)

    if len(sys.argv) > 1:
        with open(sys.argv[1], "rb") as f:
            t, ch = pickle.load(f)
        ch.send("resumed")
        ch.send("sent")
    else:
        t = stackless.tasklet(consumer)()
        stackless.run()
        with open("t.pickle", "wb") as f:
            pickle.dump((t, ch), f)
        print("pickled", t.restorable)
''')


def test_a_tasklet_in_a_yield_from_chain_round_trips_between_processes(tmp_path):
    script = tmp_path / "gens.py"
    script.write_text(SCRIPT)
    run = lambda *a: subprocess.run([sys.executable, str(script), *a], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=60)
    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["pickled True"]
    second = run("t.pickle")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "got 0 resumed", "got 1 sent", "loop 1", "middle end", "loop last", "done 0"]
