"""When a tasklet nobody refers to any more dies (issue 9, item 9).

As in Stackless 3.7 with hard switching (``enable_softswitch(False)``;
every switch here is a hard switch), each asked of the oracle
(../shared/tools/slp37): a dropped *paused* tasklet is killed right after
the next garbage collection of its thread; one blocked on a channel that
went with it at exit; all of a thread's tasklets when the thread ends
(docs/stackless.md, "Lifetime").
"""
from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref

import pytest

import stackless

pytestmark = pytest.mark.skipif(
    sys.implementation.name == "pypy",
    reason="PyPy's continulets have no finalizer hook: a dropped paused tasklet "
           "dies with its thread or at exit there (docs/stackless.md, Lifetime)")

G = "a global"


@pytest.fixture(autouse=True)
def clean_scheduler():
    gc.collect()        # what earlier tests dropped dies now, not in ours
    yield
    stackless.set_schedule_callback(None)
    for t in stackless._live_tasklets(threading.get_ident()):
        if t.alive and not t.is_main:
            t.kill()
    assert stackless.getcurrent() is stackless.getmain()
    assert stackless.getruncount() == 1


def _paused(log: list, name: str) -> None:
    """Start a tasklet that pauses (schedule_remove) and logs its end."""
    def body() -> None:
        try:
            stackless.schedule_remove()
            log.append(name + " resumed")
        finally:
            log.append(name + " finally")
    stackless.tasklet(body)()
    stackless.run()


def test_a_dropped_paused_tasklet_is_killed_in_the_next_collection():
    """Killed with TaskletExit inside gc.collect(), in the order they were
    made; the finally sees its locals, closure cells and globals intact,
    and runs as the current tasklet, scheduled, with main runnable too."""
    log = []

    def body(name):
        local = "local " + name
        cell = [name]

        def inner():
            return cell
        try:
            stackless.schedule_remove()
            log.append((name, "resumed"))
        except TaskletExit as e:
            log.append((name, "killed", type(e), e.args))
            raise
        finally:
            cur = stackless.getcurrent()
            log.append((name, "finally", local, G, inner(), cur is stackless.getmain(),
                        cur.alive, cur.scheduled, cur.paused, stackless.getruncount(),
                        sys.exc_info()[0]))
    for name in "abc":
        stackless.tasklet(body)(name)
    stackless.run()
    assert log == []
    gc.collect()
    assert log == [x for name in "abc" for x in [
        (name, "killed", TaskletExit, ()),
        (name, "finally", "local " + name, G, [name], False, True, True, False, 2, TaskletExit)]]
    assert stackless.getcurrent() is stackless.getmain() and stackless.getruncount() == 1
    assert gc.collect() >= 0 and len(log) == 6


def test_a_finished_tasklet_is_freed_without_the_collector():
    """Its continulet knows it only while it lives: no cycle is left."""
    def body():
        stackless.schedule()
    gc.disable()
    try:
        # (the first ends with the other one runnable, the second with none)
        ts = [stackless.tasklet(body)(), stackless.tasklet(body)()]
        stackless.run()
        assert not any(t.alive for t in ts)
        refs = [weakref.ref(x) for t in ts for x in (t, t._cont)]
        del ts
        assert [r() for r in refs] == [None] * 4
    finally:
        gc.enable()


def test_a_held_paused_tasklet_lives_and_its_last_reference_alone_does_not_kill_it():
    log = []

    def body():
        try:
            stackless.schedule_remove()
        finally:
            log.append("finally")
    t = stackless.tasklet(body)()
    stackless.run()
    gc.collect()
    assert log == [] and t.paused
    del t
    assert log == []        # its stack refers to it: a cycle, for the collector
    gc.collect()
    assert log == ["finally"]


def test_a_tasklets_registry_entry_cannot_be_written_and_it_lives_and_dies_as_usual():
    """The accelerator keeps a tasklet's place in its registry inside the
    tasklet, where Python code cannot write it (a tasklet, as in Stackless,
    takes no new attributes): the registry finds the tasklet, not another
    one, and lets it die when dropped."""
    log = []
    other = stackless.tasklet(lambda: None)

    def body():
        try:
            stackless.schedule_remove()
        finally:
            log.append("finally")
    t = stackless.tasklet(body)
    with pytest.raises(AttributeError):
        t._key = id(other)
    t()
    stackless.run()
    gc.collect()
    live = stackless._live_tasklets(threading.get_ident())
    assert t in live and other not in live and log == [] and t.paused
    del t, live
    gc.collect()
    assert log == ["finally"]
    assert [x for x in stackless._live_tasklets(threading.get_ident()) if not x.is_main] == []


def test_a_paused_tasklet_reachable_only_from_a_dropped_cycle_is_killed():
    log = []

    class Holder:
        pass
    h = Holder()
    h.me = h

    def body():
        try:
            stackless.schedule_remove()
        finally:
            log.append("finally")
    h.t = stackless.tasklet(body)()
    stackless.run()
    gc.collect()
    assert log == []
    del h
    gc.collect()
    assert log == ["finally"]


