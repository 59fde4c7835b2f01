"""The ``http`` inbound: an HTTP proxy with CONNECT tunnels and plain (absolute-URI) forwarding.

Plain forwarding rewrites the request line to origin form, drops the ``Proxy-*`` headers and
asks for ``Connection: close``, so each client connection carries one request to one origin
(simple and correct; clients open a new connection for the next request). Accounts, when
configured, are checked with Basic ``Proxy-Authorization`` (407 otherwise).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from urllib.parse import urlsplit

from ..transports.streams import SocketStream
from ..transports.raw import dial_tcp
from .common import Context, handshake_deadline, read_parsed

log = logging.getLogger("ehco.proxy.http")

MAX_HEAD = 64 * 1024


class HttpError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_head(buf: bytes) -> tuple[str, str, str, list[tuple[str, str]], int] | None:
    """``(method, target, version, headers, consumed)`` once the blank line arrived."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise HttpError(431, "request head too large")
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise HttpError(400, f"bad request line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise HttpError(400, f"bad header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return parts[0].upper(), parts[1], parts[2], headers, end + 4


def split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    if not host:
        raise HttpError(400, "no host in the target")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise HttpError(400, f"bad port {port!r}")
    return host, int(port) if port else default_port


def forward_target(method: str, target: str) -> tuple[str, int, str]:
    """``(host, port, origin-form path)`` of a plain proxy request."""
    url = urlsplit(target)
    if url.scheme.lower() != "http" or not url.netloc:
        raise HttpError(400, f"not an absolute http:// URL: {target[:80]!r}")
    host, port = split_authority(url.netloc.rpartition("@")[2], 80)
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    return host, port, path


def rewrite_head(method: str, path: str, version: str, headers: list[tuple[str, str]]) -> bytes:
    kept = [(n, v) for n, v in headers
            if n.lower() not in ("proxy-authorization", "proxy-connection", "connection", "keep-alive")]
    kept.append(("Connection", "close"))
    lines = [f"{method} {path} {version}"] + [f"{n}: {v}" for n, v in kept]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def authorized(headers: list[tuple[str, str]], accounts) -> bool:
    if not accounts:
        return True
    for name, value in headers:
        if name.lower() != "proxy-authorization":
            continue
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, pw = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return any(hmac.compare_digest(user.encode(), u.encode()) and
                   hmac.compare_digest(pw.encode(), p.encode()) for u, p in accounts)
    return False


def response(status: int, reason: str, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            .encode("latin-1"))


REASONS = {400: "Bad Request", 407: "Proxy Authentication Required", 431: "Request Header Fields Too Large",
           502: "Bad Gateway"}


def handle_tcp(ctx: Context, sock, client: str) -> None:
    buf = bytearray()
    try:
        with handshake_deadline(ctx, client):
            head = read_parsed(sock, buf, parse_head)
        if head is None:
            return
        method, target, version, headers, used = head
        if not authorized(headers, ctx.inbound.accounts):
            sock.sendall(response(407, REASONS[407], 'Proxy-Authenticate: Basic realm="proxy"\r\n'))
            return
        if method == "CONNECT":
            host, port = split_authority(target, 443)
            first = b""
        else:
            host, port, path = forward_target(method, target)
            first = rewrite_head(method, path, version, headers)
    except HttpError as exc:
        log.debug("proxy %s: %s: bad http proxy request: %s", ctx.name, client, exc)
        sock.sendall(response(exc.status, REASONS.get(exc.status, "Error")))
        return
    rest = bytes(buf[used:])
    try:
        upstream = dial_tcp(host, port)
    except Exception as exc:
        log.info("proxy %s: %s: dial %s:%d failed: %s", ctx.name, client, host, port, exc)
        sock.sendall(response(502, REASONS[502]))
        return
    if method == "CONNECT":
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    sock.settimeout(None)
    ctx.relay_connected(SocketStream(sock, first + rest), client, host, port,
                        SocketStream(upstream), None)
