"""The shadowsocks (AEAD) inbound: TCP and UDP, several users on one port.

A TCP client is identified by whose key opens the first length chunk (each user may have their
own cipher). A client that fails that, or reuses a salt already seen (a replay), gets no answer
at all: its bytes are read and dropped for a while, then the socket closes, as shadowsocks
servers do so that probing learns nothing. After the handshake, :class:`AEADStream` presents
the encrypted socket to the pump as a plain byte stream.
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent import socket

from . import aead
from ..addresses import format_addr
from .addr import AddressError, encode_address, format_target, parse_address
from ..guards.fairness import Budget
from .common import (DRAIN_MAX_BYTES, Context, drain, handshake_deadline, recv_at_least,
                     refused)
from .users import User

log = logging.getLogger("ehco.proxy.ss")

UDP_IDLE_TIMEOUT = 60.0
MAX_DATAGRAM = 65535


class TruncatedStream(Exception):
    """EOF inside an AEAD chunk."""


class ReplayFilter:
    """Salts seen lately, in two generations so memory stays bounded (2 x ``capacity``)."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self.current: set[bytes] = set()
        self.previous: set[bytes] = set()

    def seen(self, salt: bytes) -> bool:
        return salt in self.current or salt in self.previous

    def add(self, salt: bytes) -> None:
        if len(self.current) >= self.capacity:
            self.previous, self.current = self.current, set()
        self.current.add(salt)

    def check_and_add(self, salt: bytes) -> bool:
        """True when the salt is fresh (and now remembered)."""
        if self.seen(salt):
            return False
        self.add(salt)
        return True


#: one filter per process, shared by TCP and UDP and every inbound (as ss-libev's bloom filter)
REPLAY = ReplayFilter()


def identify(users: list[User], head: bytes) -> tuple[User, bytes] | None:
    """The user whose key opens the first length chunk in ``head`` (salt + chunk), and the salt."""
    for user in users:
        cipher = user.cipher
        size = cipher.salt_size
        if len(head) < size + aead.LENGTH_CHUNK:
            continue
        salt = head[:size]
        length = aead.open_first_length(cipher, user.master, salt, head[size:size + aead.LENGTH_CHUNK])
        if length is not None and 0 < length <= aead.MAX_PAYLOAD:
            return user, salt
    return None


class AEADStream:
    """An encrypted client socket, seen by the pump as plaintext (see ehco_gevent.transports.streams)."""

    splice_socket = None

    def __init__(self, sock, decryptor: aead.Decryptor, encryptor: aead.Encryptor,
                 pending: bytes = b""):
        self.sock = sock
        self.dec = decryptor
        self.enc = encryptor
        self._plain = pending
        self._off = 0
        self._closed = False

    def take_pending(self) -> bytes:
        data = self._plain[self._off:]
        self._plain, self._off = b"", 0
        return data

    def recv_into(self, buf) -> int:
        while self._off >= len(self._plain):
            data = self.sock.recv(max(16384, len(buf)))
            if not data:
                if self.dec.partial:
                    raise TruncatedStream("EOF inside an AEAD chunk")
                return 0
            self._plain, self._off = self.dec.feed(data), 0
        n = min(len(buf), len(self._plain) - self._off)
        buf[:n] = self._plain[self._off:self._off + n]
        self._off += n
        return n

    def sendall(self, data) -> None:
        self.sock.sendall(self.enc.encrypt(data))

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()


def handle_tcp(ctx: Context, sock, client: str) -> None:
    """Serve one accepted TCP connection of a shadowsocks inbound."""
    users = ctx.store.ss_users(ctx.inbound.tag)
    if not users:
        log.debug("proxy %s: %s: no users, dropping", ctx.name, client)
        _ignore(ctx, sock, client)
        return
    try:
        with handshake_deadline(ctx, client):
            result = _handshake(ctx, sock, client, users)
    except (OSError, socket.timeout) as exc:
        log.debug("proxy %s: %s: handshake failed: %s", ctx.name, client, exc)
        return
    if result is None:
        return
    if isinstance(result, str):
        log.debug("proxy %s: %s: %s, ignoring it", ctx.name, client, result)
        _ignore(ctx, sock, client)
        return
    user, dec, plain, (host, port, end) = result
    sock.settimeout(None)
    enc = aead.Encryptor(user.cipher, user.master)
    REPLAY.add(enc.salt)
    stream = AEADStream(sock, dec, enc, bytes(plain[end:]))
    ctx.relay(stream, client, host, port, user)


def _handshake(ctx: Context, sock, client: str, users: list[User]):
    """Read until the target address: ``(user, decryptor, plaintext, target)``; a reason
    string when the client is to be ignored (drained, never answered); None on EOF."""
    need = max(u.cipher.salt_size for u in users) + aead.LENGTH_CHUNK
    head = bytearray()
    # a real client's first write holds at least salt + length chunk + one payload chunk
    # (>= 16 + 18 + 17), so waiting for the longest salt's worth never stalls one
    complete = recv_at_least(sock, head, need)
    found = identify(users, bytes(head)) if complete or len(head) >= 34 else None
    if found is None:
        return f"no user's key fits ({len(head)} bytes read)"
    user, salt = found
    if not REPLAY.check_and_add(salt):
        log.info("proxy %s: %s: replayed salt (user %s), ignoring it", ctx.name, client, user.label)
        return "replayed salt"
    dec = aead.Decryptor(user.cipher, user.master, salt)
    try:
        plain = bytearray(dec.feed(bytes(head[len(salt):])))
        while True:
            target = parse_address(plain)
            if target is not None:
                return user, dec, plain, target
            data = sock.recv(65536)
            if not data:
                log.debug("proxy %s: %s: EOF before the target address", ctx.name, client)
                return None
            plain += dec.feed(data)
    except (aead.AuthError, AddressError) as exc:
        return f"bad header (user {user.label}): {exc}"


