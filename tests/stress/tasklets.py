"""Stress scenario for ``stackless``: tasklets that send, receive, schedule,
kill, raise_exception, throw, remove and insert each other at random, with
channels closed and reopened, ``run(timeout)`` preemption, the GC, a
cross-thread channel drained by another thread's scheduler, and a timer
signal that raises anywhere, scheduler code included.

Invariants: a value passed through a channel arrives once, and a ``send()``
that returned normally delivered its value; every tasklet body that started
ran its ``finally`` once killed; the scheduler stays consistent at every
check point (``getruncount()`` is 1 + the tasklets in the run queue, the
channels' balances add up to the blocked tasklets) and, at the end, empty
(runcount 1, every tasklet dead, every balance 0); the API never raises
anything but the documented errors, and no call hangs.
"""
from __future__ import annotations

import gc
import os
import random
import threading
from typing import Any, Optional

import stackless

from .common import (SIGNALS, Alarm, Failure, Injected, Ledger, Tok, Trace,
                     Unraisables, check_ledgers, drive_with_signals, join,
                     signals_wanted, skipped, unexpected)

# What each tasklet of a world is, for the log: by id, since a tasklet, as in
# Stackless, takes no attributes of its own
BODY: dict = {}


def body_of(t: Any) -> str:
    return BODY.get(id(t), "main")


def others_alive() -> bool:
    """Whether other threads are alive.  Atomic: threading.active_count()
    holds threading's own lock for a moment, and a tasklet that run(timeout)
    (or a kill from a collection) switched away while holding it would
    block every other caller in its thread for good."""
    with stackless.atomic():
        return threading.active_count() > 1


REFUSALS = {
    "You cannot throw to a dead tasklet",
    "Send/receive operation on a closed channel",
    "You cannot run an unbound(dead) tasklet",
    "cannot switch to a tasklet of another thread",
    "tasklet is blocked",
}
STOP = object()                         # ends the cross-thread consumer


def _refusal(e: BaseException) -> bool:
    return isinstance(e, (RuntimeError, ValueError)) and (
        str(e) in REFUSALS or "another thread" in str(e) or "dead" in str(e)
        or "blocked" in str(e) or "Deadlock" in str(e) or "closed" in str(e)
        or "current" in str(e) or "main" in str(e)
        or "garbage collector" in str(e))


