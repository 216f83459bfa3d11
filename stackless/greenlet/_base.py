"""The state of greenlets and threads in ``stackless.greenlet``, and the
greenlet attributes that do not switch (``run``, ``parent``, ``dead``,
``gr_frame``, ``gr_context``, ``repr``...).  The switching machinery and
the ``greenlet`` class itself are in ``__init__.py``."""

from __future__ import annotations

import contextvars
import gc
import _thread
import sys
from types import FrameType
from typing import Any, Callable, Optional

import _continuation

# Our _continuation (CPython) can read and replace the context of the
# running stack and of a suspended one: gr_context then works on started
# greenlets as with the C greenlet.  PyPy's cannot.
_stack_context = getattr(_continuation, "_stack_context", None)
_set_stack_context = getattr(_continuation, "_set_stack_context", None)

class error(Exception):
    """Raised on an invalid switch, like ``greenlet.error``."""


class GreenletExit(BaseException):
    """Thrown into a greenlet to kill it; returned to the parent as a value."""



_UNSTARTED, _ACTIVE, _DEAD = 0, 1, 2
#: ``_gl_run`` of a greenlet without a ``run`` of its own (None is a value).
_NO_RUN = object()


class _ThreadState:
    """Per-thread bookkeeping: current and main greenlet, tracer, kills."""

    __slots__ = ("current", "main", "origin", "trace", "kills", "slow",
                 "throwing", "alive", "undying", "conts", "exit_mark")

    def __init__(self) -> None:
        self.current: Any = None
        self.main: Any = None
        # The greenlet that switched to ``current`` (for the trace callback).
        self.origin: Any = None
        self.trace: Optional[Callable[[str, tuple], Any]] = None
        # Greenlets of this thread dropped in another thread, to be killed.
        self.kills: list = []
        # Dropped greenlets that survived GreenletExit: kept, never freed.
        self.undying: list = []
        # The continulets of this thread's live greenlets.  Holding them here
        # keeps them out of the garbage collector's unreachable sets: a
        # greenlet found in a reference cycle is then killed by its own
        # __del__, never by the continulet's finalizer, which cannot see
        # that the greenlet resurrects itself to die properly.
        self.conts: set = set()
        # True when a switch must take the slow path (tracer or kills).
        self.slow = False
        # True while the transfer into ``current`` is a throw.
        self.throwing = False
        self.alive = True
        # Once the thread has exited: the collections seen then (see _swept).
        self.exit_mark: Optional[tuple] = None


class _Local(_thread._local):
    """Thread-local storage (the C one: gevent may patch ``threading.local``)."""

    ts: Optional[_ThreadState] = None


class _ThreadWatch:
    """Lives in the thread-local storage: marks the main greenlet dead at exit."""

    __slots__ = ("ts", "ident")

    def __init__(self, ts: _ThreadState) -> None:
        self.ts = ts
        self.ident = _thread.get_ident()

    def __del__(self) -> None:
        ts = self.ts
        ts.alive = False
        main = ts.main
        if main is not None:
            main._gl_state = _DEAD
            main._gl_c = None
            main._gl_top = None
        ts.current = None
        ts.exit_mark = _collections_seen()
        ts.kills = []
        ts.undying = []
        ts.conts = set()
        get_ident = getattr(_thread, "get_ident", None)     # None at shutdown
        if get_ident is not None and get_ident() == self.ident:
            _forget_thread()


_tls = _Local()
# The info dict that gc.callbacks got at the latest start and stop of a
# collection, by phase.  The callback is this dict's C ``__setitem__``: a
# callback with a Python frame would be a point where a signal handler runs,
# and CPython reports what a gc callback raises as unraisable (a Ctrl-C
# lost).  Each call gets a new dict, and a thread state that recorded one
# keeps it alive: an identity test tells whether a collection ran since.
_last_collection: dict = {}
if hasattr(gc, "callbacks"):
    gc.callbacks.append(_last_collection.__setitem__)


def _collections_seen() -> tuple:
    return _last_collection.get("start"), _last_collection.get("stop")


def _swept(ts: _ThreadState) -> bool:
    """Whether a collection has started or ended since ``ts``'s thread
    exited: like the C greenlet's deferred clean-up of an exited thread, the
    frames of greenlets left suspended in it are reachable (gr_frame) until
    then.  (PyPy has no gc.callbacks: they stay reachable.)"""
    mark = ts.exit_mark
    if mark is None:
        return False
    start, stop = _collections_seen()
    return start is not mark[0] or stop is not mark[1]


