"""Prometheus metrics under ehco 1.1.4's names, so its Grafana dashboard and alerts keep working.

Everything lives in one private ``CollectorRegistry`` per App (never the library's global one),
and every series carries the constant label ``ehco_runner_hostname``, added in one place
(:class:`ConstLabels`) instead of in each collector. The traffic figures are read from the
:class:`~ehco_gevent.connections.ConnectionRegistry` when Prometheus scrapes: the pump only adds
integers to its connection record, it never touches a Prometheus object per chunk. The one thing
observed as it happens is the dial time, once per connection, through the registry's
``open_listeners``.

Names and meanings (design.md 6.2 and docs/metrics.md):

- ``ehco_alive_state`` 0 while starting, 1 once the relays run;
- ``ehco_traffic_current_connection_count{remote,type}`` open connections per remote;
- ``ehco_traffic_network_transmit_bytes{remote,type,flow}`` counted as ehco's conn.go did: it
  wraps both sockets of a relayed connection and adds every read to ``flow="read"`` and every
  write to ``flow="write"``, so a connection that moves U bytes up and D down adds U+D to each
  flow (an echo of N bytes adds 2N to read and 2N to write);
- ``ehco_traffic_handshake_duration{remote}`` milliseconds to dial the remote;
- ``ehco_gevent_greenlets`` and ``ehco_gevent_resident_memory_bytes``, our equivalents of the Go
  runtime's ``go_goroutines`` and ``go_memstats_sys_bytes``;
- ``ehco_gevent_dial_failures_total{remote}`` dials that failed (ehco had no such series; the
  "no successful dial" alert needs it to tell a broken remote from an idle one);
- ``ehco_proxy_user_traffic_bytes_total{user,flow="up|down"}`` and
  ``ehco_proxy_user_connections{user}`` for the embedded proxy's users (only when an
  ``xray_config`` is served; :class:`ProxyUserCollector`), in the quantity the panel is sent;
- host metrics under node_exporter's names (:mod:`ehco_gevent.observability.hostmetrics`), ping metrics
  (:mod:`ehco_gevent.observability.ping`), and the client library's ``process_*`` and ``python_*``.

The ``_total`` question: prometheus-client names a counter's samples ``NAME_total``, but ehco's
Go client exposed ``ehco_traffic_network_transmit_bytes`` without the suffix, and ehco's
dashboard, its ``remote`` variable and any alert rule built on it query that exact name. We
expose the exact old name, typed ``counter`` as Go did (rendered as an untyped family by the
library, whose TYPE line is then set to counter), and no second ``_total`` copy, which would
double the series and double-count any ``{__name__=~"ehco_traffic.*"}`` query. The price is the
one lint message of ``promtool check metrics`` about the missing suffix, which Go ehco got too.
"""

from __future__ import annotations

import gc
import logging
import socket
from typing import Any, Iterator

import greenlet
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .hostmetrics import HostCollector

log = logging.getLogger("ehco.metrics")

# ``_created`` series are an OpenMetrics idea the Go client never exposed; they would only add
# series next to ehco's names. This process owns its prometheus-client, so the switch is ours.
disable_created_metrics()

HOSTNAME = socket.gethostname()
CONST_LABELS = {"ehco_runner_hostname": HOSTNAME}

TRANSMIT = "ehco_traffic_network_transmit_bytes"
#: the classic text format; newer prometheus-client calls its default "version=1.0.0"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: dial times in milliseconds: ehco observed milliseconds into the Go client's default buckets
#: (0.005 .. 10, made for seconds), which put every real dial in +Inf; these fit milliseconds,
#: up to past the 3 s dial timeout
HANDSHAKE_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class ConstLabels:
    """Re-emits another collector's families with constant labels added to every sample."""

    def __init__(self, inner: Any, labels: dict[str, str]):
        self.inner = inner
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                out.samples.append(sample._replace(labels={**self.labels, **sample.labels}))
            yield out


def count_live_greenlets() -> int:
    """Greenlets that have not finished. Found by walking the GC's objects, which costs a few
    milliseconds per 100k objects: fine once per scrape, not for a hot path."""
    return sum(1 for obj in gc.get_objects()
               if isinstance(obj, greenlet.greenlet) and not obj.dead)


def resident_memory_bytes() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss)


