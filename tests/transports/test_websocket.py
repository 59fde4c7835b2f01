"""The WebSocket handshake and RFC 6455 frame codec, as plain functions over bytes."""

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehco_gevent.transports import websocket as ws
from ehco_gevent.transports.websocket import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                                   FrameDecoder, FrameError, HandshakeError)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="

UPGRADE = (b"GET /ws/ HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\n"
           b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + RFC_KEY.encode()
           + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


# -- handshake -----------------------------------------------------------------------------------
def test_accept_key_is_the_rfc_6455_example():
    # RFC 6455 section 1.3 (note "...9kYGzzh...", the RFC's exact value)
    assert ws.accept_key(RFC_KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_upgrade_request_parses():
    head, rest = ws.split_head(UPGRADE)
    req = ws.parse_request(head)
    assert (req.method, req.path) == ("GET", "/ws/")
    assert req.header("Host") == "example.com:8080"
    assert req.header("SEC-WEBSOCKET-KEY") == RFC_KEY
    assert req.is_upgrade and rest == b""


def test_bytes_after_the_head_are_kept():
    """A client's first bytes can come in the same read as its request."""
    assert ws.split_head(UPGRADE + b"\x00first bytes\r\n\r\n") == (UPGRADE, b"\x00first bytes\r\n\r\n")
    response = ws.build_101(RFC_KEY) + b"220 greeting\r\n"
    head, rest = ws.split_head(response)
    ws.check_response(head, RFC_KEY)
    assert rest == b"220 greeting\r\n"


def test_incomplete_head_waits_and_an_endless_one_is_refused():
    assert ws.split_head(UPGRADE[:-1]) is None
    assert ws.split_head(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100) is None
    with pytest.raises(HandshakeError) as err:
        ws.split_head(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * ws.MAX_HEAD)
    assert err.value.status == 431


@pytest.mark.parametrize("drop", [b"Upgrade: websocket\r\n", b"Connection: keep-alive, Upgrade\r\n",
                                  b"Sec-WebSocket-Key: " + RFC_KEY.encode() + b"\r\n"])
def test_missing_upgrade_headers_are_not_an_upgrade(drop):
    req = ws.parse_request(ws.split_head(UPGRADE.replace(drop, b""))[0])
    assert req.path == "/ws/" and not req.is_upgrade


@pytest.mark.parametrize("version,ok", [(b"13", True), (b" 13 ", True), (b"8", False), (b"", False),
                                        (None, False)])
def test_only_websocket_version_13_is_accepted(version, ok):
    line = b"Sec-WebSocket-Version: 13\r\n"
    raw = UPGRADE.replace(line, b"" if version is None else b"Sec-WebSocket-Version: " + version + b"\r\n")
    req = ws.parse_request(ws.split_head(raw)[0])
    assert req.is_upgrade and req.version_ok is ok


def test_426_names_the_supported_version():
    resp = ws.build_response(426, "version 13 only\n", "Sec-WebSocket-Version: 13\r\n")
    head, body = ws.split_head(resp)
    assert head.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in head and body == b"version 13 only\n"


@pytest.mark.parametrize("line", [b"garbage", b"GET /ws/", b"GET /ws/ SPDY/3", b"\x16\x03\x01\x02\x00"])
def test_not_an_http_request_line_is_closed_without_answer(line):
    with pytest.raises(HandshakeError) as err:
        ws.parse_request(line + b"\r\nHost: x\r\n\r\n")
    assert err.value.status == 0


def test_malformed_header_line_is_a_400():
    with pytest.raises(HandshakeError) as err:
        ws.parse_request(b"GET /ws/ HTTP/1.1\r\nno colon here\r\n\r\n")
    assert err.value.status == 400


def test_built_request_parses_back_as_an_upgrade():
    key = ws.new_key()
    req = ws.parse_request(ws.split_head(ws.build_request("10.0.0.1:443", "/mwss/", key))[0])
    assert (req.method, req.path, req.header("host")) == ("GET", "/mwss/", "10.0.0.1:443")
    assert req.is_upgrade and req.header("sec-websocket-key") == key
    assert req.header("sec-websocket-version") == "13"
    assert len(__import__("base64").b64decode(key)) == 16


@pytest.mark.parametrize("host,port,value", [("10.0.0.1", 443, "10.0.0.1:443"),
                                             ("example.com", 80, "example.com:80"),
                                             ("::1", 8443, "[::1]:8443"),
                                             ("2001:db8::5", 1, "[2001:db8::5]:1")])
def test_host_header_brackets_ipv6(host, port, value):
    assert ws.host_header(host, port) == value


def test_101_carries_the_accept_key():
    response = ws.build_101(RFC_KEY)
    assert response.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith(b"\r\n\r\n")
    ws.check_response(response, RFC_KEY)


def test_wrong_accept_key_or_refusal_is_an_error():
    with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
        ws.check_response(ws.build_101(RFC_KEY), ws.new_key())
    with pytest.raises(HandshakeError, match="refused"):
        ws.check_response(ws.build_response(404, "404 page not found\n"), RFC_KEY)
    with pytest.raises(HandshakeError):
        ws.check_response(b"SSH-2.0-OpenSSH\r\n\r\n", RFC_KEY)
    bad_version = ws.build_101(RFC_KEY).replace(b"HTTP/1.1", b"HTTP/2.0")
    with pytest.raises(HandshakeError):
        ws.check_response(bad_version, RFC_KEY)


def test_plain_responses_have_exact_length():
    resp = ws.build_response(200, "access from remote ip: 1.2.3.4 \n")
    head, body = ws.split_head(resp)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: %d\r\n" % len(body) in head
    assert body == b"access from remote ip: 1.2.3.4 \n"


# -- frames --------------------------------------------------------------------------------------
def test_mask_matches_the_rfc_definition():
    key = b"\x37\xfa\x21\x3d"
    payload = os.urandom(1001)
    assert ws.mask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert ws.mask(ws.mask(payload, key), key) == payload
    assert ws.mask(b"", key) == b""


def test_rfc_6455_examples_decode():
    # section 5.7: unmasked and masked "Hello", a ping, and a 256-byte / 64 KiB binary frame
    assert FrameDecoder(from_client=False).feed(bytes.fromhex("810548656c6c6f")) == [(True, OP_TEXT, b"Hello")]
    assert FrameDecoder(from_client=True).feed(bytes.fromhex("818537fa213d7f9f4d5158")) == [(True, OP_TEXT, b"Hello")]
    assert FrameDecoder(from_client=False).feed(bytes.fromhex("890548656c6c6f")) == [(True, OP_PING, b"Hello")]
    assert FrameDecoder(from_client=False).feed(b"\x82\x7e\x01\x00" + b"a" * 256) == [(True, OP_BINARY, b"a" * 256)]
    big = b"\x82\x7f" + struct.pack("!Q", 65536) + b"b" * 65536
    assert FrameDecoder(from_client=False).feed(big) == [(True, OP_BINARY, b"b" * 65536)]


@pytest.mark.parametrize("size,header_len", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10),
                                              (300_000, 10)])
