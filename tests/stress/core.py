"""Stress scenario for ``_continuation``: random graphs of switch,
switch(to=), throw and permute across threads, with genlets and generators
inside continulets, the cyclic GC at random points, finalizers and weakref
callbacks that switch, tracing turned on and off, contextvars, threads that
end with pending continulets, and a timer signal that raises.

Invariants (checked per scenario, see common.check_ledgers): every body that
was entered ran its ``finally`` (unless its thread ended first, which drops
it by design), and saw its closure, its objects and its continulet intact
there; every token is received at most once, and exactly once when no signal
can replace a value by an exception; a thread's context variable stays its
own; no API call raises anything but the documented errors.
"""
from __future__ import annotations

import contextvars
import gc
import os
import random
import sys
import threading
import weakref
from typing import Any, Optional

from _continuation import continulet, error, generator, permute

from .common import (SIGNALS, Alarm, Failure, Injected, Ledger, Trace,
                     Unraisables, check_ledgers, collect_here, drive_with_signals,
                     join, meet, signals_wanted, skipped, unexpected)

# What the API may answer instead of switching (the token is then refused).
REFUSALS = {
    "continulet already finished", "cannot switch to a different thread",
    "cross-thread double switch", "got an already-finished continulet",
    "inter-thread support is missing", "continulet already __init__ialized",
}
JUST_STARTED = "can't send non-None value to a just-started continulet"
NOT_NONE = "_continuation.generator must return None"
LOST: list = []   # what finally blocks found cleared when they could not reach their ledger
THREAD_VAR: contextvars.ContextVar = contextvars.ContextVar("stress_thread")


class Cont(continulet):
    """A subclass with an attribute, which its bodies' finally blocks read."""


class Job:
    pass


def _refusal(exc: BaseException) -> bool:
    if isinstance(exc, (error, TypeError, ValueError)):
        return str(exc) in REFUSALS or "same continulet" in str(exc) \
            or "more than once" in str(exc) or "duplicate" in str(exc)
    if isinstance(exc, RuntimeError):   # a switch from the GC's own thread
        return "garbage collect" in str(exc) or "GC" in str(exc) or "gc" in str(exc)
    return False


