"""render_metrics over a real in-process ConnectionRegistry (and a real in-process relay)."""

from __future__ import annotations

import socket as _stdsocket
from types import SimpleNamespace

import gevent
from gevent import socket

from ehco_gevent.config import parse_config
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.observability.metrics import (CONST_LABELS, HOSTNAME, ConstLabels,
                                              MetricsService, go_float,
                                              metric_names, metrics_for, parse_samples,
                                              render_metrics)
from ehco_gevent.relay import Relay

from ..support import LOOPBACK


def make_app(cfg=None):
    """An App's parts this module reads; its metrics made first, as MetricsService does at
    App creation (the handshake histogram observes connections from then on)."""
    app = SimpleNamespace(registry=ConnectionRegistry(), config=cfg)
    metrics_for(app)
    return app


def scrape(app) -> list:
    body, content_type = render_metrics(app)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return parse_samples(body.decode())


def value(samples, name, **labels) -> float:
    found = [s.value for s in samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, [s for s in samples if s.name == name])
    return found[0]


def test_transmit_bytes_count_both_legs_as_ehco():
    app = make_app()
    reg = app.registry
    a = reg.open("lbl", "tcp", "1.1.1.1:1", "127.0.0.1:9", "lbl-127.0.0.1:9", 2.0)
    a.add_up(1000)
    a.add_down(250)
    b = reg.open("lbl", "tcp", "1.1.1.1:2", "127.0.0.1:9", "lbl-127.0.0.1:9", 4.0)
    b.add_up(7)
    reg.close(a)
    u = reg.open("lbl", "udp", "1.1.1.1:3", "127.0.0.1:53", "lbl-127.0.0.1:53")
    u.add_up(10)
    u.add_down(30)
    fams = scrape(app)
    # an echo-like flow: every byte is read once and written once, up and down
    for flow in ("read", "write"):
        assert value(fams, "ehco_traffic_network_transmit_bytes", remote="lbl-127.0.0.1:9",
                     type="tcp", flow=flow) == 1257
        assert value(fams, "ehco_traffic_network_transmit_bytes", remote="lbl-127.0.0.1:53",
                     type="udp", flow=flow) == 40
    assert value(fams, "ehco_traffic_current_connection_count", remote="lbl-127.0.0.1:9",
                 type="tcp") == 1
    assert value(fams, "ehco_traffic_current_connection_count", remote="lbl-127.0.0.1:53",
                 type="udp") == 1
    reg.close(b)
    reg.close(u)
    fams = scrape(app)
    # closed connections keep counting; the gauge goes to 0 instead of vanishing
    assert value(fams, "ehco_traffic_network_transmit_bytes", remote="lbl-127.0.0.1:9",
                 type="tcp", flow="read") == 1257
    assert value(fams, "ehco_traffic_current_connection_count", remote="lbl-127.0.0.1:9",
                 type="tcp") == 0
    # the handshake histogram saw the two TCP dials (2 ms and 4 ms), not the UDP session,
    # in milliseconds and Go's default buckets with Go's le strings ...
    assert value(fams, "ehco_traffic_handshake_duration_count", remote="lbl-127.0.0.1:9") == 2
    assert value(fams, "ehco_traffic_handshake_duration_sum", remote="lbl-127.0.0.1:9") == 6.0
    les = [s.labels["le"] for s in fams if s.name == "ehco_traffic_handshake_duration_bucket"
           and s.labels["remote"] == "lbl-127.0.0.1:9"]
    assert les == GO_LE
    assert value(fams, "ehco_traffic_handshake_duration_bucket", remote="lbl-127.0.0.1:9",
                 le="2.5") == 1
    assert value(fams, "ehco_traffic_handshake_duration_bucket", remote="lbl-127.0.0.1:9",
                 le="5") == 2
    assert value(fams, "ehco_traffic_handshake_duration_bucket", remote="lbl-127.0.0.1:9",
                 le="1") == 0
    # ... and in seconds, in buckets that resolve them
    seconds = "ehco_gevent_handshake_duration_seconds"
    assert value(fams, f"{seconds}_sum", remote="lbl-127.0.0.1:9") == 0.006
    assert value(fams, f"{seconds}_bucket", remote="lbl-127.0.0.1:9", le="0.001") == 0
    assert value(fams, f"{seconds}_bucket", remote="lbl-127.0.0.1:9", le="0.0025") == 1
    assert value(fams, f"{seconds}_bucket", remote="lbl-127.0.0.1:9", le="0.005") == 2
    assert not [s for s in fams if "handshake_duration" in s.name
                and s.labels["remote"] == "lbl-127.0.0.1:53"]


