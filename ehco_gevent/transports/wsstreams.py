"""Stream objects for the WebSocket tunnels: TLS underneath, RFC 6455 frames on top.

Both follow the stream interface of :mod:`ehco_gevent.transports.streams`. Raw-mode ws needs neither: after
the handshake it is a plain :class:`~ehco_gevent.transports.streams.SocketStream`, so the pump splices it.

Half-close:

* TLS: ``shutdown_write`` sends close_notify and keeps reading until the peer's close_notify
  or EOF (see :class:`TLSStream` for why that needs memory BIOs).
* Frames: a close frame in RFC 6455 ends *both* directions for most peers, so it is sent only
  once both directions are done. Our end of writing is marked with an empty binary message
  instead: one of our nodes takes it as EOF (and half-closes its TCP side), while a standard
  peer (gorilla, ehco >= 1.1.5, a CDN) just relays nothing for it. The answer to a half-closed
  request therefore arrives in full either way.

Fairness (issue 10): a socket that always has data never blocks, so every read loop here yields
to the hub after bounded work (a TLS read that needs more than one socket read, each 16 KiB of
WebSocket frames decoded), and WebSocket frames that carry nothing (ping, pong, empty data
frames) spend a per-connection budget (``empty_frames_per_second``): a peer over it is cut.
"""

from __future__ import annotations

import logging
import ssl as _stdssl

from gevent import ssl

from . import websocket as wsproto
from ..guards import limits
from ..guards import penalty
from ..guards.fairness import Budget, yield_turn
from .peer_limits import EmptyFrameBudget, OverBudget
from .streams import buffers, send_all, wait_socket_readable

log = logging.getLogger("ehco.ws")

_WANT_READ = (ssl.SSLWantReadError, _stdssl.SSLWantReadError)
_ZERO = (ssl.SSLZeroReturnError, _stdssl.SSLZeroReturnError)


