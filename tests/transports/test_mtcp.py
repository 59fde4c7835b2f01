"""mtcp end to end: two real ehco processes, raw -> (smux over TCP) -> raw."""

import os
import socket
import struct

import pytest

from ehco_gevent.transports.smux import FIN, MAX_STREAMS, PSH, SYN, FrameDecoder, encode_frame

from ..support import (EchoServer, QuittingEchoServer, check_server_closes_first, free_port, parallel_roundtrips,
                       read_until_closed, roundtrip, sha, wait_port)


@pytest.fixture
def chain(ehco, echo_server):
    a, b = free_port(), free_port()
    node_b = ehco("-l", f"127.0.0.1:{b}", "-lt", "mtcp", "-r", f"127.0.0.1:{echo_server.port}")
    wait_port(b)
    node_a = ehco("-l", f"127.0.0.1:{a}", "-tt", "mtcp", "-r", f"127.0.0.1:{b}")
    wait_port(a)
    return a, b, node_a, node_b


@pytest.mark.parametrize("size", [1, 64 * 1024, 16 * 1024 * 1024])
def test_payloads(chain, size):
    data = os.urandom(size)
    assert sha(roundtrip(chain[0], data)) == sha(data)


@pytest.mark.workers
def test_twenty_parallel_connections(chain):
    payloads = [os.urandom(50_000 + i) for i in range(20)]
    assert all(parallel_roundtrips(chain[0], payloads))


def mtcp_chain_to(ehco, server) -> int:
    """Two nodes, raw -> mtcp -> raw, in front of ``server``; returns the entry port."""
    a, b = free_port(), free_port()
    ehco("-l", f"127.0.0.1:{b}", "-lt", "mtcp", "-r", f"127.0.0.1:{server.port}")
    wait_port(b)
    ehco("-l", f"127.0.0.1:{a}", "-tt", "mtcp", "-r", f"127.0.0.1:{b}")
    wait_port(a)
    return a


def test_server_first_greeting(ehco):
    server = EchoServer(greeting=b"SSH-2.0-OpenSSH_9.2\r\n")
    try:
        a = mtcp_chain_to(ehco, server)
        assert roundtrip(a, b"after greeting", greeting=server.greeting) == b"after greeting"
    finally:
        server.close()


def test_server_closes_first_and_still_hears_the_client(ehco):
    """The final server says goodbye and shuts down first: the client gets goodbye and EOF over
    the smux stream, and what it sends after that still reaches the server."""
    server = QuittingEchoServer(greeting=b"220 ready\r\n")
    try:
        a = mtcp_chain_to(ehco, server)
        check_server_closes_first(a, server, server.greeting)
    finally:
        server.close()


def test_garbage_on_the_mtcp_port_leaves_others_serving(chain):
    a, b = chain[0], chain[1]
    with socket.create_connection(("127.0.0.1", b), timeout=5) as junk:
        junk.sendall(b"GET / HTTP/1.1\r\n\r\n" * 10)
        # not smux (an HTTP client: see test_sniff): closed, its bytes unread (so maybe a reset)
        assert read_until_closed(junk, timeout=5) == b""
    assert roundtrip(a, b"still fine") == b"still fine"


@pytest.mark.parametrize("header", [struct.pack("<BBHI", 2, PSH, 0, 3),   # unknown version
                                    struct.pack("<BBHI", 1, 9, 0, 3)],    # unknown command
                         ids=["version", "command"])
def test_bad_smux_header_closes_the_session_and_others_are_served(chain, header):
    a, b = chain[0], chain[1]
    with socket.create_connection(("127.0.0.1", b), timeout=5) as sock:
        sock.sendall(encode_frame(SYN, 3) + encode_frame(PSH, 3, b"x") + header)
        read_until_closed(sock)  # EOF or reset, not our timeout
    assert roundtrip(a, b"still fine") == b"still fine"


def test_frame_longer_than_its_data_then_peer_closes(chain):
    a, b = chain[0], chain[1]
    with socket.create_connection(("127.0.0.1", b), timeout=5) as sock:
        sock.sendall(encode_frame(SYN, 3) + struct.pack("<BBHI", 1, PSH, 1000, 3) + b"only ten b")
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)  # EOF or reset, not our timeout
    assert roundtrip(a, b"still fine") == b"still fine"


def test_ten_thousand_syns_are_refused_beyond_the_stream_limit(chain):
    a, b = chain[0], chain[1]
    with socket.create_connection(("127.0.0.1", b), timeout=20) as sock:
        sock.sendall(b"".join(encode_frame(SYN, 3 + 2 * i) for i in range(10_000)))
        decoder, fins = FrameDecoder(), set()
        while len(fins) < 10_000 - MAX_STREAMS:
            chunk = sock.recv(65536)
            assert chunk, "session closed"
            fins.update(sid for cmd, sid, _ in decoder.feed(chunk) if cmd == FIN)
        assert min(fins) == 3 + 2 * MAX_STREAMS
        assert roundtrip(a, b"served meanwhile") == b"served meanwhile"
