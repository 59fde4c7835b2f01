"""Writes monitor/dashboard.json, the Grafana dashboard for ehco-gevent relay nodes.

The dashboard is generated so its panels stay consistent (same variables, same units) and can be
reviewed as code; run ``python monitor/build_dashboard.py`` after changing it. It queries only
names a node exposes (tests/observability/test_monitor.py checks every expression against a real
scrape), and works for Go ehco nodes too, except the ehco-gevent-only panels (dial time
quantiles, dial failures).
"""

from __future__ import annotations

import json
from pathlib import Path

SEL = 'job="$job",instance=~"$instance"'
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


class Layout:
    def __init__(self):
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        if self.x:
            self.y += 8
            self.x = 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": self._id(),
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def panel(self, title: str, targets: list[tuple[str, str]], unit: str = "short",
              kind: str = "timeseries", width: int = 12, height: int = 8, **extra) -> None:
        if self.x + width > 24:
            self.y += height
            self.x = 0
        panel = {
            "type": kind, "title": title, "id": self._id(), "datasource": DS,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["mean", "max", "lastNotNull"]}},
            "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend,
                         "refId": chr(ord("A") + i)} for i, (expr, legend) in enumerate(targets)],
        }
        panel.update(extra)
        self.panels.append(panel)
        self.x += width
        if self.x >= 24:
            self.x = 0
            self.y += height

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def variable(name: str, query: str, multi: bool, include_all: bool = False) -> dict:
    return {"name": name, "label": name, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"{name}-query"},
            "refresh": 2, "multi": multi, "includeAll": include_all, "sort": 1,
            "current": {}, "options": [], "hide": 0}


