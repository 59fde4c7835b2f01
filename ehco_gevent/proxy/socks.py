"""The ``socks`` inbound: SOCKS5 (RFC 1928) with no-auth or user/pass (RFC 1929), CONNECT, and
UDP ASSOCIATE when ``udp: true``.

The protocol steps are pure functions over bytes (``parse_*`` return None while incomplete and
raise :class:`SocksError` on input that can never be valid); :func:`handle_tcp` only moves
bytes between them and the socket.
"""

from __future__ import annotations

import hmac
import logging

import gevent
from gevent import socket

from .addr import AddressError, encode_address, parse_address
from ..guards.fairness import Budget
from .common import Context, handshake_deadline, read_parsed

log = logging.getLogger("ehco.proxy.socks")

VERSION = 5
NO_AUTH, USER_PASS, NO_ACCEPTABLE = 0x00, 0x02, 0xFF
CMD_CONNECT, CMD_UDP_ASSOCIATE = 1, 3
REP_OK, REP_FAILURE, REP_REFUSED, REP_CMD_UNSUPPORTED, REP_ATYP_UNSUPPORTED = 0, 1, 5, 7, 8
UDP_IDLE_TIMEOUT = 60.0


class SocksError(ValueError):
    def __init__(self, message: str, reply: int | None = None):
        super().__init__(message)
        self.reply = reply


def parse_greeting(buf: bytes) -> tuple[set[int], int] | None:
    """``(methods, consumed)`` of the client's method list."""
    if len(buf) < 2:
        return None
    if buf[0] != VERSION:
        raise SocksError(f"not SOCKS5 (version byte {buf[0]})")
    n = buf[1]
    if len(buf) < 2 + n:
        return None
    return set(buf[2:2 + n]), 2 + n


def parse_userpass(buf: bytes) -> tuple[str, str, int] | None:
    if len(buf) < 2:
        return None
    if buf[0] != 1:
        raise SocksError(f"bad user/pass version {buf[0]}")
    ulen = buf[1]
    if len(buf) < 2 + ulen + 1:
        return None
    plen = buf[2 + ulen]
    end = 3 + ulen + plen
    if len(buf) < end:
        return None
    return (buf[2:2 + ulen].decode("utf-8", "replace"), buf[3 + ulen:end].decode("utf-8", "replace"),
            end)


def parse_request(buf: bytes) -> tuple[int, str, int, int] | None:
    """``(command, host, port, consumed)``."""
    if len(buf) < 4:
        return None
    if buf[0] != VERSION:
        raise SocksError(f"bad request version {buf[0]}", REP_FAILURE)
    cmd = buf[1]
    try:
        parsed = parse_address(buf, 3)
    except AddressError as exc:
        raise SocksError(str(exc), REP_ATYP_UNSUPPORTED) from None
    if parsed is None:
        return None
    host, port, end = parsed
    return cmd, host, port, end


def reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    return bytes([VERSION, code, 0]) + encode_address(host, port)


def parse_udp_datagram(data: bytes) -> tuple[str, int, bytes] | None:
    """A client's UDP datagram: RSV(2) FRAG ADDR PORT DATA; fragments are not supported."""
    if len(data) < 4 or data[2] != 0:
        return None
    try:
        parsed = parse_address(data, 3)
    except AddressError:
        return None
    if parsed is None:
        return None
    host, port, end = parsed
    return host, port, data[end:]


def udp_datagram(host: str, port: int, payload: bytes) -> bytes:
    return b"\x00\x00\x00" + encode_address(host, port) + payload


def _read(sock, buf: bytearray, parser):
    result = read_parsed(sock, buf, parser, 4096)
    if result is None:
        raise SocksError("EOF during the handshake")
    return result


def authenticate(ctx: Context, sock, buf: bytearray) -> bool:
    methods, used = _read(sock, buf, parse_greeting)
    del buf[:used]
    accounts = ctx.inbound.accounts
    if accounts:
        if USER_PASS not in methods:
            sock.sendall(bytes([VERSION, NO_ACCEPTABLE]))
            return False
        sock.sendall(bytes([VERSION, USER_PASS]))
        user, password, used = _read(sock, buf, parse_userpass)
        del buf[:used]
        ok = any(hmac.compare_digest(user.encode(), u.encode()) and
                 hmac.compare_digest(password.encode(), p.encode()) for u, p in accounts)
        sock.sendall(b"\x01" + (b"\x00" if ok else b"\x01"))
        return ok
    if NO_AUTH not in methods:
        sock.sendall(bytes([VERSION, NO_ACCEPTABLE]))
        return False
    sock.sendall(bytes([VERSION, NO_AUTH]))
    return True


