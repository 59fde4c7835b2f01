"""The PROXY protocol against Debian's haproxy, both ways and through a two-node mwss chain.

haproxy logs one raw line per TCP session to stdout (``log stdout format raw``) with the client
address it believes in (``%ci:%cp``): behind an ``accept-proxy`` bind that is the address our
header carried. Clients connect from 127.0.0.2, so the address that must arrive differs from
the 127.0.0.1 every hop in between uses."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ..support import (LoggedProcess, free_port, require_program, wait_port,
                       write_config)

LO = "127.0.0.1"
USER = "127.0.0.2"


def haproxy(tmp_path: Path, listen: int, target: int, bind_opts: str = "",
            server_opts: str = "") -> LoggedProcess:
    binary = require_program("haproxy", "haproxy")
    cfg = tmp_path / f"haproxy-{listen}.cfg"
    cfg.write_text(f"""global
    log stdout format raw local0
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind {LO}:{listen} {bind_opts}
    log-format "client=%ci:%cp"
    default_backend be
backend be
    server s1 {LO}:{target} {server_opts}
""")
    proc = LoggedProcess([binary, "-db", "-f", str(cfg)], tmp_path / f"haproxy-{listen}.log")
    wait_port(listen)
    return proc


@pytest.fixture
def procs():
    started: list[LoggedProcess] = []
    yield started
    for proc in started:
        proc.stop()


def user_roundtrip(port: int, data: bytes) -> tuple[bytes, int]:
    """Echo ``data`` through ``port`` from the user's address; the answer and our port."""
    with socket.create_connection((LO, port), timeout=30, source_address=(USER, 0)) as conn:
        client_port = conn.getsockname()[1]
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        out = bytearray()
        while chunk := conn.recv(65536):
            out += chunk
    return bytes(out), client_port


@pytest.mark.parametrize("version, option", [("v1", "send-proxy"), ("v2", "send-proxy-v2")])
def test_haproxy_in_front_of_an_accept_proxy_relay(ehco, echo_server, tmp_path, procs,
                                                   version, option):
    relay, front = free_port(), free_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"{LO}:{relay}", "label": "behind-haproxy", "accept_proxy": True,
        "accept_proxy_from": [f"{LO}/32"], "tcp_remotes": [f"{LO}:{echo_server.port}"]}]})
    node = ehco("-c", cfg, "--log_level", "debug")
    node.wait_log("tcp listening on")
    procs.append(haproxy(tmp_path, front, relay, server_opts=option))
    answer, client_port = user_roundtrip(front, b"through haproxy " + version.encode())
    assert answer == b"through haproxy " + version.encode()
    node.wait_log(f"relay behind-haproxy: {USER}:{client_port} -> {LO}:{echo_server.port} "
                  "connected")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_relay_in_front_of_haproxy_accept_proxy(ehco, echo_server, tmp_path, procs, version):
    relay, back = free_port(), free_port()
    proxy = haproxy(tmp_path, back, echo_server.port, bind_opts="accept-proxy")
    procs.append(proxy)
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"{LO}:{relay}", "label": "to-haproxy", "send_proxy": version,
        "tcp_remotes": [f"{LO}:{back}"]}]})
    ehco("-c", cfg).wait_log("tcp listening on")
    answer, client_port = user_roundtrip(relay, b"hello haproxy")
    assert answer == b"hello haproxy"
    proxy.wait_log(f"client={USER}:{client_port}")


def test_mwss_chain_delivers_the_user_address(ehco, echo_server, tmp_path, procs):
    """entry (send_proxy v2, mwss) -> exit (mwss listener with accept_proxy, send_proxy v1)
    -> haproxy (accept-proxy) -> echo: haproxy names each user, not the nodes."""
    entry, exit_port, back = free_port(), free_port(), free_port()
    proxy = haproxy(tmp_path, back, echo_server.port, bind_opts="accept-proxy")
    procs.append(proxy)
    exit_cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"{LO}:{exit_port}", "listen_type": "mwss", "label": "exit",
        "accept_proxy": True, "accept_proxy_from": ["127.0.0.0/8"], "send_proxy": "v1",
        "tcp_remotes": [f"{LO}:{back}"]}]}, "exit.json")
    entry_cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"{LO}:{entry}", "transport_type": "mwss", "label": "entry",
        "send_proxy": "v2", "tcp_remotes": [f"wss://{LO}:{exit_port}"]}]}, "entry.json")
    ehco("-c", exit_cfg).wait_log("tcp listening on")
    ehco("-c", entry_cfg).wait_log("tcp listening on")
    ports = []
    for i in range(3):  # several streams on one smux session, each with its own user port
        answer, client_port = user_roundtrip(entry, b"user %d" % i)
        assert answer == b"user %d" % i
        ports.append(client_port)
    for client_port in ports:
        proxy.wait_log(f"client={USER}:{client_port}")


def test_haproxy_health_check_connections_are_not_refusals(ehco, echo_server, tmp_path):
    """A LOCAL header (haproxy's own checks with check-send-proxy) is served with the
    connection's own address, and an empty connection is not logged as a refusal."""
    relay = free_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"{LO}:{relay}", "label": "local", "accept_proxy": True,
        "tcp_remotes": [f"{LO}:{echo_server.port}"]}]})
    node = ehco("-c", cfg, "--log_level", "debug")
    node.wait_log("tcp listening on")
    socket.create_connection((LO, relay), timeout=5).close()
    node.wait_log("closed before sending a PROXY header")
    with socket.create_connection((LO, relay), timeout=5) as conn:
        conn.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00ping")
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(100) == b"ping"
    assert "bad PROXY header" not in node.log


def test_haproxy_send_proxy_in_front_of_a_ws_listener(ehco, echo_server, tmp_path, procs):
    """A balancer that puts the header in front of the TCP connection (haproxy send-proxy-v2,
    a cloud NLB) before a ws tunnel listener with accept_proxy: the upgrade behind it works
    and the stream's client is the user."""
    from ehco_gevent.transports import websocket as wsproto

    exit_port, front = free_port(), free_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"{LO}:{exit_port}", "listen_type": "ws", "label": "ws-exit",
        "accept_proxy": True, "accept_proxy_from": [f"{LO}/32"],
        "tcp_remotes": [f"{LO}:{echo_server.port}"]}]})
    node = ehco("-c", cfg, "--log_level", "debug")
    node.wait_log("tcp listening on")
    procs.append(haproxy(tmp_path, front, exit_port, server_opts="send-proxy-v2"))
    with socket.create_connection((LO, front), timeout=30, source_address=(USER, 0)) as conn:
        client_port = conn.getsockname()[1]
        key = wsproto.new_key()
        conn.sendall(wsproto.build_request(f"{LO}:{front}", "/ws/", key))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            assert chunk, head
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        wsproto.check_response(head + b"\r\n\r\n", key)
        conn.sendall(b"raw bytes after the upgrade")
        conn.shutdown(socket.SHUT_WR)
        out = bytearray(rest)
        while chunk := conn.recv(65536):
            out += chunk
    assert bytes(out) == b"raw bytes after the upgrade"
    node.wait_log(f"relay ws-exit: {USER}:{client_port} -> {LO}:{echo_server.port} connected")
