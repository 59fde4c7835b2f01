"""ICMP packets as plain functions, and real pings to loopback: raw sockets (as root), datagram
sockets (in a private network namespace that allows them), and neither (as an unprivileged user
where datagram sockets are not allowed)."""

from __future__ import annotations

import json
import os
import socket as _stdsocket
import struct
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import gevent
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehco_gevent.observability import ping
from ehco_gevent.config import parse_config
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.observability.metrics import metrics_for, parse_samples, render_metrics

from ..support import ROOT, require_program

idents = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=64)


@given(idents, idents, payloads)
def test_echo_request_checksums_to_zero(ident, seq, payload):
    packet = ping.build_echo_request(ident, seq, payload)
    assert packet[0] == 8 and packet[1] == 0
    assert ping.checksum(packet) == 0
    assert struct.unpack("!HH", packet[4:8]) == (ident, seq)


@given(idents, idents, payloads)
def test_echo_reply_round_trip(ident, seq, payload):
    reply = ping.build_echo(ping.ICMP_ECHO_REPLY, ident, seq, payload)
    assert ping.parse_echo_reply(reply) == (ident, seq, payload)
    # requests, truncated replies and ICMPv6 types are not replies
    assert ping.parse_echo_reply(ping.build_echo_request(ident, seq, payload)) is None
    assert ping.parse_echo_reply(reply[:7]) is None
    v6 = ping.build_echo(ping.ICMP6_ECHO_REPLY, ident, seq, payload)
    assert ping.parse_echo_reply(v6) is None
    assert ping.parse_echo_reply(v6, v6=True) == (ident, seq, payload)