class World:
    """The tasklets and channels of one thread."""

    def __init__(self, seed: int, name: str, trace: Trace, xch: Optional[Any],
                 signals: bool) -> None:
        self.rng = random.Random(seed)
        self.name = name
        self.trace = trace
        self.led = Ledger(name)
        self.chans = [stackless.channel() for _ in range(self.rng.randint(1, 3))]
        for ch in self.chans:
            ch.preference = self.rng.choice((-1, 0, 1))
        self.xch = xch                  # a channel that another thread receives from
        self.tasklets: list = []
        self.interrupted: list = []
        self.handed: dict = {}          # waiting receiver -> the token a send gave it
        self.inflight: set = set()      # tokens whose call's bookkeeping has not ended (see call)
        # tokens raised into a tasklet (by id) that it has not recorded yet:
        # run(timeout) may interrupt it before it does, and a kill then
        # replaces the exception (see forfeit)
        self.raised_into: dict = {}
        self.signals = signals
        self.n = 0

    def log(self, *parts: Any) -> None:
        who = getattr(stackless.getcurrent(), "body", "main")
        self.trace(self.name, f"[{who}]", *parts)

    def call(self, what: str, tok: Any, fn: Any, *args: Any) -> Any:
        """One API call, accounted: ``tok`` is the token it carries, if any.

        The token stays in ``inflight`` until its fate is recorded:
        run(timeout) interrupts this bookkeeping like any other Python
        code, and a kill or an exception raised into the tasklet meanwhile
        cuts it short (seed 83126906: killed inside the handler of a send's
        refusal).  What is left there at the end counts as refused."""
        led = self.led
        if tok is not None:
            self.inflight.add(int(tok))
        try:
            # inside the try: run(timeout) may interrupt this bookkeeping
            # too, and an exception thrown meanwhile lands here
            if tok is not None:
                led.send(tok)
            r = SIGNALS.call_args(fn, args, None)
        except Injected as e:
            # Whatever raised, the call's own value may not have arrived.
            if tok is not None:
                led.refuse(tok)
                self.inflight.discard(int(tok))
            if stackless.getcurrent() is not stackless.getmain() and self.rng.random() < 0.2:
                self.log("reraise", e.tok)
                self.forfeit(stackless.getmain())   # an uncaught exception goes to main
                raise                   # uncaught: main receives it
            self.log("caught", e.tok, "in", what)
            led.receive(e)
            self.raised_into.get(id(stackless.getcurrent()), set()).discard(int(e.tok))
            return None
        except Alarm:
            if tok is not None:
                led.refuse(tok)       # a send may or may not have delivered
                self.inflight.discard(int(tok))
            return None
        except (stackless.TaskletExit, GeneratorExit):
            if tok is not None:
                led.refuse(tok)
                self.inflight.discard(int(tok))
            raise
        except BaseException as e:
            if tok is not None:
                led.refuse(tok)
                self.inflight.discard(int(tok))
            if not _refusal(e):
                unexpected(led, what, e)
            return None
        if tok is not None:
            self.inflight.discard(int(tok))
        if r is not None:
            self.log(what, "returned", repr(r)[:60])
        led.receive(r)
        return r

    # -- tasklet bodies ------------------------------------------------------
    def spawn(self) -> Any:
        self.n += 1
        n = self.n
        steps = self.rng.randint(0, 8)
        world = self

        def body() -> None:
            SIGNALS.local.critical = True
            key = f"t{n}"         # entered once its first line inside the try ran
            try:
                world.led.entered.add(key)
                world.log("start", n)
                for _ in range(steps):
                    world.step(True)
            finally:
                SIGNALS.local.critical = True
                world.led.exited.add(key)
                world.log("end", n)

        t = stackless.tasklet(body)
        BODY[id(t)] = f"t{n}"
        self.tasklets.append(t)
        self.log("spawn", n)
        self.call("tasklet()", None, t)
        return t

    def pick(self) -> Optional[Any]:
        alive = [t for t in self.tasklets if t.alive]
        return self.rng.choice(alive) if alive else None

    def step(self, in_body: bool) -> None:
        op = self.rng.choices(OPS, WEIGHTS)[0]
        op(self, in_body)

    def op_spawn(self, in_body: bool) -> None:
        self.spawn()

    def op_send(self, in_body: bool) -> None:
        ch = self.rng.choice(self.chans)
        if not in_body and ch.balance >= 0:
            # main blocks in send() only while others can run (they may fail:
            # their exception must then come out of this send(), issue 8 item 8)
            # (alone in the process: with other threads, a main blocked for
            # good waits for them, and the deadlock is reported in any one)
            if "mainsend" in SKIP or stackless.getruncount() < 2 \
                    or others_alive() or self.rng.random() < 0.7:
                return
            self.log("main blocks in send")
        tok = self.led.token()
        waiting = ch.queue if ch.balance < 0 else None
        self.log("send", self.chans.index(ch), tok)
        self.call("send", tok, ch.send, tok)
        if waiting is not None:
            self.handed[waiting] = tok  # see op_receive

    def op_send_exception(self, in_body: bool) -> None:
        ch = self.rng.choice(self.chans)
        if not in_body and ch.balance >= 0:
            return
        tok = self.led.token()
        self.log("send_exception", self.chans.index(ch), tok)
        # Not required: a receiver that took it and has not run yet shows it
        # in its tempval (D5, fixed), but an exception that lands in this
        # call's own bookkeeping (run(timeout) interrupts harness code too)
        # skips the accounting.  Refused first, so that nothing is missed.
        self.led.refuse(tok)
        self.call("send_exception", tok, ch.send_exception, Injected, tok)

    def op_receive(self, in_body: bool) -> None:
        ch = self.rng.choice(self.chans)
        if not in_body and ch.balance <= 0:
            return
        # The value of the first waiting sender: if an exception reaches this
        # tasklet after it took that value but before it ran again, the value
        # is replaced (as in Stackless).  The receiver's tempval does not show
        # it meanwhile (bug D6), so note it here.
        first = ch.queue if ch.balance > 0 else None
        pending = first.tempval if first is not None else None
        self.log("receive", self.chans.index(ch))
        r = None
        try:
            r = self.call("receive", None, ch.receive)
        finally:
            # A value handed to this tasklet while it waited (op_send) is
            # replaced the same way if an exception reaches it first.
            handed = self.handed.pop(stackless.getcurrent(), None)
            if r is None:
                for v in (pending, handed):
                    if type(v) is Tok:
                        self.led.refuse(v)  # killed, or an exception came instead

    def op_xsend(self, in_body: bool) -> None:
        if self.xch is None or not in_body:
            return
        tok = self.led.token()
        self.log("xsend", tok)
        self.call("cross-thread send", tok, self.xch.send, tok)

    def op_schedule(self, in_body: bool) -> None:
        self.log("schedule")
        self.call("schedule", None, stackless.schedule)

    def forfeit(self, t: Any) -> None:
        """An exception raised into a tasklet that was handed a value and has
        not run since replaces that value (as in Stackless 3.7), and so does
        one raised into a tasklet that has not recorded an earlier one yet
        (seed 11233, STACKLESS_ACCEL=0: run(timeout) interrupted it in
        call()'s handler, then a kill landed there)."""
        for tok in self.raised_into.pop(id(t), ()):
            self.log("forfeit", tok, "raised into", body_of(t))
            self.led.refuse(tok)
        v = t.tempval
        if os.environ.get("STRESS_DEBUG"):
            self.log("tempval of", body_of(t), repr(v)[:80],
                     getattr(v, "value", None))
        if isinstance(v, stackless.bomb):   # an exception sent by send_exception
            val = v.value
            if isinstance(val, BaseException):
                val = getattr(val, "tok", None)
            elif isinstance(val, tuple) and val:
                val = val[0]
            v = val
        if type(v) is Tok:
            self.log("forfeit", v, "of", body_of(t))
            self.led.refuse(v)

    def op_kill(self, in_body: bool) -> None:
        t = self.pick()
        if t is not None:
            self.forfeit(t)
            self.log("kill", body_of(t))
            self.call("kill", None, t.kill, self.rng.random() < 0.2)

    def op_raise(self, in_body: bool) -> None:
        t = self.pick()
        if t is None or t.is_current:
            return
        tok = self.led.token()
        self.forfeit(t)
        self.forfeit(stackless.getmain())   # if t lets it through, main gets it
        self.log("raise_exception", body_of(t), tok)
        self.raised_into.setdefault(id(t), set()).add(int(tok))
        if self.rng.random() < 0.5:
            self.call("raise_exception", tok, t.raise_exception, Injected, tok)
        elif self.rng.random() < 0.5:
            self.call("throw", tok, t.throw, Injected, (tok,), None, False)
        else:
            # pending: a kill before it runs may replace it (as in Stackless)
            self.log("pending")
            self.call("throw(pending=True)", tok, t.throw, Injected, (tok,), None, True)
            self.led.refuse(tok)

    def op_remove_insert(self, in_body: bool) -> None:
        t = self.pick()
        if t is None or t.is_current or t.blocked:
            return
        how = "insert" if not t.scheduled else "remove"
        self.log(how, body_of(t))
        self.call(how, None, getattr(t, how))

    def op_close(self, in_body: bool) -> None:
        ch = self.rng.choice(self.chans)
        how = "open" if ch.closing else "close"
        self.log(how, self.chans.index(ch))
        self.call(how, None, getattr(ch, how))

    def op_gc(self, in_body: bool) -> None:
        self.log("gc")
        self.call("gc.collect", None, gc.collect)

    def op_run(self, in_body: bool) -> None:
        if in_body:
            return
        timeout = self.rng.choice((0, 0, 20, 200, 2000))
        if self.xch is not None and "xpreempt" in SKIP:
            timeout = 0
        self.log("run", timeout)
        t = self.call("run", None, stackless.run, timeout)
        if t is not None and not isinstance(t, int):
            self.interrupted.append(t)
        for t in self.interrupted:
            if t.alive and not t.scheduled and not t.blocked and self.rng.random() < 0.5:
                self.call("insert", None, t.insert)

    def op_atomic(self, in_body: bool) -> None:
        if not in_body:
            return
        self.log("atomic")
        with stackless.atomic():
            self.step(in_body)

    def op_payload(self, in_body: bool) -> None:
        """schedule() with an object that only the call holds: it goes when
        schedule() returns (the tasklet takes its tempval), or when a kill
        or an error replaces it meanwhile, and its __del__ uses a channel
        (issue 8 item 5, stress bug S3).

        Alone in the process only: the __del__ blocks where it runs, and
        with other threads alive a thread whose tasklets all wait waits
        for them instead of reporting the deadlock (see op_send)."""
        if others_alive():
            return
        world = self

        class Payload:
            def __del__(self) -> None:
                # An exception raised into the tasklet while this __del__
                # waits cannot leave a finalizer: a kill is lost (cleanup
                # kills again), an Injected one is caught here.
                try:
                    self.use_a_channel()
                except stackless.TaskletExit:
                    world.log("kill landed in a __del__")
                except Injected as e:
                    world.log("caught", e.tok, "in __del__")
                    world.led.receive(e)

            def use_a_channel(self) -> None:
                if threading.get_ident() != getattr(world, "ident", None):
                    # another thread's collection runs this __del__: its
                    # tasklets would not be this world's
                    world.log("payload __del__ in another thread")
                    return
                tok = world.led.token()
                ch = stackless.channel()
                world.chans.append(ch)      # counted by check_scheduler like the others
                world.log("payload __del__ sends", tok)
                t = stackless.tasklet(lambda: world.led.receive(ch.receive()))
                BODY[id(t)] = f"recv{tok}"
                world.tasklets.append(t)
                t()
                # the receiver waits first, so that the send does not block:
                # a main tasklet blocked for good (its receiver removed) would
                # wait for the other threads (see op_send)
                world.call("run receiver", None, t.run)
                if not t.blocked:
                    # it could not run (a garbage collection), or died (the
                    # channel callback raised): a send would block for good,
                    # and so would the receiver once it runs (with other
                    # threads alive, a thread waits instead of reporting a
                    # deadlock): it goes
                    world.log("payload receiver", tok, "not waiting:", repr(t))
                    if t.alive:
                        world.call("kill receiver", None, t.kill, True)
                    return
                world.call("send from __del__", tok, ch.send, tok)
        self.log("schedule(payload)")
        self.call("schedule(payload)", None, stackless.schedule, Payload())

    def op_callback(self, in_body: bool) -> None:
        """A channel callback that raises once, or none (issue 8 item 4)."""
        if self.rng.random() < 0.5:
            self.log("channel callback off")
            stackless.set_channel_callback(None)
            return
        tok = self.led.token()
        self.led.refuse(tok)            # it may be replaced before it fires
        self.led.send(tok)              # (refused first: run(timeout) may interrupt here)
        world = self
        armed = [tok]
        mine = threading.get_ident()    # the callback is process-wide: raise in this thread only

        def callback(chan: Any, task: Any, sending: bool, willblock: bool) -> None:
            if threading.get_ident() != mine:
                return
            try:
                # one C call takes the token: run(timeout) may interrupt
                # this callback between any two lines, and another tasklet
                # call it meanwhile
                t = armed.pop()
            except IndexError:
                return
            world.log("channel callback raises", t)
            raise Injected(t)
        self.log("channel callback", tok)
        stackless.set_channel_callback(callback)

    # -- checks ------------------------------------------------------------
    def check_scheduler(self, where: str) -> None:
        """The scheduler's counts agree with the tasklets' flags."""
        alive = [t for t in self.tasklets if t.alive]
        runnable = [t for t in alive if t.scheduled and not t.blocked and not t.is_current]
        if stackless.getruncount() != 1 + len(runnable):
            self.led.violation(f"{where}: runcount {stackless.getruncount()}, but 1 + "
                               f"{len(runnable)} tasklets are in the run queue "
                               f"({list(stackless.getcurrent()._ts.rq)})")
        blocked = sum(t.blocked for t in alive)
        balance = sum(abs(ch.balance) for ch in self.chans)
        if self.xch is None and blocked != balance:
            self.led.violation(f"{where}: {blocked} tasklets blocked, channel balances "
                               f"add up to {balance}")

    def drive(self, nsteps: int) -> None:
        self.ident = threading.get_ident()
        i = 0
        while i < nsteps:
            # (the loop inside the try: its backward jump is a check too)
            try:
                while i < nsteps:
                    i += 1
                    self.step(False)
                    if i % 5 == 1:
                        SIGNALS.local.critical = True
                        self.check_scheduler(f"step {i - 1}")
            except Alarm:
                # a signal that landed in the package's callbacks (a dropped
                # tasklet's keep or kill after a collection), raised again at
                # the next check, which may be the harness's (src/deferred.c)
                self.log("signal escaped an op")

    def cleanup(self) -> None:
        """Kill every tasklet; the scheduler must end up empty."""
        self.log("cleanup")
        stackless.set_channel_callback(None)
        for ch in self.chans:
            ch.open()
        for _ in range(5):
            alive = [t for t in self.tasklets if t.alive]
            if not alive:
                break
            for t in alive:
                self.forfeit(t)
                try:
                    t.kill()
                except Injected as e:
                    self.led.receive(e)
                except Alarm:
                    pass    # a signal's, uncaught in a tasklet (at its start): main gets it
                except BaseException as e:
                    if not _refusal(e):
                        unexpected(self.led, "kill at cleanup", e)
            self.run_all()
        # a tasklet that ran meanwhile may have installed a callback again
        stackless.set_channel_callback(None)
        alive = [t for t in self.tasklets if t.alive]
        if alive:
            self.led.violation(f"{len(alive)} tasklets alive after killing them all")
        if stackless.getruncount() != 1:
            self.led.violation(f"runcount {stackless.getruncount()} at the end")
        for i, ch in enumerate(self.chans):
            if ch.balance != 0 or ch.queue is not None:
                self.led.violation(f"channel {i}: balance {ch.balance} at the end")
        gc.collect()
        self.settle()

    def settle(self) -> None:
        """Run what a collection's __del__ left runnable (a Payload's receiver
        that it killed: no switch is possible in a collection, so the kill
        takes effect when the tasklet next runs); then nothing may be left."""
        for _ in range(5):
            if stackless.getruncount() == 1:
                return
            self.run_all()
        self.led.violation(f"runcount {stackless.getruncount()} after the last collection")

    def run_all(self) -> None:
        """``stackless.run()``: a token raised into main counts as received,
        a signal's exception that reaches main ends it early."""
        try:
            stackless.run()
        except Injected as e:
            self.led.receive(e)
        except Alarm:
            pass


