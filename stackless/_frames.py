"""The frames of a tasklet's stack: ``tasklet.frame`` and
``tasklet.recursion_depth``."""

from __future__ import annotations

from typing import Any

from stackless import _running
from stackless._common import _OWN_GLOBALS, _PYPY, _getframe, _own_module
from stackless._switching import _bootstrap

if not _PYPY:
    from stackless._common import _stack_frame

_own_module(globals())


def frame(t: Any) -> Any:
    """The innermost frame of the tasklet (None when not started or dead)."""
    if not t._alive or not t._started:
        return None
    ts = t._ts
    if t is ts.current:
        return _getframe(1)
    if _PYPY:
        f = t._frame
    else:
        # the continulet that holds the tasklet's suspended stack: its
        # own, or for main the running tasklet's (see _switch)
        c = ts.current._cont if t._is_main else t._cont
        f = None if c is None else _stack_frame(c)
    while f is not None and id(f.f_globals) in _OWN_GLOBALS:
        if f.f_code is _bootstrap.__code__:
            return None     # the bottom: no frame of the tasklet's own
        f = f.f_back
    return f


def recursion_depth(t: Any) -> int:
    """Number of Python frames in the tasklet's stack."""
    f = t.frame
    if f is not None and t.is_current and not t._is_main:
        # the running stack ends at its bottom frame, wherever f_back
        # leads from there (a rebuilt stack has no _bootstrap frame)
        n = _running.running_depth(f)
        if n is not None:
            return n
    n = 0
    # _bootstrap is the lowest frame of a tasklet's stack; the C one
    # has no frame, it noted the id of the frame below ours
    base = t._base
    while f is not None and f.f_code is not _bootstrap.__code__ and id(f) != base:
        if id(f.f_globals) not in _OWN_GLOBALS:
            n += 1
        f = f.f_back
    return n
