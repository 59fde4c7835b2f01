"""Fuzz targets: every parser that reads bytes from the network, as a function of one
``bytes`` argument (issue 10).

A target feeds the bytes to a parser and checks its contract: it returns, or raises the one
exception type that means "bad input, close this connection" (anything else, a crash, a hang
or a broken invariant is a finding). Decoders are also fed the same bytes in two pieces split
at a point the input chooses, and must give the same result as in one piece.

Run by ``tests/fuzz/test_fuzz.py`` (hypothesis, and a short coverage-guided atheris run) and,
for long runs, by ``python -m tests.fuzz.run_atheris`` (see docs/security.md).
"""

from __future__ import annotations

from typing import Callable

from ehco_gevent.proxy import aead, http_proxy, socks, trojan
from ehco_gevent.proxy.addr import AddressError, parse_address
from ehco_gevent.transports import proxy_protocol, smux, websocket


def _split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The input without its first byte, cut where that byte says (for two-piece feeding)."""
    if not data:
        return b"", b"", b""
    body = data[1:]
    cut = data[0] * len(body) // 256
    return body, body[:cut], body[cut:]


def _decode_both_ways(make, body: bytes, first: bytes, second: bytes, bad: type):
    """Frames from one feed and from two feeds; equal, or both raise ``bad``."""
    try:
        whole = list(make().feed(body))
    except bad:
        whole = bad
    decoder = make()
    try:
        parts = list(decoder.feed(first)) + list(decoder.feed(second))
    except bad:
        parts = bad
    if whole is bad or parts is bad:
        # the two-piece feed may deliver the good frames before the bad header: the error
        # must still come
        assert whole is bad and parts is bad, (whole, parts)
        return
    assert whole == parts


def smux_frames(data: bytes) -> None:
    _decode_both_ways(smux.FrameDecoder, *_split(data), smux.SmuxError)


def ws_frames_from_client(data: bytes) -> None:
    _decode_both_ways(lambda: websocket.FrameDecoder(from_client=True, max_payload=1 << 16),
                      *_split(data), websocket.FrameError)


def ws_frames_from_server(data: bytes) -> None:
    _decode_both_ways(lambda: websocket.FrameDecoder(from_client=False, max_payload=1 << 16),
                      *_split(data), websocket.FrameError)


def http_upgrade(data: bytes) -> None:
    """The ws listener's request parsing and the dialer's 101 check."""
    try:
        split = websocket.split_head(data)
        if split is None:
            return
        head, rest = split
        assert head + rest == data and head.endswith(b"\r\n\r\n")
        request = websocket.parse_request(head)
        request.is_upgrade, request.version_ok
        key = request.header("sec-websocket-key")
        if websocket.valid_key(key):
            websocket.build_101(key)
    except websocket.HandshakeError:
        pass
    try:
        websocket.check_response(data, "dGhlIHNhbXBsZSBub25jZQ==")
    except websocket.HandshakeError:
        pass


def _socks_step(parser, data: bytes) -> None:
    try:
        result = parser(data)
    except socks.SocksError:
        return
    if result is not None:
        assert 0 < result[-1] <= len(data)


def socks5(data: bytes) -> None:
    for parser in (socks.parse_greeting, socks.parse_userpass, socks.parse_request):
        _socks_step(parser, data)
    socks.parse_udp_datagram(data)


def http_proxy_head(data: bytes) -> None:
    try:
        head = http_proxy.parse_head(data)
        if head is None:
            return
        method, target, version, headers, used = head
        assert used <= len(data)
        http_proxy.authorized(headers, [("u", "p")])
        if method == "CONNECT":
            http_proxy.split_authority(target, 443)
        else:
            host, port, path = http_proxy.forward_target(method, target)
            http_proxy.rewrite_head(method, path, version, headers)
    except http_proxy.HttpError:
        pass


def trojan_request(data: bytes) -> None:
    try:
        if trojan.split_auth(data) is not None:
            request = trojan.parse_request(data)
            if request is not None:
                assert request[-1] <= len(data)
    except trojan.TrojanError:
        pass
    try:
        frame = trojan.parse_udp_frame(data)
        if frame is not None:
            assert frame[-1] <= len(data)
    except trojan.TrojanError:
        pass


def proxy_protocol_header(data: bytes) -> None:
    """The PROXY protocol v1/v2 header an ``accept_proxy`` listener reads first: ``missing``
    says how much more is needed (or refuses at once), ``parse`` reads a whole one."""
    try:
        if proxy_protocol.missing(data) == 0:
            header, used = proxy_protocol.parse(data)
            assert 0 < used <= len(data)
    except proxy_protocol.ProxyProtocolError:
        pass


_CIPHER = aead.CIPHERS["aes-128-gcm"]
_KEY = aead.master_key(_CIPHER, "fuzz")
_SALT = bytes(range(16))


def shadowsocks_chunks(data: bytes) -> None:
    """AEAD chunks as a client could make them: the input picks each chunk's length field
    (any 16-bit value, valid or not) and payload, the chunks are sealed with a known key and
    fed to the decryptor in two pieces; it must return exactly the payloads up to the first
    bad length, then raise AuthError. The decrypted header goes through parse_address. Then
    the raw input itself, as junk, must raise AuthError or wait for more."""
    sealer = aead._Sealer(_CIPHER, _KEY, _SALT)
    stream, expected, state = bytearray(), bytearray(), "ok"
    pos = 1
    while pos + 2 <= len(data):
        length = int.from_bytes(data[pos:pos + 2], "big")
        payload = data[pos + 2:pos + 2 + min(length, 0x3FFF)]
        pos += 2 + len(payload)
        stream += sealer.seal(length.to_bytes(2, "big")) + sealer.seal(payload)
        if not 0 < length <= 0x3FFF:
            state = "bad length"  # the decryptor must refuse it
            break
        if len(payload) < length:
            state = "short"  # the sealed chunk is shorter than announced: more is awaited
            break
        expected += payload
    body, first, second = _split(bytes(data[:1]) + bytes(stream))
    dec = aead.Decryptor(_CIPHER, _KEY, _SALT)
    out = bytearray()
    try:
        out += dec.feed(first)
        out += dec.feed(second)
        assert state != "bad length" and out == expected, (state, len(out), len(expected))
        assert dec.partial == (state == "short")
    except aead.AuthError:
        assert state == "bad length" and out == expected[:len(out)]
    try:
        parse_address(bytes(expected))
    except AddressError:
        pass
    try:
        aead.Decryptor(_CIPHER, _KEY, _SALT).feed(data)
    except aead.AuthError:
        pass
    try:
        aead.open_packet(_CIPHER, _KEY, data)
    except aead.AuthError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "smux_frames": smux_frames,
    "ws_frames_from_client": ws_frames_from_client,
    "ws_frames_from_server": ws_frames_from_server,
    "http_upgrade": http_upgrade,
    "socks5": socks5,
    "http_proxy_head": http_proxy_head,
    "trojan_request": trojan_request,
    "shadowsocks_chunks": shadowsocks_chunks,
    "proxy_protocol_header": proxy_protocol_header,
}


def all_targets(data: bytes) -> None:
    """One entry point for a single fuzzing process: the first byte picks the target."""
    if data:
        names = sorted(TARGETS)
        TARGETS[names[data[0] % len(names)]](data[1:])
