"""``stackless.coroutine``: the plain coroutine API of the project's seed.

A coroutine is a function on its own stack that is entered explicitly with
``switch()``; there is no scheduler.  Coroutines keep their own notion of
"current" per thread, independent of tasklets, greenlets and genlets.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from _continuation import continulet, permute


class CoroutineExit(SystemExit):
    """Raised inside a coroutine by :meth:`coroutine.kill`."""


class _CoState:
    __slots__ = ("main", "current")

    def __init__(self) -> None:
        m = coroutine.__new__(coroutine)
        m._is_main = True
        m._started = True
        self.main = m
        self.current = m


_local = threading.local()


def _state() -> _CoState:
    try:
        return _local.state
    except AttributeError:
        st = _local.state = _CoState()
        return st


class coroutine:
    """A coroutine: ``c = coroutine(); c.bind(func, *args); c.switch()``.

    When the function returns, control goes back to the coroutine that last
    switched into it (or to the main coroutine if that one has ended).  An
    uncaught exception propagates there too.
    """

    __slots__ = ("_func", "_args", "_kwargs", "_cont", "_caller", "_pending",
                 "_is_main", "_started", "_dead", "__weakref__", "__dict__")

    def __new__(cls, *args: Any, **kwargs: Any) -> "coroutine":
        self = object.__new__(cls)
        self._func = None
        self._args = ()
        self._kwargs = {}
        self._cont = None
        self._caller = None
        self._pending = None
        self._is_main = False
        self._started = False
        self._dead = False
        return self

    def bind(self, func: Callable, *args: Any, **kwargs: Any) -> None:
        """Bind the coroutine to ``func(*args, **kwargs)``."""
        if not callable(func):
            raise TypeError("coroutine function must be callable")
        if self._func is not None or self._is_main:
            raise ValueError("cannot bind a bound coroutine")
        self._func = func
        self._args = args
        self._kwargs = kwargs

    @staticmethod
    def getcurrent() -> "coroutine":
        """Return the running coroutine of this thread (its main coroutine if none)."""
        return _state().current

    @property
    def alive(self) -> bool:
        """True while the coroutine is bound and has not ended."""
        if self._is_main:
            return True
        return self._func is not None and not self._dead

    @property
    def is_alive(self) -> bool:
        """Alias of :attr:`alive`."""
        return self.alive

    def switch(self) -> None:
        """Suspend the running coroutine and resume (or start) this one."""
        st = _state()
        cur = st.current
        if self is cur:
            return
        if not self.alive:
            raise ValueError("cannot switch to an unbound or dead coroutine")
        self._caller = cur
        st.current = self
        if self._cont is None and not self._is_main:
            self._cont = continulet(_bootstrap, self)
        if cur._is_main:
            self._cont.switch()
        elif self._is_main:
            cur._cont.switch()
        else:
            cur._cont.switch(to=self._cont)
        p = cur._pending
        if p is not None:
            cur._pending = None
            raise p

    def throw(self, exc: Any = CoroutineExit, val: Any = None) -> None:
        """Raise an exception in the coroutine, switching to it."""
        e = exc(val) if isinstance(exc, type) and val is not None else (
            exc() if isinstance(exc, type) else exc)
        if self is _state().current:
            raise e
        if not self.alive:
            return
        if not self._started:
            self._dead = True
            self._func = None
            if isinstance(e, CoroutineExit):
                return
            raise e
        self._pending = e
        self.switch()

    def kill(self) -> None:
        """Kill the coroutine with :class:`CoroutineExit` (silently)."""
        if self._is_main:
            raise ValueError("cannot kill the main coroutine")
        self.throw(CoroutineExit)

    def __repr__(self) -> str:
        state = "main" if self._is_main else ("alive" if self.alive else "dead")
        return "<stackless.coroutine object at %#x %s>" % (id(self), state)


def _bootstrap(cont: continulet, self: coroutine) -> None:
    self._started = True
    error: Optional[BaseException] = None
    try:
        self._func(*self._args, **self._kwargs)
    except CoroutineExit:
        pass
    except BaseException as e:
        error = e
    self._dead = True
    self._func = None
    self._args = ()
    self._kwargs = {}
    st = _state()
    target = self._caller
    while target is not None and not target.alive:
        target = target._caller
    if target is None:
        target = st.main
    self._caller = None
    if error is not None:
        target._pending = error
    st.current = target
    if target._is_main:
        return None
    permute(cont, target._cont)
    return None