class TrafficCollector:
    """ehco's traffic families, read from the connection registry at scrape time."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        registry = self.metrics.app.registry
        yield GaugeMetricFamily("ehco_alive_state", "ehco alive state: 0 starting, 1 running",
                                value=self.metrics.alive)

        totals = registry.totals()
        counts = registry.count_active()
        current = GaugeMetricFamily("ehco_traffic_current_connection_count",
                                    "current connections", labels=["remote", "type"])
        # a remote whose connections all ended reads 0, as ehco's gauge did, not nothing
        for key in sorted(set(totals) | set(counts)):
            current.add_metric(list(key), counts.get(key, 0))
        yield current

        transmit = Metric(TRANSMIT, "total transmitted bytes", "unknown")
        for (remote, conn_type), (up, down) in sorted(totals.items()):
            for flow in ("read", "write"):
                transmit.add_sample(TRANSMIT, {"remote": remote, "type": conn_type, "flow": flow},
                                    float(up + down))
        yield transmit

        failures = CounterMetricFamily("ehco_gevent_dial_failures",
                                       "dials to a remote that failed", labels=["remote"])
        for remote, n in sorted(registry.dial_failures.items()):
            failures.add_metric([remote], n)
        yield failures

        yield GaugeMetricFamily("ehco_gevent_greenlets", "live greenlets in the process",
                                value=count_live_greenlets())
        yield GaugeMetricFamily("ehco_gevent_resident_memory_bytes",
                                "resident memory of the process in bytes",
                                value=resident_memory_bytes())


class ProxyUserCollector:
    """Per-user traffic of the embedded proxy (design.md 8), read from its user store.

    The byte counters are the users' lifetime totals, which the panel sync never resets (it
    resets only its own "since the last report" counters), so they are true counters. They
    are in the quantity ehco sends the panel: twice the payload bytes seen on the client side.
    ``user`` is the panel's user_id, or ``TAG/EMAIL`` for a client written in the config.
    """

    def __init__(self, app: Any):
        self.app = app

    def collect(self) -> Iterator[Metric]:
        cfg = getattr(self.app, "config", None)
        if cfg is None or getattr(cfg, "xray_config", None) is None:
            return
        from ..proxy.users import collect as collect_users

        rows = collect_users()
        traffic = CounterMetricFamily(
            "ehco_proxy_user_traffic_bytes",
            "proxy user traffic in bytes as reported to the panel (2 x client-side payload)",
            labels=["user", "flow"])
        conns = GaugeMetricFamily("ehco_proxy_user_connections",
                                  "open proxy connections (and UDP sessions) of the user",
                                  labels=["user"])
        for row in rows:
            traffic.add_metric([row["user"], "up"], row["upload_bytes"])
            traffic.add_metric([row["user"], "down"], row["download_bytes"])
            conns.add_metric([row["user"]], row["connections"])
        yield traffic
        yield conns


class Metrics:
    """The metrics of one App: its registry, the handshake histogram and the alive state."""

    def __init__(self, app: Any):
        self.app = app
        self.alive = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.handshake = Histogram("ehco_traffic_handshake_duration",
                                   "dial (handshake) time to the remote in milliseconds",
                                   ["remote"], buckets=HANDSHAKE_BUCKETS_MS, registry=None)
        for collector in (TrafficCollector(self), ProxyUserCollector(app), self.handshake,
                          HostCollector(),
                          ProcessCollector(registry=None), PlatformCollector(registry=None),
                          GCCollector(registry=CollectorRegistry())):
            self.add(collector)
        app.registry.open_listeners.append(self._on_open)

    def add(self, collector: Any) -> None:
        """Register a collector; its series get the constant label."""
        self.registry.register(ConstLabels(collector, CONST_LABELS))

    def _on_open(self, conn: Any) -> None:
        if conn.conn_type == "tcp":  # UDP has no dial, and ehco observed none for it
            self.handshake.labels(conn.remote_label).observe(conn.dial_ms)

    def render(self) -> bytes:
        body = generate_latest(self.registry)
        # the one family that keeps Go's counter name without _total (see the module doc)
        return body.replace(f"# TYPE {TRANSMIT} untyped\n".encode(),
                            f"# TYPE {TRANSMIT} counter\n".encode(), 1)


def metrics_for(app: Any) -> Metrics:
    """The App's Metrics, made on first use (the service makes it at App creation)."""
    metrics = getattr(app, "metrics", None)
    if metrics is None:
        metrics = app.metrics = Metrics(app)
    return metrics


def render_metrics(app: Any) -> tuple[bytes, str]:
    """The body and Content-Type of ``/metrics/``: always the classic text format 0.0.4, the
    format Go ehco served, whatever the scraper's Accept header asks for."""
    return metrics_for(app).render(), CONTENT_TYPE


def parse_samples(text: str) -> list[Any]:
    """The samples of a Prometheus text body under their literal names (what PromQL selects).

    The client library's parser renames a counter's samples to ``NAME_total`` after its TYPE
    line; Prometheus does not. Parsing without the comment lines keeps the names as written."""
    from prometheus_client.parser import text_string_to_metric_families

    bare = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return [s for family in text_string_to_metric_families(bare) for s in family.samples]


def metric_names(text: str) -> set[str]:
    """Every sample name in a Prometheus text body."""
    return {sample.name for sample in parse_samples(text)}


class MetricsService:
    """Creates the App's metrics before any connection opens, and flips alive_state."""

    def __init__(self, app: Any):
        self.metrics = metrics_for(app)

    def start(self) -> None:
        self.metrics.alive = 1


def create_service(app: Any) -> MetricsService:
    return MetricsService(app)
