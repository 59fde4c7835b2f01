"""UDP relaying, as ehco 1.1.4: one session per client address, datagram boundaries kept.

The listener greenlet reads datagrams and hands each to its client's session; the first
datagram from an address picks a remote and opens a connected upstream socket whose replies a
session greenlet sends back to that client. A session ends after :data:`IDLE_TIMEOUT` seconds
with no datagram in either direction.

Sessions follow the relay's ``lb_strategy`` and remote health (issue 12): the pick is the
balancer's first candidate for the client's host; an ICMP port-unreachable from the remote
counts as a failed dial against it, and (with several remotes) ends the session so that the
client's next datagram opens one on another remote; the first reply clears the remote's
failures. With a raw transport, a UDP remote that is also a TCP remote follows that remote's
active health checks.
"""

from __future__ import annotations

import logging
import socket as _stdsocket
import time

import gevent
from gevent import socket

from .guards import limits
from .addresses import format_addr
from .remotes.balancer import Balancer
from .config import RelayConfig, split_host_port
from .connections import Connection, ConnectionRegistry
from .guards.fairness import Budget

log = logging.getLogger("ehco.udp")

#: ehco's IdleTimeOut
IDLE_TIMEOUT = 10.0
MAX_DATAGRAM = 65535
#: seconds a remote's resolved address is reused for new sessions (a burst of new clients must
#: not queue behind one resolver call each)
RESOLVE_TTL = 30.0
_SO_RCVBUFFORCE = getattr(_stdsocket, "SO_RCVBUFFORCE", 33)


def set_receive_buffer(sock, want: int) -> int:
    """Ask for a ``want``-byte receive buffer and return the size in force (as the kernel
    reports it: Linux doubles the value asked for, for its bookkeeping).

    The default (~200 KiB) overflows under bursts of large datagrams. Plain SO_RCVBUF is capped
    at net.core.rmem_max; SO_RCVBUFFORCE (root or CAP_NET_ADMIN) is not, so it is tried first.
    """
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _SO_RCVBUFFORCE, want)
    except OSError:
        try:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, want)
        except OSError as exc:
            log.debug("udp receive buffer of %d bytes refused: %s", want, exc)
    return sock.getsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF)


class _Session:
    def __init__(self, relay: "UDPRelay", client, upstream: socket.socket, conn: Connection,
                 state=None):
        self.relay = relay
        self.client = client
        self.upstream = upstream
        self.conn = conn
        self.state = state
        self.answered = False
        self.opened = self.last_active = time.monotonic()
        self.greenlet = gevent.spawn(self._replies)

    def send_up(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self.upstream.send(data)
        except OSError as exc:  # e.g. ECONNREFUSED from an earlier ICMP: keep the session
            log.debug("relay %s: udp send to %s failed: %s", self.relay.label, self.conn.remote, exc)
            return
        self.conn.add_up(len(data))

    def _replies(self) -> None:
        budget = Budget()
        try:
            while True:
                budget.spend()
                remaining = self.last_active + self.relay.idle_timeout - time.monotonic()
                if remaining <= 0:
                    return
                self.upstream.settimeout(remaining)
                try:
                    data = self.upstream.recv(MAX_DATAGRAM)
                except socket.timeout:
                    continue
                except ConnectionRefusedError:
                    lb = self.relay.lb
                    lb.failed(self.state, "ICMP port unreachable")
                    if len(lb.states) > 1:
                        return  # the client's next datagram opens a session on another remote
                    continue  # the remote port is closed for now; keep the session until idle
                if not self.answered:
                    self.answered = True
                    # the first answer's round trip stands for UDP's dial time
                    self.relay.lb.succeeded(self.state, (time.monotonic() - self.opened) * 1000)
                self.last_active = time.monotonic()
                self.relay.sock.sendto(data, self.client)
                self.conn.add_down(len(data))
        except OSError as exc:
            log.debug("relay %s: udp session %s ended: %s", self.relay.label,
                      self.conn.client_addr, exc)
        finally:
            self.relay.end_session(self)

    def close(self) -> None:
        self.greenlet.kill(block=False)


class UDPRelay:
    def __init__(self, cfg: RelayConfig, sock: socket.socket, registry: ConnectionRegistry,
                 idle_timeout: float = IDLE_TIMEOUT):
        self.cfg = cfg
        self.label = cfg.label
        self.sock = sock
        self.registry = registry
        self.idle_timeout = idle_timeout
        self.lb = Balancer(cfg.label, cfg.udp_remotes, cfg.lb_strategy, cfg.max_fails,
                           cfg.fail_timeout, kind="udp")
        self.sessions: dict = {}
        self._resolved: dict[str, tuple[float, tuple]] = {}
        self._loop: gevent.Greenlet | None = None
        self.receive_buffer = 0

    def start(self) -> None:
        self.receive_buffer = set_receive_buffer(self.sock, limits.current().udp_receive_buffer)
        self._loop = gevent.spawn(self._serve)

    def _serve(self) -> None:
        budget = Budget()
        while True:
            budget.spend()
            try:
                data, client = self.sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                if self.sock.fileno() < 0:
                    return
                log.debug("relay %s: udp recv failed: %s", self.label, exc)
                continue
            session = self.sessions.get(client)
            if session is None:
                session = self._open_session(client)
                if session is None:
                    continue
            session.send_up(data)

    def _resolve(self, remote: str) -> tuple:
        now = time.monotonic()
        cached = self._resolved.get(remote)
        if cached is not None and cached[0] > now:
            return cached[1]
        host, port = split_host_port(remote)
        info = socket.getaddrinfo(host, port, 0, _stdsocket.SOCK_DGRAM)[0]
        self._resolved[remote] = (now + RESOLVE_TTL, info)
        return info

    def _open_session(self, client) -> _Session | None:
        upstream = None
        for state in self.lb.candidates(client[0]):
            remote = state.address
            try:
                family, kind, proto, _, addr = self._resolve(remote)
                upstream = socket.socket(family, kind, proto)
                # the replies of a burst queue here as the requests did on the listener
                set_receive_buffer(upstream, limits.current().udp_receive_buffer)
                upstream.connect(addr)
                break
            except OSError as exc:
                if upstream is not None:
                    upstream.close()
                    upstream = None
                self.lb.failed(state, str(exc))
                log.warning("relay %s: udp remote %s for %s unusable: %s", self.label, remote,
                            format_addr(client), exc)
        if upstream is None:
            return None
        conn = self.registry.open(self.label, "udp", format_addr(client), remote,
                                  self.cfg.remote_label(remote))
        session = _Session(self, client, upstream, conn, state)
        self.lb.opened(state)
        conn.closer = session.close
        self.sessions[client] = session
        log.debug("relay %s: udp session %s -> %s", self.label, conn.client_addr, remote)
        return session

    def end_session(self, session: _Session) -> None:
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
        session.upstream.close()
        self.lb.closed(session.state)
        self.registry.close(session.conn)
        log.debug("relay %s: udp session %s -> %s closed, up %d down %d bytes", self.label,
                  session.conn.client_addr, session.conn.remote, session.conn.up_bytes,
                  session.conn.down_bytes)

    def stop_listening(self) -> None:
        """Stop taking new datagrams. Sessions that are open reply until they go idle, but
        their client can no longer reach them through the closed port, so they end soon."""
        if self._loop is not None:
            self._loop.kill(block=False)
        self.sock.close()

    def close_sessions(self) -> None:
        for session in list(self.sessions.values()):
            session.close()
