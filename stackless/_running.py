"""Pickling tasklets in the middle of their code (CPython).

A started tasklet's stack is its continulet's; ``_continuation_pickle``
captures its frames.  The scheduler's own frames on top of the tasklet's
code (``channel.send``, ``schedule``, ``_switch``, ...; with the C
accelerator there are none, the operation is C code) are dropped: when the
rebuilt tasklet first runs, the call its code was making into stackless
returns what that operation returns on resume (``receive``, ``schedule``
and ``run`` the tasklet's ``tempval``, the others ``None``; a ``bomb`` in
``tempval`` is raised), after the bookkeeping a switch does on resume.

The frame at the bottom, ``_bootstrap``, is the scheduler's too and is
dropped as well: when the tasklet's function returns, the copy does what
``_bootstrap`` does then (:class:`End`).  So a tasklet started by a C
bootstrap (no frame of its own) pickles the same way.
"""
from __future__ import annotations

import copyreg
import os
import pickle
import sys
from typing import Any, Optional

from stackless._common import _own_module, _stack_start_context

_own_module(globals())

def _module(name: str) -> Any:
    """A module of the package, imported by now (an import statement would
    run importlib's Python code, which run(timeout) would count and could
    interrupt: Resume and End run in the tasklet, before and after its code)."""
    return sys.modules["stackless." + name]


#: bottom code -> capture policy, handed to _continuation_pickle when it is
#: first needed (importing it makes generators and cells picklable)
BOTTOMS: dict = {}

_PACKAGE = os.path.dirname(os.path.abspath(__file__))

#: operations whose call returns the tasklet's tempval when it resumes
_RETURN_TEMPVAL = frozenset(("receive", "schedule", "schedule_remove", "run", "switch", "_run"))


def _internal(code: Any) -> bool:
    """Code of the scheduler itself (not its demo, stackless/__main__.py)."""
    path = os.path.abspath(code.co_filename)
    return os.path.dirname(path) == _PACKAGE and os.path.basename(path) != "__main__.py"


def _keep(raw: list) -> tuple:
    """The range of frames, from the bottom, that belong to the tasklet's
    own code: the scheduler's frames above it are dropped, and so is the
    Python ``_bootstrap`` below it (:class:`End` stands for it).  A third
    item says whether ``run(timeout)`` interrupted the tasklet from its
    trace function: that happens only before an instruction (a line or
    opcode event, stackless/_preempt.py), where the top frame resumes."""
    lo = 1 if raw and _internal(raw[0][1]) else 0
    hi = len(raw)
    while hi > lo and _internal(raw[hi - 1][1]):
        hi -= 1
    return lo, hi, hi < len(raw) and raw[hi][5] and _is_ticker(raw[hi][1])


def _is_ticker(code: Any) -> bool:
    """Whether ``code`` is that of the trace function (or the CPU-time
    callback) through which ``run(timeout)`` interrupts a tasklet."""
    pre = sys.modules.get("stackless._preempt")
    cls = getattr(pre, "_Preempt", None)
    return cls is not None and code in (cls._local_trace.__code__, cls._global_trace.__code__,
                                         cls._expired.__code__)


class Resume:
    """What the rebuilt tasklet does first: the end of a switch, then the
    result of the stackless call its code was making."""

    __slots__ = ("tasklet", "op")

    def __init__(self, tasklet: Any, op: str) -> None:
        self.tasklet = tasklet
        self.op = op

    def __reduce__(self) -> tuple:
        return Resume, (self.tasklet, self.op)

    def __call__(self) -> Any:
        from _continuation import _set_stack_context   # (CPython: frames pickle there)
        _switching = _module("_switching")
        t = self.tasklet
        ts = t._ts
        if ts.tasklet_tracing:
            _switching._tracing_in(ts, t)
        if ts.timeout is not None:
            ts.timeout.resumed(t)
        # the rebuilt stack runs in the tasklet's own context (contexts do
        # not pickle: one copied when it was unpickled, or set_context()'s),
        # as _bootstrap does for a new one; not in its starter's
        _set_stack_context(_stack_start_context(t._context))
        _catch_up_instrumentation()
        if self.op in _RETURN_TEMPVAL:
            return _switching._take_tempval(t)
        v = t._tempval
        if type(v) is _switching.bomb:
            t._tempval = None
            v.raise_()
        return None


def _noop_trace(frame: Any, event: str, arg: Any) -> None:
    return None


def _catch_up_instrumentation() -> None:
    """3.12+: the rebuilt frames resume in the middle of their code, which
    may not have run since tracing last changed (the Python _bootstrap's,
    when the C one starts the tasklets): turning tracing on and off again
    makes CPython bring the code of every running frame up to date."""
    if sys.version_info >= (3, 12):
        old = sys.gettrace()
        sys.settrace(_noop_trace if old is None else None)
        sys.settrace(old)


