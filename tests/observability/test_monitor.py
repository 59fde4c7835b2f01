"""End to end: a real ehco with its web server, scraped over HTTP; promtool on the scrape, the
scrape config and the alert rules; the dashboard's expressions against the names served."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest
import requests

from ehco_gevent.observability.metrics import parse_samples

from ..support import LOOPBACK, ROOT, LoggedProcess, free_port, free_tcp_udp_port, \
    require_program, roundtrip, sha, wait_for, wait_port, write_config

MONITOR = ROOT / "monitor"
#: lint messages promtool gives on purpose: names fixed by ehco's dashboard and node_exporter
#: (node_exporter's own scrape gets the same ones)
ALLOWED_LINT = [
    (re.compile(r"^ehco_traffic_network_transmit_bytes$"), 'counter metrics should have "_total"'),
    (re.compile(r"^ehco_traffic_current_connection_count$"), 'should not have "_count" suffix'),
    (re.compile(r"^node_memory_\w+$"), "'snake_case' not 'camelCase'"),
    (re.compile(r"^node_netstat_\w+$"), "'snake_case' not 'camelCase'"),
    (re.compile(r"^node_entropy_\w+_bits$"), 'use base unit "bytes" instead of "bits"'),
]


@pytest.fixture
def node(ehco, tmp_path, echo_server):
    """A real ehco: web server on, ping on, one relay ``lbl`` to a real echo server."""
    web_port, relay_port = free_port(), free_port()
    cfg = {"web_host": LOOPBACK, "web_port": web_port, "enable_ping": True,
           "relay_configs": [{"listen": f"{LOOPBACK}:{relay_port}", "label": "lbl",
                              "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]}]}
    proc = ehco("-c", write_config(tmp_path, cfg))
    proc.wait_log("Start Web Server at")
    wait_port(relay_port)
    return proc, f"http://{LOOPBACK}:{web_port}/metrics/", relay_port, echo_server.port


def require_ping(proc) -> None:
    """Skip, saying why, when this machine allows the process no ICMP socket (ehco then logs
    "ping disabled ..." and runs on); fail instead under EHCO_REQUIRE_INTEROP=1 (CI runs as
    root, where raw sockets always work)."""
    line = next((line for line in proc.log.splitlines() if "ping disabled" in line), None)
    if line is None:
        return
    if os.environ.get("EHCO_REQUIRE_INTEROP") == "1":
        pytest.fail(f"ping unavailable with EHCO_REQUIRE_INTEROP=1: {line}")
    pytest.skip(f"no ICMP socket for this user, ping metrics not checked: {line}")


def scrape(url: str) -> str:
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return resp.text


def sample_value(text: str, name: str, **labels) -> float | None:
    found = [s.value for s in parse_samples(text)
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.mark.workers
def test_echo_through_relay_counts_exactly_and_promtool_accepts_the_scrape(node, tmp_path):
    proc, url, relay_port, echo_port = node
    payload = bytes((i * 7 + 3) % 256 for i in range(300_000))
    assert sha(roundtrip(relay_port, payload)) == sha(payload)
    remote = f"lbl-{LOOPBACK}:{echo_port}"
    deadline = time.monotonic() + 10
    while True:
        text = scrape(url)
        got = {flow: sample_value(text, "ehco_traffic_network_transmit_bytes", remote=remote,
                                  type="tcp", flow=flow) for flow in ("read", "write")}
        if got == {"read": 600000, "write": 600000} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == {"read": 600000, "write": 600000}, proc.log
    assert sample_value(text, "ehco_alive_state") == 1
    assert sample_value(text, "ehco_traffic_current_connection_count", remote=remote,
                        type="tcp") == 0
    # wait_port's probe and the echo: two dials observed
    assert sample_value(text, "ehco_traffic_handshake_duration_count", remote=remote) == 2
    assert sample_value(text, "ehco_gevent_greenlets") >= 3
    assert sample_value(text, "ehco_gevent_resident_memory_bytes") > 10_000_000
    assert "# TYPE ehco_traffic_network_transmit_bytes counter" in text

    promtool = require_program("promtool", "prometheus")
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode in (0, 3), out.stdout + out.stderr  # 3: lint findings only
    assert not re.search(r"^error", out.stdout + out.stderr, re.M | re.I)
    unexpected = []
    for line in (out.stdout + out.stderr).splitlines():
        if not line.strip():
            continue
        name, _, problem = line.partition(" ")
        if not any(rx.match(name) and why in problem for rx, why in ALLOWED_LINT):
            unexpected.append(line)
    assert unexpected == []


@pytest.mark.workers
def test_dial_failures_are_counted(ehco, tmp_path):
    web_port, relay_port, dead_port = free_port(), free_port(), free_port()
    cfg = {"web_host": LOOPBACK, "web_port": web_port, "enable_ping": False,
           "relay_configs": [{"listen": f"{LOOPBACK}:{relay_port}", "label": "dead",
                              "tcp_remotes": [f"{LOOPBACK}:{dead_port}"]}]}
    proc = ehco("-c", write_config(tmp_path, cfg))
    proc.wait_log("Start Web Server at")
    wait_port(relay_port)  # one dial, refused
    with socket.create_connection((LOOPBACK, relay_port), timeout=10) as conn:  # and another
        try:
            assert conn.recv(100) == b""  # the relay closes the client when the dial fails
        except ConnectionResetError:
            pass
    deadline = time.monotonic() + 10
    while proc.log.count("failed") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    text = scrape(f"http://{LOOPBACK}:{web_port}/metrics/")
    assert sample_value(text, "ehco_gevent_dial_failures_total",
                        remote=f"dead-{LOOPBACK}:{dead_port}") == 2
    assert sample_value(text, "ehco_traffic_handshake_duration_count",
                        remote=f"dead-{LOOPBACK}:{dead_port}") is None


# -- monitor/ -------------------------------------------------------------------------------
def test_promtool_accepts_scrape_config_and_alert_rules():
    promtool = require_program("promtool", "prometheus")
    out = subprocess.run([promtool, "check", "config", str(MONITOR / "prometheus.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout + out.stderr
    out = subprocess.run([promtool, "check", "rules", str(MONITOR / "alerts.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 rules found" in out.stdout + out.stderr


RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{job="relay_nodes",instance="a:9000"}}'
        values: '1 1 0 0 0 0 0 0'
      - series: 'up{{job="relay_nodes",instance="b:9000"}}'
        values: '1 1 1 1 1 1 1 1'
      # b: remote r1 keeps failing, r2 fails sometimes but also succeeds
      - series: 'ehco_gevent_dial_failures_total{{job="relay_nodes",instance="b:9000",remote="lbl-r1:1"}}'
        values: '0+2x30'
      - series: 'ehco_gevent_dial_failures_total{{job="relay_nodes",instance="b:9000",remote="lbl-r2:1"}}'
        values: '0+1x30'
      - series: 'ehco_traffic_handshake_duration_count{{job="relay_nodes",instance="b:9000",remote="lbl-r2:1"}}'
        values: '0+5x30'
      # pings: h1 loses half, h2 answers all
      - series: 'ehco_ping_requests_total{{job="relay_nodes",instance="b:9000",ip="10.0.0.1",host="h1",label="lbl"}}'
        values: '0+2x30'
      - series: 'ehco_ping_response_duration_seconds_count{{job="relay_nodes",instance="b:9000",ip="10.0.0.1",host="h1",label="lbl"}}'
        values: '0+1x30'
      - series: 'ehco_ping_requests_total{{job="relay_nodes",instance="b:9000",ip="10.0.0.2",host="h2",label="lbl"}}'
        values: '0+2x30'
      - series: 'ehco_ping_response_duration_seconds_count{{job="relay_nodes",instance="b:9000",ip="10.0.0.2",host="h2",label="lbl"}}'
        values: '0+2x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: EhcoNodeDown
        exp_alerts:
          - exp_labels: {{job: relay_nodes, instance: "a:9000", severity: critical}}
            exp_annotations:
              summary: "relay node a:9000 is down"
              description: "a:9000 has not served /metrics/ (or not been running) for 2 minutes."
      - eval_time: 20m
        alertname: EhcoRelayRemoteNoSuccessfulDial
        exp_alerts:
          - exp_labels: {{job: relay_nodes, instance: "b:9000", remote: "lbl-r1:1", severity: warning}}
            exp_annotations:
              summary: "relay remote lbl-r1:1 on b:9000 cannot be reached"
              description: "20 dials to lbl-r1:1 failed in 10 minutes and none succeeded."
      - eval_time: 25m
        alertname: EhcoPingLoss
        exp_alerts:
          - exp_labels: {{job: relay_nodes, instance: "b:9000", ip: "10.0.0.1", host: h1, label: lbl, severity: warning}}
            exp_annotations:
              summary: "ping loss to h1 (lbl) from b:9000"
              description: "50% of the pings to 10.0.0.1 were lost in the last 10 minutes."
"""


