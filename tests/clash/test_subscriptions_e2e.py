"""Clash subscriptions end to end (issue 5): a real ehco, a real subscription served over HTTP,
real TCP servers behind the proxies, every relay checked by the bytes that come back."""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter

import pytest
import requests
import yaml

from ..support import LOOPBACK, EchoServer, free_port, roundtrip, write_config

SUB = "SUB"
TOKEN = "tok"


class Subscription:
    """A Clash subscription on loopback whose body the test changes, and can take down."""

    def __init__(self):
        self.body = b""
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/yaml")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/sub.yaml"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set_proxies(self, proxies: list[dict]) -> None:
        self.body = yaml.safe_dump({"proxies": proxies}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def proxies_for(servers: dict[str, EchoServer]) -> list[dict]:
    return [
        {"name": "us-1", "type": "ss", "server": LOOPBACK, "port": servers["us-1"].port,
         "cipher": "aes-128-gcm", "password": "p1", "udp": False},
        {"name": "us-2", "type": "trojan", "server": LOOPBACK, "port": servers["us-2"].port,
         "password": "p2", "sni": "us2.example", "skip-cert-verify": True},
        {"name": "jb-1", "type": "vmess", "server": LOOPBACK, "port": servers["jb-1"].port,
         "uuid": "0f4e", "alterId": 0, "cipher": "auto", "x-unknown": {"keep": [1, 2]}},
    ]


def greeting_of(port: int) -> bytes:
    """The greeting of the server a relay port leads to (the echo follows it)."""
    reply = roundtrip(port, b"ping", timeout=10)
    assert reply.endswith(b"ping"), reply
    return reply[:-4]


@pytest.mark.workers
def test_subscription_relays_provider_and_refresh(ehco, tmp_path, ehco_workers):
    servers = {n: EchoServer(greeting=f"{n}\n".encode()) for n in ("us-1", "us-2", "jb-1", "new")}
    sub = Subscription()
    sub.set_proxies(proxies_for(servers))
    web_port = free_port()
    path = write_config(tmp_path, {
        "web_host": LOOPBACK, "web_port": web_port, "web_token": TOKEN, "enable_ping": False,
        "reload_interval": 0, "sub_configs": [{"name": SUB, "url": sub.url}]})
    proc = ehco("-c", path)
    proc.wait_log("Start Web Server at")
    base = f"http://{LOOPBACK}:{web_port}"

    def get(route: str, **params) -> requests.Response:
        return requests.get(base + route, params={"token": TOKEN, **params}, timeout=30)

    def provider(grouped: bool = False) -> tuple[requests.Response, dict[str, dict]]:
        resp = get("/clash_proxy_provider/", sub_name=SUB, grouped=str(grouped).lower())
        assert resp.status_code == 200, resp.text
        return resp, {p["name"]: p for p in yaml.safe_load(resp.text)["proxies"]}

    try:
        # the config dump lists exactly the derived relays
        dump = get("/api/v1/config/").json()
        assert sorted(r["label"] for r in dump["relay_configs"]) == sorted(
            ["us-1-SUB", "us-2-SUB", "jb-1-SUB", "us-lb", "jb-1-lb"])

        # every provider proxy leads to its own server; all other fields are kept
        _, plain = provider()
        assert list(plain) == ["us-1-SUB", "us-2-SUB", "jb-1-SUB"]
        for given in proxies_for(servers):
            got = plain[f"{given['name']}-SUB"]
            assert got["server"] == LOOPBACK
            assert greeting_of(got["port"]) == f"{given['name']}\n".encode()
            assert {k: v for k, v in got.items() if k not in ("name", "server", "port")} == {
                k: v for k, v in given.items() if k not in ("name", "server", "port")}
        assert plain["us-1-SUB"]["cipher"] == "aes-128-gcm"
        assert plain["us-2-SUB"]["sni"] == "us2.example"

        # the grouped provider: one proxy per group; us-lb balances over us-1 and us-2
        _, grouped = provider(grouped=True)
        assert sorted(grouped) == ["jb-1-lb", "us-lb"]
        hits = Counter(greeting_of(grouped["us-lb"]["port"]) for _ in range(4))
        if ehco_workers == 1:
            assert hits == {b"us-1\n": 2, b"us-2\n": 2}
        else:  # round robin per worker: however the 4 were spread, both remotes served
            assert set(hits) == {b"us-1\n", b"us-2\n"} and sum(hits.values()) == 4
        assert greeting_of(grouped["jb-1-lb"]["port"]) == b"jb-1\n"

        # the derived relays are served like config relays: connections and metrics see them
        closed = get("/api/v1/connections/", conn_type="closed", page_size=100).json()
        assert Counter(c["relay_label"] for c in closed["connections"]) == {
            "us-1-SUB": 1, "us-2-SUB": 1, "jb-1-SUB": 1, "us-lb": 4, "jb-1-lb": 1}
        metrics = get("/metrics/").text
        assert f'remote="us-lb-{LOOPBACK}:{servers["us-2"].port}"' in metrics

        # the index page offers both provider URLs, token included
        index = get("/").text
        assert f"/clash_proxy_provider/?sub_name={SUB}&amp;token={TOKEN}" in index
        assert f"/clash_proxy_provider/?sub_name={SUB}&amp;grouped=true&amp;token={TOKEN}" in index
        assert "Last refresh failed" not in index

        # jb-1 moves: us-1 keeps its port, jb-1's relay reaches the new server
        moved = proxies_for(servers)
        moved[2]["port"] = servers["new"].port
        sub.set_proxies(moved)
        _, after = provider()
        assert after["us-1-SUB"]["port"] == plain["us-1-SUB"]["port"]
        assert after["us-2-SUB"]["port"] == plain["us-2-SUB"]["port"]
        assert greeting_of(after["jb-1-SUB"]["port"]) == b"new\n"
        assert greeting_of(after["us-1-SUB"]["port"]) == b"us-1\n"
        _, grouped_after = provider(grouped=True)
        assert grouped_after["us-lb"]["port"] == grouped["us-lb"]["port"]
        assert greeting_of(grouped_after["jb-1-lb"]["port"]) == b"new\n"
        dump = get("/api/v1/config/").json()
        jb = next(r for r in dump["relay_configs"] if r["label"] == "jb-1-SUB")
        assert jb["tcp_remotes"] == [f"{LOOPBACK}:{servers['new'].port}"]

        # no or unknown sub_name: 400 saying why; no token: 401
        resp = get("/clash_proxy_provider/")
        assert resp.status_code == 400 and "sub_name" in resp.text
        resp = get("/clash_proxy_provider/", sub_name="nope")
        assert resp.status_code == 400 and "nope" in resp.text and SUB in resp.text
        resp = requests.get(base + "/clash_proxy_provider/", params={"sub_name": SUB}, timeout=10)
        assert resp.status_code == 401

        # a body that is not a subscription, then the server gone: the last relays keep serving
        sub.body = b"proxies: [unclosed"
        resp, bad = provider()
        assert "X-Ehco-Subscription-Error" in resp.headers
        assert {n: p["port"] for n, p in bad.items()} == {n: p["port"] for n, p in after.items()}
        sub.close()
        resp, gone = provider()
        assert "cannot fetch" in resp.headers["X-Ehco-Subscription-Error"]
        assert {n: p["port"] for n, p in gone.items()} == {n: p["port"] for n, p in after.items()}
        reload = requests.post(base + "/reload/", params={"token": TOKEN}, timeout=30)
        assert reload.status_code == 200, reload.text
        assert greeting_of(gone["us-1-SUB"]["port"]) == b"us-1\n"
        assert greeting_of(gone["jb-1-SUB"]["port"]) == b"new\n"
        assert "cannot fetch" in proc.log
        # the index page tells the operator the provider is serving stale relays
        index = get("/").text
        assert "Last refresh failed, serving the last good relays" in index and "cannot fetch" in index
    finally:
        for server in servers.values():
            server.close()
        try:
            sub.close()
        except OSError:
            pass


def test_unreachable_subscription_at_start_is_a_config_error(ehco, tmp_path):
    url = f"http://{LOOPBACK}:{free_port()}/sub.yaml"
    path = write_config(tmp_path, {"web_port": 0, "enable_ping": False,
                                   "sub_configs": [{"name": SUB, "url": url}]})
    proc = ehco("-c", path)
    assert proc.proc.wait(30) == 2
    assert f"subscription '{SUB}': cannot fetch {url}" in proc.log
    assert "Traceback" not in proc.log


def test_reload_ticker_refreshes_the_subscription(ehco, tmp_path):
    servers = {n: EchoServer(greeting=f"{n}\n".encode()) for n in ("us-1", "us-2", "jb-1", "new")}
    sub = Subscription()
    sub.set_proxies(proxies_for(servers))
    web_port = free_port()
    path = write_config(tmp_path, {
        "web_host": LOOPBACK, "web_port": web_port, "enable_ping": False, "reload_interval": 1,
        "sub_configs": [{"name": SUB, "url": sub.url}]})
    proc = ehco("-c", path)
    try:
        proc.wait_log("Start Web Server at")
        dump_url = f"http://{LOOPBACK}:{web_port}/api/v1/config/"

        def relays() -> dict[str, dict]:
            return {r["label"]: r for r in requests.get(dump_url, timeout=10).json()["relay_configs"]}

        before = relays()
        moved = proxies_for(servers)
        moved[2]["port"] = servers["new"].port
        del moved[1]  # us-2 leaves: its relay stops, us-1 becomes a group of its own
        sub.set_proxies(moved)
        deadline = time.monotonic() + 15
        while "us-2-SUB" in (after := relays()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(after) == ["jb-1-SUB", "jb-1-lb", "us-1-SUB", "us-1-lb"]
        assert after["us-1-SUB"]["listen"] == before["us-1-SUB"]["listen"]
        port = int(after["jb-1-SUB"]["listen"].rsplit(":", 1)[1])
        assert greeting_of(port) == b"new\n"
    finally:
        for server in servers.values():
            server.close()
        sub.close()