class TLSStream:
    """TLS over a plain gevent socket, driven through memory BIOs.

    Why not an SSLSocket: Python only offers SSL_shutdown as a two-step "send close_notify, then
    read the peer's", and OpenSSL fails that second step with APPLICATION_DATA_AFTER_CLOSE_NOTIFY
    when the peer's answer is still arriving, which is exactly a half-close. With memory BIOs we
    run the shutdown only while no received bytes are waiting (so its read step just reports
    "want read"), then keep reading the peer's data until its close_notify or EOF.
    """

    splice_socket = None
    READ = 256 * 1024

    def __init__(self, sock, sslobj, incoming, outgoing, pending: bytes = b""):
        self.sock = sock
        self.obj = sslobj
        self.incoming = incoming
        self.outgoing = outgoing
        self.pending = pending
        self._closed = False
        self._write_done = False
        self._shutdown_owed = False
        self._peer_closed = False

    @classmethod
    def handshake(cls, sock, ctx, server_side: bool, server_hostname: str | None = None):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_side=server_side,
                           server_hostname=server_hostname)
        stream = cls(sock, obj, incoming, outgoing)
        rounds = 0
        while True:
            try:
                obj.do_handshake()
                break
            except _WANT_READ:
                stream._flush()
                rounds += 1
                if rounds > 1:
                    yield_turn()  # a peer feeding the handshake without pause waits its turn
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the TLS handshake")
                incoming.write(data)
        stream._flush()
        return stream

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            send_all(self.sock, data)

    # -- the stream interface --------------------------------------------------------------
    def take_pending(self) -> bytes:
        data, self.pending = self.pending, b""
        return data

    def recv(self, size: int) -> bytes:
        buf = bytearray(size)
        n = self.recv_into(buf)
        return bytes(buf[:n])

    def wait_readable(self) -> None:
        """Wait until recv_into has something to return (data, or the end).

        OpenSSL may hold records it already took from the incoming BIO (neither
        ``incoming.pending`` nor ``pending()`` counts them), so the only sure test is a read:
        one byte, kept in ``pending`` for recv_into."""
        if (self.pending or self._peer_closed or self.incoming.pending
                or self.obj.pending()):
            return
        try:
            self.pending = self.obj.read(1)
        except _WANT_READ:
            self._flush()
            if self._shutdown_owed:
                self._send_close_notify()
            wait_socket_readable(self.sock)
        except _ZERO:
            self._peer_closed = True

    def recv_into(self, buf) -> int:
        if self.pending:
            n = min(len(buf), len(self.pending))
            buf[:n] = self.pending[:n]
            self.pending = self.pending[n:]
            if n < len(buf) and not self.pending and not self._peer_closed:
                n += self._read_more(buf, n)  # whatever else is decrypted already
                self._flush()
            return n
        rounds = 0
        while True:
            try:
                n = self.obj.read(len(buf), buf)
                if n and n < len(buf):
                    n += self._read_more(buf, n)
                self._flush()
                return n
            except _WANT_READ:
                self._flush()
                if self._shutdown_owed:
                    self._send_close_notify()
                rounds += 1
                if rounds > 1:
                    # a full socket read gave no application data (records that carry
                    # nothing, or a record bigger than a read): let the others run
                    yield_turn()
                if not self._receive():
                    return 0  # EOF without close_notify: treat as the end all the same
            except _ZERO:
                return 0

    def _receive(self) -> int:
        """One socket read into the incoming BIO, through a pooled buffer (a fresh 256 KiB
        bytes object per read would cost an allocation as big as the read)."""
        raw = buffers.take(self.READ)
        try:
            n = self.sock.recv_into(raw)
            if n:
                with memoryview(raw) as view:
                    self.incoming.write(view[:n])
            return n
        finally:
            buffers.give(raw)

    def _read_more(self, buf, n: int) -> int:
        """Decrypt whatever else is already received into the rest of ``buf``: a TLS record is
        at most 16 KiB, and one call per record would cost a trip through the caller's loop
        (the smux reader, the pump) for every record."""
        more = 0
        with memoryview(buf) as view:
            while n + more < len(view) and (self.incoming.pending or self.obj.pending()):
                try:
                    got = self.obj.read(len(view) - n - more, view[n + more:])
                except _WANT_READ:
                    break  # a partial record: the next call reads the rest
                except _ZERO:
                    self._peer_closed = True  # close_notify: the next call returns 0
                    break
                if not got:
                    break
                more += got
        return more

    def sendall(self, data) -> None:
        if self._write_done:
            raise BrokenPipeError("TLS stream is closed for writing")
        self.obj.write(data)
        self._flush()

    def shutdown_write(self) -> None:
        if self._write_done or self._closed:
            return
        self._write_done = True
        if self.incoming.pending or self.obj.pending():
            self._shutdown_owed = True  # the reader sends it once the received bytes are read
        else:
            self._send_close_notify()

    def _send_close_notify(self) -> None:
        self._shutdown_owed = False
        try:
            self.obj.unwrap()
        except _WANT_READ:
            pass  # close_notify is out; the peer's comes later, through recv_into
        except (OSError, ValueError) as exc:
            log.debug("TLS close_notify failed: %s", exc)
        try:
            self._flush()
        except OSError:
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def __repr__(self) -> str:
        return "<TLSStream>"


