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


def test_descriptors_travel_with_their_request_past_the_kernels_batch_limit():
    """A UDP socket handed over works on the other end (it is the same socket), and 300
    descriptors in one request (over the 253 one sendmsg may carry) arrive, in order, with
    the request that sent them; calls without any keep working around it."""
    held = socket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_DGRAM)
    held.bind(("127.0.0.1", 0))
    pipes = [os.pipe() for _ in range(150)]
    got = {}

    def take(tag, fds):
        got[tag] = fds
        return len(fds)

    client, server = pair({"take": take, "plain": lambda: "ok"})
    try:
        assert client.call("take", 5, tag="udp", pass_fds=[held.fileno()]) == 1
        assert client.call("plain", 5) == "ok"
        many = [fd for r, w in pipes for fd in (r, w)]
        assert client.call("take", 5, tag="many", pass_fds=many) == 300
        taken = socket.socket(fileno=got["udp"][0])
        with _stdsocket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_DGRAM) as sender:
            sender.sendto(b"to the held socket", held.getsockname())
        taken.settimeout(5)
        assert taken.recvfrom(100)[0] == b"to the held socket"
        taken.close()
        # each descriptor names the pipe end it was sent for: same inode, same direction
        for sent, received in zip(many, got["many"]):
            assert os.fstat(sent).st_ino == os.fstat(received).st_ino
        for r, w in pipes:
            os.write(w, b"x")
        r_copy, w_copy = got["many"][0], got["many"][1]
        assert os.read(r_copy, 1) == b"x"
        os.write(w_copy, b"y")
        assert os.read(pipes[0][0], 2) == b"y"  # the other x was read through the copy
        for fd in got["many"]:
            os.close(fd)
    finally:
        client.close()
        server.close()
        held.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)
