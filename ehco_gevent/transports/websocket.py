"""The WebSocket pieces ehco's tunnels need, as plain functions over bytes (never a socket).

ehco 1.1.4 uses only the HTTP/1.1 upgrade handshake and then sends raw bytes; RFC 6455 framing
is our frames mode (what ehco >= 1.1.5 and every WebSocket proxy or CDN speak). The socket-side
code in :mod:`ehco_gevent.transports.ws` only moves the bytes these functions produce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass, field

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 16 * 1024
#: frames mode refuses a single frame larger than this (a relay never needs more)
MAX_FRAME_PAYLOAD = 16 * 1024 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_KNOWN_OPS = {OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG}


class HandshakeError(Exception):
    """A request or response that is not the upgrade we expect; ``status`` is what a server
    should answer (0 = just close)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class FrameError(Exception):
    """A WebSocket frame that breaks RFC 6455; the connection must close."""


# -- handshake -----------------------------------------------------------------------------------
def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """``(head, rest)`` once ``data`` holds a full HTTP head; None while more is needed.

    ``rest`` is the start of the stream: a server-first protocol's greeting can arrive in the
    same read as the 101, and a client's first bytes in the same read as its request.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise HandshakeError("HTTP head too large", 431)
        return None
    return data[:end + 4], data[end + 4:]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def is_upgrade(self) -> bool:
        return ("websocket" in self.header("upgrade").lower()
                and "upgrade" in self.header("connection").lower()
                and bool(self.header("sec-websocket-key")))

    @property
    def version_ok(self) -> bool:
        """RFC 6455 speaks version 13 only; any other (or none) gets a 426 naming 13."""
        return self.header("sec-websocket-version").strip() == "13"


def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise HandshakeError(f"malformed header line {line[:40]!r}", 400)
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def parse_request(head: bytes) -> Request:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise HandshakeError(f"not an HTTP/1.x request line: {lines[0][:60]!r}", 0)
    method, path = parts[0].decode("latin-1"), parts[1].decode("latin-1")
    return Request(method, path, _parse_headers(lines[1:]))


def valid_key(key: str) -> bool:
    """RFC 6455 4.2.1: Sec-WebSocket-Key is the base64 of 16 bytes (24 characters); anything
    else gets 400, as gobwas/ws (Go ehco's server) answers."""
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def host_header(host: str, port: int) -> str:
    """``Host`` value for a dial target: IPv6 literals need brackets (``[::1]:443``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_request(host: str, path: str, key: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode("latin-1")


def build_101(key: str) -> bytes:
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode("latin-1")


def build_response(status: int, body: str, extra_headers: str = "") -> bytes:
    """A complete plain-text response; ``extra_headers`` is ``"Name: value\\r\\n"`` lines."""
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
               426: "Upgrade Required", 431: "Request Header Fields Too Large"}
    data = body.encode()
    return (f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n{extra_headers}Content-Type: "
            f"text/plain; charset=utf-8\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1") + data


def check_response(head: bytes, key: str) -> None:
    """Raise HandshakeError unless ``head`` is a 101 accepting ``key``."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or parts[1] != b"101":
        raise HandshakeError(f"upgrade refused: {lines[0][:80]!r}")
    headers = _parse_headers(lines[1:])
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("upgrade answered with a wrong Sec-WebSocket-Accept")


# -- frames --------------------------------------------------------------------------------------
def _mask_with_ints(payload: bytes, key: bytes) -> bytes:
    """XOR over the whole payload as one big integer: the fallback when the C helper is
    missing (a per-byte loop would be ~100x slower still)."""
    n = len(payload)
    if not n:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


try:  # the websockets library's C masking runs at memory speed (~50x the integer XOR)
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - pure-Python wheel or platform without the extension
    _apply_mask = None


def mask(payload, key: bytes) -> bytes:
    """RFC 6455 masking (its own inverse): XOR ``payload`` with the repeated 4-byte ``key``."""
    if _apply_mask is not None:
        return _apply_mask(payload, key)
    return _mask_with_ints(bytes(payload), key)


def encode_frame(opcode: int, payload: bytes = b"", masked: bool = False, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if masked:
        key = os.urandom(4)
        return head + key + mask(payload, key)
    return head + bytes(payload)


class FrameDecoder:
    """Bytes in, ``(fin, opcode, payload)`` frames out (payload unmasked).

    ``from_client`` enforces RFC 6455's rule that client frames are masked (and server frames
    are not).
    """

    def __init__(self, from_client: bool, max_payload: int = MAX_FRAME_PAYLOAD):
        self.from_client = from_client
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data) -> list[tuple[bool, int, bytes]]:
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        while True:
            avail = len(buf) - pos
            if avail < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            if b0 & 0x70:
                raise FrameError("reserved bits set (no extension was negotiated)")
            opcode = b0 & 0x0F
            if opcode not in _KNOWN_OPS:
                raise FrameError(f"unknown opcode {opcode:#x}")
            fin = bool(b0 & 0x80)
            masked = bool(b1 & 0x80)
            if masked != self.from_client:
                raise FrameError("client frames must be masked, server frames must not")
            length = b1 & 0x7F
            offset = 2
            if length == 126:
                if avail < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                offset = 4
            elif length == 127:
                if avail < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                offset = 10
            if opcode >= OP_CLOSE and (length > 125 or not fin):
                raise FrameError("control frame too long or fragmented")
            if length > self.max_payload:
                raise FrameError(f"frame of {length} bytes is over the {self.max_payload} limit")
            key = b""
            if masked:
                if avail < offset + 4:
                    break
                key = bytes(buf[pos + offset:pos + offset + 4])
                offset += 4
            if avail < offset + length:
                break
            start = pos + offset
            with memoryview(buf) as view:  # one copy out of buf, not two
                part = view[start:start + length]
                payload = mask(part, key) if masked else bytes(part)
                part.release()
            frames.append((fin, opcode, payload))
            pos = start + length
        if pos:
            del buf[:pos]
        return frames
