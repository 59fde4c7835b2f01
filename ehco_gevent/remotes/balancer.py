"""Which remote a new connection (TCP) or a new client address (UDP) goes to, and which remotes
are worth trying at all.

ehco 1.1.4 round-robins blindly. Here every remote has a :class:`RemoteState` fed by two
sources, and :meth:`Balancer.candidates` returns the order in which to try the remotes:

* **passive** (always on, gost's selector semantics): a dial that fails counts against its
  remote; ``max_fails`` failures within ``fail_timeout`` seconds mark it down for
  ``fail_timeout`` seconds, after which real traffic tries it again (a success clears the count);
* **active** (``health_check``, off by default, haproxy's rise/fall): probes from
  :mod:`ehco_gevent.remotes.health` set ``checked_up`` after ``rise`` passes or ``fall`` failures.

A remote is *up* when neither source says down. Candidates are the up remotes in the order the
strategy gives, then the down ones (a last resort within the same dial deadline). When every
remote is down they are all tried anyway, in strategy order (fail open, as nginx and haproxy's
``option redispatch`` do), and that is logged once per episode. Each state change is one log
line; nothing is logged per connection here.

Strategies (``lb_strategy``): ``round_robin`` (ehco's, the default), ``random``, ``ip_hash``
(one client host keeps its remote while that remote is up; the hash is CRC32 of the host, so
every worker process and every restart agrees), ``least_conn`` (fewest open connections, ties
taken in turn), ``failover`` (the first up remote in the listed order; the rest are standbys).

Everything here is plain bookkeeping with an injectable clock, tested without sockets.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import zlib
from typing import Callable, Sequence

from ..config import LB_STRATEGIES, RelayConfig

log = logging.getLogger("ehco.balancer")


class RemoteState:
    """What this process knows about one remote of one relay."""

    __slots__ = ("address", "index", "fails", "window_start", "down_until", "checked_up",
                 "check_streak", "open", "dials", "dial_failures", "last_dial_ms", "last_error",
                 "last_change", "reason", "linked")

    def __init__(self, address: str, index: int):
        self.address = address
        self.index = index
        #: passive: failures counted in the current window, its start, and the end of a down mark
        self.fails = 0
        self.window_start = 0.0
        self.down_until = 0.0
        #: active: the health checks' verdict and the streak of results against it
        self.checked_up = True
        self.check_streak = 0
        #: connections open now through this remote (least_conn)
        self.open = 0
        self.dials = 0
        self.dial_failures = 0
        self.last_dial_ms: float | None = None
        self.last_error = ""
        self.last_change = 0.0
        #: why the remote is down ("" while up)
        self.reason = ""
        #: the TCP state of the same address whose health checks this (UDP) remote follows
        self.linked: RemoteState | None = None

    def up(self, now: float) -> bool:
        return (self.checked_up and now >= self.down_until
                and (self.linked is None or self.linked.checked_up))

    def to_json(self, now: float, wall_offset: float) -> dict:
        return {
            "remote": self.address,
            "up": self.up(now),
            "reason": "" if self.up(now) else self.reason,
            "health_check": "up" if self.checked_up and (self.linked is None
                                                         or self.linked.checked_up) else "down",
            "down_for_s": round(max(0.0, self.down_until - now), 3),
            "open_connections": self.open,
            "dials": self.dials,
            "dial_failures": self.dial_failures,
            "last_dial_ms": None if self.last_dial_ms is None else round(self.last_dial_ms, 3),
            "last_error": self.last_error,
            "last_change": round(self.last_change + wall_offset, 3) if self.last_change else None,
        }


class Balancer:
    def __init__(self, label: str, remotes: Sequence[str], strategy: str = "round_robin",
                 max_fails: int = RelayConfig.max_fails,
                 fail_timeout: float = RelayConfig.fail_timeout,
                 kind: str = "tcp", clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None):
        if not remotes:
            raise ValueError("a balancer needs at least one remote")
        if strategy not in LB_STRATEGIES:
            raise ValueError(f"unknown lb_strategy {strategy!r}")
        self.label = label
        self.kind = kind
        self.strategy = strategy
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.clock = clock
        self.rng = rng or random.Random()
        self.states = tuple(RemoteState(addr, i) for i, addr in enumerate(remotes))
        self.remotes = tuple(remotes)
        self._turn = itertools.count()
        self._all_down = False

    # -- picking ------------------------------------------------------------------------------
    def candidates(self, client_host: str = "") -> list[RemoteState]:
        """The remotes to try for one new connection, best first."""
        states = self.states
        if len(states) == 1:
            return [states[0]]
        now = self.clock()
        up = [s for s in states if s.up(now)]
        if not up:
            if not self._all_down:
                self._all_down = True
                log.warning("relay %s: every %s remote is down; trying all of them anyway",
                            self.label, self.kind)
            return self._order(list(states), client_host)
        if self._all_down:
            self._all_down = False
        ordered = self._order(up, client_host)
        if len(up) < len(states):
            ordered += [s for s in states if not s.up(now)]
        return ordered

    def next(self, client_host: str = "") -> str:
        """The first candidate's address (ehco's ``RoundRobin.next`` shape)."""
        return self.candidates(client_host)[0].address

    def _order(self, pool: list[RemoteState], client_host: str) -> list[RemoteState]:
        strategy = self.strategy
        if strategy == "failover":
            return pool
        if strategy == "round_robin":
            # a turn counter over the full list, so removing a down remote does not shift
            # which remote the others' turns land on
            turn = next(self._turn) % len(self.states)
            return sorted(pool, key=lambda s: (s.index - turn) % len(self.states))
        if strategy == "random":
            pool = list(pool)
            self.rng.shuffle(pool)
            return pool
        if strategy == "ip_hash":
            start = zlib.crc32(client_host.encode("utf-8", "replace")) % len(self.states)
            return sorted(pool, key=lambda s: (s.index - start) % len(self.states))
        # least_conn: fewest open connections; among equals, take turns
        turn = next(self._turn) % len(self.states)
        return sorted(pool, key=lambda s: (s.open, (s.index - turn) % len(self.states)))

    def follow_checks(self, other: "Balancer") -> None:
        """Let each remote that ``other`` also has follow its health checks (a UDP remote
        at the same host:port as a raw TCP remote: the checks probe the TCP side)."""
        by_address = {s.address: s for s in other.states}
        for state in self.states:
            state.linked = by_address.get(state.address)

    # -- passive feedback ---------------------------------------------------------------------
    def succeeded(self, state: RemoteState, dial_ms: float) -> None:
        state.dials += 1
        state.last_dial_ms = dial_ms
        state.last_error = ""
        state.fails = 0
        if state.down_until:
            state.down_until = 0.0
            self._changed(state, True, "dial succeeded")

    def failed(self, state: RemoteState, error: str) -> None:
        now = self.clock()
        state.dials += 1
        state.dial_failures += 1
        state.last_error = error
        if state.down_until:
            # marked before and no success since (a retry after fail_timeout, or a last-resort
            # try): marked again at once and silently, as gost keeps its fail count until a
            # success; a dead remote costs one line, not one per fail_timeout
            state.down_until = now + self.fail_timeout
            return
        if state.fails == 0 or now - state.window_start > self.fail_timeout:
            state.fails = 0
            state.window_start = now
        state.fails += 1
        if state.fails >= self.max_fails:
            state.down_until = now + self.fail_timeout
            state.fails = 0
            if state.checked_up:
                state.reason = f"{self.max_fails} failed dial(s) within {self.fail_timeout:g} s"
                self._changed(state, False, f"{state.reason} (last: {error}); skipped for "
                                            f"{self.fail_timeout:g} s")

    def opened(self, state: RemoteState) -> None:
        state.open += 1

    def closed(self, state: RemoteState) -> None:
        state.open -= 1

    # -- active feedback ----------------------------------------------------------------------
    def checked(self, state: RemoteState, ok: bool, rise: int, fall: int, detail: str = "") -> None:
        """One health-check result; ``rise`` passes in a row bring a remote up, ``fall``
        failures in a row take it down (haproxy's rise/fall)."""
        if ok == state.checked_up:
            state.check_streak = 0
            return
        state.check_streak += 1
        if state.check_streak < (rise if ok else fall):
            return
        state.check_streak = 0
        state.checked_up = ok
        if ok:
            state.down_until = 0.0
            self._changed(state, True, f"health check passed {rise} time(s)")
        else:
            state.reason = f"health check failed {fall} time(s): {detail}"
            self._changed(state, False, state.reason)

    # -- reporting ----------------------------------------------------------------------------
    def _changed(self, state: RemoteState, up: bool, why: str) -> None:
        state.last_change = self.clock()
        if up:
            state.reason = ""
        log.log(logging.INFO if up else logging.WARNING, "relay %s: %s remote %s is %s: %s",
                self.label, self.kind, state.address, "up" if up else "down", why)

    def snapshot(self) -> list[dict]:
        now = self.clock()
        wall_offset = time.time() - time.monotonic() if self.clock is time.monotonic else 0.0
        return [s.to_json(now, wall_offset) for s in self.states]

    def up_states(self) -> list[tuple[str, bool]]:
        now = self.clock()
        return [(s.address, s.up(now)) for s in self.states]