def test_alert_rules_fire_on_the_right_series(tmp_path):
    promtool = require_program("promtool", "prometheus")
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(RULE_TESTS.format(rules=json.dumps(str(MONITOR / "alerts.yaml"))))
    out = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# -- the dashboard ---------------------------------------------------------------------------
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan", "le"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels, keywords left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        if s[m.end():].lstrip().startswith("(") or m.group() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def test_promql_name_extraction():
    assert promql_metric_names(
        'histogram_quantile(0.9, sum(rate(foo_bucket{a="b",c=~"x|y"}[$__rate_interval])) '
        'by (le, instance)) / on (instance) group_left bar - 1e3 * baz_total offset 5m') == {
        "foo_bucket", "bar", "baz_total"}
    assert promql_metric_names('count(up == 1) or vector(0)') == {"up"}


def dashboard_queries() -> list[str]:
    dash = json.loads((MONITOR / "dashboard.json").read_text())
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else None
        if query:
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert inner, query
            exprs.append(inner.group(1))
    return exprs


def test_dashboard_is_generated_and_parses():
    import runpy

    built = runpy.run_path(str(MONITOR / "build_dashboard.py"))["build"]()
    assert json.loads((MONITOR / "dashboard.json").read_text()) == built, \
        "monitor/dashboard.json is stale: run python monitor/build_dashboard.py"
    assert len(dashboard_queries()) > 20


def test_dashboard_expressions_are_valid_promql(tmp_path):
    """Every expression, with Grafana's variables filled in, goes through promtool's parser."""
    promtool = require_program("promtool", "prometheus")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr{i}",
         "expr": expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")}
        for i, expr in enumerate(dashboard_queries())]}]}
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(json.dumps(rules))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_queries_only_names_a_node_serves(node):
    proc, url, relay_port, _ = node
    assert roundtrip(relay_port, b"ping me") == b"ping me"
    deadline = time.monotonic() + 20
    while True:  # the first ping of the first host leaves at once
        text = scrape(url)
        served = {s.name for s in parse_samples(text)}
        if "ehco_ping_response_duration_seconds_bucket" in served or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    require_ping(proc)  # ICMP allowed here: 127.0.0.1 answered for real
    assert sample_value(text, "ehco_ping_requests_total", ip=LOOPBACK, host=LOOPBACK,
                        label="lbl") >= 1, proc.log
    assert sample_value(text, "ehco_ping_response_duration_seconds_count", ip=LOOPBACK,
                        host=LOOPBACK, label="lbl") >= 1, proc.log
    # families declared without samples yet (a counter of failures that never happened)
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        served |= {name + sfx for sfx in ("_bucket", "_sum", "_count")} \
            if kind == "histogram" else {name}
    used = set().union(*(promql_metric_names(e) for e in dashboard_queries()))
    assert {"ehco_traffic_network_transmit_bytes", "ehco_ping_requests_total",
            "node_cpu_seconds_total", "go_goroutines",
            "ehco_gevent_handshake_duration_seconds_bucket"} <= used
    assert used - served == set(), proc.log


