"""``python -m stackless``: the classic channel demo and a timed hackysack game.

Options: ``--players N`` and ``--turns N`` change the size of the game
(10,000 players and 1,000 turns by default); ``--no-hackysack`` prints only
the channel demo.
"""

from __future__ import annotations

import argparse
import random
import sys
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
    args = parser.parse_args(argv)
    channel_demo()
    if not args.no_hackysack:
        elapsed = hackysack(args.players, args.turns)
        print("hackysack: %d tasklets, %d turns: %.3f s"
              % (args.players, args.turns, elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
