"""Run the stress scenarios: ``python tests/stress/run.py --help``.

Each seed runs in a child process (a crash or a hang must not take the
runner with it).  A failing seed is printed with the command that replays
it and the tail of its op trace.
"""
from __future__ import annotations

import argparse
import importlib
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
LAYERS = ("core", "stackless", "greenlet")
MODULES = {"core": "core", "stackless": "tasklets", "greenlet": "greenlets"}


def child(layer: str, seeds: list, trace_path: str, timeout: float) -> int:
    """Run seeds one after another in this process; exit 1 on the first
    failure.  The trace file gets a ``== seed N`` line before each."""
    import faulthandler
    sys.path.insert(0, os.path.dirname(HERE))
    faulthandler.enable()
    from stress.common import Ledger, Trace
    mod = importlib.import_module(f"stress.{MODULES[layer]}")
    for seed in seeds:
        # a hang prints every thread's stack before the parent gives up
        faulthandler.dump_traceback_later(max(timeout - 5, 1), exit=True)
        Ledger._count[0] = 0            # token numbers as in a replay of this seed alone
        with open(trace_path, "a") as f:
            f.write(f"== seed {seed}\n")
        trace = Trace(trace_path)
        try:
            mod.run(seed, trace)
        except BaseException as e:
            print(f"FAILED {layer} seed {seed}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)      # threads of the failed scenario may still wait
        finally:
            trace.file.close()
    return 0


def run_batch(layer: str, seeds: list, timeout: float, env: dict, keep: int = 120) -> tuple:
    """Run seeds in one child; returns (failed seed or None, report)."""
    fd, trace_path = tempfile.mkstemp(prefix=f"stress-{layer}-", suffix=".trace")
    os.close(fd)
    cmd = [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), "--child",
           "--layer", layer, "--trace-file", trace_path, "--seeds", ",".join(map(str, seeds)),
           "--timeout", str(timeout / len(seeds))]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc = "hang"
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    try:
        with open(trace_path) as f:
            lines = f.read().splitlines()
    finally:
        os.unlink(trace_path)
    if rc == 0:
        return None, ""
    starts = [i for i, line in enumerate(lines) if line.startswith("== seed ")]
    seed = int(lines[starts[-1]].split()[-1]) if starts else seeds[0]
    tail = lines[starts[-1]:] if starts else lines
    what = {"hang": f"hung (no end in {timeout:.0f} s)"}.get(rc, f"exit status {rc}")
    if isinstance(rc, int) and rc < 0:
        what = f"crashed (signal {-rc})"
    elif "Timeout (0:" in out:
        what = "hung (every thread's stack is in the output)"
    accel = env.get("STACKLESS_ACCEL", "")
    report = (f"\n*** stress {layer}: seed {seed} {what}\n"
              f"*** replay: {'STACKLESS_ACCEL=' + accel + ' ' if accel else ''}"
              f"python tests/stress/run.py --layer {layer} --seed {seed}\n"
              f"--- output ---\n{out[-6000:]}\n"
              f"--- op trace (last {min(len(tail), keep)} of {len(tail)} lines) ---\n"
              + "\n".join(tail[-keep:]))
    return seed, report


def confirmed(layer: str, seed: int, timeout: float, env: dict) -> bool:
    """A failing greenlet seed counts only when the C greenlet (the
    reference) passes the same program: what fails on both is a limit of
    CPython's GC (references held by suspended frames' value stacks) or of
    the harness, not a divergence of the emulation."""
    if layer != "greenlet" or env.get("STRESS_GREENLET") == "c":
        return True
    for _ in range(3):                  # threads make a few programs vary: try thrice
        ref, _ = run_batch(layer, [seed], timeout, dict(env, STRESS_GREENLET="c"))
        if ref is not None:
            break
    if ref is not None:
        print(f"stress greenlet: seed {seed} also fails on the C greenlet: not counted",
              flush=True)
    return ref is None


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layer", default="all", choices=LAYERS + ("all",))
    ap.add_argument("--seed", type=int, help="run this one seed (replay)")
    ap.add_argument("--first-seed", type=int,
                    help="start of the seed sequence (default: random, printed)")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="time budget per layer (default 20)")
    ap.add_argument("--seeds-list", help="comma-separated seeds, run in one child")
    ap.add_argument("--count", type=int, help="run this many seeds instead of --seconds")
    ap.add_argument("--batch", type=int, default=1,
                    help="seeds per child process (1: each seed replays alone as it ran)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a child counts as hung")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seeds", help=argparse.SUPPRESS)
    ap.add_argument("--trace-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.layer, [int(s) for s in args.seeds.split(",")], args.trace_file,
                     args.timeout)
    layers = LAYERS if args.layer == "all" else (args.layer,)
    env = dict(os.environ)
    failures = 0
    for layer in layers:
        if args.seeds_list:
            seeds = [int(x) for x in args.seeds_list.split(",")]
            seed, report = run_batch(layer, seeds, args.timeout * len(seeds), env)
            print(report or f"stress {layer}: seeds {args.seeds_list} passed", flush=True)
            failures += seed is not None
            continue
        if args.seed is not None:
            seed, report = run_batch(layer, [args.seed], args.timeout, env, keep=100000)
            print(report or f"stress {layer}: seed {args.seed} passed", flush=True)
            failures += seed is not None
            continue
        first = args.first_seed or random.SystemRandom().randrange(1, 1 << 30)
        print(f"stress {layer}: seeds from {first}, {args.seconds:.0f} s", flush=True)
        sys.path.insert(0, os.path.dirname(HERE))
        from stress.common import KNOWN_BUGS, skipped
        for op in sorted(skipped(layer)):
            print(f"  left out: {op}: {KNOWN_BUGS[layer].get(op, 'STRESS_SKIP')}", flush=True)
        end = time.monotonic() + args.seconds
        nxt, ran = first, 0
        while (ran < args.count) if args.count else (time.monotonic() < end):
            seeds = list(range(nxt, nxt + min(args.batch, (args.count - ran) if args.count else args.batch)))
            nxt += args.batch
            seed, report = run_batch(layer, seeds, args.timeout, env)
            if seed is not None and not confirmed(layer, seed, args.timeout, env):
                ran += seeds.index(seed) + 1
                nxt = seed + 1
                seed = None
                continue
            if seed is not None:
                print(report, flush=True)
                failures += 1
                ran += seeds.index(seed) + 1
                break
            ran += len(seeds)
        print(f"stress {layer}: {ran} seeds run, {'FAILED' if seed is not None else 'ok'}",
              flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
