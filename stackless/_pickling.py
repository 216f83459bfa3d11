"""Pickling of tasklets and channels.

The functions here are the ``__reduce__``/``__setstate__`` methods of
:class:`stackless.tasklet` and :class:`stackless.channel` (the classes take
them in their bodies).  A tasklet that has started is captured with its
frames when they can be (stackless/_running.py), else it is restored as one
that raises ``RuntimeError``.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from stackless import _running
from stackless._common import _NOT_RESTORABLE, _own_module

if TYPE_CHECKING:
    from stackless._channel import channel
    from stackless._tasklet import tasklet

_own_module(globals())


def reduce_ex(self: Any, proto: int) -> Any:
    """``__reduce_ex__``: every protocol pickles as ``__reduce__`` does."""
    return self.__reduce__()


# -- tasklets -----------------------------------------------------------------

def tasklet_reduce(self: "tasklet") -> Any:
    """``tasklet.__reduce__``."""
    return (_restore_tasklet, (type(self),), self.__getstate__())


def frames_restorable(self: "tasklet") -> bool:
    """Whether a started tasklet's frames can be captured."""
    return (self is not self._ts.current and self._cont is not None
            and _running.blocker(self._cont) is None)


def tasklet_getstate(self: "tasklet") -> tuple:
    """``tasklet.__getstate__``: function, arguments, tempval, flags, dict."""
    if self._is_main:
        raise TypeError("cannot pickle the main tasklet")
    running = self._alive and self._started
    cont = self._cont if running and frames_restorable(self) else None
    flags = {
        "alive": self._alive, "scheduled": self._scheduled,
        "blocked": self._blocked, "atomic": self._atomic,
        "ignore_nesting": self._ignore_nesting,
        "block_trap": self._block_trap,
        "unrestorable": (running and cont is None) or self._unrestorable,
        "cont": cont,
    }
    tempval = self._tempval
    d = getattr(self, "__dict__", None) or None
    return (self._func, self._args, self._kwargs, tempval, flags, d)


def tasklet_setstate(self: "tasklet", state: tuple) -> None:
    """``tasklet.__setstate__``."""
    func, args, kwargs, tempval, flags, d = state
    self._func = func
    self._args = args
    self._kwargs = kwargs
    self._atomic = flags["atomic"]
    self._ignore_nesting = flags["ignore_nesting"]
    self._block_trap = flags["block_trap"]
    self._unrestorable = flags["unrestorable"]
    self._context = contextvars.copy_context()
    if d:
        self.__dict__.update(d)
    if self._unrestorable and flags["alive"]:
        self._func = _unrestorable_body
        self._args, self._kwargs = (), {}
    if flags["alive"]:
        self._make_alive()
        if flags.get("cont") is not None:
            # its frames, rebuilt when it first runs (stackless/_running.py)
            self._cont = flags["cont"]
            self._started = True
    self._tempval = tempval
    if flags["alive"]:
        if flags["scheduled"] and not flags["blocked"]:
            self.insert()


def _restore_tasklet(cls: type) -> "tasklet":
    return cls.__new__(cls)


def _unrestorable_body() -> None:
    raise RuntimeError(_NOT_RESTORABLE)


# -- channels -----------------------------------------------------------------

def channel_reduce(self: "channel") -> Any:
    """``channel.__reduce__``: its settings, waiters and dict."""
    d = getattr(self, "__dict__", None) or None
    return (_restore_channel, (type(self),),
            (self._balance, self.preference, self.schedule_all,
             self._closing, list(self._queue), d))


def channel_setstate(self: "channel", state: tuple) -> None:
    """``channel.__setstate__``: the waiters are blocked on it again."""
    from stackless._channel import channel  # it imports this module
    balance, pref, sched_all, closing, waiters, d = state
    channel.__init__(self)
    self.preference = pref
    self.schedule_all = sched_all
    self._closing = closing
    if d:
        self.__dict__.update(d)
    direction = 1 if balance > 0 else -1
    for t in waiters:
        if t._scheduled:
            t.remove()
        t._blocked = direction
        t._channel = self
        self._queue.append(t)
        self._balance += direction


def _restore_channel(cls: type) -> "channel":
    return cls.__new__(cls)
