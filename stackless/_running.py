"""Pickling tasklets in the middle of their code (CPython).

A started tasklet's stack is its continulet's; ``_continuation_pickle``
captures its frames.  The scheduler's own frames on top of the tasklet's
code (``channel.send``, ``schedule``, ``_switch``, ...; with the C
accelerator there are none, the operation is C code) are dropped: when the
rebuilt tasklet first runs, the call its code was making into stackless
returns what that operation returns on resume (``receive``, ``schedule``
and ``run`` the tasklet's ``tempval``, the others ``None``; a ``bomb`` in
``tempval`` is raised), after the bookkeeping a switch does on resume.

The frame at the bottom, ``_bootstrap``, is the scheduler's too but is
kept: it finishes the tasklet when its function returns.
"""
from __future__ import annotations

import copyreg
import os
import pickle
import sys
from typing import Any, Optional

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


def _keep(raw: list) -> int:
    """How many frames, from the bottom, belong to the tasklet's own code
    (and _bootstrap): the scheduler's frames above it are dropped."""
    n = len(raw)
    while n > 1 and _internal(raw[n - 1][1]):
        n -= 1
    return n


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
        from stackless import _switching
        t = self.tasklet
        ts = t._ts
        if ts.tasklet_tracing:
            _switching._tracing_in(ts, t)
        if ts.timeout is not None:
            ts.timeout.resumed(t)
        # the rebuilt stack runs in the tasklet's own context (contexts do
        # not pickle: one copied when it was unpickled, or set_context()'s),
        # as _bootstrap does for a new one; not in its starter's
        _set_stack_context(t._context)
        t._frame = None
        if self.op in _RETURN_TEMPVAL:
            return _switching._take_tempval(t)
        v = t._tempval
        if type(v) is _switching.bomb:
            t._tempval = None
            v.raise_()
        return None


def _on_resume(bottom_locals: dict, callee: Any) -> Optional[Resume]:
    t = bottom_locals.get("self")
    op = getattr(callee, "__name__", "") if callee is not None else ""
    return Resume(t, op) if t is not None else None


def install(bootstrap_code: Any, ts_type: type, ts_func: Any) -> None:
    """Have continulets whose bottom frame runs ``bootstrap_code`` (every
    tasklet's) pickled the tasklet way.  A thread's scheduler state found in
    their frames pickles as "the scheduler of the thread that loads it"."""
    copyreg.pickle(ts_type, lambda ts: (ts_func, ()))
    BOTTOMS[bootstrap_code] = (_keep, _on_resume)
    cp = sys.modules.get("_continuation_pickle")
    if cp is not None:                          # imported before us
        cp.register_bottom(bootstrap_code, _keep, _on_resume)


def _pickle_support() -> Any:
    """_continuation_pickle, or None where frames cannot be read (PyPy)."""
    import _continuation
    if not hasattr(_continuation, "_frames"):
        return None
    import _continuation_pickle
    return _continuation_pickle


def handled_exception(cont: Any) -> Optional[BaseException]:
    """The exception being handled on the suspended stack of ``cont``."""
    _cp = _pickle_support()
    if _cp is None or _cp.kind(cont) != "suspended":
        return None
    return _cp.frames_of(cont)[1]


def blocker(cont: Any) -> Optional[str]:
    """None if the suspended stack of ``cont`` can be pickled, else why not
    (which frame blocks it)."""
    _cp = _pickle_support()
    if _cp is None:
        return "this Python cannot read the frames of a suspended tasklet"
    if _cp.kind(cont) == "recipe":
        return None     # rebuilt from a pickle, not run yet
    try:
        _cp.capture(cont, _keep)
    except pickle.PicklingError as e:
        return str(e)
    return None