#: the le strings of Go's client for prometheus.DefBuckets (as a Go ehco node exposes them)
GO_LE = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]


def test_go_float_writes_bounds_as_go_does():
    assert [go_float(v) for v in ("1.0", "10.0", "0.005", "2.048", "+Inf", "100000.0",
                                  "1000000.0", "1e-05", "1234567.0")] == [
        "1", "10", "0.005", "2.048", "+Inf", "100000", "1e+06", "1e-05", "1.234567e+06"]


def test_exposition_keeps_gos_names_and_types():
    app = make_app()
    app.registry.open("lbl", "tcp", "c", "r:1", "lbl-r:1").add_up(1)
    text = render_metrics(app)[0].decode()
    assert "# TYPE ehco_traffic_network_transmit_bytes counter\n" in text
    assert "ehco_traffic_network_transmit_bytes_total" not in text
    assert "# TYPE ehco_traffic_current_connection_count gauge\n" in text
    assert "# TYPE ehco_traffic_handshake_duration histogram\n" in text
    assert "# TYPE ehco_alive_state gauge\n" in text
    assert "_created" not in text
    names = metric_names(text)
    for name in ("node_network_receive_bytes_total", "node_network_transmit_bytes_total",
                 "node_cpu_seconds_total", "node_memory_MemTotal_bytes",
                 "node_memory_MemFree_bytes", "node_memory_Cached_bytes",
                 "node_memory_SwapTotal_bytes", "node_load1", "node_load5", "node_load15",
                 "node_filesystem_avail_bytes", "node_uname_info", "ehco_gevent_greenlets",
                 "ehco_gevent_resident_memory_bytes", "process_resident_memory_bytes"):
        assert name in names, name


def test_runner_hostname_only_on_ehco_series_as_go_puts_it():
    app = make_app()
    app.registry.open("lbl", "tcp", "c", "r:1", "lbl-r:1", 1.0)
    app.registry.dial_failed("lbl-r:2")
    metrics_for(app).ping_requests.labels("127.0.0.1", "h", "lbl").inc()
    samples = scrape(app)
    assert len(samples) > 50
    assert CONST_LABELS == {"ehco_runner_hostname": HOSTNAME}
    ehco = [s for s in samples if s.name.startswith("ehco_")]
    others = [s for s in samples if not s.name.startswith("ehco_")]
    assert {s.name.split("_")[0] for s in others} >= {"node", "process", "python", "go"}
    assert [s.name for s in ehco if s.labels.get("ehco_runner_hostname") != HOSTNAME] == []
    assert [s.name for s in others if "ehco_runner_hostname" in s.labels] == []


def test_go_runtime_compatibility_gauges():
    """go_goroutines and go_memstats_sys_bytes are Go ehco's dashboard's job variable and two
    panels: live greenlets and the process's resident memory (/proc/self/status VmRSS)."""
    import gc

    import greenlet

    app = make_app()
    before = value(scrape(app), "go_goroutines")
    parked = [gevent.spawn(gevent.sleep, 30) for _ in range(25)]
    gevent.sleep(0)
    try:
        samples = scrape(app)
        assert value(samples, "go_goroutines") == before + 25
        assert value(samples, "go_goroutines") == value(samples, "ehco_gevent_greenlets")
        live = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)
        assert value(samples, "go_goroutines") == live
        with open("/proc/self/status") as f:
            rss_kb = int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
        # the same quantity the kernel reports, allowing for pages touched in between
        assert abs(value(samples, "go_memstats_sys_bytes") - rss_kb * 1024) < 8 * 2 ** 20
    finally:
        gevent.killall(parked)
    assert value(scrape(app), "go_goroutines") == before


