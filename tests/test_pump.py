"""The pump in-process, on real loopback sockets: both the splice path and the copy path.

Each test builds  client <-> [a  pump  b] <-> far  with gevent sockets and replays one
ordering of data and half-closes, as mitmproxy's layer tests do.
"""

import hashlib
import os
import socket as stdsocket
import struct

import gevent
import pytest

from ehco_gevent import pump as pump_mod
from ehco_gevent.transports.streams import SocketStream

from .support import gevent_tcp_pair as tcp_pair




def open_fds():
    """Sockets and pipes this process holds, as (fd, inode) pairs; the hub's own eventfd and
    epoll fds don't count, and other tests' leftovers closing meanwhile don't matter: callers
    check that nothing *new* is open (``open_fds() <= before``)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            found.add((fd, target))
    return found


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, n):
        self.n += n


def read_all(sock):
    out = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return bytes(out)
        out += chunk


@pytest.fixture(params=[True, False], ids=["splice", "copy"])
def path(request, monkeypatch):
    if request.param and not pump_mod.HAVE_SPLICE:
        pytest.skip("no os.splice on this platform")
    monkeypatch.setattr(pump_mod, "splice_enabled", request.param)
    return request.param


def start_pump(pending=b""):
    client, a = tcp_pair()
    b, far = tcp_pair()
    up, down = Counter(), Counter()
    g = gevent.spawn(pump_mod.pump, SocketStream(a, pending), SocketStream(b), up, down)
    return client, far, g, up, down


def test_echo_bytes_and_counts(path):
    before = open_fds()
    client, far, g, up, down = start_pump()
    data = os.urandom(8 << 20)

    def echo():
        got = read_all(far)
        far.sendall(got)
        far.shutdown(stdsocket.SHUT_WR)

    e = gevent.spawn(echo)
    w = gevent.spawn(lambda: (client.sendall(data), client.shutdown(stdsocket.SHUT_WR)))
    back = read_all(client)
    gevent.joinall([e, w, g], timeout=30, raise_error=True)
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    assert (up.n, down.n) == (len(data), len(data))
    assert g.dead
    client.close()
    far.close()
    assert open_fds() <= before  # sockets and pipes all closed


def test_client_half_close_still_gets_answer(path):
    client, far, g, up, down = start_pump()
    client.sendall(b"question")
    client.shutdown(stdsocket.SHUT_WR)
    assert read_all(far) == b"question"  # far sees EOF only after the data
    answer = os.urandom(300_000)
    far.sendall(answer)  # the direction towards the client still works
    far.close()
    assert read_all(client) == answer
    g.join(timeout=10)
    assert g.dead and (up.n, down.n) == (8, len(answer))


def test_server_first_then_server_half_close(path):
    client, far, g, up, down = start_pump()
    far.sendall(b"220 greeting\r\n")
    far.shutdown(stdsocket.SHUT_WR)
    assert read_all(client) == b"220 greeting\r\n"
    client.sendall(b"late data")  # client may still talk after the server finished
    client.close()
    assert read_all(far) == b"late data"
    g.join(timeout=10)
    assert g.dead and up.n == 9


def test_pending_bytes_go_first(path):
    client, far, g, up, down = start_pump(pending=b"early-")
    client.sendall(b"later")
    client.shutdown(stdsocket.SHUT_WR)
    assert read_all(far) == b"early-later"
    far.close()
    g.join(timeout=10)
    assert up.n == 11


def test_reset_ends_both_directions(path):
    before = open_fds()
    client, far, g, up, down = start_pump()
    client.sendall(b"x" * 1000)
    gevent.sleep(0.05)
    far.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    far.close()  # RST
    g.join(timeout=10)
    assert g.dead
    assert read_all(client) == b""
    client.close()
    assert open_fds() <= before


def test_killing_the_pump_closes_everything(path):
    before = open_fds()
    client, far, g, up, down = start_pump()
    client.sendall(b"hello")
    assert far.recv(5) == b"hello"
    g.kill(timeout=5)
    assert read_all(client) == b"" and read_all(far) == b""
    client.close()
    far.close()
    assert open_fds() <= before
