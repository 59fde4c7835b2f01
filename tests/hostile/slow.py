"""Slow and bursty clients for the hostile tests of issue 10 (listener deadlines, reload,
UDP bursts), driven from the test process with plain sockets.

``EHCO_HOSTILE_LONG=1`` selects the issue's full-size numbers; CI runs the short ones.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from typing import Callable

from tests.support import LOOPBACK

LONG = os.environ.get("EHCO_HOSTILE_LONG") == "1"


def size(ci: int, long: int) -> int:
    """The CI number, or the long run's one."""
    return long if LONG else ci


def big_receive_buffer(sock: socket.socket, want: int = 4 << 20) -> None:
    """A test-side UDP socket that does not drop a burst itself (root may exceed rmem_max)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), want)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)


class SlowClients:
    """``n`` connections to ``port`` that each send one byte of ``message`` every
    ``interval`` seconds (slowloris); :meth:`run` drips until the server has closed them all."""

    def __init__(self, port: int, n: int, message: bytes, interval: float = 2.0):
        self.message = message
        self.interval = interval
        self.selector = selectors.DefaultSelector()
        self.sent: dict[socket.socket, int] = {}
        self.closed_by_server = 0
        for _ in range(n):
            sock = socket.create_connection((LOOPBACK, port), timeout=10)
            sock.setblocking(False)
            self.sent[sock] = 0
            self.selector.register(sock, selectors.EVENT_READ)

    def _drip(self) -> None:
        for sock, done in list(self.sent.items()):
            if done >= len(self.message):
                continue  # the whole message went out: a well-behaved client from here on
            try:
                sock.send(self.message[done:done + 1])
                self.sent[sock] = done + 1
            except OSError:
                self._closed(sock)

    def _closed(self, sock: socket.socket) -> None:
        if sock in self.sent:
            del self.sent[sock]
            self.selector.unregister(sock)
            sock.close()
            self.closed_by_server += 1

    def run(self, give_up_after: float) -> int:
        """Drip until every connection was closed by the server (EOF or reset), or until
        ``give_up_after`` seconds (a safety net: the test then fails on the count)."""
        stop = time.monotonic() + give_up_after
        next_drip = 0.0
        while self.sent and time.monotonic() < stop:
            now = time.monotonic()
            if now >= next_drip:
                self._drip()
                next_drip = now + self.interval
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._closed(key.fileobj)
        return self.closed_by_server

    def close(self) -> None:
        for sock in list(self.sent):
            sock.close()
        self.sent.clear()
        self.selector.close()


def run_together(groups: list[SlowClients], give_up_after: float) -> None:
    """Drip several groups of slow clients at once (one thread each)."""
    threads = [threading.Thread(target=g.run, args=(give_up_after,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Prober(threading.Thread):
    """Runs ``probe()`` every ``interval`` seconds in a thread until stopped; counts successes
    and keeps the failures (a normal client that must keep working during an attack)."""

    def __init__(self, probe: Callable[[], None], interval: float = 0.2):
        super().__init__(daemon=True)
        self.probe = probe
        self.interval = interval
        self.ok = 0
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.probe()
                self.ok += 1
            except Exception as exc:  # recorded, asserted by the test
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._halt.wait(self.interval)

    def __enter__(self) -> "Prober":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self.join(30)
