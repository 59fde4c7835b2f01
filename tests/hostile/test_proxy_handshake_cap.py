"""A crowd of silent clients on a proxy inbound (issue 10): at most ``proxy_max_handshakes``
handshakes are in progress at once; a connection beyond them is closed at once, with one log
line naming the key, and the slots come back as the silent clients leave."""

from __future__ import annotations

import socket

from tests.proxy.helpers import socks5_connect
from tests.support import (EchoServer, LOOPBACK, exchange, free_port, wait_for,
                           wait_port, write_config)

CAP = 5


def test_handshakes_beyond_the_cap_are_closed_at_once(ehco, tmp_path):
    echo = EchoServer()
    port = free_port()
    cfg = {"log_level": "debug", "enable_ping": False, "proxy_max_handshakes": CAP,
           "xray_config": {"inbounds": [{"listen": LOOPBACK, "port": port, "protocol": "socks"}],
                           "outbounds": [{"protocol": "freedom"}]}}
    proc = ehco("-c", write_config(tmp_path, cfg))
    wait_port(port)
    silent = [socket.create_connection((LOOPBACK, port), timeout=10) for _ in range(CAP)]
    try:
        # each silent client holds a slot (the deadline is the default 30 s): the next is refused
        wait_for(lambda: _refused(port), what="a connection beyond the cap closed at once")
        proc.wait_log("handshakes in progress (proxy_max_handshakes)")
    finally:
        for sock in silent:
            sock.close()
    # the slots are free again: a real client is served
    def served() -> bool:
        try:
            with socks5_connect(port, LOOPBACK, echo.port, timeout=10) as sock:
                return exchange(sock, b"after the crowd") == b"after the crowd"
        except (AssertionError, OSError):
            return False

    wait_for(served, what="a socks client served once the silent ones left")
    echo.close()


def _refused(port: int) -> bool:
    """A new connection is closed by the node without a byte (rather than held for its
    handshake, which a free slot would do for the 30 s deadline)."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