def _forget_thread() -> None:
    """The running thread's state is going away (the accelerator, which
    caches each thread's state, replaces this; see _install_accel)."""




def _thread_of(g: _Attributes) -> Optional[_ThreadState]:
    """The thread state a greenlet belongs to (through its parents if unstarted)."""
    while g is not None:
        ts = _ts_of(g)
        if ts is not None:
            return ts
        g = _parent(g)
    return None


def _check_thread(ts: _ThreadState, target: _Attributes) -> None:
    tts = _thread_of(target)
    if tts is not ts:
        if tts is not None and not tts.alive:
            raise error("cannot switch to a different thread (which happens "
                        "to have exited)")
        expected = tts.main if tts is not None else None
        raise error("Cannot switch to a different thread\n\tCurrent:  %r\n\t"
                    "Expected: %r" % (ts.current, expected))


def _unraisable(exc: BaseException, obj: Any) -> None:
    """Report an exception that nobody can catch through
    ``sys.unraisablehook``, as the C greenlet does for a failed kill."""
    hook = getattr(sys, "unraisablehook", None)
    if hook is None:  # interpreter shutdown
        return
    try:
        hook(_UnraisableArgs((type(exc), exc, exc.__traceback__, None, obj)))
    except BaseException:
        pass  # a failing hook must not stop the kill


def _unraisable_args_type() -> type:
    """``sys.UnraisableHookArgs``, which CPython does not export by name."""
    got: list = []
    hook = sys.unraisablehook
    sys.unraisablehook = got.append

    class Probe:
        def __del__(self) -> None:
            raise RuntimeError

    try:
        Probe()
    finally:
        sys.unraisablehook = hook
    if got:
        return type(got[0])
    import collections  # PyPy: a record with the same fields
    return collections.namedtuple("UnraisableHookArgs", "exc_type exc_value "
                                  "exc_traceback err_msg object")


_UnraisableArgs = _unraisable_args_type()


class _Slots:
    """The state of a greenlet.  Private names are prefixed: subclasses
    (gevent's Greenlet has ``_run``) must not collide with them.  The
    ``__dict__`` slot is here so that ``_Attributes`` can replace its
    descriptor with one that, as in C, accepts only dicts and cannot be
    deleted."""

    __slots__ = ("__dict__", "__weakref__", "_gl_c", "_gl_parent", "_gl_run",
                 "_gl_ts", "_gl_top", "_gl_state", "_gl_ctx", "_gl_ctx_set",
                 "_gl_main")


_dict_slot = vars(_Slots)["__dict__"]
# The slots as seen by the type itself: a subclass's __getattribute__ must
# not change what the emulation reads.
_state = vars(_Slots)["_gl_state"].__get__
_parent = vars(_Slots)["_gl_parent"].__get__
_ts_of = vars(_Slots)["_gl_ts"].__get__


