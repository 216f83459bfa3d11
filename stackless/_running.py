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
kept: it finishes the tasklet when its function returns.  A tasklet that
the C accelerator started has no such frame (its ``_bootstrap`` is C and
calls the function from C): the frame of the Python ``_bootstrap``, waiting
in its call of the function, is put back under the captured ones
(``Started``), so the restored tasklet ends the Python way.
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
        from stackless import _switching
        t = self.tasklet
        ts = t._ts
        if ts.tasklet_tracing:
            _switching._tracing_in(ts, t)
        if ts.timeout is not None:
            ts.timeout.resumed(t)
        t._frame = None
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


def _started_in_c(raw: list) -> bool:
    """Whether a tasklet's stack with these raw frames was started by the
    C ``_bootstrap`` (no registered bottom frame of ours)."""
    return not raw or raw[0][1] not in BOTTOMS


def _scheduler_only(raw: list) -> bool:
    """No frame of the tasklet's own code: its function is one of ours (a
    C operation such as ``channel.receive``, or its Python fallback)."""
    return all(_internal(r[1]) for r in raw)


def _runs_func(raw: list, func: Any) -> bool:
    """Whether the bottom frame is the tasklet function's own (and not
    Python code that a C function it is calls back)."""
    if _scheduler_only(raw):
        return True
    f = raw[0][0]
    return f is func or getattr(func, "__func__", None) is f or getattr(func, "func", None) is f


def blocker(cont: Any, t: Any = None) -> Optional[str]:
    """None if the suspended stack of ``cont`` (the tasklet ``t``'s) can be
    pickled, else why not (which frame blocks it)."""
    _cp = _pickle_support()
    if _cp is None:
        return "this Python cannot read the frames of a suspended tasklet"
    if _cp.kind(cont) == "recipe":
        return None     # rebuilt from a pickle, not run yet
    raw = _cp.frames_of(cont)[0]
    if _started_in_c(raw):
        if t is None or not _runs_func(raw, t._func):
            return "cannot pickle: the tasklet's function calls Python code through C"
        if _scheduler_only(raw):
            return None
    try:
        _cp.capture(cont, _keep)
    except pickle.PicklingError as e:
        return str(e)
    return None


def picklable(t: Any, cont: Any) -> Any:
    """What pickles as the stack ``cont`` of the started tasklet ``t``."""
    _cp = _pickle_support()
    if cont is None or _cp is None or _cp.kind(cont) != "suspended":
        return cont
    return Started(t, cont) if _started_in_c(_cp.frames_of(cont)[0]) else cont


class Started:
    """Pickles as the continulet of a tasklet that the C ``_bootstrap``
    started, with the Python ``_bootstrap``'s frame at the bottom; it
    stands for that continulet in the frame's locals too (``cont``), so
    that pickle's memo makes them one object again."""

    __slots__ = ("tasklet", "cont")

    def __init__(self, tasklet: Any, cont: Any) -> None:
        self.tasklet = tasklet
        self.cont = cont

    def __reduce__(self) -> tuple:
        _cp = _pickle_support()
        t = self.tasklet
        raw, exc = _cp.frames_of(self.cont)
        if not _scheduler_only(raw):
            (frames, exc), callee = _cp.capture_ex(self.cont, _keep)
        else:
            frames, callee = (), t._func
        recipe = ((self._bottom(),) + tuple(frames), exc, _on_resume({"self": t}, callee))
        return _cp._new, (type(self.cont), _cp.VERSION), (("suspended", recipe), None)

    def _bottom(self) -> tuple:
        """The Python _bootstrap's frame, in its call of the function."""
        _cp = _pickle_support()
        code = _bootstrap_function().__code__
        ins = next(i for i in _cp._instructions(code) if i.opname == "CALL_FUNCTION_EX")
        _, _, base, nxt = _cp.call_site(code, ins.offset // 2)
        if base:
            raise pickle.PicklingError("cannot pickle: _bootstrap's call has values below it")
        t = self.tasklet
        known = {"cont": self, "self": t, "ts": t._ts, "error": None}
        names = code.co_varnames + code.co_cellvars + code.co_freevars
        values = tuple(_cp._wrap(known.get(n)) for n in names)
        unbound = tuple(i for i, n in enumerate(names) if n not in known)
        return (_cp.FunctionRef(_bootstrap_function()), nxt, (values, unbound, ()), ((), (), ()))


def _bootstrap_function() -> Any:
    from stackless import _switching
    return _switching._bootstrap