class World:
    """The continulets of one thread and the program that drives them."""

    def __init__(self, seed: int, name: str, trace: Trace, foreign: list,
                 signals: bool, permute_ok: bool) -> None:
        self.rng = random.Random(seed)
        self.name = name
        self.led = Ledger(name)
        self.trace = trace
        self.pool: list = []
        self.foreign = foreign          # weakrefs to other threads' continulets
        self.signals = signals
        self.permute_ok = permute_ok
        self.nbodies = 0
        self.refs: list = []            # (n, weakref) of every continulet made here
        self.stuck = 0                  # finalizers switched out of and not resumed
        self.tag = f"{name}-tag"
        self.thread: Optional[int] = None   # the thread that runs this world (drive)

    # -- bookkeeping ----------------------------------------------------
    def log(self, *parts: Any) -> None:
        self.trace(self.name, *parts)

    def check_context(self, where: str) -> None:
        # (a finalizer of this world that another thread's collection ran,
        # core seed 107708654, runs in that thread's context)
        if threading.get_ident() != self.thread:
            return
        if CHECK_CONTEXT and THREAD_VAR.get(None) != self.tag:
            self.log("VIOLATION context variable after", where)
            self.led.violation(f"context variable is {THREAD_VAR.get(None)!r} "
                               f"after {where}, expected {self.tag!r}")

    def outcome(self, me: Any, what: str, tok: Optional[int], fn: Any, *args: Any,
                **kwargs: Any) -> Any:
        """Run one API call that may transfer control, and account for it."""
        led = self.led
        if tok is not None:
            led.send(tok)
        try:
            r = SIGNALS.call_args(fn, args, kwargs)
        except Injected as e:
            self.check_context(what)
            if me is not None and self.rng.random() < 0.2:
                self.log("reraise", e.tok)
                raise                   # passes it on: someone else receives it
            led.receive(e)
            return None
        except Alarm:
            self.check_context(what)
            still_unwinding(me)
            return None
        except GeneratorExit:
            raise
        except BaseException as e:
            if str(e) == JUST_STARTED:
                # raised inside the just-started continulet that got a value
                # (maybe another one's through switch(to=)): it comes out of
                # whatever that one held, and the value it replaced is gone
                led.eaten += 1
                return None
            if _refusal(e):
                if tok is not None:
                    led.refuse(tok)
                return None
            unexpected(led, what, e)
            return None
        self.check_context(what)
        led.receive(r)
        return r

    def pick(self, me: Optional[continulet]) -> Optional[continulet]:
        if me is not None and self.rng.random() < 0.45:
            return me
        if not self.pool:
            return None
        return self.rng.choice(self.pool)

    # -- the bodies --------------------------------------------------------
    def new(self) -> Cont:
        n = self.nbodies = self.nbodies + 1
        cell = f"cell{n}"
        job = Job()
        job.attr = n
        world = self
        steps = self.rng.randint(0, 6)

        def body(c: Cont, *args: Any) -> Any:
            led = world.led
            SIGNALS.local.critical = True
            key = object()        # entered once its first line inside the try ran
            try:
                led.entered.add(key)
                world.log("start", f"b{n}")
                box = [c, job]          # a cycle through the stack: c -> frame -> box -> c
                for _ in range(steps):
                    world.step(c)
                tok = led.send(led.token())
                world.log("return", f"b{n}", tok)
                return tok
            finally:
                SIGNALS.local.critical = True
                try:
                    if CHECK_CLEARED and (cell != f"cell{n}" or job.attr != n
                                          or box[0].attr != "own"):
                        led.violation(f"body {n} finally: state changed")
                except NameError as e:   # a cleared closure cell (issue 8 item 2)
                    LOST.append(f"a body's finally sees cleared state: {e}")
                except BaseException as e:
                    LOST.append(f"a body's finally sees cleared state: {type(e).__name__}: {e}")
                led.exited.add(key)

        c = Cont(body, n)
        c.attr = "own"
        c.n = n
        self.refs.append((n, weakref.ref(c)))
        return c

    # -- ops ---------------------------------------------------------------
    def step(self, me: Optional[continulet]) -> None:
        rng = self.rng
        op = rng.choices(OPS, WEIGHTS)[0]
        if op is World.op_drop and me is not None:
            op = World.op_switch        # only the driver may drop: it is in no continulet
        op(self, me)

    def op_new(self, me: Any) -> None:
        c = self.new()
        self.pool.append(c)
        self.log("new", len(self.pool) - 1, "body", self.nbodies)

    def op_switch(self, me: Any) -> None:
        t = self.pick(me)
        if t is None:
            return self.op_new(me)
        tok = self.led.token() if self.rng.random() < 0.7 else None
        self.log("switch", self.where(t, me), tok)
        self.outcome(me, "switch", tok, t.switch, tok)

    def op_switch_to(self, me: Any) -> None:
        a, b = self.pick(me), self.pick(me)
        if a is None or b is None:
            return self.op_new(me)
        tok = self.led.token() if self.rng.random() < 0.7 else None
        self.log("switch_to", self.where(a, me), self.where(b, me), tok)
        self.outcome(me, "switch(to=)", tok, a.switch, tok, b)

    def op_throw(self, me: Any) -> None:
        t = self.pick(me)
        if t is None:
            return self.op_new(me)
        tok = self.led.token()
        to = self.pick(me) if self.rng.random() < 0.3 else None
        self.log("throw", self.where(t, me), self.where(to, me), tok)
        if to is None:
            self.outcome(me, "throw", tok, t.throw, Injected(tok))
        else:
            self.outcome(me, "throw(to=)", tok, t.throw, Injected, (tok,), None, to)

    def op_permute(self, me: Any) -> None:
        if not self.permute_ok or not self.pool:
            return
        k = self.rng.randint(1, 4)
        # mostly pending ones (suspended stacks are what permute moves),
        # sometimes one of them twice
        pending = [c for c in self.pool if c.is_pending()] + ([me] if me is not None else [])
        cands = pending if pending and self.rng.random() < 0.8 else self.pool
        cs = [self.rng.choice(cands) for _ in range(k)]
        if self.rng.random() < 0.3:
            cs.insert(self.rng.randrange(len(cs) + 1), self.rng.choice(cs))
        self.log("permute", [self.where(c, me) for c in cs])
        self.outcome(me, "permute", None, permute, *cs)

    def op_gc(self, me: Any) -> None:
        gen = self.rng.choice((0, 1, 2))
        self.log("gc", gen)
        self.outcome(me, "gc.collect", None, gc.collect, gen)

    def op_drop(self, me: Any) -> None:
        if self.pool:
            i = self.rng.randrange(len(self.pool))
            c = self.pool.pop(i)
            self.log("drop", self.where(c, None))
            SIGNALS.call(self._release, c)

    @staticmethod
    def _release(c: Any) -> None:
        del c

    def switcher(self, me: Any) -> Any:
        """A callable that switches to a random continulet (for finalizers)."""
        t = self.pick(me)
        tok = self.led.token()
        world = self

        def switch_now(*ignored: Any) -> None:
            # A finalizer that switches away holds the object being freed on
            # its C stack, where the GC cannot see it: if nothing resumes
            # that stack, what it refers to stays (as with the C greenlet).
            # Such a scenario only checks the tokens.
            if t is not None:
                world.stuck += 1
                try:
                    world.outcome(None, "switch from a finalizer", tok, t.switch, tok)
                finally:
                    world.stuck -= 1
        return switch_now

    def op_finalizer(self, me: Any) -> None:
        class Dying:
            pass
        fn = self.switcher(me)
        Dying.__del__ = lambda self: fn()
        d = Dying()
        if self.rng.random() < 0.3:
            d.cycle = d                 # freed by a later collection: the switch is refused
        self.log("finalizer", hasattr(d, "cycle"))
        SIGNALS.call(self._release, d)

    def op_weakref(self, me: Any) -> None:
        obj = Job()
        ref = weakref.ref(obj, self.switcher(me))
        self.log("weakref callback")
        SIGNALS.call(self._release, obj)
        del ref

    def op_genlet(self, me: Any) -> None:
        world = self
        n = self.rng.randint(0, 4)

        @generator
        def gen(g: Any) -> None:
            led = world.led             # a local: the finally needs no closure cell
            key = object()        # entered once its first line inside the try ran
            try:
                led.entered.add(key)
                for _ in range(n):
                    led.receive(g.switch(led.send(led.token())))
                    if world.rng.random() < 0.3:
                        world.step(g)
            finally:
                SIGNALS.local.critical = True
                led.exited.add(key)
                if CHECK_CLEARED:
                    try:
                        world
                    except NameError as e:
                        LOST.append(f"a genlet's finally sees cleared state: {e}")

        g = gen()
        take = self.rng.randint(0, n + 1)
        self.log("genlet", n, take)
        for _ in range(take):
            try:
                r = SIGNALS.call(next, g)
            except StopIteration:
                break
            except (Alarm, Injected) as e:
                self.led.receive(e)
                still_unwinding(me)
                break
            except GeneratorExit:
                raise
            except BaseException as e:
                if str(e) == JUST_STARTED:
                    self.led.eaten += 1     # its value went into a just-started continulet
                elif str(e) == NOT_NONE:
                    # a permute of the running genlet gave it another
                    # continulet's stack to go back to: its function's end
                    # went there, and a value sent from there came out of
                    # next() with the genlet finished (PyPy's genlet raises
                    # the same); that value is gone
                    self.led.eaten += 1
                elif not _refusal(e):
                    unexpected(self.led, "genlet", e)
                break
            self.led.receive(r)
        if self.rng.random() < 0.5:
            self.pool.append(g)         # resumed by later ops, or dropped at the end

    def op_pygen(self, me: Any) -> None:
        world = self

        def gen() -> Any:
            key = object()        # entered once its first line inside the try ran
            try:
                world.led.entered.add(key)
                for _ in range(world.rng.randint(0, 3)):
                    world.step(me)      # may switch away with this generator running
                    yield
            finally:
                SIGNALS.local.critical = True
                world.led.exited.add(key)

        self.log("pygen")
        g = gen()
        try:
            for _ in SIGNALS.call(iter, g):
                pass
        except (Alarm, Injected) as e:
            # passed on or received here, never both: whoever it is passed
            # on to receives it too (a token received twice, signals or not)
            if isinstance(e, Injected) and me is not None and self.rng.random() < 0.2:
                raise
            self.led.receive(e)
            still_unwinding(me)
        finally:
            SIGNALS.call(g.close)

    def op_trace(self, me: Any) -> None:
        on = self.rng.random() < 0.5
        which = self.rng.choice((sys.settrace, sys.setprofile))
        self.log("trace" if which is sys.settrace else "profile", on)
        which(_tracer if on else None)

    def op_context(self, me: Any) -> None:
        v = contextvars.ContextVar("stress_local")
        x = self.rng.random()
        v.set(x)
        self.log("context")
        if v.get() != x:
            self.led.violation("a ContextVar lost its value")
        self.check_context("contextvars")

    def op_foreign(self, me: Any) -> None:
        if not self.foreign:
            return
        other = self.rng.choice(self.foreign)()
        if other is None or other in self.pool:
            return
        tok = self.led.token()
        how = self.rng.choice(("switch", "throw", "permute", "to"))
        self.log("foreign", how, tok)
        if how == "switch":
            self.outcome(me, "foreign switch", tok, other.switch, tok)
        elif how == "throw":
            self.outcome(me, "foreign throw", tok, other.throw, Injected(tok))
        elif how == "permute" and self.pool:
            self.outcome(me, "foreign permute", None, permute, self.pool[0], other)
        elif how == "to" and self.pool:
            self.outcome(me, "foreign switch(to=)", tok, self.pool[0].switch, tok, other)
        else:
            self.led.refuse(tok)

    def op_reinit(self, me: Any) -> None:
        t = self.pick(me)
        if t is not None:
            self.log("reinit", self.where(t, me))
            self.outcome(me, "__init__ again", None, t.__init__, len)

    def where(self, c: Any, me: Any) -> str:
        if c is None:
            return "-"
        name = f"b{c.n}" if isinstance(c, Cont) else f"genlet@{id(c):x}"
        if c is me:
            return f"me={name}"
        return name + ("" if any(c is x for x in self.pool) else "(dropped)")

    # -- driving -----------------------------------------------------------
    def drive(self, nsteps: int) -> None:
        self.thread = threading.get_ident()
        THREAD_VAR.set(self.tag)
        for _ in range(nsteps):
            try:
                self.step(None)
            except Alarm:
                # the signal landed in harness code that the code under test
                # called back (a generator's close, a finalizer): not a finding
                self.log("signal escaped an op")
        self.drain()

    def drain(self) -> None:
        """Resume pending continulets until every body has finished."""
        sys.settrace(None)
        sys.setprofile(None)
        for _ in range(2000):
            pending = [c for c in self.pool if c.is_pending()]
            if not pending:
                return
            c = pending[0]
            self.log("drain", self.where(c, None))
            self.outcome(None, "drain", None, c.switch)
        raise Failure(f"{self.name}: continulets still pending after 2000 drain switches")

    def cleanup(self) -> None:
        sys.settrace(None)
        sys.setprofile(None)
        self.log("cleanup")
        del self.pool[:]
        for _ in range(3):
            collect_here()
            # continulets that another thread's GC freed are unwound in their
            # own thread at its next switch
            continulet(lambda c: None).switch()
        alive = [n for n, r in self.refs if r() is not None]
        if alive and os.environ.get("STRESS_DEBUG"):
            for n, r in self.refs:
                if r() is not None:
                    print("stuck", self.stuck)
                    for ref in gc.get_referrers(r()):
                        print("referrer of body", n, type(ref), str(ref)[:300])
                        if type(ref).__name__ in ("cell", "builtin_function_or_method"):
                            for ref2 in gc.get_referrers(ref):
                                print("   referrer", type(ref2), str(ref2)[:200], sys.getrefcount(ref))
        if alive and not self.stuck:
            self.led.violation(f"continulets of bodies {alive[:10]} not collected "
                               f"after cleanup: {[r().is_pending() for n, r in self.refs if r() is not None][:10]} pending")


