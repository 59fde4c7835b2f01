"""The local channel between the supervisor and one worker: one Unix socketpair per worker.

A message is a 4-byte big-endian length and a pickled Python value. Pickle, not JSON, because
both ends are the same program (the worker is spawned from the supervisor's own code) and the
values are its own dataclasses (relay configs with whatever keys they grow, connection
records); the socketpair is reachable by nobody else, so nothing untrusted is ever unpickled.

A request is ``{"id", "op", "args"}``; its reply ``{"id", "ok": True, "result"}`` or
``{"id", "ok": False, "kind", "error"}`` (the exception's class name and message, so the
supervisor can raise the same kind of error: a ListenError exits 1, a ConfigError 2).

:func:`encode` and :class:`Decoder` are the whole wire format, tested without sockets;
:class:`Peer` is the I/O: calls matched to replies by id (several greenlets may wait at once),
and requests from the other end served by a handler table, one at a time, in arrival order.

A request may carry open file descriptors (the supervisor hands a worker the UDP sockets it
holds for it): they travel as SCM_RIGHTS beside the message's bytes, the message says how many,
and the receiving end hands them, in order, to the handler as ``fds``. The kernel delivers
descriptors with the bytes they were sent with, so by the time a message is whole its
descriptors have arrived, and a first-in, first-out queue matches them up.
"""

from __future__ import annotations

import array
import itertools
import logging
import pickle
import socket as _stdsocket
import struct
from collections import deque
from typing import Any, Callable

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore

log = logging.getLogger("ehco.workers")

HEADER = struct.Struct("!I")
#: a bound on one message (a page of 100k connection records is ~20 MiB)
MAX_MESSAGE = 256 << 20
READ_SIZE = 1 << 16
#: descriptors per sendmsg (the kernel's SCM_MAX_FD); a message with more sends its bytes in
#: pieces, one batch of descriptors with each
FDS_PER_SEND = 253
_ANCILLARY = _stdsocket.CMSG_SPACE(FDS_PER_SEND * array.array("i").itemsize)


class ProtocolError(Exception):
    """Bytes on the channel that are not a message: the channel is closed."""


class ChannelClosed(Exception):
    """The other end went away (the worker died, or the supervisor did)."""


class RemoteError(Exception):
    """The other end's handler raised; ``kind`` is the exception's class name."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def encode(msg: Any) -> bytes:
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_MESSAGE:
        raise ValueError(f"message of {len(body)} bytes is over the {MAX_MESSAGE} limit")
    return HEADER.pack(len(body)) + body


class Decoder:
    """Bytes in (as they arrive, in any pieces), whole messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > MAX_MESSAGE:
                raise ProtocolError(f"message length {size} is over the {MAX_MESSAGE} limit")
            end = HEADER.size + size
            if len(self._buf) < end:
                break
            try:
                out.append(pickle.loads(bytes(self._buf[HEADER.size:end])))
            except Exception as exc:
                raise ProtocolError(f"undecodable message: {exc}") from None
            del self._buf[:end]
        return out


def request(rid: int, op: str, args: dict, fds: int = 0) -> dict:
    msg = {"id": rid, "op": op, "args": args}
    if fds:
        msg["fds"] = fds
    return msg


def fd_batches(data: bytes, fds: list[int]) -> list[tuple[bytes, list[int]]]:
    """``data`` cut into pieces that each carry at most FDS_PER_SEND descriptors (every piece
    at least one byte: the kernel attaches descriptors to bytes)."""
    batches = [fds[i:i + FDS_PER_SEND] for i in range(0, len(fds), FDS_PER_SEND)] or [[]]
    if len(batches) > len(data):
        raise ValueError(f"{len(fds)} descriptors do not fit one message of {len(data)} bytes")
    pieces = [data[i:i + 1] for i in range(len(batches) - 1)]
    pieces.append(data[len(batches) - 1:])
    return list(zip(pieces, batches))


def reply(rid: int, result: Any) -> dict:
    return {"id": rid, "ok": True, "result": result}


def failure(rid: int, exc: BaseException) -> dict:
    return {"id": rid, "ok": False, "kind": type(exc).__name__, "error": str(exc)}


def outcome(msg: dict) -> Any:
    """The result a reply carries, or the RemoteError it reports."""
    if msg.get("ok"):
        return msg.get("result")
    return RemoteError(msg.get("kind", "Exception"), msg.get("error", ""))


