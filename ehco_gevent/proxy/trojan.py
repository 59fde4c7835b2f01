"""The trojan inbound: TLS, then ``hex(SHA-224(password)) CRLF CMD ADDR PORT CRLF payload``.

Users are found by the 56-byte hash. A connection that does not start like that (a browser, a
prober, a wrong password) is handed byte for byte, everything read so far included, to the
configured fallback; without one it gets the plain index text (an HTTP 200 with ehco's
``access from remote ip: ADDR`` line), so the port looks like an ordinary web server.

UDP ASSOCIATE (CMD 3) carries datagrams inside the TLS stream as
``ADDR PORT LENGTH(2) CRLF PAYLOAD`` in both directions.
"""

from __future__ import annotations

import logging
import struct

import gevent
from gevent import socket

from ..config import split_host_port
from ..transports.streams import SocketStream
from ..transports.tls import new_server_context, server_context
from ..transports.raw import dial_tcp
from .addr import AddressError, encode_address, parse_address
from ..guards import limits
from ..guards.fairness import Budget
from .common import Context, handshake_deadline

log = logging.getLogger("ehco.proxy.trojan")

HASH_LEN = 56
CRLF = b"\r\n"
CMD_CONNECT, CMD_UDP = 1, 3
UDP_IDLE_TIMEOUT = 60.0
_HEX = b"0123456789abcdef"


class TrojanError(ValueError):
    pass


def split_auth(buf: bytes) -> bytes | None:
    """The 56-byte hash if ``buf`` starts like trojan; None while fewer than 58 bytes arrived.

    Raises TrojanError as soon as the bytes cannot be trojan (a non-hex byte in the hash, no
    CRLF after it), so a short HTTP request reaches the fallback without waiting for more.
    """
    head = bytes(buf[:HASH_LEN])
    if head.strip(_HEX):
        raise TrojanError("not a hex password hash")
    if len(buf) < HASH_LEN + 2:
        return None
    if buf[HASH_LEN:HASH_LEN + 2] != CRLF:
        raise TrojanError("no CRLF after the password hash")
    return bytes(buf[:HASH_LEN])


def parse_request(buf: bytes) -> tuple[int, str, int, int] | None:
    """``(cmd, host, port, end)`` of the request after the hash line; None while incomplete."""
    pos = HASH_LEN + 2
    if len(buf) < pos + 1:
        return None
    cmd = buf[pos]
    if cmd not in (CMD_CONNECT, CMD_UDP):
        raise TrojanError(f"unknown command {cmd}")
    try:
        parsed = parse_address(buf, pos + 1)
    except AddressError as exc:
        raise TrojanError(str(exc)) from None
    if parsed is None:
        return None
    host, port, end = parsed
    if len(buf) < end + 2:
        return None
    if buf[end:end + 2] != CRLF:
        raise TrojanError("no CRLF after the request")
    return cmd, host, port, end + 2


def parse_udp_frame(buf) -> tuple[str, int, bytes, int] | None:
    """``(host, port, payload, end)`` of one UDP frame; None while incomplete."""
    try:
        parsed = parse_address(buf, 0)
    except AddressError as exc:
        raise TrojanError(str(exc)) from None
    if parsed is None:
        return None
    host, port, pos = parsed
    if len(buf) < pos + 4:
        return None
    length = struct.unpack(">H", bytes(buf[pos:pos + 2]))[0]
    if buf[pos + 2:pos + 4] != CRLF:
        raise TrojanError("no CRLF in a UDP frame")
    end = pos + 4 + length
    if len(buf) < end:
        return None
    return host, port, bytes(buf[pos + 4:end]), end


def udp_frame(host: str, port: int, payload: bytes) -> bytes:
    return encode_address(host, port) + struct.pack(">H", len(payload)) + CRLF + payload


def index_response(client: str) -> bytes:
    body = f"access from remote ip: {client} \n".encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


class TLSStream(SocketStream):
    """A TLS socket: never spliced (the kernel only sees ciphertext)."""

    @property
    def splice_socket(self):
        return None


def setup(ctx: Context) -> None:
    """The inbound's TLS context: the process's shared one (the wss certificate, design.md 4)
    unless the inbound names its own certificate files or ALPN list."""
    ib = ctx.inbound
    if ib.cert_file or ib.alpn:
        ctx.tls = new_server_context(ib.cert_file, ib.key_file, ib.alpn)  # type: ignore[attr-defined]
    else:
        ctx.tls = server_context()  # type: ignore[attr-defined]