def test_a_dropped_tasklet_that_goes_on_pausing_is_killed_ten_times_then_lives():
    """Stackless 3.7 kills it ten times in that collection, then leaves it
    alone: later collections do not kill it again."""
    kills = []

    def stubborn():
        while True:
            try:
                stackless.schedule_remove()
            except TaskletExit:
                kills.append(stackless.getcurrent())
    stackless.tasklet(stubborn)()
    stackless.run()
    gc.collect()
    assert len(kills) == 10 and all(t is kills[0] for t in kills)
    t = kills[0]
    assert t.alive and t.paused
    del t
    kills[1:] = []
    gc.collect()
    assert len(kills) == 1
    kills.pop().kill()      # (it goes on: the fixture checks the scheduler)


def test_a_tasklet_removed_while_it_waited_in_schedule_is_killed_when_dropped():
    log = []

    def body():
        try:
            while True:
                stackless.schedule()
        finally:
            log.append("finally")
    t = stackless.tasklet(body)()
    stackless.schedule()        # it runs, and waits in schedule()
    t.remove()
    del t
    assert log == []
    gc.collect()
    assert log == ["finally"]


def test_the_finally_of_a_dropped_tasklet_may_switch():
    """The kill runs after the collection, where switching is allowed, as
    ``t.kill()`` by the collecting tasklet would (slp37 gives that order
    for ``t.kill()``; its collector kills inside the collection, where
    such a finally never completes)."""
    log = []
    ch = stackless.channel()

    def body():
        try:
            stackless.schedule_remove()
        finally:
            stackless.schedule()
            ch.send("from the finally")
            log.append("finally done")
    stackless.tasklet(body)()
    stackless.run()
    stackless.tasklet(lambda: log.append(ch.receive()))()
    gc.collect()        # by main, with the receiver in the run queue
    log.append("collected")
    stackless.run()
    assert log == ["collected", "from the finally", "finally done"]


def test_an_error_in_the_finally_of_a_dropped_tasklet_killed_by_main_is_reported(monkeypatch):
    """Nothing raises out of a collection: what the finally raises is
    reported as unraisable (Stackless 3.7 drops it silently), and main
    goes on."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)

    def body():
        try:
            stackless.schedule_remove()
        finally:
            raise ValueError("from the finally")
    stackless.tasklet(body)()
    stackless.run()
    gc.collect()
    assert [(type(u.exc_value), str(u.exc_value)) for u in seen] == [
        (ValueError, "from the finally")]
    assert stackless.getruncount() == 1
    assert stackless.schedule() is stackless.getmain()


def test_a_collection_in_a_tasklet_kills_there_and_returns_to_it():
    log = []
    _paused(log, "victim")
    seen = []

    def collector():
        log.append("collects")
        gc.collect()
        seen.append(stackless.getcurrent())
        log.append("collected")
    t = stackless.tasklet(collector)()
    stackless.run()
    assert log == ["collects", "victim finally", "collected"]
    assert seen == [t]


def test_a_collection_in_a_tasklet_that_another_one_resumed_kills_there():
    """The collecting tasklet was resumed by one that paused through the
    package's own code: that code is on another stack, not inside an
    operation of this one."""
    log = []
    _paused(log, "victim")

    def pauser():
        stackless.schedule_remove()     # resumes the collector

    def collector():
        stackless.schedule()
        log.append("collects")
        gc.collect()
        log.append("collected")
    stackless.tasklet(collector)()
    p = stackless.tasklet(pauser)()
    stackless.run()
    assert log == ["collects", "victim finally", "collected"]
    assert p.paused
    p.kill()


def test_a_tasklet_whose_bound_method_refers_to_it_is_killed_too():
    """Here the collector sees the references a paused tasklet's frames
    hold: a tasklet running a method of an object that holds the tasklet
    is killed when both are dropped.  (Stackless 3.7's collector does not
    look into a hard-switched stack: there it lives on, and its finally
    never runs, not even at exit.)"""
    log = []

    class Worker:
        def __init__(self):
            self.t = stackless.tasklet(self.run)()

        def run(self):
            try:
                stackless.schedule_remove()
            finally:
                log.append("finally")
    Worker()
    stackless.run()
    gc.collect()
    assert log == ["finally"]


def test_a_collection_inside_a_schedule_callback_waits():
    """A collection that runs inside a stackless operation (here in the
    schedule callback, in the middle of a switch) kills nothing there
    (Stackless 3.7 crashes): the next collection does."""
    log = []
    _paused(log, "victim")
    calls = []

    def cb(prev, nxt):
        calls.append(1)
        if len(calls) == 1:
            log.append("cb collects")
            gc.collect()
            log.append("cb collected")

    def w():
        log.append("w")
        stackless.schedule()
        log.append("w again")
    stackless.tasklet(w)()
    stackless.set_schedule_callback(cb)
    stackless.run()
    stackless.set_schedule_callback(None)
    assert log == ["cb collects", "cb collected", "w", "w again"]
    gc.collect()
    assert log[-1] == "victim finally"


def _in_a_thread(collect_in_main: bool) -> list:
    log = []
    started, collected = threading.Event(), threading.Event()

    def thread():
        _paused(log, "other")
        started.set()
        collected.wait()
        gc.collect()
        log.append("its thread collected")
    th = threading.Thread(target=thread)
    th.start()
    started.wait()
    if collect_in_main:
        gc.collect()
        log.append("main collected")
    collected.set()
    th.join()
    log.append("joined")
    return log


def test_a_dropped_tasklet_of_another_thread_dies_in_its_threads_collection():
    assert _in_a_thread(False) == ["other finally", "its thread collected", "joined"]


def test_a_dropped_tasklet_that_another_threads_collection_found_dies_with_its_thread():
    assert _in_a_thread(True) == ["main collected", "its thread collected", "other finally",
                                  "joined"]


EXIT_SCRIPT = r"""
import gc, stackless
def body(name, how):
    try:
        if how == "block":
            stackless.channel().receive()   # blocked on a channel only it knows
        else:
            stackless.schedule_remove()     # paused
        print(name, "resumed", flush=True)
    except TaskletExit:
        print(name, "killed", flush=True)
        raise
    finally:
        print(name, "finally", flush=True)