# -- what a scraper gets: gzip, Go's bucket strings, node_exporter's types -------------------
def test_metrics_gzip_go_buckets_and_node_exporter_types(node):
    proc, url, relay_port, _ = node
    assert roundtrip(relay_port, b"dial once") == b"dial once"
    port = int(url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    conn.request("GET", "/metrics/", headers={"Accept-Encoding": "gzip"})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    assert resp.status == 200
    assert resp.getheader("Content-Encoding") == "gzip"
    assert raw[:2] == b"\x1f\x8b"  # the gzip magic: compressed on the wire
    text = gzip.decompress(raw).decode()
    assert resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    # without the header: plain text, as before
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert "Content-Encoding" not in plain.headers and plain.text.startswith("# HELP")

    les = {s.labels["le"] for s in parse_samples(text)
           if s.name == "ehco_traffic_handshake_duration_bucket"}
    assert les == {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
                   "10", "+Inf"}
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert {name: types.get(name) for name in NODE_EXPORTER_TYPES} == NODE_EXPORTER_TYPES
    hostname = [s for s in parse_samples(text) if "ehco_runner_hostname" in s.labels]
    assert hostname and all(s.name.startswith("ehco_") for s in hostname)


#: the families issue 11 names, with the types node_exporter gives them
NODE_EXPORTER_TYPES = {"node_network_up": "gauge", "node_disk_read_bytes_total": "counter",
                       "node_sockstat_TCP_inuse": "gauge",
                       "node_netstat_Tcp_ActiveOpens": "untyped",
                       "node_filefd_allocated": "gauge", "node_time_seconds": "gauge",
                       "go_goroutines": "gauge", "go_memstats_sys_bytes": "gauge"}


# -- Go ehco's own dashboard, imported unchanged, over a fleet of two ehco-gevent nodes --------
#: what Grafana puts for $__rate_interval on a 15 s step with our 1 s scrape interval:
#: max($__interval + scrape interval, 4 x scrape interval)
RATE_INTERVAL = "16s"


@pytest.fixture
def fleet(ehco, tmp_path, echo_server, udp_echo_server):
    """Two ehco-gevent nodes, each with a raw relay, a ws listener, a ws client relay to the
    other node's ws listener, and a UDP relay; ping on (every second, so that rates over a
    minute see two pings); traffic through every relay until the test ends."""
    ports = [{k: free_port() for k in ("web", "raw", "ws_in", "ws_out")} for _ in range(2)]
    for p in ports:
        p["udp"] = free_tcp_udp_port()
    nodes = []
    for i, p in enumerate(ports):
        other = ports[1 - i]
        cfg = {"web_host": LOOPBACK, "web_port": p["web"], "enable_ping": True,
               "relay_configs": [
                   {"label": "raw", "listen": f"{LOOPBACK}:{p['raw']}",
                    "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]},
                   {"label": "ws-in", "listen": f"{LOOPBACK}:{p['ws_in']}", "listen_type": "ws",
                    "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]},
                   {"label": "ws-out", "listen": f"{LOOPBACK}:{p['ws_out']}",
                    "transport_type": "ws", "tcp_remotes": [f"ws://{LOOPBACK}:{other['ws_in']}"]},
                   {"label": "udp", "listen": f"{LOOPBACK}:{p['udp']}",
                    "udp_remotes": [f"{LOOPBACK}:{udp_echo_server.port}"]}]}
        node_dir = tmp_path / f"node{i}"
        node_dir.mkdir()
        nodes.append(ehco("-c", write_config(node_dir, cfg), env={"EHCO_PING_INTERVAL": "1"}))
    for node, p in zip(nodes, ports):
        node.wait_log("Start Web Server at")
        for key in ("raw", "ws_in", "ws_out"):
            wait_port(p[key])

    stop = threading.Event()
    problems: list[str] = []

    def traffic():
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(5)
        try:
            while not stop.is_set():
                for p in ports:
                    for key in ("raw", "ws_out"):
                        payload = os.urandom(20_000)
                        if roundtrip(p[key], payload, timeout=10) != payload:
                            problems.append(f"{key} on {p['web']} changed the bytes")
                    udp.sendto(b"udp probe", (LOOPBACK, p["udp"]))
                    if udp.recvfrom(100)[0] != b"udp probe":
                        problems.append(f"udp on {p['web']} changed the datagram")
                stop.wait(0.3)
        except OSError as exc:
            problems.append(f"traffic failed: {exc!r}")
        finally:
            udp.close()

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    yield nodes, [f"{LOOPBACK}:{p['web']}" for p in ports], problems
    stop.set()
    worker.join(30)


@pytest.fixture
def prometheus(tmp_path):
    """A real Prometheus; ``start(targets)`` -> its base URL, scraping /metrics/ every second."""
    exe = require_program("prometheus", "prometheus")
    procs = []

    def start(targets: list[str]) -> str:
        port = free_port()
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                             "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "relay_nodes", "metrics_path": "/metrics/",
                                      "static_configs": [{"targets": targets}]}]}
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))
        procs.append(LoggedProcess(
            [exe, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address={LOOPBACK}:{port}"],
            tmp_path / "prometheus.log"))
        wait_port(port)
        base = f"http://{LOOPBACK}:{port}"
        # the port opens before the storage is ready; until then the API answers 503
        wait_for(lambda: requests.get(f"{base}/-/ready", timeout=10).status_code,
                 lambda status: status == 200, "Prometheus /-/ready", timeout=30)
        return base

    yield start
    for proc in procs:
        proc.stop()


def label_values(base: str, match: str, label: str) -> list[str]:
    """Grafana's ``label_values(MATCH, LABEL)``, through the same Prometheus API it calls."""
    resp = requests.get(f"{base}/api/v1/label/{label}/values", params={"match[]": match},
                        timeout=10).json()
    assert resp["status"] == "success", resp
    return resp["data"]


def grafana_regex(values: list[str]) -> str:
    """A multi-value variable inside ``=~"..."`` as Grafana writes it: (a|b), regex-escaped."""
    escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in values]
    return "(" + "|".join(escaped) + ")"


