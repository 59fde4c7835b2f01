"""smux v1: the codec as pure functions (fuzzed), sessions in-process on real loopback TCP."""

import os
import struct

import gevent
import pytest
from gevent import socket
from hypothesis import given, settings
from hypothesis import strategies as st

from ehco_gevent.transports import smux
from ehco_gevent.transports.smux import (FIN, NOP, PSH, SEND_FRAME, SYN, FrameDecoder, Session,
                              SessionPool, SmuxError, encode_data, encode_frame, serve_session)
from ehco_gevent.transports.streams import SocketStream

from ..support import gevent_tcp_pair as tcp_pair


# -- codec ---------------------------------------------------------------------------------------
def test_header_layout_is_little_endian():
    assert encode_frame(PSH, 0x01020304, b"ab") == bytes([1, 2, 2, 0, 4, 3, 2, 1]) + b"ab"
    assert encode_frame(SYN, 3) == bytes([1, 0, 0, 0, 3, 0, 0, 0])


def test_large_data_is_split_at_go_frame_size():
    data = os.urandom(SEND_FRAME * 2 + 5)
    frames = FrameDecoder().feed(encode_data(7, data))
    assert [len(p) for _, _, p in frames] == [SEND_FRAME, SEND_FRAME, 5]
    assert b"".join(p for _, _, p in frames) == data and {s for _, s, _ in frames} == {7}


def test_non_psh_frames_carry_no_payload_whatever_their_length_says():
    # Go reads the payload of PSH only; a SYN claiming 5 bytes is followed by the next header
    raw = struct.pack("<BBHI", 1, SYN, 5, 3) + encode_frame(PSH, 3, b"hi")
    assert FrameDecoder().feed(raw) == [(SYN, 3, b""), (PSH, 3, b"hi")]


@pytest.mark.parametrize("raw, message", [
    (struct.pack("<BBHI", 2, PSH, 0, 3), "version"),
    (struct.pack("<BBHI", 1, 9, 0, 3), "command"),
])
def test_bad_headers_are_protocol_errors(raw, message):
    with pytest.raises(SmuxError, match=message):
        FrameDecoder().feed(raw)


frames_strategy = st.lists(st.tuples(
    st.sampled_from([SYN, FIN, PSH, NOP]), st.integers(0, 2**32 - 1), st.binary(max_size=300)),
    max_size=20)


@pytest.mark.parametrize("views", [False, True], ids=["copies", "views"])
@settings(max_examples=200, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(1, 400), max_size=30))
def test_round_trip_through_any_split(views, frames, cuts):
    """Copies, or views of the fed bytes (the session's bulk reads): the same frames."""
    wire = b"".join(encode_frame(c, s, p if c == PSH else b"") for c, s, p in frames)
    decoder, out, pos = FrameDecoder(), [], 0
    for cut in cuts + [len(wire)]:
        out += [(c, s, bytes(p)) for c, s, p in decoder.iter_feed(wire[pos:pos + cut], views)]
        pos += cut
    out += decoder.feed(wire[pos:])
    assert out == [(c, s, p if c == PSH else b"") for c, s, p in frames]
    assert not decoder.partial


def test_views_are_cut_from_the_fed_buffer_and_a_finished_tail_has_its_own():
    """No copy for a frame inside the fed bytes; a frame finished from an earlier feed's tail
    gets a buffer of its own, so the fed buffer can be reused at once for that one."""
    first, second = os.urandom(1000), os.urandom(3000)
    wire = encode_frame(PSH, 3, first) + encode_frame(PSH, 5, second)
    decoder = FrameDecoder()
    buf = bytearray(wire[:1500])
    (_, sid, payload), = decoder.iter_feed(buf, True)
    assert sid == 3 and payload.obj is buf and bytes(payload) == first
    rest = bytearray(wire[1500:])
    (_, sid, payload), = decoder.iter_feed(rest, True)
    rest[:] = bytes(len(rest))  # the caller reuses its buffer
    assert sid == 5 and bytes(payload) == second and not decoder.partial


