"""Plain TCP: the ``raw`` listen and transport type, and the dialing every tunnel starts with."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=1024)
def numeric_family(host: str) -> int | None:
    """AF_INET or AF_INET6 when ``host`` is an IP literal, else None (a name to resolve)."""
    for family in (_stdsocket.AF_INET, _stdsocket.AF_INET6):
        try:
            _stdsocket.inet_pton(family, host)
            return family
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=4096)
def remote_target(remote: str) -> tuple[str, int, int | None]:
    """``host, port, family`` of a remote, parsed once (family None: a name to resolve)."""
    host, port = remote_host_port(remote)
    return host, port, numeric_family(host)


def dial_tcp(host: str, port: int, timeout: float = DIAL_TIMEOUT) -> socket.socket:
    """Connect with a deadline covering resolution and the TCP handshake; blocking after.

    An IP literal is connected to directly: ``create_connection`` would send it through
    getaddrinfo, which gevent runs in its thread pool (a thread hop and a lock per dial, the
    largest single cost of a short relayed connection when profiled)."""
    family = numeric_family(host)
    if family is None:
        sock = socket.create_connection((host, port), timeout=timeout)
    else:
        sock = socket.socket(family, _stdsocket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
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
