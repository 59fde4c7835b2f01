"""The least a gevent TCP relay can do per connection: the floor bench.py compares ehco with.

No config, registry, balancer, limits, metrics, logging or splice: accept (gevent's
StreamServer), dial the one target (an IP literal, so no resolver), one greenlet per
direction moving bytes with recv/sendall, half-close, close. Whatever ehco-gevent spends per
connection above this is ours to cut; what this floor itself spends is the price of CPython
and gevent, which no relay written on them can go below.

    python bench/floor_relay.py LISTEN_PORT TARGET_PORT [PROCESSES]

With PROCESSES > 1 that many processes share the port through SO_REUSEPORT, as
``ehco --workers N`` does.
"""

from __future__ import annotations

import signal
import socket as _stdsocket

import gevent
from gevent import socket
from gevent.server import StreamServer

import floor_processes

LO = "127.0.0.1"


def make_handler(target: tuple[str, int]):
    def move(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(_stdsocket.SHUT_WR)
        except OSError:
            pass

    def handle(client, _address) -> None:
        upstream = socket.socket()
        try:
            upstream.connect(target)  # an IP literal: no resolver (create_connection has one)
        except OSError:
            upstream.close()
            client.close()
            return
        back = gevent.spawn(move, upstream, client)
        move(client, upstream)
        back.join()
        client.close()
        upstream.close()

    return handle


def serve(port: int, target_port: int) -> None:
    listener = _stdsocket.socket()
    listener.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
    listener.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEPORT, 1)
    listener.bind((LO, port))
    listener.listen(1024)
    StreamServer(socket.socket(fileno=listener.detach()),
                 make_handler((LO, target_port))).serve_forever()


def main() -> None:
    # run by the hub, which a plain signal handler is not
    floor_processes.run(serve, lambda stop: gevent.signal_handler(signal.SIGTERM, stop))


if __name__ == "__main__":
    main()
