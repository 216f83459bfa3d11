"""A signal that lands while one of the package's own callbacks runs (a
gc callback, a finalizer) reaches the user's code (issue 8, session 9).

CPython reports what a gc callback or a ``__del__`` raises through
``sys.unraisablehook`` and goes on: a KeyboardInterrupt raised by a signal
handler at a check inside such a callback's Python code was lost.  The
package's gc callbacks have no Python frame, and its finalizers run under
``_continuation._deferring``, which raises such an exception again at the
main thread's next check and runs the finalizer again (docs/design.md,
"Exception safety").  A pending call (``_testcapi``) runs at exactly the
checks where a signal handler runs.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref

import pytest

import stackless.greenlet as greenlet

try:
    from _testcapi import _pending_threadfunc
except (ImportError, OSError):  # PyPy
    _pending_threadfunc = None

pytestmark = pytest.mark.skipif(_pending_threadfunc is None, reason="needs _testcapi's pending calls")

PKG = os.path.dirname(greenlet.__file__).rsplit(os.sep, 1)[0] + os.sep


class Interrupt:
    """Raises KeyboardInterrupt at the first check where ``when()`` holds,
    as a signal handler would; records the function it landed in."""

    def __init__(self, when) -> None:
        self.when = when
        self.armed = False
        self.landed: list = []

    def __call__(self) -> None:
        if not self.armed:
            return
        # two in the queue: 3.13+ take a batch and ask for the next check
        # only when one is left (tests/test_stackless_signal_points.py)
        _pending_threadfunc(self)
        f = sys._getframe(1)
        if not self.when(f):
            return
        self.armed = False
        self.landed.append(f.f_code.co_name)
        raise KeyboardInterrupt

    def start(self) -> None:
        self.armed = True
        _pending_threadfunc(self)
        _pending_threadfunc(self)


class Unraisables:
    def __enter__(self) -> list:
        self.old, self.seen = sys.unraisablehook, []
        sys.unraisablehook = lambda u: self.seen.append(repr(u.exc_value))
        return self.seen

    def __exit__(self, *exc) -> None:
        sys.unraisablehook = self.old


def test_a_signal_during_a_collection_reaches_the_caller_of_collect():
    """The first check after a collection starts: with the greenlet layer's
    gc callback in Python (before), its entry."""
    gc.collect()
    started: dict = {}
    gc.callbacks.insert(0, started.__setitem__)     # (no frame: no check)
    interrupt = Interrupt(lambda f: "start" in started)
    try:
        with Unraisables() as unraisable:
            with pytest.raises(KeyboardInterrupt):
                interrupt.start()
                gc.collect()
                for _ in range(100):    # backward jumps: checks
                    pass
    finally:
        interrupt.armed = False
        gc.callbacks.remove(started.__setitem__)
    assert unraisable == []
    assert interrupt.landed == ["test_a_signal_during_a_collection_reaches_the_caller_of_collect"]


def suspended_greenlet(log: list) -> "greenlet.greenlet":
    """A greenlet suspended inside a ``try`` whose ``finally`` logs
    "finally" (the caller holds the only reference)."""
    def run():
        try:
            greenlet.getcurrent().parent.switch()
        finally:
            log.append("finally")
    g = greenlet.greenlet(run)
    g.switch()
    return g


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="refcounting")
def test_a_signal_in_a_greenlets_finalizer_reaches_the_caller_and_the_kill_happens():
    """The first check inside the package while a suspended greenlet is
    dropped (its __del__'s entry).  Before: the KeyboardInterrupt went to
    sys.unraisablehook, and the greenlet was never killed."""
    log = []
    g = suspended_greenlet(log)
    interrupt = Interrupt(lambda f: f.f_code.co_filename.startswith(PKG))
    try:
        with Unraisables() as unraisable:
            with pytest.raises(KeyboardInterrupt):
                interrupt.start()
                del g
                for _ in range(100):
                    pass
    finally:
        interrupt.armed = False
    assert unraisable == []
    assert interrupt.landed == ["_gl_del"]
    assert log == ["finally"]


class NthCheck(Interrupt):
    """KeyboardInterrupt at the n-th check in the package's frames."""

    def __init__(self, n: int) -> None:
        self.n, self.seen, self.at = n, 0, None
        super().__init__(self._nth)

    def _nth(self, f) -> bool:
        if not f.f_code.co_filename.startswith(PKG):
            return False
        at = (id(f), f.f_lasti)
        if at == self.at:       # the same check, run again for the next call
            return False
        self.at = at
        self.seen += 1
        return self.seen == self.n


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="refcounting")
def test_a_signal_at_any_point_of_a_greenlets_kill_is_not_lost():
    """At every check in the package while a dropped greenlet is killed:
    the greenlet dies once, its finally runs, and the KeyboardInterrupt
    reaches the caller, or, where it landed in the killed greenlet's own
    stack (in place of GreenletExit), goes to sys.unraisablehook as an
    exception of the kill (the C greenlet's rule for its code)."""
    n = 0
    while True:
        n += 1
        log = []
        g = suspended_greenlet(log)
        ref = weakref.ref(g)
        interrupt = NthCheck(n)
        caught = False
        try:
            with Unraisables() as unraisable:
                try:
                    interrupt.start()
                    del g
                    for _ in range(100):
                        pass
                except KeyboardInterrupt:
                    caught = True
        finally:
            interrupt.armed = False
        if not interrupt.landed:
            break
        assert log == ["finally"], (n, interrupt.landed)
        assert caught != bool(unraisable), (n, interrupt.landed, unraisable)
        assert all("KeyboardInterrupt" in u for u in unraisable), (n, unraisable)
        if ref() is not None:
            gc.collect()        # (a traceback's frames may hold it in a cycle)
        assert ref() is None, (n, interrupt.landed)
    assert n > 10, n       # (30 points on 3.11 in either mode)


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="continulet finalizers")
def test_a_signal_at_any_point_of_a_dropped_tasklets_kill_is_not_lost():
    """At every check in the package while a collection finds a dropped
    paused tasklet (its continulet's ``__continulet_keep__``) and kills it
    afterwards (``_kill_doomed``): the tasklet is killed once (at the next
    run() if a signal cut the kill short once it had scheduled it), the
    scheduler is consistent, and a KeyboardInterrupt that landed in the
    callbacks' own code reaches the caller of gc.collect().  One that
    landed in the kill or in the tasklet's stack may be reported to
    sys.unraisablehook as an error of the kill; none is lost."""
    import stackless
    gc.collect()
    n = 0
    while True:
        n += 1
        log = []

        def body():
            try:
                stackless.schedule_remove()
                log.append("resumed")
            finally:
                log.append("finally")
        dropped = weakref.ref(stackless.tasklet(body)())
        stackless.run()
        assert log == []
        in_callback = []      # landed in the callbacks' own code, not in kill()
        interrupt = NthCheck(n)
        when = interrupt.when
        interrupt.when = lambda f: when(f) and not in_callback.append(
            f.f_code.co_name in ("_keep_me", "_keep", "_kill_doomed", "_at_a_safe_point"))
        caught = False
        try:
            with Unraisables() as unraisable:
                try:
                    interrupt.start()
                    gc.collect(0)       # (it is young: a cheap collection finds it)
                    for _ in range(100):
                        pass
                except KeyboardInterrupt:
                    caught = True
        finally:
            interrupt.armed = False
        # a kill cut short once it had scheduled the tasklet ends here
        stackless.run()
        left = [t for t in stackless._live_tasklets(threading.get_ident())
                if t.alive and not t.is_main]
        for t in left:              # (a failure must not leave it to later tests)
            t.kill()
        if not interrupt.landed:
            break
        assert left == [] and log == ["finally"], (n, interrupt.landed)
        assert caught != bool(unraisable), (n, interrupt.landed, unraisable)
        assert all("KeyboardInterrupt" in u for u in unraisable), (n, unraisable)
        # in the callbacks' code: raised in main; in the kill (kill() and
        # _kill_dropped's loop, which retries it) or in the tasklet's stack
        # (in place of TaskletExit) it may be reported as an error of the kill
        assert caught or not in_callback[0], (n, interrupt.landed, unraisable)
        assert stackless.getcurrent() is stackless.getmain() and stackless.getruncount() == 1
    assert n > 5, n
