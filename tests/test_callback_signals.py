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


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="refcounting")
def test_a_signal_in_a_greenlets_finalizer_reaches_the_caller_and_the_kill_happens():
    """The first check inside the package while a suspended greenlet is
    dropped (its __del__'s entry).  Before: the KeyboardInterrupt went to
    sys.unraisablehook, and the greenlet was never killed."""
    log = []

    def run():
        try:
            greenlet.getcurrent().parent.switch()
        finally:
            log.append("finally")
    g = greenlet.greenlet(run)
    g.switch()
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
