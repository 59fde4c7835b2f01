"""gevent stream servers whose accept errors are one log line, never a traceback.

gevent's ``BaseServer`` hands an accept error to the hub's error handler, which prints a full
traceback per failure: under EMFILE that is a traceback per wake-up. Here out-of-resources
errors pause accepting (clients wait in the kernel's backlog meanwhile, costing no fd) with a
growing pause, and are logged at most once per interval; transient errors are ignored. Relays,
proxy inbounds and the web server all accept through :class:`QuietAccept`.
"""

from __future__ import annotations

import errno
import logging

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

from ..logs import RateLimitedLogger

log = logging.getLogger("ehco.accept")

_TRANSIENT_ACCEPT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_LOG = RateLimitedLogger(log, interval=10.0)


class AcceptBackoff:
    """How long a listener stops accepting after an accept error: 10 ms, doubling while errors
    keep coming (up to 1 s), back to 10 ms once it has accepted for 5 s; one log line per cause
    per interval. Both accept loops (:class:`QuietAccept` and the callback relay's) use it."""

    def __init__(self, label: str):
        self.label = label
        self.pause = 0.0

    def failed(self, exc: OSError) -> float | None:
        """Seconds to stop accepting for, or None for a transient error (ignore it)."""
        if exc.errno in _TRANSIENT_ACCEPT:
            return None
        self.pause = min(1.0, self.pause * 2) if self.pause else 0.01
        _LOG.log(logging.WARNING, f"{self.label}:{exc.errno}",
                 "%s: accept failed (%s); pausing accepts for %.2f s", self.label,
                 exc.strerror, self.pause)
        return self.pause

    def resumed(self) -> None:
        gevent.spawn_later(5, self._reset)

    def _reset(self) -> None:
        self.pause = 0.0


class QuietAccept:
    """Mixin for a gevent StreamServer subclass; ``label`` names the listener in the log."""

    label = "?"
    _backoff: AcceptBackoff | None = None

    def do_read(self):
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES | _TRANSIENT_ACCEPT:
                raise
            if self._backoff is None:
                self._backoff = AcceptBackoff(self.label)
            pause = self._backoff.failed(exc)
            if pause is not None:
                self.stop_accepting()
                gevent.spawn_later(pause, self._resume)
            return None

    def _resume(self):
        if self.started and not self.closed:
            self.start_accepting()
            self._backoff.resumed()


class Listener(QuietAccept, StreamServer):
    """The accept loop of a relay or proxy inbound: one greenlet per connection, in a pool so
    that stopping can wait for (or kill) them."""

    def __init__(self, listener, handle, label: str, kind: str = "relay"):
        super().__init__(listener, handle, spawn=Pool())
        self.label = f"{kind} {label}"

    def drop_all(self) -> None:
        """Kill every connection's greenlet (each closes its sockets on the way out)."""
        self.pool.kill(block=True, timeout=5)
