"""Moving bytes both ways between two streams until both directions are done.

Zero copy is the main lever Python has on throughput: when both ends are plain TCP sockets on
Linux, each direction moves data with ``os.splice`` through its own pipe, so payload bytes never
enter the interpreter. Everything else (TLS, smux, WebSocket frames, or a platform without
splice) goes through a ``recv_into``/``sendall`` loop over one reused buffer.

Both paths are non-blocking at the fd level and wait on the gevent hub, so one connection never
stalls the others. Half-close is kept: when one side finishes sending, the other side's write
half is shut down and the opposite direction goes on until it finishes too. An error in either
direction (reset, broken pipe) ends both.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from typing import Callable

import gevent
from gevent.hub import get_hub
from gevent.monkey import get_original

# The plain close: gevent's monkey-patched os.close defers closing to the loop's next
# iteration, which on an idle hub keeps a finished connection's pipes open until the next
# event. Our pipes have no watchers left when they are closed, so the deferral buys nothing.
_close_fd = get_original("os", "close")

log = logging.getLogger("ehco.pump")

#: the copy path's buffer starts small (idle and interactive connections stay cheap) and grows
#: while reads keep filling it (bulk transfers make fewer, larger writes: through smux or TLS
#: that is most of the cost)
COPY_BUFFER_MIN = 16 * 1024
COPY_BUFFER_MAX = 256 * 1024
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
HAVE_SPLICE = hasattr(os, "splice")
# no SPLICE_F_MORE: it holds small writes back (Go users saw ~200 ms added to small messages)
_SPLICE_FLAGS = (getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)) if HAVE_SPLICE else 0
# errors that mean "this socket type cannot splice": fall back to copying
_NO_SPLICE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}

#: set to False (tests, benchmarks) to force the copy path everywhere
splice_enabled = HAVE_SPLICE

Counter = Callable[[int], None]


class _SpliceUnsupported(Exception):
    """Raised before any byte moved, so the caller can fall back to copying."""


def _open_pipe() -> tuple[int, int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over pipe-max-size or the user's pipe quota: keep the default size
    try:
        size = fcntl.fcntl(w, _F_GETPIPE_SZ)
    except OSError:
        size = 65536
    return r, w, size


def splice_loop(src_fd: int, dst_fd: int, count: Counter) -> None:
    """Move bytes from src to dst through a pipe until src reaches EOF.

    The pipe is drained completely after every fill, so an EAGAIN on the fill can only mean
    the source socket has nothing to read yet.
    """
    hub = get_hub()
    r, w, size = _open_pipe()
    read_watcher = hub.loop.io(src_fd, 1)
    write_watcher = hub.loop.io(dst_fd, 2)
    moved_any = False
    try:
        while True:
            try:
                n = os.splice(src_fd, w, size, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                hub.wait(read_watcher)
                continue
            except OSError as exc:
                if not moved_any and exc.errno in _NO_SPLICE:
                    raise _SpliceUnsupported() from exc
                raise
            if n == 0:
                return
            moved_any = True
            left = n
            while left:
                try:
                    left -= os.splice(r, dst_fd, left, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    hub.wait(write_watcher)
            count(n)
    finally:
        read_watcher.close()
        write_watcher.close()
        _close_fd(r)
        _close_fd(w)


def copy_loop(src, dst, count: Counter) -> None:
    """Move bytes with recv_into/sendall over one reused buffer until src reaches EOF."""
    size = COPY_BUFFER_MIN
    buf = bytearray(size)
    view = memoryview(buf)
    while True:
        n = src.recv_into(buf)
        if not n:
            return
        dst.sendall(view[:n])
        count(n)
        if n == size and size < COPY_BUFFER_MAX:
            size *= 4
            buf = bytearray(size)
            view = memoryview(buf)


def one_direction(src, dst, count: Counter) -> None:
    """Move src to dst until EOF, then half-close dst. Raises on a broken connection."""
    pending = src.take_pending()
    if pending:
        dst.sendall(pending)
        count(len(pending))
    src_sock, dst_sock = src.splice_socket, dst.splice_socket
    spliced = False
    if splice_enabled and src_sock is not None and dst_sock is not None:
        try:
            splice_loop(src_sock.fileno(), dst_sock.fileno(), count)
            spliced = True
        except _SpliceUnsupported:
            log.debug("splice unsupported for %r -> %r, copying", src, dst)
    if not spliced:
        copy_loop(src, dst, count)
    dst.shutdown_write()


def _guarded(src, dst, count: Counter) -> Exception | None:
    """One direction, with its error returned rather than raised (no hub traceback per reset)."""
    try:
        one_direction(src, dst, count)
    except Exception as exc:  # any failure ends this connection only
        return exc
    return None


def pump(a, b, count_ab: Counter, count_ba: Counter) -> None:
    """Relay a<->b until both directions are done (or either breaks), then close both.

    Blocks the calling greenlet; killing it stops both directions and still closes both
    streams, which is how a relay drops a connection on purpose.
    """
    forward = gevent.spawn(_guarded, a, b, count_ab)
    backward = gevent.spawn(_guarded, b, a, count_ba)
    try:
        for done in gevent.iwait((forward, backward)):
            exc = done.value
            if exc is not None:
                log.debug("pump %r <-> %r ended on %s: %s", a, b, type(exc).__name__, exc)
                break
    finally:
        gevent.killall((forward, backward))
        a.close()
        b.close()
