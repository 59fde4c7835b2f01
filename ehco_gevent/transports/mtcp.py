"""mtcp: an smux session directly over plain TCP, as ehco 1.1.4's MTCP transporter."""

from __future__ import annotations

from typing import Callable

from ..config import RelayConfig, remote_host_port
from . import sniff
from .smux import SessionPool, serve_session
from .streams import SocketStream
from .raw import dial_tcp, tune


class MTCPInbound:
    def __init__(self, cfg: RelayConfig):
        self.cfg = cfg

    def serve(self, sock, client_addr: str, on_stream: Callable) -> None:
        tune(sock)
        # a ws/wss/raw client sent here is named in the log, instead of a silent reset
        serve_session(sniff.CheckedStream(sock, "mtcp", self.cfg.label, client_addr), on_stream)

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
