"""Fair read loops under one gevent hub.

A gevent socket whose peer keeps it full never blocks, so a loop that reads, handles and reads
again never gives the hub a turn: one flooding client would stall every other connection (Go
preempts a greedy goroutine; the hub cannot). Each such loop spends a :class:`Budget` and yields
to the hub when it runs out.
"""

from __future__ import annotations

from gevent import get_hub

#: datagrams (or frames) a loop handles before it lets the hub run others
DATAGRAM_BUDGET = 64

#: the wait that makes a turn (any positive time: the timer is due at the next loop cycle)
_TURN = 1e-6
#: libev's lowest priority: of the watchers due in one cycle, the turn's timer runs last
_LAST = -2


def yield_turn() -> None:
    """Let every other connection that is ready run once, then carry on.

    Not ``gevent.sleep(0)``: that only lets the greenlets already scheduled run, and puts the
    caller straight back in the same round of callbacks, before the loop polls for I/O (gevent's
    own docs say so; measured here, a loop yielding with ``sleep(0)`` after every millisecond
    of work kept a socket's reader from running for the whole 100 ms). This waits on a timer due
    at the next cycle of the loop, at the lowest priority: the loop polls, and every connection
    whose socket is ready runs before the caller does (libev runs the due watchers of higher
    priority first)."""
    hub = get_hub()
    timer = hub.loop.timer(_TURN, priority=_LAST)
    try:
        hub.wait(timer)
    finally:
        timer.close()


class Budget:
    """Work units a loop may do before yielding; ``spend()`` after each unit."""

    __slots__ = ("every", "left")

    def __init__(self, every: int = DATAGRAM_BUDGET):
        self.every = every
        self.left = every

    def spend(self, units: int = 1) -> None:
        self.left -= units
        if self.left <= 0:
            self.left = self.every
            yield_turn()
