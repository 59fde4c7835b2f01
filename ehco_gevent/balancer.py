"""Round robin over a relay's remotes, as ehco's ``lb.RoundRobin``: one pick per new TCP
connection or per new UDP client address."""

from __future__ import annotations

import itertools
from typing import Sequence


class RoundRobin:
    def __init__(self, remotes: Sequence[str]):
        if not remotes:
            raise ValueError("round robin needs at least one remote")
        self.remotes = tuple(remotes)
        self._cycle = itertools.cycle(self.remotes)

    def next(self) -> str:
        return next(self._cycle)