def _ignore(ctx: Context, sock, client: str) -> None:
    """Say nothing to a client that failed: read and drop its bytes for a while, then close
    (at once when it floods)."""
    if not drain(sock):
        refused(ctx.name, client, "junk_flood",
                f"junk flood (over {DRAIN_MAX_BYTES} bytes no key opens), connection closed")


# -- UDP ---------------------------------------------------------------------------------------

def open_udp_packet(users: list[User], packet: bytes) -> tuple[User, bytes] | None:
    """The user whose key opens this datagram, and its plaintext."""
    for user in users:
        try:
            return user, aead.open_packet(user.cipher, user.master, packet)
        except aead.AuthError:
            continue
    return None


class _UDPSession:
    """One client address (and user): an unconnected socket so it can reach many targets."""

    def __init__(self, server: ShadowsocksUDP, client, user: User):
        self.server = server
        self.client = client
        self.user = user
        self.sock = socket.socket(socket.AF_INET6 if ":" in client[0] else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.last = time.monotonic()
        client_addr = f"{client[0]}:{client[1]}"
        self.conn = server.ctx.registry.open(server.ctx.name, "udp", client_addr, "*",
                                             server.ctx.name)
        self.conn.closer = self.close
        self.greenlet = gevent.spawn(self._replies)
        user.conns.add(self.greenlet)
        user.ips.add(client[0])

    def send(self, host: str, port: int, payload: bytes) -> None:
        self.last = time.monotonic()
        try:
            self.sock.sendto(payload, (host, port))
        except OSError as exc:
            log.debug("proxy %s: udp to %s failed: %s", self.server.ctx.name,
                      format_target(host, port), exc)
            return
        self.conn.add_up(len(payload))
        self.user.count_up(len(payload))

    def _replies(self) -> None:
        budget = Budget()
        try:
            while True:
                budget.spend()
                left = self.last + self.server.idle_timeout - time.monotonic()
                if left <= 0:
                    return
                self.sock.settimeout(left)
                try:
                    data, src = self.sock.recvfrom(MAX_DATAGRAM)
                except socket.timeout:
                    continue
                self.last = time.monotonic()
                packet = aead.seal_packet(self.user.cipher, self.user.master,
                                          encode_address(src[0], src[1]) + data)
                self.server.sock.sendto(packet, self.client)
                self.conn.add_down(len(data))
                self.user.count_down(len(data))
        except OSError as exc:
            log.debug("proxy %s: udp session %s ended: %s", self.server.ctx.name, self.client, exc)
        finally:
            self.server.end(self)

    def close(self) -> None:
        self.greenlet.kill(block=False)


class ShadowsocksUDP:
    def __init__(self, ctx: Context, sock, idle_timeout: float = UDP_IDLE_TIMEOUT):
        self.ctx = ctx
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.sessions: dict = {}
        self._loop: gevent.Greenlet | None = None

    def start(self) -> None:
        self._loop = gevent.spawn(self._serve)

    def _serve(self) -> None:
        budget = Budget()
        while True:
            try:
                packet, client = self.sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                if self.sock.fileno() < 0:
                    return
                continue
            try:
                self._handle(packet, client)
            except Exception as exc:  # one bad datagram must not stop the loop
                log.debug("proxy %s: udp packet from %s dropped: %s", self.ctx.name, client, exc)
            budget.spend()

    def _handle(self, packet: bytes, client) -> None:
        users = self.ctx.store.ss_users(self.ctx.inbound.tag)
        session = self.sessions.get(client)
        if session is not None and session.user in users:
            users = [session.user] + [u for u in users if u is not session.user]
        found = open_udp_packet(users, packet)
        if found is None:
            refused(self.ctx.name, format_addr(client), "bad_datagram",
                    "udp datagram that no user's key opens, dropped")
            return
        user, plain = found
        if not REPLAY.check_and_add(packet[:user.cipher.salt_size]):
            log.debug("proxy %s: udp packet from %s: replayed salt", self.ctx.name, client)
            return
        target = parse_address(plain)
        if target is None:
            return
        host, port, end = target
        if session is None or session.user is not user:
            if session is not None:
                session.close()
            session = _UDPSession(self, client, user)
            self.sessions[client] = session
        session.send(host, port, plain[end:])

    def end(self, session: _UDPSession) -> None:
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
        session.user.conns.discard(session.greenlet)
        session.sock.close()
        self.ctx.registry.close(session.conn)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=False)
        self.sock.close()
        for session in list(self.sessions.values()):
            session.close()
