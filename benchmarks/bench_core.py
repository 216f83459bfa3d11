"""_continuation against the C greenlet, a generator and asyncio.

Ratios are against the C greenlet (greenlet from PyPI), the reference the
issue's goals are written against.
"""
from __future__ import annotations

import asyncio
import sys

from common import best_time, c_greenlet, print_table, rss_per_item

from _continuation import continulet

_greenlet = c_greenlet()

GREENLET = "greenlet (C)"


# ---- switch round trip ---------------------------------------------------

def cont_roundtrip(n: int) -> None:
    def body(c):
        while True:
            c.switch()
    c = continulet(body)
    sw = c.switch
    for _ in range(n):
        sw()


def greenlet_roundtrip(n: int) -> None:
    main = _greenlet.getcurrent()

    def body():
        sw = main.switch
        while True:
            sw()
    g = _greenlet.greenlet(body)
    sw = g.switch
    for _ in range(n):
        sw()


def generator_roundtrip(n: int) -> None:
    def gen():
        while True:
            yield
    g = gen()
    next(g)
    send = g.send
    for _ in range(n):
        send(None)


def asyncio_roundtrip(n: int) -> None:
    async def main():
        for _ in range(n):
            await asyncio.sleep(0)
    asyncio.run(main())


# ---- create + start + finish --------------------------------------------

def cont_create(n: int) -> None:
    def body(c):
        return 1
    for _ in range(n):
        continulet(body).switch()


def greenlet_create(n: int) -> None:
    def body():
        return 1
    G = _greenlet.greenlet
    for _ in range(n):
        G(body).switch()


def generator_create(n: int) -> None:
    def gen():
        yield 1
    for _ in range(n):
        for _ in gen():
            pass


def asyncio_create(n: int) -> None:
    async def body():
        return 1

    async def main():
        for _ in range(n):
            await asyncio.create_task(body())
    asyncio.run(main())


# ---- memory of suspended ones --------------------------------------------

def cont_suspended(n: int) -> list:
    def body(c):
        c.switch()
    out = []
    for _ in range(n):
        c = continulet(body)
        c.switch()
        out.append(c)
    return out


def greenlet_suspended(n: int) -> list:
    main = _greenlet.getcurrent()

    def body():
        main.switch()
    out = []
    for _ in range(n):
        g = _greenlet.greenlet(body)
        g.switch()
        out.append(g)
    return out


def generator_suspended(n: int) -> list:
    def gen():
        yield
    out = []
    for _ in range(n):
        g = gen()
        next(g)
        out.append(g)
    return out


# ---- switching deep in the Python stack ----------------------------------

def deep(depth: int, fn, n: int) -> None:
    if depth == 0:
        fn(n)
    else:
        deep(depth - 1, fn, n)


def cont_deep_roundtrip(depth: int):
    def run(n: int) -> None:
        def body(c):
            def down(k):
                if k == 0:
                    while True:
                        c.switch()
                down(k - 1)
            down(depth)
        c = continulet(body)
        for _ in range(n):
            c.switch()
    return run


def main(quick: bool = False) -> None:
    n = 20000 if quick else 200000
    rows = []
    have_g = _greenlet is not None

    v = {"continulet": best_time(cont_roundtrip, n)}
    if have_g:
        v[GREENLET] = best_time(greenlet_roundtrip, n)
    v["generator send()"] = best_time(generator_roundtrip, n)
    v["asyncio sleep(0)"] = best_time(asyncio_roundtrip, n // 10)
    rows.append(("switch round trip (goal <= 0.5x)", v, "s", GREENLET if have_g else "generator send()"))

    m = n // 4
    v = {"continulet": best_time(cont_create, m)}
    if have_g:
        v[GREENLET] = best_time(greenlet_create, m)
    v["generator"] = best_time(generator_create, m)
    v["asyncio task"] = best_time(asyncio_create, m // 10)
    rows.append(("create+start+finish (goal <= 0.1x)", v, "s", GREENLET if have_g else "generator"))

    k = 20000
    v = {"continulet": rss_per_item(cont_suspended, k)}
    if have_g:
        v[GREENLET] = rss_per_item(greenlet_suspended, k)
    v["generator"] = rss_per_item(generator_suspended, k)
    rows.append(("RSS per suspended one (goal <= 0.5x)", v, "B", GREENLET if have_g else "generator"))

    v = {"continulet, 0 frames deep": best_time(cont_deep_roundtrip(0), n),
         "continulet, 500 frames deep": best_time(lambda n: deep(0, cont_deep_roundtrip(500), n), n)}
    rows.append(("switch 500 frames deep (flat)", v, "s", "continulet, 0 frames deep"))

    print_table(f"_continuation core ({sys.implementation.name} {sys.version.split()[0]})", rows)


if __name__ == "__main__":
    main("--quick" in sys.argv)
