"""The connection registry: every relayed connection, live and recently closed.

The pump adds bytes to a :class:`Connection` with plain integer additions (cheap enough on the
splice path, where one addition covers up to a pipe's worth of data); metrics and the web pages
read these records instead of the pump touching Prometheus objects per chunk.

Closed connections are kept in two places with different jobs: a bounded list for the web page
(newest first), and per-remote cumulative totals that never shrink, from which the Prometheus
counters are read. ``drain_closed_for_sync`` hands the closed connections since the previous
call to the relay sync (ehco's ``relay_sync_url``), which forgets them after reporting.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

#: closed connections kept for the web page and the sync; older ones are dropped
CLOSED_KEEP = 1000


@dataclass(eq=False)
class Connection:
    id: int
    relay_label: str
    conn_type: str  # "tcp" or "udp"
    client_addr: str
    remote: str  # the remote address as configured
    remote_label: str  # RELAYLABEL-REMOTE, the metrics label
    dial_ms: float = 0.0
    up_bytes: int = 0  # client -> remote
    down_bytes: int = 0  # remote -> client
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    #: called to drop this connection on purpose (relay stopped, user removed)
    closer: Callable[[], None] | None = field(default=None, repr=False)

    def add_up(self, n: int) -> None:
        self.up_bytes += n

    def add_down(self, n: int) -> None:
        self.down_bytes += n

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "relay_label": self.relay_label,
            "type": self.conn_type,
            "client": self.client_addr,
            "remote": self.remote,
            "up_bytes": self.up_bytes,
            "down_bytes": self.down_bytes,
            "dial_ms": round(self.dial_ms, 3),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class ConnectionRegistry:
    def __init__(self, closed_keep: int = CLOSED_KEEP):
        self._ids = itertools.count(1)
        self.active: dict[int, Connection] = {}
        self.closed: deque[Connection] = deque(maxlen=closed_keep)
        self._unsynced: deque[Connection] = deque(maxlen=closed_keep * 10)
        #: (remote_label, conn_type) -> [up, down] bytes of connections already closed
        self.closed_totals: dict[tuple[str, str], list[int]] = {}
        #: relay label -> [up, down] bytes of connections already closed (the web traffic chart)
        self.relay_closed_totals: dict[str, list[int]] = {}
        #: remote_label -> dials that failed (no Connection record exists for them)
        self.dial_failures: dict[str, int] = {}
        #: called with every new Connection (the handshake histogram observes dial times here)
        self.open_listeners: list[Callable[[Connection], None]] = []

    def open(self, relay_label: str, conn_type: str, client_addr: str, remote: str,
             remote_label: str, dial_ms: float = 0.0) -> Connection:
        conn = Connection(next(self._ids), relay_label, conn_type, client_addr, remote,
                          remote_label, dial_ms)
        self.active[conn.id] = conn
        for listener in self.open_listeners:
            listener(conn)
        return conn

    def dial_failed(self, remote_label: str) -> None:
        """Count a dial that failed, so an alert can tell a broken remote from an idle one."""
        self.dial_failures[remote_label] = self.dial_failures.get(remote_label, 0) + 1

    def close(self, conn: Connection) -> None:
        if self.active.pop(conn.id, None) is None:
            return
        conn.ended_at = time.time()
        conn.closer = None
        totals = self.closed_totals.setdefault((conn.remote_label, conn.conn_type), [0, 0])
        totals[0] += conn.up_bytes
        totals[1] += conn.down_bytes
        relay = self.relay_closed_totals.setdefault(conn.relay_label, [0, 0])
        relay[0] += conn.up_bytes
        relay[1] += conn.down_bytes
        self.closed.appendleft(conn)
        self._unsynced.append(conn)

    def totals(self) -> dict[tuple[str, str], list[int]]:
        """Bytes up/down per (remote_label, conn_type) so far, open connections included."""
        out = {key: list(v) for key, v in self.closed_totals.items()}
        for conn in list(self.active.values()):
            t = out.setdefault((conn.remote_label, conn.conn_type), [0, 0])
            t[0] += conn.up_bytes
            t[1] += conn.down_bytes
        return out

    def relay_totals(self) -> dict[str, list[int]]:
        """Bytes up/down per relay label so far, open connections included."""
        out = {label: list(v) for label, v in self.relay_closed_totals.items()}
        for conn in list(self.active.values()):
            t = out.setdefault(conn.relay_label, [0, 0])
            t[0] += conn.up_bytes
            t[1] += conn.down_bytes
        return out

    def count_active(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for conn in list(self.active.values()):
            key = (conn.remote_label, conn.conn_type)
            out[key] = out.get(key, 0) + 1
        return out

    def drain_closed_for_sync(self) -> list[Connection]:
        items = list(self._unsynced)
        self._unsynced.clear()
        return items

    def close_where(self, pred: Callable[[Connection], bool]) -> int:
        """Drop every active connection matching pred; returns how many were asked to close."""
        victims: Iterable[Connection] = [c for c in list(self.active.values()) if pred(c)]
        n = 0
        for conn in victims:
            if conn.closer is not None:
                conn.closer()
                n += 1
        return n
