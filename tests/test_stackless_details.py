"""Details of stackless as Stackless 3.7 has them: tempval and arguments
(each asked of the oracle, ../shared/tools/slp37), and finalizers of the
values the scheduler replaces and channel operations during a garbage
collection (issue 8: nothing runs half-way, nothing is delivered twice).

The stress harness found these (docs/stress.md: D3, D5-D8, S1, S3); its
minimal reproductions are in tests/stress/test_stress.py.
"""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import stackless


def _script_passes(script: str) -> None:
    """Run a script in its own process: a broken scheduler must not fail
    the tests after it."""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


# -- D7: a resumed tasklet takes its tempval ---------------------------------

def test_schedule_alone_returns_retval_and_keeps_nothing():
    marker = object()
    cur = stackless.getcurrent()
    assert stackless.schedule(marker) is marker
    assert cur.tempval is None
    assert stackless.schedule() is cur
    assert cur.tempval is None


def test_every_switch_leaves_the_resumed_tempval_none():
    cur = stackless.getcurrent()
    seen = []

    def sets_main(v):
        stackless.getmain().tempval = v
    t = stackless.tasklet(sets_main)(9)
    assert t.run() == 9 and cur.tempval is None
    t = stackless.tasklet(sets_main)(10)
    assert t.switch() == 10 and cur.tempval is None
    cur.tempval = 8                     # run() returns None and takes it too
    stackless.tasklet(sets_main)(11)
    assert stackless.run() is None and cur.tempval is None

    def in_tasklet():
        seen.append((stackless.schedule(5), stackless.getcurrent().tempval))
        r = stackless.schedule_remove(7)
        seen.append((r, stackless.getcurrent().tempval))
    t = stackless.tasklet(in_tasklet)()
    stackless.run()
    assert t.paused and t.tempval == 7  # a paused tasklet shows its retval
    t.insert()
    stackless.run()
    assert seen == [(5, None), (7, None)]


def test_send_and_receive_replace_a_preset_tempval():
    ch = stackless.channel()
    cur = stackless.getcurrent()
    cur.tempval = 8
    stackless.tasklet(ch.send)(1)       # main waits for it
    assert ch.receive() == 1 and cur.tempval is None
    cur.tempval = 8
    stackless.tasklet(ch.send)(2)
    stackless.run()                     # the sender waits: main pairs at once
    assert ch.receive() == 2 and cur.tempval is None
    cur.tempval = 8
    stackless.tasklet(ch.receive)()
    stackless.run()
    ch.send(3)
    assert cur.tempval is None


# -- D5, D6: a receiver that let the sender run first shows what it took ------

@pytest.mark.parametrize("what", ["value", "exception"])
def test_receiver_shows_what_it_took_until_it_runs(what):
    ch = stackless.channel()
    ch.preference = 1
    seen = []

    class E(Exception):
        pass

    def sender():
        if what == "value":
            ch.send(11)
        else:
            ch.send_exception(E, 5)
        seen.append(r.tempval)

    def receiver():
        try:
            seen.append(("got", ch.receive()))
        except E as e:
            seen.append(("raised", e.args))
        seen.append(("after", stackless.getcurrent().tempval))
    # s.run(), not stackless.run(): in Stackless 3.7 a tasklet that blocks
    # in send_exception() while main waits in run() makes run() raise the
    # exception (docs/stackless.md, differences)
    s = stackless.tasklet(sender)()
    s.run()
    assert s.blocked
    r = stackless.tasklet(receiver)()
    stackless.run()
    if what == "value":
        assert seen == [11, ("got", 11), ("after", None)]
    else:
        assert isinstance(seen[0], stackless.bomb) and seen[0].type is E
        assert seen[1:] == [("raised", (5,)), ("after", None)]


# -- D3, D8: integer arguments converted as Stackless converts them -----------

class _Int:
    def __init__(self, v):
        self.v = v

    def __int__(self):
        return self.v


class _OnlyIndex:
    def __index__(self):
        return 5


class _RaisingInt:
    def __int__(self):
        raise KeyError("int")


