"""What a tunnel peer may spend: token buckets, the per-listener handshake gate and the
smux session watchdog (issue 10).

Anyone can connect to a tunnel listener (mtcp has no authentication at all; ws and mwss only a
path). So a peer gets what a real client needs and no more: a deadline and a cap on handshakes
in progress, a cap on open streams and on the rate of new ones, a budget for frames that carry
nothing, and an idle deadline for a session that has carried streams. The values are config
keys (:mod:`ehco_gevent.guards.limits`, docs/security.md). Every close for one of these causes is
logged through one :class:`~ehco_gevent.logs.RateLimitedLogger`, keyed by relay and cause: an
attacker repeating a cause gets one line per interval, never one per connection.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import gevent

from ..guards.limits import Limits
from ..logs import RateLimitedLogger

log = logging.getLogger("ehco.limits")
#: one line per relay and cause per interval
RATE_LOG = RateLimitedLogger(log, interval=10.0)
#: a burst of empty frames may be this many seconds' worth of the rate
EMPTY_BURST_SECONDS = 1.0


def report(level: int, label: str, cause: str, msg: str, *args) -> None:
    """Log a limit's cause at most once per interval for this relay."""
    RATE_LOG.log(level, (label, cause), "relay %s: " + msg, label, *args)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. Plain arithmetic over a clock."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "clock")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        """Spend one token if there is one."""
        if self.tokens < 1.0:
            self._refill()
            if self.tokens < 1.0:
                return False
        self.tokens -= 1.0
        return True

    def wait(self) -> float:
        """Seconds until a token is there (0 if one is)."""
        self._refill()
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class EmptyFrameBudget:
    """Frames that carry nothing, for one session or connection (``empty_frames_per_second``,
    burst EMPTY_BURST_SECONDS worth): over it, one rate-limited line and OverBudget."""

    def __init__(self, rate: float, label: str, peer: str, kind: str):
        self.bucket = TokenBucket(rate, rate * EMPTY_BURST_SECONDS)
        self.label = label
        self.peer = peer
        self.kind = kind

    def spend(self, what: str) -> None:
        if not self.bucket.take():
            report(logging.WARNING, self.label, "empty frames",
                   "%s from %s closed: over the budget of %g empty frames a second "
                   "(empty_frames_per_second; last: %s)", self.kind, self.peer,
                   self.bucket.rate, what)
            raise OverBudget(what)


class Ticket:
    """One handshake slot of a :class:`HandshakeGate`; ``release`` is idempotent."""

    __slots__ = ("gate",)

    def __init__(self, gate: "HandshakeGate"):
        self.gate = gate

    def release(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.in_progress -= 1


class HandshakeGate:
    """At most ``cap()`` unauthenticated handshakes at once on one listener. Beyond it a new
    connection is refused at once (closed): cheap for us, and the attacker's connections hold
    slots only until the handshake deadline."""

    def __init__(self, label: str, kind: str, cap: Callable[[], int],
                 key: str = "tunnel_max_handshakes"):
        self.label = label
        self.kind = kind
        self.cap = cap
        self.key = key  # the config key that sets the cap, named in the log line
        self.in_progress = 0

    def enter(self, client: str) -> Ticket | None:
        cap = self.cap()
        if self.in_progress >= cap:
            report(logging.WARNING, self.label, "handshake cap",
                   "%s: %d handshakes in progress (%s); closing new connection from %s",
                   self.kind, cap, self.key, client)
            return None
        self.in_progress += 1
        return Ticket(self)


class SessionGuard:
    """The limits of one smux session: called by its reader, arms its deadlines.

    ``expire(cause)`` closes the session; it is called from a timer (through a greenlet of
    its own) when the first stream does not come in time, or when a session that carried
    streams stays without any for ``smux_idle_timeout``.
    """

    def __init__(self, limits: Limits, server: bool, label: str = "", peer: str = "",
                 ticket: Ticket | None = None):
        self.limits = limits
        self.server = server
        self.label = label or "?"
        self.peer = peer or "?"
        self.ticket = ticket
        self.empty = EmptyFrameBudget(limits.empty_frames_per_second, self.label, self.peer,
                                      "smux session")
        self.new_streams = TokenBucket(limits.smux_streams_per_second,
                                       limits.smux_streams_per_second)
        self.max_streams = limits.smux_max_streams if server else 1 << 30
        self.had_stream = False
        self._timer = None
        self._expire: Callable[[str], None] | None = None

    # -- deadlines ---------------------------------------------------------------------------
    def start(self, expire: Callable[[str], None]) -> None:
        self._expire = expire
        if self.server:
            self._arm(self.limits.smux_handshake_timeout, "handshake timeout")

    def _arm(self, seconds: float, cause: str) -> None:
        self._disarm()
        self._timer = gevent.get_hub().loop.timer(seconds)
        self._timer.start(lambda: gevent.spawn(self._fire, cause, seconds))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _fire(self, cause: str, seconds: float) -> None:
        self._timer = None
        if cause == "handshake timeout":
            report(logging.INFO, self.label, cause, "smux session from %s closed: no stream "
                   "within %g s (smux_handshake_timeout)", self.peer, seconds)
        else:
            log.debug("relay %s: smux session from %s closed: idle for %g s", self.label,
                      self.peer, seconds)
        if self._expire is not None:
            self._expire(cause)

    # -- called by the reader ----------------------------------------------------------------
    def empty_frame(self, what: str) -> None:
        """One frame that carried nothing; raises OverBudget when the session is over."""
        self.empty.spend(what)

    def stream_wait(self) -> float:
        """Seconds the reader must wait before it accepts one more stream (rate cap)."""
        if self.new_streams.take():
            return 0.0
        report(logging.INFO, self.label, "stream rate", "smux session from %s opens streams "
               "faster than %g a second (smux_streams_per_second): slowing it down", self.peer,
               self.limits.smux_streams_per_second)
        return max(self.new_streams.wait(), 0.001)

    def refused(self, open_streams: int) -> None:
        report(logging.INFO, self.label, "stream cap", "smux session from %s: refusing "
               "streams beyond %d open (smux_max_streams)", self.peer, open_streams)

    def stream_opened(self) -> None:
        if not self.had_stream:
            self.had_stream = True
            if self.ticket is not None:
                self.ticket.release()
        if self.server:
            self._disarm()

    def streams_gone(self) -> None:
        if self.server and self.had_stream:
            self._arm(self.limits.smux_idle_timeout, "idle")

    def close(self) -> None:
        self._disarm()
        self._expire = None
        if self.ticket is not None:
            self.ticket.release()


class OverBudget(Exception):
    """The peer spent its budget of frames that carry nothing."""
