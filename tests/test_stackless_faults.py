"""Exception safety of the stackless scheduler and channels (issue 8).

Errors and asynchronous exceptions (what a signal handler, a trace or
profile function, a callback or a ``__del__`` raises or does) that land in
the middle of a channel operation or of a tasklet's end must leave no lock
held, nothing half done, and must not be lost (docs/design.md, "Exception
safety").  Each test asks afterwards what a program relies on: channel
operations work in this and in other threads, the balance matches the
waiters, main runs, the run queue holds what is runnable.
"""

from __future__ import annotations

import gc
import os
import sys
import threading

import pytest

import stackless

PKG = os.path.dirname(stackless.__file__) + os.sep


@pytest.fixture(autouse=True)
def clean_scheduler():
    assert stackless.getcurrent() is stackless.getmain()
    assert stackless.getruncount() == 1
    yield
    sys.setprofile(None)
    stackless.set_channel_callback(None)
    stackless.set_schedule_callback(None)
    for t in stackless._live_tasklets(threading.get_ident()):
        if t.alive and not t.is_main:
            t.kill()
    assert stackless.getcurrent() is stackless.getmain()
    assert stackless.getruncount() == 1


def exchange_in_other_thread() -> list:
    """A send and a receive in a new thread; [42] unless it hangs (5 s)."""
    got: list = []

    def body():
        c = stackless.channel()
        stackless.tasklet(c.send)(42)
        got.append(c.receive())
    th = threading.Thread(target=body, daemon=True)
    th.start()
    th.join(5)
    return got


def exchange(ch: stackless.channel) -> int:
    """A send and a receive over ``ch`` in this thread; returns the value."""
    t = stackless.tasklet(ch.send)(7)
    v = ch.receive()
    stackless.run()
    assert not t.alive
    return v


def assert_consistent(*channels: stackless.channel) -> None:
    main = stackless.getmain()
    assert stackless.getcurrent() is main and not main.blocked
    runnable, t = [], main
    while t is not None and t not in runnable:
        runnable.append(t)
        t = t.next
    assert len(runnable) == stackless.getruncount()
    for ch in channels:
        waiters, t = [], ch.queue
        while t is not None:
            assert t.blocked and t.alive
            waiters.append(t)
            t = t.next
        assert len(waiters) == abs(ch.balance)


@pytest.mark.parametrize("op", ["send", "receive"])
def test_error_inside_a_channel_operation_leaves_channels_usable(op):
    ch = stackless.channel()
    ch._balance = None          # internal state that makes the operation fail
    with pytest.raises(TypeError):
        ch.send(1) if op == "send" else ch.receive()
    ch._balance = 0
    assert exchange_in_other_thread() == [42]
    assert exchange(ch) == 7
    assert exchange(stackless.channel()) == 7
    assert_consistent(ch)


def test_error_from_a_channel_callback_changes_nothing():
    ch = stackless.channel()
    receiver = stackless.tasklet(ch.receive)()
    stackless.schedule()
    assert ch.balance == -1

    def callback(*args):
        raise LookupError("callback")
    stackless.set_channel_callback(callback)
    with pytest.raises(LookupError):
        ch.send(1)
    stackless.set_channel_callback(None)
    assert ch.balance == -1 and receiver.blocked
    assert_consistent(ch)
    ch.send(2)
    assert not receiver.alive
    assert exchange_in_other_thread() == [42]


def test_finalizer_of_the_tempval_a_send_replaces_may_use_channels():
    other, ch, log = stackless.channel(), stackless.channel(), []

    class UsesChannels:
        def __del__(self):
            log.append(("other thread", exchange_in_other_thread()))
            stackless.tasklet(other.send)("from __del__")
            log.append(("del got", other.receive()))

    def sender():
        stackless.getcurrent().tempval = UsesChannels()   # the only reference
        ch.send("x")

    def receiver():
        log.append(("got", ch.receive()))
    ts = [stackless.tasklet(sender)(), stackless.tasklet(receiver)()]
    stackless.run()
    gc.collect()        # (PyPy runs finalizers here)
    stackless.run()
    assert sorted(log, key=str) == sorted([("other thread", [42]), ("del got", "from __del__"),
                                           ("got", "x")], key=str)
    assert not any(t.alive for t in ts)
    assert ch.balance == other.balance == 0
    assert_consistent(ch, other)


