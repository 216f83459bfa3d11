"""The cost of preemption: the same tasklet code under run() and run(timeout).

Two tasklets run a loop-heavy body and a call-heavy body; the table gives
seconds per round under plain ``run()`` (the reference) and under
``run(timeout)`` with a budget so large that it never fires (the pure cost
of counting ticks) and with one that fires every few thousand ticks.
Issue 9 asks for run(timeout) <= 1.3x run().  Run:
``python benchmarks/bench_preempt.py [--quick]`` or through benchmarks/run.py.
"""
from __future__ import annotations

import sys

from common import best_time, print_table

import stackless


def loops(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * 2
        if s > 1 << 30:
            s = 0
    return s


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def body() -> None:
    loops(20000)
    fib(15)


def rounds(timeout: int):
    def run(n: int) -> None:
        for _ in range(n):
            stackless.tasklet(body)()
            stackless.tasklet(body)()
            if timeout:
                while stackless.getruncount() > 1:
                    t = stackless.run(timeout)
                    if t is not None:
                        t.insert()
            else:
                stackless.run()
    return run


def main(quick: bool = False) -> None:
    n = 3 if quick else 10
    values = {
        "run()": best_time(rounds(0), n),
        "run(10**9): never fires": best_time(rounds(10 ** 9), n),
        "run(5000): fires": best_time(rounds(5000), n),
    }
    print_table("run(timeout) against run() (issue 9: <= 1.3x)",
                [("two tasklets, loops + calls", values, "s", "run()")])


if __name__ == "__main__":
    main("--quick" in sys.argv)
