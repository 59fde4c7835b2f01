"""Prometheus metrics under ehco 1.1.4's names, so its Grafana dashboard and alerts keep working.

Everything lives in one private ``CollectorRegistry`` per App (never the library's global one).
Every metric definition is here (names, buckets, which families carry the hostname), so a
process that aggregates other processes' figures (``--workers``) has one place to read them.
The constant label ``ehco_runner_hostname`` is put, as Go ehco put it, on the ``ehco_*``
series only, in one place (:class:`ConstLabels`); ``node_*``, ``process_*``, ``python_*`` and the
``go_*`` compatibility gauges carry none. The traffic figures are read from the
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
- ``ehco_traffic_handshake_duration{remote}`` milliseconds to dial the remote, in the Go client's
  default buckets (made for seconds: a mixed fleet aggregates it bucket by bucket with Go nodes),
  and ``ehco_gevent_handshake_duration_seconds{remote}``, the same dials in seconds, in buckets
  that resolve real dial times;
- ``ehco_gevent_greenlets`` and ``ehco_gevent_resident_memory_bytes``, and under the Go
  runtime's names, for Go ehco's dashboard, ``go_goroutines`` (live greenlets) and
  ``go_memstats_sys_bytes`` (the resident set size: what the process holds from the system);
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

import functools
import gc
import gzip
import logging
import socket
import weakref
from decimal import Decimal
from typing import Any, Iterator

import greenlet
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ..guards.fairness import yield_turn
from .dial_histograms import DialHistograms
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
#: Go ehco's handshake histogram: milliseconds observed into the Go client's default buckets
#: (prometheus.DefBuckets, made for seconds), so nearly every real dial lands in +Inf; kept
#: exactly so that Go and Python nodes aggregate bucket by bucket (the ``le`` strings too)
GO_DEFAULT_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
#: our own histogram of the same dials, in seconds, resolving 1 ms to past the 3 s dial timeout
HANDSHAKE_BUCKETS_SECONDS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
#: ehco's ping buckets, ExponentialBuckets(0.001, 2, 12): 1 ms doubling to 2.048 s ("1ms ~ 4s"
#: in its comment). Kept exactly, so histograms of Go and Python nodes sum bucket by bucket.
PING_BUCKETS = tuple(0.001 * 2 ** i for i in range(12))
#: only these families carry ``ehco_runner_hostname``, as in Go ehco (its ConstLabels)
HOSTNAME_PREFIX = "ehco_"


@functools.lru_cache(maxsize=1024)
def go_float(text: str) -> str:
    """A bucket bound (``le``) or quantile as Go's client writes it (strconv 'g', shortest):
    ``1`` and ``10`` where Python writes ``1.0`` and ``10.0``. Prometheus 2 compares ``le`` as a
    string, so a mixed fleet's histograms add up only when the strings are identical."""
    if text in ("+Inf", "-Inf", "NaN"):
        return text
    value = Decimal(repr(float(text))).normalize()
    sign, digits, exponent = value.as_tuple()
    exp = len(digits) - 1 + int(exponent)
    if -4 <= exp < 6:  # strconv.FormatFloat(v, 'g', -1, 64)
        return format(value, "f")
    mantissa = "".join(map(str, digits))
    mantissa = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


class ConstLabels:
    """Re-emits another collector's families as Go ehco's registry would: the constant labels
    added to every sample of an ``ehco_*`` family (only those), and histogram bounds written
    the way Go writes them (:func:`go_float`)."""

    def __init__(self, inner: Any, labels: dict[str, str]):
        self.inner = inner
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        # a scrape is the registry's collectors one after another in the web server's
        # greenlet: each starts with a turn for the rest of the hub, so the relays wait for at
        # most one collector's work, not for the whole page
        yield_turn()
        for family in self.inner.collect():
            const = self.labels if family.name.startswith(HOSTNAME_PREFIX) else {}
            bounds = family.type in ("histogram", "summary")
            if not const and not bounds:
                yield family
                continue
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                labels = {**const, **sample.labels}
                for key in ("le", "quantile") if bounds else ():
                    if key in labels:
                        labels[key] = go_float(labels[key])
                out.samples.append(sample._replace(labels=labels))
            yield out


#: greenlets alive when start-up's objects were frozen (gc.get_objects no longer lists them)
_frozen_greenlets: list[weakref.ref] = []


