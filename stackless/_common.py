"""What every part of ``stackless`` shares: ``TaskletExit``, ``bomb``, the
error messages and the registry of the package's own module globals."""

from __future__ import annotations

import builtins
import os
import sys
import _thread
from typing import Any

_DEADLOCK = "Deadlock: the last runnable tasklet cannot be blocked."
_MAIN_RECEIVING = "the main tasklet is receiving without a sender available."
_MAIN_SENDING = "the main tasklet is sending without a receiver available."
_CLOSED = "Send/receive operation on a closed channel"
_BLOCK_TRAP = "this tasklet does not like to be blocked."
_NOT_RESTORABLE = ("this tasklet was pickled while it was running; a hard-switched "
                   "tasklet cannot be restored: only unstarted, paused-before-start "
                   "and dead tasklets are restorable")

_PYPY = sys.implementation.name == "pypy"
_NOARG: Any = object()  # "argument not given", where None is a valid argument
_RUNNING = object()     # "the running stack", see tasklet._context_place


class _FreshContext:
    """The ``_context`` of a tasklet bound where the context was empty
    (CPython): its stack starts with none, and CPython makes an empty one
    the first time code in it needs one, so that a tasklet that never
    uses ``contextvars`` owns no Context (64 B and an object for the
    collector less; docs/performance.md)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<fresh context>"


_FRESH_CONTEXT = _FreshContext()


def _stack_start_context(ctx: Any) -> Any:
    """What a tasklet's stack starts or resumes in for its ``_context``:
    None (no context until one is needed) for _FRESH_CONTEXT."""
    return None if ctx is _FRESH_CONTEXT else ctx


_getframe = sys._getframe
_get_ident = _thread.get_ident

if _PYPY:
    # PyPy's continulets do not carry the contextvars context: do it here.
    from __pypy__ import get_contextvar_context as _get_ctx  # type: ignore # noqa: F401
    from __pypy__ import set_contextvar_context as _set_ctx  # type: ignore # noqa: F401
else:
    # Ours carry it, one context per stack, and let us read and replace the
    # context of the running stack or of a suspended one.
    from _continuation import _stack_context, _set_stack_context  # type: ignore # noqa: F401
    # and the frame a suspended stack stopped in, made when asked for
    from _continuation import _stack_frame  # type: ignore # noqa: F401
    # run(timeout)'s event counter skips the frames of these globals too
    from _continuation import _preempt_own  # type: ignore


def _accel_module() -> Any:
    """The C accelerator ``_stackless_accel``, or None: on PyPy, with
    ``STACKLESS_ACCEL=0`` in the environment, or when it is not built."""
    if _PYPY or os.environ.get("STACKLESS_ACCEL", "1") == "0":
        return None
    try:
        import _stackless_accel  # type: ignore[import-not-found]
    except ImportError:
        return None
    return _stackless_accel


try:
    # False while this thread collects garbage: _continuation refuses any
    # switch then (docs/design.md, "Exception safety")
    from _continuation import _may_switch  # type: ignore # noqa: F401
except ImportError:     # PyPy's _continuation
    def _may_switch() -> bool:
        return True


# id() of the globals of every module of the package whose frames are the
# implementation's own: tasklet.frame and the preemption tick counter skip
# them.  Module dicts live as long as the process, so their ids are stable.
_OWN_GLOBALS: "set[int]" = set()


def _own_module(namespace: dict) -> None:
    """Count the frames of the module with globals ``namespace`` as ours."""
    _OWN_GLOBALS.add(id(namespace))
    if not _PYPY:
        _preempt_own(namespace)


_own_module(globals())


def _callback(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the user's ``func`` from the scheduler.  With the C accelerator
    the scheduler's Python code runs hidden from trace and profile
    functions, and this C function makes the user's code traced again."""
    return func(*args, **kwargs)


def _index(q: Any, t: Any) -> int:
    """The position of ``t`` in the deque ``q`` by identity, or -1.

    ``deque.index``/``remove`` would call ``__eq__`` of the other items,
    which a subclass may define: no user code runs in the scheduler.
    Another thread may change ``q`` meanwhile (a cross-thread pairing
    appends its waiter to this thread's run queue; the loop's backward jump
    lets threads switch, and PyPy switches between any two bytecodes): then
    it looks again.  Another thread only appends to a run queue, so the
    position stays right for the caller."""
    while True:
        i = 0
        try:
            for x in q:
                if x is t:
                    return i
                i += 1
            return -1
        except RuntimeError:    # "deque mutated during iteration"
            continue


class TaskletExit(SystemExit):
    """Raised in a tasklet to kill it (see :meth:`tasklet.kill`).

    When it leaves the tasklet's function uncaught the tasklet dies silently.
    """


if not hasattr(builtins, "TaskletExit"):
    builtins.TaskletExit = TaskletExit  # type: ignore[attr-defined]
else:  # pragma: no cover - another copy of this module was imported first
    TaskletExit = builtins.TaskletExit  # type: ignore[misc,attr-defined]


