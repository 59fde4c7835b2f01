"""Moving bytes both ways between two streams until both directions are done.

Zero copy is the main lever Python has on throughput: when both ends are plain TCP sockets on
Linux, each direction moves data with ``os.splice`` through a pipe, so payload bytes never
enter the interpreter. Everything else (TLS, smux, WebSocket frames, or a platform without
splice) goes through a ``recv_into``/``sendall`` loop.

What a connection holds is what it is moving: a direction takes a pipe (or a read buffer) from
a process-wide pool when its source has data and gives it back, empty, when the source runs
dry, so an idle relayed connection holds its two sockets and nothing else (as a Go relay
does). The calling greenlet carries one direction itself; only the other gets a greenlet.

Both paths are non-blocking at the fd level and wait on the gevent hub, so one connection never
stalls the others, and neither loops for more than :data:`FAIR_SHARE` bytes without letting the
hub run (a source that always has data would otherwise starve every other connection).
Half-close is kept: when one side finishes sending, the other side's write half is shut down
and the opposite direction goes on until it finishes too. An error in either direction (reset,
broken pipe) ends both.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from typing import Callable

import gevent
from gevent.event import Event
from gevent.hub import get_hub
from gevent.monkey import get_original

from .guards.fairness import yield_turn
from .transports.streams import buffers

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
#: bytes a direction may move without letting the hub run (then it yields once)
FAIR_SHARE = 1 << 20
#: empty pipes kept for reuse (2 fds each); more are closed when given back
PIPES_KEEP = 64
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


class PipePool:
    """Empty splice pipes, reused across connections.

    Making and resizing a pipe is three syscalls and two fds; a direction only needs one while
    it moves data. A pipe comes back here only when it is empty (anything else is closed), and
    a pool inherited across ``fork`` is dropped, never shared between processes.
    """

    def __init__(self, keep: int = PIPES_KEEP):
        self.keep = keep
        self._free: list[tuple[int, int, int]] = []
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.clear)

    def take(self) -> tuple[int, int, int]:
        if self._free:
            return self._free.pop()
        return _open_pipe()

    def give(self, pipe: tuple[int, int, int]) -> None:
        if len(self._free) < self.keep:
            self._free.append(pipe)
        else:
            _close_pipe(pipe)

    def clear(self) -> None:
        free, self._free = self._free, []
        for pipe in free:
            _close_pipe(pipe)

    def __len__(self) -> int:
        return len(self._free)

    def fds(self) -> set[int]:
        """The fds of the spare pipes (tests tell them from leaked ones)."""
        return {fd for r, w, _ in self._free for fd in (r, w)}


def _close_pipe(pipe: tuple[int, int, int]) -> None:
    _close_fd(pipe[0])
    _close_fd(pipe[1])


#: the process's spare pipes (one hub per process: no locking needed)
pipes = PipePool()


def _spend(budget: int, n: int) -> int:
    """The fairness budget left after moving n bytes without a wait; once it is spent the
    source keeps having data, so let the other greenlets run, then start a new budget."""
    budget -= n
    if budget <= 0:
        yield_turn()
        return FAIR_SHARE
    return budget


def splice_loop(src_sock, dst_sock, count: Counter, until_idle: bool = False) -> bool:
    """Move bytes from src to dst (gevent sockets) through a pipe until src reaches EOF (True),
    or, with ``until_idle``, until src has nothing to read for now (False).

    The pipe is drained completely after every fill, so an EAGAIN on the fill can only mean
    the source socket has nothing to read yet: then the (empty) pipe goes back to the pool
    and the direction waits holding nothing but the socket.

    Waits use the sockets' own gevent watchers (``_read_event``, ``_write_event``): a watcher
    of our own would cost an allocation and an fcntl per connection, and closing a gevent
    socket cancels waits on its own watchers only.
    """
    hub = get_hub()
    src_fd, dst_fd = src_sock.fileno(), dst_sock.fileno()
    read_watcher = src_sock._read_event
    pipe = None
    full = False  # the pipe holds bytes: it must not go back to the pool
    moved_any = False
    budget = FAIR_SHARE
    try:
        while True:
            if pipe is None:
                pipe = pipes.take()
            r, w, size = pipe
            try:
                n = os.splice(src_fd, w, size, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                pipes.give(pipe)
                pipe = None
                if until_idle:
                    return False
                hub.wait(read_watcher)
                budget = FAIR_SHARE
                continue
            except OSError as exc:
                if not moved_any and exc.errno in _NO_SPLICE:
                    raise _SpliceUnsupported() from exc
                raise
            if n == 0:
                return True
            moved_any = True
            full = True
            left = n
            while left:
                try:
                    left -= os.splice(r, dst_fd, left, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    hub.wait(dst_sock._write_event)
                    budget = FAIR_SHARE
            full = False
            count(n)
            budget = _spend(budget, n)
    finally:
        if pipe is not None:
            if full:
                _close_pipe(pipe)
            else:
                pipes.give(pipe)


def gather_loop(src, dst, count: Counter) -> None:
    """Move bytes until src reaches EOF from a source that queues payloads (an smux stream's
    ``recv_views``) to a socket that writes many buffers at once (``sendall_parts``): the
    payloads go out as they are, with no copy into a buffer of ours."""
    budget = FAIR_SHARE
    while True:
        parts = src.recv_views(COPY_BUFFER_MAX)
        if not parts:
            return
        n = sum(map(len, parts))
        dst.sendall_parts(parts)
        count(n)
        budget = _spend(budget, n)


def copy_loop(src, dst, count: Counter) -> None:
    """Move bytes with recv_into/sendall until src reaches EOF.

    The buffer starts at COPY_BUFFER_MIN and grows while reads fill it (bulk transfers then make
    fewer, larger writes: through smux or TLS that is most of the cost). With a source that can
    say when it is readable, the buffer is taken for the burst and given back when a read comes
    back short (the source ran dry), so an idle direction holds none.
    """
    wait = getattr(src, "wait_readable", None)
    size = COPY_BUFFER_MIN
    buf = None
    budget = FAIR_SHARE
    try:
        while True:
            if buf is None:
                if wait is not None:
                    wait()
                buf = buffers.take(size)
            n = src.recv_into(buf)
            if not n:
                return
            with memoryview(buf) as view:
                dst.sendall(view[:n])
            count(n)
            if n == size:
                if size < COPY_BUFFER_MAX:
                    buffers.give(buf)
                    size *= 4
                    buf = buffers.take(size)
            elif wait is not None:
                buffers.give(buf)
                buf = None
                budget = FAIR_SHARE
                continue
            budget = _spend(budget, n)
    finally:
        if buf is not None:
            buffers.give(buf)


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
            splice_loop(src_sock, dst_sock, count)
            spliced = True
        except _SpliceUnsupported:
            log.debug("splice unsupported for %r -> %r, copying", src, dst)
    if not spliced:
        if hasattr(src, "recv_views") and hasattr(dst, "sendall_parts"):
            gather_loop(src, dst, count)
        else:
            copy_loop(src, dst, count)
    dst.shutdown_write()


def _guarded(src, dst, count: Counter) -> Exception | None:
    """One direction, with its error returned rather than raised (no hub traceback per reset)."""
    try:
        one_direction(src, dst, count)
    except Exception as exc:  # any failure ends this connection only
        return exc
    return None


class _OtherDirectionFailed(Exception):
    """Thrown into the caller's direction when the other one broke (reset, broken pipe)."""