def reference_decode(data: bytes):
    """The frame format of design.md 4 read the plainest way: (frames, unread tail), or
    (frames before the bad header, None) when a header is invalid."""
    frames, pos = [], 0
    while len(data) - pos >= 8:
        version, cmd, length, sid = struct.unpack_from("<BBHI", data, pos)
        if version != 1 or cmd not in (SYN, FIN, PSH, NOP):
            return frames, None
        if cmd == PSH:
            if len(data) - pos - 8 < length:
                break
            frames.append((cmd, sid, data[pos + 8:pos + 8 + length]))
            pos += 8 + length
        else:  # SYN, FIN and NOP carry no payload whatever their length field says (as Go)
            frames.append((cmd, sid, b""))
            pos += 8
    return frames, data[pos:]


frame_bytes = st.one_of(  # mostly well-formed frames, some garbage
    st.builds(lambda c, sid, p: encode_frame(c, sid, p), st.sampled_from([SYN, FIN, PSH, NOP]),
              st.integers(0, 2**32 - 1), st.binary(max_size=40)),
    st.binary(min_size=1, max_size=12))


@settings(max_examples=400, deadline=None)
@given(st.lists(frame_bytes, max_size=8).map(b"".join), st.integers(0, 400))
def test_any_bytes_decode_as_the_reference_says(data, cut):
    """Whatever arrives, in whatever pieces: the frames the format defines, a buffered tail
    for an unfinished frame, or SmuxError after the frames before a bad header. Nothing else."""
    expected, tail = reference_decode(data)
    decoder, got = FrameDecoder(), []
    cut = min(cut, len(data))
    try:
        for piece in (data[:cut], data[cut:]):
            got.extend(decoder.iter_feed(piece))
    except SmuxError:
        assert tail is None and got == expected
    else:
        assert tail is not None and got == expected
        assert decoder.partial == bool(tail)


# -- sessions ------------------------------------------------------------------------------------


def read_all(stream):
    out = bytearray()
    buf = bytearray(65536)
    while n := stream.recv_into(buf):
        out += buf[:n]
    return bytes(out)


def echo_handler(stream):
    data = read_all(stream)
    stream.sendall(data)
    stream.shutdown_write()


@pytest.fixture
def echo_session():
    """A client Session whose server side echoes each stream (after the client's FIN)."""
    a, b = tcp_pair()
    server = gevent.spawn(serve_session, SocketStream(b), echo_handler)
    client = Session(SocketStream(a), client=True)
    yield client
    client.close()
    server.join(timeout=5)
    assert server.dead


def test_many_streams_and_ids(echo_session):
    payloads = [os.urandom(i * 1000 + 1) for i in range(30)]

    def one(data):
        stream = echo_session.open_stream()
        stream.sendall(data)
        stream.shutdown_write()  # half-close; the answer still arrives
        back = read_all(stream)
        stream.close()
        return stream.sid, back == data

    results = [g.get() for g in [gevent.spawn(one, p) for p in payloads]]
    assert all(ok for _, ok in results)
    assert sorted(sid for sid, _ in results) == list(range(3, 3 + 2 * 30, 2))  # odd, from 3


def test_big_payload_both_ways(echo_session):
    data = os.urandom(8 * 1024 * 1024)  # more than the 4 MiB session buffer
    stream = echo_session.open_stream()
    writer = gevent.spawn(lambda: (stream.sendall(data), stream.shutdown_write()))
    assert read_all(stream) == data
    writer.get(timeout=30)


def raw_peer():
    """A Session on one side, a raw socket we write frames into on the other."""
    a, b = tcp_pair()
    session = Session(SocketStream(b), client=False, stall_timeout=0.5, max_streams=16)
    return session, a


def test_unknown_command_closes_session():
    session, peer = raw_peer()
    peer.sendall(encode_frame(SYN, 3) + struct.pack("<BBHI", 1, 7, 0, 3))
    stream = session.accept_stream()
    assert stream is not None
    gevent.sleep(0.1)
    assert session.closed and stream.recv_into(bytearray(10)) == 0
    assert peer.recv(10) == b""  # the connection is closed too


def test_frame_longer_than_its_data_closes_without_hanging():
    session, peer = raw_peer()
    peer.sendall(encode_frame(SYN, 3) + struct.pack("<BBHI", 1, PSH, 1000, 3) + b"only ten b")
    stream = session.accept_stream()
    with gevent.Timeout(5):
        assert stream.recv_into(bytearray(10)) == 0  # session closed after the stall timeout
    assert session.closed


