"""The least CPython can do per relayed connection, without gevent: bench.py's lower floor.

One epoll loop and callbacks, no greenlets, no stream objects: accept, a non-blocking connect
to the one target, recv/send between the two sockets, half-close, close. Partial sends are
buffered, so it is a correct relay, but it keeps nothing an operator needs (no limits, no
counters, no logs). It answers one question: how many connections a second any relay
written in CPython can carry here, whatever its framework.

    python bench/floor_epoll.py LISTEN_PORT TARGET_PORT [PROCESSES]
"""

from __future__ import annotations

import errno
import select
import socket

import floor_processes

LO = "127.0.0.1"
IN, OUT = select.EPOLLIN, select.EPOLLOUT


class Side:
    __slots__ = ("sock", "fd", "peer", "pending", "eof", "closed_write")

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer: Side | None = None
        self.pending = b""  # bytes for this side that did not fit yet
        self.eof = False  # this side sent EOF
        self.closed_write = False


def serve(port: int, target: tuple[str, int]) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((LO, port))
    listener.listen(1024)
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), IN)
    sides: dict[int, Side] = {}
    connecting: dict[int, Side] = {}

    def close_pair(side: Side) -> None:
        for s in (side, side.peer):
            if s is not None and s.fd in sides:
                del sides[s.fd]
                ep.unregister(s.fd)
                s.sock.close()

    def send(dst: Side, data: bytes) -> None:
        if dst.pending:
            dst.pending += data
            return
        try:
            n = dst.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            dst.pending = data[n:]
            ep.modify(dst.fd, IN | OUT)

    def finish_write(dst: Side) -> None:
        dst.closed_write = True
        dst.sock.shutdown(socket.SHUT_WR)
        if dst.eof and dst.peer.closed_write:
            close_pair(dst)

    while True:
        for fd, ev in ep.poll():
            if fd == listener.fileno():
                for _ in range(64):
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    up = socket.socket()
                    up.setblocking(False)
                    err = up.connect_ex(target)
                    if err not in (0, errno.EINPROGRESS):
                        conn.close()
                        up.close()
                        continue
                    a, b = Side(conn), Side(up)
                    a.peer, b.peer = b, a
                    sides[a.fd] = a
                    sides[b.fd] = b
                    connecting[b.fd] = b
                    ep.register(b.fd, OUT)
                continue
            side = sides.get(fd)
            if side is None:
                continue
            if fd in connecting:
                del connecting[fd]
                if side.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    close_pair(side)
                    continue
                ep.modify(fd, IN)
                ep.register(side.peer.fd, IN)
                continue
            try:
                if ev & OUT:
                    n = side.sock.send(side.pending)
                    side.pending = side.pending[n:]
                    if not side.pending:
                        ep.modify(fd, 0 if side.eof else IN)
                        if side.peer.eof:
                            finish_write(side)
                    continue
                if ev & (IN | select.EPOLLHUP | select.EPOLLERR):
                    data = side.sock.recv(65536)
                    if data:
                        send(side.peer, data)
                    else:
                        side.eof = True
                        ep.modify(fd, OUT if side.pending else 0)
                        if not side.peer.pending:
                            finish_write(side.peer)
            except OSError:
                close_pair(side)


def main() -> None:
    floor_processes.run(lambda port, target_port: serve(port, (LO, target_port)))


if __name__ == "__main__":
    main()
