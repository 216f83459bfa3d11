"""What the frames of a suspended continulet hold on their value stacks
is seen by the garbage collector.

A frame suspended in a call made from C (a `for` loop over a generator,
`next(g)`, `f(*args)`) keeps the call's operands on its value stack, where
CPython 3.11 and 3.13 store no stack pointer (docs/design.md, "What the GC
sees of a suspended stack").  A pending continulet in a cycle through them
must still be collected and unwound, and nothing else may be reported to
the GC: finalizers that switch away in the middle of an instruction leave
slots that no longer own their objects (a debug build asserts on that).
"""
from __future__ import annotations

import gc
import sys
import weakref

import pytest

from _continuation import continulet

pytestmark = pytest.mark.skipif(
    sys.implementation.name == "pypy",
    reason="PyPy drops a pending continulet without unwinding it (docs/continuation.md)")


class Unraisable:
    """Collects what reaches sys.unraisablehook."""

    def __enter__(self) -> list:
        self.seen: list = []
        self.old = sys.unraisablehook
        sys.unraisablehook = lambda u: self.seen.append(repr(u.exc_value))
        return self.seen

    def __exit__(self, *exc) -> None:
        sys.unraisablehook = self.old


def collect() -> None:
    gc.collect()
    gc.collect()


def suspend_drop_collect(body) -> None:
    """Start continulet(body) until it switches back, drop it, collect:
    it must be collected and unwound, with nothing unraisable reported."""
    c = continulet(body)
    c.switch()
    r = weakref.ref(c)
    del c
    with Unraisable() as seen:
        collect()
    assert r() is None and seen == []


# ---------------------------------------------------------------------------
# f(*args): CALL_FUNCTION_EX
# ---------------------------------------------------------------------------

def star_plain(c):
    args = (None,)
    c.switch(*args)


def star_empty_kwargs(c):
    args, kw = (None,), {}
    c.switch(*args, **kw)


def star_tuple_holds_the_cycle(c):
    holder = [c]
    c.switch(*(holder,))        # the tuple of arguments refers to the cycle


def star_through_a_closure(c):
    (lambda *a: c.switch())(*())    # the function, held only by the call, refers to c


def star_list(c):
    args = [None]
    c.switch(*args)             # 3.11/3.13 call with a tuple made from the list


def star_temporary_list(c):
    c.switch(*[None])           # the list is freed before the switch: never reported


def star_list_holds_the_cycle(c):
    c.switch(*[[c]])            # only the tuple made from the list refers to the cycle


def star_keywords(c):
    c.switch(*(), value=None)   # the switch gets copies of the arguments


def star_kwargs(c):
    kw = {"value": None}
    c.switch(**kw)


def star_list_and_keywords(c):
    args = [None]
    c.switch(*args, to=None)


@pytest.mark.parametrize("call", [star_plain, star_empty_kwargs, star_tuple_holds_the_cycle,
                                  star_through_a_closure, star_list, star_temporary_list,
                                  star_list_holds_the_cycle, star_keywords, star_kwargs,
                                  star_list_and_keywords])
def test_switched_through_a_star_call_is_collected(call):
    done = []

    def body(c):
        try:
            call(c)
        finally:
            done.append("finally")

    suspend_drop_collect(body)
    assert done == ["finally"]


# ---------------------------------------------------------------------------
# Generators running on the suspended stack
# ---------------------------------------------------------------------------

def drive_for(gen):
    for _ in gen:
        pass


def drive_next(gen):
    next(gen)


def drive_send(gen):
    gen.send(None)


def drive_yield_from(gen):
    def outer():
        yield from gen
    for _ in outer():
        pass


def drive_list(gen):
    list(gen)                   # list's C code holds the generator too


def drive_tuple(gen):
    tuple(gen)


def drive_set(gen):
    set(gen)


def drive_sum(gen):
    sum(gen)                    # sum's C code holds its iterator, the generator


def drive_sum_start(gen):
    sum(gen, start=0)


def drive_sorted(gen):
    sorted(gen, key=id, reverse=True)   # through the list it makes


def drive_join(gen):
    "".join(gen)                # PySequence_Fast: two references of its own


def drive_dict(gen):
    dict(gen)


def drive_any(gen):
    any(gen)


def drive_all(gen):
    all(gen)