OPS_WEIGHTS = [
    (World.op_spawn, 6), (World.op_send, 10), (World.op_send_exception, 2),
    (World.op_receive, 10), (World.op_xsend, 3), (World.op_schedule, 6),
    (World.op_kill, 4), (World.op_raise, 4), (World.op_remove_insert, 2),
    (World.op_close, 1), (World.op_gc, 1), (World.op_run, 8), (World.op_atomic, 1),
    (World.op_payload, 2), (World.op_callback, 1),
]
SKIP = skipped("stackless")
OPS = [o for o, _ in OPS_WEIGHTS]
WEIGHTS = [0 if o.__name__[3:] in SKIP else w for o, w in OPS_WEIGHTS]


def consumer(led: Ledger, xch: Any, errors: list, trace: Trace) -> None:
    """Another thread's main tasklet: receives from the cross-thread channel."""
    try:
        while True:
            trace("consumer receives; balance", xch.balance)
            v = xch.receive()
            trace("consumer got", "STOP" if v is STOP else v)
            if v is STOP:
                return
            led.receive(v)
    except BaseException as e:
        errors.append(e)


def run(seed: int, trace: Trace) -> None:
    rng = random.Random(seed)
    signals = signals_wanted(rng, 0.35)
    nthreads = rng.choice((0, 1, 1, 2))
    cross = rng.random() < 0.5
    nsteps = rng.randint(20, 150)
    if cross and "xsignals" in SKIP:
        signals = False
    trace("stackless seed", seed, "signals", signals, "threads", nthreads,
          "cross-thread channel", cross, "steps", nsteps)
    xch = stackless.channel() if cross else None
    xled = Ledger("consumer")
    errors: list = []
    cons = threading.Thread(target=consumer, args=(xled, xch, errors, trace)) if cross else None
    worlds = [World(rng.getrandbits(32), "main", trace, xch, signals)]
    for i in range(nthreads):
        worlds.append(World(rng.getrandbits(32), f"thread{i}", trace, xch, False))

    def thread_main(w: World) -> None:
        try:
            w.drive(nsteps)
            w.cleanup()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=thread_main, args=(w,)) for w in worlds[1:]]
    def from_a_payload(u: Any) -> bool:
        """An exception raised into a tasklet just as it entered a Payload's
        __del__ (a kill or throw after run(timeout) interrupted it at the
        call): no finalizer can pass it on.  Its token counts as received."""
        if getattr(u.object, "__qualname__", "").endswith("Payload.__del__") \
                and isinstance(u.exc_value, (Injected, stackless.TaskletExit)):
            worlds[0].led.receive(u.exc_value)     # (the ledgers are checked together)
            return True
        return False

    with Unraisables((Alarm,), trace, from_a_payload) as unr:
        if cons:
            cons.start()
        for t in threads:
            t.start()
        drive_with_signals(signals, rng, lambda: worlds[0].drive(nsteps))
        worlds[0].cleanup()
        join(threads)
        if cons:
            if errors:
                raise Failure(f"the cross-thread consumer failed: {errors[0]!r}")
            trace("main sends STOP; balance", xch.balance)
            xch.send(STOP)
            cons.join(60)
            if cons.is_alive():
                raise Failure("the cross-thread consumer did not end")
        gc.collect()
        worlds[0].settle()
    if errors:
        raise errors[0]
    unr.check()
    # A tasklet that run(timeout) interrupted may have been interrupted in its
    # finally block, where a later raise_exception/kill legitimately cuts it
    # short: those bodies are excused (and only those).
    for w in worlds:
        w.led.exited |= {body_of(t) for t in w.interrupted}
        w.led.refused |= w.inflight
    check_ledgers([w.led for w in worlds] + [xled], strict_tokens=not signals)
