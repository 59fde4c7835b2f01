"""TLSStream and FramedStream in-process, over real loopback TCP: half-close in every order."""

import os

import gevent
import pytest

from ehco_gevent.transports import websocket as wsproto
from ehco_gevent.transports.streams import SocketStream
from ehco_gevent.transports.tls import client_context, server_context
from ehco_gevent.transports.wsstreams import FramedStream, TLSStream

from ..support import gevent_tcp_pair as tcp_pair




def read_all(stream) -> bytes:
    out = bytearray()
    buf = bytearray(65536)
    while n := stream.recv_into(buf):
        out += buf[:n]
    return bytes(out)


def tls_pair():
    a, b = tcp_pair()
    server = gevent.spawn(TLSStream.handshake, b, server_context(), True)
    client = TLSStream.handshake(a, client_context(), False, "ehco")
    return client, server.get(timeout=10)


def framed_pair():
    a, b = tcp_pair()
    return FramedStream(SocketStream(a), client=True), FramedStream(SocketStream(b), client=False)


PAIRS = {"tls": tls_pair, "frames": framed_pair,
         "frames-over-tls": lambda: tuple(FramedStream(s, client=c) for s, c in zip(tls_pair(), (True, False)))}


@pytest.mark.parametrize("make", PAIRS.values(), ids=PAIRS.keys())
def test_answer_after_the_request_half_close(make):
    """The client sends, shuts down writing; the server reads to EOF, then answers in full."""
    client, server = make()
    request, answer = os.urandom(1024 * 1024), os.urandom(3 * 1024 * 1024)

    def serve():
        got = read_all(server)
        server.sendall(answer)
        server.shutdown_write()
        return got

    g = gevent.spawn(serve)
    client.sendall(request)
    client.shutdown_write()
    with gevent.Timeout(20):
        assert read_all(client) == answer
        assert g.get() == request
    client.close()
    server.close()


@pytest.mark.parametrize("make", PAIRS.values(), ids=PAIRS.keys())
def test_half_close_while_the_answer_is_streaming(make):
    """The client shuts down writing with answer bytes already waiting unread (TLS: the
    close_notify must not make OpenSSL drop what follows)."""
    client, server = make()
    answer = os.urandom(4 * 1024 * 1024)

    def serve():
        server.sendall(answer[:100_000])
        gevent.sleep(0.1)
        server.sendall(answer[100_000:])
        got = read_all(server)  # the client's end of writing arrives in the middle
        server.shutdown_write()
        return got

    g = gevent.spawn(serve)
    first = bytearray(1000)
    n = client.recv_into(first)
    assert n > 0
    gevent.sleep(0.05)  # more has arrived unread
    client.sendall(b"last words")
    client.shutdown_write()
    with gevent.Timeout(20):
        rest = read_all(client)
        assert bytes(first[:n]) + rest == answer
        assert g.get() == b"last words"
    client.close()
    server.close()


@pytest.mark.parametrize("make", PAIRS.values(), ids=PAIRS.keys())
def test_writing_after_shutdown_write_is_refused(make):
    client, server = make()
    client.shutdown_write()
    client.shutdown_write()  # idempotent
    with pytest.raises(BrokenPipeError):
        client.sendall(b"x")
    with gevent.Timeout(5):
        assert server.recv_into(bytearray(10)) == 0
    client.close()
    server.close()


def test_frames_close_frame_only_after_both_directions():
    a, b = tcp_pair()
    client = FramedStream(SocketStream(a), client=True)
    client.sendall(b"hi")
    client.shutdown_write()
    b.settimeout(5)
    dec = wsproto.FrameDecoder(from_client=True)
    frames = []
    while len(frames) < 2:
        frames += dec.feed(b.recv(4096))
    assert frames == [(True, wsproto.OP_BINARY, b"hi"), (True, wsproto.OP_BINARY, b"")]
    # the peer answers, pings, and only then ends: our close frame follows its end marker
    b.sendall(wsproto.encode_frame(wsproto.OP_BINARY, b"answer")
              + wsproto.encode_frame(wsproto.OP_PING, b"p")
              + wsproto.encode_frame(wsproto.OP_BINARY, b""))
    with gevent.Timeout(5):
        assert read_all(client) == b"answer"
    frames = []
    while len(frames) < 2:
        frames += dec.feed(b.recv(4096))
    assert frames == [(True, wsproto.OP_PONG, b"p"), (True, wsproto.OP_CLOSE, b"\x03\xe8")]
    client.close()
    b.close()


