"""Logging set-up: one line per event on stderr, level names as ehco's (warn, not warning)."""

from __future__ import annotations

import logging
import sys

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


class RateLimitedLogger:
    """At most one line per cause per ``interval`` seconds, for events an attacker can repeat
    at will (junk floods, slow clients timing out): the first occurrence is logged at once,
    the rest are counted and reported with the next line of the same cause ("and N more")."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0):
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, cause: str, msg: str, *args) -> bool:
        """Log ``msg % args`` unless ``cause`` was logged within the interval; True if logged."""
        import time

        now = time.monotonic()
        last = self._last.get(cause)
        if last is not None and now - last < self.interval:
            self._suppressed[cause] = self._suppressed.get(cause, 0) + 1
            return False
        self._last[cause] = now
        more = self._suppressed.pop(cause, 0)
        if more:
            msg += " (and %d more since the last report)"
            args = (*args, more)
        self.logger.log(level, msg, *args)
        return True
