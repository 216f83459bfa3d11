"""Pickling and copying continulets: the Python side of src/framestate.c.

A continulet pickles in one of four states: unbound, finished, not yet
started (its callable and arguments), or suspended.  A suspended one is
captured as data, frame by frame from the bottom: the function (by
reference when ``module.qualname`` finds it with the same bytecode, else
by value with its code marshalled), the instruction it is executing (a
call, whose result is what the continulet will receive), its locals,
cells, and the values on its evaluation stack below that call, and the
exception being handled.  Unpickling makes a continulet that rebuilds
those frames on its first switch and resumes them exactly there.

Which frames can be captured (``_continuation_frames``): Python function
frames of one thread, each called by the frame below it through a plain
call (the interpreter's inlined Python-to-Python calls, or a C call that
only forwards to the Python function, such as ``f(*args)``), and
generators that the frame below runs (a ``for`` loop, ``next()``,
``send()``, ``yield from``, ``await``).  C code between two frames,
module or class-body code raise ``pickle.PicklingError`` naming the
frame.

Pickles of suspended continulets are tied to the CPython minor version
(the bytecode differs between versions) and loading them runs code, as
loading any pickle can.
"""
from __future__ import annotations

import builtins
import copy
import copyreg
import hashlib
import importlib
import marshal
import pickle
import sys
import threading
import types
import weakref
from typing import Any, Callable, Optional

import _continuation
from _continuation import continulet
# (_depths, kind and running_blocker: for stackless and the tests)
from _continuation_frames import _check, _depths, frames_of, kind, running_blocker  # noqa: F401

__all__ = ["reduce", "setstate", "capture", "capture_ex", "frames_of", "restore",
           "register_bottom", "running_blocker", "by_value", "reduce_function"]

#: what a pickle of suspended frames is tied to
VERSION = (sys.implementation.name, sys.version_info[:2])


# ---------------------------------------------------------------------------
# Functions and cells
# ---------------------------------------------------------------------------

def _digest(code: types.CodeType) -> str:
    h = hashlib.sha256(code.co_code)
    h.update(code.co_exceptiontable)
    h.update(repr((code.co_varnames, code.co_cellvars, code.co_freevars,
                   code.co_stacksize, code.co_names)).encode())
    return h.hexdigest()[:16]


def _by_reference(func: types.FunctionType) -> bool:
    mod = sys.modules.get(func.__module__)
    obj: Any = mod
    for part in func.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is func


def _load_function(module: str, qualname: str, digest: str) -> types.FunctionType:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, types.FunctionType) or _digest(obj.__code__) != digest:
        raise pickle.UnpicklingError(
            "cannot resume a frame of %s.%s: its code has changed since it was pickled"
            % (module, qualname))
    return obj


def _make_function(code: bytes, module: Optional[str], name: str, qualname: str, defaults: Any,
                   kwdefaults: Any, closure: Any, d: Any = None) -> types.FunctionType:
    g = vars(importlib.import_module(module)) if module else {"__builtins__": builtins}
    f = types.FunctionType(marshal.loads(code), g, name, defaults, closure)
    f.__qualname__ = qualname
    f.__kwdefaults__ = kwdefaults
    if d:
        f.__dict__.update(d)
    return f


def _by_value_reduce(f: types.FunctionType) -> tuple:
    """A function pickled by value: its code marshalled, its globals by
    module name (they must be a module's, or hold only builtins)."""
    module = f.__module__
    m = sys.modules.get(module) if module else None
    if m is None and set(f.__globals__) - {"__builtins__"} or m is not None and vars(m) is not f.__globals__:
        raise pickle.PicklingError("cannot pickle %r: its globals are not a module's" % (f,))
    return _make_function, (marshal.dumps(f.__code__), module if m is not None else None, f.__name__,
                            f.__qualname__, f.__defaults__, f.__kwdefaults__, f.__closure__,
                            f.__dict__ or None)


class FunctionRef:
    """A function in a frame record: pickled by reference when it can be,
    else by value (its code marshalled, its globals by module name)."""

    __slots__ = ("func",)

    def __init__(self, func: types.FunctionType) -> None:
        self.func = func

    def __reduce__(self) -> tuple:
        f = self.func
        if _by_reference(f):
            return _load_function, (f.__module__, f.__qualname__, _digest(f.__code__))
        return _by_value_reduce(f)

    def __deepcopy__(self, memo: dict) -> "FunctionRef":
        return self


def by_value(value: Any) -> Any:
    """``value``, or what pickles it by value if it is a function that
    cannot be found by name (a closure, a lambda): the values of frames,
    cells, and what stackless pickles of a tasklet."""
    if isinstance(value, types.FunctionType) and not _by_reference(value):
        return FunctionRef(value)
    return value


_wrap = by_value


