"""The stress harness in the suite: a fixed set of seeds per layer (each
in a child process, so a crash or hang fails the test instead of the run),
plus the bugs the harness found, as minimal reproductions.

Longer random runs: ``python tests/stress/run.py --seconds 600`` (see
docs/stress.md).
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ON_PYPY = sys.implementation.name == "pypy"

# Seeds that pass with the known bugs' op kinds left out (common.KNOWN_BUGS)
# and without the timer signal (whose timing varies between runs).
SEEDS = {
    "core": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    "stackless": [1, 2, 4, 5, 6, 7, 8, 9, 12, 13],
    "greenlet": [1, 2, 3, 4, 5, 6, 7, 9, 10, 11],
}


@pytest.mark.skipif(ON_PYPY, reason="the core layer is PyPy's own there; run on CPython")
@pytest.mark.parametrize("layer", sorted(SEEDS))
def test_stress_seeds(layer):
    env = dict(os.environ, STRESS_SKIP="signals")
    p = subprocess.run([sys.executable, os.path.join(HERE, "run.py"), "--layer", layer,
                        "--seeds-list", ",".join(map(str, SEEDS[layer]))],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-8000:] + p.stderr[-4000:]


@pytest.mark.xfail(sys.version_info[:2] == (3, 11) and not ON_PYPY, strict=True,
                   reason="S1: a continulet suspended in a switch() called with "
                          "f(*args) is uncollectable (the call holds references "
                          "that the GC cannot see); found by tests/stress core")
def test_pending_continulet_switched_by_star_call_is_collected():
    from _continuation import continulet
    done = []

    def body(c):
        try:
            args = (None,)
            c.switch(*args)
        finally:
            done.append(1)

    c = continulet(body)
    c.switch()
    r = weakref.ref(c)
    del c
    gc.collect()
    gc.collect()
    assert r() is None and done == [1]