class FramedStream:
    """RFC 6455 binary frames over another stream (plain or TLS)."""

    splice_socket = None
    #: largest frame we send; well under the 16 MiB a decoder accepts
    SEND_FRAME = 1024 * 1024
    #: received bytes are decoded this much at a time, with a turn for the hub in between
    DECODE_SLICE = 16 * 1024
    READ = 256 * 1024

    def __init__(self, inner, client: bool, pending: bytes = b"", label: str = "",
                 peer: str = ""):
        self.inner = inner
        self.client = client
        self.label = label or "?"
        self.peer = peer or "?"
        self._decoder = wsproto.FrameDecoder(from_client=not client)
        self._empty: EmptyFrameBudget | None = None  # made on the first empty frame
        self._fair = Budget()
        self._ready: list[memoryview] = []
        self._peer_done = False
        self._write_done = False
        self._close_sent = False
        if pending:
            self._absorb(pending)

    def take_pending(self) -> bytes:
        return b""

    def _absorb(self, data) -> None:
        view = memoryview(data)
        start, step = 0, self.DECODE_SLICE
        while start < len(view):
            frames = self._decoder.feed(view[start:start + step])
            start += step
            self._handle(frames)
            if len(frames) > 64:
                step = 1024  # many tiny frames (a ping flood): smaller bites between turns
            self._fair.spend(len(frames) + 4)

    def _empty_frame(self, what: str) -> None:
        if self._empty is None:  # named late: the listener sets label and peer after the upgrade
            self._empty = EmptyFrameBudget(limits.current().empty_frames_per_second,
                                           self.label, self.peer, "WebSocket connection")
        try:
            self._empty.spend(what)
        except OverBudget:
            penalty.hold(self.inner)
            raise wsproto.FrameError(f"over the empty-frame budget ({what})") from None

    def _handle(self, frames) -> None:
        ping = None  # the payload of the latest ping not answered yet (see _pong)
        for fin, opcode, payload in frames:
            if not payload and not (opcode == wsproto.OP_BINARY and fin and not self._peer_done):
                self._empty_frame(f"opcode {opcode:#x} without payload")
            elif opcode in (wsproto.OP_PING, wsproto.OP_PONG):
                self._empty_frame("ping" if opcode == wsproto.OP_PING else "pong")
            if opcode == wsproto.OP_BINARY and fin and not payload:
                self._peer_done = True  # the peer's end-of-writing marker
                self._pong(ping)
                ping = None
                self._maybe_send_close()
            elif opcode in (wsproto.OP_BINARY, wsproto.OP_TEXT, wsproto.OP_CONT):
                if payload:
                    self._ready.append(memoryview(payload))
            elif opcode == wsproto.OP_PING:
                ping = payload
            elif opcode == wsproto.OP_CLOSE:
                self._peer_done = True
                self._pong(ping)
                ping = None
                self._maybe_send_close()
        self._pong(ping)

    def _pong(self, ping) -> None:
        """Answer the latest ping of a batch (None: there was none), before any close frame.
        RFC 6455 5.5.3: pings that arrive before we answered may get one pong, for the
        latest, so a burst of pings costs one write, not one each."""
        if ping is not None and not self._close_sent:
            self.inner.sendall(wsproto.encode_frame(wsproto.OP_PONG, ping, masked=self.client))

    def wait_readable(self) -> None:
        if not (self._ready or self._peer_done):
            wait = getattr(self.inner, "wait_readable", None)
            if wait is not None:
                wait()

    def recv_into(self, buf) -> int:
        while not self._ready:
            if self._peer_done:
                return 0
            raw = buffers.take(self.READ)  # the decoder copies what it keeps
            try:
                n = self.inner.recv_into(raw)
                if not n:
                    self._peer_done = True
                    self._maybe_send_close()
                    return 0
                with memoryview(raw) as view:
                    self._absorb(view[:n])
            except wsproto.FrameError as exc:
                log.debug("ws frames: %s", exc)
                raise ConnectionResetError(str(exc)) from None
            finally:
                buffers.give(raw)
        head = self._ready[0]
        n = min(len(buf), len(head))
        buf[:n] = head[:n]
        if n == len(head):
            self._ready.pop(0)
        else:
            self._ready[0] = head[n:]
        return n

    def sendall(self, data) -> None:
        if self._write_done:
            raise BrokenPipeError("ws stream is closed for writing")
        view = memoryview(data).cast("B")
        for start in range(0, len(view), self.SEND_FRAME):  # the peer refuses frames over 16 MiB
            chunk = view[start:start + self.SEND_FRAME]
            self.inner.sendall(wsproto.encode_frame(wsproto.OP_BINARY, chunk, masked=self.client))

    def shutdown_write(self) -> None:
        if self._write_done:
            return
        self._write_done = True
        try:
            self.inner.sendall(wsproto.encode_frame(wsproto.OP_BINARY, b"", masked=self.client))
        except OSError:
            pass
        self._maybe_send_close()

    def _maybe_send_close(self) -> None:
        if self._write_done and self._peer_done and not self._close_sent:
            self._close_sent = True
            try:
                self.inner.sendall(wsproto.encode_frame(wsproto.OP_CLOSE, b"\x03\xe8",
                                                        masked=self.client))
            except OSError:
                pass

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"<FramedStream over {self.inner!r}>"
