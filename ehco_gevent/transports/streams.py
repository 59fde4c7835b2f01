"""The byte-stream interface the pump moves data between, and its plain-socket implementation.

Every transport hands the relay objects with this shape, whatever runs underneath (a TCP socket,
TLS, a WebSocket, an smux stream)::

    recv_into(buf) -> int     # 0 means the peer finished sending (EOF); blocks cooperatively
    sendall(data) -> None
    shutdown_write() -> None  # half-close: the peer sees EOF, we can still read its answer
    close() -> None           # idempotent; releases everything the stream holds
    take_pending() -> bytes   # bytes already read from the wire (e.g. with a handshake)
    splice_socket             # the plain TCP socket under this stream, or None
    wait_readable() -> None   # optional: block until recv_into would not block

``wait_readable`` is what lets readers hold no buffer while a stream is idle: they wait first,
then take a buffer from :data:`buffers` for the read and give it back once the stream runs dry
(an idle connection then costs only its state, not 16-256 KiB of read buffer per direction).

``splice_socket`` is what lets the pump use ``os.splice``: only a stream whose bytes are exactly
a kernel TCP socket's bytes may offer one (not TLS, not smux, not WebSocket frames).
"""

from __future__ import annotations

import socket as _stdsocket
import sys

from gevent import socket

#: buffers per gathering write (Linux takes up to IOV_MAX, 1024)
GATHER_MAX = 256


def send_all(sock, data) -> None:
    """``sock.sendall(data)`` for a gevent socket, one ``send`` when the kernel takes it all.

    gevent's ``sendall`` asks the kernel for the socket's buffer size (a ``getsockopt``
    syscall) on every call before it sends: measurable on a bulk path, where nearly every
    write fits in one ``send``. Only the rest of a partial write goes through it."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def wait_socket_readable(sock) -> None:
    """Block until a gevent socket is readable, on the socket's own read watcher.

    Its own watcher, not ``gevent.socket.wait_read(fd)``: closing a gevent socket cancels
    waits on its own watchers (the waiter gets an OSError), while a watcher made aside keeps
    the close pending and the peer never sees our FIN."""
    sock._wait(sock._read_event)


class BufferPool:
    """Read buffers shared by every connection of the process, by size.

    A reader takes one when its stream has data and gives it back when the stream runs dry, so
    memory follows the connections that move data now, not the ones that are open. At most
    ``keep`` free buffers per size are kept; the rest go back to the allocator.
    """

    def __init__(self, keep: int = 32):
        self.keep = keep
        self._free: dict[int, list[bytearray]] = {}

    def take(self, size: int) -> bytearray:
        free = self._free.get(size)
        if free:
            return free.pop()
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        free = self._free.setdefault(len(buf), [])
        if len(free) < self.keep:
            free.append(buf)


#: the process's read buffers (one hub per process: no locking needed)
buffers = BufferPool()


def _refs(buf) -> int:
    return sys.getrefcount(buf)


def _refs_of_a_buffer_one_name_holds() -> int:
    probe = bytearray(1)
    return _refs(probe)


#: the reference count a function sees for a buffer that only its caller's name holds (the
#: name, the parameter, getrefcount's argument): measured once rather than assumed, as
#: interpreter versions count differently; ``LentBuffers.viewed`` has the same shape
_UNVIEWED = _refs_of_a_buffer_one_name_holds()


class LentBuffers:
    """Pooled buffers whose bytes went on as memoryviews instead of copies (the smux reader
    queues payloads cut from its read buffer on the streams they belong to).

    A lent buffer may go back to the pool only once no view of it is left, or the next reader
    would overwrite bytes still queued. CPython says so without any bookkeeping of ours: every
    live view holds one reference to the buffer (through the view's managed buffer), so a
    buffer that only this list refers to is free. At most ``cap`` buffers are out at a time;
    beyond that the owner copies (a stream that never reads must not pin more and more).
    """

    def __init__(self, pool: BufferPool, cap: int):
        self.pool = pool
        self.cap = cap
        self._lent: list[bytearray] = []

    def __len__(self) -> int:
        return len(self._lent)

    @property
    def full(self) -> bool:
        return len(self._lent) >= self.cap

    @staticmethod
    def viewed(buf: bytearray) -> bool:
        """True while a view of ``buf`` lives (for a buffer held by one name, the caller's)."""
        return sys.getrefcount(buf) > _UNVIEWED

    def lend(self, buf: bytearray) -> None:
        self._lent.append(buf)

    def settle(self) -> None:
        """Give back to the pool every lent buffer no view holds any more."""
        lent = self._lent
        for i in range(len(lent) - 1, -1, -1):
            if not self.viewed(lent[i]):  # the list's reference stands for the one name
                self.pool.give(lent.pop(i))

    def forget(self) -> None:
        """The owner ends: give back what is free; the rest is freed with its last view."""
        self.settle()
        self._lent.clear()



class SocketStream:
    """A plain TCP socket, optionally with bytes that were read before the stream began.

    ``pending`` exists because handshakes read in chunks: the bytes after an HTTP upgrade's
    blank line may already hold the first bytes of the relayed stream (a server-first
    greeting), and losing them would break protocols like SMTP or MySQL.
    """

    def __init__(self, sock: socket.socket, pending: bytes = b""):
        self.sock = sock
        self.pending = pending
        self._closed = False

    @property
    def splice_socket(self) -> socket.socket | None:
        if self._closed or self.sock.type != _stdsocket.SOCK_STREAM:
            return None
        return self.sock

    def take_pending(self) -> bytes:
        data, self.pending = self.pending, b""
        return data

    def recv_into(self, buf) -> int:
        if self.pending:
            n = min(len(buf), len(self.pending))
            buf[:n] = self.pending[:n]
            self.pending = self.pending[n:]
            return n
        return self.sock.recv_into(buf)

    def wait_readable(self) -> None:
        # a TLS socket (trojan wraps one in this class) may hold decrypted bytes the kernel
        # does not know of: for it, recv_into is the only sure test, so don't wait here
        if not self.pending and not hasattr(self.sock, "getpeercert"):
            wait_socket_readable(self.sock)

    def sendall(self, data) -> None:
        send_all(self.sock, data)

    def sendall_parts(self, parts: list) -> None:
        """Write every buffer of ``parts`` in order, gathered (``sendmsg``): one syscall for
        many pieces and no join copy. ``parts`` is consumed."""
        sock = self.sock
        if hasattr(sock, "getpeercert"):  # a TLS socket cannot gather
            sock.sendall(b"".join(parts))
            return
        while parts:
            sent = sock.sendmsg(parts[:GATHER_MAX])
            while sent:
                first = len(parts[0])
                if sent >= first:
                    sent -= first
                    del parts[0]
                else:
                    parts[0] = memoryview(parts[0])[sent:]
                    sent = 0

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(_stdsocket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()

    def __repr__(self) -> str:
        return f"<SocketStream fd={self.sock.fileno()} pending={len(self.pending)}>"
