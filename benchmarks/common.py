"""Helpers shared by the benchmark modules: timing and table printing.

Every figure is the best of several repeats, and every table row is a
ratio against a peer measured in the same process run, because absolute
times on shared machines are noise.
"""
from __future__ import annotations

import gc
import os
import time
from typing import Any, Callable, Iterable


def c_greenlet() -> Any:
    """The C greenlet from PyPI, or None (not installed, or the emulation)."""
    try:
        import greenlet
    except ImportError:
        return None
    return greenlet if hasattr(greenlet, "_C_API") else None


def best_time(fn: Callable[[int], None], n: int, repeat: int = 5) -> float:
    """Seconds per operation: the best of `repeat` runs of fn(n)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return best / n


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def rss_per_item(make: Callable[[int], list], n: int) -> float:
    """Bytes of RSS that each of n items costs while alive."""
    gc.collect()
    keep = make(10)             # warm up allocators and caches
    del keep
    gc.collect()
    before = rss_bytes()
    keep = make(n)
    after = rss_bytes()
    del keep
    gc.collect()
    return (after - before) / n


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value < 1e-6:
            return f"{value * 1e9:8.1f} ns"
        if value < 1e-3:
            return f"{value * 1e6:8.2f} us"
        return f"{value * 1e3:8.2f} ms"
    if unit == "B":
        return f"{value:8.0f} B "
    return f"{value:8.3f}  "


def print_table(title: str, rows: Iterable[tuple[str, dict[str, float], str, str]]) -> None:
    """rows: (benchmark, {implementation: value}, unit, reference implementation)."""
    print(f"\n## {title}\n")
    print(f"| {'benchmark':34} | {'implementation':26} | {'value':>11} | {'ratio':>8} |")
    print(f"|{'-' * 36}|{'-' * 28}|{'-' * 13}|{'-' * 10}|")
    for name, values, unit, ref in rows:
        base = values.get(ref)
        for impl, v in values.items():
            ratio = f"{v / base:7.2f}x" if base and v == v else "      - "
            print(f"| {name:34} | {impl:26} | {fmt(v, unit):>11} | {ratio:>8} |")
    print()
