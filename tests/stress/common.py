"""Shared machinery of the stress scenarios: the ledger that proves nothing
was lost, the op trace, and the signal that raises at random points.

A scenario is a function ``run(seed, trace)`` that raises ``Failure`` when
an invariant breaks.  Everything random in it comes from ``random.Random``
instances derived from the seed, so one seed always builds the same program
(only the moments where timer signals land vary between runs).
"""
from __future__ import annotations

import collections
import gc
import itertools
import os
import random
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional


class Failure(AssertionError):
    """An invariant of a scenario does not hold."""


class Injected(Exception):
    """Thrown into continulets, tasklets and greenlets; carries a token."""

    def __init__(self, tok: int) -> None:
        super().__init__(tok)
        self.tok = tok


class Alarm(Exception):
    """What the timer signal's handler raises."""


class Trace:
    """The op log: kept in memory (the last lines are printed on failure)
    and, when a path is given, written line by line as it happens so that
    it survives a crash or a hang of the process."""

    def __init__(self, path: Optional[str] = None, keep: int = 400) -> None:
        self.tail: collections.deque = collections.deque(maxlen=keep)
        self.file = open(path, "a", buffering=1) if path else None

    def __call__(self, *parts: Any) -> None:
        line = " ".join(str(p) for p in parts)
        self.tail.append(line)
        if self.file is not None:
            self.file.write(line + "\n")

    def dump(self) -> str:
        return "\n".join(self.tail)


class Tok(int):
    """A token: a unique integer that the ledgers count."""

    def __repr__(self) -> str:
        return f"T{int(self)}"


class Ledger:
    """What one thread of a scenario sent, received and entered.

    Tokens are unique integers.  A token is *sent* by a switch/throw/send
    that was accepted, *refused* when the call raised before transferring
    control, and must be *received* exactly once (a value coming out of a
    switch, or an ``Injected`` exception swallowed).  ``entered``/``exited``
    hold a key per body whose ``try`` began / whose ``finally`` ran (an
    interruption right at the start of a ``try`` may run the ``finally``
    alone: entered must be a subset of exited)."""

    _count = [0]

    def __init__(self, name: str) -> None:
        self._count[0] += 1
        self.base = self._count[0] * 1_000_000
        # one C call hands out a number: run(timeout) may interrupt a
        # tasklet between any two bytecodes of token(), and another tasklet
        # of the thread take a token meanwhile
        self._numbers = itertools.count(1)
        self.name = name
        self.sent: set = set()
        self.refused: set = set()
        self.received: collections.Counter = collections.Counter()
        self.eaten = 0      # values that an error replaced on the receiving side
        self.entered: set = set()   # keys of bodies whose try block began
        self.exited: set = set()    # keys of bodies whose finally ran
        self.violations: list = []

    def token(self) -> "Tok":
        """A new token (numbered per ledger: the same seed, the same numbers)."""
        return Tok(self.base + next(self._numbers))

    def send(self, tok: int) -> int:
        self.sent.add(int(tok))
        return tok

    def refuse(self, tok: int) -> None:
        self.refused.add(int(tok))

    def receive(self, value: Any) -> None:
        if isinstance(value, BaseException):
            value = getattr(value, "tok", None)   # Injected, or a layer's own carrier
        if type(value) is Tok:
            self.received[int(value)] += 1

    def violation(self, what: str) -> None:
        self.violations.append(what)


def check_ledgers(ledgers: list, strict_tokens: bool,
                  balanced: Callable[[Ledger], bool] = lambda led: True) -> None:
    """Raise Failure unless the ledgers together show nothing lost."""
    problems = []
    sent, refused = set(), set()
    eaten = sum(led.eaten for led in ledgers)
    received: collections.Counter = collections.Counter()
    for led in ledgers:
        sent |= led.sent
        refused |= led.refused
        received.update(led.received)
        problems += [f"{led.name}: {v}" for v in led.violations]
        missing = led.entered - led.exited
        if balanced(led) and missing:
            named = sorted(k for k in missing if isinstance(k, str))[:10]
            problems.append(f"{led.name}: {len(missing)} of {len(led.entered)} bodies "
                            f"entered never ran their finally {named or ''}")
    dup = sorted(t for t, n in received.items() if n > 1)
    if dup:
        problems.append(f"tokens received more than once: {dup[:10]}")
    stray = sorted(set(received) - sent)
    if stray:
        problems.append(f"tokens received but never sent: {stray[:10]}")
    if strict_tokens:
        lost = sorted(sent - refused - set(received))
        if len(lost) != eaten:
            problems.append(f"tokens sent but never received: {lost[:10]} "
                            f"({eaten} replaced by an error)")
    if problems:
        raise Failure("; ".join(problems))


