"""What the run(timeout) test files (test_preempt*.py) share."""
import sys

import pytest

import stackless


def counter(box):
    """Count in ``box[0]`` for ever: a tasklet for run(timeout) to interrupt."""
    while True:
        box[0] += 1


@pytest.fixture(autouse=True)
def _clean():
    """Each test ends with only main runnable and no trace function (an
    autouse fixture where it is imported)."""
    yield
    assert stackless.getruncount() == 1
    assert sys.gettrace() is None