def still_unwinding(me: Any) -> None:
    """Go on unwinding when the signal replaced a GeneratorExit.

    A run that the GC unwinds (its continulet dropped) gets GeneratorExit
    where it is suspended.  The signal may land in the profiler (``_tracer``)
    at the ``c_exception`` event of that switch and replace the GeneratorExit
    by an ``Alarm`` without a context; the op that swallowed the ``Alarm`` as
    an interruption would let the body go on, and its next switch to its own
    continulet, finished by then, raised ``continulet already finished`` out
    of the unwinding (core seed 826430511).  A body whose own continulet is
    no longer pending is being unwound: raise GeneratorExit again, as code
    that handles an asynchronous exception during ``close()`` should."""
    if me is not None and not me.is_pending():
        raise GeneratorExit


def _tracer(frame: Any, event: str, arg: Any) -> None:
    return None


OPS_WEIGHTS = [
    (World.op_new, 8), (World.op_switch, 20), (World.op_switch_to, 6),
    (World.op_throw, 6), (World.op_permute, 4), (World.op_gc, 3),
    (World.op_drop, 4), (World.op_finalizer, 3), (World.op_weakref, 2),
    (World.op_genlet, 3), (World.op_pygen, 2), (World.op_trace, 2),
    (World.op_context, 1), (World.op_foreign, 2), (World.op_reinit, 1),
]
SKIP = skipped("core")
CHECK_CLEARED = "cleared" not in SKIP
CHECK_CONTEXT = "ctxcheck" not in SKIP
OPS = [o for o, _ in OPS_WEIGHTS]
WEIGHTS = [0 if o.__name__[3:] in SKIP else w for o, w in OPS_WEIGHTS]


