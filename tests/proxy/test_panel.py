"""Panel sync against a local panel: users come and go, traffic is POSTed with exact counts."""

import os
import signal

import pytest

from tests.proxy.helpers import Panel, assert_closed_by_server
from tests.proxy.test_shadowsocks import assert_ignored, raw_ss_connect, read_reply
from tests.proxy.test_trojan import request, tls_connect
from tests.support import free_port, free_tcp_udp_port, wait_for, wait_port, write_config

U1 = {"user_id": 1, "method": "aes-128-gcm", "password": "pw-one", "level": 0, "enable": True,
      "upload_traffic": 0, "download_traffic": 0, "protocol": "ss"}
U2 = {"user_id": 2, "method": "chacha20-ietf-poly1305", "password": "pw-two", "level": 0,
      "enable": True, "upload_traffic": 0, "download_traffic": 0, "protocol": "ss"}
U3 = {"user_id": 3, "method": "", "password": "trojan-three", "level": 0, "enable": True,
      "upload_traffic": 0, "download_traffic": 0, "protocol": "trojan"}


@pytest.fixture
def panel():
    p = Panel()
    p.users = [dict(U1), dict(U2), dict(U3)]
    yield p
    p.close()


@pytest.fixture
def node(tmp_path, ehco, panel):
    port = free_tcp_udp_port()
    trojan_port = free_port()
    cfg = {"log_level": "debug", "enable_ping": False, "sync_traffic_endpoint": panel.url,
           "sync_traffic_interval": 1,
           "xray_config": {"inbounds": [
               {"listen": "127.0.0.1", "port": 1, "protocol": "dokodemo-door", "tag": "api"},
               {"listen": "127.0.0.1", "port": port, "protocol": "shadowsocks", "tag": "ss_proxy",
                "settings": {"clients": [], "network": "tcp,udp"}},
               {"listen": "127.0.0.1", "port": trojan_port, "protocol": "trojan",
                "tag": "trojan_proxy", "settings": {"clients": []}}]}}
    proc = ehco("-c", write_config(tmp_path, cfg))
    proc.cfg, proc.tmp_path = cfg, tmp_path
    proc.wait_log("3 users (3 added")
    wait_port(port)
    wait_port(trojan_port)
    proc.trojan_port = trojan_port
    return proc, port


def reported(panel, uid):
    rows = [r for post in panel.posts for r in post["data"] if r["user_id"] == uid]
    return sum(r["upload_traffic"] for r in rows), sum(r["download_traffic"] for r in rows)


def assert_ss_refused(proc, port, user, echo_port, cause="no user's key fits"):
    """A shadowsocks connection with the user's key is ignored, for the logged ``cause``."""
    s, _, _ = raw_ss_connect(port, user["method"], user["password"], echo_port, first=b"hi")
    assert_ignored(proc, s, cause)
    s.close()


def echo_through(port, user, echo_port, payload):
    s, _, _ = raw_ss_connect(port, user["method"], user["password"], echo_port, first=payload)
    assert read_reply(s, user["method"], user["password"], len(payload)) == payload
    s.close()


def test_traffic_reported_twice_client_bytes(node, panel, echo_server):
    proc, port = node
    payload = os.urandom(100_000)
    echo_through(port, U1, echo_server.port, payload)
    wait_for(lambda: reported(panel, 1) == (200_000, 200_000), timeout=20)
    # every post has the expected shape and user 2 (no traffic) is never in it
    post = panel.posts[-1]
    assert set(post) == {"data", "upload_bandwidth", "download_bandwidth"}
    assert reported(panel, 2) == (0, 0)
    n = len(panel.posts)
    wait_for(lambda: len(panel.posts) >= n + 2, timeout=20)
    assert reported(panel, 1) == (200_000, 200_000)  # reported once, not again


def test_removed_user_is_cut_and_refused(node, panel, echo_server):
    proc, port = node
    s, enc, _ = raw_ss_connect(port, U2["method"], U2["password"], echo_server.port, first=b"hi")
    assert read_reply(s, U2["method"], U2["password"], 2) == b"hi"
    panel.users = [dict(U1), dict(U3)]
    proc.wait_log("proxy user 2 removed")
    assert_closed_by_server(s)
    assert_ss_refused(proc, port, U2, echo_server.port)
    # disabled is the same as gone; user 1 unaffected
    echo_through(port, U1, echo_server.port, b"still here")


def test_panel_garbage_or_failing_keeps_users_and_traffic(node, panel, echo_server):
    proc, port = node
    panel.mode = "garbage"
    gets = panel.gets
    wait_for(lambda: panel.gets >= gets + 2, timeout=20)
    proc.wait_log("keeping the current users")
    payload = os.urandom(30_000)
    echo_through(port, U1, echo_server.port, payload)  # users kept
    n = len(panel.posts)
    wait_for(lambda: "will report it next time" in proc.log, timeout=20)
    assert len(panel.posts) == n
    panel.mode = "ok"
    wait_for(lambda: reported(panel, 1) == (60_000, 60_000), timeout=20)
    assert proc.proc.poll() is None


def test_panel_timeout(node, panel, echo_server):
    proc, port = node
    panel.mode = "slow"
    proc.wait_log("timed out", timeout=30)
    panel.mode = "ok"
    echo_through(port, U2, echo_server.port, b"after timeout")


def test_trojan_user_from_panel(node, panel, echo_server):
    proc, _ = node
    payload = os.urandom(50_000)
    with tls_connect(proc.trojan_port) as s:
        s.sendall(request(U3["password"], echo_server.port) + payload)
        got = b""
        while len(got) < len(payload):
            d = s.recv(65536)
            assert d
            got += d
    assert got == payload
    wait_for(lambda: reported(panel, 3) == (100_000, 100_000), timeout=20)


def test_reload_without_panel_drops_its_users(node, panel, echo_server):
    """A reload that removes sync_traffic_endpoint forgets the panel's users (nobody would
    update or remove them any more): their open connections close and they are refused."""
    proc, port = node
    s, _, _ = raw_ss_connect(port, U1["method"], U1["password"], echo_server.port, first=b"hi")
    assert read_reply(s, U1["method"], U1["password"], 2) == b"hi"
    cfg = dict(proc.cfg)
    del cfg["sync_traffic_endpoint"]
    write_config(proc.tmp_path, cfg)
    proc.signal(signal.SIGHUP)
    proc.wait_log("panel no longer configured")
    assert_closed_by_server(s)
    assert_ss_refused(proc, port, U1, echo_server.port, cause="no users, dropping")