class _Attributes(_Slots):
    """The attributes of a greenlet that do not switch."""

    __slots__ = ()

    @property
    def run(self) -> Callable[..., Any]:
        """The callable run by the first switch(); gone once started."""
        run = self._gl_run
        if run is _NO_RUN or self._gl_state != _UNSTARTED:
            raise AttributeError("run")
        return run

    @run.setter
    def run(self, value: Callable[..., Any]) -> None:
        if self._gl_state != _UNSTARTED:
            raise AttributeError("run cannot be set after the start of the greenlet")
        self._gl_run = value

    @run.deleter
    def run(self) -> None:
        if self._gl_state != _UNSTARTED:
            raise AttributeError("run cannot be set after the start of the greenlet")
        self._gl_run = _NO_RUN

    @property
    def parent(self) -> Optional[_Attributes]:
        """The greenlet that receives this one's result; None for a main greenlet."""
        return self._gl_parent

    @parent.setter
    def parent(self, value: _Attributes) -> None:
        if self._gl_main:
            raise AttributeError("cannot set the parent of a main greenlet")
        if not isinstance(value, _Attributes):
            raise TypeError("GreenletChecker: Expected any type of greenlet, "
                            "not %s" % type(value).__name__)
        p = value
        while p is not None:
            if p is self:
                raise ValueError("cyclic parent chain")
            p = p._gl_parent
        if self._gl_ts is not None and _thread_of(value) is not self._gl_ts:
            raise ValueError("parent cannot be on a different thread")
        self._gl_parent = value

    @parent.deleter
    def parent(self) -> None:
        raise AttributeError("can't delete attribute")

    @property
    def dead(self) -> bool:
        """True once run() has finished, or once the greenlet's thread has."""
        state = self._gl_state
        return state == _DEAD or (state == _ACTIVE and not self._gl_ts.alive)

    def __bool__(self) -> bool:
        return self._gl_state == _ACTIVE and self._gl_ts.alive

    @property
    def gr_frame(self) -> Optional[FrameType]:
        """The innermost frame of a suspended greenlet, else None."""
        ts = self._gl_ts
        if self._gl_state != _ACTIVE or (ts.current is self and ts.alive) or _swept(ts):
            return None
        # the frames of a greenlet left suspended in a thread that has
        # exited stay reachable, as with the C greenlet
        return self._gl_top

    @property
    def _stack_saved(self) -> int:
        """Bytes of this greenlet's C stack saved off the stack: 0 unless it
        is suspended, and, stacks being saved lazily, 0 too while nothing
        has run at the addresses of its C frames (docs/greenlet.md)."""
        holder = self._gl_stack_holder()
        return 0 if holder is None or holder is False else holder._stack_saved

    @_stack_saved.setter
    def _stack_saved(self, value: Any) -> None:
        raise AttributeError("attribute '_stack_saved' of 'greenlet.greenlet' objects is not writable")

    @_stack_saved.deleter
    def _stack_saved(self) -> None:
        raise AttributeError("attribute '_stack_saved' of 'greenlet.greenlet' objects is not writable")

    @property
    def gr_context(self) -> Optional[contextvars.Context]:
        """The contextvars.Context this greenlet runs in (None if none yet)."""
        self._gl_check_context_thread("get")
        holder = self._gl_stack_holder()
        ctx = self._gl_ctx if holder is False else _stack_context(holder)
        if ctx is not None and ctx is self._gl_ctx and not self._gl_ctx_set and len(ctx) == 0:
            return None  # greenlet creates a context only on first use
        return ctx

    @gr_context.deleter
    def gr_context(self) -> None:
        raise AttributeError("can't delete context attribute")

    @gr_context.setter
    def gr_context(self, value: Optional[contextvars.Context]) -> None:
        if value is not None and not isinstance(value, contextvars.Context):
            raise TypeError("greenlet context must be a contextvars.Context or None")
        self._gl_check_context_thread("set")
        holder = self._gl_stack_holder()
        if holder is not False:
            _set_stack_context(value, holder)
        self._gl_ctx = value
        self._gl_ctx_set = value is not None

    def _gl_stack_holder(self) -> Any:
        """Where this started greenlet's context lives: None for the running
        stack, else the continulet holding its stack; False when it has no
        stack (unstarted, dead) or the context cannot be reached (PyPy)."""
        ts = self._gl_ts
        if (_stack_context is None or self._gl_state != _ACTIVE or ts is None
                or not ts.alive):
            return False
        if ts.current is self:
            return None
        # while another greenlet runs, the main greenlet's stack is kept in
        # the running greenlet's continulet (see "How it works")
        return ts.current._gl_c if self._gl_main else self._gl_c

    def _gl_check_context_thread(self, verb: str) -> None:
        ts = self._gl_ts
        if ts is not None and ts.current is self and ts is not _tls.ts:
            raise ValueError("cannot %s context of a greenlet that is running "
                             "in a different thread" % verb)

    def __repr__(self) -> str:
        cls = type(self)
        name = ("greenlet.greenlet" if cls.__module__ == __package__
                and cls.__qualname__ == "greenlet" else cls.__name__)
        ts = self._gl_ts
        if ts is None or not ts.alive:
            otid = "0x(nil)"
        else:
            otid = "0x%x" % id(ts)
        if self._gl_state == _ACTIVE and ts.alive:
            here = ts.current is self and ts is _tls.ts
            where = " current" if here else " suspended"
            return "<%s object at 0x%x (otid=%s)%s active started%s>" % (
                name, id(self), otid, where, " main" if self._gl_main else "")
        if self._gl_state == _UNSTARTED:
            return "<%s object at 0x%x (otid=%s) pending>" % (name, id(self), otid)
        exited = "(thread exited) " if ts is not None and not ts.alive else ""
        return "<%s object at 0x%x (otid=%s) %sdead>" % (name, id(self), otid, exited)

    @property
    def __dict__(self) -> dict:  # type: ignore[override]
        return _dict_slot.__get__(self)

    @__dict__.setter
    def __dict__(self, value: dict) -> None:
        if not isinstance(value, dict):
            raise TypeError("__dict__ must be a dictionary")
        _dict_slot.__set__(self, value)

    @__dict__.deleter
    def __dict__(self) -> None:
        raise TypeError("__dict__ may not be deleted")

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle '%s' object" % type(self).__name__)