@pytest.mark.parametrize("arg,exc,msg", [
    ("x", TypeError, "an integer is required (got type str)"),
    (None, TypeError, "an integer is required (got type NoneType)"),
    (1.5, TypeError, "integer argument expected, got float"),
    (_OnlyIndex(), TypeError, "an integer is required (got type _OnlyIndex)"),
    (_Int("x"), TypeError, "__int__ returned non-int (type str)"),
    (_RaisingInt(), KeyError, "int"),
    (2 ** 70, OverflowError, "Python int too large to convert to C long"),
])
def test_run_timeout_conversion_errors(arg, exc, msg):
    stackless.tasklet(lambda: None)()
    with pytest.raises(exc) as info:
        stackless.run(arg)
    assert msg in str(info.value)
    assert stackless.getruncount() == 2     # nothing ran
    stackless.run()
    assert stackless.getruncount() == 1


@pytest.mark.parametrize("arg", [True, -1, 2 ** 40, _Int(0)])
def test_run_timeout_accepts_ints_and_int_convertibles(arg):
    ran = []
    stackless.tasklet(ran.append)(1)
    assert stackless.run(arg) is None
    assert ran == [1]


@pytest.mark.parametrize("kw", ["threadblock", "soft", "ignore_nesting", "totaltimeout"])
def test_run_flags_are_c_ints(kw):
    with pytest.raises(TypeError, match=r"an integer is required \(got type NoneType\)"):
        stackless.run(**{kw: None})
    with pytest.raises(OverflowError, match="signed integer is greater than maximum"):
        stackless.run(**{kw: 2 ** 40})
    with pytest.raises(OverflowError, match="signed integer is less than minimum"):
        stackless.run(**{kw: -2 ** 40})


@pytest.mark.parametrize("args,exc,msg", [
    (("x",), TypeError, "get_thread_info() argument 1 must be int, not str"),
    ((None,), TypeError, "get_thread_info() argument 1 must be int, not None"),
    ((_OnlyIndex(),), TypeError, "get_thread_info() argument 1 must be int, not _OnlyIndex"),
    ((-2,), OverflowError, "can't convert negative value to unsigned int"),
    ((2 ** 64,), OverflowError, "Python int too large to convert to C unsigned long"),
    ((-1, "x"), TypeError, "get_thread_info() argument 2 must be int, not str"),
    ((True,), RuntimeError, "Thread id not found"),
])
def test_get_thread_info_argument_errors(args, exc, msg):
    with pytest.raises(exc) as info:
        stackless.get_thread_info(*args)
    assert str(info.value) == msg


def test_get_thread_info_of_this_thread():
    me = (stackless.getmain(), stackless.getcurrent(), stackless.getruncount())
    assert stackless.get_thread_info() == me
    assert stackless.get_thread_info(-1) == me
    assert stackless.get_thread_info(0) == me      # as slp37 answers
    assert stackless.get_thread_info(threading.get_ident(), 2 ** 70) == me


# -- S3: finalizers of what the scheduler replaces run where they may switch --

S3_PRELUDE = r"""
import stackless, sys
got = []
class P:
    def __del__(self):
        ch = stackless.channel()
        stackless.tasklet(lambda: got.append(("recv", ch.receive())))()
        ch.send(1)
        got.append("__del__ done")
def failing():
    raise KeyError(1)
def check(expected_error):
    import gc
    gc.collect()    # (PyPy runs finalizers here)
    # the __del__ completes (before or after main gets the error: the
    # Python layer's send() frame keeps the value until the error is gone)
    assert sorted(map(str, got)) == sorted(map(str, [("recv", 1), "__del__ done",
                                                      expected_error])), got
    assert got.index(("recv", 1)) + 1 == got.index("__del__ done"), got
    later = stackless.tasklet(lambda: got.append("later"))()
    stackless.run()
    assert got[-1] == "later" and stackless.getruncount() == 1, (got, stackless.getruncount())
"""


@pytest.mark.parametrize("case", [
    # main's tempval, set by hand, replaced by a tasklet's uncaught error
    "stackless.getcurrent().tempval = P()\n"
    "stackless.tasklet(failing)()\n"
    "try:\n    stackless.run()\nexcept KeyError:\n    got.append('main got KeyError')\n"
    "check('main got KeyError')",
    # main blocked sending P when a tasklet fails: main is taken off the channel
    "stackless.tasklet(failing)()\n"
    "ch = stackless.channel()\n"
    "try:\n    ch.send(P())\nexcept KeyError:\n    got.append('main got KeyError')\n"
    "assert ch.balance == 0\n"
    "check('main got KeyError')",
    # main blocked sending P when the last tasklet ends: main is revived
    "stackless.tasklet(lambda: None)()\n"
    "ch = stackless.channel()\n"
    "try:\n    ch.send(P())\nexcept RuntimeError as e:\n    got.append(str(e))\n"
    "assert ch.balance == 0\n"
    "check('the main tasklet is sending without a receiver available.')",
], ids=["main-tempval", "main-sending-error", "main-sending-revived"])
def test_finalizer_of_a_replaced_value_may_use_channels(case):
    """Stackless 3.7 runs these __del__s inside its scheduler, where
    getcurrent() fails (SystemError); here they run complete, in a tasklet
    that runs, and nothing is left half-done."""
    _script_passes(S3_PRELUDE + case)


