"""Telling a mismatched tunnel from the first bytes: plain functions over bytes, no sockets.

A tunnel is two nodes that must agree (A's ``transport_type`` is B's ``listen_type``). When they
do not, ehco just resets, and the operator sees resets. The side that receives the wrong bytes
can usually tell what they are (a TLS ClientHello starts ``16 03``, smux frames ``01 00``, HTTP
with a method name), so a listener names the likely mismatch in one log line, and a dialer whose
upgrade fails says what the remote probably is. These lines are about configuration, not attacks,
but a peer can repeat them at will: callers log them through
:class:`ehco_gevent.logs.RateLimitedLogger`.
"""

from __future__ import annotations

import logging
import socket as _stdsocket

import gevent

from ..logs import RateLimitedLogger
from .streams import SocketStream

log = logging.getLogger("ehco.mismatch")
#: one line per relay and cause per minute
mismatch_log = RateLimitedLogger(log, interval=60.0)

#: the longest HTTP method name we wait for before deciding (``OPTIONS``, ``CONNECT``: 7)
_MAX_METHOD = 16

WHAT = {
    "tls": "a TLS ClientHello",
    "http": "an HTTP request",
    "smux": "smux frames",
    "ssh": "an SSH banner",
    "unknown": "bytes of no known protocol",
}
#: who most likely sent those bytes to a listener of another kind
WHO = {
    "tls": "a wss or mwss client (-tt wss/mwss)",
    "http": "a ws client (-tt ws) or a browser",
    "smux": "an mtcp client (-tt mtcp)",
    "ssh": "a raw client (-tt raw, or a program connecting directly)",
    "unknown": "a raw client (-tt raw, or a program connecting directly)",
}


class Mismatch(Exception):
    """The peer speaks another tunnel's protocol; ``str()`` names it. ``cause`` is the short
    key the rate limit counts by."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


def report(label: str, listen_type: str, client: str, exc: Mismatch) -> None:
    """The one warning line per relay and cause per minute that a mismatch gets."""
    mismatch_log.warning((label, exc.cause), "relay %s: %s listener closed %s: %s", label,
                         listen_type, client, exc)


def peek(sock, timeout: float) -> bytes:
    """The client's first bytes, left in the socket for whoever reads next (b"" at EOF)."""
    with gevent.Timeout(timeout, TimeoutError("no first bytes in time")):
        return sock.recv(16, _stdsocket.MSG_PEEK)


class CheckedStream(SocketStream):
    """A plain socket stream whose first read is checked with :func:`check_first_bytes`: a
    mismatch is reported and read as EOF (so the session on top just ends). Only the first
    read pays: it removes itself, and later reads are SocketStream's own."""

    def __init__(self, sock, listen_type: str, label: str, client: str):
        super().__init__(sock)
        self._who = (listen_type, label, client)
        self.recv_into = self._first_recv_into  # type: ignore[method-assign]

    def _first_recv_into(self, buf) -> int:
        del self.recv_into  # from now on the class's recv_into
        n = SocketStream.recv_into(self, buf)
        listen_type, label, client = self._who
        try:
            check_first_bytes(bytes(buf[:min(n, 16)]), listen_type)
        except Mismatch as exc:
            report(label, listen_type, client, exc)
            return 0
        return n


def could_be_http(data: bytes) -> bool:
    """False as soon as ``data`` cannot be the start of an HTTP/1.x request line (a method
    token of capital letters, then a space); True while it still could be."""
    head = data[:_MAX_METHOD + 1]
    space = head.find(b" ")
    token = head if space < 0 else head[:space]
    if space == 0 or (space < 0 and len(head) > _MAX_METHOD):
        return False
    return all(65 <= c <= 90 for c in token)


def guess(data: bytes) -> str:
    """What the first bytes of a connection look like: a key of :data:`WHAT`."""
    if data[:1] == b"\x16" and data[1:2] in (b"", b"\x03"):
        return "tls"
    if data[:1] == b"\x01" and data[1:2] in (b"", b"\x00", b"\x01", b"\x02", b"\x03"):
        return "smux"
    if data.startswith(b"SSH-"):
        return "ssh"
    if data and could_be_http(data):
        return "http"
    return "unknown"


def check_first_bytes(data: bytes, listen_type: str) -> None:
    """Raise :class:`Mismatch` when the first bytes a ``listen_type`` listener received
    cannot be what it expects: TLS for wss/mwss, an HTTP request for ws, smux for mtcp."""
    if not data:
        return
    kind = guess(data)
    expected = {"ws": "http", "wss": "tls", "mwss": "tls", "mtcp": "smux"}.get(listen_type)
    if expected is None or kind == expected:
        return
    if expected == "http" and could_be_http(data):
        return  # an HTTP request whose method we have not seen in full yet
    raise Mismatch(f"got {WHAT[kind]} ({bytes(data[:8]).hex(' ')}), not {WHAT[expected]}: "
                   f"{WHO[kind]} aimed at this {listen_type} listener? "
                   f"(the client's transport_type must be this listener's listen_type)", kind)


def wrong_path(path: str, paths: dict[str, str], listen_type: str) -> Mismatch | None:
    """An upgrade for another ws tunnel's path (``/mwss/`` at a wss listener)."""
    for kind, other in paths.items():
        if path == other and kind != listen_type:
            return Mismatch(f"WebSocket upgrade for {path}: a {kind} client (-tt {kind}) aimed at "
                            f"this {listen_type} listener?", f"path-{kind}")
    return None


def upgrade_hint(kind: str, remote: str, stage: str, reason: str) -> str:
    """The dial error of a ``kind`` (ws, wss, mwss) client whose upgrade failed at ``stage``
    ("tls" or "http"), with the likely cause."""
    if stage == "tls":
        hint = (f"is {remote} a wss/mwss listener? a ws, raw or mtcp listener does not speak "
                "TLS: make -tt match the remote's listen type")
    elif "404" in reason:
        hint = (f"{remote} is another kind of WebSocket listener (ws, wss and mwss use the paths "
                f"/ws/, /wss/, /mwss/): make -tt {kind} match the remote's listen type")
    elif kind == "ws" and not reason.startswith("upgrade"):  # closed or reset, no answer
        hint = (f"is {remote} a ws listener? a wss or mwss listener expects TLS (-tt wss/mwss), "
                "an mtcp listener smux")
    else:
        hint = f"is {remote} a {kind} listener?"
    return f"{kind} upgrade with {remote} failed: {reason} ({hint})"