def handle_tcp(ctx: Context, sock, client: str) -> None:
    tls = None
    try:
        with handshake_deadline(ctx, client):  # TLS, hash line and request together
            try:
                tls = ctx.tls.wrap_socket(sock, server_side=True)  # type: ignore[attr-defined]
            except (OSError, socket.timeout) as exc:
                log.debug("proxy %s: %s: TLS handshake failed: %s", ctx.name, client, exc)
                return
            buf = bytearray()
            outcome = _read_request(ctx, tls, client, buf)
        if outcome is None:
            return
        if isinstance(outcome, TrojanError):
            log.debug("proxy %s: %s: not trojan (%s), to the fallback", ctx.name, client, outcome)
            _fallback(ctx, tls, client, bytes(buf))
            return
        user, (cmd, host, port, end) = outcome
        tls.settimeout(None)
        rest = bytes(buf[end:])
        if cmd == CMD_CONNECT:
            ctx.relay(TLSStream(tls, rest), client, host, port, user)
        else:
            _udp(ctx, tls, client, user, rest)
    finally:
        if tls is not None:
            tls.close()


def _read_request(ctx: Context, tls, client: str, buf: bytearray):
    """``(user, request)``; a TrojanError when the bytes are not trojan from a known user (the
    fallback gets them); None when the connection ended or the user sent a bad request."""
    user = None
    try:
        while True:
            hashed = split_auth(buf)
            if hashed is not None:
                break
            data = tls.recv(65536)
            if not data:
                return None
            buf += data
        user = ctx.store.trojan_user(ctx.inbound.tag, hashed)
        if user is None:
            raise TrojanError("unknown password")
        while True:
            request = parse_request(buf)
            if request is not None:
                return user, request
            data = tls.recv(65536)
            if not data:
                return None
            buf += data
    except TrojanError as exc:
        if user is not None:
            log.debug("proxy %s: %s (user %s): bad request: %s", ctx.name, client, user.label, exc)
            return None
        return exc
    except (OSError, socket.timeout) as exc:
        log.debug("proxy %s: %s: handshake failed: %s", ctx.name, client, exc)
        return None


def _fallback(ctx: Context, tls, client: str, seen: bytes) -> None:
    dest = ctx.inbound.fallback
    if not dest:
        tls.settimeout(limits.current().proxy_handshake_timeout)
        try:
            tls.sendall(index_response(client))
        except OSError:
            pass
        return
    host, port = split_host_port(dest)
    tls.settimeout(None)
    try:
        upstream = dial_tcp(host or "127.0.0.1", port)
    except Exception as exc:
        log.info("proxy %s: fallback %s unreachable: %s", ctx.name, dest, exc)
        return
    ctx.relay_connected(TLSStream(tls, seen), client, host, port, SocketStream(upstream), None)


def _udp(ctx: Context, tls, client: str, user, rest: bytes) -> None:
    if not ctx.inbound.udp:
        return
    if not ctx.store.is_current(user):
        return
    family = socket.AF_INET6 if ":" in client.rsplit(":", 1)[0] else socket.AF_INET
    usock = socket.socket(family, socket.SOCK_DGRAM)
    conn = ctx.registry.open(ctx.name, "udp", client, "*", ctx.name)
    current = gevent.getcurrent()
    conn.closer = lambda: current.kill(block=False)
    user.conns.add(current)

    def replies() -> None:
        budget = Budget()
        try:
            while True:
                budget.spend()
                data, src = usock.recvfrom(65535)
                tls.sendall(udp_frame(src[0], src[1], data))
                conn.add_down(len(data))
                user.count_down(len(data))
        except OSError as exc:
            log.debug("proxy %s: %s: trojan udp replies ended: %s", ctx.name, client, exc)
            current.kill(block=False)

    worker = gevent.spawn(replies)
    buf = bytearray(rest)
    budget = Budget()
    try:
        while True:
            budget.spend()
            frame = parse_udp_frame(buf)
            if frame is None:
                data = tls.recv(65536)
                if not data:
                    return
                buf += data
                continue
            host, port, payload, end = frame
            del buf[:end]
            try:
                usock.sendto(payload, (host, port))
            except OSError as exc:
                log.debug("proxy %s: udp to %s:%d failed: %s", ctx.name, host, port, exc)
                continue
            conn.add_up(len(payload))
            user.count_up(len(payload))
    except (TrojanError, OSError) as exc:
        log.debug("proxy %s: %s: trojan udp ended: %s", ctx.name, client, exc)
    finally:
        worker.kill()
        usock.close()
        user.conns.discard(current)
        ctx.registry.close(conn)
