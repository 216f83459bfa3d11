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
transaction did before.  CPython never installs any of this: its channel
paths, pure and accelerated, are unchanged.
"""

from __future__ import annotations

import _thread
from typing import Any, Callable

from stackless._common import _own_module

_own_module(globals())

_xlock = _thread.RLock()
_owned = _xlock._is_owned


def _release() -> None:
    """Release the lock if this thread holds it (a second exception landing
    in the first attempt is caught by the second, as in _recover)."""
    try:
        if _owned():
            _xlock.release()
    finally:
        if _owned():
            _xlock.release()


def _acquire() -> None:
    if not _owned():
        _xlock.acquire()


def _releasing(func: Callable) -> Callable:
    """``func`` (a switch or a wake-up) called with the lock released."""
    def call(*args: Any) -> Any:
        _release()
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

    def _pair(self: Any, ts: Any, cur: Any, sending: bool, value: Any) -> Any:
        try:
            _acquire()
            if self._balance < 0 if sending else self._balance > 0:
                return pair(self, ts, cur, sending, value)
            # another thread took the waiter since send/receive looked:
            # wait instead, and finish as their waiting branch does
            wait(self, ts, cur, 1 if sending else -1, value)
            if sending:
                take_tempval(cur)
                return None
            v, cur._tempval = cur._tempval, None
            return v
        finally:
            _release()

    def _wait(self: Any, ts: Any, cur: Any, direction: int, value: Any) -> None:
        try:
            _acquire()
            if self._balance >= 0 if direction > 0 else self._balance <= 0:
                return wait(self, ts, cur, direction, value)
            # a waiter came since send/receive looked: pair with it; a
            # receiver finds the value where its waiting branch looks
            v = pair(self, ts, cur, direction > 0, value)
            if direction < 0:
                cur._tempval = v
            return None
        finally:
            _release()

    def _remove_waiter(self: Any, t: Any) -> Any:
        if _owned():
            return remove(self, t)
        try:
            _acquire()
            return remove(self, t)
        finally:
            _release()

    for name, func in (("_pair", _pair), ("_wait", _wait), ("_remove_waiter", _remove_waiter)):
        func.__name__ = name
        func.__qualname__ = "channel." + name
        func.__doc__ = getattr(channel, name).__doc__
        setattr(channel, name, func)
    for name in ("_wake", "_switch", "_leave"):
        namespace[name] = _releasing(namespace[name])
