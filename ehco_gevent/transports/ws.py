"""ws, wss and mwss: ehco 1.1.4's WebSocket tunnels, both sides.

All three start with an HTTP/1.1 upgrade (``/ws/``, ``/wss/``, ``/mwss/``; wss and mwss inside
TLS). After the 101, ehco 1.1.4 sends the relayed bytes raw; mwss runs an smux session over
that raw stream. With ``ws_frames`` (beyond ehco 1.1.4) the bytes go in RFC 6455 binary frames
instead, as ehco >= 1.1.5 and WebSocket proxies expect.

The listener answers like ehco's HTTP mux: ``GET /`` gets the health text, the upgrade path
without upgrade headers gets 400, any other path 404, and a request that is not HTTP is closed,
as soon as its first bytes show it (see :mod:`.sniff`: a TLS ClientHello on a ws port, an SSH
banner, plain bytes on a wss port), with one rate-limited line naming the likely mismatch.
Bytes that arrive behind the HTTP head (either way) are kept: they are the stream's first bytes.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Callable

import gevent

from . import sniff
from . import websocket as wsproto
from ..guards import limits
from ..config import RelayConfig, remote_host_port
from .peer_limits import HandshakeGate, SessionGuard
from .smux import SessionPool, serve_session
from .streams import SocketStream
from .tls import client_context, server_context
from .wsstreams import FramedStream, TLSStream
from .raw import DIAL_TIMEOUT, dial_tcp, tune

log = logging.getLogger("ehco.ws")

#: the dial side's budget for the server's answer (the accepting side reads the
#: ``ws_handshake_timeout`` config key, see ehco_gevent.guards.limits; both default to ehco's 10 s)
HANDSHAKE_TIMEOUT = 10.0
PATHS = {"ws": "/ws/", "wss": "/wss/", "mwss": "/mwss/"}
KINDS = {path: kind for kind, path in PATHS.items()}


def index_text(client_addr: str) -> str:
    return f"access from remote ip: {client_addr} \n"


def read_head(sock, timeout: float, check: Callable[[bytes], None] | None = None
              ) -> tuple[bytes, bytes]:
    """Read until the blank line ending an HTTP head; returns (head, bytes after it).
    ``check(data)`` sees the bytes so far and may raise to give up early (not HTTP at all)."""
    data = b""
    with gevent.Timeout(timeout, TimeoutError("HTTP head not complete in time")):
        while True:
            chunk = sock.recv(16384)
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} bytes of HTTP head")
            data += chunk
            if check is not None:
                check(data)
            split = wsproto.split_head(data)
            if split is not None:
                return split


def _wrap(sock, tls_stream, pending: bytes, frames: bool, client: bool):
    if tls_stream is not None:
        base = tls_stream
        base.pending = b"" if frames else pending
    else:
        base = SocketStream(sock, b"" if frames else pending)
    return FramedStream(base, client=client, pending=pending) if frames else base


# -- server side -----------------------------------------------------------------------------------
def accept_upgrade(sock, client_addr: str, path: str, tls: bool, frames: bool,
                   timeout: float | None = None):
    """Serve one HTTP request on an accepted socket; the upgraded stream, or None when the
    request was answered (health text, 400, 404) or was not HTTP.

    ``timeout`` (default: the ``ws_handshake_timeout`` key) bounds the whole handshake, TLS
    and request head together, not each read: a client trickling bytes is cut at the deadline.

    Raises :class:`sniff.Mismatch` at once when the first bytes are another tunnel's (TLS on
    a ws listener, plain bytes on a TLS one, an SSH banner...), and after the 404 for an
    upgrade on another ws tunnel's path: the caller logs those at the default level."""
    if timeout is None:
        timeout = limits.current().ws_handshake_timeout
    kind = KINDS[path]
    tls_stream = None
    io = sock
    with gevent.Timeout(timeout, TimeoutError(f"upgrade handshake not complete within {timeout:g} s")):
        if tls:
            sniff.check_first_bytes(sniff.peek(sock, timeout + 1), kind)
            tls_stream = TLSStream.handshake(sock, server_context(), server_side=True)
            io = tls_stream
        # the inner timeouts are beyond the outer deadline, which fires first
        head, rest = read_head(io, timeout + 1, None if tls else
                               lambda data: sniff.check_first_bytes(data, kind))
    answer = answer_request(head, path, client_addr)
    if answer.upgrade:
        io.sendall(answer.response)
        return _wrap(sock, tls_stream, rest, frames, client=False)
    _answer(io, answer.response)
    if answer.mismatch is not None:
        raise answer.mismatch
    return None


@dataclass
class Answer:
    """What a ws listener answers to one request head: ``response`` to send; ``upgrade``
    when it is the 101 (the stream starts behind it), else a final answer after which the
    connection ends; ``mismatch`` when the request was another tunnel's (to be reported)."""

    response: bytes
    upgrade: bool = False
    mismatch: sniff.Mismatch | None = None


