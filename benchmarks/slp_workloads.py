"""The stackless workloads that run unchanged on Stackless 3.7 and on this project.

This file is a worker: bench_slp37.py starts it in a separate process
under each interpreter (Stackless 3.7 through ../shared/tools/slp37, and the
project's Python), so it imports whichever ``stackless`` that interpreter
has, and it must stay valid Python 3.7 using only the standard library.

    python slp_workloads.py time WORKLOAD N REPEAT   best seconds per operation
    python slp_workloads.py run WORKLOAD N           one untimed run (callgrind)
    python slp_workloads.py rss N                    RSS bytes per blocked tasklet
    python slp_workloads.py blocks N                 the memory blocks each blocked tasklet adds

Each prints one JSON object.  The definitions are the same on both sides:

* a handoff is one value passed through a channel to a tasklet that waits
  for it (ping-pong: the echo tasklet sends every value back);
* a blocked tasklet blocks inside a Python function that calls receive(),
  the way a real program waits;
* hackysack draws its targets from one fixed sequence that is computed
  before the timed region; a kick is one pass of the ball, and its time
  includes creating the players and stopping them at the end.
"""
import collections
import gc
import json
import sys
import time

import stackless

HACKY_PLAYERS = 10000
HACKY_KICKS = 10000


def handoff_main(n):
    """n handoffs between the main tasklet and one tasklet."""
    a, b = stackless.channel(), stackless.channel()

    def echo():
        recv, send = a.receive, b.send
        while True:
            send(recv())

    t = stackless.tasklet(echo)()

    def timed():
        send, recv = a.send, b.receive
        for i in range(n // 2):
            send(i)
            recv()
    return timed, t.kill


def handoff_tasklets(n):
    """n handoffs between two tasklets, neither of them main."""
    a, b = stackless.channel(), stackless.channel()

    def echo():
        recv, send = a.receive, b.send
        while True:
            send(recv())

    def driver():
        send, recv = a.send, b.receive
        for i in range(n // 2):
            send(i)
            recv()

    e = stackless.tasklet(echo)()
    stackless.schedule()        # echo waits in receive() now

    def timed():
        stackless.tasklet(driver)()
        stackless.run()
    return timed, e.kill


def schedule(n):
    """n calls of schedule(), alternating between two tasklets."""
    def f(k):
        for _ in range(k):
            stackless.schedule()

    def timed():
        stackless.tasklet(f)(n // 2)
        stackless.tasklet(f)(n // 2)
        stackless.run()
    return timed, None


def _nop():
    pass


def create(n):
    """n tasklets created, bound and run to completion, 100 at a time."""
    def timed():
        t, run, nop = stackless.tasklet, stackless.run, _nop
        for _ in range(n // 100):
            for _ in range(100):
                t(nop)()
            run()
    return timed, None


def kick_targets(players, kicks):
    """The fixed sequence of targets: an LCG, the same on every Python."""
    x, out = 12345, []
    for _ in range(kicks + 1):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append((x >> 8) % (players - 1))
    return out


def hackysack_game(players, kicks, targets):
    """One game: `players` tasklets pass a ball through channels, `kicks`
    times, kick k going to player targets[k] (skipping the kicker), then
    all of them are stopped."""
    chans = [stackless.channel() for _ in range(players)]
    done = stackless.channel()
    count = [0]

    def player(i):
        me = chans[i]
        while True:
            ball = me.receive()
            if ball is None:
                return
            k = count[0] = count[0] + 1
            if k >= kicks:
                done.send(ball)
            else:
                o = targets[k]
                chans[o + (o >= i)].send(ball)

    for i in range(players):
        stackless.tasklet(player)(i)
    stackless.schedule()
    chans[0].send("ball")
    done.receive()
    for ch in chans:
        ch.send(None)
    stackless.run()


def hackysack(n):
    """n kicks, in games of HACKY_KICKS kicks among HACKY_PLAYERS players."""
    players, kicks = HACKY_PLAYERS, HACKY_KICKS
    targets = kick_targets(players, kicks)

    def timed():
        for _ in range(max(1, n // kicks)):
            hackysack_game(players, kicks, targets)
    return timed, None


WORKLOADS = {
    "handoff_main": handoff_main,
    "handoff_tasklets": handoff_tasklets,
    "schedule": schedule,
    "create": create,
    "hackysack": hackysack,
}


def best_time(name, n, repeat):
    best = float("inf")
    for _ in range(repeat):
        timed, cleanup = WORKLOADS[name](n)
        gc.collect()
        t0 = time.perf_counter()
        timed()
        dt = time.perf_counter() - t0
        if cleanup is not None:
            cleanup()
        best = min(best, dt)
    return best / n


def rss_bytes():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource
    return pages * resource.getpagesize()


def blocked(n):
    """n tasklets, each blocked in receive() inside a Python function."""
    ch = stackless.channel()

    def waiter():
        return ch.receive()

    ts = [stackless.tasklet(waiter)() for _ in range(n)]
    stackless.run()
    return ch, ts


def warm_up():
    """Run the blocked-tasklet code once, so that what is measured after
    it is the tasklets' own memory."""
    ch, ts = blocked(100)
    for t in ts:
        t.kill()
    del ch, ts
    gc.collect()


def rss_per_blocked(n):
    warm_up()
    before = rss_bytes()
    keep = blocked(n)
    after = rss_bytes()
    assert keep[0].balance == -n, keep[0].balance
    return (after - before) / n


def blocks_per_blocked(n):
    """The blocks that each of n blocked tasklets adds, as tracemalloc
    sees them: {block size: blocks per tasklet}, for the sizes that at
    least one tasklet in 20 adds, and the traced bytes per tasklet."""
    import tracemalloc
    warm_up()
    tracemalloc.start()
    try:
        first = tracemalloc.take_snapshot()
        keep = blocked(n)
        second = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert keep[0].balance == -n, keep[0].balance
    added = collections.Counter(t.size for t in second.traces)
    added.subtract(t.size for t in first.traces)
    per = {size: k / n for size, k in sorted(added.items()) if abs(k) >= n // 20}
    return per, sum(size * k for size, k in added.items()) / n


def main(argv):
    mode = argv[1]
    if mode == "time":
        out = {"seconds": best_time(argv[2], int(argv[3]), int(argv[4]))}
    elif mode == "run":
        timed, cleanup = WORKLOADS[argv[2]](int(argv[3]))
        timed()
        if cleanup is not None:
            cleanup()
        out = {}
    elif mode == "rss":
        out = {"bytes": rss_per_blocked(int(argv[2]))}
    elif mode == "blocks":
        per, total = blocks_per_blocked(int(argv[2]))
        out = {"blocks": per, "bytes": total}
    else:
        raise SystemExit(__doc__)
    out["python"] = sys.version.split()[0]
    out["stackless"] = stackless.__file__
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
