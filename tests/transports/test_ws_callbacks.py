"""ehco 1.1.4's ws upgrade on the callback relay, in-process on real loopback sockets: bytes
behind either head, a two-node chain, the listener's deadline, a remote that is not a ws
listener, and no greenlet per connection. (test_ws.py runs the same through real ``ehco``.)"""

from __future__ import annotations

import gc
import hashlib
import os
import socket as stdsocket

import gevent
import pytest
from gevent import socket as gsocket
from greenlet import greenlet

from ehco_gevent import callback_relay
from ehco_gevent.config import parse_config
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.guards import limits
from ehco_gevent.guards.limits import Limits
from ehco_gevent.relay import Relay
from ehco_gevent.transports import websocket as wsproto

from ..support import LOOPBACK, EchoServer, free_port


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


def start_relay(listen_type: str, transport_type: str, remote: str) -> Relay:
    relay_cfg = {"listen": f"{LOOPBACK}:{free_port()}", "listen_type": listen_type,
                 "transport_type": transport_type, "tcp_remotes": [remote]}
    cfg, _ = parse_config({"relay_configs": [relay_cfg]}, "t.json")
    relay = Relay(cfg.relay_configs[0], ConnectionRegistry())
    relay.start()
    assert isinstance(relay.tcp_server, callback_relay.CallbackListener)
    return relay


def upgrade(port: int, first: bytes = b"") -> tuple[gsocket.socket, bytes]:
    """A ws client by hand: request (and ``first`` in the same write); (socket, bytes that
    came behind the 101)."""
    sock = gsocket.create_connection((LOOPBACK, port), timeout=10)
    key = wsproto.new_key()
    sock.sendall(wsproto.build_request(f"{LOOPBACK}:{port}", "/ws/", key) + first)
    data = b""
    while (split := wsproto.split_head(data)) is None:
        data += sock.recv(4096)
    wsproto.check_response(split[0], key)
    return sock, split[1]


def read_to_eof(sock, got: bytes = b"") -> bytes:
    while chunk := sock.recv(65536):
        got += chunk
    return got


def live_greenlets() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)


def test_listener_relays_the_bytes_sent_with_the_request(echo):
    relay = start_relay("ws", "raw", f"{LOOPBACK}:{echo.port}")
    try:
        sock, rest = upgrade(relay.tcp_port, first=b"in the request's packet")
        sock.shutdown(stdsocket.SHUT_WR)
        assert read_to_eof(sock, rest) == b"in the request's packet"
        sock.close()
    finally:
        relay.stop()


def test_chain_of_two_callback_nodes_carries_a_payload_and_holds_no_greenlet(echo):
    exit_node = start_relay("ws", "raw", f"{LOOPBACK}:{echo.port}")
    entry = start_relay("raw", "ws", f"ws://{LOOPBACK}:{exit_node.tcp_port}")
    try:
        before = live_greenlets()
        held = []
        for _ in range(20):
            sock = gsocket.create_connection((LOOPBACK, entry.tcp_port), timeout=10)
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            held.append(sock)
        assert live_greenlets() == before  # 20 connections through two nodes, no greenlet
        payload = os.urandom(2 * 1024 * 1024)
        with gsocket.create_connection((LOOPBACK, entry.tcp_port), timeout=10) as sock:
            writer = gevent.spawn(lambda: (sock.sendall(payload),
                                           sock.shutdown(stdsocket.SHUT_WR)))
            got = read_to_eof(sock)
            writer.get(timeout=10)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        for sock in held:
            sock.close()
    finally:
        entry.stop()
        exit_node.stop()


def test_a_greeting_behind_the_101_reaches_the_client_first():
    """A server-first remote: its greeting can come in the same read as the 101."""
    greeter = EchoServer(greeting=b"220 hello\r\n")
    exit_node = start_relay("ws", "raw", f"{LOOPBACK}:{greeter.port}")
    entry = start_relay("raw", "ws", f"ws://{LOOPBACK}:{exit_node.tcp_port}")
    try:
        with gsocket.create_connection((LOOPBACK, entry.tcp_port), timeout=10) as sock:
            got = b""
            while len(got) < 11:
                got += sock.recv(100)
            assert got == b"220 hello\r\n"
    finally:
        entry.stop()
        exit_node.stop()
        greeter.close()


def test_half_a_request_head_is_closed_at_the_deadline(monkeypatch, echo):
    monkeypatch.setattr(limits, "_CURRENT", Limits(ws_handshake_timeout=0.3))
    relay = start_relay("ws", "raw", f"{LOOPBACK}:{echo.port}")
    try:
        with gsocket.create_connection((LOOPBACK, relay.tcp_port), timeout=10) as sock:
            sock.sendall(b"GET /ws/ HTTP/1.1\r\nHost: x\r\n")  # no blank line, ever
            with gevent.Timeout(3):
                assert read_to_eof(sock) == b""  # closed, no answer
        assert not relay.tcp_server.connections and echo.accepted == 0
    finally:
        relay.stop()


def test_a_remote_that_is_no_ws_listener_fails_the_dial_with_the_hint():
    """An HTTP server that answers 404: the client is closed, the dial failure counted and
    explained as on the greenlet path."""
    server = gsocket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(8)

    def answer_404():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(wsproto.build_response(404, "404 page not found\n"))
        conn.close()

    answering = gevent.spawn(answer_404)
    remote = f"ws://{LOOPBACK}:{server.getsockname()[1]}"
    entry = start_relay("raw", "ws", remote)
    try:
        with gsocket.create_connection((LOOPBACK, entry.tcp_port), timeout=10) as sock:
            with gevent.Timeout(5):
                assert read_to_eof(sock) == b""
        assert entry.registry.dial_failures == {f"{entry.label}-{remote}": 1}
        state = entry.tcp_lb.states[0]
        assert "404" in state.last_error and "another kind of WebSocket listener" in state.last_error
    finally:
        answering.kill()
        entry.stop()
        server.close()