def resolve_variables(base: str) -> dict[str, str]:
    """$job, $instance and $remote of Go ehco's dashboard, in its own order."""
    from .go_ehco_dashboard import VARIABLES

    jobs = label_values(base, "go_goroutines", "job")
    if not jobs:
        return {}
    found = {"job": jobs[0]}
    for name in ("instance", "remote"):
        inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", VARIABLES[name])
        match = fill(inner.group(1), found)
        values = label_values(base, match, inner.group(2))
        if not values:
            return found
        found[name] = grafana_regex(values)
    return found


def fill(expr: str, variables: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${name}", value)
    return expr


def query_has_data(base: str, expr: str) -> bool:
    resp = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert resp["status"] == "success", (expr, resp)
    return any(row["value"][1] not in ("NaN", "+Inf", "-Inf") for row in resp["data"]["result"])


def test_go_ehcos_dashboard_works_unchanged_on_an_ehco_gevent_fleet(fleet, prometheus):
    from .go_ehco_dashboard import QUERIES

    nodes, targets, problems = fleet
    base = prometheus(targets)

    def dashboard():
        """(variables, the queries without data) as Grafana would see the dashboard now."""
        variables = resolve_variables(base)
        if len(variables) < 3:  # an empty variable leaves every panel that uses it blank
            return variables, QUERIES
        return variables, [q for q in QUERIES if not query_has_data(base, fill(q, variables))]

    variables, empty = wait_for(dashboard, lambda found: not found[1],
                                "Go ehco's dashboard: variables and queries without data",
                                timeout=60)
    assert variables["job"] == "relay_nodes", variables
    assert variables["instance"] == grafana_regex(sorted(targets))
    assert len(QUERIES) == 25 and empty == []
    assert problems == []
    for node in nodes:
        require_ping(node)
    # both nodes moved traffic on every relay: raw, ws (each node's ws-in and ws-out) and UDP
    remotes = label_values(base, 'ehco_traffic_network_transmit_bytes{job="relay_nodes"}',
                           "remote")
    assert {r.split("-127.0.0.1")[0].split("-ws://")[0] for r in remotes} == {
        "raw", "ws-in", "ws-out", "udp"}
