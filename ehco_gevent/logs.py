"""Logging set-up: one line per event on stderr, level names as ehco's (warn, not warning)."""

from __future__ import annotations

import logging
import sys

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
