"""Run every benchmark table in one process: python benchmarks/run.py [--quick].

Each module prints its own table of ratios against peers measured in this
same run.  Modules whose dependencies are missing say so and are skipped.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODULES = ["bench_core", "bench_stackless", "bench_greenlet", "bench_preempt"]


def main() -> int:
    quick = "--quick" in sys.argv
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    status = 0
    for name in MODULES:
        if only and name not in only:
            continue
        if not os.path.exists(os.path.join(HERE, name + ".py")):
            continue
        try:
            mod = importlib.import_module(name)
            mod.main(quick) if "quick" in mod.main.__code__.co_varnames else mod.main()
        except Exception:
            print(f"\n{name}: failed")
            traceback.print_exc()
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
