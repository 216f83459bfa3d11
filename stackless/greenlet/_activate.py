"""Putting the emulation in the place of the ``greenlet`` module.

Three ways, all ending in :func:`install`:

* ``stackless.greenlet.install()`` from the program itself;
* ``python -m stackless.greenlet script.py [args]`` / ``-m module [args]``
  (see ``__main__.py``), which also sets ``PURE_PYTHON=1`` when unset;
* the environment variable ``STACKLESS_GREENLET=1``, honoured at interpreter
  start-up by ``stackless_greenlet.pth`` (installed into site-packages next
  to the package) or, when that file is not installed, by the
  ``sitecustomize`` in ``_boot/`` that the runner puts on ``PYTHONPATH``.
  The runner sets the variable, so subprocesses started with the same
  interpreter run with the emulation too.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

#: Environment variable that activates the emulation at start-up.
ENV_VAR = "STACKLESS_GREENLET"
#: Name of the start-up hook file installed into site-packages.
PTH_NAME = "stackless_greenlet.pth"

_NAMES = ("greenlet", "greenlet._greenlet")


class _Finder:
    """The ``sys.meta_path`` entry that install() adds: ``import greenlet``
    (and ``greenlet._greenlet``) gets the emulation.  Until something
    imports greenlet, ``sys.modules`` has no ``greenlet``, as in a program
    running on the C greenlet."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> object:
        if name not in _NAMES:
            return None
        import importlib.machinery
        return importlib.machinery.ModuleSpec(name, _Loader)


class _Loader:
    """Loads the emulation module itself under the name ``greenlet``."""

    @staticmethod
    def create_module(spec: object) -> ModuleType:
        this = sys.modules[__package__]
        _own_spec.setdefault("spec", this.__spec__)
        return this

    @staticmethod
    def exec_module(module: ModuleType) -> None:
        # the import system has given it the spec of "greenlet": it keeps
        # its own (reloading and introspection use it)
        module.__spec__ = _own_spec["spec"]


_own_spec: dict = {}


def install() -> ModuleType:
    """Make ``import greenlet`` give the emulation, from now on; returns it.

    Raises RuntimeError if another ``greenlet`` module (the C one) has
    already been imported: greenlets of the two cannot be mixed.
    """
    this = sys.modules[__package__]
    for name in _NAMES:
        other = sys.modules.get(name)
        if other is not None and other is not this:
            raise RuntimeError(
                "stackless.greenlet.install(): the module %r was already imported "
                "from %s; install the emulation before anything imports greenlet"
                % (name, getattr(other, "__file__", None) or repr(other)))
    if _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)
    return this


def uninstall() -> None:
    """Undo install(): ``import greenlet`` finds the real module again."""
    this = sys.modules[__package__]
    while _Finder in sys.meta_path:
        sys.meta_path.remove(_Finder)
    for name in _NAMES:
        if sys.modules.get(name) is this:
            del sys.modules[name]


def install_from_env() -> None:
    """Start-up hook: install() when ``STACKLESS_GREENLET=1``."""
    if os.environ.get(ENV_VAR) == "1":
        install()


def pth_installed() -> bool:
    """Whether ``stackless_greenlet.pth`` sits in a site-packages directory."""
    import site
    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        dirs.append(user)
    return any(os.path.exists(os.path.join(d, PTH_NAME)) for d in dirs)


def activate_subprocesses() -> None:
    """Make interpreters started from now on (with this environment) run
    with the emulation installed."""
    os.environ[ENV_VAR] = "1"
    if pth_installed():
        return
    # No start-up hook installed: put our sitecustomize (which chains to the
    # one it shadows) and the directory holding the package on PYTHONPATH.
    boot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_boot")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    entries = [boot, root]
    old = os.environ.get("PYTHONPATH")
    if old:
        entries += [p for p in old.split(os.pathsep) if p not in (boot, root)]
    os.environ["PYTHONPATH"] = os.pathsep.join(entries)
