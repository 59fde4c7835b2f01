"""The small helpers of the subscriptions service, with real sockets where they bind."""

from __future__ import annotations

import socket

from ehco_gevent.clash.subscriptions import allocate_port, one_line, request_host


def test_request_host():
    assert request_host("http://10.0.0.1:9000/") == "10.0.0.1"
    assert request_host("http://[2001:db8::1]:9000/") == "2001:db8::1"
    assert request_host("http://node.example/") == "node.example"


def test_one_line_is_ascii_and_single_line():
    assert one_line("a\n  b\tc é") == "a b c ?"


def test_allocate_port_is_free_for_tcp_and_udp_and_not_repeated():
    taken: set[int] = set()
    ports = [allocate_port("127.0.0.1", True, taken) for _ in range(5)]
    assert len(set(ports)) == 5 and set(ports) == taken
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", port))
            u.bind(("127.0.0.1", port))
