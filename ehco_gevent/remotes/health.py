"""Active health checks (``health_check``): one greenlet per remote of a relay probes it every
``interval`` seconds and reports to the relay's :class:`~ehco_gevent.remotes.balancer.Balancer`.

The probe is what a real connection does, through the relay's own dialer: a TCP connect for
raw; the WebSocket upgrade for ws; TLS plus the upgrade for wss; for mwss and mtcp a stream
opened on the pooled smux session (a new session when none is usable), then closed at once.
So a remote that accepts TCP but never answers the tunnel handshake fails its checks. Each
probe is limited to ``timeout``. Results are not logged one by one: the balancer logs a line
only when ``rise`` or ``fall`` results in a row change a remote's state.

The checker belongs to one running relay: it starts with the relay's listener and stops with
it (a reload that changes the relay starts a fresh one; open connections are not touched).
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent.pool import Group

from .balancer import Balancer, RemoteState
from ..config import HealthCheck

log = logging.getLogger("ehco.health")


class ProbeTimeout(Exception):
    pass


def probe(dialer, remote: str, timeout: float) -> float:
    """Dial ``remote`` as a connection would and close the stream; the milliseconds it took.
    Raises on failure (the exception says why)."""
    started = time.monotonic()
    stream = None
    try:
        with gevent.Timeout(timeout, ProbeTimeout(f"no answer within {timeout:g} s")):
            stream = dialer.dial(remote)
        return (time.monotonic() - started) * 1000
    finally:
        if stream is not None:
            stream.close()


class HealthChecker:
    def __init__(self, balancer: Balancer, dialer, check: HealthCheck):
        self.balancer = balancer
        self.dialer = dialer
        self.check = check
        self.group = Group()

    def start(self) -> None:
        for state in self.balancer.states:
            self.group.spawn(self._run, state)

    def _run(self, state: RemoteState) -> None:
        check = self.check
        # spread the first probes over the interval, as the pings are, so N remotes do not
        # all dial at the same instant
        gevent.sleep(check.interval * state.index / max(1, len(self.balancer.states)))
        while True:
            try:
                probe(self.dialer, state.address, check.timeout)
            except Exception as exc:  # any failure to dial is a failed check
                detail = str(exc) or type(exc).__name__
                log.debug("relay %s: health check of %s failed: %s", self.balancer.label,
                          state.address, detail)
                self.balancer.checked(state, False, check.rise, check.fall, detail)
            else:
                self.balancer.checked(state, True, check.rise, check.fall)
            gevent.sleep(check.interval)

    def stop(self) -> None:
        self.group.kill(block=False)
