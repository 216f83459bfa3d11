"""A tasklet's ``contextvars`` context: where it lives (the running stack,
the continulet that holds a suspended stack, or the tasklet until it
starts), and the methods of ``tasklet`` that read and set it."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any, Callable, Optional

from stackless._common import _FRESH_CONTEXT, _PYPY, _RUNNING, _callback, _get_ident, _own_module

if _PYPY:
    from stackless._common import _get_ctx, _set_ctx
else:
    from stackless._common import _set_stack_context, _stack_context

if TYPE_CHECKING:
    from stackless._tasklet import tasklet

_own_module(globals())


def new_context() -> Any:
    """The context a tasklet gets when it is bound: a copy of the current
    one, or _FRESH_CONTEXT where that is empty (CPython: reading the
    running stack's context makes no copy)."""
    if not _PYPY:
        cur = _stack_context()
        if cur is None or not len(cur):
            return _FRESH_CONTEXT
    return contextvars.copy_context()


def set_context(self: "tasklet", context: contextvars.Context) -> "tasklet":
    """Set the ``contextvars.Context`` the tasklet runs in.

    For the current tasklet the change is immediate; a suspended one
    finds it when it resumes; an unstarted one starts in it.
    """
    if not isinstance(context, contextvars.Context):
        raise TypeError("context must be a contextvars.Context")
    if self._is_main:
        # its context is the thread's, which threading (3.14+) and
        # asyncio enter with Context.run(): replacing it would make
        # their exit fail
        raise RuntimeError("cannot change the context of the main tasklet")
    where = self._context_place()
    if where is _RUNNING:
        if _PYPY:
            _set_ctx(context)
        else:
            _set_stack_context(context)
    elif where is not None:
        if _PYPY:
            self._ctx = context     # _switch() puts it in place on resume
        else:
            _set_stack_context(context, where)
    self._context = context
    return self

def context_place(self: "tasklet") -> Any:
    """Where the context of this tasklet's stack lives now: _RUNNING, the
    continulet that holds its suspended stack (on PyPy: True), or None
    when it has no stack (unstarted or dead)."""
    if not self._alive or not (self._started or self._is_main):
        return None
    ts = self._ts
    if self is ts.current:
        if ts.thread_id != _get_ident():
            raise RuntimeError("cannot change the context of a tasklet "
                               "running in another thread")
        return _RUNNING
    if _PYPY:
        return True
    # while a tasklet other than main runs, its continulet holds the
    # main tasklet's stack (see _switch)
    return ts.current._cont if self._is_main else self._cont

def live_context(self: "tasklet") -> Optional[contextvars.Context]:
    """The context the tasklet's stack is in now, else the one it will
    start in."""
    where = self._context_place() if self._ts.thread_id == _get_ident() \
        or self is not self._ts.current else None
    if where is None:
        if self._context is _FRESH_CONTEXT:
            # asked for before it starts: made now, so that the answer
            # (and context_id) stays the same
            self._context = contextvars.Context()
        return self._context
    if _PYPY:
        return _get_ctx() if where is _RUNNING else self._ctx
    on = None if where is _RUNNING else where
    ctx = _stack_context(on)
    if ctx is None:
        # a stack that has not needed one yet (_FRESH_CONTEXT): made now,
        # as CPython would at its first use, so that the answer stays
        ctx = contextvars.Context()
        _set_stack_context(ctx, on)
    return ctx

def context_run(self: "tasklet", callable: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call ``callable(*args, **kwargs)`` in the tasklet's context."""
    if self is self._ts.current:
        return _callback(callable, *args, **kwargs)
    ctx = self._live_context()
    if ctx is None:
        return _callback(callable, *args, **kwargs)
    return _callback(ctx.run, callable, *args, **kwargs)

def context_id(self: "tasklet") -> int:
    """An id of the tasklet's context object."""
    ctx = self._live_context()
    return id(self) if ctx is None else id(ctx)

