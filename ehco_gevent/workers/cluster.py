"""The node as one: what the supervisor shows of its workers.

The pages and the metrics read ``app.registry`` and ``app.relays`` as if the relays ran in the
supervisor. This module is that read side over the workers' answers: counters summed
(:func:`sum_counters`, a dead worker's last totals included), connection lists joined, a reload's
outcome and the balancers' remote rows merged, and the scrape-time refresh. The merges are
plain functions over the values the workers send, tested without processes; ``pool`` is the
:class:`~ehco_gevent.workers.supervisor.WorkerPool` that asks them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..config import RelayConfig
from ..connections import Connection, ConnectionRegistry
from ..server import Applied

if TYPE_CHECKING:  # the pool imports this module
    from .supervisor import WorkerPool


def add_into(into: dict, other: dict) -> dict:
    """Add ``other``'s counters to ``into``: values are numbers or lists of numbers."""
    for key, value in other.items():
        if isinstance(value, list):
            slot = into.setdefault(key, [0] * len(value))
            for i, v in enumerate(value):
                slot[i] += v
        else:
            into[key] = into.get(key, 0) + value
    return into


def sum_counters(sources: Iterable[dict]) -> dict:
    out: dict = {}
    for source in sources:
        add_into(out, source)
    return out


def merge_applied(dones: list[Applied]) -> Applied:
    """What a reload did across the workers: a relay failed if it failed in any worker (with
    that worker's reason), and counts as started or restarted only where it did not fail."""
    out = Applied(kept=min((d.kept for d in dones), default=0))
    for done in dones:
        for label, reason in done.failed.items():
            out.failed.setdefault(label, reason)
        for name in ("started", "restarted", "stopped"):
            mine = getattr(out, name)
            mine += [label for label in getattr(done, name) if label not in mine]
    out.started = [label for label in out.started if label not in out.failed]
    out.restarted = [label for label in out.restarted if label not in out.failed]
    return out


def merge_remote_rows(views: list[list[dict]]) -> list[dict]:
    """One relay's remotes as every worker's balancer sees them (``Balancer.snapshot`` rows,
    one list per worker, same remotes in the same order) merged into one row per remote: down
    if down in any worker (some clients are affected), counts summed, the newest change."""
    out = []
    for rows in zip(*views):
        row = dict(rows[0])
        row["up"] = all(r.get("up", True) for r in rows)
        downs = [r for r in rows if not r.get("up", True)]
        row["reason"] = downs[0].get("reason", "") if downs else ""
        if any(r.get("health_check") == "down" for r in rows):
            row["health_check"] = "down"
        for key in ("open_connections", "dials", "dial_failures"):
            if key in row:
                row[key] = sum(r.get(key) or 0 for r in rows)
        if "down_for_s" in row:
            row["down_for_s"] = max(r.get("down_for_s") or 0 for r in rows)
        newest = max(rows, key=lambda r: r.get("last_change") or 0)
        for key in ("last_change", "last_error"):
            if key in row:
                row[key] = newest.get(key)
        dialed = [r for r in rows if r.get("last_dial_ms") is not None]
        if "last_dial_ms" in row:
            row["last_dial_ms"] = max(dialed, key=lambda r: r.get("last_change") or 0).get(
                "last_dial_ms") if dialed else None
        out.append(row)
    return out