def test_alive_state_and_dial_failures():
    app = make_app()
    service = MetricsService(app)
    assert value(scrape(app), "ehco_alive_state") == 0
    service.start()
    assert value(scrape(app), "ehco_alive_state") == 1
    app.registry.dial_failed("lbl-r:1")
    app.registry.dial_failed("lbl-r:1")
    assert value(scrape(app), "ehco_gevent_dial_failures_total", remote="lbl-r:1") == 2


def _echo_server() -> socket.socket:
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(16)

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept():
        while True:
            conn, _ = listener.accept()
            gevent.spawn(serve, conn)

    gevent.spawn(accept)
    return listener


def test_in_process_relay_counts_exactly_and_greenlets_show():
    """A real relay in this process: an echo of N bytes reads 2N on each flow."""
    echo = _echo_server()
    cfg, _ = parse_config({"relay_configs": [{
        "listen": f"{LOOPBACK}:0", "label": "lbl",
        "tcp_remotes": [f"{LOOPBACK}:{echo.getsockname()[1]}"]}]})
    app = make_app(cfg)
    relay = Relay(cfg.relay_configs[0], app.registry)
    relay.start()
    payload = bytes(range(256)) * 400  # 102400 bytes
    try:
        client = socket.create_connection((LOOPBACK, relay.tcp_port))
        client.sendall(payload)
        client.shutdown(_stdsocket.SHUT_WR)
        got = bytearray()
        while data := client.recv(65536):
            got += data
        client.close()
        assert bytes(got) == payload
        with gevent.Timeout(10):
            while app.registry.active:
                gevent.sleep(0.01)
        remote = f"lbl-{LOOPBACK}:{echo.getsockname()[1]}"
        fams = scrape(app)
        for flow in ("read", "write"):
            assert value(fams, "ehco_traffic_network_transmit_bytes", remote=remote,
                         type="tcp", flow=flow) == 2 * len(payload)
        assert value(fams, "ehco_traffic_handshake_duration_count", remote=remote) == 1
        assert value(fams, "ehco_gevent_greenlets") >= 2  # the hub and the accept loops at least
    finally:
        relay.stop()
        relay.drop_connections()
        echo.close()


def test_metrics_response_gzips_only_when_asked():
    import gzip

    from ehco_gevent.observability.metrics import metrics_response

    app = make_app()
    plain, headers = metrics_response(app, "")
    assert "Content-Encoding" not in headers and plain.startswith(b"# HELP")
    for asked in ("gzip", "gzip, deflate", "deflate, gzip;q=0.5", "*"):
        body, headers = metrics_response(app, asked)
        assert headers["Content-Encoding"] == "gzip", asked
        assert gzip.decompress(body).startswith(b"# HELP")
    for refused in ("identity", "gzip;q=0", "deflate"):
        body, headers = metrics_response(app, refused)
        assert "Content-Encoding" not in headers and body.startswith(b"# HELP"), refused
    assert headers["Vary"] == "Accept-Encoding"


def test_each_collector_of_a_scrape_starts_after_a_turn_for_ready_connections():
    """A scrape is several milliseconds of work in the web server's greenlet; the relays get a
    turn (with I/O polled) before each collector, not only after the whole page."""
    from ..guards.test_fairness import parked_reader

    class Probe:
        def collect(self):
            saw.append(list(seen))
            return iter(())

    reader, seen, socks = parked_reader()
    saw = []
    list(ConstLabels(Probe(), CONST_LABELS).collect())
    assert saw == [[b"ready"]]  # the ready socket was read before the collector ran
    reader.join()
    for sock in socks:
        sock.close()
