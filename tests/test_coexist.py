"""Coroutines, tasklets, greenlets and genlets in one program.

All four are built on ``_continuation`` continulets.  Each keeps its own
notion of "current" per thread and never sees the others; a program that
uses them together interleaves correctly as long as every coroutine or
greenlet round trip started inside a tasklet ends before that tasklet
switches away (see docs/stackless.md).
"""

from __future__ import annotations

import _continuation

import stackless
from stackless import coroutine
from stackless.greenlet import greenlet, getcurrent as greenlet_current


@_continuation.generator
def counter(cont, start, n):
    for i in range(start, start + n):
        cont.switch(i)


def test_coroutine_api():
    log = []
    main = coroutine.getcurrent()
    assert main.alive

    def body(a, b):
        log.append(("start", a, b, coroutine.getcurrent() is c))
        main.switch()
        log.append("resumed")

    c = coroutine()
    assert not c.alive
    c.bind(body, 1, 2)
    assert c.alive
    c.switch()
    assert log == [("start", 1, 2, True)] and coroutine.getcurrent() is main
    c.switch()
    assert log[-1] == "resumed" and not c.alive

    d = coroutine()
    d.bind(main.switch)
    d.switch()
    assert d.alive
    d.kill()
    assert not d.alive and coroutine.getcurrent() is main


def test_coroutine_exception_goes_to_caller():
    c = coroutine()
    c.bind(lambda: 1 / 0)
    try:
        c.switch()
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the exception did not reach the caller")
    assert not c.alive


def test_all_four_interleave():
    log = []
    names = {}      # each tasklet's name (a tasklet takes no attributes)
    gmain = greenlet_current()
    cmain = coroutine.getcurrent()
    smain = stackless.getcurrent()

    def greenlet_body(name):
        gen = counter(100, 3)
        for i in range(3):
            assert names[id(stackless.getcurrent())] == name
            assert coroutine.getcurrent() is cmain
            log.append((name, "greenlet", i, next(gen)))
            gmain.switch(i * 10)
        return "greenlet done"

    def coroutine_body(name):
        for i in range(3):
            assert names[id(stackless.getcurrent())] == name
            assert greenlet_current() is gmain
            log.append((name, "coroutine", i))
            cmain.switch()

    def tasklet_body(name):
        me = stackless.getcurrent()
        names[id(me)] = name
        gen = counter(0, 3)
        g = greenlet(greenlet_body)
        co = coroutine()
        co.bind(coroutine_body, name)
        for i in range(3):
            log.append((name, "genlet", next(gen)))
            got = g.switch(name) if i == 0 else g.switch()
            log.append((name, "from greenlet", got))
            co.switch()
            assert stackless.getcurrent() is me
            assert greenlet_current() is gmain and coroutine.getcurrent() is cmain
            stackless.schedule()
        log.append((name, "end", g.switch()))
        assert g.dead
        co.switch()
        assert not co.alive

    stackless.tasklet(tasklet_body)("a")
    stackless.tasklet(tasklet_body)("b")
    stackless.run()
    assert stackless.getcurrent() is smain
    assert greenlet_current() is gmain and coroutine.getcurrent() is cmain

    expected = []
    for i in range(3):
        for name in "ab":
            expected += [(name, "genlet", i), (name, "greenlet", i, 100 + i),
                         (name, "from greenlet", i * 10), (name, "coroutine", i)]
    expected += [("a", "end", "greenlet done"), ("b", "end", "greenlet done")]
    assert log == expected


def test_genlets_step_inside_tasklets():
    out = []

    def body(n):
        g = counter(n, 2)
        out.append(next(g))
        stackless.schedule()
        out.append(next(g))

    stackless.tasklet(body)(1)
    stackless.tasklet(body)(10)
    stackless.run()
    assert out == [1, 10, 2, 11]
