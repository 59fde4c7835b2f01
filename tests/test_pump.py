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
    epoll fds don't count, nor the empty pipes kept in the pump's pool for the next connection,
    and other tests' leftovers closing meanwhile don't matter: callers check that nothing *new*
    is open (``open_fds() <= before``)."""
    found = set()
    spare = {str(fd) for fd in pump_mod.pipes.fds()}
    for fd in set(os.listdir("/proc/self/fd")) - spare:
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


def test_idle_connection_holds_no_pipe_or_buffer(path):
    """Between bursts a connection holds its two sockets only: the pipe (splice) or the read
    buffer (copy) went back to the pool, empty."""
    before = open_fds()
    client, far, g, up, down = start_pump()
    client.sendall(b"burst")
    assert far.recv(5) == b"burst"
    far.sendall(b"reply")
    assert client.recv(5) == b"reply"
    gevent.sleep(0.05)
    in_use = {target for fd, target in open_fds() - before if target.startswith("pipe:")}
    assert not in_use  # spare pipes in the pool are not counted by open_fds
    # the buffers and pipes are back for the next burst: the pump still works
    client.sendall(b"again")
    assert far.recv(5) == b"again"
    g.kill(timeout=5)


class EndlessSource:
    """A stream that always has data, up to ``total`` bytes (a source the kernel never makes
    wait, as a fast peer can be)."""

    def __init__(self, total):
        self.left = total

    def recv_into(self, buf):
        n = min(len(buf), self.left)
        self.left -= n
        return n


class Sink:
    """A stream that takes everything at once, noting how far a ticker greenlet got."""

    def __init__(self, ticker):
        self.ticker = ticker
        self.ticks_seen = []

    def sendall(self, data):
        self.ticks_seen.append(self.ticker.ticks)


class Ticker:
    def __init__(self):
        self.ticks = 0
        self.glet = gevent.spawn(self.run)

    def run(self):
        while True:
            self.ticks += 1
            gevent.sleep(0)


def test_copy_loop_yields_to_others_while_data_keeps_coming():
    ticker = Ticker()
    sink = Sink(ticker)
    total = 8 * pump_mod.FAIR_SHARE
    counted = Counter()
    pump_mod.copy_loop(EndlessSource(total), sink, counted)
    ticker.glet.kill()
    assert counted.n == total
    assert sink.ticks_seen[-1] >= 4  # the other greenlet ran during the copy, several times


def test_splice_loop_yields_to_others_while_data_keeps_coming(monkeypatch):
    if not pump_mod.HAVE_SPLICE:
        pytest.skip("no os.splice on this platform")
    monkeypatch.setattr(pump_mod, "FAIR_SHARE", 16 * 1024)
    monkeypatch.setattr(pump_mod, "PIPE_SIZE", 64 * 1024)  # 512 KiB come in several fills
    monkeypatch.setattr(pump_mod, "pipes", pump_mod.PipePool())
    client, a = tcp_pair()
    b, far = tcp_pair()
    data = os.urandom(512 * 1024)
    for s in (client, a, b, far):  # room for all of it in the kernel: no EAGAIN either way
        s.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, 4 << 20)
        s.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4 << 20)
    client.sendall(data)
    client.shutdown(stdsocket.SHUT_WR)
    ticker = Ticker()
    counts = []
    pump_mod.splice_loop(a, b, lambda n: counts.append(ticker.ticks))
    ticker.glet.kill()
    assert sum(1 for _ in counts) >= 1
    pump_mod.pipes.clear()
    assert counts[-1] >= 2  # the ticker ran between chunks, before the source ran dry
    b.shutdown(stdsocket.SHUT_WR)
    assert read_all(far) == data
    for s in (client, a, b, far):
        s.close()


def test_gather_loop_moves_an_smux_stream_to_a_socket_exactly(monkeypatch):
    """An smux stream (recv_views) to a plain socket (sendall_parts): the payload goes out in
    gathering writes, arrives identical and is counted to the byte, then EOF."""
    from ehco_gevent.transports.smux import Session, serve_session

    gathered = []
    loop = pump_mod.gather_loop
    monkeypatch.setattr(pump_mod, "gather_loop", lambda *a: gathered.append(1) or loop(*a))

    a, b = tcp_pair()
    out_a, out_b = tcp_pair()
    data = os.urandom(3 * 1024 * 1024 + 5)
    counted = Counter()

    def handler(stream):
        pump_mod.one_direction(stream, SocketStream(out_a), counted)

    server = gevent.spawn(serve_session, SocketStream(b), handler)
    client = Session(SocketStream(a), client=True)
    stream = client.open_stream()
    gevent.spawn(lambda: (stream.sendall(data), stream.shutdown_write()))
    assert hashlib.sha256(read_all(out_b)).digest() == hashlib.sha256(data).digest()
    assert counted.n == len(data) and gathered == [1]
    client.close()
    server.join(timeout=5)
    out_b.close()
