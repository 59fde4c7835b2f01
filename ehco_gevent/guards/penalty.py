"""Where a flooding peer's connection waits before it is reset (issue 10).

Cutting a session that floods empty frames at once hands the attacker a fresh connection at
once: one client looping "connect, flood, get cut" made the node accept and tear down about
600 sessions a second, and that bookkeeping (accept, session, budget, close), not the frames,
kept the hub busy and other clients waiting. So a cut session ends at once on our side (its
streams, greenlets, buffers and TLS state go) but its TCP connection is kept, unread, for
``flood_hold_seconds``: the peer's sends stall on a zero window, costing neither side CPU,
and only then does it get its reset. The box holds a duplicate of the socket's file
descriptor, so the connection's own code closes its socket exactly as before; the kernel
keeps the connection until the duplicate goes too.

At most :data:`MAX_HELD` connections are held per process; past that the oldest is reset at
once, so a many-connection attacker can not turn the box into an fd leak.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time

import gevent

from . import limits

log = logging.getLogger("ehco.limits")

#: connections held at once per process (each is one fd and a small kernel receive queue)
MAX_HELD = 64
#: receive buffer set on a held connection, so the kernel stops growing its window
HELD_RCVBUF = 4096


def raw_socket(stream) -> socket.socket | None:
    """The TCP socket under a stream (a socket, or a stream wrapping one through ``sock`` or
    ``inner`` attributes: TLS over TCP, WebSocket frames over either)."""
    for _ in range(6):
        if stream is None:
            return None
        if hasattr(stream, "fileno") and hasattr(stream, "setsockopt"):
            return stream
        sock = getattr(stream, "sock", None)
        stream = sock if sock is not None else getattr(stream, "inner", None)
    return None


class PenaltyBox:
    """Duplicated descriptors of cut connections, each closed when its hold is over."""

    def __init__(self, max_held: int = MAX_HELD):
        self.max_held = max_held
        self._held: collections.deque[tuple[float, int]] = collections.deque()
        self._reaper: gevent.Greenlet | None = None

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, stream, seconds: float | None = None) -> bool:
        """Keep ``stream``'s TCP connection open and unread for ``seconds`` (default: the
        ``flood_hold_seconds`` in force). False when there is no socket to hold."""
        sock = raw_socket(stream)
        if sock is None:
            return False
        try:
            fd = os.dup(sock.fileno())
        except (OSError, ValueError):  # already closed
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, HELD_RCVBUF)
        except OSError:
            pass
        if seconds is None:
            seconds = limits.current().flood_hold_seconds
        while len(self._held) >= self.max_held:
            self._close(self._held.popleft()[1])
        self._held.append((time.monotonic() + seconds, fd))
        if self._reaper is None:
            self._reaper = gevent.spawn(self._reap)
        return True

    def _reap(self) -> None:
        try:
            while self._held:
                deadline, fd = self._held[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    gevent.sleep(min(wait, 1.0))
                    continue
                self._held.popleft()
                self._close(fd)
        finally:
            self._reaper = None

    def release_all(self) -> None:
        """Reset every held connection now (at exit the process's end does the same)."""
        while self._held:
            self._close(self._held.popleft()[1])

    @staticmethod
    def _close(fd: int) -> None:
        try:
            os.close(fd)  # unread data is queued: the kernel answers with a reset
        except OSError:
            log.debug("penalty box: fd %d already closed", fd)


#: the process's box
BOX = PenaltyBox()


def hold(stream) -> bool:
    return BOX.hold(stream)
