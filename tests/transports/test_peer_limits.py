"""Tunnel peer limits: token buckets and the handshake gate as plain objects; smux sessions and
WebSocket frame streams under them in-process, on real loopback TCP."""

from __future__ import annotations

import logging
import time

import gevent
import pytest

from ehco_gevent.guards.limits import Limits
from ehco_gevent.transports import websocket as wsproto
from ehco_gevent.transports.peer_limits import HandshakeGate, SessionGuard, TokenBucket
from ehco_gevent.transports.smux import FIN, NOP, PSH, SYN, Session, encode_frame
from ehco_gevent.transports.streams import SocketStream
from ehco_gevent.transports.wsstreams import FramedStream

from ..support import gevent_tcp_pair as tcp_pair, read_until_closed


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# -- plain objects -------------------------------------------------------------------------------
def test_token_bucket_spends_its_burst_then_refills_at_its_rate():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait() == pytest.approx(0.1)
    clock.now += 0.25  # 2.5 tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 100
    assert sum(bucket.take() for _ in range(10)) == 3  # never more than the burst


def test_handshake_gate_caps_slots_and_a_ticket_releases_once(caplog):
    gate = HandshakeGate("gate-test", "mtcp", lambda: 2)
    first, second = gate.enter("1.2.3.4:5"), gate.enter("1.2.3.4:6")
    with caplog.at_level(logging.INFO, "ehco.limits"):
        assert gate.enter("1.2.3.4:7") is None
        assert gate.enter("1.2.3.4:8") is None
    lines = [r.getMessage() for r in caplog.records if "gate-test" in r.getMessage()]
    assert len(lines) == 1 and "tunnel_max_handshakes" in lines[0]  # one line, not one each
    first.release()
    first.release()
    assert gate.in_progress == 1
    assert gate.enter("1.2.3.4:9") is not None and gate.in_progress == 2
    second.release()


# -- smux sessions under a guard -----------------------------------------------------------------
def guarded_session(label: str, **limits):
    a, b = tcp_pair()
    guard = SessionGuard(Limits(**limits), server=True, label=label, peer="peer:1")
    return Session(SocketStream(b), client=False, guard=guard), a


#: flood_hold_seconds in these tests: long enough to see, short enough to wait for
HOLD = 0.5


@pytest.fixture(autouse=True)
def short_hold(monkeypatch):
    from ehco_gevent.guards import limits

    monkeypatch.setattr(limits, "_CURRENT", Limits(flood_hold_seconds=HOLD))


def test_nop_flood_closes_the_session_with_one_line_and_holds_the_connection(caplog):
    session, peer = guarded_session("nop-test", empty_frames_per_second=100)
    with caplog.at_level(logging.INFO, "ehco.limits"):
        writer = gevent.spawn(peer.sendall, encode_frame(NOP, 0) * 100_000)
        with gevent.Timeout(5):
            while not session.closed:
                gevent.sleep(0.01)
        cut = time.monotonic()
        read_until_closed(peer)  # a reset, once the hold is over
        writer.kill()
    assert time.monotonic() - cut >= HOLD * 0.8  # the flooder waited instead of reconnecting
    lines = [r.getMessage() for r in caplog.records if "nop-test" in r.getMessage()]
    assert len(lines) == 1 and "empty_frames_per_second; last: NOP" in lines[0]


@pytest.mark.parametrize("frame, what", [
    (encode_frame(PSH, 999, b"data"), "PSH for an unknown or closed stream"),
    (encode_frame(FIN, 999), "FIN for an unknown or closed stream"),
])
def test_frames_for_unknown_streams_spend_the_budget(caplog, frame, what):
    session, peer = guarded_session(f"unknown-{what}", empty_frames_per_second=50)
    with caplog.at_level(logging.INFO, "ehco.limits"):
        peer.sendall(encode_frame(SYN, 3) + frame * 200)
        assert session.accept_stream() is not None
        read_until_closed(peer)
    assert any(what in r.getMessage() for r in caplog.records)


def test_reader_lets_others_run_while_a_peer_floods():
    """A ticking greenlet keeps ticking while the reader works through a socket full of NOPs
    (filled before the session starts, so a read never has to wait for data)."""
    import socket as stdsocket

    from gevent import socket as gsocket

    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    flooder = stdsocket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    listener.close()
    flooder.setblocking(False)
    block, sent = encode_frame(NOP, 0) * 8192, 0
    try:
        while True:
            sent += flooder.send(block)
    except BlockingIOError:
        pass  # the kernel's buffers are full
    flooder.close()
    guard = SessionGuard(Limits(empty_frames_per_second=1e9), server=True, label="fair-test")
    session = Session(SocketStream(conn), client=False, guard=guard)
    ticks = []

    def tick():
        while not session.closed:
            ticks.append(1)
            gevent.sleep(0)

    ticker = gevent.spawn(tick)
    with gevent.Timeout(60):
        ticker.join()
    frames = sent // 8
    assert frames > 100_000
    assert len(ticks) > frames // 1000  # turns all along, not one when the data ran out