def test_data_for_unknown_stream_is_dropped_and_fin_delivers_eof():
    session, peer = raw_peer()
    peer.sendall(encode_frame(PSH, 99, b"nobody") + encode_frame(SYN, 3)
                 + encode_frame(PSH, 3, b"hello") + encode_frame(FIN, 3) + encode_frame(NOP, 0))
    stream = session.accept_stream()
    assert read_all(stream) == b"hello"
    stream.sendall(b"still writable after the peer's FIN")
    stream.close()
    peer.settimeout(5)
    got = b""
    while len(got) < 8 + 35 + 8:
        got += peer.recv(4096)
    assert FrameDecoder().feed(got) == [(PSH, 3, b"still writable after the peer's FIN"),
                                        (FIN, 3, b"")]
    session.close()


def _greeter(session):
    """A server-first service on each stream the peer opens: it speaks before it reads."""
    stream = session.accept_stream()
    stream.sendall(b"220 hello")
    stream.shutdown_write()


def _assert_greeted(peer, session):
    """The peer got the greeting and the FIN on stream 3, nothing else; closes the session."""
    got = b""
    peer.settimeout(5)
    while len(got) < 8 + 9 + 8:
        got += peer.recv(4096)
    assert FrameDecoder().feed(got) == [(PSH, 3, b"220 hello"), (FIN, 3, b"")]
    session.close()


def test_first_answer_waits_until_the_peer_has_spoken(monkeypatch):
    """Go's smux registers a stream only after writing its SYN and drops what arrives between:
    our first frame on a stream the peer opened waits until the peer has sent on it."""
    monkeypatch.setattr(smux, "PEER_REGISTER_GRACE", 30)
    session, peer = raw_peer()
    greeter = gevent.spawn(_greeter, session)
    peer.sendall(encode_frame(SYN, 3))
    for _ in range(20):  # let the session and the greeter run as far as they can
        gevent.sleep(0)
    assert not greeter.dead  # held in its first write
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)  # nothing on the wire yet
    peer.setblocking(True)
    peer.sendall(encode_frame(PSH, 3, b"EHLO"))  # the peer speaks: it has the stream now
    greeter.get(timeout=5)
    _assert_greeted(peer, session)


def test_first_answer_to_a_silent_peer_goes_after_the_grace():
    session, peer = raw_peer()
    greeter = gevent.spawn(_greeter, session)
    peer.sendall(encode_frame(SYN, 3))
    greeter.get(timeout=5)
    _assert_greeted(peer, session)


def test_ten_thousand_syns_are_bounded():
    session, peer = raw_peer()
    peer.sendall(b"".join(encode_frame(SYN, 3 + 2 * i) for i in range(10_000)))
    refused = bytearray()
    peer.settimeout(5)
    while len(refused) < (10_000 - 16) * 8:
        refused += peer.recv(65536)
    frames = FrameDecoder().feed(refused)
    assert len(frames) == 10_000 - 16 and {c for c, _, _ in frames} == {FIN}
    assert session.num_streams == 16 and not session.closed
    session.close()


def test_slow_consumer_stops_reading_at_the_buffer_limit():
    a, b = tcp_pair()
    session = Session(SocketStream(b), client=False, max_buffer=256 * 1024)
    a.sendall(encode_frame(SYN, 3))
    stream = session.accept_stream()
    data = os.urandom(48 * 1024 * 1024)  # more than the kernel's socket buffers hold
    writer = gevent.spawn(a.sendall, encode_data(3, data))
    gevent.sleep(0.5)
    assert not writer.dead  # the peer is blocked: we stopped reading the socket
    assert session._buffered <= 256 * 1024 + 32768  # at most one frame over the limit
    got = bytearray()
    buf = bytearray(65536)
    while len(got) < len(data):
        got += buf[:stream.recv_into(buf)]
    assert bytes(got) == data
    writer.get(timeout=10)
    session.close()


