"""One relay: a listen address, its remotes, and the transports on both sides.

Accepting is gevent's ``StreamServer`` (a thin accept loop that caps accepts per wake-up and
backs off on EMFILE instead of spinning); each accepted socket gets a greenlet that lets the
inbound transport unwrap it into streams, picks a remote per stream, dials it and pumps. UDP
lives in :mod:`ehco_gevent.udp`.

The dial step (issue 12) asks the relay's :class:`~ehco_gevent.remotes.balancer.Balancer` for the
remotes in the order to try them and dials them in turn within one deadline (``dial_timeout``,
split evenly over the attempts left, so a remote that accepts and never answers cannot eat it
all); the client sees a reset only when every remote failed. A relay with one remote dials it
exactly as ehco did, under the transport's own timeouts. With ``accept_proxy`` each stream
starts with a PROXY header whose address becomes the client address; with ``send_proxy`` each
upstream stream starts with one.

Stopping a relay closes its listeners; connections already open keep running until they end,
so a reload that changes one relay does not cut the traffic it is carrying. ``drop_connections``
is there for the moments that must cut (process exit, a user removed at the panel).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket as _stdsocket
import time

import gevent
from gevent import socket as gsocket

from .guards import limits
from . import callback_relay
from .addresses import bind_socket, format_addr
from .remotes.balancer import Balancer
from .config import RelayConfig
from .connections import Connection, ConnectionRegistry
from .remotes.health import HealthChecker
from .guards.listeners import Listener
from .logs import RateLimitedLogger
from .pump import pump
from .transports import make_dialer, make_inbound
from .transports import proxy_protocol
from .transports.streams import SocketStream
from .udp import UDPRelay

log = logging.getLogger("ehco.relay")
#: refusals a peer can repeat at will (PROXY headers): one line per relay and cause per 10 s
limited = RateLimitedLogger(log)

#: the accept loop (kept under this name: the proxy inbounds use it too)
_Server = Listener
#: the deadline for a PROXY header to arrive on an ``accept_proxy`` listener
PROXY_HEADER_TIMEOUT = 5.0


def in_networks(host: str, networks) -> bool:
    """Whether an address (IPv4-mapped IPv6 counts as its IPv4) lies in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def _dup(sock) -> gsocket.socket:
    """A second socket object on the same kernel socket (a new fd; closing one keeps the other)."""
    return gsocket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))


