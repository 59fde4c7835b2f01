"""The penalty box: a cut connection stays open and unread for its hold, then is reset; the box
never holds more than its cap; our own code's close of the socket still happens at once."""

import os
import time

import gevent
import pytest

from ehco_gevent.guards.penalty import PenaltyBox, raw_socket
from ehco_gevent.transports.streams import SocketStream
from ehco_gevent.transports.wsstreams import FramedStream
from tests.support import gevent_tcp_pair


def own_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def outcome(sock, wait: float) -> str:
    """What the peer sees within ``wait`` s: 'open' (nothing), 'eof' or 'reset'."""
    sock.settimeout(wait)
    try:
        return "eof" if not sock.recv(1) else "data"
    except TimeoutError:
        return "open"
    except ConnectionResetError:
        return "reset"


def flooded_pair():
    """A connection whose server side has unread junk queued, as a flooder's would."""
    client, server = gevent_tcp_pair()
    client.sendall(b"\x01\x03\x00\x00\x00\x00\x00\x00" * 4096)
    gevent.sleep(0.01)
    return client, server


def test_a_held_connection_stays_open_then_is_reset():
    box = PenaltyBox()
    before = own_fds()
    client, server = flooded_pair()
    assert box.hold(SocketStream(server), seconds=0.4)
    server.close()  # the session's own close, at once
    start = time.monotonic()
    assert outcome(client, 0.25) == "open"  # no EOF, no reset while held
    assert outcome(client, 2.0) == "reset"
    assert 0.3 <= time.monotonic() - start <= 1.5
    assert len(box) == 0
    client.close()
    gevent.sleep(0)
    assert own_fds() == before  # the duplicate is gone


def test_the_box_resets_its_oldest_when_full():
    box = PenaltyBox(max_held=2)
    pairs = [flooded_pair() for _ in range(3)]
    for client, server in pairs:
        assert box.hold(SocketStream(server), seconds=30)
        server.close()
    assert len(box) == 2
    assert outcome(pairs[0][0], 1.0) == "reset"  # evicted when the third came
    assert outcome(pairs[1][0], 0.2) == "open"
    box.release_all()
    assert [outcome(c, 1.0) for c, _ in pairs[1:]] == ["reset", "reset"]
    for client, _ in pairs:
        client.close()


def test_raw_socket_is_found_under_wrapping_streams():
    client, server = gevent_tcp_pair()
    try:
        assert raw_socket(SocketStream(server)) is server
        framed = FramedStream(SocketStream(server), client=False)
        assert raw_socket(framed) is server
        assert raw_socket(object()) is None
    finally:
        client.close()
        server.close()


def test_a_closed_socket_is_not_held():
    client, server = gevent_tcp_pair()
    server.close()
    client.close()
    assert not PenaltyBox().hold(SocketStream(server), seconds=1)


@pytest.mark.parametrize("value", [0, -1, "10"])
def test_flood_hold_seconds_must_be_a_positive_number(value):
    from ehco_gevent.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="flood_hold_seconds"):
        parse_config({"flood_hold_seconds": value}, "t.json")
