"""stackless against Stackless Python 3.7, the same workloads side by side.

Runs benchmarks/slp_workloads.py in separate processes: once under this
project's Python (the interpreter running this script, or another version
through ../shared/tools/pyver with ``--pyver VERSION``) and once under
Stackless 3.7.5 (``../shared/tools/slp37``, started with its current
directory outside the project, so that it imports its own ``stackless``).
It prints project/Stackless ratios of

* instructions per operation counted by callgrind, where valgrind is
  installed: with PYTHONHASHSEED=0, the difference between a run of 2N and
  a run of N operations, divided by N (start-up and set-up cancel out);
* seconds per operation, the best of several repeats, the two sides
  alternating so that both see the same machine load;
* RSS per tasklet blocked in receive() inside a Python function, per
  10,000 and per 100,000 tasklets, each in a fresh process.

    python benchmarks/bench_slp37.py [--quick] [--no-callgrind] [--no-timing]
                                     [--only handoff_main,create,rss,...] [--pyver 3.14]

With ``--pyver`` the project runs in a venv of that version kept in
build/venv-VERSION (created and filled with ``pip install .`` when missing;
``--reinstall`` refreshes it) and callgrind runs inside pyver's root, where
it needs valgrind (``apt-get install valgrind`` in that root).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "slp_workloads.py")
SLP37 = os.path.normpath(os.path.join(ROOT, "..", "shared", "tools", "slp37"))
PYVER = os.path.normpath(os.path.join(ROOT, "..", "shared", "tools", "pyver"))

# (workload, label, N for callgrind (runs N and 2N), N for timing, goal: instr ratio, time ratio)
ROWS = [
    ("handoff_main", "channel handoff, main <-> tasklet", 100_000, 200_000, 1.5, 2.0),
    ("handoff_tasklets", "handoff between two non-main tasklets", 100_000, 200_000, 1.5, 2.0),
    ("schedule", "schedule() between 2 tasklets", 100_000, 200_000, 1.2, 2.0),
    ("create", "tasklet create + run to completion", 100_000, 100_000, 2.0, 2.0),
    ("hackysack", "hackysack 10,000 players, per kick incl. setup", 10_000, 10_000, 2.0, 2.0),
]
RSS_SIZES = (10_000, 100_000)
RSS_GOAL = 2.0


class Side:
    """How to start the worker under one interpreter."""

    def __init__(self, name: str, argv: list, cwd: str, worker: str,
                 valgrind: Optional[list], outdir: tuple, env: Optional[dict] = None,
                 inner: Optional[list] = None) -> None:
        self.name = name
        self.argv = argv            # the interpreter (with any wrapper before it)
        self.cwd = cwd
        self.worker = worker        # the worker's path as this side sees it
        self.valgrind = valgrind    # argv prefix that runs valgrind, or None
        self.outdir = outdir        # (host dir, dir as this side sees it)
        self.env = env
        self.inner = inner or argv  # the interpreter as valgrind starts it

    def _run(self, argv: list, env_extra: dict) -> dict:
        env = dict(os.environ)
        env.update(env_extra)
        if self.env:
            env.update(self.env)
        p = subprocess.run(argv, cwd=self.cwd, env=env, capture_output=True, text=True,
                           timeout=3600)
        if p.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s\n%s" % (shlex.join(argv), p.returncode,
                                                           p.stdout[-2000:], p.stderr[-2000:]))
        return json.loads(p.stdout.strip().splitlines()[-1])

    def seconds(self, workload: str, n: int, repeat: int) -> float:
        return self._run(self.argv + [self.worker, "time", workload, str(n), str(repeat)],
                         {})["seconds"]

    def rss(self, n: int) -> float:
        return self._run(self.argv + [self.worker, "rss", str(n)], {})["bytes"]

    def instructions(self, workload: str, n: int) -> Optional[int]:
        """Instructions of one run of the workload with n operations."""
        if self.valgrind is None:
            return None
        host_dir, side_dir = self.outdir
        name = "cg-%s-%s-%d.out" % (self.name, workload, n)
        out_side = os.path.join(side_dir, name)
        self._run(self.valgrind + ["--tool=callgrind", "--callgrind-out-file=" + out_side]
                  + self.inner + [self.worker, "run", workload, str(n)],
                  {"PYTHONHASHSEED": "0"})
        with open(os.path.join(host_dir, name)) as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    return int(line.split()[1])
        raise RuntimeError("no totals in " + name)

    def per_op_instructions(self, workload: str, n: int) -> Optional[float]:
        a = self.instructions(workload, n)
        if a is None:
            return None
        return (self.instructions(workload, 2 * n) - a) / n


def slp37_side(outdir: str) -> Optional[Side]:
    if not os.path.exists(SLP37):
        return None
    tmp = tempfile.gettempdir()
    # the interpreter itself, not the script that starts it: valgrind does
    # not follow exec by default
    exe = subprocess.run([SLP37, "-c", "import sys; print(sys.executable)"], cwd=tmp,
                         capture_output=True, text=True, check=True).stdout.strip()
    vg = shutil.which("valgrind")
    return Side("slp37", [exe], tmp, WORKER, [vg] if vg else None, (outdir, outdir))


def project_side(outdir: str, pyver: Optional[str], reinstall: bool) -> Side:
    if pyver is None:
        vg = shutil.which("valgrind")
        # the current directory must not hold the project's stackless/: the
        # installed package is the one measured
        return Side("project", [sys.executable], tempfile.gettempdir(), WORKER,
                    [vg] if vg else None, (outdir, outdir))
    # inside pyver's root the worktree is /src
    venv = "/src/build/venv-%s" % pyver
    wrap = [PYVER, pyver, "--"]
    if reinstall or not os.path.exists(os.path.join(ROOT, "build", "venv-" + pyver, "bin")):
        subprocess.run(wrap + ["sh", "-c", "python -m venv %s && CONTINULET_WERROR=1 %s/bin/pip "
                               "install -q --disable-pip-version-check ." % (venv, venv)],
                       cwd=ROOT, check=True)
    has_vg = subprocess.run(wrap + ["sh", "-c", "command -v valgrind"], cwd=ROOT,
                            capture_output=True).returncode == 0
    rel = os.path.relpath(outdir, ROOT)
    return Side("project-" + pyver, wrap + [venv + "/bin/python"], ROOT,
                "/src/benchmarks/slp_workloads.py",
                (wrap + ["valgrind"]) if has_vg else None,
                (outdir, "/src/" + rel), inner=[venv + "/bin/python"])


def verdict(r: Optional[float], goal: float) -> str:
    if r is None:
        return ""
    return "met" if r <= goal else "missed"


def run(quick: bool, callgrind: bool, pyver: Optional[str], reinstall: bool,
        only: tuple = (), timing: bool = True) -> None:
    outdir = os.path.join(ROOT, "build", "callgrind")
    os.makedirs(outdir, exist_ok=True)
    slp = slp37_side(outdir)
    if slp is None:
        print("bench_slp37: %s is missing; nothing to compare with" % SLP37)
        return
    proj = project_side(outdir, pyver, reinstall)
    accel = os.environ.get("STACKLESS_ACCEL", "1") != "0"
    scale = 10 if quick else 1
    rounds, repeat = (1, 3) if quick else (2, 5)
    print("\n## stackless against Stackless 3.7.5 (%s, %s)\n"
          % (pyver or "python " + sys.version.split()[0],
             "with _stackless_accel" if accel else "STACKLESS_ACCEL=0"))
    print("| per operation | Stackless 3.7 | project | ratio | goal | Stackless 3.7 | project "
          "| ratio | goal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workload, label, n_cg, n_time, goal_i, goal_t in ROWS:
        if only and workload not in only:
            continue
        cells = ["-", "-", "-", ""]
        if callgrind and proj.valgrind and slp.valgrind:
            n = max(n_cg // scale, 10_000) if workload == "hackysack" else n_cg // scale
            ci_s = slp.per_op_instructions(workload, n)
            ci_p = proj.per_op_instructions(workload, n)
            r = ci_p / ci_s
            cells = ["%.0f instr" % ci_s, "%.0f instr" % ci_p, "**%.2fx**" % r,
                     "<= %.1fx: %s" % (goal_i, verdict(r, goal_i))]
        cells += ["-", "-", "-", ""]
        if timing:
            n = max(n_time // scale, 10_000) if workload == "hackysack" else n_time // scale
            rep = 1 if workload == "hackysack" and quick else repeat
            ts = tp = float("inf")
            for _ in range(rounds):     # alternate the sides: both see the same load
                ts = min(ts, slp.seconds(workload, n, rep))
                tp = min(tp, proj.seconds(workload, n, rep))
            r = tp / ts
            cells[4:] = ["%.0f ns" % (ts * 1e9), "%.0f ns" % (tp * 1e9), "**%.2fx**" % r,
                         "<= %.1fx: %s" % (goal_t, verdict(r, goal_t))]
        print("| %s | %s |" % (label, " | ".join(cells)), flush=True)
    for n in RSS_SIZES:
        if only and "rss" not in only:
            continue
        n //= scale
        bs, bp = slp.rss(n), proj.rss(n)
        print("| RSS per tasklet blocked in receive() in a Python function, %d tasklets "
              "| %.0f B | %.0f B | **%.2fx** | <= %.1fx: %s | | | | |"
              % (n, bs, bp, bp / bs, RSS_GOAL, verdict(bp / bs, RSS_GOAL)), flush=True)
    print()


def main(quick: bool = False) -> None:
    """Print the table (used by benchmarks/run.py: this Python, callgrind if installed)."""
    run(quick, "--no-callgrind" not in sys.argv, None, False)


if __name__ == "__main__":
    args = sys.argv[1:]
    pv = args[args.index("--pyver") + 1] if "--pyver" in args else None
    sel = tuple(args[args.index("--only") + 1].split(",")) if "--only" in args else ()
    run("--quick" in args, "--no-callgrind" not in args, pv, "--reinstall" in args, sel,
        "--no-timing" not in args)
