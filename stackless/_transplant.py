"""Moving a started tasklet to another thread: ``bind_thread()`` of a
paused or blocked tasklet, and ``enable_softswitch``.

A tasklet's C stack belongs to its thread, but its Python frames need not:
when they are all Python frames (the rule of ``restorable``,
docs/stackless.md), they are captured as they are (the same objects, no
pickling) and rebuilt on a new stack of the target thread, where they
resume when the tasklet next runs (src/transplant.c).  The old stack is
retired without unwinding it: the frames moved, they did not end, so no
``finally`` block runs.  This is what Stackless's soft switching allows,
and what ``enable_softswitch(None)`` reports.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from stackless import _running
from stackless._common import _NOARG, _PYPY, _one_arg, _own_module
from stackless._threads import _ThreadState, _register, _unregister

if TYPE_CHECKING:
    from stackless._tasklet import tasklet

_own_module(globals())

#: Stackless's message for a tasklet whose stack cannot leave its thread
C_STATE = "tasklet has C state on its stack"

# whether started tasklets may move (PyPy's continulets cannot show their
# frames: never there)
_enabled = not _PYPY


def enable_softswitch(flag: Any = _NOARG, *_more: Any) -> bool:
    """Whether a started tasklet that is paused or blocked can move to
    another thread with ``bind_thread()`` (its frames are rebuilt there);
    return the previous setting and set it to ``bool(flag)`` unless
    ``flag`` is None.  One setting for the whole process, True by default
    (False on PyPy, whose frames cannot move).  Every switch here copies C
    stack, whatever the setting: it only decides whether tasklets move.
    """
    global _enabled
    if flag is _NOARG or _more:
        raise _one_arg("enable_softswitch", flag, _more)
    old = _enabled
    if flag is not None and not _PYPY:
        _enabled = bool(flag)
    return old


def move(t: "tasklet", ts: _ThreadState) -> None:
    """Move the started tasklet ``t``, paused or blocked and not running,
    to the thread of ``ts``.  ``RuntimeError(C_STATE)`` when its frames
    cannot move (switching them off with ``enable_softswitch(False)``, C
    code in its stack), with nothing changed."""
    import _continuation
    old = t._cont
    if not _enabled or old is None or t._unrestorable:
        raise RuntimeError(C_STATE)
    kind, extra = _continuation._kind(old)
    if kind == "recipe":
        # rebuilt from a pickle, or moved, and not run since
        new, recipe = None, None
    elif kind == "suspended" and extra is not None:
        new, recipe = _capture(t, old, extra)
    else:
        raise RuntimeError(C_STATE)
    ctx = _continuation._stack_context(old) if new is not None else None
    if t._cont is not old or t._scheduled or t is t._ts.current or not t._alive:
        # its thread ran meanwhile (the capture runs Python code)
        raise RuntimeError(C_STATE)
    _unregister(t)
    # -- transaction: the tasklet's state, then the stacks (one C call at
    # the end; what it releases may run Python code, once all is moved)
    ts_old, ctx_old = t._ts, t._context
    t._ts = ts
    t._orphaned = False
    t._base = None
    if new is not None:
        t._cont = new
        if ctx is not None:
            t._context = ctx     # the rebuilt stack resumes in it (Resume)
    try:
        _continuation._transplant(old, new, recipe, ts.thread_id)
    except BaseException:
        # refused (nothing moved), unless it landed after the call
        if new is not None and _continuation._kind(old)[0] != "finished":
            t._cont, t._ts, t._context = old, ts_old, ctx_old
        _register(t)
        raise
    # the C _bootstrap keeps its call's operands there while the function
    # runs (src/stackless_run.c): its frame was left behind with the old stack
    t._args = t._kwargs = None
    _register(t)


def _capture(t: "tasklet", old: Any, run: tuple) -> tuple:
    """A fresh continulet with ``old``'s run, and the recipe of the frames
    of ``old``'s suspended stack (the same objects), or RuntimeError."""
    import _continuation_pickle as cp
    from _continuation import continulet
    policy = cp._policy(run[0])
    if policy is None:
        raise RuntimeError(C_STATE)
    keep, on_resume, on_return = policy
    try:
        (frames, exc), callee = cp.capture_ex(old, keep)
    except pickle.PicklingError:
        raise RuntimeError(C_STATE) from None
    raw = cp.frames_of(old)[0]
    if _running.entered_through_c(raw, t._func) is not None:
        raise RuntimeError(C_STATE)
    for r in raw:
        if r[8] is not None:
            # a generator running in it becomes a held shell, which pickles
            # by its function until the new stack has run (as an unpickled one)
            cp._held[r[8][0]] = cp.FunctionRef(r[0])
    args = run[1]
    recipe = cp._rebuild_recipe(frames, exc, on_resume(args, callee), on_return(args))
    new = continulet.__new__(continulet)
    continulet.__init__(new, run[0], *args)
    return new, recipe
