"""Start-up hook put on PYTHONPATH by ``python -m stackless.greenlet`` when
``stackless_greenlet.pth`` is not installed: installs the emulation when
``STACKLESS_GREENLET=1``, then runs the ``sitecustomize`` that it shadows."""

import importlib.machinery
import importlib.util
import os
import sys


def _run() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    from stackless.greenlet._activate import install_from_env
    install_from_env()
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_run()
