"""Build the _continuation extension (CPython only; PyPy has its own)."""
import glob
import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class build_py_with_pth(build_py):
    """Also put the packages' start-up hooks (*.pth) at the top of site-packages."""

    def run(self):
        super().run()
        for pth in glob.glob("stackless/**/*.pth", recursive=True):
            self.copy_file(pth, os.path.join(self.build_lib, os.path.basename(pth)))

ext_modules = []
if platform.python_implementation() == "CPython":
    cflags = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
              "-fno-strict-aliasing"]
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        # The switch routine changes stacks by hand; CET shadow stacks would
        # see every switch as a return-address mismatch.
        cflags.append("-fcf-protection=none")
    if os.environ.get("CONTINULET_WERROR"):
        cflags.append("-Werror")
    ext_modules.append(Extension(
        "_continuation",
        sources=["src/module.c", "src/genlet.c", "src/pystate.c", "src/stk.c",
                 "src/stk_x86_64.c", "src/stk_i386.c", "src/chunkcache.c", "src/framestate.c"],
        include_dirs=["include", "src"],
        depends=["include/stk.h", "src/pystate.h", "src/continulet.h", "src/chunkcache.h"],
        extra_compile_args=cflags,
    ))
    # optional: stackless runs without it (pure Python); see _install_accel
    ext_modules.append(Extension(
        "_stackless_accel",
        sources=["src/stackless_accel.c"],
        depends=["src/slots.h"],
        extra_compile_args=cflags,
    ))
    ext_modules.append(Extension(
        "_greenlet_accel",
        sources=["src/greenlet_accel.c"],
        depends=["src/slots.h"],
        extra_compile_args=cflags,
    ))

setup(ext_modules=ext_modules, cmdclass={"build_py": build_py_with_pth})
