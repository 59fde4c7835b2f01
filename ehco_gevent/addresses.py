"""Address helpers shared by the listeners: binding, and printing peers the way logs show them."""

from __future__ import annotations

import errno
import socket as _stdsocket

from gevent import socket

from .config import split_host_port


#: set in a relay worker (``--workers N``): every listener it binds shares its port with the
#: other workers through SO_REUSEPORT, and the kernel spreads connections over them
reuse_port = False

#: set in a relay worker: UDP sockets the supervisor bound for this worker, by listen address.
#: The supervisor keeps its own copy of each, so the kernel's SO_REUSEPORT group of a UDP port
#: never changes while its relay runs: a client's datagrams keep reaching the same worker (and
#: session) when another worker dies and is restarted. :func:`bind_socket` hands them out.
held_udp: dict[str, socket.socket] = {}


class ListenError(Exception):
    """A listen address that cannot be bound; the message names the relay and the address."""


def format_addr(addr) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(addr)


def bind_socket(listen: str, kind: int, what: str, backlog: int = 1024,
                share: bool | None = None) -> socket.socket:
    """Bind ``host:port`` (empty host = every address, as Go) for TCP or UDP; ``share`` sets
    SO_REUSEPORT (default: :data:`reuse_port`). A UDP socket held for this worker is taken
    instead of binding."""
    if kind == _stdsocket.SOCK_DGRAM and listen in held_udp:
        return held_udp.pop(listen)
    host, port = split_host_port(listen)
    try:
        infos = socket.getaddrinfo(host or None, port, _stdsocket.AF_UNSPEC, kind, 0,
                                   _stdsocket.AI_PASSIVE)
    except OSError as exc:
        raise ListenError(f"{what}: cannot resolve listen address {listen}: {exc}") from None
    # prefer IPv4 for an empty host so 127.0.0.1 clients reach it, as Go's dual-stack does
    infos.sort(key=lambda info: info[0] != _stdsocket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, kind)
    try:
        if kind == _stdsocket.SOCK_STREAM:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        if reuse_port if share is None else share:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        if kind == _stdsocket.SOCK_STREAM:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ListenError(f"{what}: cannot listen on {listen}: {reason}") from None
    return sock
