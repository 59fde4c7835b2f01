"""relay_sync_url against a real HTTP server on loopback (a thread in the test), in process and
from a real ehco process."""

from __future__ import annotations

import http.server
import json
import threading
import time
from types import SimpleNamespace

import pytest

from ehco_gevent.config import parse_config
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.observability.relay_sync import RelaySyncService, version_info
from ehco_gevent.version import VERSION

from ..support import LOOPBACK, free_port, roundtrip, wait_port, write_config


class SyncServer:
    """Records every POSTed JSON body; answers with ``status`` (changeable between requests)."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                outer.bodies.append({"content_type": self.headers.get("Content-Type"),
                                     "path": self.path, "json": json.loads(body)})
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/sync"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sync_server():
    server = SyncServer()
    yield server
    server.close()


def _app(url: str):
    cfg, _ = parse_config({"relay_sync_url": url, "relay_configs": [
        {"listen": "127.0.0.1:1", "label": "a", "tcp_remotes": ["r:1"]}]})
    return SimpleNamespace(registry=ConnectionRegistry(), config=cfg)


def _closed(reg, label, kind, up, down, dial_ms=0.0):
    conn = reg.open(label, kind, "c:1", "r:1", f"{label}-r:1", dial_ms)
    conn.add_up(up)
    conn.add_down(down)
    reg.close(conn)


def test_posts_closed_connections_per_relay_then_forgets_them(sync_server):
    app = _app(sync_server.url)
    reg = app.registry
    _closed(reg, "a", "tcp", 100, 1000, dial_ms=3.9)
    _closed(reg, "a", "tcp", 10, 20, dial_ms=6.2)
    _closed(reg, "a", "udp", 5, 7)
    _closed(reg, "b", "tcp", 1, 2, dial_ms=11.0)
    still_open = reg.open("a", "tcp", "c:2", "r:1", "a-r:1", 1.0)
    still_open.add_up(999)
    service = RelaySyncService(app)
    assert service.sync_once() is True
    (body,) = sync_server.bodies
    assert body["content_type"] == "application/json"
    assert body["json"] == {
        "version": {"version": VERSION, "short_commit": version_info()["short_commit"]},
        "stats": [
            # ehco: each dial truncated to whole ms, then integer mean over the TCP dials
            {"relay_label": "a", "up_bytes": 115, "down_bytes": 1027, "connection_count": 3,
             "latency_in_ms": (3 + 6) // 2},
            {"relay_label": "b", "up_bytes": 1, "down_bytes": 2, "connection_count": 1,
             "latency_in_ms": 11},
        ]}
    # reported once: the next sync has nothing until a connection closes
    assert service.sync_once() is True
    assert sync_server.bodies[1]["json"]["stats"] == []
    reg.close(still_open)
    service.sync_once()
    assert sync_server.bodies[2]["json"]["stats"] == [
        {"relay_label": "a", "up_bytes": 999, "down_bytes": 0, "connection_count": 1,
         "latency_in_ms": 1}]


def test_short_commit_is_seven_characters_or_empty():
    commit = version_info()["short_commit"]
    assert commit == "" or (len(commit) == 7 and all(c in "0123456789abcdef" for c in commit))


def test_failed_post_keeps_the_figures_for_the_next_one(sync_server):
    app = _app(sync_server.url)
    _closed(app.registry, "a", "tcp", 100, 200, dial_ms=2)
    sync_server.status = 500
    service = RelaySyncService(app)
    assert service.sync_once() is False
    _closed(app.registry, "a", "tcp", 1, 2, dial_ms=4)
    sync_server.status = 200
    assert service.sync_once() is True
    assert [b["json"]["stats"] for b in sync_server.bodies] == [
        [{"relay_label": "a", "up_bytes": 100, "down_bytes": 200, "connection_count": 1,
          "latency_in_ms": 2}],
        [{"relay_label": "a", "up_bytes": 101, "down_bytes": 202, "connection_count": 2,
          "latency_in_ms": 3}],
    ]
    assert service.sync_once() is True
    assert sync_server.bodies[-1]["json"]["stats"] == []


def test_unreachable_url_is_logged_not_fatal(caplog):
    app = _app(f"http://{LOOPBACK}:{free_port()}/nobody-listens")
    _closed(app.registry, "a", "tcp", 1, 1)
    service = RelaySyncService(app)
    with caplog.at_level("ERROR", logger="ehco.relay_sync"):
        assert service.sync_once() is False
    assert "relay sync: POST" in caplog.text and "failed" in caplog.text
    assert service.pending["a"].count == 1


def test_without_url_closed_connections_are_forgotten():
    app = _app("")
    _closed(app.registry, "a", "tcp", 1, 1)
    service = RelaySyncService(app)
    assert service.sync_once() is False
    assert service.pending == {} and app.registry.drain_closed_for_sync() == []


@pytest.mark.workers
def test_real_ehco_posts_every_interval(ehco, tmp_path, echo_server, sync_server):
    relay_port = free_port()
    cfg = {"relay_sync_url": sync_server.url, "relay_sync_interval": 1, "enable_ping": False,
           "relay_configs": [{"listen": f"{LOOPBACK}:{relay_port}", "label": "lbl",
                              "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]}]}
    proc = ehco("-c", write_config(tmp_path, cfg))
    wait_port(relay_port)
    payload = b"x" * 12345
    assert roundtrip(relay_port, payload) == payload
    deadline = time.monotonic() + 20
    while True:
        stats = [s for b in sync_server.bodies for s in b["json"]["stats"]]
        if sum(s["connection_count"] for s in stats) >= 2:  # wait_port's probe and our echo
            break
        assert time.monotonic() < deadline, proc.log
        time.sleep(0.1)
    assert all(s["relay_label"] == "lbl" for s in stats)
    assert sum(s["up_bytes"] for s in stats) == 12345
    assert sum(s["down_bytes"] for s in stats) == 12345
    assert sync_server.bodies[0]["json"]["version"]["version"] == VERSION
    assert proc.proc.poll() is None
