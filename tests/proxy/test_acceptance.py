"""Issue 6's acceptance run in one process: panel users on a shadowsocks and a trojan inbound,
real clients (ss-local for each cipher, the trojan client) fetching from a local HTTP server,
exact traffic POSTs per user, and a trojan user removed at the panel being cut off."""

import os

import pytest

from tests.proxy.helpers import (Panel, assert_closed_by_server, recv_exact, socks5_connect, start_ss_local,
                                 start_trojan_client)
from tests.proxy.test_panel import reported
from tests.proxy.test_trojan import read_all, request, tls_connect
from tests.support import (BlobHTTPServer, LOOPBACK, free_port, free_tcp_udp_port, sha,
                           wait_for, wait_port, write_config)

BLOB = os.urandom(1024 * 1024 + 11)
SS_USERS = {11: "aes-128-gcm", 12: "aes-256-gcm", 13: "chacha20-ietf-poly1305"}
TROJAN_ID, TROJAN_PW = 14, "trojan-fourteen"


def panel_user(uid, protocol, method=""):
    return {"user_id": uid, "method": method, "password": f"pw-{uid}", "level": 0,
            "enable": True, "upload_traffic": 0, "download_traffic": 0, "protocol": protocol}


@pytest.fixture
def origin():
    server = BlobHTTPServer(BLOB)
    yield server.port
    server.close()


def http_get(sock, port):
    """One HTTP/1.0 GET over an open tunnel: (bytes sent, bytes received, body)."""
    req = f"GET /blob HTTP/1.0\r\nHost: {LOOPBACK}:{port}\r\n\r\n".encode()
    sock.sendall(req)
    out = bytearray()
    while True:
        d = sock.recv(1 << 20)
        if not d:
            break
        out += d
    head, _, body = bytes(out).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head[:100]
    return len(req), len(out), body


@pytest.mark.interop
def test_panel_users_with_real_clients(tmp_path, ehco, origin, echo_server):
    panel = Panel()
    panel.users = [panel_user(uid, "ss", m) for uid, m in SS_USERS.items()]
    panel.users.append(dict(panel_user(TROJAN_ID, "trojan"), password=TROJAN_PW))
    ss_port, trojan_port = free_tcp_udp_port(), free_port()
    cfg = {"log_level": "debug", "enable_ping": False, "sync_traffic_endpoint": panel.url,
           "sync_traffic_interval": 1, "xray_config": {"inbounds": [
               {"listen": LOOPBACK, "port": ss_port, "protocol": "shadowsocks", "tag": "ss_proxy",
                "settings": {"clients": [], "network": "tcp,udp"}},
               {"listen": LOOPBACK, "port": trojan_port, "protocol": "trojan",
                "tag": "trojan_proxy", "settings": {"clients": []}}],
               "outbounds": [{"protocol": "freedom"}]}}
    programs = []
    try:
        proc = ehco("-c", write_config(tmp_path, cfg))
        proc.wait_log("4 users (4 added")
        wait_port(ss_port)
        wait_port(trojan_port)
        expected, ss_locals = {}, {}
        for uid, method in SS_USERS.items():
            prog, local = start_ss_local(tmp_path, ss_port, f"pw-{uid}", method)
            programs.append(prog)
            ss_locals[uid] = local
            with socks5_connect(local, LOOPBACK, origin) as s:
                up, down, body = http_get(s, origin)
            assert sha(body) == sha(BLOB), method
            expected[uid] = (2 * up, 2 * down)  # ehco's counting (design.md 8)

        prog, local = start_trojan_client(tmp_path, trojan_port, TROJAN_PW)
        programs.append(prog)
        with socks5_connect(local, LOOPBACK, origin) as s:
            up, down, body = http_get(s, origin)
        assert sha(body) == sha(BLOB)
        expected[TROJAN_ID] = (2 * up, 2 * down)

        # one POST per user with exactly those counts, after an interval
        for uid, counts in expected.items():
            wait_for(lambda: reported(panel, uid) == counts, timeout=20)

        # the trojan user is removed at the panel: its open connection is closed ...
        held = socks5_connect(local, LOOPBACK, echo_server.port)
        held.sendall(b"ping")
        assert recv_exact(held, 4) == b"ping"
        panel.users = [u for u in panel.users if u["user_id"] != TROJAN_ID]
        proc.wait_log(f"proxy user {TROJAN_ID} removed")
        assert_closed_by_server(held)
        # ... and it cannot connect again (no fallback: it gets the plain index text)
        with tls_connect(trojan_port) as s:
            s.sendall(request(TROJAN_PW, echo_server.port) + b"again")
            out = read_all(s)
        assert out.startswith(b"HTTP/1.1 200 OK") and b"again" not in out
        # the ss users are untouched
        with socks5_connect(ss_locals[11], LOOPBACK, origin) as s:
            assert sha(http_get(s, origin)[2]) == sha(BLOB)
        assert proc.proc.poll() is None
    finally:
        for prog in programs:
            prog.stop()
        panel.close()
