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


class Throttle:
    """At most ``burst`` log lines per ``window`` seconds for one kind of event (a flood of bad
    handshakes must not flood the log); the next line after a pause says how many were left
    out."""

    def __init__(self, burst: int = 10, window: float = 10.0):
        import time

        self._clock = time.monotonic
        self.burst = burst
        self.window = window
        self._window_end = 0.0
        self._used = 0
        self.suppressed = 0

    def __call__(self, logger: logging.Logger, level: int, msg: str, *args) -> None:
        now = self._clock()
        if now >= self._window_end:
            self._window_end = now + self.window
            self._used = 0
        if self._used >= self.burst:
            self.suppressed += 1
            return
        self._used += 1
        if self.suppressed:
            msg += " (%d similar lines left out)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        logger.log(level, msg, *args)
