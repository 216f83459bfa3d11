"""Make ``import stackless`` find this package on PyPy.

PyPy ships its own ``stackless.py`` in ``lib_pypy``, which comes before
site-packages on ``sys.path``.  ``continulet_stackless.pth`` (installed at the
top of site-packages) runs this file at interpreter start-up on PyPy only.
It puts a finder first on ``sys.meta_path`` that resolves ``stackless`` to a
*package*: the plain module ``lib_pypy/stackless.py`` is skipped, so this
project's package wins wherever it is installed (also in editable mode).

The file is executed with ``exec`` by the ``.pth`` line (the package itself
cannot be imported before the finder exists), so it imports nothing from
``stackless``.
"""

import sys
from importlib.machinery import PathFinder


class _StacklessPackageFinder:
    """Find ``stackless`` as a package, never as PyPy's single-file module."""

    names = frozenset({"stackless"})

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in cls.names or path is not None:
            return None
        for entry in sys.path:
            spec = PathFinder.find_spec(name, [entry])
            if spec is not None and spec.submodule_search_locations is not None:
                return spec
        for finder in sys.meta_path:
            if finder is cls or finder is PathFinder:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, None, target)
            if spec is not None and spec.submodule_search_locations is not None:
                return spec
        return None


if not any(getattr(f, "__name__", "") == "_StacklessPackageFinder" for f in sys.meta_path):
    sys.meta_path.insert(0, _StacklessPackageFinder)
