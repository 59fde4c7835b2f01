"""The raw-to-raw relay driven by loop callbacks: no greenlet and no gevent socket per connection.

Profiled under wrk (one request per connection, docs/performance.md), the least a relay written
as "greenlet per connection, gevent sockets" can do was 6.5k connections a second here, and
ehco's greenlet path 4k, while a loop of callbacks on the same gevent hub did 15k: per
connection the greenlet style pays for greenlet stacks (an mmap and munmap each), Waiters and
switches, and gevent socket objects (fcntl, ioctl, getsockopt and getsockname per socket). So
the relay whose both sides are plain TCP (listen_type and transport_type raw, no PROXY
headers), which is also the one that carries most short connections, runs here as callbacks on
the hub's own io watchers; every other relay keeps the greenlet code of :mod:`.relay` and
:mod:`.pump`. The behaviour is the same: the balancer's candidates dialed in turn within one
deadline, splice through pooled pipes (copy when splice is off), half-close kept, an error in
either direction ends both, exact byte counts in the registry, a dropped connection closed at
once, open connections untouched when the listener closes.

Fairness comes with the style: a callback moves at most one pipe's worth (or one buffer) and
returns to the loop, which is level-triggered, so a busy connection is served again on the
next turn after everyone else.
"""

from __future__ import annotations

# sockets here are the C type: the process is monkey-patched, and a gevent socket would wait
# on the hub (impossible inside a loop callback) and costs the syscalls this module saves
import _socket
import errno
import logging
import os
import socket
import time

import gevent
from gevent.hub import get_hub

from . import pump
from .addresses import format_addr
from .guards.listeners import AcceptBackoff
from .transports import ws_callbacks
from .transports.raw import DIAL_TIMEOUT, dial_tcp, remote_target, tune

log = logging.getLogger("ehco.relay")

#: connections accepted per wake-up of the listener (gevent's StreamServer takes 100)
ACCEPTS_PER_WAKE = 64
#: the copy path's buffer, shared by every connection (a callback never waits with it)
COPY_CHUNK = 64 * 1024
_copy_buffer = bytearray(COPY_CHUNK)
_READ, _WRITE = 1, 2
_SPLICE_FLAGS = pump._SPLICE_FLAGS
_NONBLOCK_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


def eligible(cfg) -> bool:
    """Whether a relay runs here: plain TCP on both sides, or ehco 1.1.4's ws (an HTTP
    upgrade, then the same plain bytes), nothing else written into the stream."""
    plain = ("raw", "ws") if not cfg.ws_frames else ("raw",)
    return (cfg.listen_type in plain and cfg.transport_type in plain
            and not cfg.accept_proxy and not cfg.send_proxy)


class CallbackListener:
    """Accepts from the hub's io watcher on the listening socket; each client is a
    :class:`RawConnection`. The interface of :class:`~.guards.listeners.Listener` that a
    relay uses: ``start``, ``close``, ``closed``, ``socket``, ``server_port``, ``drop_all``."""

    def __init__(self, sock, relay):
        self.socket = sock
        self.relay = relay
        self.label = f"relay {relay.label}"
        self._accept = getattr(sock, "_sock", sock)._accept  # the C accept: (fd, address)
        self._family = sock.family
        self.loop = get_hub().loop
        self._watcher = None
        self._backoff = AcceptBackoff(self.label)
        self.closed = False
        self.connections: set[RawConnection] = set()
        self.ws_in = relay.cfg.listen_type == "ws"  # each client upgrades first
        self.ws_out = relay.cfg.transport_type == "ws"  # each remote is upgraded first

    @property
    def server_port(self) -> int:
        return self.socket.getsockname()[1]

    def start(self) -> None:
        self.socket.setblocking(False)
        self._watcher = self.loop.io(self.socket.fileno(), _READ)
        self._watcher.start(self._on_accept)

    def _on_accept(self) -> None:
        relay = self.relay
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                fd, address = self._accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            client = _socket.socket(self._family, socket.SOCK_STREAM, 0, fd)
            client.setblocking(False)
            conn = RawConnection(relay, self, client, address)
            try:
                conn.start()
            except Exception:  # one client's failure must not stop accepting
                log.debug("relay %s: starting a connection failed", relay.label, exc_info=True)
                conn.close()

    def _accept_failed(self, exc: OSError) -> None:
        # out of fds or memory (or any other lasting error: a callback cannot raise it
        # anywhere useful): pause accepting, clients wait in the backlog
        pause = self._backoff.failed(exc)
        if pause is not None:
            self._watcher.stop()
            gevent.spawn_later(pause, self._resume)

    def _resume(self) -> None:
        if not self.closed:
            self._watcher.start(self._on_accept)
            self._backoff.resumed()

    def close(self) -> None:
        """Stop accepting and close the listening socket; open connections go on."""
        if self.closed:
            return
        self.closed = True
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
        self.socket.close()

    def drop_all(self) -> None:
        for conn in list(self.connections):
            conn.drop()