class _Backward:
    """The b->a direction of :func:`pump`.

    Between two plain sockets it has a greenlet only while b has data: a read watcher on b
    spawns one per burst, which splices until b runs dry and ends (a parked greenlet costs
    ~8 KiB, most of what an idle relayed connection would otherwise hold). Other streams get
    one greenlet for the whole direction. Its end (or its error, which is thrown into the
    caller's own direction) is reported through ``done`` and ``value``.
    """

    __slots__ = ("src", "dst", "count", "caller", "forward_running", "value", "done", "glet",
                 "watcher", "src_sock", "dst_sock")

    def __init__(self, src, dst, count: Counter, caller):
        self.src, self.dst, self.count, self.caller = src, dst, count, caller
        self.forward_running = True
        self.value: Exception | None = None
        self.done = Event()
        self.glet = None
        self.watcher = None
        src_sock, dst_sock = src.splice_socket, dst.splice_socket
        if splice_enabled and src_sock is not None and dst_sock is not None:
            self.src_sock, self.dst_sock = src_sock, dst_sock
            self.watcher = src_sock._read_event  # the socket's own (see splice_loop)
            if getattr(src, "pending", None):
                self._burst_now()
            else:
                self.watcher.start(self._burst_now)
        else:
            self.glet = gevent.spawn(self._whole)

    def _whole(self) -> None:
        self._finish(_guarded(self.src, self.dst, self.count))

    def _burst_now(self) -> None:
        self.watcher.stop()
        self.glet = gevent.spawn(self._burst)

    def _burst(self) -> None:
        try:
            pending = self.src.take_pending()
            if pending:
                self.dst.sendall(pending)
                self.count(len(pending))
            try:
                if not splice_loop(self.src_sock, self.dst_sock, self.count, until_idle=True):
                    self.glet = None  # idle: the watcher starts the next burst
                    self.watcher.start(self._burst_now)
                    return
            except _SpliceUnsupported:
                log.debug("splice unsupported for %r -> %r, copying", self.src, self.dst)
                copy_loop(self.src, self.dst, self.count)
            self.dst.shutdown_write()
        except Exception as exc:  # any failure ends this connection only
            self._finish(exc)
            return
        self._finish(None)

    def _finish(self, exc: Exception | None) -> None:
        self.value = exc
        self.done.set()
        if exc is not None:
            get_hub().loop.run_callback(self._interrupt)

    def _interrupt(self) -> None:  # in the hub, while the caller is parked
        if self.forward_running:
            self.caller.throw(_OtherDirectionFailed(self.value))

    def stop(self) -> None:
        self.forward_running = False
        if self.watcher is not None and self.watcher.callback == self._burst_now:
            self.watcher.stop()
        glet = self.glet
        if glet is not None and not glet.dead and glet is not gevent.getcurrent():
            glet.kill()


def pump(a, b, count_ab: Counter, count_ba: Counter) -> None:
    """Relay a<->b until both directions are done (or either breaks), then close both.

    Blocks the calling greenlet, which carries a->b itself (b->a: see :class:`_Backward`);
    killing the caller stops both directions and still closes both streams, which is how a
    relay drops a connection on purpose.
    """
    backward = _Backward(b, a, count_ba, gevent.getcurrent())
    try:
        exc = _guarded(a, b, count_ab)
        backward.forward_running = False
        if isinstance(exc, _OtherDirectionFailed):
            exc = exc.args[0]
        elif exc is None:
            backward.done.wait()
            exc = backward.value
        if exc is not None:
            log.debug("pump %r <-> %r ended on %s: %s", a, b, type(exc).__name__, exc)
    finally:
        backward.stop()
        a.close()
        b.close()
