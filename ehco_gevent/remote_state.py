"""What the last dials to one remote did: the record behind the index page's relays table.

One :class:`RemoteState` per remote label (``RELAYLABEL-REMOTE``), kept by the connection
registry and written by the relay's dial path with two plain attribute updates per dial (no
lock, no greenlet: the hub runs one greenlet at a time). A remote whose every dial is refused
then reads as failing, with the error, instead of looking like an idle one.

Kept small and in one place on purpose: failover and health checks (issue 12) track their own
view of a remote's health; this is the observed history the operator sees.
"""

from __future__ import annotations

import time


class RemoteState:
    __slots__ = ("remote", "dials_ok", "dials_failed", "last_ok", "last_at", "last_ms",
                 "last_error")

    def __init__(self, remote: str):
        self.remote = remote
        self.dials_ok = 0
        self.dials_failed = 0
        #: None before the first dial, then whether the last dial succeeded
        self.last_ok: bool | None = None
        self.last_at = 0.0  # unix time of the last dial
        self.last_ms = 0.0  # latency of the last successful dial
        self.last_error = ""  # why the last failed dial failed

    def dial_ok(self, ms: float) -> None:
        self.dials_ok += 1
        self.last_ok = True
        self.last_ms = ms
        self.last_at = time.time()

    def dial_failed(self, error: str) -> None:
        self.dials_failed += 1
        self.last_ok = False
        self.last_error = error
        self.last_at = time.time()

    @property
    def status(self) -> str:
        """``idle`` (never dialled), ``ok`` or ``failing`` (the last dial failed)."""
        if self.last_ok is None:
            return "idle"
        return "ok" if self.last_ok else "failing"

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "dials_ok": self.dials_ok,
            "dials_failed": self.dials_failed,
            "last_dial_at": self.last_at or None,
            "last_dial_ms": round(self.last_ms, 3) if self.dials_ok else None,
            "last_error": self.last_error if self.last_ok is False else "",
        }
