"""Web tests: a real ehco process with the web server on, a relay labelled ``lbl`` to a real
echo server, and a real Clash subscription served over HTTP for ``sub_configs``."""

from __future__ import annotations

import http.server
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ..support import LOOPBACK, free_port, free_tcp_udp_port, write_config

SUB_NAME = "sub1"


@dataclass
class WebNode:
    proc: object
    base: str
    relay_port: int
    config_path: Path
    config: dict
    echo_port: int

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return requests.get(self.url(path), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.post(self.url(path), **kw)


class _SubHandler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Type", "text/yaml")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def subscription_server(echo_server):
    """A Clash subscription with one proxy (the echo server), served on loopback."""
    handler = type("Handler", (_SubHandler,), {"body": (
        "proxies:\n"
        f"  - {{name: us-1, type: ss, server: {LOOPBACK}, port: {echo_server.port}, "
        "cipher: aes-128-gcm, password: pw}\n").encode()})
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}/sub.yaml"
    server.shutdown()
    server.server_close()


@pytest.fixture
def web_node(ehco, tmp_path, echo_server, subscription_server):
    """Start ehco with ``web_port`` and a relay ``lbl``; extra top-level keys via the factory."""

    def start(**extra) -> WebNode:
        web_port, relay_port = free_port(), free_port()
        cfg = {
            "web_host": LOOPBACK,
            "web_port": web_port,
            "enable_ping": False,
            "relay_configs": [{"listen": f"{LOOPBACK}:{relay_port}", "label": "lbl",
                               "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]}],
            "sub_configs": [{"name": SUB_NAME, "url": subscription_server}],
        }
        cfg.update(extra)
        path = write_config(tmp_path, cfg)
        proc = ehco("-c", path)
        proc.wait_log("Start Web Server at")
        return WebNode(proc, f"http://{LOOPBACK}:{web_port}", relay_port, path, cfg,
                       echo_server.port)

    return start


@dataclass
class ThreeRelays:
    """A node with a working TCP relay ``ok``, a relay ``refused`` whose remote refuses every
    dial (nothing listens on its port), and a UDP relay ``udp``."""
    node: WebNode
    ok_port: int
    refused_port: int
    refused_remote: str
    udp_port: int

    def refuse_and_echo_udp(self, dials: int = 3) -> None:
        """``dials`` connections through ``refused`` (each closed by the relay), and one
        datagram echoed through ``udp``."""
        for _ in range(dials):
            refused_dial(self.refused_port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            udp.sendto(b"ping", (LOOPBACK, self.udp_port))
            assert udp.recvfrom(100)[0] == b"ping"


def refused_dial(port: int) -> None:
    """Connect to a relay whose remote refuses: the relay closes us without a byte."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as conn:
        try:
            assert conn.recv(1) == b""
        except ConnectionResetError:
            pass


@pytest.fixture
def three_relays(web_node, echo_server, udp_echo_server):
    ok_port, refused_port, udp_port = free_port(), free_port(), free_tcp_udp_port()
    refused_remote = f"{LOOPBACK}:{free_port()}"  # free a moment ago: nothing listens there
    node = web_node(relay_configs=[
        {"listen": f"{LOOPBACK}:{ok_port}", "label": "ok",
         "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]},
        {"listen": f"{LOOPBACK}:{refused_port}", "label": "refused", "listen_type": "raw",
         "transport_type": "raw", "tcp_remotes": [refused_remote]},
        {"listen": f"{LOOPBACK}:{udp_port}", "label": "udp",
         "udp_remotes": [f"{LOOPBACK}:{udp_echo_server.port}"]},
    ], sub_configs=[])
    return ThreeRelays(node, ok_port, refused_port, refused_remote, udp_port)