def reduce_function(f: types.FunctionType) -> Any:
    """A copyreg reducer for functions: by name when ``module.qualname``
    finds them, else by value (stackless registers it, as Stackless does)."""
    if _by_reference(f):
        return f.__qualname__
    return _by_value_reduce(f)


def _unwrap(value: Any) -> Any:
    return value.func if isinstance(value, FunctionRef) else value


def _check_version(version: Any) -> None:
    if version is not None and tuple(version) != VERSION:
        raise pickle.UnpicklingError(
            "these frames were pickled on %s %d.%d and can only be resumed there, not on %s %d.%d "
            "(the bytecode differs)" % (version[0], *version[1], VERSION[0], *VERSION[1]))


def _new_cell() -> types.CellType:
    return types.CellType()


def _fill_cell(cell: types.CellType, contents: Any) -> None:
    cell.cell_contents = _unwrap(contents)


def _reduce_cell(cell: types.CellType) -> tuple:
    try:
        contents = cell.cell_contents
    except ValueError:
        return _new_cell, ()
    # contents set afterwards, so that a cell reachable from its own
    # contents (a recursive closure) pickles
    return _new_cell, (), _wrap(contents), None, None, _fill_cell


def _deepcopy_cell(cell: types.CellType, memo: dict) -> types.CellType:
    new = types.CellType()
    memo[id(cell)] = new
    try:
        contents = cell.cell_contents
    except ValueError:
        return new
    new.cell_contents = copy.deepcopy(contents, memo)
    return new


# where _continuation reads frames (this project's, on CPython; not PyPy's)
_SUPPORTED = hasattr(_continuation, "_gen_state")

if _SUPPORTED:
    copyreg.pickle(types.CellType, _reduce_cell)
    copy._deepcopy_dispatch[types.CellType] = _deepcopy_cell  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Generators and coroutines that are not running
# ---------------------------------------------------------------------------

def _spent() -> Any:
    yield None      # pragma: no cover - never runs: stands for a finished generator


def _make_gen(ref: Any, version: Any) -> Any:
    """A generator (or coroutine) of the function, not started: calling it
    runs none of its code."""
    _check_version(version)
    func = _unwrap(ref)
    co = func.__code__
    n = co.co_argcount
    kwonly = co.co_varnames[n:n + co.co_kwonlyargcount]
    return func(*([None] * n), **dict.fromkeys(kwonly))


def _set_gen(gen: Any, state: Any) -> None:
    if state == "finished":
        gen.close()
        return
    st, ip, (lv, ln, li), (sv, sn, si), exc = state
    _continuation._gen_set_state(gen, (st, ip, (tuple(map(_unwrap, lv)), tuple(ln), tuple(li)),
                                       (tuple(map(_unwrap, sv)), tuple(sn), tuple(si)), exc))


def _gen_parts(gen: Any) -> tuple:
    raw = _continuation._gen_state(gen)
    if raw is None:
        return FunctionRef(_spent), "finished"
    func, st, ip, (lv, ln, li), (sv, sn, si), exc = raw
    if not isinstance(func, types.FunctionType):
        raise pickle.PicklingError("cannot pickle %r: it has no function" % (gen,))
    return FunctionRef(func), (st, ip, (tuple(map(_wrap, lv)), ln, li),
                               (tuple(map(_wrap, sv)), sn, si), exc)


_GENERATORS = (types.GeneratorType, types.CoroutineType)

class _Capturing(threading.local):
    #: id -> (generator, function), for the generators running in the
    #: frames that a continulet's state being pickled or copied now (in
    #: this thread) holds: they are made again as held shells
    #: (_make_running_gen) that the rebuilt stack runs.  Emptied when that
    #: state is done (_Done), or by the next capture.
    def __init__(self) -> None:
        self.gens: dict = {}


_capturing = _Capturing()
#: held shell -> its function's FunctionRef (a rebuilt stack not run yet
#: pickles them again)
_held: Any = weakref.WeakKeyDictionary()


def _make_running_gen(ref: Any, version: Any) -> Any:
    """The shell of a generator that was running in a captured stack: it
    cannot run (it is running, in a stack that has not resumed yet) until
    the rebuilt stack makes its frame one of its own."""
    gen = _make_gen(ref, version)
    _continuation._gen_hold(gen)
    _held[gen] = ref if isinstance(ref, FunctionRef) else FunctionRef(ref)
    return gen


def _running_ref(gen: Any) -> Any:
    """The function of a generator running in the state being captured,
    or None if it is not one of those."""
    hit = _capturing.gens.get(id(gen))
    return hit[1] if hit is not None and hit[0] is gen else None


def _returning(value: Any) -> Any:
    """A generator that returns ``value`` when it is first sent None (what
    a rebuilt SEND runs again when the generator it ran has returned)."""
    return value
    yield       # pragma: no cover - makes this a generator function


