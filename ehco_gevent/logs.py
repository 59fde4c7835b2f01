"""Logging set-up: one line per event on stderr, level names as ehco's (warn, not warning);
and :class:`RateLimitedLogger`, for lines a peer could otherwise repeat once per connection."""

from __future__ import annotations

import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}


def setup(level: str, tag: str = "") -> None:
    """``tag`` goes before every message of this process (``[worker 2] `` in a relay worker)."""
    root = logging.getLogger()
    if not getattr(setup, "_done", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s " + tag.replace("%", "%%") + "%(message)s",
            "%Y-%m-%dT%H:%M:%S"))
        root.addHandler(handler)
        setup._done = True  # type: ignore[attr-defined]
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))


class RateLimitedLogger:
    """At most one line per cause per ``interval`` seconds.

    For causes a peer can repeat at will (a mismatched tunnel, a scanner, a flood of bad
    handshakes): the operator gets one line per cause per interval, never one per connection.
    Lines held back are counted, and the next line that passes for that cause says how many.
    ``cause`` (any hashable) should hold the relay label and the cause, not the client address,
    or every client would get a line of its own. The table forgets causes idle for longer than
    ``interval`` and never holds more than ``max_keys``.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0, max_keys: int = 1024):
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._seen: dict = {}  # cause -> [time of the last line, lines held back since]

    def log(self, level: int, cause, msg: str, *args, force: bool = False) -> bool:
        """Log ``msg % args`` unless ``cause`` had a line within the interval; True if logged.
        ``force`` logs anyway (an event the operator caused, such as SIGHUP) and starts the
        cause's interval from now."""
        now = time.monotonic()
        entry = self._seen.get(cause)
        if entry is not None and now - entry[0] < self.interval and not force:
            entry[1] += 1
            return False
        if entry is None and len(self._seen) >= self.max_keys:
            self._forget(now)
        held = entry[1] if entry is not None else 0
        self._seen[cause] = [now, 0]
        if held:
            msg += " (and %d more since the last report)"
            args = (*args, held)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, cause, msg: str, *args) -> bool:
        return self.log(logging.WARNING, cause, msg, *args)

    def _forget(self, now: float) -> None:
        for key in [k for k, v in self._seen.items() if now - v[0] >= self.interval]:
            del self._seen[key]
        if len(self._seen) >= self.max_keys:  # all recent: start over rather than grow
            self._seen.clear()