class MergedBalancer:
    """The read side of a relay's balancer (``snapshot``, ``states``, ``up_states``) over the
    rows the workers reported."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def snapshot(self) -> list[dict]:
        return [dict(row) for row in self.rows]

    @property
    def states(self) -> list[Any]:
        return [SimpleNamespace(address=row.get("remote"), last_dial_ms=row.get("last_dial_ms"))
                for row in self.rows]

    def up_states(self) -> list[tuple[str, bool]]:
        return [(row.get("remote"), bool(row.get("up", True))) for row in self.rows]


@dataclass
class RelayView:
    """What the pages read of a running relay (it runs in every worker): its config, and its
    balancers as the workers see them, merged (from their latest snapshots)."""

    cfg: RelayConfig
    pool: Any = field(default=None, repr=False, compare=False)
    started_at: float = field(default_factory=time.time)

    def _balancer(self, kind: str) -> MergedBalancer | None:
        if self.pool is None:
            return None
        self.pool.refresh()
        views = [h.last["balancers"].get(self.cfg.label, {}).get(kind)
                 for h in list(self.pool.handles.values()) if h.last is not None]
        views = [v for v in views if v is not None]
        return MergedBalancer(merge_remote_rows(views)) if views else None

    @property
    def tcp_lb(self) -> MergedBalancer | None:
        return self._balancer("tcp")

    @property
    def udp(self) -> Any:
        lb = self._balancer("udp")
        return SimpleNamespace(lb=lb) if lb is not None else None


class ClusterRegistry:
    """The supervisor's registry: its own connections (``local``, where the proxy server
    registers) and the workers', read as one. Anything not defined here is the local
    registry's (opening and closing the supervisor's own connections, open_listeners)."""

    def __init__(self, local: ConnectionRegistry, pool: WorkerPool):
        self.local = local
        self.pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def totals(self) -> dict:
        return sum_counters([self.local.totals(), *self.pool.counters("totals")])

    def relay_totals(self) -> dict:
        return sum_counters([self.local.relay_totals(), *self.pool.counters("relay_totals")])

    def count_active(self) -> dict:
        return sum_counters([self.local.count_active(), *self.pool.counters("count_active")])

    @property
    def dial_failures(self) -> dict:
        return sum_counters([self.local.dial_failures, *self.pool.counters("dial_failures")])

    @property
    def active(self) -> dict[int, Connection]:
        out = dict(self.local.active)
        for _, conns in self.pool.connections("connections", conn_type="active"):
            out.update((c.id, c) for c in conns)
        return out

    @property
    def closed(self) -> list[Connection]:
        """Newest first, as the local deque, and as many as it keeps."""
        merged = list(self.local.closed)
        for _, conns in self.pool.connections("connections", conn_type="closed"):
            merged += conns
        merged.sort(key=lambda c: c.ended_at or 0.0, reverse=True)
        return merged[:self.local.closed.maxlen]

    def drain_closed_for_sync(self) -> list[Connection]:
        out = self.local.drain_closed_for_sync()
        for _, conns in self.pool.connections("drain_sync"):
            out += conns
        return out

    def close_where(self, pred: Callable[[Connection], bool]) -> int:
        """Close the matching connections here and in the workers that hold them."""
        n = self.local.close_where(pred)
        for handle, conns in self.pool.connections("connections", conn_type="active"):
            ids = [c.id for c in conns if pred(c)]
            if ids:
                n += self.pool.close_in(handle, ids)
        return n


#: the process gauges that hold the node's whole figure: the supervisor's own plus the workers'
PROCESS_GAUGES = {"go_goroutines": "greenlets", "ehco_gevent_greenlets": "greenlets",
                  "go_memstats_sys_bytes": "memory", "ehco_gevent_resident_memory_bytes": "memory"}


class RefreshFirst:
    """A metrics registry that takes fresh worker snapshots before its collectors run, so a
    scrape shows the dial times and the byte counts of the same moment, and adds the workers'
    greenlets and memory to the process gauges that Go ehco's dashboard reads."""

    def __init__(self, inner: Any, pool: WorkerPool):
        self.inner = inner
        self.pool = pool

    def collect(self):
        # what happened a moment ago shows; the collectors then share this snapshot
        self.pool.refresh(0, process=True)
        workers = self.pool.process_totals()
        for family in self.inner.collect():
            key = PROCESS_GAUGES.get(family.name)
            if key in workers and len(family.samples) == 1:
                sample = family.samples[0]
                family.samples[0] = sample._replace(value=sample.value + workers[key])
            yield family

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class WorkersCollector:
    """``ehco_gevent_workers`` (running relay workers) and ``ehco_gevent_worker_restarts``
    (workers that died and were started again), so an alert can catch a crash loop."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("ehco_gevent_workers", "relay worker processes running",
                                value=len(self.pool.handles))
        yield CounterMetricFamily("ehco_gevent_worker_restarts",
                                  "relay worker processes that died and were started again",
                                  value=self.pool.restarts)
