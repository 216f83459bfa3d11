"""Which frames of a stack can be captured, and how: the analysis behind
_continuation_pickle.

A captured frame is in a call (its callee is the frame above it, or the
switch at the top) or runs the generator above it.  The stack depth below
that call comes from the code's control flow (``dis.stack_effect``), and
must agree with what the interpreter stored where it is exact; the
operands of a call that went through C code must show that the C code
only forwards the call (or runs the generator as ``next()``/``send()``
do).  The raw frames come from ``_continuation._frames``: (func, code,
ip, depth, operands, from_c, kind, driven, gen), bottom first.
"""
from __future__ import annotations

import builtins
import dis
import functools
import pickle
import sys
import types
from typing import Any, Callable, Optional

import _continuation
from _continuation import continulet

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
_WAIT_CALL, _WAIT_ITER, _WAIT_SEND, _WAIT_GEN_CALL, _WAIT_GEN_DEFAULT, _WAIT_AGAIN = range(6)


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
# What a capture accepts
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


def _stopped_before(code: types.CodeType, ip: int, depth: Optional[int]) -> Optional[int]:
    """The stack depth of a frame stopped before the instruction at code
    unit ``ip`` (by a trace function's line or opcode event), or None if
    no instruction starts there or the depth the interpreter stored
    (``depth``, where it is exact) disagrees."""
    insts, depths, index = _depths(code)
    if index.get(2 * ip) is None or 2 * ip not in depths:
        return None
    d = depths[2 * ip]
    return d if depth is None or depth == d else None


def _check(all_raw: list, n: int, read_values: Callable[[list], list],
           running: bool = False, stopped: bool = False) -> tuple:
    """Check that the bottom ``n`` frames of ``all_raw`` can be captured:
    Python function frames, each called by the one below through a plain
    call, or generators run by the one below (``for``, ``next()``,
    ``send()``, ``yield from``, ``await``).  Returns (sites, depths,
    values) for the capture; a site is (base, nxt, wait, default).

    ``running``: the frames of the running stack, up to the frame that
    asks; that top frame need not be in a call, and a module-level frame
    may lie at the bottom (a main stack's script).  ``stopped``: the top
    frame was stopped before an instruction by a trace function (see
    capture); it resumes there if it is not in a call."""
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
            again = _stopped_before(code, ip, depth) if stopped and k == n - 1 else None
            if again is None:
                raise err("cannot pickle: %s is not in a call" % _describe(func, code, ip)) from None
            sites.append((again, (ip, ip), _WAIT_AGAIN, None))
            depths.append(again)
            continue
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
            if slot is None:    # (enumerate(g), zip(g, ...): C code runs it)
                raise err("cannot pickle: %s runs the generator %s through C code; only for "
                          "loops, next(), send(), throw(), yield from and await can be restored"
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
