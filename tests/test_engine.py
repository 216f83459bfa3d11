"""Build and run the stk engine's own C test program (no Python inside)."""
import glob
import os
import platform
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every ABI's stk_swap file is compiled; the one for this machine is the one
# that is not empty after its #if.
SOURCES = [os.path.join(ROOT, "src", "stk.c"),
           *sorted(glob.glob(os.path.join(ROOT, "src", "stk_*.c"))),
           os.path.join(ROOT, "tests", "engine", "stk_test.c")]

# The toolchain's defaults, and on aarch64 also return-address signing and
# BTI landing pads, which stk_swap supports (see src/stk_aarch64.c).
FLAGS = [pytest.param([], id="default")]
if platform.machine().lower() in ("aarch64", "arm64"):
    FLAGS.append(pytest.param(["-mbranch-protection=standard"], id="pac-bti"))


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="the engine is only built for CPython")
@pytest.mark.parametrize("flags", FLAGS)
def test_engine_program(tmp_path, flags):
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()[0]
    if shutil.which(cc) is None:
        cc = "cc"
    exe = tmp_path / "stk_test"
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-I", os.path.join(ROOT, "include"),
           *SOURCES, "-o", str(exe), "-lm"]
    subprocess.run(cmd, check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok 7"
