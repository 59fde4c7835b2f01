"""mtcp: an smux session directly over plain TCP, as ehco 1.1.4's MTCP transporter.

The listener holds a handshake slot (``tunnel_max_handshakes``) for each session until it opens
its first stream; the session's guard closes it if that does not happen within
``smux_handshake_timeout`` (see :mod:`ehco_gevent.transports.peer_limits`).
"""

from __future__ import annotations

from typing import Callable

from ..guards import limits
from ..config import RelayConfig, remote_host_port
from . import sniff
from .peer_limits import HandshakeGate, SessionGuard
from .smux import SessionPool, serve_session
from .streams import SocketStream
from .raw import dial_tcp, tune


class MTCPInbound:
    def __init__(self, cfg: RelayConfig):
        self.cfg = cfg
        self.gate = HandshakeGate(cfg.label, "mtcp", lambda: limits.current().tunnel_max_handshakes)

    def serve(self, sock, client_addr: str, on_stream: Callable) -> None:
        ticket = self.gate.enter(client_addr)
        if ticket is None:
            return
        tune(sock)
        guard = SessionGuard(limits.current(), server=True, label=self.cfg.label,
                             peer=client_addr, ticket=ticket)
        # a ws/wss/raw client sent here is named in the log, instead of a silent reset
        serve_session(sniff.CheckedStream(sock, "mtcp", self.cfg.label, client_addr), on_stream,
                      guard)

    def close(self) -> None:
        pass


def _dial_session_conn(remote: str) -> SocketStream:
    host, port = remote_host_port(remote)
    return SocketStream(dial_tcp(host, port))


class MTCPDialer:
    def __init__(self, cfg: RelayConfig):
        self.cfg = cfg
        self.pool = SessionPool(_dial_session_conn)

    def dial(self, remote: str):
        return self.pool.open_stream(remote)

    def close(self) -> None:
        self.pool.close()