class bomb:
    """An exception packed as a value: it explodes when it is received.

    ``bomb(type, value, traceback)`` mirrors ``sys.exc_info()``.  A bomb that
    arrives as a tasklet's ``tempval`` (through a channel, ``throw`` or
    ``kill``) is raised in that tasklet when it resumes.
    """

    # _freight: what the scheduler replaced where nothing may be dropped,
    # released with the bomb by the tasklet that takes it
    __slots__ = ("type", "value", "traceback", "_freight")

    def __init__(self, exc_type: Any = None, exc_value: Any = None,
                 exc_traceback: Any = None) -> None:
        self.type = exc_type
        self.value = exc_value
        self.traceback = exc_traceback

    def raise_(self) -> None:
        """Raise the packed exception."""
        # The freight goes now.  Neither this frame nor the callers' keep
        # the bomb or the exception once it is raised: without a reference
        # cycle, what the bomb held is freed by reference counting, where
        # a __del__ may switch (never inside a garbage collection).
        self._freight = None
        exc = _make_exception(self.type, self.value)
        tb = self.traceback
        del self
        try:
            if tb is not None:
                raise exc.with_traceback(tb)
            raise exc
        finally:
            exc = tb = None

    def __reduce__(self):
        return (bomb, (self.type, self.value, None))

    def __repr__(self) -> str:
        return "<stackless.bomb %r %r>" % (self.type, self.value)


def _make_exception(exc: Any, val: Any = None) -> BaseException:
    """Build the exception instance for ``raise exc`` / ``throw(exc, val)``."""
    if isinstance(exc, BaseException):
        if val is not None:
            raise TypeError("instance exception may not have a separate value")
        return exc
    if isinstance(exc, type) and issubclass(exc, BaseException):
        if val is None:
            return exc()
        if isinstance(val, exc):
            return val
        if isinstance(val, tuple):
            return exc(*val)
        return exc(val)
    raise TypeError("exceptions must be classes, or instances, not %s"
                    % type(exc).__name__)



# Argument errors worded as Stackless's C functions word them.  The functions
# that take a fixed number of arguments collect any extra ones in ``*_more``
# and leave out a default only to notice that it is missing.

def _no_args(name: str, given: tuple) -> TypeError:
    return TypeError("%s() takes no arguments (%d given)" % (name, len(given)))


def _one_arg(name: str, arg: Any, more: tuple) -> TypeError:
    given = len(more) + (arg is not _NOARG)
    return TypeError("%s() takes exactly one argument (%d given)" % (name, given))


def _at_most(name: str, most: int, more: tuple) -> TypeError:
    return TypeError("%s() takes at most %d argument%s (%d given)"
                     % (name, most, "" if most == 1 else "s", most + len(more)))


def _parse(name: str, names: tuple, args: tuple, kw: dict) -> list:
    """``args`` and ``kw`` matched to the optional parameters ``names``, with
    the errors (and their order) of Stackless's C argument parser."""
    most = len(names)
    given = len(args) + len(kw)
    if given > most:
        raise TypeError("%s() takes at most %d argument%s (%d given)"
                        % (name, most, "" if most == 1 else "s", given))
    values = list(args) + [None] * (most - len(args))
    if kw:
        for i in range(len(args)):
            if names[i] in kw:
                raise TypeError("argument for %s() given by name ('%s') and position (%d)"
                                % (name, names[i], i + 1))
        for key, value in kw.items():
            if key not in names:
                raise TypeError("'%s' is an invalid keyword argument for %s()" % (key, name))
            values[names.index(key)] = value
    return values


def _at_least_one(name: str) -> TypeError:
    return TypeError("%s() takes at least 1 argument (0 given)" % name)


# Integer arguments converted as Stackless 3.7's C functions convert them
# (PyArg_ParseTuple of Python 3.7): "l"/"i" take an int or an object with
# __int__ (not a float, not an object with only __index__), "k" an int only.

def _c_long(value: Any, bits: int = 64) -> int:
    """``value`` as a C ``long`` (``bits`` 64) or ``int`` (32)."""
    if type(value) is not int:
        if isinstance(value, float):
            raise TypeError("integer argument expected, got float")
        if isinstance(value, int):
            value = int(value)
        else:
            conv = getattr(type(value), "__int__", None)
            if conv is None:
                raise TypeError("an integer is required (got type %s)" % type(value).__name__)
            value = conv(value)
            if not isinstance(value, int):
                raise TypeError("__int__ returned non-int (type %s)" % type(value).__name__)
            value = int(value)
    if not -(1 << 63) <= value < 1 << 63:
        raise OverflowError("Python int too large to convert to C long")
    if bits == 32 and not -(1 << 31) <= value < 1 << 31:
        raise OverflowError("signed integer is %s than %s"
                            % (("greater", "maximum") if value > 0 else ("less", "minimum")))
    return value


def _c_ulong(func: str, pos: int, value: Any, check: bool = True) -> int:
    """``value`` as a C ``unsigned long`` argument: an int, and with ``check``
    one in range (a thread id); without it, taken modulo 2**64 ("k")."""
    if not isinstance(value, int):
        raise TypeError("%s() argument %d must be int, not %s"
                        % (func, pos, "None" if value is None else type(value).__name__))
    if check and value < 0:
        raise OverflowError("can't convert negative value to unsigned int")
    if check and value >= 1 << 64:
        raise OverflowError("Python int too large to convert to C unsigned long")
    return int(value) & ((1 << 64) - 1)
