"""Activation of the emulation: install(), ``python -m stackless.greenlet``
and the carry-over to subprocesses.  Each case runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(args, *, env=None, cwd=None, check=True):
    """Run this interpreter with the project importable; returns stdout."""
    environ = dict(os.environ)
    for name in ("STACKLESS_GREENLET", "PURE_PYTHON"):
        environ.pop(name, None)
    environ["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    environ.update(env or {})
    proc = subprocess.run([sys.executable] + args, env=environ, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError("exit %d\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
    return proc


PROBE = textwrap.dedent("""
    import os, sys, greenlet
    import stackless.greenlet as emulation
    print(greenlet is emulation, __name__, sys.argv[1:], os.environ.get("PURE_PYTHON"))
    print(greenlet.greenlet(lambda x: x * 2).switch(21))
""")


def test_install_registers_the_emulation():
    out = python(["-c", textwrap.dedent("""
        import sys
        import stackless.greenlet as emulation
        assert emulation.install() is emulation
        # registered lazily: nothing is imported until something asks
        assert "greenlet" not in sys.modules
        import greenlet
        from greenlet import greenlet as g, getcurrent
        assert greenlet is emulation and g is emulation.greenlet
        assert "greenlet._greenlet" not in sys.modules
        import greenlet._greenlet
        assert sys.modules["greenlet._greenlet"] is emulation
        assert greenlet._greenlet is emulation
        assert emulation.__spec__.name == "stackless.greenlet"  # keeps its own
        assert emulation.install() is emulation  # idempotent
        emulation.uninstall()
        assert "greenlet" not in sys.modules
        print("ok")
    """)]).stdout
    assert out.split() == ["ok"]


def test_install_refuses_after_real_greenlet():
    probe = python(["-c", "import greenlet, sys; print(hasattr(greenlet, '_C_API'))"],
                   check=False)
    if probe.stdout.strip() != "True":
        pytest.skip("the C greenlet is not installed here")
    proc = python(["-c", textwrap.dedent("""
        import greenlet
        import stackless.greenlet as emulation
        try:
            emulation.install()
        except RuntimeError as e:
            print("refused:", e)
    """)])
    assert proc.stdout.startswith("refused: stackless.greenlet.install(): the module "
                                  "'greenlet' was already imported from ")
    assert "before anything imports greenlet" in proc.stdout


def test_runner_runs_a_script(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROBE)
    out = python(["-m", "stackless.greenlet", str(script), "a", "b"], cwd=str(tmp_path)).stdout
    assert out.splitlines() == ["True __main__ ['a', 'b'] 1", "42"]


def test_runner_keeps_a_set_pure_python(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROBE)
    out = python(["-m", "stackless.greenlet", str(script)], env={"PURE_PYTHON": "0"}).stdout
    assert out.splitlines()[0] == "True __main__ [] 0"


def test_runner_script_directory_is_on_path(tmp_path):
    (tmp_path / "helper_mod_for_runner.py").write_text("VALUE = 7\n")
    script = tmp_path / "prog.py"
    script.write_text("import helper_mod_for_runner\nprint(helper_mod_for_runner.VALUE)\n")
    assert python(["-m", "stackless.greenlet", str(script)]).stdout.split() == ["7"]


def test_runner_runs_a_module(tmp_path):
    (tmp_path / "probe_module_for_runner.py").write_text(PROBE)
    out = python(["-m", "stackless.greenlet", "-m", "probe_module_for_runner", "x"],
                 cwd=str(tmp_path)).stdout
    assert out.splitlines() == ["True __main__ ['x'] 1", "42"]


def test_runner_exit_status_and_usage(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("import sys\nsys.exit(3)\n")
    assert python(["-m", "stackless.greenlet", str(script)], check=False).returncode == 3
    proc = python(["-m", "stackless.greenlet"], check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("usage:")


def test_activation_carries_over_to_subprocesses(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys
        child = "import greenlet, stackless.greenlet as e, os; " \\
                "print(greenlet is e, os.environ['PURE_PYTHON'])"
        out = subprocess.run([sys.executable, "-c", child], capture_output=True,
                             text=True, cwd="/")
        print(out.stdout.strip() or out.stderr)
        grandchild = "import subprocess, sys; subprocess.run([sys.executable, '-c', %r])" % child
        subprocess.run([sys.executable, "-c", grandchild], cwd="/")
    """))
    out = python(["-m", "stackless.greenlet", str(script)]).stdout
    assert out.splitlines() == ["True 1", "True 1"]


def test_environment_variable_alone_activates(tmp_path):
    # What a subprocess of the runner gets: STACKLESS_GREENLET=1 in its
    # environment, with the start-up hook (the .pth file or the runner's
    # sitecustomize on PYTHONPATH).
    from stackless.greenlet import _activate
    hook = [] if _activate.pth_installed() else [
        os.path.join(ROOT, "stackless", "greenlet", "_boot")]
    env = {"STACKLESS_GREENLET": "1",
           "PYTHONPATH": os.pathsep.join(hook + [ROOT])}
    out = python(["-c", "import greenlet, stackless.greenlet as e; print(greenlet is e)"],
                 env=env).stdout
    assert out.split() == ["True"]


def test_boot_sitecustomize_chains_to_the_shadowed_one(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import builtins\nbuiltins.CHAINED = 1\n")
    env = {"STACKLESS_GREENLET": "1",
           "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "stackless", "greenlet", "_boot"),
                                          ROOT, str(tmp_path)])}
    out = python(["-c", "import greenlet, stackless.greenlet as e; print(greenlet is e, CHAINED)"],
                 env=env).stdout
    assert out.split() == ["True", "1"]


def test_pth_file_content():
    with open(os.path.join(ROOT, "stackless", "greenlet", "stackless_greenlet.pth")) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and lines[0].startswith("import ")
    env = {"STACKLESS_GREENLET": "1"}
    code = "exec(%r); import greenlet, stackless.greenlet as e; print(greenlet is e)" % lines[0]
    assert python(["-c", code], env=env).stdout.split() == ["True"]
    unset = "exec(%r); import sys; print('greenlet' in sys.modules)" % lines[0]
    assert python(["-c", unset]).stdout.split() == ["False"]
    # activated, yet invisible until something imports greenlet
    assert python(["-c", unset], env=env).stdout.split() == ["False"]


def test_runner_activation_is_invisible_until_imported():
    child = "import sys; print('greenlet' in sys.modules)"
    code = textwrap.dedent("""
        import subprocess, sys
        print("greenlet" in sys.modules, sys.argv[1:])
        subprocess.run([sys.executable, "-c", %r])
        import greenlet, stackless.greenlet as e
        print(greenlet is e, "greenlet" in sys.modules)
    """) % child
    out = python(["-m", "stackless.greenlet", "-c", code, "x"]).stdout
    assert out.splitlines() == ["False ['x']", "False", "True True"]
