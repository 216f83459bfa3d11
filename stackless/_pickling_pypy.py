"""Cells and functions by value for pickling on PyPy.

On CPython, ``_continuation_pickle`` provides these (frames of running
tasklets use them too); PyPy's own ``_continuation`` does not come with
it, so stackless/_pickling.py uses this module there.  The interface is
the same: :func:`by_value` and :func:`reduce_function`, and importing the
module registers the cell reducer.
"""
from __future__ import annotations

import builtins
import copyreg
import importlib
import pickle
import sys
import types
from typing import Any


def _new_cell() -> Any:
    return types.CellType()


def _set_cell(cell: Any, state: Any) -> None:
    cell.cell_contents = state[0]


def _reduce_cell(cell: Any) -> Any:
    try:
        contents = cell.cell_contents
    except ValueError:                      # an empty cell
        return (_new_cell, ())
    # made empty first and filled afterwards, so that a cell that holds (a
    # closure over) itself pickles too
    return (_new_cell, (), (by_value(contents),), None, None, _set_cell)


def _make_function(code: types.CodeType, module: str, name: str, qualname: str,
                   defaults: Any, kwdefaults: Any, closure: Any, d: Any) -> types.FunctionType:
    g = importlib.import_module(module).__dict__ if module else {"__builtins__": builtins}
    f = types.FunctionType(code, g, name, defaults, closure)
    f.__qualname__ = qualname
    f.__kwdefaults__ = kwdefaults
    if d:
        f.__dict__.update(d)
    return f


def _found_by_name(f: types.FunctionType) -> bool:
    obj: Any = sys.modules.get(f.__module__) if f.__module__ else None
    for part in f.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is f


class _FunctionByValue:
    """Stands for a function that cannot be found by name, in a pickle."""

    __slots__ = ("f",)

    def __init__(self, f: types.FunctionType) -> None:
        self.f = f

    def __reduce__(self) -> Any:
        return reduce_function(self.f)


def by_value(obj: Any) -> Any:
    """``obj``, or what pickles it by value if it is a local function."""
    if type(obj) is types.FunctionType and not _found_by_name(obj):
        return _FunctionByValue(obj)
    return obj


def reduce_function(f: types.FunctionType) -> Any:
    """A copyreg reducer for functions: by name if found so, else by value
    (its code object pickles through stackless's code reducer)."""
    if _found_by_name(f):
        return f.__qualname__               # found by name: pickle by name
    module = f.__module__
    m = sys.modules.get(module) if module else None
    if m is None or m.__dict__ is not f.__globals__:
        raise pickle.PicklingError("cannot pickle %r: its globals are not a module's" % f)
    return (_make_function, (f.__code__, module, f.__name__, f.__qualname__,
                             f.__defaults__, f.__kwdefaults__, f.__closure__,
                             f.__dict__ or None))


copyreg.pickle(types.CellType, _reduce_cell)
