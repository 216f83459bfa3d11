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
              "-fno-strict-aliasing",
              # functions shared between the files of one module are called
              # directly, not through the PLT (only PyInit_* is exported)
              "-fvisibility=hidden"]
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        # The switch routine changes stacks by hand; CET shadow stacks would
        # see every switch as a return-address mismatch.
        cflags.append("-fcf-protection=none")
    # aarch64 needs no such flag: pointer authentication and BTI work with
    # stack slicing, and src/stk_aarch64.c signs and lands like the C code
    # whenever CFLAGS turn -mbranch-protection on (Debian's defaults do not).
    if os.environ.get("CONTINULET_WERROR"):
        cflags.append("-Werror")
    # Link-time optimisation: a switch runs through module.c, pystate.c and
    # stk.c, whose small helpers (the saved thread state, the spare memory
    # offer) are worth inlining across files: ~40 instructions per switch.
    cflags.append("-flto")
    ldflags = ["-flto"]
    macros = []
    if os.environ.get("CONTINULET_SANITIZE"):
        # AddressSanitizer + UBSan (docs/design.md): python itself is not
        # instrumented, so it must run with gcc's libasan in LD_PRELOAD
        # (.ci/sanitize does it all).
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
        cflags += sanitize + ["-fno-omit-frame-pointer", "-g"]
        ldflags += sanitize
        macros.append(("CONTINULET_SANITIZE", "1"))
    ext_modules.append(Extension(
        "_continuation",
        sources=["src/module.c", "src/genlet.c", "src/pystate.c", "src/stk.c",
                 "src/stk_x86_64.c", "src/stk_i386.c", "src/stk_aarch64.c",
                 "src/chunkcache.c", "src/framestate.c", "src/transplant.c", "src/preempt.c",
                 "src/preempt_count.c", "src/preempt_monitor.c", "src/firstchunk.c", "src/codedepth.c", "src/deferred.c"],
        include_dirs=["include", "src"],
        depends=["include/stk.h", "src/pystate.h", "src/continulet.h", "src/chunkcache.h", "src/capi.h",
                 "src/preempt.h", "src/firstchunk.h", "src/clockns.h"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=macros,
    ))
    # optional: stackless runs without it (pure Python); see _install_accel
    ext_modules.append(Extension(
        "_stackless_accel",
        sources=["src/stackless_accel.c", "src/stackless_tasklet.c", "src/stackless_hide.c",
                 "src/stackless_run.c", "src/stackless_channel_new.c", "src/stackless_flags.c",
                 "src/stackless_waitqueue.c", "src/stackless_registry.c",
                 "src/stackless_gcslots.c"],
        depends=["src/slots.h", "src/capi.h", "src/stackless_accel.h"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=macros,
    ))
    ext_modules.append(Extension(
        "_greenlet_accel",
        sources=["src/greenlet_accel.c", "src/greenlet_capi.c"],
        depends=["src/slots.h", "src/greenlet_capi.h", "src/capi.h"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=macros,
    ))

setup(ext_modules=ext_modules, cmdclass={"build_py": build_py_with_pth})