@pytest.mark.parametrize("masked", [False, True])
def test_length_encodings(size, header_len, masked):
    payload = os.urandom(size)
    frame = ws.encode_frame(OP_BINARY, payload, masked=masked)
    assert len(frame) == header_len + (4 if masked else 0) + size
    assert frame[0] == 0x82 and bool(frame[1] & 0x80) == masked
    assert FrameDecoder(from_client=masked).feed(frame) == [(True, OP_BINARY, payload)]


def test_masked_payload_is_not_sent_in_clear():
    payload = b"secret" * 100
    assert payload not in ws.encode_frame(OP_BINARY, payload, masked=True)


def test_fragmented_message_keeps_order_and_fin_bits():
    frames = (ws.encode_frame(OP_BINARY, b"one ", fin=False) + ws.encode_frame(OP_CONT, b"two ", fin=False)
              + ws.encode_frame(OP_PING, b"p") + ws.encode_frame(OP_CONT, b"three"))
    assert FrameDecoder(from_client=False).feed(frames) == [
        (False, OP_BINARY, b"one "), (False, OP_CONT, b"two "), (True, OP_PING, b"p"),
        (True, OP_CONT, b"three")]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1011, 4000])
def test_close_frames_carry_code_and_reason(code):
    body = struct.pack("!H", code) + b"bye"
    got = FrameDecoder(from_client=True).feed(ws.encode_frame(OP_CLOSE, body, masked=True))
    assert got == [(True, OP_CLOSE, body)]
    assert struct.unpack("!H", got[0][2][:2])[0] == code


