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

Which frames can be captured: Python function frames of one thread, each
called by the frame below it through a plain call (the interpreter's
inlined Python-to-Python calls, or a C call that only forwards to the
Python function, such as ``f(*args)``).  A generator running in the
stack, another C function between two frames, module or class-body code
raise ``pickle.PicklingError`` naming the frame.

Pickles of suspended continulets are tied to the CPython minor version
(the bytecode differs between versions) and loading them runs code, as
loading any pickle can.
"""
from __future__ import annotations

import builtins
import copy
import copyreg
import dis
import functools
import hashlib
import importlib
import marshal
import pickle
import sys
import types
import weakref
from typing import Any, Callable, Optional

import _continuation
from _continuation import continulet

__all__ = ["reduce", "setstate", "capture", "capture_ex", "frames_of", "restore",
           "register_bottom", "running_blocker", "by_value", "reduce_function"]

#: what a pickle of suspended frames is tied to
VERSION = (sys.implementation.name, sys.version_info[:2])

_CALLS = frozenset(n for n in ("CALL", "CALL_KW", "CALL_FUNCTION_EX", "BINARY_SUBSCR")
                   if n in dis.opmap)
_NO_FALLTHROUGH = frozenset(n for n in (
    "RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS", "RERAISE", "JUMP_FORWARD",
    "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "JUMP_ABSOLUTE", "JUMP",
    "JUMP_NO_INTERRUPT", "INTERPRETER_EXIT") if n in dis.opmap)
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_FRAME_FUNCTION, _FRAME_GENERATOR = 0, 1
#: how a frame takes the outcome of the frame above it (src/framestate.c):
#: a plain call, or the instruction that runs the generator above it
_WAIT_CALL, _WAIT_ITER, _WAIT_SEND, _WAIT_GEN_CALL, _WAIT_GEN_DEFAULT = range(5)


# ---------------------------------------------------------------------------
# Stack depths: how many values each instruction finds on the stack
# ---------------------------------------------------------------------------

_depth_cache: dict = {}


def _instructions(code: types.CodeType) -> list:
    return [i for i in dis.get_instructions(code) if i.opname != "CACHE"]


def _depths(code: types.CodeType) -> tuple:
    """(instructions, {offset: stack depth before it}) by walking the
    code's control flow with dis.stack_effect; exception handlers start at
    the depth their table entry gives, plus the exception (and lasti)."""
    hit = _depth_cache.get(code)
    if hit is not None:
        return hit
    insts = _instructions(code)
    index = {ins.offset: k for k, ins in enumerate(insts)}
    depth: dict = {}
    work = [(0, 0)]
    for e in dis._parse_exception_table(code):  # type: ignore[attr-defined]
        work.append((e.target, e.depth + (1 if e.lasti else 0) + 1))
    while work:
        off, d = work.pop()
        k = index.get(off)
        while k is not None:
            ins = insts[k]
            if ins.offset in depth:
                break
            depth[ins.offset] = d
            arg = ins.arg if ins.opcode >= dis.HAVE_ARGUMENT else None
            if ins.opcode in _JUMPS:
                work.append((ins.argval, d + dis.stack_effect(ins.opcode, arg, jump=True)))
            if ins.opname in _NO_FALLTHROUGH:
                break
            if ins.opname == "RETURN_GENERATOR":
                d += 1      # resumed with the value sent in (3.13 counts it, 3.11 not)
            else:
                d += dis.stack_effect(ins.opcode, arg, jump=False)
            k = k + 1 if k + 1 < len(insts) else None
    hit = (insts, depth, index)
    _depth_cache[code] = hit
    return hit


def call_site(code: types.CodeType, ip: int) -> tuple:
    """Where a frame whose instruction pointer holds code unit ``ip`` is in a
    call: (call instruction, depth before it, base depth below its operands,
    (code unit of the call, code unit of the next instruction))."""
    insts, depth, index = _depths(code)
    k = max((j for j, ins in enumerate(insts) if ins.offset <= 2 * ip), default=None)
    if k is not None and insts[k].opname == "PRECALL":
        k += 1      # 3.11: a specialized PRECALL makes the call itself
    if k is None or insts[k].opname not in _CALLS or insts[k].offset not in depth:
        raise ValueError("not in a call")
    ins = insts[k]
    d = depth[ins.offset]
    arg = ins.arg if ins.opcode >= dis.HAVE_ARGUMENT else None
    base = d + dis.stack_effect(ins.opcode, arg, jump=False) - 1
    if k > 0 and insts[k - 1].opname == "PRECALL":
        d = depth[insts[k - 1].offset]     # 3.11: the operands as they really lie
    # where the call is, and where the frame goes on once it has returned
    nxt = (ins.offset // 2, insts[k + 1].offset // 2)
    return ins, d, base, nxt


def gen_site(code: types.CodeType, ip: int) -> tuple:
    """Where a frame that runs the generator above it in FOR_ITER or SEND
    (``for``, ``yield from``, ``await``) is: (wait, depth before the
    instruction, base depth below the generator, (its code unit, the next
    instruction's))."""
    insts, depth, index = _depths(code)
    k = max((j for j, ins in enumerate(insts) if ins.offset <= 2 * ip), default=None)
    if k is None or insts[k].opname not in ("FOR_ITER", "SEND") or insts[k].offset not in depth:
        raise ValueError("not running a generator")
    ins = insts[k]
    d = depth[ins.offset]
    wait = _WAIT_ITER if ins.opname == "FOR_ITER" else _WAIT_SEND
    # FOR_ITER finds [..., generator], SEND [..., generator, value sent]
    # (3.15: a slot of its own above the generator in both); the value sent
    # is not kept: the frame resumes with what the generator yields
    base = d if wait == _WAIT_ITER else d - 1
    return wait, d, base, (ins.offset // 2, insts[k + 1].offset // 2)


_GEN_METHODS = frozenset(("send", "throw", "__next__"))


def _gen_call(ops: tuple, gen: Any) -> Optional[tuple]:
    """(wait, default) if the operands of a call (callable and self or
    NULL, then the arguments) run the generator ``gen`` as ``next(gen)``,
    ``next(gen, default)``, ``gen.send(v)``, ``gen.throw(...)`` or
    ``gen.__next__()`` do; None for any other call (``list(gen)``...)."""
    if len(ops) < 2:
        return None
    a, b, args = ops[0], ops[1], list(ops[2:])
    if a is None:       # 3.11 puts the NULL first
        a, b = b, None
    if b is not None:   # an unbound method and its self
        args.insert(0, b)
    elif getattr(a, "__self__", None) is gen:   # a bound method
        args.insert(0, gen)
    if not args or args[0] is not gen:
        return None
    if a is builtins.next:
        if len(args) == 2:
            return _WAIT_GEN_DEFAULT, args[1]
        return (_WAIT_GEN_CALL, None) if len(args) == 1 else None
    if getattr(a, "__name__", None) in _GEN_METHODS and (
            getattr(a, "__self__", None) is gen or getattr(a, "__objclass__", None) is type(gen)):
        return _WAIT_GEN_CALL, None
    return None


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

#: id -> (generator, function), for the generators running in the frames that a
#: continulet's state being pickled or copied now holds: they are made
#: again as held shells (_make_running_gen) that the rebuilt stack runs.
#: Emptied when that state is done (_Done), or by the next capture.
_running_gens: dict = {}
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
    hit = _running_gens.get(id(gen))
    return hit[1] if hit is not None and hit[0] is gen else None


def _returning(value: Any) -> Any:
    """A generator that returns ``value`` when it is first sent None (what
    a rebuilt SEND runs again when the generator it ran has returned)."""
    return value
    yield       # pragma: no cover - makes this a generator function


def _reduce_gen(gen: Any) -> tuple:
    if _running_gens:
        ref = _running_ref(gen)
        if ref is not None:
            return _make_running_gen, (ref, VERSION)
    ref, state = _gen_parts(gen)
    return _make_gen, (ref, VERSION), state, None, None, _set_gen


def _deepcopy_gen(gen: Any, memo: dict) -> Any:
    if _running_gens:
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
        _running_gens.clear()
        return _none, ()

    def __deepcopy__(self, memo: dict) -> None:
        _running_gens.clear()
        return None


def _none() -> None:
    return None


for _t in (types.GeneratorType, types.CoroutineType) if _SUPPORTED else ():
    copyreg.pickle(_t, _reduce_gen)
    copy._deepcopy_dispatch[_t] = _deepcopy_gen  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Capturing frames
# ---------------------------------------------------------------------------

def _describe(func: Any, code: types.CodeType, ip: int) -> str:
    name = getattr(func, "__qualname__", None) or code.co_qualname
    try:
        line = next((ln for start, end, ln in code.co_lines() if start <= 2 * ip < end), None)
    except Exception:
        line = None
    return "%s (%s, line %s)" % (name, code.co_filename, line)


def kind(c: continulet) -> str:
    """'unbound', 'finished', 'unstarted', 'recipe' (rebuilt frames that
    have not run yet) or 'suspended'."""
    return _continuation._kind(c)[0]


def frames_of(c: continulet) -> tuple:
    """The raw frames of the stack ``c`` holds, bottom first, and the
    exception being handled there (see _continuation._frames)."""
    return _continuation._frames(c)


def _calls_through(caller_stack: tuple, base: int, callee: Any) -> bool:
    """Whether the operands of the caller's call, from ``base`` on, hold the
    callee's function (directly, as a bound method or in a functools.partial):
    the C code between
    the two frames is then only the call machinery."""
    for v in caller_stack[0][base:base + 2]:
        if v is callee or getattr(v, "__func__", None) is callee or (
                isinstance(v, functools.partial) and v.func is callee):
            return True
    return False


def capture(c: continulet, keep: Optional[Callable[[list], tuple]] = None) -> tuple:
    """The suspended frames of ``c`` as a picklable recipe (frames, exc).

    ``keep(frames)``, given the raw frame list, may say which frames to
    keep, as a range (lo, hi): the top kept frame's call in progress is
    then what the next switch returns into, the frames above it are
    dropped, and so are those below ``lo`` (a library's run function, which
    the recipe's on_return stands for)."""
    return capture_ex(c, keep)[0]


def _blocked_by(func: Any, code: types.CodeType, ip: int, kind: int, gen: Any = None) -> Optional[str]:
    """Why a frame of this kind cannot be captured, or None."""
    if kind == _FRAME_GENERATOR:
        if gen is None or not isinstance(gen[0], (types.GeneratorType, types.CoroutineType)):
            return ("cannot pickle: an asynchronous generator is running in it: %s"
                    % _describe(func, code, ip))
        return None
    if kind != _FRAME_FUNCTION or not isinstance(func, types.FunctionType):
        what = "class-body" if code.co_flags & 0x3 == 0 and code.co_name != "<module>" else "module-level"
        return ("cannot pickle: %s is %s code, not the frame of a function"
                % (_describe(func, code, ip), what))
    return None


def _gen_wait(raw: list, k: int, all_raw: list) -> Optional[tuple]:
    """How frame k runs the generator frame above it, if there is one:
    (wait, default, depth before, base, nxt, values to read, depths the
    interpreter may report exactly); a rebuilt frame's wait is its own."""
    above = all_raw[k + 1] if k + 1 < len(all_raw) else None
    if above is None or above[6] != _FRAME_GENERATOR:
        return None
    func, code, ip, depth, operands, from_c, kind, driven, gen = raw[k]
    own = driven if above[7] else None
    err = pickle.PicklingError
    try:
        wait, d, base, nxt = gen_site(code, ip)
    except ValueError:
        wait = None
    if wait is not None and (own is None or own[0] == wait):
        exact = (d,) if wait == _WAIT_ITER else (d, d - 1)
        return wait, None, d, base, nxt, base, exact
    try:
        ins, before, base, nxt = call_site(code, ip)
    except ValueError:
        raise err("cannot pickle: %s runs the generator %s through C code"
                  % (_describe(func, code, ip), _describe(above[0], above[1], above[2]))) from None
    if own is not None:
        return own[0], own[1], before, base, nxt, base, (base,)
    # the call's operands tell what it is
    return None, None, before, base, nxt, before, (before, base)


def _check(all_raw: list, n: int, read_values: Callable[[list], list],
           running: bool = False) -> tuple:
    """Check that the bottom ``n`` frames of ``all_raw`` can be captured:
    Python function frames, each called by the one below through a plain
    call, or generators run by the one below (``for``, ``next()``,
    ``send()``, ``yield from``, ``await``).  Returns (sites, depths,
    values) for the capture; a site is (base, nxt, wait, default).

    ``running``: the frames of the running stack, up to the frame that
    asks; that top frame need not be in a call, and a module-level frame
    may lie at the bottom (a main stack's script)."""
    err = pickle.PicklingError
    raw = all_raw[:n]
    sites: list = []
    depths = []
    waits = []
    for k, (func, code, ip, depth, operands, from_c, kind, driven, gen) in enumerate(raw):
        top = running and k == n - 1
        why = _blocked_by(func, code, ip, kind, gen)
        if why is not None and not (running and k == 0 and kind != _FRAME_GENERATOR):
            raise err(why)
        if top:
            sites.append((0, None, _WAIT_CALL, None))
            depths.append(0)
            waits.append(None)
            continue
        above = all_raw[k + 1] if k + 1 < len(all_raw) else None
        gw = _gen_wait(raw, k, all_raw)
        waits.append(gw)
        if gw is not None:
            wait, default, before, base, nxt, read, exact = gw
            if depth is not None and depth not in exact:
                raise err("cannot pickle %s: its stack depth is %d, the analysis says %s"
                          % (_describe(func, code, ip), depth, exact))
            sites.append((base, nxt, wait, default))
            depths.append(read)
            continue
        try:
            ins, before, base, nxt = call_site(code, ip)
        except ValueError:
            raise err("cannot pickle: %s is not in a call" % _describe(func, code, ip)) from None
        if above is not None and above[7]:
            operands = 0    # a rebuilt frame waits at its base depth
        if depth is not None:
            exact = depth - (before - base) if operands else depth
            if exact != base:
                raise err("cannot pickle %s: its stack depth is %d, the analysis says %d"
                          % (_describe(func, code, ip), exact, base))
        sites.append((base, nxt, _WAIT_CALL, None))
        # frames whose callee came through C: read the operands too, to see
        # that only the call machinery lies between them (and for the top
        # frame kept, to tell what it was calling)
        calls_c = above[5] and not above[7] if above is not None else operands
        depths.append(before if calls_c else base)
    values = read_values(depths)
    for k in range(n - 1):
        gw = waits[k]
        if gw is None:
            continue
        gen = all_raw[k + 1][8][0]
        wait, _default, before, base, nxt, read, _exact = gw
        stack = values[k][1][0]
        func, code, ip = raw[k][:3]
        if wait is None:
            mode = _gen_call(stack[base:before], gen)
            if mode is None:
                raise err("cannot pickle: %s runs the generator %s through C code; only for "
                          "loops, next(), send(), throw(), yield from and await can be restored"
                          % (_describe(func, code, ip), _describe(all_raw[k + 1][0], all_raw[k + 1][1],
                                                                  all_raw[k + 1][2])))
            sites[k] = (base, nxt) + mode
        else:
            # the slot that holds it, near the top
            slot = next((i for i in range(base - 1, max(base - 3, -1), -1) if stack[i] is gen), None)
            if slot is None:
                raise err("cannot pickle: %s runs the generator %s, which is not on its stack"
                          % (_describe(func, code, ip), _describe(*all_raw[k + 1][:3])))
            sites[k] = (base, nxt, wait, slot)
    for k in range(1, n):
        func, code, ip, _, _, from_c, kind, driven, _gen = raw[k]
        if from_c and not driven and kind != _FRAME_GENERATOR:
            below = raw[k - 1]
            if not _calls_through(values[k - 1][1], sites[k - 1][0], func):
                raise err("cannot pickle: %s calls %s through C code; only Python-to-Python "
                          "calls can be restored" % (_describe(below[0], below[1], below[2]),
                                                    _describe(func, code, ip)))
    return sites, depths, values


def _runpy_frames(raw: list) -> int:
    """How many frames at the bottom of a main stack are runpy's, running
    a module as the script (``python -m``): that stack starts at the
    module's frame, as a script's does."""
    runpy = sys.modules.get("runpy")
    run_code = getattr(runpy, "_run_code", None)
    # ("<frozen runpy>" where it is frozen)
    path = getattr(getattr(run_code, "__code__", None), "co_filename", None)
    k = 0
    while k < len(raw) and path is not None and raw[k][1].co_filename == path:
        k += 1
    return k if 0 < k < len(raw) and raw[k][1].co_name == "<module>" else 0


def running_blocker(frame: types.FrameType) -> Optional[str]:
    """None if this thread's running stack, from its bottom frame up to
    ``frame``, holds only frames that a capture accepts (the rule of
    ``restorable`` for a running tasklet), else why not."""
    try:
        raw, _ = _continuation._frames(frame)
        lo = _runpy_frames(raw)
        _check(raw[lo:], len(raw) - lo,
               lambda depths: _continuation._frame_values(frame, [0] * lo + depths)[lo:], running=True)
    except pickle.PicklingError as e:
        return str(e)
    return None


def capture_ex(c: continulet, keep: Optional[Callable[[list], tuple]] = None,
               note: bool = False) -> tuple:
    """capture(), and what the top kept frame was calling (a function, a
    C function or method, or None if that cannot be told).  ``note``: the
    capture is about to be pickled or copied: the generators running in it
    pickle as shells that the rebuilt stack runs (_running_gens)."""
    all_raw, exc = frames_of(c)
    lo, hi = keep(all_raw) if keep is not None else (0, len(all_raw))
    n = hi - lo
    if n < 1 and keep is None:
        raise pickle.PicklingError("the continulet has no Python frame to pickle")
    if n > 0:
        sites, depths, values = _check(
            all_raw[lo:], n, lambda depths: _continuation._frame_values(c, [0] * lo + depths)[lo:])
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
            _running_gens[id(gen[0])] = (gen[0], FunctionRef(func))
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
    kind, extra = _continuation._kind(c)
    inst = getattr(c, "__dict__", None) or None
    version = None
    _running_gens.clear()
    if kind == "unstarted":
        state: tuple = (kind, extra)
    elif kind == "suspended":
        state = (kind, _capture_for_pickle(c, extra))
        version = VERSION
    elif kind == "recipe":
        recipe, func, args = extra
        run = (func, args) if func is not _finished_body else None
        state = ("suspended", recipe_state(recipe) + (run,))
        for rec in recipe[0]:
            if isinstance(rec[0], _GENERATORS):
                _running_gens[id(rec[0])] = (rec[0], _held[rec[0]])
        version = VERSION
    else:
        state = (kind, None)
    if _running_gens:
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
    (kind, extra), inst = state[:2]     # (then _Done's None)
    if inst:
        c.__dict__.update(inst)
    if kind == "unbound":
        return
    if kind == "finished":
        continulet.__init__(c, _finished_body)
        continulet.switch(c)
    elif kind == "unstarted":
        func, args, kwargs = extra
        continulet.__init__(c, func, *args, **(kwargs or {}))
    elif kind == "suspended":
        restore(c, extra)
    else:
        raise pickle.UnpicklingError("unknown continulet state %r" % (kind,))