class End:
    """What the rebuilt tasklet does when its function returns or raises:
    what ``_bootstrap`` does then (it is not rebuilt)."""

    __slots__ = ("tasklet",)

    def __init__(self, tasklet: Any) -> None:
        self.tasklet = tasklet

    def __reduce__(self) -> tuple:
        return End, (self.tasklet,)

    def __call__(self, error: Optional[BaseException], value: Any) -> None:
        _switching = _module("_switching")
        t = self.tasklet
        if isinstance(error, _switching.TaskletExit):
            error = None
        while True:     # (as _bootstrap calls _end)
            box, error = [error], None
            try:
                return _switching._end(t._cont, t, t._ts, box)
            except BaseException as e:
                if not t._alive:
                    raise
                error = e


def _on_resume(args: tuple, callee: Any) -> Resume:
    t = args[0]
    if callee is None:
        callee = t._func    # a C operation was its function (tasklet(ch.receive))
    return Resume(t, getattr(callee, "__name__", "") if callee is not None else "")


def _on_return(args: tuple) -> End:
    return End(args[0])


def install(bootstrap: Any, ts_type: type, ts_func: Any) -> None:
    """Have continulets whose run function is ``bootstrap`` (every
    tasklet's: ``continulet(bootstrap, tasklet)``) pickled the tasklet way.
    A thread's scheduler state found in their frames pickles as "the
    scheduler of the thread that loads it".  A C bootstrap registers the
    same way (docs/design.md, "Pickling a tasklet's stack")."""
    copyreg.pickle(ts_type, lambda ts: (ts_func, ()))
    BOTTOMS[bootstrap] = (_keep, _on_resume, _on_return)
    cp = sys.modules.get("_continuation_pickle")
    if cp is not None:                          # imported before us
        cp.register_bottom(bootstrap, _keep, _on_resume, _on_return)


def _pickle_support() -> Any:
    """_continuation_pickle, or None where frames cannot be read (PyPy)."""
    import _continuation
    if not hasattr(_continuation, "_frames"):
        return None
    import _continuation_pickle
    return _continuation_pickle


def running_depth(frame: Any) -> Optional[int]:
    """How many frames of the tasklet's code the running stack holds, from
    its bottom up to ``frame``; None where frames cannot be read."""
    if _pickle_support() is None:
        return None
    import _continuation
    return sum(1 for r in _continuation._frames(frame)[0] if not _internal(r[1]))


def handled_exception(cont: Any) -> Optional[BaseException]:
    """The exception being handled on the suspended stack of ``cont``."""
    _cp = _pickle_support()
    if _cp is None or _cp.kind(cont) != "suspended":
        return None
    return _cp.frames_of(cont)[1]


def entered_through_c(raw: list, func: Any) -> Optional[str]:
    """Why the tasklet's own frames (``raw``, bottom first) cannot be
    restored because C code lies below them, or None.  The bottom one of
    them is entered from C when the bootstrap is C or the tasklet's
    function is a C callable; only a call of the function itself (a
    function or a bound method) returns to the bootstrap what the frame
    returns.  Anything else (``reduce(f, ...)``, a ``functools.partial``)
    is C code that a restore would skip: Stackless refuses it too."""
    lo, hi = _keep(raw)[:2]
    if hi <= lo or raw[lo][7]:
        return None     # (a rebuilt frame is driven from C by design)
    # (whether a frame was entered from C is not recorded alike on every
    # version: the frame's function tells)
    f = raw[lo][0]
    if f is not None and (f is func or getattr(func, "__func__", None) is f
                          or getattr(type(func), "__call__", None) is f):
        return None
    return ("cannot pickle: the tasklet's function %r calls %s through C code"
            % (func, raw[lo][1].co_qualname if hasattr(raw[lo][1], "co_qualname")
               else raw[lo][1].co_name))


def blocker(cont: Any, t: Any = None) -> Optional[str]:
    """None if the suspended stack of ``cont`` (the tasklet ``t``'s) can be
    pickled, else why not (which frame blocks it)."""
    _cp = _pickle_support()
    if _cp is None:
        return "this Python cannot read the frames of a suspended tasklet"
    if _cp.kind(cont) == "recipe":
        return None     # rebuilt from a pickle, not run yet
    try:
        _cp.capture(cont, _keep)
    except pickle.PicklingError as e:
        return str(e)
    if t is not None:
        return entered_through_c(_cp.frames_of(cont)[0], t._func)
    return None
