"""An echo server that holds every connection it accepts, in a process of its own (for the
open-files test and the memory benchmark: thousands of idle connections, one thread).

Prints its port, then answers every line on stdin with the number of connections it holds;
exits when stdin closes. Raises its own open-files limit to the hard limit first.

    python tests/holdecho.py
"""

import resource
import selectors
import socket
import sys


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ)
    sel.register(sys.stdin, selectors.EVENT_READ)
    print(lsock.getsockname()[1], flush=True)
    held = 0
    while True:
        for key, _ in sel.select():
            if key.fileobj is lsock:
                try:
                    while True:
                        conn, _ = lsock.accept()
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ)
                        held += 1
                except BlockingIOError:
                    pass
            elif key.fileobj is sys.stdin:
                if not sys.stdin.readline():
                    return
                print(held, flush=True)
            else:
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if data:
                    key.fileobj.sendall(data)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    held -= 1


if __name__ == "__main__":
    main()
