"""What the index page's live charts show: bytes per second per relay, and ping latency.

:class:`TrafficHistory` turns cumulative byte totals (read from the connection registry every
few seconds) into a short ring of rates per relay; it is fed plain numbers, so it is tested
without sockets or clocks. :func:`ping_latencies` reads the ping histogram out of the Prometheus
text the metrics module renders, so the page shows exactly what Prometheus scrapes and needs
nothing from the pinger but the metric names design.md fixes.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

#: seconds between two samples of the registry
SAMPLE_INTERVAL = 2.0
#: samples kept per relay (5 minutes at the interval above)
HISTORY_POINTS = 150
PING_METRIC = "ehco_ping_response_duration_seconds"


class TrafficHistory:
    def __init__(self, points: int = HISTORY_POINTS):
        self.points = points
        self._last: dict[str, tuple[float, int, int]] = {}
        self.series: dict[str, deque[tuple[float, float, float]]] = {}

    def sample(self, now: float, totals: dict[str, list[int]], labels: Iterable[str]) -> None:
        """Record one point per relay in ``labels``: the up/down byte rate since the last call.

        ``totals`` maps relay label to cumulative [up, down] bytes (relays with no traffic yet
        may be missing). A relay's first point is 0 (no earlier total to compare with); relays
        no longer in ``labels`` are forgotten.
        """
        labels = list(labels)
        for gone in set(self.series) - set(labels):
            del self.series[gone]
            self._last.pop(gone, None)
        for label in labels:
            up, down = totals.get(label, (0, 0))
            ring = self.series.setdefault(label, deque(maxlen=self.points))
            last = self._last.get(label)
            if last is None or now <= last[0]:
                up_rate = down_rate = 0.0
            else:
                dt = now - last[0]
                # totals only grow; clamp anyway so a registry reset never draws a negative rate
                up_rate = max(0, up - last[1]) / dt
                down_rate = max(0, down - last[2]) / dt
            self._last[label] = (now, up, down)
            ring.append((now, up_rate, down_rate))

    def to_json(self) -> dict[str, dict[str, list]]:
        """Column form, as the chart library takes it: t (unix seconds), up, down (bytes/s)."""
        out = {}
        for label, ring in self.series.items():
            # unrounded: rate x interval gives back the exact bytes moved
            out[label] = {
                "t": [p[0] for p in ring],
                "up": [p[1] for p in ring],
                "down": [p[2] for p in ring],
            }
        return out


class PingLatency:
    """Latest ping latency per (label, host, ip), from the histogram's running sum and count.

    Each update reports the mean of the pings since the previous update; when no ping arrived
    in between, the last value stays.
    """

    def __init__(self) -> None:
        self._prev: dict[tuple[str, str, str], tuple[float, float]] = {}
        self.latest: dict[tuple[str, str, str], float] = {}

    def update(self, metrics_text: str) -> list[dict]:
        current = ping_sums(metrics_text)
        for key, (total, count) in current.items():
            prev_total, prev_count = self._prev.get(key, (0.0, 0.0))
            if count > prev_count:
                self.latest[key] = (total - prev_total) / (count - prev_count) * 1000.0
            elif count < prev_count and count > 0:  # counters restarted
                self.latest[key] = total / count * 1000.0
        self._prev = current
        for gone in set(self.latest) - set(current):
            del self.latest[gone]
        return self.to_json()

    def to_json(self) -> list[dict]:
        return [
            {"label": label, "host": host, "ip": ip, "latency_ms": round(ms, 3)}
            for (label, host, ip), ms in sorted(self.latest.items())
        ]


def ping_sums(metrics_text: str) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(label, host, ip) -> (sum of seconds, count) of the ping histogram in Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[tuple[str, str, str], list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != PING_METRIC:
            continue
        for sample in family.samples:
            if not sample.name.endswith(("_sum", "_count")):
                continue
            key = (sample.labels.get("label", ""), sample.labels.get("host", ""),
                   sample.labels.get("ip", ""))
            slot = sums.setdefault(key, [0.0, 0.0])
            slot[0 if sample.name.endswith("_sum") else 1] = float(sample.value)
    return {key: (v[0], v[1]) for key, v in sums.items()}
