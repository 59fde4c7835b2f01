"""ehco 1.1.4's ws upgrade, both sides, as loop callbacks for :mod:`ehco_gevent.callback_relay`.

After its HTTP upgrade a ws tunnel (without ``ws_frames``) carries the same plain bytes as a
raw relay, so a ws listener or a ws transport can run on the callback relay too: these two
classes do the upgrade on the connection's C socket from io watchers, then hand the socket on.
What is said and decided is :mod:`.ws`'s (``answer_request``, ``wsproto.build_request`` and
``check_response``, ``sniff``'s checks and hints), so both paths answer byte for byte alike.

A handshake's answer (the 101, an error page, the upgrade request) is at most a few hundred
bytes written to a fresh socket, whose send buffer always takes it in one ``send``; if it ever
did not, the connection fails rather than waiting.
"""

from __future__ import annotations

import logging
import socket
import time

from . import sniff, ws
from . import websocket as wsproto
from ..guards import limits
from .raw import DIAL_TIMEOUT, remote_target

log = logging.getLogger("ehco.ws")

_READ = 1
#: one read of a request or response head
HEAD_READ = 16384


def _send_now(sock, data: bytes) -> bool:
    try:
        return sock.send(data) == len(data)
    except OSError:
        return False


class _HeadReader:
    """Reads an HTTP head from ``sock`` under one deadline; subclasses handle it."""

    __slots__ = ("conn", "sock", "data", "watcher", "timer")

    def __init__(self, conn, sock):
        self.conn = conn
        self.sock = sock
        self.data = b""
        self.watcher = self.timer = None

    def _watch(self, timeout: float) -> None:
        loop = self.conn.loop
        self.watcher = loop.io(self.sock.fileno(), _READ)
        self.watcher.start(self._on_readable)
        self.timer = loop.timer(max(timeout, 0.001))
        self.timer.start(self._on_timeout, timeout)

    def stop(self) -> None:
        for watcher in (self.watcher, self.timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self.watcher = self.timer = None

    def _on_readable(self) -> None:
        try:
            chunk = self.sock.recv(HEAD_READ)
        except BlockingIOError:
            return
        except OSError as exc:
            self.stop()
            self._failed(str(exc), exc)
            return
        if not chunk:
            self.stop()
            self._failed(f"closed after {len(self.data)} bytes of HTTP head", None)
            return
        self.data += chunk
        try:
            self._check(self.data)
            split = wsproto.split_head(self.data)
        except (sniff.Mismatch, wsproto.HandshakeError) as exc:
            self.stop()
            self._failed(str(exc), exc)
            return
        if split is not None:
            self.stop()
            self._head(*split)

    def _check(self, data: bytes) -> None:
        pass

    def _on_timeout(self, timeout: float) -> None:
        raise NotImplementedError

    def _head(self, head: bytes, rest: bytes) -> None:
        raise NotImplementedError

    def _failed(self, reason: str, exc: Exception | None) -> None:
        raise NotImplementedError


class AcceptUpgrade(_HeadReader):
    """A ws listener's client: one handshake slot (``tunnel_max_handshakes``) and one deadline
    (``ws_handshake_timeout``) for the whole request head, then the 101 and the dial, or a
    final answer (health text, 400, 404, 426) and the end, as :func:`.ws.accept_upgrade`."""

    __slots__ = ("inbound", "ticket")

    def __init__(self, conn, inbound):
        super().__init__(conn, conn.client)
        self.inbound = inbound
        self.ticket = None

    def start(self) -> None:
        self.ticket = self.inbound.gate.enter(self.conn.client_addr)
        if self.ticket is None:
            self.conn.close()
            return
        self._watch(limits.current().ws_handshake_timeout)

    def stop(self) -> None:
        super().stop()
        if self.ticket is not None:
            self.ticket.release()
            self.ticket = None

    def _check(self, data: bytes) -> None:
        sniff.check_first_bytes(data, "ws")

    def _on_timeout(self, timeout: float) -> None:
        self.stop()
        self._failed(f"upgrade handshake not complete within {timeout:g} s", None)

    def _failed(self, reason: str, exc: Exception | None) -> None:
        conn = self.conn
        if isinstance(exc, sniff.Mismatch):
            sniff.report(conn.relay.label, "ws", conn.client_addr, exc)
        else:
            log.debug("relay %s: ws handshake from %s failed: %s", conn.relay.label,
                      conn.client_addr, reason)
        conn.close()

    def _head(self, head: bytes, rest: bytes) -> None:
        conn = self.conn
        try:
            answer = ws.answer_request(head, self.inbound.path, conn.client_addr)
        except (wsproto.HandshakeError, ValueError) as exc:
            self._failed(str(exc), exc)
            return
        if not _send_now(conn.client, answer.response):
            self._failed("could not send the answer", None)
            return
        if answer.upgrade:
            conn.dial(rest)
            return
        try:
            conn.client.shutdown(socket.SHUT_WR)  # a final answer ends our side
        except OSError:
            pass
        if answer.mismatch is not None:
            sniff.report(conn.relay.label, "ws", conn.client_addr, answer.mismatch)
        conn.close()


class DialUpgrade(_HeadReader):
    """The upgrade on a freshly connected remote: the request, then the 101 within the
    attempt's budget (one remote: ehco's 3 + 10 s, as :func:`.ws.dial_upgrade`). A failure
    is this attempt's, with the same hint as the greenlet path; the next remote is tried."""

    __slots__ = ("key", "remote")

    def __init__(self, conn, upstream):
        super().__init__(conn, upstream)
        self.remote = conn.state.address
        self.key = wsproto.new_key()

    def start(self) -> None:
        conn = self.conn
        host, port, _ = remote_target(self.remote)
        request = wsproto.build_request(wsproto.host_header(host, port), ws.PATHS["ws"], self.key)
        if not _send_now(self.sock, request):
            self._failed("could not send the upgrade request", None)
            return
        if conn.deadline is None:
            timeout = DIAL_TIMEOUT + ws.HANDSHAKE_TIMEOUT
        else:
            timeout = conn.attempt_end - time.monotonic()
        self._watch(timeout)

    def _on_timeout(self, timeout: float) -> None:
        # as the greenlet path: one remote has ehco's own deadline, several share dial_timeout
        conn = self.conn
        self.stop()
        conn.upstream_failed("upgrade not answered in time" if conn.deadline is None else
                             f"no answer within {conn.attempt_end - conn.dial_started:.2f} s")

    def _failed(self, reason: str, exc: Exception | None) -> None:
        if exc is None or isinstance(exc, (wsproto.HandshakeError, ConnectionError)):
            reason = sniff.upgrade_hint("ws", self.remote, "http", reason)
        self.conn.upstream_failed(reason)

    def _head(self, head: bytes, rest: bytes) -> None:
        try:
            wsproto.check_response(head, self.key)
        except wsproto.HandshakeError as exc:
            self._failed(str(exc), exc)
            return
        self.conn.relay_to(self.sock, rest)