def _reduce_gen(gen: Any) -> tuple:
    if _capturing.gens:
        ref = _running_ref(gen)
        if ref is not None:
            return _make_running_gen, (ref, VERSION)
    ref, state = _gen_parts(gen)
    return _make_gen, (ref, VERSION), state, None, None, _set_gen


def _deepcopy_gen(gen: Any, memo: dict) -> Any:
    if _capturing.gens:
        ref = _running_ref(gen)
        if ref is not None:
            new = _make_running_gen(ref, VERSION)
            memo[id(gen)] = new
            return new
    ref, state = _gen_parts(gen)
    new = _make_gen(ref, VERSION)
    memo[id(gen)] = new
    _set_gen(new, copy.deepcopy(state, memo))
    return new


class _Done:
    """The last item of a captured continulet's state: once pickle or
    deepcopy reaches it, the generators running in that state are pickled
    (all references to them are memoized): forget them."""

    __slots__ = ()

    def __reduce__(self) -> tuple:
        _capturing.gens.clear()
        return _none, ()

    def __deepcopy__(self, memo: dict) -> None:
        _capturing.gens.clear()
        return None


def _none() -> None:
    return None


for _t in (types.GeneratorType, types.CoroutineType) if _SUPPORTED else ():
    copyreg.pickle(_t, _reduce_gen)
    copy._deepcopy_dispatch[_t] = _deepcopy_gen  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Capturing frames (which ones can be: _continuation_frames.py)
# ---------------------------------------------------------------------------

def capture(c: continulet, keep: Optional[Callable[[list], tuple]] = None) -> tuple:
    """The suspended frames of ``c`` as a picklable recipe (frames, exc).

    ``keep(frames)``, given the raw frame list, may say which frames to
    keep, as a range (lo, hi): the top kept frame's call in progress is
    then what the next switch returns into, the frames above it are
    dropped, and so are those below ``lo`` (a library's run function, which
    the recipe's on_return stands for).  It may add a third item, true
    when the frames above ``hi`` are a trace function that the library
    knows was called before an instruction (a line or opcode event): the
    top kept frame then need not be in a call, and resumes at that
    instruction."""
    return capture_ex(c, keep)[0]


def capture_ex(c: continulet, keep: Optional[Callable[[list], tuple]] = None,
               note: bool = False) -> tuple:
    """capture(), and what the top kept frame was calling (a function, a
    C function or method, or None if that cannot be told).  ``note``: the
    capture is about to be pickled or copied: the generators running in it
    pickle as shells that the rebuilt stack runs (_capturing.gens)."""
    all_raw, exc = frames_of(c)
    kept = keep(all_raw) if keep is not None else (0, len(all_raw))
    lo, hi = kept[:2]
    stopped = len(kept) > 2 and bool(kept[2])
    n = hi - lo
    if n < 1 and keep is None:
        raise pickle.PicklingError("the continulet has no Python frame to pickle")
    if n > 0:
        sites, depths, values = _check(
            all_raw[lo:], n, lambda depths: _continuation._frame_values(c, [0] * lo + depths)[lo:],
            stopped=stopped)
    if hi < len(all_raw) and (n == 0 or not all_raw[hi][5]):
        callee = all_raw[hi][0]     # an inlined Python call, or the first frame dropped
    elif n > 0 and depths[-1] > sites[-1][0]:
        callee = next((v for v in values[-1][1][0][sites[-1][0]:sites[-1][0] + 2] if v is not None), None)
    else:
        callee = None
    frames = []
    for k, raw in enumerate(all_raw[lo:hi]):
        func, gen = raw[0], raw[8]
        base, nxt, wait, default = sites[k]
        (lv, ln, li), (sv, sn, si) = values[k]
        sv, sn, si = sv[:base], tuple(i for i in sn if i < base), tuple(i for i in si if i < base)
        if gen is not None and note:
            _capturing.gens[id(gen[0])] = (gen[0], FunctionRef(func))
        frames.append((FunctionRef(func) if gen is None else gen[0], nxt,
                       (tuple(_wrap(v) for v in lv), ln, li),
                       (tuple(_wrap(v) for v in sv), sn, si),
                       wait, _wrap(default), None if gen is None else gen[1]))
    return (tuple(frames), exc), callee


def _rebuild_recipe(frames: tuple, exc: Any, on_resume: Any = None, on_return: Any = None) -> tuple:
    out = []
    for ref, nxt, (lv, ln, li), (sv, sn, si), wait, default, gexc in frames:
        out.append((_unwrap(ref), nxt, (tuple(_unwrap(v) for v in lv), tuple(ln), tuple(li)),
                    (tuple(_unwrap(v) for v in sv), tuple(sn), tuple(si)),
                    wait, _unwrap(default), gexc))
    return tuple(out), exc, on_resume, on_return