def handle_tcp(ctx: Context, sock, client: str) -> None:
    buf = bytearray()
    try:
        with handshake_deadline(ctx, client):
            if not authenticate(ctx, sock, buf):
                log.debug("proxy %s: %s: socks authentication failed", ctx.name, client)
                return
            cmd, host, port, used = _read(sock, buf, parse_request)
    except SocksError as exc:
        log.debug("proxy %s: %s: bad socks handshake: %s", ctx.name, client, exc)
        if exc.reply is not None:
            try:
                sock.sendall(reply(exc.reply))
            except OSError:
                pass
        return
    del buf[:used]
    if cmd == CMD_CONNECT:
        _connect(ctx, sock, client, host, port, bytes(buf))
    elif cmd == CMD_UDP_ASSOCIATE and ctx.inbound.udp:
        _udp_associate(ctx, sock, client)
    else:
        log.debug("proxy %s: %s: socks command %d not supported", ctx.name, client, cmd)
        sock.sendall(reply(REP_CMD_UNSUPPORTED))


def _connect(ctx: Context, sock, client: str, host: str, port: int, rest: bytes) -> None:
    from ..transports.streams import SocketStream
    from ..transports.raw import dial_tcp

    # dial first, so the reply can say whether it worked (curl and browsers rely on it)
    try:
        upstream = dial_tcp(host, port)
    except Exception as exc:
        log.info("proxy %s: %s: socks connect %s:%d failed: %s", ctx.name, client, host, port, exc)
        sock.sendall(reply(REP_REFUSED))
        return
    bound = upstream.getsockname()
    sock.sendall(reply(REP_OK, bound[0], bound[1]))
    sock.settimeout(None)
    ctx.relay_connected(SocketStream(sock, rest), client, host, port, SocketStream(upstream), None)


def _udp_associate(ctx: Context, sock, client: str) -> None:
    """Open a UDP relay socket for this client; it lives as long as the TCP connection."""
    local_ip = sock.getsockname()[0]
    family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
    relay = socket.socket(family, socket.SOCK_DGRAM)
    relay.bind((local_ip, 0))
    sock.sendall(reply(REP_OK, local_ip, relay.getsockname()[1]))
    sock.settimeout(None)
    client_ip = client.rsplit(":", 1)[0].strip("[]")
    conn = ctx.registry.open(ctx.name, "udp", client, "*", ctx.name)
    current = gevent.getcurrent()
    conn.closer = lambda: current.kill(block=False)
    state = {"client": None}

    def pump_udp() -> None:
        try:
            _pump_udp()
        except OSError as exc:
            log.debug("proxy %s: %s: socks udp relay ended: %s", ctx.name, client, exc)

    def _pump_udp() -> None:
        budget = Budget()
        while True:
            budget.spend()
            data, src = relay.recvfrom(65535)
            if src[0] == client_ip and (state["client"] is None or src == state["client"]):
                state["client"] = src
                parsed = parse_udp_datagram(data)
                if parsed is None:
                    continue
                host, port, payload = parsed
                try:
                    relay.sendto(payload, (host, port))
                    conn.add_up(len(payload))
                except OSError as exc:
                    log.debug("proxy %s: udp to %s:%d failed: %s", ctx.name, host, port, exc)
            elif state["client"] is not None:
                relay.sendto(udp_datagram(src[0], src[1], data), state["client"])
                conn.add_down(len(data))

    worker = gevent.spawn(pump_udp)
    try:
        # the association ends when the client closes the TCP connection; bytes it sends
        # meanwhile mean nothing, and must not keep the hub to themselves
        budget = Budget()
        while sock.recv(4096):
            budget.spend()
    except OSError:
        pass
    finally:
        worker.kill()
        relay.close()
        ctx.registry.close(conn)
