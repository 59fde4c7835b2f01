"""The web server's deadlines and cap, in process on real loopback sockets (ehco_gevent.web.server).

The end-to-end attack (1,000 slow clients against a real node) is tests/hostile/test_slow_clients.py.
"""

import gevent
import pytest
from gevent import socket

from ehco_gevent.guards import limits
from ehco_gevent.web.server import WebServer
from tests.support import read_until_closed


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def server():
    before = limits.current()
    limits.set_current(limits.Limits(web_header_timeout=0.5, web_idle_timeout=0.5))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    srv = WebServer(listener, app, max_connections=2)
    srv.start()
    yield srv
    srv.stop(timeout=1)
    limits.set_current(before)


def test_slow_head_is_closed_whatever_the_pace(server):
    sock = socket.create_connection(("127.0.0.1", server.server_port))
    with gevent.Timeout(5):
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":  # every 0.1 s: no single read times out
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            gevent.sleep(0.1)
        assert read_until_closed(sock) == b""
    sock.close()


def test_keep_alive_connection_is_served_then_closed_when_idle(server):
    sock = socket.create_connection(("127.0.0.1", server.server_port))
    for _ in range(2):  # the deadline is per head, not per connection
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nok"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
    assert read_until_closed(sock) == b""
    sock.close()


def test_connection_cap_holds_the_rest_in_the_backlog(server):
    held = [socket.create_connection(("127.0.0.1", server.server_port)) for _ in range(2)]
    gevent.sleep(0.1)
    assert server.pool.full()
    waiting = socket.create_connection(("127.0.0.1", server.server_port))  # queued, not lost
    waiting.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_until_closed(waiting).endswith(b"ok")  # served once the deadline freed a slot
    for sock in held + [waiting]:
        sock.close()


def test_request_head_over_the_cap_is_refused(server):
    """Three 30 KB headers: each line within pywsgi's own 64 KiB line limit, the head over
    MAX_HEAD: 431, not 200."""
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 30_000) for i in range(3))
    sock = socket.create_connection(("127.0.0.1", server.server_port))
    sock.sendall(head + b"\r\n")
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    sock.close()
