"""Whether the running tasklet is *nested*: runs Python code that C code
called, where ``run(timeout)`` must not interrupt it.

Stackless Python interrupts a tasklet only at nesting level 0 unless
``ignore_nesting`` is set (on the ``run()`` call or the tasklet): Python
code that a C function runs (a ``sorted()`` key, a ``functools.partial``,
a signal handler run inside a ``write()``, a finalizer) is not
interrupted, since the C code below it may be half-way through something
(a buffered file holds its lock while it writes: a switch there, and
another tasklet's write raises "reentrant call").  Calls that only go
through the interpreter's own call machinery (``f(*args)``, a class's
``__init__``, ``with``, a generator driven by a ``for`` loop) do not nest
there, nor here.  And the scheduler's own Python code is never
interrupted, whatever the flags: a signal handler's code that runs in it
(at a function's entry) would otherwise switch a tasklet away in the
middle of a scheduler operation, or of its way out.  See docs/stackless.md,
*Preemption*.
"""
from __future__ import annotations

import opcode
from typing import Any, Optional

from stackless._common import _OWN_GLOBALS, _own_module

_own_module(globals())

try:
    # CPython: (func, code, ip, depth, operands, from_c, ...) per frame of
    # the running stack, from its bottom up to the frame given
    from _continuation import _frames as _read_frames  # type: ignore
except ImportError:     # PyPy: its frames are not ours to read
    _read_frames = None

_FROM_C = 5


def _ops(*names: str) -> frozenset:
    return frozenset(opcode.opmap[n] for n in names if n in opcode.opmap)


# the caller's instruction when the interpreter itself called the frame
# through C: the call machinery, no C function with a state of its own
_MACHINERY = _ops("CALL_FUNCTION_EX", "BEFORE_WITH", "BEFORE_ASYNC_WITH", "WITH_EXCEPT_START")
_CALLS = _ops("CALL", "PRECALL", "CALL_KW")
_DRIVERS = _ops("FOR_ITER", "SEND")
# what a call of a class or an instance runs (type.__call__, slot wrappers)
_SLOTS = frozenset(("__init__", "__new__", "__call__", "__enter__", "__exit__",
                    "__aenter__", "__aexit__"))
_GENERATOR_FLAGS = 0x20 | 0x80 | 0x200      # CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR


def _plain(caller: Any, callee: Any) -> bool:
    """Whether frame ``callee``, entered from C, was called by ``caller``'s
    current instruction through the call machinery only."""
    code = caller.f_code
    i = caller.f_lasti
    op = code.co_code[i] if 0 <= i < len(code.co_code) else -1
    if op in _MACHINERY:
        return True
    if op in _CALLS:
        return callee.f_code.co_name in _SLOTS
    return op in _DRIVERS and bool(callee.f_code.co_flags & _GENERATOR_FLAGS)


def nested(frame: Any, ignore_nesting: bool) -> Optional[Any]:
    """If the running tasklet, whose innermost frame of user code is
    ``frame``, may not be interrupted there (see the module's docstring),
    the frame where its nesting begins, else None.  The tasklet stays
    nested while that frame runs (``still_nested``)."""
    if _read_frames is None:
        return None         # PyPy: its frames are not ours to read
    try:
        raw = _read_frames(frame)[0]
    except Exception:       # not the running stack's: nothing to say
        return None
    frames = []
    f = frame
    for _ in raw:           # the same frames, from the top
        if f is None:
            return None
        frames.append(f)
        f = f.f_back
    frames.reverse()
    for i in range(1, len(frames)):
        f = frames[i]
        if f.f_code is not raw[i][1]:
            return None     # (not expected) the two walks disagree
        if id(f.f_globals) in _OWN_GLOBALS:
            return f
        if raw[i][_FROM_C] and not ignore_nesting and not _plain(frames[i - 1], f):
            return f
    return None


def still_nested(frame: Any, entry: Any) -> bool:
    """Whether ``frame`` runs above ``entry``, the frame where a nesting
    that ``nested`` found begins (then it needs no new look: reading the
    frames at every trace event would slow nested code down tenfold)."""
    below = entry.f_back
    f = frame
    while f is not None and f is not below:
        if f is entry:
            return True
        f = f.f_back
    return False