def test_finalizer_of_the_tempval_a_receiver_loses_may_use_channels():
    ch, other, log = stackless.channel(), stackless.channel(), []

    class UsesChannels:
        def __del__(self):
            stackless.tasklet(other.send)("del")
            log.append(other.receive())

    def receiver():
        stackless.getcurrent().tempval = UsesChannels()
        log.append(ch.receive())    # the sender's value replaces the tempval
    t = stackless.tasklet(receiver)()
    stackless.schedule()
    ch.send("v")
    stackless.run()
    gc.collect()        # (PyPy runs finalizers here)
    assert sorted(log) == ["del", "v"] and not t.alive
    assert_consistent(ch, other)


@pytest.mark.parametrize("failing_op", ["send", "receive"])
def test_uncaught_error_reaches_main_blocked_on_a_channel(failing_op):
    ch = stackless.channel()

    def failing():
        raise ZeroDivisionError("in a tasklet")
    stackless.tasklet(failing)()
    with pytest.raises(ZeroDivisionError, match="in a tasklet"):
        ch.send(1) if failing_op == "send" else ch.receive()
    assert ch.balance == 0 and not stackless.getmain().blocked
    assert_consistent(ch)


# -- asynchronous exceptions ------------------------------------------------
#
# A profile function that raises KeyboardInterrupt at the n-th event (a call,
# a return, the return of a C function) in stackless's own frames stands for
# a signal handler: CPython runs those at the same points.  Each test tries
# every point in turn until the operation has no more.

class Interrupt:
    """Raise KeyboardInterrupt at the n-th profile event in stackless."""

    def __init__(self, n: int, start=lambda frame, event: True) -> None:
        self.n, self.seen, self.fired, self.start = n, 0, False, start
        self.started = False

    def __call__(self, frame, event, arg):
        if self.fired:
            return
        if not self.started:
            self.started = self.start(frame, event)
            return
        if event in ("call", "return", "c_return") and frame.f_code.co_filename.startswith(PKG):
            self.seen += 1
            if self.seen == self.n:
                self.fired = True
                sys.setprofile(None)
                raise KeyboardInterrupt


def interrupted(n: int, action, start=lambda frame, event: True, tasklets=()) -> tuple:
    """Run ``action`` with the n-th point interrupted: (fired, raised).

    ``tasklets`` get the profile function too: once a tasklet of the
    thread has had its own, each tasklet keeps its own."""
    hook = Interrupt(n, start)
    raised = False
    for t in tasklets:
        t.profile_function = hook
    sys.setprofile(hook)
    try:
        action()
    except KeyboardInterrupt:
        raised = True
    finally:
        sys.setprofile(None)
    return hook.fired, raised


def test_keyboardinterrupt_on_a_tasklets_way_out_reaches_main():
    def work():
        return None

    def after_work(frame, event):
        return frame.f_code is work.__code__ and event == "return"
    points = 0
    for n in range(1, 400):
        t = stackless.tasklet(work)()
        fired, raised = interrupted(n, stackless.run, after_work, [t])
        if not fired:
            break
        points += 1
        assert raised, "KeyboardInterrupt at point %d was lost" % n
        assert not t.alive
        assert_consistent()
        assert exchange_in_other_thread() == [42]
        assert exchange(stackless.channel()) == 7
    if not stackless._accelerated or sys.implementation.name != "cpython":
        assert points > 5       # the Python code has points to try


def channel_partner(kind: str) -> tuple:
    """A channel, the list its receiver fills, and the partner tasklet of
    the operation ``kind`` names, already waiting if ``kind`` ends with
    "second"."""
    ch, got = stackless.channel(), []
    partner = (stackless.tasklet(lambda: got.append(ch.receive()))() if kind.startswith("send")
               else stackless.tasklet(ch.send)("v"))
    if kind.endswith("second"):
        stackless.schedule()        # the partner waits already
    return ch, got, partner


