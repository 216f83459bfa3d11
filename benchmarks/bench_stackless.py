"""stackless against greenlet + a minimal Python channel, asyncio and threads.

Every row is a ratio against "greenlet (C) + channel": the C greenlet from
PyPI with the smallest channel and run queue one can write in Python on top
of it (below).  Run: ``python benchmarks/bench_stackless.py [--quick]`` or
through ``benchmarks/run.py``.
"""
from __future__ import annotations

import asyncio
import gc
import queue
import sys
import threading
import time
from collections import deque

from common import best_time, c_greenlet, print_table, rss_per_item
from slp_workloads import blocked, hackysack_game, kick_targets

import stackless

_greenlet = c_greenlet()

SL = "stackless"
GL = "greenlet (C) + channel"
AIO = "asyncio + Queue"
THR = "threads + queue.Queue"
NAN = float("nan")


# ---- the minimal greenlet channel and run queue ----------------------------

_DISPATCH = object()   # "hub, run the next one" (not a value)


class GreenletScheduler:
    """Round-robin run queue of greenlets; blocking goes back to the hub."""

    def __init__(self) -> None:
        self.runnable: deque = deque()
        self.hub = _greenlet.getcurrent()

    def block(self):
        """Switch to the next runnable greenlet; new ones start from the hub.

        (A greenlet started from a deep stack inherits that depth, so
        unstarted greenlets are started by the hub, as gevent does.)
        """
        r = self.runnable
        hub = self.hub
        if _greenlet.getcurrent() is not hub:
            if r and r[0]:
                return r.popleft().switch()
            return hub.switch(_DISPATCH)
        while True:
            if not r:
                raise RuntimeError("deadlock: nothing runnable")
            v = r.popleft().switch()
            if v is not _DISPATCH:
                return v

    def schedule(self) -> None:
        self.runnable.append(_greenlet.getcurrent())
        self.block()

    def spawn(self, fn, *args):
        g = _greenlet.greenlet(lambda: fn(*args), parent=self.hub)
        self.runnable.append(g)
        return g

    def run(self) -> None:
        while self.runnable:
            self.runnable.popleft().switch()


class GreenletChannel:
    """A rendezvous channel: the receiver runs first, like stackless's default."""

    __slots__ = ("sched", "receivers", "senders")

    def __init__(self, sched: GreenletScheduler) -> None:
        self.sched = sched
        self.receivers: deque = deque()
        self.senders: deque = deque()

    def send(self, value) -> None:
        if self.receivers:
            self.sched.runnable.append(_greenlet.getcurrent())
            self.receivers.popleft().switch(value)
        else:
            self.senders.append((_greenlet.getcurrent(), value))
            self.sched.block()

    def receive(self):
        if self.senders:
            g, value = self.senders.popleft()
            self.sched.runnable.append(g)
            return value
        self.receivers.append(_greenlet.getcurrent())
        return self.sched.block()


# ---- channel ping-pong: one handoff = one value passed ---------------------

