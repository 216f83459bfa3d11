"""Build and run the stk engine's own C test program (no Python inside)."""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="the engine is only built for CPython")
def test_engine_program(tmp_path):
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()[0]
    if shutil.which(cc) is None:
        cc = "cc"
    exe = tmp_path / "stk_test"
    src = [os.path.join(ROOT, "src", f) for f in ("stk.c", "stk_x86_64.c", "stk_i386.c")]
    src.append(os.path.join(ROOT, "tests", "engine", "stk_test.c"))
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "include"),
           *src, "-o", str(exe), "-lm"]
    subprocess.run(cmd, check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok 6"
