"""The raw relay driven by loop callbacks, in-process on real loopback sockets: both the splice
and the copy path, half-close, exact counts, back-pressure, drop, failover, no greenlet per
connection. (The end-to-end relay tests run it through the real ``ehco`` too.)"""

from __future__ import annotations

import hashlib
import os
import socket as stdsocket

import gevent
import pytest
from gevent import socket as gsocket

from ehco_gevent import callback_relay, pump
from ehco_gevent.config import parse_config
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.relay import Relay

from .support import LOOPBACK, EchoServer, free_port


@pytest.fixture(params=[True, False], ids=["splice", "copy"])
def splice(request, monkeypatch):
    monkeypatch.setattr(pump, "splice_enabled", request.param)
    return request.param


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


def start_relay(*remotes: str, **keys) -> Relay:
    relay_cfg = {"listen": f"{LOOPBACK}:{free_port()}", "listen_type": "raw",
                 "transport_type": "raw", "tcp_remotes": list(remotes), **keys}
    cfg, _ = parse_config({"relay_configs": [relay_cfg]}, "t.json")
    relay = Relay(cfg.relay_configs[0], ConnectionRegistry())
    relay.start()
    assert isinstance(relay.tcp_server, callback_relay.CallbackListener)
    return relay


def connect(relay: Relay) -> gsocket.socket:
    return gsocket.create_connection((LOOPBACK, relay.tcp_port), timeout=10)


def send_half_close_read(sock, payload: bytes, reader_delay: float = 0.0) -> bytes:
    """Write payload then half-close from a greenlet, read to EOF here (slowly if asked)."""
    def write():
        sock.sendall(payload)
        sock.shutdown(stdsocket.SHUT_WR)

    writer = gevent.spawn(write)
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
        if reader_delay:
            gevent.sleep(reader_delay)
    writer.get(timeout=10)
    return bytes(out)


def wait_for(cond, timeout: float = 5.0) -> None:
    with gevent.Timeout(timeout):
        while not cond():
            gevent.sleep(0.01)


def test_bytes_come_back_identical_and_counted_exactly(splice, echo):
    relay = start_relay(f"{LOOPBACK}:{echo.port}")
    try:
        payload = os.urandom(3 * 1024 * 1024 + 17)
        with connect(relay) as sock:
            got = send_half_close_read(sock, payload)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        wait_for(lambda: not relay.registry.active)
        conn = relay.registry.closed[0]
        assert (conn.up_bytes, conn.down_bytes) == (len(payload), len(payload))
    finally:
        relay.stop()


def test_a_slow_reader_gets_everything(splice, echo, monkeypatch):
    """The remote side writes faster than the client reads: the relay stops reading while its
    write waits, and nothing is lost."""
    waits = []
    wait = callback_relay._Direction._wait_writable
    monkeypatch.setattr(callback_relay._Direction, "_wait_writable",
                        lambda self, then: waits.append(1) or wait(self, then))
    relay = start_relay(f"{LOOPBACK}:{echo.port}")
    try:
        payload = os.urandom(8 * 1024 * 1024)
        with connect(relay) as sock:
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 65536)
            got = send_half_close_read(sock, payload, reader_delay=0.002)
        assert got == payload
        assert waits, "the client never made the relay wait: no back-pressure was tested"
    finally:
        relay.stop()


def test_half_close_keeps_the_other_direction(splice):
    """The remote finishes first (writes, half-closes), the client goes on writing and gets
    its bytes delivered; the remote's half-close reaches the client as EOF."""
    server = gsocket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(1)
    relay = start_relay(f"{LOOPBACK}:{server.getsockname()[1]}")
    try:
        with connect(relay) as client:
            remote, _ = server.accept()
            remote.sendall(b"greeting")
            remote.shutdown(stdsocket.SHUT_WR)
            assert client.recv(100) == b"greeting" and client.recv(100) == b""
            client.sendall(b"after the remote's EOF")
            client.shutdown(stdsocket.SHUT_WR)
            got = b""
            while chunk := remote.recv(100):
                got += chunk
            assert got == b"after the remote's EOF"
            remote.close()
        wait_for(lambda: not relay.registry.active)
    finally:
        relay.stop()
        server.close()


def test_no_greenlet_per_connection_and_nothing_left_after(echo):
    import gc

    from greenlet import greenlet

    def greenlets() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)

    relay = start_relay(f"{LOOPBACK}:{echo.port}")
    try:
        before, fds_before = greenlets(), len(os.listdir("/proc/self/fd"))
        socks = [connect(relay) for _ in range(50)]
        for sock in socks:
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
        wait_for(lambda: len(relay.registry.active) == 50)
        assert greenlets() == before  # 50 held connections, no greenlet for any of them
        for sock in socks:
            sock.close()
        wait_for(lambda: not relay.registry.active)
        gevent.sleep(0.1)
        assert len(os.listdir("/proc/self/fd")) <= fds_before + len(pump.pipes.fds())
    finally:
        relay.stop()


def test_drop_closes_both_sides_at_once(echo):
    relay = start_relay(f"{LOOPBACK}:{echo.port}")
    try:
        with connect(relay) as sock:
            sock.sendall(b"hi")
            assert sock.recv(2) == b"hi"
            relay.drop_connections()
            sock.settimeout(5)
            assert sock.recv(10) == b""
        assert not relay.registry.active and relay.registry.closed[0].up_bytes == 2
    finally:
        relay.stop()


def test_listener_close_keeps_open_connections(echo):
    relay = start_relay(f"{LOOPBACK}:{echo.port}")
    with connect(relay) as sock:
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"  # accepted and relaying
        relay.stop()
        with pytest.raises(OSError):
            connect(relay)
        assert send_half_close_read(sock, b"still here") == b"still here"


def test_refused_remote_fails_over_to_the_next(echo):
    dead = free_port()
    relay = start_relay(f"{LOOPBACK}:{dead}", f"{LOOPBACK}:{echo.port}", lb_strategy="failover")
    try:
        with connect(relay) as sock:
            assert send_half_close_read(sock, b"through the second") == b"through the second"
        assert relay.registry.dial_failures == {f"{relay.label}-{LOOPBACK}:{dead}": 1}
    finally:
        relay.stop()


def test_every_remote_refusing_closes_the_client():
    relay = start_relay(f"{LOOPBACK}:{free_port()}")
    try:
        with connect(relay) as sock:
            sock.settimeout(5)
            assert sock.recv(10) == b""
        assert not relay.registry.active and not relay.registry.closed
    finally:
        relay.stop()


def test_a_remote_by_name_is_resolved(echo):
    relay = start_relay(f"localhost:{echo.port}")
    try:
        with connect(relay) as sock:
            assert send_half_close_read(sock, b"by name") == b"by name"
    finally:
        relay.stop()