@pytest.mark.parametrize("kind", ["send first", "receive first", "send second", "receive second"])
def test_keyboardinterrupt_inside_a_channel_operation(kind):
    stackless.set_channel_callback(lambda *args: None)  # the Python code in both modes
    points = 0
    for n in range(1, 400):
        ch, got, partner = channel_partner(kind)
        sending = kind.startswith("send")

        def action():
            ch.send("v") if sending else got.append(ch.receive())
            stackless.run()
        fired, raised = interrupted(n, action, tasklets=[partner])
        if not fired:
            break
        points += 1
        assert raised, "KeyboardInterrupt at point %d was lost" % n
        assert got in ([], ["v"])
        assert_consistent(ch)
        assert exchange_in_other_thread() == [42]
        if partner.alive:
            assert partner.blocked or partner.scheduled
            partner.kill()
        assert ch.balance == 0 and stackless.getruncount() == 1
        assert exchange(ch) == 7
    # with the accelerator the Python code runs hidden from profile
    # functions (src/stackless_hide.c): there is no point to interrupt at;
    # the same code is tried with STACKLESS_ACCEL=0
    if not stackless._accelerated or sys.implementation.name != "cpython":
        assert points > 3


class TwoInterrupts(Interrupt):
    """A first KeyboardInterrupt at the n-th profile event in stackless, a
    second one ``d`` Python calls or returns (trace events) in stackless
    later: a second signal landing while the first is being handled (S4 in
    docs/stress.md)."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__(n)
        self.second = None
        self.d = d

    def __call__(self, frame, event, arg):
        fired = self.fired
        try:
            super().__call__(frame, event, arg)
        finally:
            if self.fired and not fired:
                self.second = self.d
                sys.settrace(self.trace)

    def trace(self, frame, event, arg):
        if (isinstance(self.second, int) and event in ("call", "return")
                and frame.f_code.co_filename.startswith(PKG)):
            if self.second == 0:
                self.second = "raised"
                raise KeyboardInterrupt
            self.second -= 1
        return self.trace


def two_interrupts(n: int, d: int, partner, action) -> tuple:
    """Run ``action`` with TwoInterrupts(n, d) as the profile function of
    this tasklet and of ``partner``: (the hook, whether a
    KeyboardInterrupt came out, the second one possibly from the handler
    of the first)."""
    hook = TwoInterrupts(n, d)
    partner.profile_function = hook
    raised = False
    try:
        try:
            sys.setprofile(hook)
            try:
                action()
            finally:
                sys.setprofile(None)
                sys.settrace(None)
        except KeyboardInterrupt:
            raised = True
    except KeyboardInterrupt:       # the second, in the handler above
        raised = True
    return hook, raised


@pytest.mark.parametrize("kind", ["send first", "receive first", "send second", "receive second"])
def test_two_keyboardinterrupts_inside_a_channel_operation(kind):
    # A second signal landing in the handling of the first (at the entry of
    # _recover or _not_started, before they did anything) left main blocked
    # on the channel, or a tasklet scheduled with a finished continulet
    # ("continulet already finished" at the next switch to it): S4.
    stackless.set_channel_callback(lambda *args: None)  # the Python code in both modes
    points = seconds = 0
    for n in range(1, 400):
        fired = False
        for d in range(6):
            ch, got, partner = channel_partner(kind)
            sending = kind.startswith("send")

            def action():
                ch.send("v") if sending else got.append(ch.receive())
                stackless.run()
            hook, raised = two_interrupts(n, d, partner, action)
            fired |= hook.fired
            if not hook.fired:
                break
            points += 1
            seconds += hook.second == "raised"
            where = (n, d, hook.second)
            assert raised, where
            assert got in ([], ["v"]), where
            assert_consistent(ch)
            if partner.alive:
                assert partner.blocked or partner.scheduled, where
                partner.kill()
            assert ch.balance == 0 and stackless.getruncount() == 1, where
            assert exchange(ch) == 7, where
        if not fired:
            break
    assert exchange_in_other_thread() == [42]
    # with the accelerator the Python code runs hidden from profile and
    # trace functions: the same code is tried with STACKLESS_ACCEL=0
    if not stackless._accelerated or sys.implementation.name != "cpython":
        assert points > 3 and seconds > 3


def test_two_keyboardinterrupts_inside_run():
    # The first lands in run() (at _switch's entry, or on PyPy after the
    # switching tasklet is no longer current), the second at the entry of
    # the _end_run that puts main back: main was left out of the run queue
    # with its watchdog entry, or not current (S4 on PyPy).
    points = seconds = 0
    for n in range(1, 200):
        fired = False
        for d in range(6):
            ran = []
            partner = stackless.tasklet(ran.append)("ran")
            hook, raised = two_interrupts(n, d, partner, stackless.run)
            fired |= hook.fired
            if not hook.fired:
                break
            points += 1
            seconds += hook.second == "raised"
            where = (n, d, hook.second)
            assert raised, where
            assert_consistent()
            assert stackless.getruncount() == 1 + partner.scheduled, where
            stackless.run()
            assert ran in ([], ["ran"]) and not partner.alive, where   # (it may have got one)
            assert stackless.getruncount() == 1 and not stackless._scheduler._ts().watchdogs, where
        if not fired:
            break
    if not stackless._accelerated or sys.implementation.name != "cpython":
        assert points > 3 and seconds > 3


# -- closed channels (as Stackless 3.7 does them) ------------------------------

def test_iterating_a_closing_channel_stops_when_no_sender_is_left():
    ch = stackless.channel()
    ch.close()
    with pytest.raises(StopIteration):
        next(ch)
    sender = stackless.tasklet(ch.send)("last")   # a sender queued before the close
    ch.open()
    stackless.schedule()
    ch.close()
    assert ch.balance == 1 and not ch.closed
    assert next(ch) == "last"
    assert ch.closed and not sender.blocked
    stackless.run()
    assert not sender.alive
    with pytest.raises(StopIteration):
        next(ch)
    receiver = stackless.tasklet(ch.receive)()      # a waiting receiver: still the end
    ch.open()
    stackless.schedule()
    ch.close()
    with pytest.raises(StopIteration):
        next(ch)
    receiver.kill()


# -- the schedule callback --------------------------------------------------

def test_schedule_callback_error_is_unraisable_and_the_switch_goes_on(monkeypatch):
    reports, ran = [], []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)

    def callback(prev, nxt):
        assert stackless.getcurrent() is prev      # on prev's stack, before the switch
        raise ZeroDivisionError("callback")
    stackless.set_schedule_callback(callback)
    t = stackless.tasklet(lambda: ran.append(stackless.getcurrent()))()
    stackless.run()
    stackless.set_schedule_callback(None)
    assert ran == [t] and not t.alive
    assert len(reports) == 2        # main -> t, and t -> main when it ends
    for r in reports:
        assert r.exc_type is ZeroDivisionError and str(r.exc_value) == "callback"
        assert r.object == "Error in scheduling callback"
        assert r.err_msg in (None, "Exception ignored in")   # CPython, PyPy
    assert_consistent()


# -- interpreter exit -------------------------------------------------------

STUBBORN = """
import stackless
def stubborn(how):
    while True:
        try:
            if how == "remove":
                stackless.schedule_remove()
            elif how == "schedule":
                stackless.schedule()
            else:
                stackless.channel().receive()
        except TaskletExit:
            pass
for how in ("remove", "schedule", "block", "block"):
    stackless.tasklet(stubborn)(how)
stackless.schedule()
print("script ends", flush=True)
"""


def test_interpreter_exit_never_spins_on_tasklets_that_refuse_to_die():
    import subprocess
    out = subprocess.run([sys.executable, "-c", STUBBORN], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "script ends\n" and out.stderr == ""
