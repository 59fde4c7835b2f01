"""smux v1, the stream multiplexer under ehco's mtcp and mwss tunnels (xtaci/smux on the Go side).

Wire format: an 8-byte header ``version(1)=1, cmd(1), length(uint16 LE), stream id(uint32 LE)``;
only PSH frames carry ``length`` payload bytes (SYN, FIN and NOP carry none, whatever their
length field says, as the Go reader does). The codec is plain functions over bytes
(:func:`encode_frame`, :class:`FrameDecoder`); :class:`Session` is the one place that owns a
connection: a reader greenlet decodes frames into per-stream buffers, writers take a lock so
frames never interleave.

Why the limits look the way they do:

* Flow control in v1 is session-wide: the Go receiver stops reading the socket once 4 MiB sit
  unread in its streams. We do the same (``max_buffer``), so one slow consumer stalls its
  session rather than growing memory.
* Go blocks its reader while its accept queue is full; a peer that opens thousands of streams
  would make us dial thousands of remotes. A session here holds at most ``max_streams`` open
  streams (config ``smux_max_streams``); a SYN beyond that is answered with FIN (the peer's
  stream reads EOF at once). New streams are rate-capped, the first must come within a deadline
  and a session that carried streams is closed after a long idle time: see
  :class:`~ehco_gevent.transports.peer_limits.SessionGuard`.
* Fairness: a gevent socket that always has data never blocks, so the reader would never let
  the hub run anyone else while a peer floods it (NOPs at 35 MB/s froze the whole process). It
  yields after a bounded number of frames and reads, and frames that carry nothing (NOP, PSH or
  FIN for a stream that is unknown or closed, empty PSH) spend a per-session budget; a session
  over it is closed.
* A peer that sends half a frame and then goes quiet would park the reader forever: a partial
  frame must complete within ``stall_timeout``.
* Half-close: ``shutdown_write`` sends FIN but keeps delivering what arrives afterwards until the
  peer's FIN; a Go stream keeps writing after it received FIN, so this interoperates.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from typing import Callable

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.pool import Group
from gevent.queue import Queue

from ..guards import limits as _limits
from ..guards import penalty
from ..guards.fairness import Budget
from .peer_limits import OverBudget, SessionGuard
from .sniff import mismatch_log
from .streams import LentBuffers, buffers

log = logging.getLogger("ehco.smux")

VERSION = 1
SYN, FIN, PSH, NOP = 0, 1, 2, 3
HEADER = struct.Struct("<BBHI")
HEADER_SIZE = HEADER.size
#: what Go sends per frame (its MaxFrameSize); we accept any uint16 length
SEND_FRAME = 32768
MAX_BUFFER = 4 * 1024 * 1024
MAX_STREAMS = _limits.Limits.smux_max_streams
STALL_TIMEOUT = 30.0
READ_CHUNK = 256 * 1024
#: a read at least this big hands its payloads to the streams as views of the read buffer (no
#: copy); smaller ones are copied, so a trickle never pins a whole buffer
LEND_MIN = 64 * 1024
#: read buffers a session may have lent at once (beyond that, payloads are copied)
LEND_MAX = 16
#: the reader yields to the hub after this many frames (a read counts as READ_COST frames)
FRAMES_BEFORE_YIELD = 64
READ_COST = 16


class SmuxError(Exception):
    """The peer broke the protocol; the session must close."""


def encode_frame(cmd: int, sid: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(VERSION, cmd, len(payload), sid) + payload


def data_frames(sid: int, data) -> list:
    """PSH frames for ``data``, split at :data:`SEND_FRAME`: header, payload view, header...
    (for a gathering write: the payload is not copied)."""
    view = memoryview(data)
    parts = []
    for start in range(0, len(view), SEND_FRAME):
        piece = view[start:start + SEND_FRAME]
        parts.append(HEADER.pack(VERSION, PSH, len(piece), sid))
        parts.append(piece)
    return parts


def encode_data(sid: int, data) -> bytes:
    """PSH frames for ``data``, split at :data:`SEND_FRAME`, joined for one write."""
    view = memoryview(data)
    if len(view) <= SEND_FRAME:
        return HEADER.pack(VERSION, PSH, len(view), sid) + view
    return b"".join(data_frames(sid, view))


_COMMANDS = frozenset((SYN, FIN, PSH, NOP))


def _header(buf, pos: int = 0) -> tuple[int, int, int]:
    """``(cmd, length, sid)`` of the header at ``pos``; SmuxError for a version or command Go's
    reader would refuse."""
    version, cmd, length, sid = HEADER.unpack_from(buf, pos)
    if version != VERSION:
        raise SmuxError(f"unknown smux version {version}")
    if cmd not in _COMMANDS:
        raise SmuxError(f"unknown smux command {cmd}")
    return cmd, length, sid


class FrameDecoder:
    """Bytes in, ``(cmd, sid, payload)`` frames out; raises SmuxError on a bad header.

    Only an unfinished frame is kept between feeds, and a feed copies into it just the bytes
    that frame still lacks: every later frame is cut from the fed bytes themselves. (Profiled
    on an mtcp server node: re-buffering the whole read behind a partial frame, then copying
    each payload out, was two copies of every byte and a tenth of the node's CPU.)
    """

    def __init__(self):
        self._buf = bytearray()

    @property
    def partial(self) -> bool:
        """True while part of a frame is buffered (more bytes are owed)."""
        return bool(self._buf)

    def feed(self, data) -> list[tuple[int, int, bytes]]:
        return list(self.iter_feed(data))

    def iter_feed(self, data, views: bool = False):
        """Frames one by one, so those before a bad header are still handled (as the Go
        reader, which works frame by frame), then SmuxError.

        Payloads are ``bytes`` copies, so the caller may reuse ``data``'s memory once the
        frames are consumed; with ``views=True`` a payload cut from ``data`` is a memoryview
        of it (no copy), and ``data`` must stay untouched while any such view lives. A frame
        completed from an earlier feed's tail has a buffer of its own either way."""
        src = memoryview(data)
        pos = 0
        end = len(src)
        try:
            if self._buf:
                pos = yield from self._complete(src, views)
            while end - pos >= HEADER_SIZE:
                cmd, length, sid = _header(src, pos)
                if cmd == PSH:
                    if end - pos - HEADER_SIZE < length:
                        break
                    start = pos + HEADER_SIZE
                    pos = start + length
                    yield cmd, sid, src[start:pos] if views else bytes(src[start:pos])
                else:  # SYN, FIN, NOP: no payload, whatever their length says
                    pos += HEADER_SIZE
                    yield cmd, sid, b""
            if pos < end:
                self._buf += src[pos:end]
                pos = end
        finally:
            src.release()

    def _complete(self, src, views: bool):
        """Finish the buffered frame from the head of ``src``; how many bytes of it were
        used (all of them when the frame is still unfinished)."""
        buf = self._buf
        pos = 0
        if len(buf) < HEADER_SIZE:
            pos = min(HEADER_SIZE - len(buf), len(src))
            buf += src[:pos]
            if len(buf) < HEADER_SIZE:
                return pos
        cmd, length, sid = _header(buf)
        if cmd == PSH:
            take = min(HEADER_SIZE + length - len(buf), len(src) - pos)
            buf += src[pos:pos + take]
            pos += take
            if len(buf) < HEADER_SIZE + length:
                return pos
        self._buf = bytearray()
        if cmd != PSH:
            yield cmd, sid, b""
        elif views:  # the finished frame's buffer is handed on whole: no copy
            yield cmd, sid, memoryview(buf)[HEADER_SIZE:]
        else:
            yield cmd, sid, bytes(buf[HEADER_SIZE:])
        return pos


#: How long our first frame on a stream the peer opened may wait for the peer to be ready.
#: xtaci/smux up to 1.5.x (the one Go ehco builds with) writes its SYN before it registers the
#: stream and drops a PSH or FIN that arrives in between: a server-first greeting (SSH, SMTP)
#: answered inside that window is lost and the user's connection hangs. So on such a stream we
#: send nothing until the peer has sent on it (it has registered the stream by then) or this
#: grace has passed. Client-first protocols never wait: the client's bytes come first.
PEER_REGISTER_GRACE = 0.05


class SmuxStream:
    """One multiplexed stream, with the stream interface of :mod:`ehco_gevent.transports.streams`."""

    splice_socket = None
    _heard_event: Event | None = None  # only while a first write waits for the peer

    def __init__(self, session: "Session", sid: int):
        self.session = session
        self.sid = sid
        self._chunks: deque[memoryview] = deque()
        self._readable = Event()
        self.remote_fin = False
        self.local_fin = False
        self.closed = False
        self._heard = session.client  # streams we open need no wait (PEER_REGISTER_GRACE)

    # -- fed by the session's reader -------------------------------------------------------
    def _push(self, data: bytes) -> None:
        self._chunks.append(memoryview(data))
        self._readable.set()
        if not self._heard:
            self._peer_ready()

    def _fin(self) -> None:
        self.remote_fin = True
        self._readable.set()
        if not self._heard:
            self._peer_ready()

    def _peer_ready(self) -> None:
        self._heard = True
        if self._heard_event is not None:
            self._heard_event.set()

    def _await_peer(self) -> None:
        self._heard_event = Event()
        self._heard_event.wait(PEER_REGISTER_GRACE)
        self._heard = True
        self._heard_event = None

    # -- the stream interface ----------------------------------------------------------------
    def take_pending(self) -> bytes:
        return b""

    def wait_readable(self) -> None:
        while not self._chunks:
            lent = self.session.lent
            if lent:  # the consumer caught up: read buffers it was using may be free now
                lent.settle()
            if self.remote_fin or self.closed or self.session.closed:
                return
            self._readable.clear()
            self._readable.wait()

    def recv_into(self, buf) -> int:
        self.wait_readable()
        if not self._chunks:
            return 0
        # fill as much of buf as the queued frames allow: fewer writes downstream
        chunks = self._chunks
        size = len(buf)
        n = 0
        while chunks and n < size:
            head = chunks[0]
            take = min(size - n, len(head))
            buf[n:n + take] = head[:take]
            n += take
            if take == len(head):
                chunks.popleft()
            else:
                chunks[0] = head[take:]
        self.session._consumed(n)
        return n

    def recv_views(self, limit: int) -> list:
        """The queued payload, about ``limit`` bytes at most, as the reader's own buffers (no
        copy: the pump hands them to a gathering write); [] at EOF."""
        self.wait_readable()
        chunks = self._chunks
        out = []
        n = 0
        while chunks and n < limit:
            view = chunks.popleft()
            out.append(view)
            n += len(view)
        if n:
            self.session._consumed(n)
        return out

    def recv(self, size: int) -> bytes:
        buf = bytearray(size)
        n = self.recv_into(buf)
        return bytes(buf[:n])

    def sendall(self, data) -> None:
        if self.closed or self.local_fin:
            raise BrokenPipeError("smux stream is closed for writing")
        if len(data):
            if not self._heard:
                self._await_peer()
            self.session._write_data(self.sid, data)

    def shutdown_write(self) -> None:
        if not self.local_fin and not self.closed:
            if not self._heard:
                self._await_peer()
            self.local_fin = True
            try:
                self.session._write(encode_frame(FIN, self.sid))
            except OSError:
                pass

    def close(self) -> None:
        if self.closed:
            return
        if not self.local_fin:
            self.shutdown_write()
        self.closed = True
        self._readable.set()
        self.session._forget(self)

    def __repr__(self) -> str:
        return f"<SmuxStream {self.sid}>"


class Session:
    """One smux session over one connection (any object with the stream interface)."""

    def __init__(self, conn, client: bool, max_buffer: int = MAX_BUFFER,
                 max_streams: int | None = None, stall_timeout: float = STALL_TIMEOUT,
                 guard: SessionGuard | None = None):
        self.conn = conn
        self.client = client
        self.max_buffer = max_buffer
        self.guard = guard or SessionGuard(_limits.current(), server=not client)
        self.max_streams = self.guard.max_streams if max_streams is None else max_streams
        self.stall_timeout = stall_timeout
        self.streams: dict[int, SmuxStream] = {}
        self._next_id = 1 if client else 0
        self._accepts: Queue = Queue()
        self._buffered = 0
        self._space = Event()
        self._space.set()
        self._write_lock = Semaphore()
        self.closed = False
        self.created_at = time.monotonic()
        #: read buffers whose payloads sit on streams as views (see LentBuffers)
        self.lent = LentBuffers(buffers, LEND_MAX)
        self.peer = ""  # the remote a client session was dialled for, for log lines
        self._reader = gevent.spawn(self._recv_loop)
        self.guard.start(self._expire)

    @property
    def num_streams(self) -> int:
        return len(self.streams)

    # -- opening and accepting ---------------------------------------------------------------
    def open_stream(self) -> SmuxStream:
        if self.closed:
            raise BrokenPipeError("smux session is closed")
        self._next_id += 2
        stream = SmuxStream(self, self._next_id)
        self.streams[stream.sid] = stream
        try:
            self._write(encode_frame(SYN, stream.sid))
        except OSError:
            self.streams.pop(stream.sid, None)
            raise
        return stream

    def accept_stream(self) -> SmuxStream | None:
        """The next stream the peer opened, or None once the session is closed."""
        return self._accepts.get()

    # -- reading -------------------------------------------------------------------------------
    def _recv_loop(self) -> None:
        decoder = FrameDecoder()
        lent = self.lent
        payload = None
        # the read buffer is the process's (streams.buffers): taken when the connection has
        # data, given back when a read comes back short, so an idle session holds none
        wait = getattr(self.conn, "wait_readable", None)
        chunk = None
        fair = Budget(FRAMES_BEFORE_YIELD)
        # one timer, re-armed for each read inside a frame (a new Timeout per read is a
        # measurable cost when frames span several reads, as over TLS)
        stall = gevent.Timeout(self.stall_timeout, SmuxError("truncated frame: peer stalled"))
        try:
            while True:
                if self._buffered >= self.max_buffer:
                    self._space.wait()
                    if self.closed:
                        return
                if decoder.partial:
                    stall.start()
                    try:
                        if chunk is None:
                            chunk = buffers.take(READ_CHUNK)
                        n = self.conn.recv_into(chunk)
                    finally:
                        stall.cancel()
                else:
                    if chunk is None:
                        if wait is not None:
                            lent.settle()
                            wait()
                        chunk = buffers.take(READ_CHUNK)
                    n = self.conn.recv_into(chunk)
                if not n:
                    if decoder.partial:
                        log.debug("smux session %r: connection ended inside a frame", self)
                    return
                # bulk reads hand their payloads on as views of the chunk (profiled: copying
                # payloads out was a tenth of an mtcp server node's CPU, a third of its user time)
                views = n >= LEND_MIN and not lent.full
                with memoryview(chunk) as view:
                    for cmd, sid, payload in decoder.iter_feed(view[:n], views):
                        self._dispatch(cmd, sid, payload)
                        fair.spend()
                    payload = None  # the loop's name would keep the last view alive
                if views and lent.viewed(chunk):
                    lent.lend(chunk)  # back to the pool once the streams have sent it on
                    chunk = None
                elif n < READ_CHUNK and wait is not None:
                    buffers.give(chunk)  # the decoder copied what it keeps
                    chunk = None
                fair.spend(READ_COST)
        except OverBudget as exc:
            log.debug("smux session %r: over the empty-frame budget (%s)", self, exc)
            penalty.hold(self.conn)
        except SmuxError as exc:
            log.debug("smux session %r: protocol error: %s", self, exc)
            if self.client:  # our remote answered with something else: the operator's mistake
                mismatch_log.warning(("smux", self.peer), "smux session to %s: %s: is %s an "
                                     "mtcp or mwss listener? (-tt must match the remote's listen "
                                     "type)", self.peer, exc, self.peer)
        except OSError as exc:
            log.debug("smux session %r: read failed: %s", self, exc)
        finally:
            payload = None
            if chunk is not None and not lent.viewed(chunk):
                buffers.give(chunk)
            self._reader = None
            self.close()

    def _dispatch(self, cmd: int, sid: int, payload: bytes) -> None:
        """One frame; frames that carry nothing spend the guard's budget (OverBudget)."""
        if cmd == PSH:
            stream = self.streams.get(sid)
            if stream is not None and payload and not stream.closed:
                stream._push(payload)
                self._buffered += len(payload)
                if self._buffered >= self.max_buffer:
                    self._space.clear()
            else:
                self.guard.empty_frame("PSH for an unknown or closed stream" if payload
                                       else "empty PSH")
        elif cmd == SYN:
            if sid in self.streams or self.client:
                self.guard.empty_frame("SYN for an open stream" if not self.client
                                       else "SYN to a client")
                return
            if len(self.streams) >= self.max_streams:
                log.debug("smux session %r: refusing stream %d, %d open", self, sid,
                          len(self.streams))
                self.guard.refused(len(self.streams))
                self._write(encode_frame(FIN, sid))
                return
            wait = self.guard.stream_wait()
            if wait:
                gevent.sleep(wait)  # over the rate: this peer's reader waits, nobody else
                if self.closed:
                    return
            stream = SmuxStream(self, sid)
            self.streams[sid] = stream
            self.guard.stream_opened()
            self._accepts.put(stream)
        elif cmd == FIN:
            stream = self.streams.get(sid)
            if stream is not None and not stream.remote_fin:
                stream._fin()
            else:
                self.guard.empty_frame("FIN for an unknown or closed stream")
        else:
            self.guard.empty_frame("NOP")

    def _consumed(self, n: int) -> None:
        self._buffered -= n
        if self._buffered < self.max_buffer:
            self._space.set()

    # -- writing -------------------------------------------------------------------------------
    def _write(self, data) -> None:
        if self.closed:
            raise BrokenPipeError("smux session is closed")
        with self._write_lock:
            self.conn.sendall(data)

    def _write_data(self, sid: int, data) -> None:
        """PSH frames: headers and payload in one gathering write where the connection can
        (a plain socket: profiled, joining them was 12 % of an mtcp node's time), else
        joined."""
        gather = getattr(self.conn, "sendall_parts", None)
        if gather is None:
            self._write(encode_data(sid, data))
            return
        if self.closed:
            raise BrokenPipeError("smux session is closed")
        with self._write_lock:
            gather(data_frames(sid, data))

    def _forget(self, stream: SmuxStream) -> None:
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]
            if not self.streams and not self.closed:
                self.guard.streams_gone()
        unread = sum(len(c) for c in stream._chunks)
        stream._chunks.clear()
        if unread:
            self._consumed(unread)
        if self.lent:
            self.lent.settle()  # the views it still held are gone

    # -- closing -------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.guard.close()
        self.lent.forget()
        self._space.set()
        for stream in list(self.streams.values()):
            stream._readable.set()
        self._accepts.put(None)
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)
        try:
            self.conn.close()
        except OSError:
            pass

    def _expire(self, cause: str) -> None:
        """A guard's deadline passed (no first stream, or idle): end the session."""
        log.debug("smux session %r: closed (%s)", self, cause)
        self.close()

    def __repr__(self) -> str:
        side = "client" if self.client else "server"
        return f"<smux {side} session streams={len(self.streams)}>"