@given(idents, idents, payloads, st.data())
def test_corrupted_reply_is_rejected(ident, seq, payload, data):
    reply = bytearray(ping.build_echo(ping.ICMP_ECHO_REPLY, ident, seq, payload))
    bit = data.draw(st.integers(0, len(reply) * 8 - 1))
    reply[bit // 8] ^= 1 << (bit % 8)
    assert ping.parse_echo_reply(bytes(reply)) is None


def test_checksum_known_value():
    # RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2, complement 220d
    assert ping.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert ping.checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length pads with a zero byte


def test_strip_ipv4_header():
    icmp = ping.build_echo(ping.ICMP_ECHO_REPLY, 1, 2, b"x")
    for ihl in (5, 6):
        header = bytes([0x40 | ihl]) + bytes(ihl * 4 - 1)
        assert ping.strip_ipv4_header(header + icmp) == icmp
    assert ping.strip_ipv4_header(b"") == b""
    assert ping.strip_ipv4_header(b"\x60" + bytes(60)) == b""  # not IPv4


def test_targets_are_distinct_hosts_with_the_first_label():
    cfg, _ = parse_config({"relay_configs": [
        {"listen": "127.0.0.1:1", "label": "a", "tcp_remotes": ["h1.example:80", "10.0.0.1:443"]},
        {"listen": "127.0.0.1:2", "label": "b", "transport_type": "ws",
         "tcp_remotes": ["ws://h1.example:8080/x", "wss://h2.example:443"]},
        {"listen": "127.0.0.1:3", "label": "c", "tcp_remotes": ["[::1]:22"],
         "udp_remotes": ["u.example:53"]},
        {"listen": "127.0.0.1:4", "label": "d", "udp_remotes": ["only-udp.example:53"]},
    ]})
    assert ping.ping_targets(cfg.relay_configs) == {
        "h1.example": "a", "10.0.0.1": "a", "h2.example": "b", "::1": "c"}


def test_ping_loopback_for_real():
    try:
        rtt = ping.ping_once("127.0.0.1", _stdsocket.AF_INET, seq=1, ident=4242, timeout=5)
    except ping.PingUnavailable as exc:
        pytest.skip(f"no ICMP socket here: {exc}")
    assert rtt is not None  # our echo request's reply came back (matched by ident and seq)
    if _stdsocket.has_ipv6 and os.path.exists("/proc/net/if_inet6"):
        rtt6 = ping.ping_once("::1", _stdsocket.AF_INET6, seq=1, ident=4242, timeout=5)
        assert rtt6 is not None


def _app(relays, enable_ping=True):
    cfg, _ = parse_config({"enable_ping": enable_ping, "relay_configs": relays})
    app = SimpleNamespace(registry=ConnectionRegistry(), config=cfg)
    metrics_for(app)
    return app


def _samples(app, name):
    return [s for s in parse_samples(render_metrics(app)[0].decode()) if s.name == name]


def test_service_pings_follows_reloads_and_exposes_metrics():
    try:
        ping.open_icmp_socket(_stdsocket.AF_INET)[0].close()
    except ping.PingUnavailable as exc:
        pytest.skip(f"no ICMP socket here: {exc}")
    relays = [{"listen": "127.0.0.1:1", "label": "one", "tcp_remotes": ["127.0.0.1:9"]},
              {"listen": "127.0.0.1:2", "label": "two", "tcp_remotes": ["127.0.0.2:9",
                                                                        "127.0.0.1:10"]}]
    app = _app(relays)
    service = ping.PingService(app, interval=0.4, timeout=2)
    service.start()
    try:
        assert set(service.targets) == {"127.0.0.1", "127.0.0.2"}
        with gevent.Timeout(15):
            while not all(_samples_count(app, h) >= 2 for h in service.targets):
                gevent.sleep(0.1)
        latest = service.latest()
        assert set(latest) == {"127.0.0.1", "127.0.0.2"}
        assert all(isinstance(ms, float) and 0 < ms < 2000 for ms in latest.values())
        req = {(s.labels["host"], s.labels["ip"], s.labels["label"]): s.value
               for s in _samples(app, "ehco_ping_requests_total")}
        assert set(req) == {("127.0.0.1", "127.0.0.1", "one"), ("127.0.0.2", "127.0.0.2", "two")}
        buckets = sorted(float(s.labels["le"]) for s in
                         _samples(app, "ehco_ping_response_duration_seconds_bucket")
                         if s.labels["host"] == "127.0.0.1")
        assert buckets[0] == 0.001 and buckets[-2] == 2.048 and buckets[-1] == float("inf")

        # reload: 127.0.0.2 gone, its series too; 127.0.0.1 keeps pinging
        cfg2, _ = parse_config({"relay_configs": relays[:1]})
        app.config = cfg2
        service.on_config(cfg2)
        assert set(service.targets) == {"127.0.0.1"}
        hosts = {s.labels["host"] for s in _samples(app, "ehco_ping_requests_total")}
        assert hosts == {"127.0.0.1"}

        cfg3, _ = parse_config({"enable_ping": False, "relay_configs": relays})
        service.on_config(cfg3)
        assert service.targets == {} and service.latest() == {}
        assert _samples(app, "ehco_ping_requests_total") == []
    finally:
        service.stop()


def _samples_count(app, host):
    return sum(s.value for s in _samples(app, "ehco_ping_response_duration_seconds_count")
               if s.labels["host"] == host)


# -- the two socket kinds, each in a private network namespace ----------------------------------
CHILD = textwrap.dedent("""
    import json, logging, os, socket, sys
    sys.path.insert(0, sys.argv[1])
    from types import SimpleNamespace
    from ehco_gevent.observability import ping
    from ehco_gevent.config import parse_config
    from ehco_gevent.connections import ConnectionRegistry
    from ehco_gevent.observability.metrics import metrics_for
    from ehco_gevent.observability.metrics import parse_samples, render_metrics
    import gevent, gevent.socket
    if sys.argv[2] == "nobody":
        # everything imported lazily is loaded first: nobody cannot read root's Python
        gevent.get_hub(); gevent.socket.getaddrinfo("127.0.0.1", None)
        parse_samples(render_metrics(SimpleNamespace(registry=ConnectionRegistry()))[0].decode())
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.levelname, record.getMessage()))
    logging.getLogger("ehco").addHandler(Keep()); logging.getLogger("ehco").setLevel(logging.INFO)
    try:
        sock, raw = ping.open_icmp_socket(socket.AF_INET); sock.close(); kind = "raw" if raw else "dgram"
    except ping.PingUnavailable as exc:
        kind = "none"
    cfg, _ = parse_config({"relay_configs": [
        {"listen": "127.0.0.1:1", "label": "a", "tcp_remotes": ["127.0.0.1:9", "127.0.0.2:9"]}]})
    app = SimpleNamespace(registry=ConnectionRegistry(), config=cfg)
    metrics_for(app)
    service = ping.PingService(app, timeout=1)
    targets = [ping._Target(h, "a", ident=99) for h in ("127.0.0.1", "127.0.0.2")]
    rtts = [service.ping(t) for t in targets * 2]
    samples = [(s.name, s.labels.get("host"), s.value)
               for s in parse_samples(render_metrics(app)[0].decode())
               if s.name in ("ehco_ping_requests_total", "ehco_ping_response_duration_seconds_count")]
    print(json.dumps({"kind": kind, "rtts": rtts, "records": records, "samples": sorted(samples)}))
""")


def _in_netns(ping_group_range: str, user: str, ignore_echo: bool = False) -> dict:
    """Run CHILD in a new network namespace (its own sysctls, its own loopback)."""
    require_program("unshare", "util-linux")
    require_program("ip", "iproute2")
    if os.geteuid() != 0:
        pytest.skip("needs root to make a network namespace")
    script = (f"echo '{ping_group_range}' > /proc/sys/net/ipv4/ping_group_range && "
              f"echo {int(ignore_echo)} > /proc/sys/net/ipv4/icmp_echo_ignore_all && "
              "ip link set lo up && exec \"$0\" -c \"$1\" \"$2\" \"$3\"")
    out = subprocess.run(["unshare", "-n", "sh", "-c", script, sys.executable, CHILD, str(ROOT),
                          user], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and "unshare failed" in out.stderr:
        pytest.skip(f"cannot make a network namespace here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_unprivileged_datagram_socket_when_allowed():
    result = _in_netns("0 2147483647", "nobody")
    assert result["kind"] == "dgram"
    assert all(isinstance(r, float) and r > 0 for r in result["rtts"]), result
    assert result["samples"] == [
        ["ehco_ping_requests_total", "127.0.0.1", 2.0],
        ["ehco_ping_requests_total", "127.0.0.2", 2.0],
        ["ehco_ping_response_duration_seconds_count", "127.0.0.1", 2.0],
        ["ehco_ping_response_duration_seconds_count", "127.0.0.2", 2.0]]


def test_unanswered_pings_count_as_loss():
    """The kernel of the namespace ignores echo requests: every ping is sent and lost."""
    result = _in_netns("1 0", "root", ignore_echo=True)
    assert result["kind"] == "raw"
    assert result["rtts"] == [None] * 4
    assert result["samples"] == [
        ["ehco_ping_requests_total", "127.0.0.1", 2.0],
        ["ehco_ping_requests_total", "127.0.0.2", 2.0],
        ["ehco_ping_response_duration_seconds_count", "127.0.0.1", 0.0],
        ["ehco_ping_response_duration_seconds_count", "127.0.0.2", 0.0]]


def test_neither_socket_logs_once_and_goes_on():
    result = _in_netns("1 0", "nobody")
    assert result["kind"] == "none"
    assert result["rtts"] == [None] * 4
    warnings = [msg for level, msg in result["records"] if level == "WARNING"]
    assert len(warnings) == 1, result["records"]
    assert "ping disabled for IPv4 hosts" in warnings[0]
    assert "ping_group_range" in warnings[0]
    assert result["samples"] == []  # nothing sent, nothing counted


def test_ping_interval_from_the_environment(caplog):
    assert ping.interval_from_env({}) == ping.INTERVAL == 30.0
    assert ping.interval_from_env({"EHCO_PING_INTERVAL": "2.5"}) == 2.5
    for bad in ("0", "-1", "soon", "0.01"):
        caplog.clear()
        assert ping.interval_from_env({"EHCO_PING_INTERVAL": bad}) == ping.INTERVAL
        assert f"EHCO_PING_INTERVAL={bad!r}" in caplog.text
