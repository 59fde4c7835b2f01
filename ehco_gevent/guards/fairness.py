"""Fair read loops under one gevent hub.

A gevent socket whose peer keeps it full never blocks, so a loop that reads, handles and reads
again never gives the hub a turn: one flooding client would stall every other connection (Go
preempts a greedy goroutine; the hub cannot). Each such loop spends a :class:`Budget` and yields
to the hub when it runs out.
"""

from __future__ import annotations

import gevent

#: datagrams (or frames) a loop handles before it lets the hub run others
DATAGRAM_BUDGET = 64


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
            gevent.sleep(0)
