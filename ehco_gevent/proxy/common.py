"""What every native inbound shares once a client is authenticated and has named its target:
dial it (outbound ``freedom``: direct TCP), record the connection, count the user's bytes,
pump, and clean up. Also the "say nothing" treatment of a client that fails authentication.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import contextmanager

import gevent
from gevent import socket

from ..guards import limits
from ..connections import ConnectionRegistry
from ..guards.fairness import Budget
from ..logs import RateLimitedLogger
from ..pump import pump
from ..transports.streams import SocketStream
from ..transports.peer_limits import HandshakeGate
from ..transports.raw import dial_tcp
from .addr import format_target
from .users import User, UserStore
from .xray_config import Inbound

log = logging.getLogger("ehco.proxy")

#: a client that failed authentication is read (and ignored) this long before we close, so a
#: prober learns nothing from the timing or from an answer
DRAIN_SECONDS = 15.0
#: ... unless it sends more than this meanwhile: a junk flood is closed at once
DRAIN_MAX_BYTES = 1024 * 1024
#: reads of the drain loop between two turns of the hub
DRAIN_READ_BUDGET = 4

#: connections (or datagrams) refused per cause since start: handshake_timeout, junk_flood,
#: bad_datagram; a debugging aid (the log says the same, rate-limited)
REFUSED: Counter = Counter()
#: one log line per cause per interval, whatever an attacker repeats
ATTACK_LOG = RateLimitedLogger(log)


class HandshakeTimeout(Exception):
    """The client did not finish its handshake within ``proxy_handshake_timeout``."""


class HandshakeRefused(Exception):
    """``proxy_max_handshakes`` handshakes were already in progress on the inbound (logged by
    its gate)."""


@contextmanager
def handshake_deadline(ctx: "Context", client: str):
    """A client's whole handshake (every read and write of it together, TLS included): one of
    the inbound's ``proxy_max_handshakes`` slots while it lasts, and a deadline over all of it,
    so neither a client trickling one byte at a time nor a crowd of silent ones can hold the
    inbound."""
    ticket = ctx.gate.enter(client)
    if ticket is None:
        raise HandshakeRefused(client)
    seconds = limits.current().proxy_handshake_timeout
    try:
        with gevent.Timeout(seconds, HandshakeTimeout(f"handshake not complete within {seconds:g} s")):
            yield
    finally:
        ticket.release()


def refused(name: str, client: str, cause: str, detail: str) -> None:
    """Count and log one refused client: debug per client, info at most once per interval."""
    REFUSED[cause] += 1
    log.debug("proxy %s: %s: %s", name, client, detail)
    ATTACK_LOG.log(logging.INFO, f"{name}:{cause}", "proxy %s: closed %s: %s", name, client, detail)


class Context:
    """One running inbound's view of the process: its config, the users, the registry."""

    def __init__(self, inbound: Inbound, store: UserStore, registry: ConnectionRegistry):
        self.inbound = inbound
        self.store = store
        self.registry = registry
        self.gate = HandshakeGate(inbound.name, inbound.protocol,
                                  lambda: limits.current().proxy_max_handshakes,
                                  key="proxy_max_handshakes")

    @property
    def name(self) -> str:
        return self.inbound.name

    def relay(self, client, client_addr: str, host: str, port: int, user: User | None,
              conn_type: str = "tcp") -> None:
        """Dial ``host:port`` directly and pump ``client`` (a stream) to it until done."""
        target = format_target(host, port)
        if user is not None and not self.store.is_current(user):
            client.close()  # removed while its handshake was under way
            return
        started = time.monotonic()
        try:
            upstream = SocketStream(dial_tcp(host, port))
        except Exception as exc:
            client.close()
            log.info("proxy %s: %s (user %s) dial %s failed: %s", self.name, client_addr,
                     user.label if user else "-", target, exc or type(exc).__name__)
            return
        dial_ms = (time.monotonic() - started) * 1000
        self.relay_connected(client, client_addr, host, port, upstream, user, conn_type, dial_ms)

    def relay_connected(self, client, client_addr: str, host: str, port: int, upstream,
                        user: User | None, conn_type: str = "tcp", dial_ms: float = 0.0) -> None:
        """Record and pump an already dialed connection until both directions are done."""
        target = format_target(host, port)
        conn = self.registry.open(self.name, conn_type, client_addr, target, self.name, dial_ms)
        current = gevent.getcurrent()
        conn.closer = lambda: current.kill(block=False)
        if user is not None:
            user.conns.add(current)
            user.ips.add(client_addr.rsplit(":", 1)[0].strip("[]"))
            up, down = conn.add_up, conn.add_down

            def count_up(n: int) -> None:
                up(n)
                user.count_up(n)

            def count_down(n: int) -> None:
                down(n)
                user.count_down(n)
        else:
            count_up, count_down = conn.add_up, conn.add_down
        log.debug("proxy %s: %s (user %s) -> %s connected in %.1f ms", self.name, client_addr,
                  user.label if user else "-", target, dial_ms)
        try:
            pump(client, upstream, count_up, count_down)
        finally:
            if user is not None:
                user.conns.discard(current)
            self.registry.close(conn)
            log.debug("proxy %s: %s -> %s closed, up %d down %d bytes", self.name, client_addr,
                      target, conn.up_bytes, conn.down_bytes)


def drain(sock: socket.socket, seconds: float | None = None) -> bool:
    """Read and discard until the peer closes or ``seconds`` pass; never answer. False (close
    now) when the peer sent more than DRAIN_MAX_BYTES meanwhile: a flood, not a probe."""
    deadline = time.monotonic() + (DRAIN_SECONDS if seconds is None else seconds)
    budget = Budget(DRAIN_READ_BUDGET)
    total = 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                return True
            total += len(data)
            if total > DRAIN_MAX_BYTES:
                return False
            budget.spend()
    except (OSError, socket.timeout):
        return True


def read_parsed(sock, buf: bytearray, parser, size: int = 65536):
    """Read into ``buf`` until ``parser(bytes(buf))`` returns something (under the caller's
    deadline) and return that; None on EOF first. ``parser`` returns None while incomplete."""
    while True:
        result = parser(bytes(buf))
        if result is not None:
            return result
        data = sock.recv(size)
        if not data:
            return None
        buf += data


def recv_at_least(sock: socket.socket, buf: bytearray, n: int) -> bool:
    """Grow ``buf`` to at least n bytes; False on EOF first."""
    while len(buf) < n:
        data = sock.recv(65536)
        if not data:
            return False
        buf += data
    return True
