"""Transports: how a relay accepts connections (``listen_type``) and reaches remotes
(``transport_type``).

An *inbound* turns one accepted TCP socket into one or more streams (raw and ws give one; mtcp
and mwss carry many smux streams over one socket) and calls ``on_stream(stream)`` for each, in
a greenlet of its own. A *dialer* turns a remote address into one stream. Both are made per
relay, because some keep state (TLS contexts, the smux session pool). Streams follow the shape
described in :mod:`ehco_gevent.transports.streams`.
"""

from __future__ import annotations

from typing import Callable, Protocol

from ..config import RelayConfig
from .mtcp import MTCPDialer, MTCPInbound
from . import ws
from .raw import RawDialer, RawInbound


class Inbound(Protocol):
    def serve(self, sock, client_addr: str, on_stream: Callable) -> None: ...

    def close(self) -> None: ...


class Dialer(Protocol):
    def dial(self, remote: str): ...

    def close(self) -> None: ...


INBOUNDS: dict[str, Callable[[RelayConfig], Inbound]] = {
    "raw": RawInbound, "mtcp": MTCPInbound,
    "ws": ws.inbound("ws"), "wss": ws.inbound("wss"), "mwss": ws.inbound("mwss"),
}
DIALERS: dict[str, Callable[[RelayConfig], Dialer]] = {
    "raw": RawDialer, "mtcp": MTCPDialer,
    "ws": ws.dialer("ws"), "wss": ws.dialer("wss"), "mwss": ws.dialer("mwss"),
}


class UnsupportedTransport(Exception):
    pass


def make_inbound(cfg: RelayConfig) -> Inbound:
    try:
        factory = INBOUNDS[cfg.listen_type]
    except KeyError:
        raise UnsupportedTransport(f"listen_type {cfg.listen_type!r} is not available") from None
    return factory(cfg)


def make_dialer(cfg: RelayConfig) -> Dialer:
    try:
        factory = DIALERS[cfg.transport_type]
    except KeyError:
        raise UnsupportedTransport(f"transport_type {cfg.transport_type!r} is not available") from None
    return factory(cfg)