def run(seed: int, trace: Trace) -> None:
    SIGNALS.star_call = "callex" not in SKIP
    rng = random.Random(seed)
    nthreads = rng.choice((0, 0, 1, 2))
    signals = signals_wanted(rng, 0.35)
    permute_ok = rng.random() < 0.7
    nsteps = rng.randint(20, 120)
    trace("core seed", seed, "threads", nthreads, "signals", signals,
          "permute", permute_ok, "steps", nsteps)
    foreign: list = []
    barrier = threading.Barrier(nthreads + 1)
    worlds = [World(rng.getrandbits(32), "main", trace, foreign, signals, permute_ok)]
    abandoned: list = []                # pools of threads that ended with pending continulets
    errors: list = []

    def thread_main(w: World, end_pending: bool) -> None:
        try:
            w.thread = threading.get_ident()
            THREAD_VAR.set(w.tag)
            for _ in range(nsteps):
                w.step(None)
                if w.pool and w.rng.random() < 0.1:
                    foreign.append(weakref.ref(w.pool[-1]))
            if end_pending:
                abandoned.append(w.pool)   # dropped by the main thread after this one ended
            else:
                w.drain()
        except BaseException as e:
            errors.append(e)
        finally:
            try:
                barrier.wait(timeout=60)
            except threading.BrokenBarrierError:
                pass
            if not end_pending:
                w.cleanup()

    threads = []
    ends = []
    for i in range(nthreads):
        w = World(rng.getrandbits(32), f"thread{i}", trace, foreign, False, permute_ok)
        end_pending = rng.random() < 0.4
        worlds.append(w)
        ends.append(end_pending)
        threads.append(threading.Thread(target=thread_main, args=(w, end_pending)))

    main = worlds[0]
    with Unraisables((Alarm, GeneratorExit), trace) as unr:
        for t in threads:
            t.start()
        drive_with_signals(signals, rng, lambda: main.drive(nsteps))
        meet(barrier)
        join(threads)                   # their cleanup (their GC) first: one at a time
        main.cleanup()
        foreign.clear()
        abandoned.clear()               # pending continulets of ended threads: dropped
        for _ in range(2):
            gc.collect()
    if errors:
        raise errors[0]
    if LOST:
        raise Failure(LOST[0])
    unr.check()
    by_name = {w.name: w for w in worlds}
    check_ledgers([w.led for w in worlds], strict_tokens=not signals,
                  balanced=lambda led: not by_name[led.name].stuck and (
                      led.name == "main" or not ends[int(led.name[len("thread"):])]))