def serve_session(conn, on_stream: Callable[[SmuxStream], None],
                  guard: SessionGuard | None = None) -> None:
    """Server side: run ``on_stream`` in a greenlet per stream the peer opens, until the
    session ends; then end every stream's greenlet too. ``guard`` carries the relay's limits
    and names (label, peer) for the logs."""
    session = Session(conn, client=False, guard=guard)
    group = Group()

    def run(stream: SmuxStream) -> None:
        try:
            on_stream(stream)
        finally:
            stream.close()

    try:
        while True:
            stream = session.accept_stream()
            if stream is None:
                break
            group.spawn(run, stream)
        group.join()
    finally:
        session.close()
        group.kill(block=True, timeout=5)


class SessionPool:
    """ehco's client pool: per remote, reuse a session while it has fewer than
    ``max_streams`` open streams and is younger than ``max_age``; every ``gc_interval`` close
    sessions that can serve no new stream and have no live stream left.

    Beyond ehco: the collector also closes idle sessions (no stream) beyond ``keep_idle`` per
    remote. New streams go to the first usable session, so after a burst of connections the
    sessions it needed stay idle; ehco kept them until max_age (thousands of sessions, and
    their buffers, on both nodes for ten minutes).
    """

    def __init__(self, dial: Callable[[str], object], max_streams: int = 5,
                 max_age: float = 600.0, gc_interval: float = 30.0, keep_idle: int = 1):
        self.dial = dial
        self.max_streams = max_streams
        self.max_age = max_age
        self.keep_idle = keep_idle
        self.sessions: dict[str, list[Session]] = {}
        self._gc = gevent.spawn(self._gc_loop, gc_interval)
        self._drainer: gevent.Greenlet | None = None
        self.draining = False

    def _usable(self, session: Session) -> bool:
        return (not session.closed and session.num_streams < self.max_streams
                and time.monotonic() - session.created_at < self.max_age)

    def open_stream(self, remote: str) -> SmuxStream:
        sessions = self.sessions.setdefault(remote, [])
        for session in sessions:
            if self._usable(session):
                try:
                    return session.open_stream()
                except OSError:
                    continue
        session = Session(self.dial(remote), client=True)
        session.peer = remote
        sessions.append(session)
        log.debug("smux pool: new session to %s (%d now)", remote, len(sessions))
        stream = session.open_stream()
        if self.draining:
            self._start_drainer()
        return stream

    def collect(self) -> int:
        """Close the sessions that are of no more use; how many were closed."""
        closed = 0
        for remote, sessions in list(self.sessions.items()):
            idle_kept = 0
            for session in list(sessions):
                if not session.closed and session.num_streams == 0:
                    if not self._usable(session) or idle_kept >= self.keep_idle:
                        session.close()
                        closed += 1
                    else:
                        idle_kept += 1
                if session.closed:
                    sessions.remove(session)
            if not sessions:
                del self.sessions[remote]
        if closed:
            log.debug("smux pool: closed %d idle session(s)", closed)
        return closed

    def _gc_loop(self, interval: float) -> None:
        while True:
            gevent.sleep(interval)
            self.collect()

    def drain(self, poll: float = 0.5) -> None:
        """The relay owning this pool stopped: close each session as soon as its open
        streams have finished (at once when it has none), then end. Without this a stopped
        relay's sessions would stay open until the peer's idle timeout (a reload leak)."""
        self.draining = True
        self._gc.kill(block=False)
        self._poll = poll
        self._start_drainer()

    def _start_drainer(self) -> None:
        if self._drainer is None or self._drainer.dead:
            self._drainer = gevent.spawn(self._drain_loop)

    def _drain_loop(self) -> None:
        while True:
            for remote, sessions in list(self.sessions.items()):
                for session in list(sessions):
                    if session.closed or session.num_streams == 0:
                        session.close()
                        sessions.remove(session)
                if not sessions:
                    del self.sessions[remote]
            if not self.sessions:
                return
            gevent.sleep(self._poll)

    def close(self) -> None:
        self._gc.kill(block=False)
        if self._drainer is not None:
            self._drainer.kill(block=False)
        for sessions in self.sessions.values():
            for session in sessions:
                session.close()
        self.sessions.clear()
