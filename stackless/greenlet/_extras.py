"""The C greenlet's extras that ``stackless.greenlet`` provides as well:
greenlet's C API (the ``_C_API`` capsule) and the test hook
``UnswitchableGreenlet`` of ``greenlet._greenlet``."""

from __future__ import annotations

import os
import sys
from typing import Any

from . import greenlet
from ._base import _UNSTARTED, _state


class UnswitchableGreenlet(greenlet):
    """The C greenlet's test hook (``greenlet._greenlet``, which is this
    module under the emulation): a greenlet whose stack switch can be made
    to fail.  ``force_switch_error`` fails it before anything changed (a
    SystemError; the greenlet stays usable), ``force_slp_switch_error``
    in the middle, which no interpreter survives: the process aborts with
    a fatal error, as with the C greenlet."""

    force_switch_error = False
    force_slp_switch_error = False

    def switch(self, *args: Any, **kwargs: Any) -> Any:
        if self.force_slp_switch_error:
            os.write(2, b"Fatal Python error: greenlet: failed to switch stacks\n")
            os.abort()
        if self.force_switch_error:
            if _state(self) == _UNSTARTED:
                raise SystemError("Failed to switch stacks into a greenlet "
                                  "for the first time.")
            raise SystemError("Failed to switch stacks into a running greenlet.")
        return greenlet.switch(self, *args, **kwargs)


def _c_api() -> Any:
    """greenlet's C API (``greenlet._C_API``, for PyGreenlet_Import()),
    from the C extension, in both modes: its functions call this module's
    Python API.  None where the extension is missing (PyPy)."""
    if sys.implementation.name != "cpython":
        return None
    try:
        import _greenlet_accel  # type: ignore[import-not-found]
    except ImportError:
        return None
    return _greenlet_accel.c_api(vars(sys.modules[__package__]))
