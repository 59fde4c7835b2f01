"""The PROXY protocol codec: byte strings from the spec's examples, round trips through
encode/parse for any address (hypothesis), exact reads (never a byte past the header), and
refusal of everything that is not a header."""

from __future__ import annotations

import ipaddress
import struct

import gevent
import pytest
from hypothesis import given, settings, strategies as st

from ehco_gevent.transports import proxy_protocol as pp
from ehco_gevent.transports.streams import SocketStream
from tests.support import gevent_tcp_pair

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def test_v1_tcp4_and_tcp6_lines():
    header, used = pp.parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /")
    assert (header.version, header.family, header.src, header.dst) == (
        1, "tcp4", ("192.0.2.1", 56324), ("198.51.100.2", 443))
    assert used == len(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n")
    header, _ = pp.parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n")
    assert header.src == ("2001:db8::1", 1) and header.dst == ("2001:db8::2", 65535)


def test_v1_unknown_carries_no_address():
    header, used = pp.parse(b"PROXY UNKNOWN\r\n")
    assert header.src is None and used == 15
    header, _ = pp.parse(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
    assert header.family == "unknown" and header.src is None


def test_v2_tcp4_tcp6_local_and_tlvs():
    body = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 56324, 443)
    tlv = b"\x04\x00\x03abc"  # a NOOP TLV: skipped
    data = SIG + b"\x21\x11" + struct.pack("!H", len(body + tlv)) + body + tlv + b"payload"
    header, used = pp.parse(data)
    assert header.src == ("192.0.2.1", 56324) and header.dst == ("198.51.100.2", 443)
    assert data[used:] == b"payload"
    six = ipaddress.IPv6Address("2001:db8::7").packed + ipaddress.IPv6Address("::1").packed
    header, _ = pp.parse(SIG + b"\x21\x21\x00\x24" + six + struct.pack("!HH", 9, 10))
    assert header.src == ("2001:db8::7", 9) and header.family == "tcp6"
    header, used = pp.parse(SIG + b"\x20\x00\x00\x00")
    assert header.local and header.src is None and used == 16


@pytest.mark.parametrize("data, reason", [
    (b"GET / HTTP/1.1\r\n\r\n", "unexpected first bytes"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed"),
    (b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "invalid address"),
    (b"PROXY TCP4 ::1 ::1 1 2\r\n", "not an IPv4"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "invalid port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "invalid port"),
    (b"PROXY " + b"x" * 120, "longer than 107"),
    (SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12, "unsupported version"),
    (SIG + b"\x22\x11\x00\x0c" + b"\x00" * 12, "unsupported command"),
    (SIG + b"\x21\x99\x00\x0c" + b"\x00" * 12, "unsupported family"),
    (SIG + b"\x21\x11\x00\x04" + b"\x00" * 4, "needs 12 address bytes"),
    (SIG + b"\x21\x11\xff\xff", "exceeds"),
])
def test_bad_headers_are_refused_with_a_reason(data, reason):
    with pytest.raises(pp.ProxyProtocolError, match=reason):
        pp.parse(data)


def test_missing_counts_exactly_what_a_header_still_needs():
    assert pp.missing(b"") == pp.MIN_HEADER
    assert pp.missing(b"PROXY") == pp.MIN_HEADER - 5
    assert pp.missing(SIG + b"\x21\x11\x00") == 1
    assert pp.missing(SIG + b"\x21\x11\x00\x0c") == 12
    line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    assert pp.missing(line[:-2]) == 2 and pp.missing(line[:-1]) == 1 and pp.missing(line) == 0


def test_encode_mixed_families_maps_ipv4_into_ipv6():
    line = pp.encode(1, ("10.0.0.1", 5), ("::1", 6))
    assert line == b"PROXY TCP6 ::ffff:a00:1 ::1 5 6\r\n"
    assert pp.encode(1, None, None) == b"PROXY UNKNOWN\r\n"
    assert pp.parse(pp.encode(2, None, None))[0].local


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 2]), st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)),
       ports, ports, st.binary(max_size=64))
def test_round_trip_any_address(version, ips, sport, dport, rest):
    data = pp.encode(version, (ips[0], sport), (ips[1], dport))
    header, used = pp.parse(data + rest)
    assert used == len(data)
    assert header.src == (str(ipaddress.ip_address(ips[0])), sport)
    assert header.dst == (str(ipaddress.ip_address(ips[1])), dport)
    # fed byte by byte, missing() never asks past the header's end
    for cut in range(len(data)):
        need = pp.missing(data[:cut])
        assert 0 < need <= len(data) - cut


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: SIG + b),
                 st.binary(max_size=120).map(lambda b: b"PROXY " + b)))
def test_arbitrary_bytes_parse_or_raise_protocol_error_only(data):
    try:
        need = pp.missing(data)
        if need == 0:
            header, used = pp.parse(data)
            assert 0 < used <= len(data)
    except pp.ProxyProtocolError:
        pass


def test_receive_reads_exactly_the_header_and_leaves_the_payload():
    a, b = gevent_tcp_pair()
    try:
        header = pp.encode(1, ("203.0.113.9", 4000), ("127.0.0.1", 80))
        for i in range(len(header)):  # a header that trickles in byte by byte
            a.sendall(header[i:i + 1])
            gevent.sleep(0)
        a.sendall(b"first bytes")
        stream = SocketStream(b)
        got = pp.receive(stream, 5)
        assert got.src == ("203.0.113.9", 4000)
        assert b.recv(100) == b"first bytes"
    finally:
        a.close()
        b.close()


def test_receive_deadline_and_empty_connection():
    a, b = gevent_tcp_pair()
    try:
        a.sendall(b"PROXY TCP4 1.2")  # and then nothing
        with pytest.raises(pp.ProxyProtocolError, match="within 0.2 s"):
            pp.receive(SocketStream(b), 0.2)
    finally:
        a.close()
        b.close()
    a, b = gevent_tcp_pair()
    a.close()
    with pytest.raises(pp.EmptyConnection):
        pp.receive(SocketStream(b), 5)
    b.close()