def build() -> dict:
    lay = Layout()

    lay.row("Relays")
    lay.panel("Nodes running", [('count(ehco_alive_state{job="$job"} == 1)', "nodes")],
              kind="stat", width=4, height=6)
    lay.panel("Open connections", [
        (f'sum(ehco_traffic_current_connection_count{{{SEL}}})', "open")],
        kind="stat", width=4, height=6)
    lay.panel("Traffic moved (read + write, all time)", [
        (f'sum(ehco_traffic_network_transmit_bytes{{{SEL},remote=~"$remote"}}) '
         'by (instance, remote)', "{{remote}}")],
        unit="bytes", kind="stat", width=16, height=6)
    lay.panel("Traffic rate per relay remote (read up, write down)", [
        (f'sum(irate(ehco_traffic_network_transmit_bytes{{{SEL},remote=~"$remote",flow="read"}}'
         '[$__rate_interval])) by (instance, remote, type) * 8',
         "{{instance}} {{remote}} {{type}} read"),
        (f'-sum(irate(ehco_traffic_network_transmit_bytes{{{SEL},remote=~"$remote",flow="write"}}'
         '[$__rate_interval])) by (instance, remote, type) * 8',
         "{{instance}} {{remote}} {{type}} write"),
    ], unit="bps", width=24)
    lay.panel("Current connections", [
        (f'sum(ehco_traffic_current_connection_count{{{SEL},remote=~"$remote",type="tcp"}}) '
         'by (instance, remote)', "{{instance}} {{remote}} tcp"),
        (f'sum(ehco_traffic_current_connection_count{{{SEL},remote=~"$remote",type="udp"}}) '
         'by (instance, remote)', "{{instance}} {{remote}} udp"),
    ])
    # our seconds histogram: Go's ehco_traffic_handshake_duration puts millisecond values in
    # buckets made for seconds, where nearly every dial lands in +Inf
    lay.panel("Dial (handshake) time p50 / p90 (ehco-gevent)", [
        ('histogram_quantile(0.5, sum(rate(ehco_gevent_handshake_duration_seconds_bucket'
         f'{{{SEL},remote=~"$remote"}}[$__rate_interval])) by (le, instance, remote))',
         "p50 {{instance}} {{remote}}"),
        ('histogram_quantile(0.9, sum(rate(ehco_gevent_handshake_duration_seconds_bucket'
         f'{{{SEL},remote=~"$remote"}}[$__rate_interval])) by (le, instance, remote))',
         "p90 {{instance}} {{remote}}"),
    ], unit="s")
    lay.panel("New connections per second", [
        (f'sum(rate(ehco_traffic_handshake_duration_count{{{SEL},remote=~"$remote"}}'
         '[$__rate_interval])) by (instance, remote)', "{{instance}} {{remote}}"),
    ], unit="cps")
    lay.panel("Failed dials per second (ehco-gevent)", [
        (f'sum(rate(ehco_gevent_dial_failures_total{{{SEL},remote=~"$remote"}}'
         '[$__rate_interval])) by (instance, remote)', "{{instance}} {{remote}}"),
    ], unit="cps")

    lay.row("Ping (smokeping-like)")
    lay.panel("Ping latency: median with the 10%-90% spread", [
        ('histogram_quantile(0.5, sum(rate(ehco_ping_response_duration_seconds_bucket'
         '{job="$job",instance=~"$instance"}[5m])) by (le, instance, label, host))',
         "median {{label}} {{host}}"),
        ('histogram_quantile(0.1, sum(rate(ehco_ping_response_duration_seconds_bucket'
         '{job="$job",instance=~"$instance"}[5m])) by (le, instance, label, host))',
         "p10 {{label}} {{host}}"),
        ('histogram_quantile(0.9, sum(rate(ehco_ping_response_duration_seconds_bucket'
         '{job="$job",instance=~"$instance"}[5m])) by (le, instance, label, host))',
         "p90 {{label}} {{host}}"),
    ], unit="s", width=24,
        fieldConfig={"defaults": {"unit": "s", "custom": {"fillOpacity": 0}}, "overrides": [
            {"matcher": {"id": "byRegexp", "options": "^p(10|90) .*"},
             "properties": [{"id": "custom.lineStyle", "value": {"fill": "dot"}},
                            {"id": "custom.lineWidth", "value": 1}]}]})
    lay.panel("Ping latency distribution", [
        ('sum(increase(ehco_ping_response_duration_seconds_bucket{job="$job",'
         'instance=~"$instance"}[$__interval])) by (le)', "{{le}}")],
        unit="s", kind="heatmap",
        options={"calculate": False, "yAxis": {"unit": "s"}, "color": {"scheme": "Oranges"}})
    lay.panel("Ping loss", [
        ('1 - sum(increase(ehco_ping_response_duration_seconds_count{job="$job",'
         'instance=~"$instance"}[5m])) by (instance, label, host) / sum(increase('
         'ehco_ping_requests_total{job="$job",instance=~"$instance"}[5m])) by '
         '(instance, label, host)', "{{instance}} {{label}} {{host}}")],
        unit="percentunit")

    lay.row("Node")
    lay.panel("Network traffic", [
        (f'irate(node_network_receive_bytes_total{{{SEL},device!="lo"}}[$__rate_interval]) * 8',
         "{{instance}} recv {{device}}"),
        (f'-irate(node_network_transmit_bytes_total{{{SEL},device!="lo"}}[$__rate_interval]) * 8',
         "{{instance}} trans {{device}}"),
    ], unit="bps")
    busy = ('sum by (instance) (irate(node_cpu_seconds_total{{{sel},mode=~"{mode}"}}'
            '[$__rate_interval])) / on (instance) group_left sum by (instance) '
            '(irate(node_cpu_seconds_total{{{sel}}}[$__rate_interval]))')
    lay.panel("CPU", [(busy.format(sel=SEL, mode=mode), name) for mode, name in (
        ("system", "system"), ("user", "user"), ("iowait", "iowait"), (".*irq", "irqs"),
        ("steal", "steal"), ("idle", "idle"))], unit="percentunit")
    lay.panel("Memory", [
        (f"node_memory_MemTotal_bytes{{{SEL}}}", "total"),
        (f"node_memory_MemTotal_bytes{{{SEL}}} - node_memory_MemFree_bytes{{{SEL}}} - "
         f"(node_memory_Cached_bytes{{{SEL}}} + node_memory_Buffers_bytes{{{SEL}}} + "
         f"node_memory_SReclaimable_bytes{{{SEL}}})", "used"),
        (f"node_memory_Cached_bytes{{{SEL}}} + node_memory_Buffers_bytes{{{SEL}}} + "
         f"node_memory_SReclaimable_bytes{{{SEL}}}", "cache + buffers"),
        (f"node_memory_MemFree_bytes{{{SEL}}}", "free"),
        (f"node_memory_SwapTotal_bytes{{{SEL}}} - node_memory_SwapFree_bytes{{{SEL}}}",
         "swap used"),
    ], unit="bytes")
    lay.panel("Disk space used", [
        (f"100 - node_filesystem_avail_bytes{{{SEL}}} * 100 / "
         f"node_filesystem_size_bytes{{{SEL}}}", "{{instance}} {{mountpoint}}")],
        unit="percent")
    lay.panel("Load", [(f"node_load{m}{{{SEL}}}", f"{{{{instance}}}} load{m}")
                       for m in (1, 5, 15)])
    # the Go runtime's names: goroutines on Go nodes, greenlets and RSS on ehco-gevent nodes
    lay.panel("Goroutines / greenlets", [
        (f"sum(go_goroutines{{{SEL}}}) by (instance)", "{{instance}}")], width=6)
    lay.panel("Process memory", [
        (f"sum(go_memstats_sys_bytes{{{SEL}}}) by (instance)", "{{instance}}")],
        unit="bytes", width=6)

    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana",
                        "version": "10.0.0"},
                       {"type": "datasource", "id": "prometheus", "name": "Prometheus",
                        "version": "1.0.0"}],
        "title": "ehco-gevent relay nodes",
        "uid": "ehco-gevent-relays",
        "description": "Relay traffic, connections, dial times, ping and host metrics of "
                       "ehco-gevent (and Go ehco) nodes.",
        "tags": ["ehco", "relay"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 38,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "DS_PROMETHEUS", "label": "datasource", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            variable("job", "label_values(ehco_alive_state, job)", multi=False),
            variable("instance", 'label_values(ehco_alive_state{job="$job"}, instance)',
                     multi=True, include_all=True),
            variable("remote", 'label_values(ehco_traffic_network_transmit_bytes{job="$job",'
                               'instance=~"$instance"}, remote)', multi=True, include_all=True),
        ]},
        "panels": lay.panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("dashboard.json")
    out.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