def sl_pingpong(n: int) -> None:
    a, b = stackless.channel(), stackless.channel()

    def echo():
        recv, send = a.receive, b.send
        while True:
            send(recv())

    t = stackless.tasklet(echo)()
    send, recv = a.send, b.receive
    for i in range(n // 2):
        send(i)
        recv()
    t.kill()


def gl_pingpong(n: int) -> None:
    s = GreenletScheduler()
    a, b = GreenletChannel(s), GreenletChannel(s)

    def echo():
        while True:
            b.send(a.receive())

    s.spawn(echo)
    s.schedule()
    for i in range(n // 2):
        a.send(i)
        b.receive()


def aio_pingpong(n: int) -> None:
    async def run():
        a, b = asyncio.Queue(1), asyncio.Queue(1)

        async def echo():
            while True:
                await b.put(await a.get())

        t = asyncio.ensure_future(echo())
        for i in range(n // 2):
            await a.put(i)
            await b.get()
        t.cancel()
    asyncio.run(run())


def thr_pingpong(n: int) -> None:
    a, b = queue.Queue(1), queue.Queue(1)

    def echo():
        while True:
            v = a.get()
            if v is None:
                return
            b.put(v)

    th = threading.Thread(target=echo)
    th.start()
    for i in range(1, n // 2 + 1):
        a.put(i)
        b.get()
    a.put(None)
    th.join()


# ---- schedule(): one call = one yield to the next runnable -----------------

def sl_schedule(n: int) -> None:
    def f(k):
        for _ in range(k):
            stackless.schedule()
    stackless.tasklet(f)(n // 2)
    stackless.tasklet(f)(n // 2)
    stackless.run()


def gl_schedule(n: int) -> None:
    s = GreenletScheduler()

    def f(k):
        for _ in range(k):
            s.schedule()
    s.spawn(f, n // 2)
    s.spawn(f, n // 2)
    s.run()


def aio_schedule(n: int) -> None:
    async def f(k):
        for _ in range(k):
            await asyncio.sleep(0)

    async def run():
        await asyncio.gather(f(n // 2), f(n // 2))
    asyncio.run(run())


def thr_schedule(n: int) -> None:
    def f(k):
        for _ in range(k):
            time.sleep(0)
    ts = [threading.Thread(target=f, args=(n // 2,)) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


# ---- create + run ------------------------------------------------------------

def _nop(*args) -> None:
    pass


def sl_create(n: int) -> None:
    t = stackless.tasklet
    for _ in range(n):
        t(_nop)()
    stackless.run()


def gl_create(n: int) -> None:
    s = GreenletScheduler()
    for _ in range(n):
        s.spawn(_nop)
    s.run()


def aio_create(n: int) -> None:
    async def nop():
        pass

    async def run():
        await asyncio.gather(*[nop() for _ in range(n)])
    asyncio.run(run())


def thr_create(n: int) -> None:
    for _ in range(n):
        t = threading.Thread(target=_nop)
        t.start()
        t.join()


# ---- hackysack: players pass a ball at random through channels -------------

TURNS = 10_000


# the stackless side and the targets are the workloads that bench_slp37.py
# also runs on Stackless 3.7 (slp_workloads.py)
sl_hackysack = hackysack_game


def gl_hackysack(players: int, turns: int, targets: list) -> None:
    s = GreenletScheduler()
    chans = [GreenletChannel(s) for _ in range(players)]
    done = GreenletChannel(s)
    count = [0]

    def player(i):
        me = chans[i]
        while True:
            ball = me.receive()
            if ball is None:
                return
            k = count[0] = count[0] + 1
            if k >= turns:
                done.send(ball)
            else:
                o = targets[k]
                chans[o + (o >= i)].send(ball)

    for i in range(players):
        s.spawn(player, i)
    s.schedule()
    chans[0].send("ball")
    done.receive()
    for ch in chans:
        ch.send(None)
    s.run()


def aio_hackysack(players: int, turns: int, targets: list) -> None:

    async def run():
        qs = [asyncio.Queue(1) for _ in range(players)]
        done = asyncio.Queue(1)
        count = [0]

        async def player(i):
            me = qs[i]
            while True:
                ball = await me.get()
                if ball is None:
                    return
                k = count[0] = count[0] + 1
                if k >= turns:
                    await done.put(ball)
                else:
                    o = targets[k]
                    await qs[o + (o >= i)].put(ball)

        tasks = [asyncio.ensure_future(player(i)) for i in range(players)]
        await qs[0].put("ball")
        await done.get()
        for q in qs:
            await q.put(None)
        await asyncio.gather(*tasks)
    asyncio.run(run())


def thr_hackysack(players: int, turns: int, targets: list) -> None:
    qs = [queue.Queue(1) for _ in range(players)]
    done = queue.Queue(1)
    count = [0]
    lock = threading.Lock()

    def player(i):
        me = qs[i]
        while True:
            ball = me.get()
            if ball is None:
                return
            with lock:
                k = count[0] = count[0] + 1
            if k >= turns:
                done.put(ball)
            else:
                o = targets[k]
                qs[o + (o >= i)].put(ball)

    ths = [threading.Thread(target=player, args=(i,)) for i in range(players)]
    for t in ths:
        t.start()
    qs[0].put("ball")
    done.get()
    for q in qs:
        q.put(None)
    for t in ths:
        t.join()


# ---- RSS per blocked tasklet -------------------------------------------------

def sl_blocked(n: int) -> list:
    # blocked inside a Python function, as a real program waits
    return list(blocked(n))


def gl_blocked(n: int) -> list:
    s = GreenletScheduler()
    ch = GreenletChannel(s)

    def waiter():
        return ch.receive()
    gs = [s.spawn(waiter) for _ in range(n)]
    s.run()
    return [ch, gs, s]


def aio_blocked(n: int) -> list:
    loop = asyncio.new_event_loop()
    q = asyncio.Queue()

    async def waiter():
        await q.get()

    async def start():
        ts = [asyncio.ensure_future(waiter()) for _ in range(n)]
        await asyncio.sleep(0)
        return ts
    ts = loop.run_until_complete(start())
    return [loop, q, ts]


def thr_blocked(n: int) -> list:
    ev = threading.Event()
    ths = [threading.Thread(target=ev.wait, daemon=True) for _ in range(n)]
    for t in ths:
        t.start()
    return [ev, ths]


def _release_blocked(keep) -> None:
    # kill the stackless waiters so that the next measurement starts clean
    if isinstance(keep, list) and keep and isinstance(keep[0], stackless.channel):
        for t in keep[1]:
            t.kill()


def _rss(make, n: int) -> float:
    holder = []

    def mk(k):
        keep = make(k)
        holder.append(keep)
        return keep
    v = rss_per_item(mk, n)
    for keep in holder:
        _release_blocked(keep)
        if isinstance(keep, list) and isinstance(keep[0], threading.Event):
            keep[0].set()
            for t in keep[1]:
                t.join()
        if isinstance(keep, list) and isinstance(keep[0], asyncio.AbstractEventLoop):
            for t in keep[2]:
                t.cancel()
            keep[0].run_until_complete(asyncio.sleep(0))
            keep[0].close()
    gc.collect()
    return v


# ---- the table -----------------------------------------------------------------

def _row(name, impls, n, repeat=5):
    values = {}
    for label, fn, k in impls:
        if fn is None or k == 0:
            values[label] = NAN
        else:
            values[label] = best_time(fn, k, repeat)
    return (name, values, "s", GL)


def run(quick: bool = False) -> list:
    """Measure everything; return the table rows for common.print_table."""
    if _greenlet is None:
        print("bench_stackless: the C greenlet is not installed (pip install greenlet); "
              "its columns are skipped")
    gl = _greenlet is not None
    scale = 10 if quick else 1
    rows = []
    n = 200_000 // scale
    rows.append(_row("channel ping-pong handoff", [
        (SL, sl_pingpong, n), (GL, gl_pingpong if gl else None, n),
        (AIO, aio_pingpong, n // 4), (THR, thr_pingpong, n // 40)], n))
    rows.append(_row("schedule()", [
        (SL, sl_schedule, n), (GL, gl_schedule if gl else None, n),
        (AIO, aio_schedule, n // 4), (THR, thr_schedule, n // 20)], n))
    m = 50_000 // scale
    rows.append(_row("tasklet create+run", [
        (SL, sl_create, m), (GL, gl_create if gl else None, m),
        (AIO, aio_create, m), (THR, thr_create, m // 50)], m))
    turns = TURNS // scale
    for players in (10, 1_000, 10_000):
        # one fixed sequence of targets, drawn outside the timed region
        tg = kick_targets(players, turns)
        impls = [
            (SL, lambda k, p=players: sl_hackysack(p, turns, tg), 1),
            (GL, (lambda k, p=players: gl_hackysack(p, turns, tg)) if gl else None, 1),
            (AIO, lambda k, p=players: aio_hackysack(p, turns, tg), 1),
            (THR, (lambda k, p=players: thr_hackysack(p, turns // 10, tg)) if players <= 1_000 else None, 1),
        ]
        name = "hackysack %d players (per turn)" % players
        values = {}
        for label, fn, _ in impls:
            if fn is None:
                values[label] = NAN
                continue
            t = best_time(fn, 1, 3)
            values[label] = t / (turns // 10 if label == THR else turns)
        rows.append((name, values, "s", GL))
    k = 20_000 // scale
    values = {SL: _rss(sl_blocked, k),
              GL: _rss(gl_blocked, k) if gl else NAN,
              AIO: _rss(aio_blocked, k),
              THR: _rss(thr_blocked, 200)}
    rows.append(("RSS per blocked tasklet", values, "B", GL))
    return rows


def main(quick: bool = False) -> None:
    """Print the stackless table (one process run)."""
    rows = run(quick)
    print_table("stackless: ratios against greenlet (C) + a minimal Python channel "
                "(%s %s)" % (sys.implementation.name, sys.version.split()[0]), rows)


if __name__ == "__main__":
    main("--quick" in sys.argv)
