"""The remotes' state made visible: ``/api/v1/relays/`` (JSON) and the Prometheus series
``ehco_gevent_remote_up{label,remote}`` (1 up, 0 down) and
``ehco_gevent_remote_last_dial_seconds{label,remote}`` (the last successful dial), next to the
per-remote ``ehco_gevent_dial_failures{remote}`` and ``ehco_traffic_handshake_duration{remote}``
that the metrics module keeps. The figures are read from each running relay's balancer at
request time; nothing is recorded per connection here.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric


def relay_states(app: Any) -> list[dict]:
    """Every running relay with its strategy, its health-check settings and each remote's
    state (see :meth:`ehco_gevent.remotes.balancer.RemoteState.to_json`)."""
    out = []
    for label, relay in list(app.relays.relays.items()):
        cfg = relay.cfg
        hc = cfg.health_check
        item = {
            "label": label,
            "listen": cfg.listen,
            "listen_type": cfg.listen_type,
            "transport_type": cfg.transport_type,
            "lb_strategy": cfg.lb_strategy,
            "max_fails": cfg.max_fails,
            "fail_timeout": cfg.fail_timeout,
            "health_check": None if hc is None else {"interval": hc.interval, "timeout": hc.timeout,
                                                     "rise": hc.rise, "fall": hc.fall},
            "send_proxy": cfg.send_proxy,
            "accept_proxy": cfg.accept_proxy,
            "tcp_remotes": relay.tcp_lb.snapshot() if relay.tcp_lb is not None else [],
            "udp_remotes": relay.udp.lb.snapshot() if relay.udp is not None else [],
        }
        out.append(item)
    return out


def remote_states(app: Any) -> dict[str, dict[str, dict]]:
    """``{relay label: {remote: state}}`` for pages that show one row per relay."""
    return {item["label"]: {r["remote"]: r for r in item["tcp_remotes"] + item["udp_remotes"]}
            for item in relay_states(app)}


class RemoteCollector:
    def __init__(self, app: Any):
        self.app = app

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ehco_gevent_remote_up",
                               "1 when the remote is up (health checks and passive failover), "
                               "0 when it is skipped", labels=["label", "remote"])
        last = GaugeMetricFamily("ehco_gevent_remote_last_dial_seconds",
                                 "seconds the last successful dial to the remote took",
                                 labels=["label", "remote"])
        for label, relay in list(self.app.relays.relays.items()):
            seen = set()  # a UDP remote at a TCP remote's address is shown once, as the TCP one
            for lb in (relay.tcp_lb, relay.udp.lb if relay.udp is not None else None):
                if lb is None:
                    continue
                for state, (address, is_up) in zip(lb.states, lb.up_states()):
                    if address in seen:
                        continue
                    seen.add(address)
                    up.add_metric([label, address], 1 if is_up else 0)
                    if state.last_dial_ms is not None:
                        last.add_metric([label, address], state.last_dial_ms / 1000)
        yield up
        yield last


class RemoteStateService:
    def __init__(self, app: Any):
        self.app = app
        from ..observability.metrics import metrics_for

        metrics_for(app).add(RemoteCollector(app))

    def blueprint(self):
        from flask import Blueprint

        bp = Blueprint("relays_state", __name__)

        @bp.get("/api/v1/relays/")
        def relays_json():
            return {"relays": relay_states(self.app)}

        return bp


def create_service(app: Any) -> RemoteStateService:
    return RemoteStateService(app)