class _Direction:
    """Bytes from one socket to the other: read when ``src`` is readable, write what was read,
    and while ``dst`` cannot take it, stop reading and wait for ``dst`` to be writable."""

    __slots__ = ("conn", "src", "dst", "src_fd", "dst_fd", "reader", "writer", "pipe", "left",
                 "pending", "count", "done", "_read")

    def __init__(self, conn, src, dst, count):
        self.conn = conn
        self.src, self.dst = src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.reader = conn.loop.io(self.src_fd, _READ)
        self.writer = None
        self.pipe = None  # (r, w, size) while bytes sit in it
        self.left = 0  # bytes in the pipe not written yet
        self.pending = b""  # copy path: bytes not written yet
        self.count = count
        self.done = False
        self._read = self._on_readable_splice if pump.splice_enabled else self._on_readable_copy

    def start(self, first: bytes = b"") -> None:
        """Start moving; ``first`` (bytes read during a handshake that belong to the stream)
        is written before anything is read."""
        if first:
            self.pending = first
            self._send_pending()
        else:
            self.reader.start(self._read)

    # -- splice ------------------------------------------------------------------------------
    def _on_readable_splice(self) -> None:
        try:
            pipe = pump.pipes.take()
        except OSError as exc:  # out of fds for a new pipe: this connection ends, as a pump's
            self.conn.fail(exc)
            return
        try:
            n = os.splice(self.src_fd, pipe[1], pipe[2], flags=_SPLICE_FLAGS)
        except BlockingIOError:
            pump.pipes.give(pipe)
            return
        except OSError as exc:
            pump.pipes.give(pipe)
            self.conn.fail(exc)
            return
        if not n:
            pump.pipes.give(pipe)
            self._eof()
            return
        self.pipe, self.left = pipe, n
        self._drain_pipe()

    def _drain_pipe(self) -> None:
        r = self.pipe[0]
        try:
            while self.left:
                moved = os.splice(r, self.dst_fd, self.left, flags=_SPLICE_FLAGS)
                self.left -= moved
                self.count(moved)
        except BlockingIOError:
            self._wait_writable(self._drain_pipe)
            return
        except OSError as exc:
            self.conn.fail(exc)
            return
        pump.pipes.give(self.pipe)
        self.pipe = None
        self._resume_reading()

    # -- copy --------------------------------------------------------------------------------
    def _on_readable_copy(self) -> None:
        try:
            n = self.src.recv_into(_copy_buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            self.conn.fail(exc)
            return
        if not n:
            self._eof()
            return
        self.pending = bytes(_copy_buffer[:n])
        self._send_pending()

    def _send_pending(self) -> None:
        try:
            while self.pending:
                sent = self.dst.send(self.pending)
                self.pending = self.pending[sent:]
                self.count(sent)
        except BlockingIOError:
            self._wait_writable(self._send_pending)
            return
        except OSError as exc:
            self.conn.fail(exc)
            return
        self._resume_reading()

    # -- both --------------------------------------------------------------------------------
    def _wait_writable(self, then) -> None:
        self.reader.stop()
        if self.writer is None:
            self.writer = self.conn.loop.io(self.dst_fd, _WRITE)
        if not self.writer.active:
            self.writer.start(then)

    def _resume_reading(self) -> None:
        writer = self.writer
        if writer is not None and writer.active:
            writer.stop()
        if not self.reader.active:
            self.reader.start(self._read)

    def _eof(self) -> None:
        self.reader.stop()
        self.done = True
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.conn.direction_done()

    def close(self) -> None:
        for watcher in (self.reader, self.writer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        # no cycles left (watcher -> bound method -> self -> watcher): refcounting frees this
        # at once, and the cyclic collector has less to walk under a high connection rate
        self.reader = self.writer = self.conn = None
        if self.pipe is not None:
            pump._close_pipe(self.pipe)  # it holds bytes: never back to the pool
            self.pipe = None


class RawConnection:
    """One client of a callback relay, from dialing its remote to closing both sockets."""

    __slots__ = ("relay", "listener", "loop", "client", "address", "client_addr", "candidates",
                 "tried", "deadline", "upstream", "dial_watcher", "dial_timer", "state",
                 "dial_started", "attempt_end", "conn", "up", "down", "closed", "handshake",
                 "to_upstream")

    def __init__(self, relay, listener: CallbackListener, client, address):
        self.relay = relay
        self.listener = listener
        self.loop = listener.loop
        self.client = client
        self.address = address
        self.client_addr = format_addr(address)
        self.candidates = ()
        self.tried = 0
        self.deadline = None
        self.upstream = None
        self.dial_watcher = None
        self.dial_timer = None
        self.state = None
        self.dial_started = 0.0
        self.attempt_end = 0.0
        self.conn = None
        self.up = self.down = None
        self.closed = False
        self.handshake = None  # a ws upgrade in progress (ws_callbacks), stopped by close()
        self.to_upstream = b""  # the client's bytes that came behind its upgrade request

    def start(self) -> None:
        tune(self.client)
        self.listener.connections.add(self)
        if self.listener.ws_in:
            self.handshake = ws_callbacks.AcceptUpgrade(self, self.relay.inbound)
            self.handshake.start()
        else:
            self.dial()

    def dial(self, to_upstream: bytes = b"") -> None:
        """Dial the remotes in the balancer's order (after the client's upgrade, on a ws
        listener); ``to_upstream`` goes to the remote first."""
        self.handshake = None
        self.to_upstream = to_upstream
        lb = self.relay.tcp_lb
        self.candidates = lb.candidates(self.address[0])
        if len(self.candidates) > 1:
            self.deadline = time.monotonic() + self.relay.cfg.dial_timeout
        self._dial_next("")

    # -- dialing -----------------------------------------------------------------------------
    def _dial_next(self, last: str) -> None:
        if self.closed:
            return
        while self.tried < len(self.candidates):
            state = self.candidates[self.tried]
            self.tried += 1
            if self.deadline is None:
                budget = DIAL_TIMEOUT
            else:
                budget = (self.deadline - time.monotonic()) / (len(self.candidates) - self.tried + 1)
                if budget <= 0:
                    break
            host, port, family = remote_target(state.address)
            if family is None:  # a name: resolve in a greenlet, then come back here
                gevent.spawn(self._dial_by_name, state, host, port, budget)
                return
            error = self._connect(state, family, (host, port), budget)
            if error is None:
                return
            last = self._attempt_failed(state, error)
        self.relay._all_dials_failed(self.candidates, self.client_addr, last)
        self.close()

    def _dial_by_name(self, state, host: str, port: int, budget: float) -> None:
        """A remote by name: the greenlet path's dial in a greenlet of its own (resolution, and
        each address in turn, as ``create_connection``), then back to callbacks."""
        started = time.monotonic()
        try:
            sock = dial_tcp(host, port, timeout=budget)
        except Exception as exc:  # noqa: BLE001 - any failure is this attempt's
            self._dial_next(self._attempt_failed(state, str(exc) or type(exc).__name__))
            return
        upstream = _socket.socket(sock.family, socket.SOCK_STREAM, 0, sock.detach())
        if self.closed:
            upstream.close()
            return
        upstream.setblocking(False)
        self.state, self.upstream, self.dial_started = state, upstream, started
        self.attempt_end = started + budget
        self._connected(upstream)

    def _connect(self, state, family: int, sockaddr, budget: float) -> str | None:
        """Start a non-blocking connect: None, or why it failed at once."""
        self.state = state
        self.dial_started = time.monotonic()
        self.attempt_end = self.dial_started + budget
        try:
            upstream = _socket.socket(family, _NONBLOCK_STREAM)
        except OSError as exc:  # out of fds: this attempt fails, as a greenlet's dial would
            return exc.strerror or str(exc)
        err = upstream.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS):
            upstream.close()
            return os.strerror(err)
        self.upstream = upstream
        self.dial_watcher = self.loop.io(upstream.fileno(), _WRITE)
        self.dial_watcher.start(self._on_connected)
        self.dial_timer = self.loop.timer(max(budget, 0.001))
        self.dial_timer.start(self._on_dial_timeout, budget)
        return None

    def _stop_dial(self) -> None:
        for watcher in (self.dial_watcher, self.dial_timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self.dial_watcher = self.dial_timer = None

    def _on_dial_timeout(self, budget: float) -> None:
        self._stop_dial()
        self.upstream_failed("timed out" if self.deadline is None
                             else f"no answer within {budget:.2f} s")

    def _on_connected(self) -> None:
        self._stop_dial()
        upstream = self.upstream
        err = upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.upstream_failed(os.strerror(err))
            return
        self._connected(upstream)

    def _connected(self, upstream) -> None:
        """TCP is up: upgrade first on a ws transport, else relay."""
        if self.listener.ws_out:
            self.handshake = ws_callbacks.DialUpgrade(self, upstream)
            self.handshake.start()
        else:
            self.relay_to(upstream)

    def upstream_failed(self, reason: str) -> None:
        """This attempt failed after the connect began: next candidate (or give up)."""
        self.handshake = None
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self._dial_next(self._attempt_failed(self.state, reason))

    def relay_to(self, upstream, to_client: bytes = b"") -> None:
        """The remote is ready (``to_client``: its bytes that came behind the 101)."""
        self.handshake = None
        try:
            self._relay(upstream, to_client)
        except Exception as exc:  # never a traceback from the hub for one connection
            self.fail(exc)

    def _attempt_failed(self, state, reason: str) -> str:
        self.relay._dial_attempt_failed(state, self.client_addr, reason,
                                        more=self.tried < len(self.candidates))
        return reason

    # -- relaying ----------------------------------------------------------------------------
    def _relay(self, upstream, to_client: bytes) -> None:
        relay, state = self.relay, self.state
        tune(upstream)
        dial_ms = (time.monotonic() - self.dial_started) * 1000
        relay.tcp_lb.succeeded(state, dial_ms)
        conn = self.conn = relay._opened(state, self.client_addr, dial_ms, self.drop)
        self.up = _Direction(self, self.client, upstream, conn.add_up)
        self.down = _Direction(self, upstream, self.client, conn.add_down)
        self.up.start(self.to_upstream)
        self.down.start(to_client)
        self.to_upstream = b""

    def direction_done(self) -> None:
        if self.up.done and self.down.done:
            self.close()

    def fail(self, exc: Exception) -> None:
        """A reset or broken pipe in either direction ends both."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("relay %s: %s ended on %s: %s", self.relay.label, self.client_addr,
                      type(exc).__name__, exc)
        self.close()

    def drop(self) -> None:
        """Cut this connection now (relay removed, user dropped, process exit)."""
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.listener.connections.discard(self)
        self._stop_dial()
        if self.handshake is not None:
            self.handshake.stop()
            self.handshake = None
        for direction in (self.up, self.down):
            if direction is not None:
                direction.close()
        self.up = self.down = None
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()
        if self.conn is not None:
            self.relay._closed(self.state, self.conn)