def drive_min(gen):
    min(gen, key=id)


def drive_max(gen):
    max(gen, default=None)


old_min_max = pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason="3.11's min and max hold a tuple of their arguments, which no frame shows (docs/design.md)")


@pytest.mark.parametrize("drive", [drive_for, drive_next, drive_send, drive_yield_from,
                                   drive_list, drive_tuple, drive_set, drive_sum, drive_sum_start,
                                   drive_sorted, drive_join, drive_dict, drive_any, drive_all,
                                   pytest.param(drive_min, marks=old_min_max),
                                   pytest.param(drive_max, marks=old_min_max)])
def test_switched_inside_a_running_generator_is_collected(drive):
    done = []

    def body(c):
        def gen():
            try:
                c.switch()      # suspends the continulet with the generator running
                yield
            finally:
                done.append("gen")
        try:
            drive(gen())
        finally:
            done.append("body")

    # the generator is unwound as part of the continulet: its finalizer is
    # not called on its own ("generator already executing" unraisable)
    suspend_drop_collect(body)
    assert done == ["gen", "body"]


def by_max_two(gen):
    # max of two arguments holds no iterator of its own: next() runs the
    # generator, through the key function
    other = iter(["z"])
    return max(gen, other, key=next) is other


@pytest.mark.parametrize("drive, items, expected", [
    (sum, [1, 2], 3), ("".join, ["a", "b"], "ab"), (sorted, [2, 1], [1, 2]),
    (dict, [(1, 2)], {1: 2}), (by_max_two, ["a"], True)])
def test_generator_run_by_a_c_callable_survives_collections(drive, items, expected):
    # Alive, the stack's references are counted exactly: the collections
    # free nothing that it uses (a debug build checks the counts), and it
    # resumes with its values intact.
    def body(c):
        def gen():
            c.switch("suspended")
            yield from items
        g = gen()
        return drive(g)

    c = continulet(body)
    assert c.switch() == "suspended"
    for _ in range(3):
        gc.collect()
        gc.get_referents(c)
    assert c.switch() == expected


@pytest.mark.parametrize("bound", [False, True], ids=["function", "method"])
def test_switched_inside_a_call_iterators_function_is_collected(bound):
    # for x in iter(f, stop): the loop's frame holds the iterator, which
    # holds f, while its C __next__ calls f
    done = []

    def body(c):
        class Box:
            def f(self):
                try:
                    c.switch()
                finally:
                    done.append("f")

        def f():
            return Box.f(None)

        try:
            for _ in iter(Box().f if bound else f, None):
                pass
        finally:
            done.append("body")

    suspend_drop_collect(body)
    assert done == ["f", "body"]


def test_running_generator_resumed_after_a_collection_is_finalized_later():
    # The collector leaves the finalizer of a generator that runs in a
    # suspended stack alone; once the stack runs on, the generator is an
    # ordinary one again: dropped while suspended, it is closed.
    done = []

    def body(c):
        def gen():
            try:
                c.switch()
                yield 1
                yield 2
            finally:
                done.append("gen")
        g = gen()
        next(g)
        return g

    c = continulet(body)
    c.switch()
    gc.collect()                # c is alive: nothing happens to the generator
    g = c.switch()
    assert done == [] and next(g) == 2
    del g
    gc.collect()
    assert done == ["gen"]


class SwitchingIterator:
    """A Python iterator (not a generator) whose __next__ switches."""

    def __init__(self, c, done):
        self.c, self.done, self.n = c, done, 0

    def __next__(self):
        self.n += 1
        if self.n > 1:
            raise StopIteration
        try:
            self.c.switch()
        finally:
            self.done.append("next")
        return self.n

    def __iter__(self):
        return self


def test_switched_inside_a_python_iterators_next_is_collected():
    # a for loop over an iterator whose __next__ is Python code: the loop's
    # frame holds the iterator on its value stack while __next__ runs
    done = []

    def body(c):
        try:
            for _ in SwitchingIterator(c, done):
                pass
        finally:
            done.append("body")

    suspend_drop_collect(body)
    assert done == ["next", "body"]


# ---------------------------------------------------------------------------
# Finalizers that switch away in the middle of an instruction
# ---------------------------------------------------------------------------