class Peer:
    """One end of a channel over a connected (gevent) socket."""

    def __init__(self, sock, handlers: dict[str, Callable[..., Any]] | None = None,
                 name: str = "channel"):
        self.sock = sock
        self.name = name
        self.handlers = handlers or {}
        self.closed = Event()
        self._ids = itertools.count(1)
        self._waiting: dict[int, AsyncResult] = {}
        self._send_lock = Semaphore()
        self._fds: deque[int] = deque()
        self._reader = gevent.spawn(self._read_loop)

    def call(self, op: str, timeout: float | None = None, *, pass_fds: list[int] = (),
             **args: Any) -> Any:
        """Send a request and wait for its result; raises RemoteError, ChannelClosed or
        TimeoutError. ``pass_fds`` go with it (duplicated: the caller keeps its own)."""
        if self.closed.is_set():
            raise ChannelClosed(f"{self.name} is closed")
        rid = next(self._ids)
        waiter = AsyncResult()
        self._waiting[rid] = waiter
        try:
            self._send(request(rid, op, args, len(pass_fds)), list(pass_fds))
            waiter.wait(timeout)
            if not waiter.ready():
                raise TimeoutError(f"{self.name}: no answer to {op!r} in {timeout} s")
            result = waiter.value
        finally:
            self._waiting.pop(rid, None)
        if isinstance(result, Exception):
            raise result
        return result

    def _send(self, msg: Any, fds: list[int] = ()) -> None:
        data = encode(msg)
        with self._send_lock:
            try:
                if not fds:
                    self.sock.sendall(data)
                    return
                for piece, batch in fd_batches(data, fds):
                    rights = [(_stdsocket.SOL_SOCKET, _stdsocket.SCM_RIGHTS,
                               array.array("i", batch))]
                    sent = self.sock.sendmsg([piece], rights)
                    if sent < len(piece):
                        self.sock.sendall(piece[sent:])
            except OSError as exc:
                self.close()
                raise ChannelClosed(f"{self.name}: {exc}") from None

    def _receive(self) -> bytes:
        """Bytes from the other end; descriptors that came with them join ``_fds``."""
        data, ancillary, flags, _ = self.sock.recvmsg(READ_SIZE, _ANCILLARY)
        for level, kind, payload in ancillary:
            if level == _stdsocket.SOL_SOCKET and kind == _stdsocket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)
        if flags & _stdsocket.MSG_CTRUNC:
            raise ProtocolError("descriptors were cut off in transit")
        return data

    def _take_fds(self, count: int) -> list[int]:
        if not isinstance(count, int) or count < 0 or count > len(self._fds):
            raise ProtocolError(f"a message says {count!r} descriptors came with it; "
                                f"{len(self._fds)} did")
        return [self._fds.popleft() for _ in range(count)]

    def _read_loop(self) -> None:
        decoder = Decoder()
        try:
            while True:
                data = self._receive()
                if not data:
                    break
                for msg in decoder.feed(data):
                    self._dispatch(msg)
        except ProtocolError as exc:
            log.error("%s: %s; closing it", self.name, exc)
        except OSError as exc:
            log.debug("%s: read failed: %s", self.name, exc)
        finally:
            self.close()

    def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, dict) or "id" not in msg:
            raise ProtocolError(f"not a message: {type(msg).__name__}")
        if "op" not in msg:
            waiter = self._waiting.get(msg["id"])
            if waiter is not None:
                waiter.set(outcome(msg))
            return
        fds = self._take_fds(msg.get("fds", 0))
        handler = self.handlers.get(msg["op"])
        try:
            if handler is None:
                for fd in fds:
                    _stdsocket.close(fd)
                raise ProtocolError(f"unknown operation {msg['op']!r}")
            args = msg.get("args", {})
            answer = reply(msg["id"], handler(**args, fds=fds) if fds else handler(**args))
        except Exception as exc:  # the handler's error goes back to the caller
            answer = failure(msg["id"], exc)
        try:
            self._send(answer)
        except ChannelClosed:
            pass

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self.sock.close()
        except OSError:
            pass
        while self._fds:  # came with a message that never became whole
            try:
                _stdsocket.close(self._fds.popleft())
            except OSError:
                pass
        for waiter in list(self._waiting.values()):
            waiter.set(ChannelClosed(f"{self.name} closed"))
        if self._reader is not gevent.getcurrent():
            self._reader.kill(block=False)