class Signals:
    """A repeating SIGALRM whose handler raises ``Alarm`` in the main thread,
    except while the main thread is in the harness's own bookkeeping
    (``critical``): the harness stays exact, the code under test gets
    exceptions at random points."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.armed = False
        self.raised = 0

    # ``critical`` lives on the thread-local object and is set with a plain
    # attribute store (``SIGNALS.local.critical = True``): a property setter
    # is a Python call, where a pending signal handler would run first.

    def _handler(self, signum: int, frame: Any) -> None:
        # never at the entry of the harness's sys.unraisablehook, before it
        # sets ``critical``: the report it records would be lost
        if frame is not None and frame.f_code is Unraisables._hook.__code__:
            return
        if self.armed and not getattr(self.local, "critical", True):
            self.raised += 1
            raise Alarm()

    def start(self, rng: random.Random) -> None:
        signal.signal(signal.SIGALRM, self._handler)
        self.armed = True
        interval = rng.choice((0.0002, 0.0005, 0.001, 0.003))
        signal.setitimer(signal.ITIMER_REAL, interval, interval)

    def stop(self) -> None:
        """Stop the timer.  The handler stays (disarmed, it does nothing):
        a SIGALRM sent just before the timer stopped may be delivered to
        another thread a little later, and with the default handler back
        it would kill the process, or, caught already but not yet handled,
        CPython would report it ("Signal 14 ignored due to race
        condition", stackless seed 409073225 on 3.14)."""
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)

    star_call = False

    def call(self, fn: Callable, *args: Any) -> Any:
        """Call code under test with the signal allowed to raise."""
        return self.call_args(fn, args, None)

    def call_args(self, fn: Callable, args: tuple, kwargs: Optional[dict]) -> Any:
        """The same, with the arguments as a tuple and a dict.

        Unless ``star_call`` is set, the call is made with a plain CALL for
        up to four positional arguments, never ``fn(*args)``: a frame that
        is suspended inside ``f(*args)`` holds ``f`` and the argument tuple
        where the GC cannot see them (KNOWN_BUGS "callex")."""
        local = self.local
        local.critical = False
        try:
            if kwargs or self.star_call or len(args) > 4:
                return fn(*args, **(kwargs or {}))
            n = len(args)
            if n == 0:
                return fn()
            if n == 1:
                return fn(args[0])
            if n == 2:
                return fn(args[0], args[1])
            if n == 3:
                return fn(args[0], args[1], args[2])
            return fn(args[0], args[1], args[2], args[3])
        finally:
            local.critical = True


SIGNALS = Signals()


def drive_with_signals(signals: bool, rng: random.Random, drive: Callable[[], None]) -> None:
    """Run the main thread's program, the timer signal on if asked."""
    if signals:
        SIGNALS.start(rng)
    try:
        drive()
    finally:
        if signals:
            SIGNALS.stop()


def meet(barrier: threading.Barrier) -> None:
    """The main thread waits for the others to end their programs."""
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        raise Failure("a thread did not reach the end in 60 s")


def join(threads: list) -> None:
    for t in threads:
        t.join(60)
        if t.is_alive():
            raise Failure(f"{t.name} did not end in 60 s")