def test_session_without_a_stream_closes_at_the_handshake_deadline(caplog):
    session, peer = guarded_session("deadline-test", smux_handshake_timeout=0.2)
    with caplog.at_level(logging.INFO, "ehco.limits"):
        read_until_closed(peer)
    assert session.closed
    assert any("no stream within 0.2 s (smux_handshake_timeout)" in r.getMessage()
               for r in caplog.records)


def test_session_that_carried_a_stream_outlives_the_handshake_deadline_until_idle():
    session, peer = guarded_session("idle-test", smux_handshake_timeout=0.1,
                                    smux_idle_timeout=0.5)
    peer.sendall(encode_frame(SYN, 3))
    stream = session.accept_stream()
    gevent.sleep(0.3)  # past the handshake deadline: a session with a stream stays
    assert not session.closed
    stream.close()
    peer.sendall(encode_frame(FIN, 3))
    read_until_closed(peer)  # closed once idle for smux_idle_timeout
    assert session.closed


def test_streams_beyond_the_cap_get_fin_and_do_not_reach_accept():
    session, peer = guarded_session("cap-test", smux_max_streams=3)
    peer.sendall(b"".join(encode_frame(SYN, 3 + 2 * i) for i in range(10)))
    accepted = [session.accept_stream() for _ in range(3)]
    assert [s.sid for s in accepted] == [3, 5, 7]
    data = b""
    while data.count(bytes([1, FIN])) < 7:
        data += peer.recv(4096)
    assert len(session.streams) == 3
    session.close()


def test_stream_rate_slows_the_peer_but_loses_no_stream(caplog):
    session, peer = guarded_session("rate-test", smux_streams_per_second=20)
    with caplog.at_level(logging.INFO, "ehco.limits"):
        peer.sendall(b"".join(encode_frame(SYN, 3 + 2 * i) for i in range(30)))
        with gevent.Timeout(20):
            sids = [session.accept_stream().sid for _ in range(30)]
    assert sids == [3 + 2 * i for i in range(30)]
    assert any("smux_streams_per_second" in r.getMessage() for r in caplog.records)
    session.close()


# -- WebSocket frames ------------------------------------------------------------------------------
def test_ping_flood_on_a_frame_stream_is_cut(monkeypatch, caplog):
    from ehco_gevent.guards import limits

    monkeypatch.setattr(limits, "_CURRENT", Limits(empty_frames_per_second=50,
                                                   flood_hold_seconds=HOLD))
    a, b = tcp_pair()
    stream = FramedStream(SocketStream(b), client=False, label="ping-test", peer="peer:2")
    ping = wsproto.encode_frame(wsproto.OP_PING, b"p", masked=True)
    a.sendall(ping * 5 + wsproto.encode_frame(wsproto.OP_BINARY, b"data", masked=True))
    buf = bytearray(16)
    assert stream.recv_into(buf) == 4 and bytes(buf[:4]) == b"data"  # a few pings are fine
    gevent.spawn(a.sendall, ping * 10_000)
    with caplog.at_level(logging.INFO, "ehco.limits"), pytest.raises(ConnectionResetError):
        while stream.recv_into(buf):
            pass
    assert any("ping-test" in r.getMessage() and "last: ping" in r.getMessage()
               for r in caplog.records)


# -- the config keys -------------------------------------------------------------------------------
def test_tunnel_limit_keys_have_defaults_and_bad_values_name_the_key():
    from ehco_gevent.config import ConfigError, parse_config

    cfg, warnings = parse_config({"smux_max_streams": 8, "smux_idle_timeout": 1.5}, "t.json")
    assert not warnings
    assert cfg.limits.smux_max_streams == 8 and cfg.limits.smux_idle_timeout == 1.5
    assert cfg.limits.empty_frames_per_second == 1000 and cfg.limits.tunnel_max_handshakes == 256
    assert cfg.limits.smux_idle_timeout < Limits().smux_idle_timeout
    assert Limits().smux_idle_timeout > 600  # longer than Go ehco keeps a pooled session
    with pytest.raises(ConfigError, match=r"t\.json.*smux_max_streams.*whole number"):
        parse_config({"smux_max_streams": 2.5}, "t.json")
    with pytest.raises(ConfigError, match=r"empty_frames_per_second.*greater than 0"):
        parse_config({"empty_frames_per_second": 0}, "t.json")
