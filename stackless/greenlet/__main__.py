"""``python -m stackless.greenlet script.py [args]``, ``-m module [args]`` or
``-c code [args]``: run a program with the greenlet emulation installed as
``greenlet``.

Sets ``PURE_PYTHON=1`` (for gevent) when it is unset, and
``STACKLESS_GREENLET=1`` so that subprocesses started with the same
interpreter run with the emulation too.
"""

from __future__ import annotations

import os
import runpy
import sys
import types

from stackless.greenlet._activate import activate_subprocesses, install

USAGE = ("usage: python -m stackless.greenlet script.py [args]\n"
         "       python -m stackless.greenlet -m module [args]\n"
         "       python -m stackless.greenlet -c code [args]\n")


def main(argv: list) -> int:
    """Run the program named by ``argv``; returns the exit status for usage
    errors (the program's own exit goes through SystemExit)."""
    if not argv or argv[0] in ("-h", "--help") or (argv[0] in ("-m", "-c") and len(argv) < 2):
        sys.stderr.write(USAGE)
        return 2
    os.environ.setdefault("PURE_PYTHON", "1")
    activate_subprocesses()
    install()
    if argv[0] == "-m":
        sys.argv = [argv[1]] + argv[2:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c"] + argv[2:]
        sys.path[0] = ""
        main_module = types.ModuleType("__main__")
        sys.modules["__main__"] = main_module
        exec(compile(argv[1], "<string>", "exec"), vars(main_module))
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
