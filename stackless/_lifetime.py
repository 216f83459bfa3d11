"""Lifetime: a started tasklet lives as long as something refers to it.

Each thread's registry (``_alive_registry``, and its thread state's
``alive``) holds every live tasklet of the thread, in the order they were
bound, so that the thread's end and the interpreter's exit can kill them.
It holds an unstarted tasklet strongly, and a started one weakly: from the
moment its continulet is made (:func:`_new_cont`).  Here it is a dict of
the tasklets and of weak references to them, by id().  The accelerator
replaces the functions below that use it (``_register``, ``_unregister``,
``_weaken``, ``_hold`` and ``_live_tasklets``) with a list threaded
through the tasklets (src/stackless_registry.c): no entry, key or weak
reference object per tasklet.
A started tasklet that nobody refers to any more (its stack refers to it,
through its continulet, so that is a reference cycle) is then found by the
garbage collector, and the finalizer of its continulet (a
:class:`_TaskletCont`) asks ``__continulet_keep__`` what becomes of it.  As
in Stackless 3.7 with hard switching:

* a *paused* one is killed (``TaskletExit``, its ``finally`` runs) right
  after that collection, if the collection ran in the tasklet's own thread
  (else it is held strongly from then on, and dies with its thread), and
  that thread was not in the middle of a stackless operation (else after
  a later collection of the thread, or at its end);
* one *blocked* on a channel that went with it is held strongly from then
  on, and killed when its thread ends or at exit.

The collector may not switch (``_continuation`` refuses), so that method
only keeps the tasklet (it "resurrects" it, and with it everything its
stack refers to: nothing of it is cleared), and asks ``_continuation`` to
call :func:`_kill_doomed` once the collection is over.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any, Callable

from _continuation import continulet

from stackless._common import _PYPY, _get_ident, _may_switch, _own_module
from stackless._running import _internal

if not _PYPY:
    from _continuation import _after_collection, _deferring, _frames  # type: ignore

if TYPE_CHECKING:
    from stackless._tasklet import tasklet

_own_module(globals())

_ref = weakref.ref

# Every tasklet that has been bound and is not dead, per thread id, by id():
# the tasklet itself, or a weak reference to it once it has started.  (With
# the accelerator, per thread id, its registry object.)
_alive_registry: "dict[int, Any]" = {}

# Stackless 3.7 kills a dropped paused tasklet that catches TaskletExit and
# pauses again ten times in a row; then it lives on (until exit).
_KILL_TRIES = 10

# The paused tasklets that a collection of their thread dropped, per thread
# id; each is held strongly by its registry meanwhile.
_doomed: "dict[int, list[tasklet]]" = {}


class _TaskletCont(continulet):
    """The continulet of a started tasklet: it knows its tasklet, and keeps
    a dropped paused or blocked one (see the module)."""

    __slots__ = ("tasklet",)
    # (found at once: continulet.__init__ looks it up on subclasses, and a
    # failed lookup costs an AttributeError)
    __continulet_unlinked__ = False

    def _keep_me(self) -> bool:
        """Asked by the continulet's finalizer (docs/continuation.md): True
        when the tasklet lives on, the stack left as it is."""
        t = self.tasklet
        return t is not None and _keep(self, t)

    # (a signal in it is raised again later, and it asks again: src/deferred.c)
    __continulet_keep__ = _keep_me if _PYPY else _deferring(_keep_me)


def _register(t: "tasklet") -> None:
    ts = t._ts
    d = ts.alive
    if d is None:
        d = ts.alive = _alive_registry.setdefault(ts.thread_id, {})
    d[id(t)] = t


def _unregister(t: "tasklet") -> None:
    d = t._ts.alive
    if d is not None:
        d.pop(id(t), None)
    _unlink(t)


def _live_tasklets(thread_id: int) -> "list[tasklet]":
    """The live tasklets of a thread, in the order they were bound."""
    d = _alive_registry.get(thread_id)
    if not d:
        return []
    out = []
    for v in list(d.values()):
        if type(v) is _ref:
            v = v()
        if v is not None:
            out.append(v)
    return out


def _new_cont(bootstrap: Callable, t: "tasklet") -> continulet:
    """The continulet that starts ``t``: from now on its registry holds it
    weakly."""
    if _PYPY:
        return continulet(bootstrap, t)     # (PyPy's would unwind it at once)
    c = _TaskletCont(bootstrap, t)
    c.tasklet = t
    _weaken(t)
    return c


def _weaken(t: "tasklet") -> None:
    """Its registry holds ``t`` (started) weakly from now on, if it holds
    it at all."""
    d = t._ts.alive
    if d is not None and d.get(id(t)) is t:
        d[id(t)] = _ref(t)


def _hold(t: "tasklet") -> bool:
    """Its registry holds ``t`` strongly from now on, if it holds it at
    all: True then."""
    d = t._ts.alive
    v = d.get(id(t)) if d is not None else None
    # (v is t: kept by an earlier call that a signal cut short)
    if type(v) is not _ref and v is not t:
        return False
    d[id(t)] = t
    return True


def _keep(c: _TaskletCont, t: "tasklet") -> bool:
    """``c``, ``t``'s continulet, is being finalized: True when ``t`` lives
    on (held by its registry again), False when ``c`` may go."""
    if t._cont is not c or not t._alive or t._ts.ended or not c.is_pending() or not _hold(t):
        return False
    # As in Stackless 3.7, only a collection in the tasklet's own thread
    # kills it; one that another thread's collection found dies with its
    # thread.
    if not t._blocked and not t._scheduled and t._ts.thread_id == _get_ident():
        if not _doomed:
            _after_collection(_kill_doomed)
        doomed = _doomed.setdefault(t._ts.thread_id, [])
        if not any(x is t for x in doomed):
            doomed.append(t)
    return True


def _unlink(t: "tasklet") -> None:
    """``t`` is dead: its continulet forgets it (no cycle left to collect)."""
    c = t._cont
    if type(c) is _TaskletCont:
        c.tasklet = None


def _in_schedule_callback() -> bool:
    """Whether the accelerator runs the schedule callback (it has no frame
    here to say so, see _install_accel)."""
    return False


def _at_a_safe_point(ts: Any) -> bool:
    """Whether this thread (its scheduler ``ts``) may kill a tasklet now:
    it may switch, and no stackless operation is under way.  The running
    tasklet is then ``rq[0]``, nothing waits to be launched, and none of
    the package's own frames is on the running stack (from its bottom,
    which may be the Python ``_bootstrap``, up to the frame the collection
    started in).  Its bottom, not the first frame of the package that
    ``f_back`` leads to: a resumed stack's bottom frame links to the frame
    that switched to it, on another stack.  The accelerator's operations
    have no frames: they leave the queue or ``ts.current`` changed while
    they run (the stress harness met a kill inside ``run()``, which let
    another tasklet run in main's place)."""
    if not _may_switch() or sys.is_finalizing() or _in_schedule_callback():
        return False
    cur = ts.current
    if (not ts.rq or ts.rq[0] is not cur or not cur._scheduled or cur._blocked
            or ts.launch is not None or ts.trap):
        return False
    try:
        records = _frames(sys._getframe(2))[0]      # (below _kill_doomed)
    except Exception:
        return False
    return not any(_internal(r[1]) for r in records[1:]) and (
        not records or not _internal(records[0][1]) or records[0][1].co_name == "_bootstrap")


def _kill_doomed() -> None:
    """Called once a collection that found dropped paused tasklets is over
    (by ``_continuation``'s gc.callbacks hook): kill this thread's, unless
    it is in the middle of a stackless operation.  What is left waits for
    the thread's next collection.  An asynchronous exception out of here
    is raised again later and this is called again (src/deferred.c): the
    tasklets not killed yet go back to ``_doomed`` first."""
    tid = _get_ident()
    doomed: list = []
    try:
        waiting = _doomed.get(tid)
        if waiting and _at_a_safe_point(waiting[0]._ts):
            doomed = waiting
            del _doomed[tid]            # (no call: no signal between the two)
        if _doomed:
            _after_collection(_kill_doomed)
        if doomed:
            # in the order they were bound (as Stackless 3.7), not the order
            # in which the collector met them
            order = {id(x): i for i, x in enumerate(_live_tasklets(tid))}
            doomed.sort(key=lambda t: order.get(id(t), -1))
            while doomed:
                _kill_dropped(doomed[0])
                del doomed[0]
    except BaseException:
        if doomed:
            if tid in _doomed:
                _doomed[tid][:0] = doomed
            else:
                _doomed[tid] = doomed
        raise


def _kill_dropped(t: "tasklet") -> None:
    for _ in range(_KILL_TRIES):
        if not t._alive or t._scheduled or t._blocked or t._ts.ended:
            break
        try:
            t.kill()
        except BaseException as e:
            # (what its finally raised, when this is main; nothing raises
            # out of a collection)
            from stackless._switching import _write_unraisable  # (it imports us)
            _write_unraisable(e, "Error in killing a dropped tasklet")
    # One that survived stays held strongly, until its thread ends: its
    # continulet's finalizer has run (it runs once).

