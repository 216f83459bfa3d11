"""Where the instructions of one operation go, per function (callgrind).

    python benchmarks/cg_profile.py RUN_N.out RUN_2N.out N [--top 30]

Takes two callgrind output files of the same workload, one with N and one
with 2N operations (bench_slp37.py leaves them in build/callgrind/ as
cg-<side>-<workload>-<n>.out), and prints each function's own instructions
per operation: the difference between the two runs divided by N, so that
start-up and set-up cancel out.
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*?)\s*$")


def self_cost(path: str) -> dict:
    """{function: own instructions} of one callgrind output file."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", "--auto=no", path],
                         capture_output=True, text=True, check=True).stdout
    costs: dict = defaultdict(int)
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = m.group(2)
        # "file:function [object]" -> "function [object's basename]"
        obj = ""
        if name.endswith("]") and " [" in name:
            name, obj = name[:-1].rsplit(" [", 1)
            obj = obj.rsplit("/", 1)[-1].split(".")[0]
        func = name.rsplit(":", 1)[-1]
        func = re.sub(r"'\d+$", "", func)      # recursion levels are one function
        costs["%s [%s]" % (func, obj)] += int(m.group(1).replace(",", ""))
    return costs


def main(argv: list) -> None:
    top = 30
    if "--top" in argv:
        i = argv.index("--top")
        top = int(argv[i + 1])
        del argv[i:i + 2]
    a, b, n = self_cost(argv[1]), self_cost(argv[2]), int(argv[3])
    per_op = {f: (b.get(f, 0) - a.get(f, 0)) / n for f in set(a) | set(b)}
    total = sum(per_op.values())
    print("%10s  %s" % ("instr/op", "function [object]"))
    for f, v in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]:
        print("%10.1f  %s" % (v, f))
    print("%10.1f  total" % total)


if __name__ == "__main__":
    main(sys.argv)
