"""Logging set-up: one line per event on stderr, level names as ehco's (warn, not warning);
and :class:`RateLimitedLog`, for lines a peer could otherwise repeat once per connection."""

from __future__ import annotations

import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}


def setup(level: str) -> None:
    root = logging.getLogger()
    if not getattr(setup, "_done", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        root.addHandler(handler)
        setup._done = True  # type: ignore[attr-defined]
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))


class RateLimitedLog:
    """At most one line per key per ``interval`` seconds.

    For causes a peer can repeat at will (a mismatched tunnel, a scanner, a flood of bad
    handshakes): the operator gets one line per cause per interval, never one per connection.
    Lines held back are counted, and the next line that passes for that key says how many.
    ``key`` should hold the relay label and the cause (not the client address, or every client
    would get a line of its own). The table forgets keys idle for longer than ``interval`` and
    never holds more than ``max_keys``.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0, max_keys: int = 1024):
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._seen: dict = {}  # key -> [time of the last line, lines held back since]

    def log(self, level: int, key, msg: str, *args, force: bool = False) -> bool:
        """Log ``msg % args`` unless ``key`` had a line within the interval; True if logged.
        ``force`` logs anyway (an event the operator caused, such as SIGHUP) and starts the
        key's interval from now."""
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval and not force:
            entry[1] += 1
            return False
        if entry is None and len(self._seen) >= self.max_keys:
            self._forget(now)
        held = entry[1] if entry is not None else 0
        self._seen[key] = [now, 0]
        if held:
            msg += f" ({held} more like this in the last {self.interval:g} s)"
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key, msg: str, *args) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def _forget(self, now: float) -> None:
        for key in [k for k, v in self._seen.items() if now - v[0] >= self.interval]:
            del self._seen[key]
        if len(self._seen) >= self.max_keys:  # all recent: start over rather than grow
            self._seen.clear()