for name, how in [("blocked", "block"), ("paused", "remove")]:
    stackless.tasklet(body)(name, how)
    stackless.run()
print("collecting", flush=True)
gc.collect()
print("collected", flush=True)
"""


def test_a_dropped_blocked_tasklet_is_killed_at_exit():
    """The paused one dies in the collection, the blocked one (with its
    channel) at exit, each once."""
    p = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["collecting", "paused killed", "paused finally",
                                     "collected", "blocked killed", "blocked finally"]


def test_every_dropped_paused_tasklet_dies_after_a_long_stretch_without_collections():
    """Thousands of tasklets pause and are dropped while the collector is
    off: the first collection kills all of them, in the order they were
    made, as in Stackless 3.7."""
    log = []
    gc.disable()
    try:
        for i in range(5000):
            _paused(log, str(i))
        assert log == []
    finally:
        gc.enable()
    gc.collect()
    assert log == [str(i) + " finally" for i in range(5000)]


def test_a_referenced_blocked_tasklet_that_a_collection_saw_dies_with_its_thread():
    """Held by the caller (so no collection drops it) and blocked when a
    collection runs (its registry holds it weakly): its thread's
    end still finds it and kills it, as Stackless 3.7 does (alive False
    afterwards); here its finally runs too (TaskletExit)."""
    log, keep = [], []

    def thread_body():
        ch = stackless.channel()

        def waiter():
            try:
                ch.receive()
            finally:
                log.append("finally")
        t = stackless.tasklet(waiter)()
        keep.append((t, ch))
        stackless.run()
        gc.collect()
        log.append(("after collection", t.blocked, t.alive,
                    t in stackless._live_tasklets(threading.get_ident())))
    th = threading.Thread(target=thread_body)
    th.start()
    th.join()
    assert log == [("after collection", True, True, True), "finally"]
    assert keep[0][0].alive is False


def _exchange() -> tuple:
    ch = stackless.channel()
    t = stackless.tasklet(ch.send)(3)
    return ch, t, ch.receive()


def test_a_sender_left_runnable_outlives_the_frame_it_last_left():
    # The sender runs no Python frame of its own (the C channel's send):
    # the frame that switched out of it last, _exchange's, has returned
    # when the collector runs (it read that frame: SIGSEGV on 3.14).
    ch, t, got = _exchange()
    gc.collect()
    assert got == 3
    assert (t.alive, t.scheduled, t.blocked, t.frame) == (True, True, False, None)
    stackless.run()
    assert not t.alive and ch.balance == 0


def test_the_tasklets_of_an_ended_thread_are_freed_once_dropped():
    """A thread ends with tasklets in every state its registry knows:
    bound and runnable, bound and removed (held by the registry alone),
    blocked, paused.  Its end kills them (the finally of each started one
    runs; Stackless 3.7 runs none, docs/stackless.md); once the caller
    drops them, nothing keeps any of them (Stackless 3.7 frees them too)."""
    log, refs = [], []

    def thread_body():
        ch = stackless.channel()

        def waiter(kind):
            try:
                if kind == "blocked":
                    ch.receive()
                else:
                    stackless.schedule_remove()
            finally:
                log.append(kind)
        made = [stackless.tasklet(waiter)(k) for k in ("blocked", "paused") * 3]
        stackless.run()
        made += [stackless.tasklet(waiter)("runnable") for _ in range(3)]
        removed = [stackless.tasklet(waiter)("removed") for _ in range(3)]
        for t in removed:
            t.remove()
        refs.extend(weakref.ref(t) for t in made + removed)
        gc.collect()
    th = threading.Thread(target=thread_body)
    th.start()
    th.join()
    gc.collect()
    assert (log.count("blocked"), log.count("paused"), log.count("removed")) == (3, 3, 0)
    assert [r() for r in refs] == [None] * len(refs)
