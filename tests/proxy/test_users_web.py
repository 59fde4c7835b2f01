"""Per-user proxy traffic where an operator looks: /metrics/, the JSON feeds and the index page.

A real ehco serves a shadowsocks inbound with one static client; bytes sent through it must
move that user's counters by exactly the amounts the panel would be sent (2 x client-side
payload, design.md 8), and the web page must list the user."""

import os

import pytest
import requests

from ehco_gevent.observability.metrics import parse_samples
from tests.proxy.test_shadowsocks import Reader, raw_ss_connect
from tests.support import LOOPBACK, EchoServer, free_port, free_tcp_udp_port, wait_port, write_config

METHOD, PASSWORD, TOKEN = "aes-128-gcm", "pw-alice", "tok"
USER = "ss_proxy/alice"
GREETING = b"hello from the target\n"


@pytest.fixture
def greeter():
    server = EchoServer(greeting=GREETING)
    yield server
    server.close()


@pytest.fixture
def node(tmp_path, ehco):
    ss_port, web_port = free_tcp_udp_port(), free_port()
    cfg = {"log_level": "debug", "enable_ping": False, "web_host": LOOPBACK, "web_port": web_port,
           "web_token": TOKEN,
           "xray_config": {"inbounds": [
               {"listen": LOOPBACK, "port": ss_port, "protocol": "shadowsocks", "tag": "ss_proxy",
                "settings": {"network": "tcp", "clients": [
                    {"method": METHOD, "password": PASSWORD, "email": "alice"}]}}]}}
    proc = ehco("-c", write_config(tmp_path, cfg))
    proc.wait_log("Start Web Server at")
    wait_port(ss_port)
    return proc, ss_port, f"http://{LOOPBACK}:{web_port}"


def user_metrics(base):
    text = requests.get(f"{base}/metrics/", params={"token": TOKEN}, timeout=10).text
    out = {}
    for s in parse_samples(text):
        if s.name.startswith("ehco_proxy_user") and s.labels.get("user") == USER:
            assert s.labels["ehco_runner_hostname"]  # the constant label, as every series
            out[(s.name, s.labels.get("flow"))] = s.value
    return out


def api_user(base, path="/api/v1/proxy_users/", key="users"):
    data = requests.get(base + path, params={"token": TOKEN}, timeout=10).json()
    rows = [u for u in data[key] if u["user"] == USER]
    assert len(rows) == 1, data
    return rows[0]


def test_user_traffic_in_metrics_api_and_page(node, greeter):
    proc, ss_port, base = node
    before = user_metrics(base)
    assert before == {("ehco_proxy_user_traffic_bytes_total", "up"): 0,
                      ("ehco_proxy_user_traffic_bytes_total", "down"): 0,
                      ("ehco_proxy_user_connections", None): 0}

    payload = os.urandom(150_000)
    s, enc, _ = raw_ss_connect(ss_port, METHOD, PASSWORD, greeter.port, first=payload[:1000])
    s.sendall(enc.encrypt(payload[1000:]))
    reader = Reader(s, METHOD, PASSWORD)
    assert reader.read(len(GREETING) + len(payload)) == GREETING + payload
    # while the connection is open it is counted live
    assert user_metrics(base)[("ehco_proxy_user_connections", None)] == 1
    live = api_user(base)
    assert live["connections"] == 1 and live["protocol"] == "ss" and live["source"] == "config"
    s.close()

    up, down = 2 * len(payload), 2 * (len(payload) + len(GREETING))  # ehco's counting
    deadline_polls = 100
    while user_metrics(base)[("ehco_proxy_user_connections", None)] != 0:
        deadline_polls -= 1
        assert deadline_polls, "the connection never ended"
    assert user_metrics(base) == {("ehco_proxy_user_traffic_bytes_total", "up"): up,
                                  ("ehco_proxy_user_traffic_bytes_total", "down"): down,
                                  ("ehco_proxy_user_connections", None): 0}

    row = api_user(base)
    assert (row["upload_bytes"], row["download_bytes"], row["connections"]) == (up, down, 0)
    # no panel: nothing was reported, so all of it is still "unreported"
    assert (row["unreported_upload_bytes"], row["unreported_download_bytes"]) == (up, down)
    # the index page's poll carries the same rows
    feed = api_user(base, "/api/v1/traffic/", "proxy_users")
    assert (feed["upload_bytes"], feed["download_bytes"]) == (up, down)
    # same auth as the other feeds
    assert requests.get(base + "/api/v1/proxy_users/", timeout=10).status_code == 401

    page = requests.get(base + "/", params={"token": TOKEN}, timeout=10).text
    assert 'id="proxy-users"' in page
    assert (f'data-user="{USER}" data-upload-bytes="{up}" data-download-bytes="{down}" '
            'data-connections="0"') in page
    assert proc.proc.poll() is None


def test_no_proxy_no_users_section(tmp_path, ehco):
    web_port = free_port()
    cfg = {"enable_ping": False, "web_host": LOOPBACK, "web_port": web_port}
    proc = ehco("-c", write_config(tmp_path, cfg))
    proc.wait_log("Start Web Server at")
    base = f"http://{LOOPBACK}:{web_port}"
    assert requests.get(base + "/api/v1/traffic/", timeout=10).json()["proxy_users"] is None
    assert requests.get(base + "/api/v1/proxy_users/", timeout=10).json()["users"] is None
    assert 'id="proxy-users"' not in requests.get(base + "/", timeout=10).text
    assert "ehco_proxy_user" not in requests.get(base + "/metrics/", timeout=10).text
