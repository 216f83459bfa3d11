"""PyPy only: each channel transaction excludes the other threads'.

On CPython a channel transaction (stackless/_channel.py) is atomic under the
GIL: CPython switches threads only at calls and backward jumps, and a
transaction has none.  PyPy may switch threads between any two bytecodes,
so two threads that test one channel's balance at once can both decide to
wait (or both take the same waiter), and the channel is corrupted for good
(docs/design.md, "Exception safety"; tests/stress/test_stress.py, S2).

Here one process-wide ``_thread.RLock`` makes them exclusive: it is taken
after ``send``/``receive`` tested the balance (the channel callback has run
by then), the test is made again under it, and it is released at the end
of the transaction, before the operation wakes another thread, switches
(``_wake``, ``_switch``, ``_leave`` are rebound in stackless/_channel.py to
release it first) or returns.  Nothing but the transaction's attribute and
deque operations runs while it is held.  The RLock is used for
``_is_owned()`` only, never taken twice: a channel operation that PyPy runs
inside the window (a ``__del__`` or a signal handler at a bytecode
boundary) does not wait for its own thread; it releases the lock early
instead, and the interrupted transaction finishes without it, as every
transaction did before.  The release on the way out survives an exception
that lands in its first attempt.  CPython never installs any of this: its channel
paths, pure and accelerated, are unchanged.
"""

from __future__ import annotations

import _thread
from typing import Any, Callable

from stackless._common import _own_module

_own_module(globals())

_xlock = _thread.RLock()
_owned = _xlock._is_owned


def _exclusive(func: Callable, *args: Any) -> Any:
    """``func(*args)`` holding the lock (unless this thread holds it
    already: a nested operation goes on without waiting).  Released on
    the way out however it ends: an exception that lands in the first
    release (a signal, or a profile function at the ``c_return`` of
    ``_is_owned``) finds the second."""
    try:
        if not _owned():
            _xlock.acquire()
        return func(*args)
    finally:
        try:
            if _owned():
                _xlock.release()
        finally:
            if _owned():
                _xlock.release()


def _releasing(func: Callable) -> Callable:
    """``func`` (a wake-up, a switch) called with the lock released first:
    the transaction is over.  (An exception that lands before the release
    skips ``func``, and ``_exclusive`` releases.)"""
    def call(*args: Any) -> Any:
        if _owned():
            _xlock.release()
        return func(*args)
    call.__name__ = func.__name__
    call.__qualname__ = func.__qualname__
    return call


def install(channel: type, namespace: dict) -> None:
    """Make ``channel``'s transactions exclusive between threads.

    ``namespace`` is stackless/_channel.py's globals, whose ``_wake``,
    ``_switch`` and ``_leave`` (called after a transaction) release the
    lock first."""
    take_tempval = namespace["_take_tempval"]
    pair, wait, remove = channel._pair, channel._wait, channel._remove_waiter

    def pair_or_wait(self: Any, ts: Any, cur: Any, sending: bool, value: Any) -> Any:
        if self._balance < 0 if sending else self._balance > 0:
            return pair(self, ts, cur, sending, value)
        # another thread took the waiter since send/receive looked: wait
        # instead, and finish as their waiting branch does
        wait(self, ts, cur, 1 if sending else -1, value)
        if sending:
            take_tempval(cur)
            return None
        v, cur._tempval = cur._tempval, None
        return v

    def wait_or_pair(self: Any, ts: Any, cur: Any, direction: int, value: Any) -> None:
        if self._balance >= 0 if direction > 0 else self._balance <= 0:
            return wait(self, ts, cur, direction, value)
        # a waiter came since send/receive looked: pair with it; a receiver
        # finds the value where its waiting branch looks
        v = pair(self, ts, cur, direction > 0, value)
        if direction < 0:
            cur._tempval = v
        return None

    def _pair(self: Any, ts: Any, cur: Any, sending: bool, value: Any) -> Any:
        return _exclusive(pair_or_wait, self, ts, cur, sending, value)

    def _wait(self: Any, ts: Any, cur: Any, direction: int, value: Any) -> None:
        return _exclusive(wait_or_pair, self, ts, cur, direction, value)

    def _remove_waiter(self: Any, t: Any) -> Any:
        return _exclusive(remove, self, t)

    for name, func in (("_pair", _pair), ("_wait", _wait), ("_remove_waiter", _remove_waiter)):
        func.__qualname__ = "channel." + name
        func.__doc__ = getattr(channel, name).__doc__
        setattr(channel, name, func)
    for name in ("_wake", "_switch", "_leave"):
        namespace[name] = _releasing(namespace[name])
