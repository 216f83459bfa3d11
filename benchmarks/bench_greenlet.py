"""Greenlet benchmarks: the emulation ``stackless.greenlet`` against the C
greenlet from PyPI, measured side by side in one run.

``python benchmarks/bench_greenlet.py`` prints one table of timings and
ratios (emulation / C greenlet; below 1 means the emulation is faster):

* switch: one switch, measured as round trips between two greenlets;
* create+run: create a greenlet, switch into it, let it return;
* gevent.sleep(0): one ``sleep(0)`` with 100 greenlets taking turns.  gevent
  can only be imported with one greenlet module per process, so this one
  runs in subprocesses: under the emulation (``PURE_PYTHON=1``) and with the
  compiled gevent on the C greenlet.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best_of(fn: Callable[[int], None], n: int, repeat: int = 5) -> float:
    """Seconds per operation: the best of ``repeat`` runs of ``fn(n)``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return best / n


def bench_switch(gl) -> float:
    """Seconds per switch (half a round trip)."""
    main = gl.getcurrent()

    def partner():
        switch = main.switch
        while True:
            switch()
    g = gl.greenlet(partner)
    g.switch()

    def loop(n: int) -> None:
        switch = g.switch
        for _ in range(n):
            switch()
    per_round_trip = best_of(loop, 200_000)
    g.throw()
    return per_round_trip / 2


def bench_create_run(gl) -> float:
    """Seconds to create, start and finish one greenlet."""
    def body():
        return None
    greenlet = gl.greenlet

    def loop(n: int) -> None:
        for _ in range(n):
            greenlet(body).switch()
    return best_of(loop, 100_000)


GEVENT_SLEEP = r"""
import time, gevent
N, ROUNDS = 100, 300
def worker():
    sleep = gevent.sleep
    for _ in range(ROUNDS):
        sleep(0)
best = float("inf")
for _ in range(5):
    gs = [gevent.spawn(worker) for _ in range(N)]
    t0 = time.perf_counter()
    gevent.joinall(gs)
    best = min(best, time.perf_counter() - t0)
import greenlet
print(best / (N * ROUNDS), greenlet.__name__, gevent.__name__)
"""


def bench_gevent_sleep(emulated: bool) -> Optional[float]:
    """Seconds per gevent.sleep(0), or None if gevent is not installed.

    ``emulated``: pure-Python gevent on the emulation, else compiled gevent
    on the C greenlet."""
    probe_dir = os.path.join(ROOT, "build", "bench-greenlet")
    os.makedirs(probe_dir, exist_ok=True)
    with open(os.path.join(probe_dir, "_bench_gevent_sleep_probe.py"), "w") as f:
        f.write(GEVENT_SLEEP)
    env = dict(os.environ)
    env.pop("STACKLESS_GREENLET", None)
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([probe_dir, ROOT] + path)
    args = [sys.executable, "-m", "_bench_gevent_sleep_probe"]
    if emulated:
        env["PURE_PYTHON"] = "1"
        args[1:1] = ["-m", "stackless.greenlet"]
    else:
        env.pop("PURE_PYTHON", None)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        if "No module named 'gevent'" in proc.stderr:
            return None
        raise RuntimeError("gevent benchmark failed:\n" + proc.stderr)
    return float(proc.stdout.split()[0])


def main() -> None:
    """Measure and print the table."""
    import stackless.greenlet as emulation
    try:
        cgreenlet = importlib.import_module("greenlet")
        if cgreenlet is emulation or not hasattr(cgreenlet, "_C_API"):
            cgreenlet = None
    except ImportError:
        cgreenlet = None
    rows = []
    for name, fn in (("switch", bench_switch), ("create+run", bench_create_run)):
        emu = fn(emulation)
        ref = fn(cgreenlet) if cgreenlet is not None else None
        rows.append((name, emu, ref))
    rows.append(("gevent.sleep(0), 100 greenlets", bench_gevent_sleep(True),
                 bench_gevent_sleep(False)))
    print("greenlet emulation vs C greenlet %s, Python %s"
          % (getattr(cgreenlet, "__version__", "(not installed)"), sys.version.split()[0]))
    print("%-32s %14s %14s %8s" % ("benchmark", "emulation", "C greenlet", "ratio"))
    for name, emu, ref in rows:
        def fmt(x: Optional[float]) -> str:
            return "n/a" if x is None else "%.0f ns" % (x * 1e9)
        ratio = "n/a" if emu is None or ref is None else "%.2fx" % (emu / ref)
        print("%-32s %14s %14s %8s" % (name, fmt(emu), fmt(ref), ratio))


if __name__ == "__main__":
    main()
