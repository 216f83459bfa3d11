"""Putting the emulation in the place of the ``greenlet`` module."""

from __future__ import annotations

import sys
from types import ModuleType

_NAMES = ("greenlet", "greenlet._greenlet")


def install() -> ModuleType:
    """Register the emulation as ``sys.modules['greenlet']``.

    Raises RuntimeError if another ``greenlet`` module (the C one) has
    already been imported: objects made with it cannot be mixed with ours.
    """
    this = sys.modules[__package__]
    for name in _NAMES:
        other = sys.modules.get(name)
        if other is not None and other is not this:
            raise RuntimeError(
                "stackless.greenlet.install(): %r is already imported from %r; "
                "install the emulation before anything imports greenlet"
                % (name, getattr(other, "__file__", other)))
    for name in _NAMES:
        sys.modules[name] = this
    return this


def uninstall() -> None:
    """Undo install(): ``import greenlet`` finds the real module again."""
    this = sys.modules[__package__]
    for name in _NAMES:
        if sys.modules.get(name) is this:
            del sys.modules[name]