def answer_request(head: bytes, path: str, client_addr: str) -> Answer:
    """The listener's decision for a request head, as a plain function (the greenlet path
    above and the callback path of :mod:`.ws_callbacks` both answer through it). Raises
    HandshakeError or ValueError for a head that is not HTTP."""
    request = wsproto.parse_request(head)
    if request.path == path and request.method == "GET":
        if not request.is_upgrade:
            return Answer(wsproto.build_response(400, "Bad Request: not a websocket upgrade\n"))
        if not wsproto.valid_key(request.header("sec-websocket-key")):
            return Answer(wsproto.build_response(400, "Bad Request: bad Sec-WebSocket-Key\n"))
        if not request.version_ok:
            return Answer(wsproto.build_response(426, "Upgrade Required: WebSocket version 13 only\n",
                                                 "Sec-WebSocket-Version: 13\r\n"))
        return Answer(wsproto.build_101(request.header("sec-websocket-key")), upgrade=True)
    if request.path == "/" and request.method in ("GET", "HEAD"):
        response = wsproto.build_response(200, index_text(client_addr))
        if request.method == "HEAD":  # the same head, no body (RFC 9110 9.3.2)
            response = wsproto.split_head(response)[0]
        return Answer(response)
    mismatch = sniff.wrong_path(request.path, PATHS, KINDS[path]) if request.is_upgrade else None
    return Answer(wsproto.build_response(404, "404 page not found\n"), mismatch=mismatch)


def _answer(io, response: bytes) -> None:
    """Send a final HTTP answer and end our writing (TLS: close_notify, so clients such as curl
    see a clean end rather than a truncated TLS stream)."""
    io.sendall(response)
    if hasattr(io, "shutdown_write"):
        io.shutdown_write()


class WSInbound:
    def __init__(self, cfg: RelayConfig, kind: str):
        self.cfg = cfg
        self.kind = kind
        self.path = PATHS[kind]
        self.tls = kind in ("wss", "mwss")
        if self.tls:
            server_context()  # load or generate the certificate now, not on the first client
        self.gate = HandshakeGate(cfg.label, kind, lambda: limits.current().tunnel_max_handshakes)

    def serve(self, sock, client_addr: str, on_stream: Callable) -> None:
        # a handshake slot until the upgrade is done (mwss: until the first smux stream)
        ticket = self.gate.enter(client_addr)
        if ticket is None:
            return
        try:
            tune(sock)
            try:
                stream = accept_upgrade(sock, client_addr, self.path, self.tls,
                                        self.cfg.ws_frames)
            except sniff.Mismatch as exc:
                sniff.report(self.cfg.label, self.kind, client_addr, exc)
                return
            except (wsproto.HandshakeError, OSError, TimeoutError, ValueError) as exc:
                log.debug("relay %s: %s handshake from %s failed: %s", self.cfg.label,
                          self.kind, client_addr, exc)
                return
            if stream is None:
                return
            if isinstance(stream, FramedStream):  # names for its limit's log line
                stream.label, stream.peer = self.cfg.label, client_addr
            if self.kind == "mwss":
                guard = SessionGuard(limits.current(), server=True, label=self.cfg.label,
                                     peer=client_addr, ticket=ticket)
                serve_session(stream, on_stream, guard)
                return
        finally:
            ticket.release()
        on_stream(stream)

    def close(self) -> None:
        pass


# -- client side -----------------------------------------------------------------------------------
def dial_upgrade(remote: str, path: str, tls: bool, frames: bool,
                 timeout: float = DIAL_TIMEOUT):
    """Connect, (TLS,) upgrade; the stream, with any bytes that came behind the 101."""
    host, port = remote_host_port(remote)
    sock = dial_tcp(host, port, timeout)
    stage = "tls" if tls else "http"
    try:
        with gevent.Timeout(timeout + HANDSHAKE_TIMEOUT, TimeoutError("upgrade not answered in time")):
            io = sock
            tls_stream = None
            if tls:
                tls_stream = TLSStream.handshake(sock, client_context(), server_side=False,
                                                 server_hostname=host or None)
                io = tls_stream
                stage = "http"
            key = wsproto.new_key()
            io.sendall(wsproto.build_request(wsproto.host_header(host, port), path, key))
            head, rest = read_head(io, timeout + HANDSHAKE_TIMEOUT)
            wsproto.check_response(head, key)
    except (wsproto.HandshakeError, ConnectionError, ssl.SSLError) as exc:
        sock.close()  # the remote answered, but not as our kind of listener: say what it may be
        raise ConnectionError(sniff.upgrade_hint(KINDS[path], remote, stage, str(exc))) from None
    except BaseException:
        sock.close()
        raise
    return _wrap(sock, tls_stream, rest, frames, client=True)


class WSDialer:
    def __init__(self, cfg: RelayConfig, kind: str):
        self.cfg = cfg
        self.kind = kind
        self.path = PATHS[kind]
        self.tls = kind in ("wss", "mwss")
        self.pool = SessionPool(self._session_conn) if kind == "mwss" else None

    def _session_conn(self, remote: str):
        return dial_upgrade(remote, self.path, self.tls, self.cfg.ws_frames)

    def dial(self, remote: str):
        if self.pool is not None:
            return self.pool.open_stream(remote)
        return dial_upgrade(remote, self.path, self.tls, self.cfg.ws_frames)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def inbound(kind: str) -> Callable[[RelayConfig], WSInbound]:
    return lambda cfg: WSInbound(cfg, kind)


def dialer(kind: str) -> Callable[[RelayConfig], WSDialer]:
    return lambda cfg: WSDialer(cfg, kind)