class Relay:
    def __init__(self, cfg: RelayConfig, registry: ConnectionRegistry):
        self.cfg = cfg
        self.label = cfg.label
        self.registry = registry
        self.tcp_server: _Server | None = None
        self.udp: UDPRelay | None = None
        self.inbound = None
        self.dialer = None
        self.tcp_lb = Balancer(cfg.label, cfg.tcp_remotes, cfg.lb_strategy, cfg.max_fails,
                               cfg.fail_timeout) if cfg.tcp_remotes else None
        self.health: HealthChecker | None = None
        self.started_at = 0.0
        #: accept_proxy_from as networks; None = every source may send a header
        self.proxy_from = ([ipaddress.ip_network(c, strict=False) for c in cfg.accept_proxy_from]
                           if cfg.accept_proxy and cfg.accept_proxy_from else None)
        self.send_proxy = {"v1": 1, "v2": 2}.get(cfg.send_proxy, 0)

    # -- life cycle -------------------------------------------------------------------------
    def start(self, inherited: dict | None = None) -> None:
        """Bind and serve; raises ListenError (nothing left bound) when an address is taken.

        ``inherited`` holds listening sockets handed over by the relay this one replaces on
        the same address (:meth:`take_listeners`): used instead of binding, so the address
        never stops accepting during a reload. Sockets not used are closed.
        """
        what = f"relay {self.label}"
        inherited = dict(inherited or {})
        tcp_sock = udp_sock = None
        try:
            if self.cfg.tcp_remotes:
                self.inbound = make_inbound(self.cfg)
                self.dialer = make_dialer(self.cfg)
                tcp_sock = (inherited.pop("tcp", None)
                            or bind_socket(self.cfg.listen, _stdsocket.SOCK_STREAM, what))
            if self.cfg.udp_remotes:
                udp_sock = (inherited.pop("udp", None)
                            or bind_socket(self.cfg.listen, _stdsocket.SOCK_DGRAM, what + " (udp)"))
        except Exception:
            for sock in (tcp_sock, udp_sock):
                if sock is not None:
                    sock.close()
            self._close_transports()
            raise
        finally:
            for sock in inherited.values():
                sock.close()
        if tcp_sock is not None:
            if callback_relay.eligible(self.cfg):
                self.tcp_server = callback_relay.CallbackListener(tcp_sock, self)
            else:
                self.tcp_server = _Server(tcp_sock, self._handle_tcp, self.label)
            self.tcp_server.start()
            log.info("relay %s: tcp listening on %s (%s) -> %s via %s", self.label,
                     self.cfg.listen, self.cfg.listen_type, ", ".join(self.cfg.tcp_remotes),
                     self.cfg.transport_type)
            if self.cfg.health_check is not None:
                self.health = HealthChecker(self.tcp_lb, self.dialer, self.cfg.health_check)
                self.health.start()
        if udp_sock is not None:
            self.udp = UDPRelay(self.cfg, udp_sock, self.registry)
            if self.tcp_lb is not None and self.cfg.transport_type == "raw":
                self.udp.lb.follow_checks(self.tcp_lb)
            self.udp.start()
            log.info("relay %s: udp listening on %s -> %s (receive buffer %d bytes in force, "
                     "%d asked)", self.label, self.cfg.listen, ", ".join(self.cfg.udp_remotes),
                     self.udp.receive_buffer, limits.current().udp_receive_buffer)
        self.started_at = time.time()

    def take_listeners(self) -> dict:
        """Duplicates of the listening sockets, for the relay replacing this one on the same
        address; this relay's own :meth:`stop` then closes only its copies."""
        out = {}
        if self.tcp_server is not None and not self.tcp_server.closed:
            out["tcp"] = _dup(self.tcp_server.socket)
        if self.udp is not None and self.udp.sock.fileno() >= 0:
            out["udp"] = _dup(self.udp.sock)
        return out

    def stop(self) -> None:
        """Close the listeners; open connections go on until they finish. Pooled smux
        sessions of the dialer (mtcp, mwss) close as soon as their streams have finished."""
        if self.health is not None:
            self.health.stop()
        if self.tcp_server is not None:
            self.tcp_server.close()
        if self.udp is not None:
            self.udp.stop_listening()
        pool = getattr(self.dialer, "pool", None)
        if pool is not None:
            pool.drain()
        log.info("relay %s: stopped listening on %s", self.label, self.cfg.listen)

    def drop_connections(self) -> None:
        """Cut every connection of this relay (process exit)."""
        if self.tcp_server is not None:
            self.tcp_server.drop_all()
        if self.udp is not None:
            self.udp.close_sessions()
        self._close_transports()

    def _close_transports(self) -> None:
        for part in (self.inbound, self.dialer):
            if part is not None:
                try:
                    part.close()
                except Exception:  # closing must never stop the others from closing
                    log.debug("relay %s: error closing %r", self.label, part, exc_info=True)

    @property
    def tcp_port(self) -> int | None:
        return self.tcp_server.server_port if self.tcp_server is not None else None

    # -- per connection ---------------------------------------------------------------------
    def _handle_tcp(self, sock, address) -> None:
        client = format_addr(address)
        if self.proxy_from is not None and not in_networks(address[0], self.proxy_from):
            limited.warning((self.label, "accept_proxy_from"), "relay %s: closed connection from "
                            "%s: not in accept_proxy_from", self.label, client)
            sock.close()
            return
        outer = None
        if self.cfg.accept_proxy and self.cfg.listen_type != "raw":
            outer = self._outer_header(sock, client)
            if outer is False:
                sock.close()
                return
        try:
            self.inbound.serve(sock, client, lambda stream: self._relay_stream(
                stream, client, address, sock, outer))
        except Exception as exc:  # a bad handshake ends this connection only
            log.debug("relay %s: inbound %s from %s failed: %s", self.label,
                      self.cfg.listen_type, client, exc)
        finally:
            sock.close()

    def _relay_stream(self, stream, client: str, peer=None, sock=None, outer=None) -> None:
        src = dst = None
        if self.cfg.accept_proxy:
            header = outer or self._accept_header(stream, client)
            if header is None:
                stream.close()
                return
            if header.src is not None:
                src, dst = header.src, header.dst
                client = format_addr(src)
        dialed = self._dial(client, src[0] if src else (peer[0] if peer else ""))
        if dialed is None:
            stream.close()
            return
        upstream, state, dial_ms = dialed
        remote = state.address
        if self.send_proxy and not self._send_header(upstream, stream, src or peer, dst, sock,
                                                     client, remote):
            return
        current = gevent.getcurrent()
        conn = self._opened(state, client, dial_ms, lambda: current.kill(block=False))
        try:
            pump(stream, upstream, conn.add_up, conn.add_down)
        finally:
            self._closed(state, conn)

    def _opened(self, state, client: str, dial_ms: float, closer) -> "Connection":
        """A dialed connection starts relaying: its registry record (``closer`` drops it), the
        balancer's count, the debug line. The greenlet path and the callback relay share it."""
        remote = state.address
        conn = self.registry.open(self.label, "tcp", client, remote, self.cfg.remote_label(remote),
                                  dial_ms)
        conn.closer = closer
        log.debug("relay %s: %s -> %s connected in %.1f ms", self.label, client, remote, dial_ms)
        self.tcp_lb.opened(state)
        return conn

    def _closed(self, state, conn: "Connection") -> None:
        """The end of what :meth:`_opened` started."""
        self.tcp_lb.closed(state)
        self.registry.close(conn)
        log.debug("relay %s: %s -> %s closed, up %d down %d bytes", self.label,
                  conn.client_addr, conn.remote, conn.up_bytes, conn.down_bytes)

    def _dial(self, client: str, client_host: str):
        """Dial the balancer's candidates in turn: ``(upstream, state, dial_ms)``, or None when
        every one failed (each failure is counted against its remote)."""
        lb = self.tcp_lb
        candidates = lb.candidates(client_host)
        deadline = time.monotonic() + self.cfg.dial_timeout if len(candidates) > 1 else None
        last = ""
        for i, state in enumerate(candidates):
            started = time.monotonic()
            try:
                if deadline is None:  # one remote: ehco's dial under the transport's timeouts
                    upstream = self.dialer.dial(state.address)
                else:
                    budget = (deadline - started) / (len(candidates) - i)
                    if budget <= 0:
                        break
                    with gevent.Timeout(budget, TimeoutError(f"no answer within {budget:.2f} s")):
                        upstream = self.dialer.dial(state.address)
            except Exception as exc:
                last = str(exc) or type(exc).__name__
                self._dial_attempt_failed(state, client, last, more=i + 1 < len(candidates))
                continue
            dial_ms = (time.monotonic() - started) * 1000
            lb.succeeded(state, dial_ms)
            return upstream, state, dial_ms
        self._all_dials_failed(candidates, client, last)
        return None

    def _dial_attempt_failed(self, state, client: str, reason: str, more: bool) -> None:
        """Count one failed dial against its remote (and say so when another is tried)."""
        self.tcp_lb.failed(state, reason)
        self.registry.dial_failed(self.cfg.remote_label(state.address))
        if more:
            log.info("relay %s: dial %s for %s failed: %s; trying the next remote",
                     self.label, state.address, client, reason)

    def _all_dials_failed(self, candidates, client: str, last: str) -> None:
        if len(candidates) == 1:
            log.warning("relay %s: dial %s for %s failed: %s", self.label, candidates[0].address,
                        client, last)
        else:
            log.warning("relay %s: no remote answered for %s within %g s (last error: %s)",
                        self.label, client, self.cfg.dial_timeout, last)

    def _accept_header(self, stream, client: str):
        """The PROXY header at the start of ``stream``, or None (logged) when there is none."""
        try:
            return proxy_protocol.receive(stream, PROXY_HEADER_TIMEOUT)
        except proxy_protocol.EmptyConnection:
            log.debug("relay %s: %s closed before sending a PROXY header", self.label, client)
        except proxy_protocol.ProxyProtocolError as exc:
            limited.warning((self.label, "PROXY header", proxy_protocol.cause(exc)),
                            "relay %s: closed connection from %s: bad PROXY header: %s",
                            self.label, client, exc)
        except OSError as exc:
            log.debug("relay %s: reading the PROXY header from %s failed: %s", self.label,
                      client, exc)
        return None

    def _outer_header(self, sock, client: str):
        """A tunnel listener may also sit behind a balancer that puts the header in front of
        the TCP connection (haproxy ``send-proxy``, a cloud NLB): a TLS ClientHello, an HTTP
        request or an smux frame never starts like a PROXY header, so a peek decides. The
        header, None when the connection does not start with one (each stream then must), or
        False (logged) when it starts like one and is bad."""
        try:
            with gevent.Timeout(PROXY_HEADER_TIMEOUT, TimeoutError("nothing sent")):
                first = sock.recv(16, _stdsocket.MSG_PEEK)
            if not first:
                return False
            proxy_protocol.missing(first)
        except proxy_protocol.ProxyProtocolError:
            return None
        except (OSError, TimeoutError) as exc:
            log.debug("relay %s: %s sent nothing to read: %s", self.label, client, exc)
            return False
        return self._accept_header(SocketStream(sock), client) or False

    def _send_header(self, upstream, stream, src, dst, sock, client: str, remote: str) -> bool:
        """Write the PROXY header as the upstream's first bytes; False (both closed) on error."""
        try:
            if dst is None and sock is not None:
                dst = sock.getsockname()
            upstream.sendall(proxy_protocol.encode(self.send_proxy, src, dst))
            return True
        except OSError as exc:
            log.debug("relay %s: sending the PROXY header for %s to %s failed: %s", self.label,
                      client, remote, exc)
            upstream.close()
            stream.close()
            return False