def test_frames_peer_close_frame_is_eof_and_bad_frames_reset():
    a, b = tcp_pair()
    server = FramedStream(SocketStream(b), client=False)
    a.sendall(wsproto.encode_frame(wsproto.OP_BINARY, b"data", masked=True)
              + wsproto.encode_frame(wsproto.OP_CLOSE, b"\x03\xe8", masked=True))
    with gevent.Timeout(5):
        assert read_all(server) == b"data"
    server.close()
    a.close()

    a, b = tcp_pair()
    server = FramedStream(SocketStream(b), client=False)
    a.sendall(wsproto.encode_frame(wsproto.OP_BINARY, b"unmasked from a client"))
    with gevent.Timeout(5), pytest.raises(ConnectionResetError):
        server.recv_into(bytearray(100))
    server.close()
    a.close()


def test_frames_pending_bytes_from_the_handshake_are_decoded():
    a, b = tcp_pair()
    early = wsproto.encode_frame(wsproto.OP_BINARY, b"greeting", masked=False)
    client = FramedStream(SocketStream(a), client=True, pending=early)
    b.sendall(wsproto.encode_frame(wsproto.OP_BINARY, b" and more") + wsproto.encode_frame(wsproto.OP_BINARY, b""))
    with gevent.Timeout(5):
        assert read_all(client) == b"greeting and more"
    client.close()
    b.close()


def test_frames_large_writes_are_split_below_the_peers_limit():
    """One write bigger than the 16 MiB a decoder accepts still arrives (in 1 MiB frames)."""
    a, b = tcp_pair()
    client = FramedStream(SocketStream(a), client=True)
    server = FramedStream(SocketStream(b), client=False)
    data = os.urandom(17 * 1024 * 1024 + 5)
    writer = gevent.spawn(lambda: (client.sendall(data), client.shutdown_write()))
    with gevent.Timeout(30):
        assert read_all(server) == data
    writer.get()
    client.close()
    server.close()

    a, b = tcp_pair()
    client = FramedStream(SocketStream(a), client=True)
    client.sendall(memoryview(os.urandom(2 * FramedStream.SEND_FRAME + 3)))
    client.shutdown_write()
    b.settimeout(5)
    dec, frames = wsproto.FrameDecoder(from_client=True), []
    while len(frames) < 4:
        frames += dec.feed(b.recv(1 << 20))
    assert [len(p) for _, _, p in frames] == [FramedStream.SEND_FRAME] * 2 + [3, 0]
    client.close()
    b.close()


def test_frames_a_burst_of_pings_gets_one_pong_for_the_latest():
    """RFC 6455 5.5.3 lets pings not answered yet share one pong: a ping flood costs one write
    per read, not one per ping."""
    a, b = tcp_pair()
    server = FramedStream(SocketStream(b), client=False)
    pings = b"".join(wsproto.encode_frame(wsproto.OP_PING, b"p%d" % i, masked=True)
                     for i in range(5))
    a.sendall(pings + wsproto.encode_frame(wsproto.OP_BINARY, b"data", masked=True))
    buf = bytearray(16)
    with gevent.Timeout(5):
        assert server.recv_into(buf) == 4 and bytes(buf[:4]) == b"data"
    a.settimeout(5)
    frames = wsproto.FrameDecoder(from_client=False).feed(a.recv(4096))
    assert frames == [(True, wsproto.OP_PONG, b"p4")]
    a.close()
    server.close()
