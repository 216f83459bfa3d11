"""``python -m stackless``: the classic channel demo, a running tasklet
pickled in one process and resumed in another, and a timed hackysack game.

Options: ``--players N`` and ``--turns N`` change the size of the game
(10,000 players and 1,000 turns by default); ``--no-hackysack`` leaves it
out; ``--no-pickle`` leaves out the pickling demo.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time

import stackless


def channel_demo() -> None:
    """A receiving, a sending and another tasklet, in Stackless's order."""
    channel = stackless.channel()

    def receiving_tasklet() -> None:
        print("Receiving tasklet started")
        print(channel.receive())
        print("Receiving tasklet finished")

    def sending_tasklet() -> None:
        print("Sending tasklet started")
        channel.send("send from sending_tasklet")
        print("sending tasklet finished")

    def another_tasklet() -> None:
        print("Just another tasklet in the scheduler")

    stackless.tasklet(receiving_tasklet)()
    stackless.tasklet(sending_tasklet)()
    stackless.tasklet(another_tasklet)()
    stackless.run()


# -- pickling a running tasklet ------------------------------------------------

demo_channel = stackless.channel()


def recurs(depth: int, level: int = 1) -> None:
    """Go ``depth`` levels deep, send on the way down, print on the way up."""
    print("enter level %s%d" % (level * " ", level))
    if level >= depth:
        demo_channel.send("hi")
    if level < depth:
        recurs(depth, level + 1)
    print("leave level %s%d" % (level * " ", level))


def _pickle_at_depth(depth: int, path: str) -> None:
    def demo() -> None:
        t = stackless.tasklet(recurs)(depth)
        print(demo_channel.receive())
        with open(path, "wb") as f:
            pickle.dump(t, f)
        t.kill()                # this process stops here; another resumes it
    stackless.tasklet(demo)()
    stackless.run()


def _resume_from(path: str) -> None:
    with open(path, "rb") as f:
        t = pickle.load(f)
    t.insert()
    stackless.run()


def pickle_demo(depth: int = 14) -> None:
    """A tasklet ``depth`` calls deep is pickled in one process, in the
    middle of a channel send, and resumed in a second one."""
    if sys.implementation.name != "cpython":
        print("(pickling running tasklets needs CPython)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tasklet.pickle")
        me = [sys.executable, "-m", "stackless"]
        print("--- process 1: run the tasklet, pickle it while it waits")
        sys.stdout.flush()
        subprocess.run(me + ["--pickle-to", path, "--depth", str(depth)], check=True)
        print("--- process 2: load the pickle, resume the tasklet")
        sys.stdout.flush()
        subprocess.run(me + ["--resume-from", path], check=True)


def hackysack(players: int, turns: int, seed: int = 1) -> float:
    """Play hackysack: ``players`` tasklets kick a ball ``turns`` times.

    Every player waits on its own channel; whoever holds the ball kicks it to
    a random player.  Returns the elapsed time in seconds.
    """
    rnd = random.Random(seed)
    channels = [stackless.channel() for _ in range(players)]
    done = stackless.channel()
    state = {"turns": 0}

    def player(index: int) -> None:
        me = channels[index]
        while True:
            ball = me.receive()
            if ball is None:
                return
            state["turns"] += 1
            if state["turns"] >= turns:
                done.send(ball)
            else:
                # kick to somebody else: a player cannot catch its own kick
                other = rnd.randrange(players - 1)
                channels[other + (other >= index)].send(ball)

    start = time.perf_counter()
    for i in range(players):
        stackless.tasklet(player)(i)
    stackless.schedule()            # everybody starts and waits for the ball
    channels[0].send("ball")
    done.receive()
    for ch in channels:
        if ch.balance < 0:
            ch.send(None)
    stackless.run()
    return time.perf_counter() - start


def main(argv: "list[str] | None" = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m stackless",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=10_000,
                        help="number of tasklets (at least 2)")
    parser.add_argument("--turns", type=int, default=1_000)
    parser.add_argument("--no-hackysack", action="store_true")
    parser.add_argument("--no-pickle", action="store_true")
    parser.add_argument("--depth", type=int, default=14, help=argparse.SUPPRESS)
    parser.add_argument("--pickle-to", help=argparse.SUPPRESS)
    parser.add_argument("--resume-from", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pickle_to:
        _pickle_at_depth(args.depth, args.pickle_to)
        return 0
    if args.resume_from:
        _resume_from(args.resume_from)
        return 0
    channel_demo()
    if not args.no_pickle:
        pickle_demo(args.depth)
    if not args.no_hackysack:
        elapsed = hackysack(args.players, args.turns)
        print("hackysack: %d tasklets, %d turns: %.3f s"
              % (args.players, args.turns, elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
