"""Leak checks: memory and references stay flat over many operations.

Each check runs an operation many times (a million switches, a hundred
thousand continulets created and finished) and asserts that afterwards
the process holds no more memory blocks, references and resident memory
than before, up to a small constant.  A leak of one object, one reference
or a few bytes per operation shows up as a difference in the thousands or
megabytes.

Measures (`Footprint`):
  * `sys.getallocatedblocks()`: memory blocks the interpreter's allocator
    has handed out and not taken back (every leaked object is at least one);
  * `sys.gettotalrefcount()` on debug builds: the sum of all reference
    counts (a leaked reference to an immortal or long-lived object shows
    here only);
  * resident memory (Linux, /proc/self/statm): what leaks outside the
    interpreter's allocator, such as saved stack bytes.

One section per layer.  To add a layer, write operations as functions of
`n` (the number of repetitions) and check them with `assert_flat(op, n)`;
`SCALE` shrinks the counts on debug builds, where `gettotalrefcount`
makes fewer repetitions enough.
"""
import gc
import os
import sys

import pytest

pytestmark = [
    pytest.mark.skipif(sys.implementation.name != "cpython",
                       reason="measures CPython's own allocator"),
    # AddressSanitizer keeps freed memory in quarantine, and .ci/sanitize
    # allocates objects with malloc(): nothing here would stay flat
    pytest.mark.skipif(bool(os.environ.get("CONTINULET_SANITIZE")),
                       reason="memory is not measurable under AddressSanitizer"),
]

DEBUG_BUILD = hasattr(sys, "gettotalrefcount")
# debug builds are several times slower, and count references exactly
SCALE = float(os.environ.get("CONTINULET_LEAK_SCALE", "0.1" if DEBUG_BUILD else "1"))

# what may remain after all the repetitions: caches and free lists that
# fill up to a bound, and the allocator's page granularity
BLOCKS_SLACK = 2000
REFS_SLACK = 2000
RSS_SLACK = 4 * 1024 * 1024


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0        # not measured here


class Footprint:
    """What the process holds now (after a full collection)."""

    def __init__(self) -> None:
        gc.collect()
        gc.collect()
        self.blocks = sys.getallocatedblocks()
        self.refs = sys.gettotalrefcount() if DEBUG_BUILD else 0
        self.rss = _rss()

    def growth_since(self, before: "Footprint") -> dict:
        return {"blocks": self.blocks - before.blocks,
                "refs": self.refs - before.refs,
                "rss": self.rss - before.rss}


def assert_flat(op, n: int) -> None:
    """Run op(n) once to warm caches up, then again: nothing may grow."""
    n = max(1, int(n * SCALE))
    op(max(1, n // 10))
    before = Footprint()
    op(n)
    growth = Footprint().growth_since(before)
    assert growth["blocks"] < BLOCKS_SLACK, (op.__name__, n, growth)
    assert growth["refs"] < REFS_SLACK, (op.__name__, n, growth)
    assert growth["rss"] < RSS_SLACK, (op.__name__, n, growth)


# ---------------------------------------------------------------- _continuation

from _continuation import continulet, generator, permute  # noqa: E402


def ping_pong(n):
    """n switches between the caller and one continulet (n/2 each way)."""
    def body(c):
        while True:
            c.switch()
    c = continulet(body)
    for _ in range(n // 2):
        c.switch()


def ping_pong_deep(n):
    """The same, each side 50 frames deep: the stack bytes move each time."""
    def down(k, fn):
        return fn() if k == 0 else down(k - 1, fn)

    def body(c):
        down(50, lambda: [c.switch() for _ in iter(int, 1)])
    c = continulet(body)
    down(50, lambda: [c.switch() for _ in range(n // 2)])


def values_and_throws(n):
    """Values both ways, exceptions thrown in and caught, three-way exchanges."""
    def body(c, other):
        v = None
        while True:
            try:
                v = c.switch(v)
            except KeyError as e:
                v = e.args
    def other_body(o):
        while True:
            o.switch(None, to=c)
    c = continulet(body, None)
    o = continulet(other_body)
    c.switch()
    o.switch()
    for i in range(n // 6):
        assert c.switch(("value", i)) == ("value", i)
        assert c.throw(KeyError, ("k", i)) == ("k", i)
        c.switch(None, to=o)


def create_and_finish(n):
    """n continulets started and run to the end."""
    def body(c, x):
        return x + 1
    for i in range(n):
        assert continulet(body, i).switch() == i + 1


def create_suspend_finish(n):
    """n continulets that suspend once, then finish, some by an exception."""
    def body(c, x):
        c.switch(x)
        if x & 1:
            raise ValueError(x)
        return x
    for i in range(n):
        c = continulet(body, i)
        c.switch()
        try:
            c.switch()
        except ValueError:
            pass


def permuted(n):
    """Pairs of suspended continulets permuted, then run to the end: each
    run's result resumes the other's, the last one comes back here."""
    def body(c):
        c.switch()
    for _ in range(n // 2):
        a, b = continulet(body), continulet(body)
        a.switch()
        b.switch()
        permute(a, b)
        a.switch()
        assert not a.is_pending() and not b.is_pending()


def dropped_pending(n):
    """n suspended continulets dropped in cycles, unwound by the GC's own
    automatic collections."""
    def body(c):
        box = [c]
        try:
            c.switch()
        finally:
            box.clear()
    for _ in range(n):
        continulet(body).switch()


def dropped_pending_while_profiled(n):
    """The same under a profiler (on 3.11 the interpreter then holds each
    switch() call's bound method in C, out of the GC's sight)."""
    old = sys.getprofile()
    sys.setprofile(lambda frame, event, arg: None)
    try:
        dropped_pending(n)
    finally:
        sys.setprofile(old)


@generator
def counter(g, n):
    for i in range(n):
        g.switch(i)


def genlets(n):
    """n genlets iterated to the end, 10 values each."""
    for _ in range(n // 10):
        assert sum(counter(10)) == 45


def test_core_switches():
    assert_flat(ping_pong, 1_000_000)


def test_core_deep_switches():
    assert_flat(ping_pong_deep, 100_000)


def test_core_values_throws_and_three_way_switches():
    assert_flat(values_and_throws, 200_000)


def test_core_create_and_finish():
    assert_flat(create_and_finish, 100_000)


def test_core_create_suspend_finish():
    assert_flat(create_suspend_finish, 100_000)


def test_core_permute():
    assert_flat(permuted, 100_000)


def test_core_dropped_pending_unwound_by_gc():
    assert_flat(dropped_pending, 100_000)


def test_core_dropped_pending_while_profiled():
    assert_flat(dropped_pending_while_profiled, 20_000)


def test_core_genlets():
    assert_flat(genlets, 100_000)


# ---------------------------------------------------------------- stackless
# (to be added: tasklets created and run to the end, channel send/receive
# between tasklets, tasklets killed while blocked, schedule() round trips)

# ---------------------------------------------------------------- stackless.greenlet
# (to be added: switches between greenlets, greenlets created and finished,
# greenlets dropped while suspended, throw() into greenlets)
