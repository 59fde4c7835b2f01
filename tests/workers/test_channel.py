"""The supervisor-worker channel: the wire format as plain functions, then two Peers over a
real socketpair in this process (gevent sockets; the worker side's handlers are plain
functions here)."""

from __future__ import annotations

import os
import socket as _stdsocket

import gevent
import pytest
from gevent import socket

from ehco_gevent.config import RelayConfig
from ehco_gevent.workers.channel import (HEADER, MAX_MESSAGE, ChannelClosed, Decoder, Peer,
                                         ProtocolError, RemoteError, encode)


def test_messages_survive_any_split_of_the_byte_stream():
    messages = [{"id": 1, "op": "apply", "args": {"relays": [RelayConfig("127.0.0.1:1", label="a",
                                                                          tcp_remotes=("x:1",))]}},
                {"id": 2, "ok": True, "result": {("lbl-x:1", "tcp"): [3, 4]}},
                {"id": 3, "ok": True, "result": os.urandom(200_000)}]
    stream = b"".join(encode(m) for m in messages)
    for piece in (1, 7, 4096, len(stream)):
        decoder = Decoder()
        out = []
        for i in range(0, len(stream), piece):
            out += decoder.feed(stream[i:i + piece])
        assert out == messages


def test_a_length_over_the_limit_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="over the"):
        Decoder().feed(HEADER.pack(MAX_MESSAGE + 1) + b"x")


def test_garbage_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="undecodable"):
        Decoder().feed(HEADER.pack(5) + b"\x00junk")


def pair(handlers):
    a, b = socket.socketpair(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
    return Peer(a, name="supervisor end"), Peer(b, handlers, name="worker end")


def test_calls_get_their_own_replies_and_errors_come_back_by_kind():
    def slow_echo(value, delay):
        gevent.sleep(delay)
        return value

    def fail():
        raise KeyError("no such relay")

    client, server = pair({"echo": slow_echo, "fail": fail})
    jobs = [gevent.spawn(client.call, "echo", 5, value=i, delay=0.01 * (3 - i)) for i in range(3)]
    gevent.joinall(jobs, raise_error=True)
    assert [job.value for job in jobs] == [0, 1, 2]
    with pytest.raises(RemoteError) as err:
        client.call("fail", 5)
    assert err.value.kind == "KeyError" and "no such relay" in str(err.value)
    with pytest.raises(RemoteError, match="unknown operation 'nope'"):
        client.call("nope", 5)
    client.close()
    server.closed.wait(5)
    assert server.closed.is_set()


def test_a_call_pending_when_the_other_end_dies_fails_at_once():
    client, server = pair({"hang": lambda: gevent.sleep(60)})
    job = gevent.spawn(client.call, "hang", 30)
    gevent.sleep(0.05)
    server.sock.close()  # the worker process vanished
    with pytest.raises(ChannelClosed):
        job.get(timeout=5)
    with pytest.raises(ChannelClosed):
        client.call("hang", 1)
    server.close()


def test_no_answer_in_time_is_a_timeout_error():
    client, server = pair({"hang": lambda: gevent.sleep(60)})
    with pytest.raises(TimeoutError, match="hang"):
        client.call("hang", 0.1)
    client.close()
    server.close()