class SwitchesInDel:
    """Its __del__ suspends the continulet that drops it, then goes on."""

    def __init__(self, c, log):
        self.c, self.log = c, log

    def __del__(self):
        self.log.append("del")
        self.c.switch()
        self.log.append("del resumed")


def target(*args):
    return len(args)


def dropped_by_a_call(c, log):
    target(SwitchesInDel(c, log))           # dropped after the call returns


def dropped_by_a_star_call(c, log):
    target(*[SwitchesInDel(c, log)])       # dropped with the arguments' tuple


class ExhaustedSwitchesInDel(SwitchesInDel):
    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration


def dropped_by_an_exhausted_iterator(c, log):
    for _ in ExhaustedSwitchesInDel(c, log):   # dropped by the loop, at its end
        pass


def dropped_by_a_finished_send(c, log):
    def inner():
        keep = SwitchesInDel(c, log)
        del keep        # never suspends with it: dropped right away
        return 1
        yield

    def outer():
        return (yield from inner())
    for _ in outer():
        pass


@pytest.mark.parametrize("where", [dropped_by_a_call, dropped_by_a_star_call,
                                   dropped_by_an_exhausted_iterator, dropped_by_a_finished_send])
@pytest.mark.parametrize("then", ["resume", "drop"])
def test_finalizer_switching_away_mid_instruction(where, then):
    # The frame that dropped the object is suspended half-way through an
    # instruction, and the slots it has already released must not be
    # reported to the GC (a debug build checks the counts).  The object
    # being finalized is held by its deallocation, C code of the suspended
    # stack that the GC cannot see: dropped there, the continulet stays
    # alive with it, and can still be resumed.
    log = []

    def body(c):
        try:
            where(c, log)
        finally:
            log.append("finally")

    c = continulet(body)
    c.switch()
    assert log == ["del"]
    for _ in range(3):
        gc.collect()
        gc.get_referents(c)
    if then == "resume":
        c.switch()
        assert log == ["del", "del resumed", "finally"] and not c.is_pending()
        return
    r = weakref.ref(c)
    del c
    with Unraisable() as seen:
        collect()
    assert seen == []
    assert r() is not None and log == ["del"]
    r().switch()        # let it finish
    assert log == ["del", "del resumed", "finally"]


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="3.14+ store every frame's stack pointer")
def test_stack_depths_agree_with_dis():
    # The depth analysis behind all this, checked against the one that
    # pickling uses (dis.stack_effect on the control flow) over real code.
    import _continuation
    import _continuation_pickle
    import types
    import json
    import asyncio.tasks
    import email.parser

    def codes(co):
        yield co
        for k in co.co_consts:
            if isinstance(k, types.CodeType):
                yield from codes(k)
    n = 0
    import _continuation_frames
    for mod in (json.decoder, asyncio.tasks, email.parser, _continuation_pickle, _continuation_frames,
                sys.modules[__name__]):
        with open(mod.__file__, encoding="utf-8") as f:
            top = compile(f.read(), mod.__file__, "exec")
        for co in codes(top):
            assert _continuation._code_depths(co) == _continuation_pickle._depths(co)[1], co
            n += 1
    assert n > 100


def frameless() -> continulet:
    """A continulet suspended in a C callable: no Python frame of its own."""
    c = continulet(continulet.switch)
    c.switch()          # continulet.switch(c) switches straight back
    return c


def test_frameless_run_outlives_the_frame_that_switched_out_of_it():
    # The frame that last left the run (frameless's) has returned: the
    # GC must not read it through the run (it did, and crashed on 3.14).
    c = frameless()
    gc.collect()
    names = {getattr(r, "__qualname__", None) for r in gc.get_referents(c)}
    assert "frameless" not in names
    assert c.is_pending()
    assert c.switch() is None
    assert not c.is_pending()


def test_frameless_run_does_not_report_its_switchers_values():
    # The caller's frame is the running stack's: its values are roots.  A
    # cycle that only they hold must survive a collection, and so must the
    # pending continulet itself (it was unwound as garbage).
    a: list = []
    a.append(a)
    c = continulet(continulet.switch)
    c.switch()
    for r in gc.get_referents(c):   # (no generator expression: a stays a plain local)
        assert r is not a
    gc.collect()
    assert len(a) == 1 and a[0] is a
    assert c.is_pending()
    assert c.switch() is None