def collect_here(budget: float = 30.0) -> None:
    """A full collection run by this thread.

    CPython's ``gc.collect()`` returns at once, collecting nothing, while
    another thread's collection is in progress, and one that runs
    finalizers (a generator's ``finally``, a ``__del__``) lets other
    threads run meanwhile.  A thread that checks its garbage right after
    its own ``gc.collect()`` would then find it still alive, or never see
    its pending continulets unwound in it (core seed 80004 on 3.14).  So
    this waits until a collection of its own has run (as reported to
    ``gc.callbacks`` in this thread): by then the other thread's
    collection is over, and whatever of this thread's it found is queued
    for this thread's next switch.  PyPy has no ``gc.callbacks`` and no
    such no-op: there a plain ``gc.collect()``."""
    callbacks = getattr(gc, "callbacks", None)
    if callbacks is None:
        gc.collect()
        return
    me = threading.get_ident()
    ran: list = []

    def seen(phase: str, info: dict) -> None:
        if phase == "stop" and threading.get_ident() == me:
            ran.append(phase)

    callbacks.append(seen)
    try:
        deadline = time.monotonic() + budget
        gc.collect()
        while not ran:
            if time.monotonic() > deadline:
                raise Failure(f"another thread's garbage collection did not end in {budget} s")
            time.sleep(0.001)      # the other collection's finalizers run meanwhile
            gc.collect()
    finally:
        callbacks.remove(seen)


class Unraisables:
    """Collects what reaches sys.unraisablehook; only the listed exception
    types may (a finalizer unwound by GeneratorExit, a signal landing in a
    finalizer)."""

    def __init__(self, allowed: tuple, trace: Optional["Trace"] = None,
                 accept: Optional[Callable[[Any], bool]] = None) -> None:
        self.allowed = allowed
        self.accept = accept    # a layer's own test: True when this one may
        self.trace = trace
        self.bad: list = []
        self.old = None

    def __enter__(self) -> "Unraisables":
        self.old = sys.unraisablehook
        sys.unraisablehook = self._hook
        return self

    def _hook(self, u: Any) -> None:
        # no signal inside: it would lose the report (the handler spares
        # this frame's entry; from the first line on ``critical`` holds)
        local = SIGNALS.local
        try:
            was = local.critical
        except AttributeError:
            was = True
        local.critical = True
        try:
            if self.trace is not None:
                self.trace("unraisable", type(u.exc_value).__name__, u.err_msg or "",
                           type(u.object).__name__)
            if not isinstance(u.exc_value, self.allowed) \
                    and not (self.accept is not None and self.accept(u)):
                self.bad.append("".join(traceback.format_exception(
                    type(u.exc_value), u.exc_value, u.exc_traceback)).strip()
                    + f"\n  (in {u.err_msg or ''} {u.object!r})")
        finally:
            local.critical = was

    def __exit__(self, *exc: Any) -> None:
        sys.unraisablehook = self.old

    def check(self) -> None:
        if self.bad:
            raise Failure("unexpected unraisable exception:\n" + self.bad[0])


def unexpected(led: Ledger, where: str, exc: BaseException) -> None:
    """Record an exception that the API should never raise here."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    led.violation(f"unexpected {type(exc).__name__} in {where}: {exc}\n{tb}")


# Op kinds left out by default because they hit a known, open bug (set
# STRESS_ALL=1 to run them anyway).  Remove an entry when its fix is merged.
KNOWN_BUGS = {
    "core": {
    },
    "stackless": {
    },
    "greenlet": {
    },
}


def signals_wanted(rng: random.Random, share: float) -> bool:
    """Whether a seed's program runs the timer signal: in ``share`` of the
    seeds, in all of them with ``STRESS_SIGNALS=1`` (the same programs
    otherwise: the draw is made either way), in none with
    ``STRESS_SKIP=signals``."""
    drawn = rng.random() < share
    if "signals" in set(filter(None, os.environ.get("STRESS_SKIP", "").split(","))):
        return False
    return drawn or os.environ.get("STRESS_SIGNALS") == "1"


def skipped(layer: str) -> set:
    """The op kinds this run leaves out: STRESS_SKIP, plus the known bugs."""
    skip = set(filter(None, os.environ.get("STRESS_SKIP", "").split(",")))
    if not os.environ.get("STRESS_ALL"):
        skip |= set(KNOWN_BUGS[layer])
    return skip