# -- S1: channel operations while this thread collects garbage ----------------

ONLY_OURS = pytest.mark.skipif(
    sys.implementation.name == "pypy",
    reason="PyPy runs finalizers after its collections, where switching is allowed")


def _from_a_collection(fn) -> None:
    """Call fn() from the __del__ of a cycle that gc.collect() frees, so
    that it runs while this thread collects garbage."""
    import gc

    class Cyclic:
        def __del__(self):
            fn()
    c = Cyclic()
    c.me = c
    del c
    gc.collect()


@ONLY_OURS
def test_finalizer_in_a_collection_sends_to_a_waiting_receiver():
    """A __del__ run by the cyclic GC sends to a waiting receiver.  The
    collecting thread may not switch (_continuation refuses), so the send
    pairs without switching, as under a switch trap: the value arrives
    once, the receiver runs later (Stackless 3.7 switches there)."""
    ch = stackless.channel()
    got, sent = [], []
    r = stackless.tasklet(lambda: got.append(ch.receive()))()
    stackless.run()

    def send():
        try:
            ch.send("from __del__")
            sent.append("ok")
        except Exception as e:
            sent.append(e)
    _from_a_collection(send)
    assert sent == ["ok"] and got == [] and r.scheduled and not r.blocked
    stackless.run()
    assert got == ["from __del__"] and ch.balance == 0
    assert stackless.getruncount() == 1


@ONLY_OURS
def test_may_switch_is_false_while_this_thread_collects():
    import _continuation
    seen = []
    assert _continuation._may_switch() is True
    _from_a_collection(lambda: seen.append(_continuation._may_switch()))
    assert seen == [False] and _continuation._may_switch() is True


@ONLY_OURS
def test_blocking_in_a_collection_raises_and_changes_nothing():
    ch = stackless.channel()
    stackless.tasklet(lambda: None)()       # something else could run
    errors = []

    def receive():
        try:
            ch.receive()
        except RuntimeError as e:
            errors.append(str(e))
    _from_a_collection(receive)
    assert errors == ["cannot switch continulets while the garbage collector is running"]
    assert ch.balance == 0 and ch.queue is None
    assert stackless.getcurrent() is stackless.getmain() and stackless.getruncount() == 2
    stackless.run()
    assert stackless.getruncount() == 1


@ONLY_OURS
def test_kill_and_raise_exception_in_a_collection_take_effect_when_the_tasklet_runs():
    """No switch is possible while this thread collects garbage, so a kill
    or raise_exception made from a __del__ there returns at once and the
    tasklet gets its exception when the scheduler next runs it (as a
    channel send there pairs without switching).  Stackless 3.7 switches at
    once; before, the call raised RuntimeError and still left the tasklet
    queued with its exception (and a blocked one off its channel)."""
    ch = stackless.channel()
    log = []

    def waiter():
        try:
            ch.receive()
        except ValueError as e:
            log.append(("waiter", str(e)))
        finally:
            log.append("waiter finally")

    def paused():
        try:
            stackless.schedule_remove()
        finally:
            log.append("paused finally")
    w = stackless.tasklet(waiter)()
    p = stackless.tasklet(paused)()
    stackless.run()
    assert w.blocked and not p.scheduled and ch.balance == -1
    fresh = stackless.tasklet(lambda: log.append("fresh ran"))()
    outcome = []

    def raise_and_kill():
        try:
            w.raise_exception(ValueError, "from __del__")
            p.kill()
            fresh.kill()
            outcome.append("returned")
        except Exception as e:
            outcome.append(e)
    _from_a_collection(raise_and_kill)
    assert outcome == ["returned"] and log == []
    assert ch.balance == 0 and ch.queue is None and not w.blocked
    assert w.scheduled and p.scheduled and fresh.scheduled and stackless.getruncount() == 4
    stackless.run()
    assert log == [("waiter", "from __del__"), "waiter finally", "paused finally"]
    assert not (w.alive or p.alive or fresh.alive) and stackless.getruncount() == 1


