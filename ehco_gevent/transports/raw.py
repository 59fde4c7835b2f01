"""Plain TCP: the ``raw`` listen and transport type, and the dialing every tunnel starts with."""

from __future__ import annotations

import socket as _stdsocket
from typing import Callable

from gevent import socket

from ..config import RelayConfig, remote_host_port
from .streams import SocketStream

#: ehco's DialTimeOut
DIAL_TIMEOUT = 3.0


def tune(sock) -> None:
    """Options every relayed TCP socket gets (Go sets TCP_NODELAY on all its TCP conns)."""
    try:
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    except OSError:
        pass


def dial_tcp(host: str, port: int, timeout: float = DIAL_TIMEOUT) -> socket.socket:
    """Connect with a deadline covering resolution and the TCP handshake; blocking after."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    tune(sock)
    return sock


class RawInbound:
    def __init__(self, cfg: RelayConfig):
        self.cfg = cfg

    def serve(self, sock, client_addr: str, on_stream: Callable) -> None:
        tune(sock)
        on_stream(SocketStream(sock))

    def close(self) -> None:
        pass


class RawDialer:
    def __init__(self, cfg: RelayConfig):
        self.cfg = cfg

    def dial(self, remote: str) -> SocketStream:
        host, port = remote_host_port(remote)
        return SocketStream(dial_tcp(host, port))

    def close(self) -> None:
        pass
