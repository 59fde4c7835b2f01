"""``relay_sync_url``: report the connections closed since the last report, per relay.

Every ``relay_sync_interval`` seconds (default 60) the node POSTs, as ehco's connection manager
did::

    {"version": {"version": V, "short_commit": C},
     "stats": [{"relay_label", "up_bytes", "down_bytes", "connection_count", "latency_in_ms"}]}

``latency_in_ms`` is the mean dial time of the label's TCP connections in whole milliseconds
(ehco truncated each dial to milliseconds, then divided with integer division; so do we).

Where we differ from ehco, on purpose (docs/metrics.md):
- a failed POST (network error or a non-2xx answer) is logged and the figures are kept and sent
  with the next report, instead of ehco's exit (its sync error ended the process) or loss;
- UDP sessions are reported too (ehco's manager only saw TCP): their bytes and count are part of
  the relay's traffic; they have no dial, so they do not enter the latency mean;
- without a URL the closed connections are simply forgotten at each interval, as ehco did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import gevent

from ..build import build_info
from ..version import VERSION

log = logging.getLogger("ehco.relay_sync")

POST_TIMEOUT = 10.0


@dataclass
class LabelStats:
    up: int = 0
    down: int = 0
    count: int = 0
    latency_ms_sum: int = 0
    latency_n: int = 0

    def to_json(self, label: str) -> dict[str, Any]:
        return {
            "relay_label": label,
            "up_bytes": self.up,
            "down_bytes": self.down,
            "connection_count": self.count,
            "latency_in_ms": self.latency_ms_sum // self.latency_n if self.latency_n else 0,
        }


def accumulate(stats: dict[str, LabelStats], conns: Iterable[Any]) -> dict[str, LabelStats]:
    """Add closed connections to per-label totals (in place; also returned)."""
    for conn in conns:
        s = stats.setdefault(conn.relay_label, LabelStats())
        s.up += conn.up_bytes
        s.down += conn.down_bytes
        s.count += 1
        if conn.conn_type == "tcp":
            s.latency_ms_sum += int(conn.dial_ms)
            s.latency_n += 1
    return stats


def version_info() -> dict[str, str]:
    revision = build_info().get("revision", "")
    return {"version": VERSION,
            "short_commit": revision[:7] if revision and revision != "unknown" else ""}


def sync_payload(stats: dict[str, LabelStats]) -> dict[str, Any]:
    return {"version": version_info(),
            "stats": [s.to_json(label) for label, s in sorted(stats.items())]}


class RelaySyncService:
    def __init__(self, app: Any):
        self.app = app
        #: figures drained from the registry but not yet accepted by the sync URL
        self.pending: dict[str, LabelStats] = {}
        self._loop: gevent.Greenlet | None = None

    def start(self) -> None:
        self._loop = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=False)

    def _interval(self) -> float:
        cfg = self.app.config
        interval = cfg.relay_sync_interval if cfg is not None else 0
        return interval if interval > 0 else 60

    def _run(self) -> None:
        while True:
            gevent.sleep(self._interval())
            try:
                self.sync_once()
            except Exception:  # the sync must outlive any one bad round
                log.exception("relay sync failed")

    def sync_once(self) -> bool:
        """Drain the closed connections and POST them; True when the URL accepted them."""
        cfg = self.app.config
        url = cfg.relay_sync_url if cfg is not None else ""
        closed = self.app.registry.drain_closed_for_sync()
        if not url:
            self.pending.clear()
            log.debug("relay sync: no relay_sync_url, forgetting %d closed connections",
                      len(closed))
            return False
        accumulate(self.pending, closed)
        payload = sync_payload(self.pending)
        import requests

        try:
            resp = requests.post(url, json=payload, timeout=POST_TIMEOUT)
            resp.raise_for_status()
        except requests.RequestException as exc:
            log.error("relay sync: POST %s failed, keeping %d relay(s) of figures for the next "
                      "try: %s", url, len(self.pending), exc)
            return False
        log.info("relay sync: sent %d closed connections of %d relay(s) to %s",
                 sum(s.count for s in self.pending.values()), len(self.pending), url)
        self.pending = {}
        return True


def create_service(app: Any) -> RelaySyncService:
    return RelaySyncService(app)