def test_pool_reuses_a_session_for_five_streams():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    servers = []

    def accept_loop():
        while True:
            sock, _ = listener.accept()
            servers.append(gevent.spawn(serve_session, SocketStream(sock), echo_handler))

    acceptor = gevent.spawn(accept_loop)
    dials = []

    def dial(remote):
        dials.append(remote)
        return SocketStream(socket.create_connection(listener.getsockname()))

    pool = SessionPool(dial, gc_interval=3600)
    streams = [pool.open_stream("r") for _ in range(12)]
    assert len(dials) == 3  # 5 + 5 + 2
    for i, stream in enumerate(streams):
        stream.sendall(b"%d" % i)
        stream.shutdown_write()
        assert read_all(stream) == b"%d" % i
        stream.close()
    pool.open_stream("r").close()  # streams closed: the first session serves again
    assert len(dials) == 3
    assert pool.collect() == 2  # idle sessions beyond one per remote are closed
    assert len(pool.sessions["r"]) == 1
    gevent.wait(servers, count=2, timeout=10)  # their server ends saw the close
    assert sum(1 for g in servers if g.dead) == 2
    stream = pool.open_stream("r")  # the idle one kept serves the next stream
    stream.sendall(b"kept")
    stream.shutdown_write()
    assert read_all(stream) == b"kept"
    stream.close()
    assert len(dials) == 3
    pool.max_age = 0  # every session is now too old to serve and has no live stream
    pool.collect()
    assert pool.sessions == {}
    pool.close()
    acceptor.kill()
    listener.close()
    gevent.killall(servers)


def test_frames_go_out_gathered_and_parse_back_exactly(monkeypatch):
    """A stream's data leaves as PSH frames in gathering writes (no join copy): the bytes on
    the wire decode to the same payload, split at SEND_FRAME."""
    writes = []
    gather = SocketStream.sendall_parts
    monkeypatch.setattr(SocketStream, "sendall_parts",
                        lambda self, parts: writes.append(len(parts)) or gather(self, parts))
    a, b = tcp_pair()
    session = Session(SocketStream(a), client=True)
    data = os.urandom(5 * SEND_FRAME + 123)
    stream = session.open_stream()
    gevent.spawn(stream.sendall, data).get(timeout=10)
    decoder = FrameDecoder()
    frames = []
    b.settimeout(5)
    while sum(len(p) for c, _, p in frames if c == PSH) < len(data):
        frames += decoder.feed(b.recv(65536))
    pushes = [p for c, sid, p in frames if c == PSH and sid == stream.sid]
    assert b"".join(pushes) == data and max(map(len, pushes)) == SEND_FRAME
    assert writes == [12]  # 6 headers and 6 payload views in one gathering write
    session.close()
    b.close()


def test_recv_views_hands_over_the_queued_payload_and_frees_its_room(echo_session):
    """What the pump's gather loop reads: the queued payloads as they are, the session's
    buffer accounting given back, [] at EOF."""
    stream = echo_session.open_stream()
    data = os.urandom(300_000)
    stream.sendall(data)
    stream.shutdown_write()
    got = b""
    while views := stream.recv_views(64 * 1024):
        got += b"".join(views)
    assert got == data and echo_session._buffered == 0


def test_bulk_reads_lend_their_buffer_and_get_it_back_when_the_streams_caught_up(echo_session):
    """Payloads of bulk reads are views of the session's read buffer; once the consumer has
    everything the buffers go back (an idle session pins none), and the bytes are exact."""
    data = os.urandom(6 * 1024 * 1024)
    stream = echo_session.open_stream()
    lent_seen = []
    writer = gevent.spawn(lambda: (stream.sendall(data), stream.shutdown_write()))
    got = bytearray()
    while views := stream.recv_views(256 * 1024):
        lent_seen.append(len(echo_session.lent))
        got += b"".join(views)
        del views
    writer.get(timeout=30)
    assert bytes(got) == data
    assert max(lent_seen) > 0  # the reader did lend (else this test proves nothing)
    stream.wait_readable()  # at EOF: returns at once, and settles on the way
    assert len(echo_session.lent) == 0  # an idle session pins no read buffer
    echo_session.close()
    assert len(echo_session.lent) == 0


def test_a_stream_that_reads_late_gets_its_bytes_intact(echo_session):
    """Two streams share the session's read buffers: one is drained at once, the other only
    after megabytes went by. A buffer still viewed by the late stream must never be reused
    (reused memory would show as different bytes); past LEND_MAX the reader copies."""
    a, b = echo_session.open_stream(), echo_session.open_stream()
    early, late = os.urandom(12 * 1024 * 1024), os.urandom(256 * 1024)
    a.sendall(early)
    a.shutdown_write()
    b.sendall(late)
    b.shutdown_write()
    got_a = read_all(a)  # b's echo arrives interleaved and waits unread meanwhile
    assert got_a == early
    assert read_all(b) == late
