"""One relay: a listen address, its remotes, and the transports on both sides.

Accepting is gevent's ``StreamServer`` (a thin accept loop that caps accepts per wake-up and
backs off on EMFILE instead of spinning); each accepted socket gets a greenlet that lets the
inbound transport unwrap it into streams, picks a remote per stream, dials it and pumps. UDP
lives in :mod:`ehco_gevent.udp`.

Stopping a relay closes its listeners; connections already open keep running until they end,
so a reload that changes one relay does not cut the traffic it is carrying. ``drop_connections``
is there for the moments that must cut (process exit, a user removed at the panel).
"""

from __future__ import annotations

import errno
import logging
import socket as _stdsocket
import time

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

from .addresses import bind_socket, format_addr
from .balancer import RoundRobin
from .config import RelayConfig
from .connections import ConnectionRegistry
from .pump import pump
from .transports import make_dialer, make_inbound
from .udp import UDPRelay

log = logging.getLogger("ehco.relay")

_TRANSIENT_ACCEPT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _Server(StreamServer):
    """StreamServer whose accept errors (EMFILE and friends) are one log line, not a traceback."""

    def __init__(self, listener, handle, label: str):
        super().__init__(listener, handle, spawn=Pool())
        self.label = label
        self._pause = 0.0

    def do_read(self):
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno in _TRANSIENT_ACCEPT:
                return None
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            # out of fds or memory: pause accepting instead of spinning; clients queue in the
            # backlog meanwhile
            self._pause = min(1.0, self._pause * 2) if self._pause else 0.01
            log.warning("relay %s: accept failed (%s); pausing accepts for %.2f s", self.label,
                        exc.strerror, self._pause)
            self.stop_accepting()
            gevent.spawn_later(self._pause, self._resume)
            return None

    def _resume(self):
        if self.started and not self.closed:
            self.start_accepting()
            gevent.spawn_later(5, self._reset_pause)

    def _reset_pause(self):
        self._pause = 0.0


class Relay:
    def __init__(self, cfg: RelayConfig, registry: ConnectionRegistry):
        self.cfg = cfg
        self.label = cfg.label
        self.registry = registry
        self.tcp_server: _Server | None = None
        self.udp: UDPRelay | None = None
        self.inbound = None
        self.dialer = None
        self.tcp_lb = RoundRobin(cfg.tcp_remotes) if cfg.tcp_remotes else None
        self.started_at = 0.0

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve; raises ListenError (nothing left bound) when an address is taken."""
        what = f"relay {self.label}"
        tcp_sock = udp_sock = None
        try:
            if self.cfg.tcp_remotes:
                self.inbound = make_inbound(self.cfg)
                self.dialer = make_dialer(self.cfg)
                tcp_sock = bind_socket(self.cfg.listen, _stdsocket.SOCK_STREAM, what)
            if self.cfg.udp_remotes:
                udp_sock = bind_socket(self.cfg.listen, _stdsocket.SOCK_DGRAM, what + " (udp)")
        except Exception:
            for sock in (tcp_sock, udp_sock):
                if sock is not None:
                    sock.close()
            self._close_transports()
            raise
        if tcp_sock is not None:
            self.tcp_server = _Server(tcp_sock, self._handle_tcp, self.label)
            self.tcp_server.start()
            log.info("relay %s: tcp listening on %s (%s) -> %s via %s", self.label,
                     self.cfg.listen, self.cfg.listen_type, ", ".join(self.cfg.tcp_remotes),
                     self.cfg.transport_type)
        if udp_sock is not None:
            self.udp = UDPRelay(self.cfg, udp_sock, self.registry)
            self.udp.start()
            log.info("relay %s: udp listening on %s -> %s", self.label, self.cfg.listen,
                     ", ".join(self.cfg.udp_remotes))
        self.started_at = time.time()

    def stop(self) -> None:
        """Close the listeners; open connections go on until they finish."""
        if self.tcp_server is not None:
            self.tcp_server.close()
        if self.udp is not None:
            self.udp.stop_listening()
        log.info("relay %s: stopped listening on %s", self.label, self.cfg.listen)

    def drop_connections(self) -> None:
        """Cut every connection of this relay (process exit)."""
        if self.tcp_server is not None:
            self.tcp_server.pool.kill(block=True, timeout=5)
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
        try:
            self.inbound.serve(sock, client, lambda stream: self._relay_stream(stream, client))
        except Exception as exc:  # a bad handshake ends this connection only
            log.debug("relay %s: inbound %s from %s failed: %s", self.label,
                      self.cfg.listen_type, client, exc)
        finally:
            sock.close()

    def _relay_stream(self, stream, client: str) -> None:
        remote = self.tcp_lb.next()
        remote_label = self.cfg.remote_label(remote)
        started = time.monotonic()
        try:
            upstream = self.dialer.dial(remote)
        except Exception as exc:
            stream.close()
            reason = str(exc) or type(exc).__name__
            self.registry.dial_failed(remote_label, reason)
            log.warning("relay %s: dial %s for %s failed: %s", self.label, remote, client, reason)
            return
        dial_ms = (time.monotonic() - started) * 1000
        self.registry.dial_ok(remote_label, dial_ms)
        conn = self.registry.open(self.label, "tcp", client, remote, remote_label, dial_ms)
        current = gevent.getcurrent()
        conn.closer = lambda: current.kill(block=False)
        log.debug("relay %s: %s -> %s connected in %.1f ms", self.label, client, remote, dial_ms)
        try:
            pump(stream, upstream, conn.add_up, conn.add_down)
        finally:
            self.registry.close(conn)
            log.debug("relay %s: %s -> %s closed, up %d down %d bytes", self.label, client,
                      remote, conn.up_bytes, conn.down_bytes)