def freeze_startup_objects() -> None:
    """``gc.freeze()`` what start-up made: it lives as long as the process, so the cyclic
    collector's full collections under a high connection rate (and each scrape's walk below)
    need not visit it. The greenlets among it are remembered to keep their count right."""
    _frozen_greenlets.extend(weakref.ref(obj) for obj in gc.get_objects()
                             if isinstance(obj, greenlet.greenlet) and not obj.dead)
    gc.freeze()


#: objects looked at between two turns for the rest of the hub while counting greenlets
WALK_SLICE = 20_000


def count_live_greenlets() -> int:
    """Greenlets that have not finished. Found by walking the GC's objects, which costs a few
    milliseconds per 100k objects: fine once per scrape, not for a hot path, and done a
    generation and a slice at a time with a turn for the hub in between (the heap grows with
    the connections held; walked in one go it would stall every relay for the whole walk)."""
    live = sum(1 for ref in _frozen_greenlets if (g := ref()) is not None and not g.dead)
    for generation in range(3):
        objects = gc.get_objects(generation)
        for start in range(0, len(objects), WALK_SLICE):
            live += sum(1 for obj in objects[start:start + WALK_SLICE]
                        if isinstance(obj, greenlet.greenlet) and not obj.dead)
            yield_turn()
        del objects
    return live


def resident_memory_bytes() -> float:
    """The resident set size: what the process holds in RAM. It stands in for Go's
    ``go_memstats_sys_bytes`` (all memory the Go runtime obtained from the system), because in
    CPython the mapped but untouched part (thread stacks, malloc arenas) is large and says
    nothing about load, while RSS is what an operator compares with the host's memory."""
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

        greenlets, rss = count_live_greenlets(), resident_memory_bytes()
        yield GaugeMetricFamily("ehco_gevent_greenlets", "live greenlets in the process",
                                value=greenlets)
        yield GaugeMetricFamily("ehco_gevent_resident_memory_bytes",
                                "resident memory of the process in bytes", value=rss)
        # the Go runtime's names, for Go ehco's dashboard (its job variable and two panels)
        yield GaugeMetricFamily("go_goroutines", "ehco-gevent compatibility gauge: live "
                                "greenlets (Go: number of goroutines that currently exist)",
                                value=greenlets)
        yield GaugeMetricFamily("go_memstats_sys_bytes", "ehco-gevent compatibility gauge: "
                                "resident set size of the process (Go: bytes obtained from "
                                "the system)", value=rss)


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
        self.handshake = DialHistograms([
            ("ehco_traffic_handshake_duration",
             "dial (handshake) time to the remote in milliseconds", GO_DEFAULT_BUCKETS, 1),
            ("ehco_gevent_handshake_duration_seconds", "dial (handshake) time to the remote",
             HANDSHAKE_BUCKETS_SECONDS, 1000)])
        # observed by the ping service (observability/ping.py), when ping is on
        self.ping_duration = Histogram("ehco_ping_response_duration_seconds",
                                       "A histogram of latencies for ping responses.",
                                       ["ip", "host", "label"], buckets=PING_BUCKETS,
                                       registry=None)
        self.ping_requests = Counter("ehco_ping_requests_total", "Number of ping requests sent",
                                     ["ip", "host", "label"], registry=None)
        for collector in (TrafficCollector(self), ProxyUserCollector(app), self.handshake,
                          self.ping_duration, self.ping_requests,
                          HostCollector(),
                          ProcessCollector(registry=None), PlatformCollector(registry=None),
                          GCCollector(registry=CollectorRegistry())):
            self.add(collector)
        app.registry.open_listeners.append(self._on_open)

    def add(self, collector: Any) -> None:
        """Register a collector; its ``ehco_*`` series get the constant label."""
        self.registry.register(ConstLabels(collector, CONST_LABELS))

    def _on_open(self, conn: Any) -> None:
        if conn.conn_type == "tcp":  # UDP has no dial, and ehco observed none for it
            self.handshake.observe(conn.remote_label, conn.dial_ms)

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


def metrics_response(app: Any, accept_encoding: str = "") -> tuple[bytes, dict[str, str]]:
    """Body and headers of ``/metrics/``: gzip-compressed when the scraper accepts gzip
    (Prometheus always asks, and Go's promhttp answered so), plain otherwise."""
    from werkzeug.http import parse_accept_header

    body, content_type = render_metrics(app)
    headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
    if parse_accept_header(accept_encoding)["gzip"] > 0:
        body = gzip.compress(body, compresslevel=6)  # Go's gzip.DefaultCompression
        headers["Content-Encoding"] = "gzip"
    return body, headers


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