# ---------------------------------------------------------------------------
# continulet.__reduce__ / __setstate__
# ---------------------------------------------------------------------------

#: run function -> (keep, on_resume, on_return)
_bottoms: dict = {}
if "stackless._running" in sys.modules:         # the tasklet policy
    _bottoms.update(sys.modules["stackless._running"].BOTTOMS)


def register_bottom(run: Any, keep: Callable[[list], tuple],
                    on_resume: Callable[[tuple, Any], Any],
                    on_return: Optional[Callable[[tuple], Any]] = None) -> None:
    """Pickle continulets whose run function (the callable given to the
    continulet: a library's own, in Python or C) is ``run`` with
    ``capture(c, keep)``.  From the run's arguments (after the continulet)
    the rebuilt continulet gets ``on_resume(args, callee)``, what it calls
    first, given what the top kept frame was calling, and
    ``on_return(args)``, what it calls with the result of the bottom kept
    frame in place of the run function's own code below it (see
    _continuation._set_frames).  The copy's run function is ``run`` too."""
    _bottoms[run] = (keep, on_resume, on_return)


def _policy(run: Any) -> Any:
    try:
        return _bottoms.get(run)
    except TypeError:       # an unhashable callable: no library's
        return None


def _capture_for_pickle(c: continulet, run: Any) -> tuple:
    """(frames, exc, on_resume, on_return, run) of a suspended continulet
    whose run is (callable, args), or None for a thread's main stack."""
    policy = _policy(run[0]) if run is not None else None
    if policy is None:
        return capture_ex(c, None, True)[0] + (None, None, None)
    keep, on_resume, on_return = policy
    (frames, exc), callee = capture_ex(c, keep, True)
    args = run[1]
    return (frames, exc, on_resume(args, callee),
            on_return(args) if on_return is not None else None, run)


def _finished_body(c: continulet) -> None:
    return None


def _new(cls: type, version: Any = None) -> continulet:
    _check_version(version)
    return cls.__new__(cls)


def reduce(c: continulet) -> tuple:
    """continulet.__reduce__: (_new, (cls, version), state)."""
    what, extra = _continuation._kind(c)
    inst = getattr(c, "__dict__", None) or None
    version = None
    _capturing.gens.clear()
    if what == "unstarted":
        state: tuple = (what, extra)
    elif what == "suspended":
        state = (what, _capture_for_pickle(c, extra))
        version = VERSION
    elif what == "recipe":
        recipe, func, args = extra
        run = (func, args) if func is not _finished_body else None
        state = ("suspended", recipe_state(recipe) + (run,))
        for rec in recipe[0]:
            if isinstance(rec[0], _GENERATORS):
                _capturing.gens[id(rec[0])] = (rec[0], _held[rec[0]])
        version = VERSION
    else:
        state = (what, None)
    if _capturing.gens:
        return _new, (type(c), version), (state, inst, _Done())
    return _new, (type(c), version), (state, inst)


def recipe_state(recipe: tuple) -> tuple:
    """The picklable form of a recipe given to _set_frames (the inverse of
    _rebuild_recipe)."""
    frames, exc, on_resume, on_return = recipe
    return (tuple((f if isinstance(f, _GENERATORS) else FunctionRef(f), nxt,
                   (tuple(map(_wrap, lv)), ln, li), (tuple(map(_wrap, sv)), sn, si),
                   wait, _wrap(default), gexc)
                  for f, nxt, (lv, ln, li), (sv, sn, si), wait, default, gexc in frames),
            exc, on_resume, on_return)


def restore(c: continulet, state: tuple) -> None:
    """Make the fresh continulet ``c`` resume the captured frames ``state``
    (frames, exc, on_resume, on_return, run) at its first switch; ``run``
    (callable, args) or None is what it is initialized with (the callable
    never runs: the frames and on_return stand for it)."""
    frames, exc, on_resume, on_return, run = state
    if run is None:
        continulet.__init__(c, _finished_body)
    else:
        continulet.__init__(c, run[0], *run[1])
    _continuation._set_frames(c, _rebuild_recipe(frames, exc, on_resume, on_return))


def setstate(c: continulet, state: tuple) -> None:
    """continulet.__setstate__."""
    (what, extra), inst = state[:2]     # (then _Done's None)
    if inst:
        c.__dict__.update(inst)
    if what == "unbound":
        return
    if what == "finished":
        continulet.__init__(c, _finished_body)
        continulet.switch(c)
    elif what == "unstarted":
        func, args, kwargs = extra
        continulet.__init__(c, func, *args, **(kwargs or {}))
    elif what == "suspended":
        restore(c, extra)
    else:
        raise pickle.UnpicklingError("unknown continulet state %r" % (what,))