def test_ping_and_pong_up_to_125_bytes():
    for op in (OP_PING, OP_PONG):
        frame = ws.encode_frame(op, b"x" * 125, masked=True)
        assert FrameDecoder(from_client=True).feed(frame) == [(True, op, b"x" * 125)]


@pytest.mark.parametrize("raw,message", [
    (b"\xc2\x00", "reserved"),                      # RSV1 without an extension
    (b"\x83\x00", "opcode"),                        # 0x3 is reserved
    (b"\x8f\x00", "opcode"),
    (b"\x82\x80\x00\x00\x00\x00", "masked"),        # masked frame to a client
    (b"\x89\x7e\x00\x7e" + b"x" * 126, "control"),  # ping over 125 bytes
    (b"\x08\x00", "control"),                       # fragmented close
    (b"\x82\x7f" + struct.pack("!Q", 1 << 62), "limit"),
])
def test_malformed_frames_raise_frame_error(raw, message):
    with pytest.raises(FrameError, match=message):
        FrameDecoder(from_client=False).feed(raw)


def test_unmasked_frame_from_a_client_is_an_error():
    with pytest.raises(FrameError, match="masked"):
        FrameDecoder(from_client=True).feed(ws.encode_frame(OP_BINARY, b"x"))


def test_oversize_length_is_refused_from_the_header_alone():
    """No waiting for (or buffering of) 16 MiB + 1 bytes: the header is enough to refuse."""
    dec = FrameDecoder(from_client=False, max_payload=1024)
    with pytest.raises(FrameError):
        dec.feed(b"\x82\x7e\x04\x01")


# -- properties ----------------------------------------------------------------------------------
frame_st = st.tuples(
    st.sampled_from([OP_BINARY, OP_TEXT, OP_CONT, OP_PING, OP_PONG, OP_CLOSE]),
    st.binary(max_size=70_000), st.booleans())


def _valid(op, payload, fin):
    if op >= OP_CLOSE:
        return op, payload[:125], True
    return op, payload, fin


@settings(max_examples=60, deadline=None)
@given(st.lists(frame_st, max_size=6), st.booleans(), st.data())
def test_round_trip_through_any_split(frames, masked, data):
    frames = [_valid(*f) for f in frames]
    wire = b"".join(ws.encode_frame(op, p, masked=masked, fin=fin) for op, p, fin in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    dec = FrameDecoder(from_client=masked)
    got = []
    for start, end in zip([0] + cuts, cuts + [len(wire)]):
        got += dec.feed(wire[start:end])
    assert got == [(fin, op, p) for op, p, fin in frames]


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=3000))
def test_byte_by_byte_feed_equals_one_feed(payload):
    wire = ws.encode_frame(OP_BINARY, payload, masked=True) + ws.encode_frame(OP_PING, payload[:10], masked=True)
    dec = FrameDecoder(from_client=True)
    got = []
    for i in range(len(wire)):
        got += dec.feed(wire[i:i + 1])
    assert got == FrameDecoder(from_client=True).feed(wire)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_garbage_only_ever_raises_frame_error(data, from_client):
    """Whatever arrives, the decoder returns frames, waits for more, or raises FrameError."""
    try:
        for fin, op, payload in FrameDecoder(from_client=from_client).feed(data):
            assert op in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"GET /ws/ HTTP/1.1\r\n", b"HTTP/1.1 101 x\r\n"]))
def test_any_head_only_ever_raises_handshake_error(data, prefix):
    raw = prefix + data + b"\r\n\r\n"
    head, rest = ws.split_head(raw)
    assert raw.startswith(head) and head.endswith(b"\r\n\r\n") and head + rest == raw
    lines = head[:-4].split(b"\r\n")
    try:
        req = ws.parse_request(head)
    except HandshakeError:
        pass
    else:  # accepted: the request line and every header, as written
        method, path, version = lines[0].split(b" ")
        assert (req.method, req.path) == (method.decode("latin-1"), path.decode("latin-1"))
        assert version.startswith(b"HTTP/1.")
        for line in filter(None, lines[1:]):
            name, _, value = line.partition(b":")
            assert name.strip().decode("latin-1").lower() in req.headers
    try:
        ws.check_response(head, RFC_KEY)
    except HandshakeError:
        pass
    else:  # accepted: only a 101 that carries the key's accept value
        assert lines[0].split(b" ")[1] == b"101"
        assert ws.accept_key(RFC_KEY).encode() in head