# -- an exception that lands while a tasklet starts -----------------------------

def test_taskletexit_from_a_starting_tasklets_profile_function_kills_it():
    """As in Stackless 3.7: what the tasklet's own profile (or trace)
    function raises as the tasklet starts is the tasklet's: TaskletExit
    kills it silently, and main's run() returns.  (The stress harness met
    this as a kill while run(timeout) had interrupted a signal handler
    there: TaskletExit escaped into main and the tasklet stayed alive.)"""
    ran = []

    def prof(frame, event, arg):
        sys.setprofile(None)
        raise TaskletExit

    def work(x):
        ran.append(x)
    # (a Python function: a C one gets no event at all, as in Stackless:
    # the next test)
    t = stackless.tasklet(work)(1)
    t.profile_function = prof
    assert stackless.run() is None
    assert ran == [] and not t.alive and stackless.getruncount() == 1


@pytest.mark.parametrize("attr", ["profile_function", "trace_function"])
@pytest.mark.parametrize("kind", ["method", "builtin", "partial"])
def test_a_starting_tasklets_c_function_gets_no_event(attr, kind):
    """Stackless 3.7 calls a tasklet's function from C: when it is a C
    function, the tasklet's own profile or trace function gets no event
    for it (no c_call), so one that raises TaskletExit at its first event
    never gets to raise, and the function runs.  The accelerator's C
    _bootstrap does the same.  Without it the Python _bootstrap's events
    reach the function (docs/stackless.md, Differences), which then kills
    the tasklet first: dead either way, and run() returns."""
    ran, events = [], []

    def hook(frame, event, arg):
        events.append(event)
        sys.setprofile(None)
        sys.settrace(None)
        raise TaskletExit

    import functools
    fn, arg = {"method": (ran.append, 1),
               "builtin": (sorted, ran),
               "partial": (functools.partial(ran.append), 1)}[kind]
    ran.append(0)
    t = stackless.tasklet(fn)(arg)
    setattr(t, attr, hook)
    assert stackless.run() is None
    assert not t.alive and stackless.getruncount() == 1
    if stackless._accelerated:
        assert events == []
        assert ran == ([0] if kind == "builtin" else [0, 1])
    else:
        assert events and ran == [0]


@ONLY_OURS
def test_a_start_refused_during_a_collection_leaves_no_start_request():
    """A tasklet other than main starts another through main's stack (a
    start request).  When that switch is refused (here: in a __del__ that a
    collection runs), the request must go with it: else main later starts
    the tasklet although it was paused meanwhile."""
    log, new = [], []

    def start():
        t = stackless.tasklet(log.append)("new tasklet ran")
        new.append(t)
        try:
            t.run()
        except RuntimeError:
            log.append("refused")

    def body():
        _from_a_collection(start)
        new[0].remove()
        log.append("body ends")
    stackless.tasklet(body)()
    stackless.run()
    assert log == ["refused", "body ends"]
    assert new[0].paused and stackless.getruncount() == 1
    new[0].kill()
    assert log == ["refused", "body ends"] and not new[0].alive


def test_a_raising_channel_callback_leaves_no_value_in_the_senders_tempval():
    # The callback finds the value in the sender's tempval (as in
    # Stackless 3.7); when it raises, nothing was sent and the value goes.
    # Left there, send_exception()'s bomb went off at the sender's next
    # switch: out of a later kill() or run(), which then never returned
    # the tasklet it had interrupted (stress seed 15334, docs/stress.md S5).
    ch = stackless.channel()
    log = []

    def body():
        try:
            ch.receive()
        finally:
            log.append("finally")
    t = stackless.tasklet(body)()
    stackless.run()

    def cb(*args):
        raise KeyError("cb")
    stackless.set_channel_callback(cb)
    try:
        with pytest.raises(KeyError):
            ch.send_exception(ValueError, "x")
        with pytest.raises(KeyError):
            ch.send("v")
    finally:
        stackless.set_channel_callback(None)
    assert stackless.getcurrent().tempval is None
    assert ch.balance == -1 and t.blocked
    t.kill()                    # (raised the ValueError)
    assert log == ["finally"] and not t.alive and ch.balance == 0
