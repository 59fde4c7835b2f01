"""The PROXY protocol (haproxy's, versions 1 and 2): the header a proxy puts in front of a
connection's bytes to name the client it accepted.

A relay with ``accept_proxy`` reads one header at the start of every stream it accepts and
uses the address it carries as the client address; one with ``send_proxy`` writes a header as
the first bytes of every stream it dials. Through a tunnel the header travels inside the
stream (one per smux stream on mwss/mtcp), so an exit node learns each user's address.

The codec is plain functions over bytes: :func:`parse` (with :func:`missing`, which says how
many more bytes a partial header surely needs, so a reader never takes a byte past the header)
and :func:`encode`. :func:`receive` is the only I/O: it reads exactly one header from a stream,
under a deadline and the size cap the spec sets (107 bytes for v1; for v2 the 16-byte prefix
plus at most :data:`MAX_V2_BODY`).

Version 1 is a text line ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` or ``PROXY UNKNOWN...``;
version 2 is binary: a 12-byte signature, version/command, family/protocol, a big-endian
length, then the addresses (and TLVs, which we skip). ``LOCAL`` (v2) and ``UNKNOWN`` (v1)
carry no client address: the connection's own peer stays the client (health checks).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import gevent

V1_PREFIX = b"PROXY "
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_PREFIX = 16
#: the address block and TLVs we accept after the 16-byte prefix (addresses need at most 216
#: bytes; the rest leaves room for the TLVs haproxy and cloud balancers add)
MAX_V2_BODY = 2048
#: the shortest possible header (``PROXY UNKNOWN\r\n``): a reader asks for this much first
MIN_HEADER = 15

_V2_FAMILIES = {
    0x00: "unspec", 0x11: "tcp4", 0x12: "udp4", 0x21: "tcp6", 0x22: "udp6",
    0x31: "unix", 0x32: "unix",
}
_V2_ADDRS = {"tcp4": ("!4s4sHH", 4), "udp4": ("!4s4sHH", 4),
             "tcp6": ("!16s16sHH", 16), "udp6": ("!16s16sHH", 16)}

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY header (or did not arrive in time)."""


def cause(exc: ProxyProtocolError) -> str:
    """The kind of a refusal without the peer's bytes in it (``v1 header``, ``v2 header``,
    ``no PROXY protocol header ...``): a key for rate-limited logging."""
    return str(exc).split(":", 1)[0][:48]


class EmptyConnection(ProxyProtocolError):
    """The peer closed before sending a byte: a health check's connect-and-close, not an attack."""


@dataclass(frozen=True)
class ProxyHeader:
    version: int
    #: "tcp4", "tcp6", "udp4", "udp6", "unix", "unspec" (v2) or "unknown" (v1)
    family: str
    #: the client and the address it connected to; None for LOCAL / UNKNOWN / unix
    src: Address | None = None
    dst: Address | None = None
    local: bool = False


# -- parsing ---------------------------------------------------------------------------------------
def missing(data: bytes) -> int:
    """How many more bytes ``data`` (the start of a stream) surely needs before it holds a
    whole header: 0 when it holds one. Raises ProxyProtocolError as soon as the bytes cannot
    start a header, so a client that sends something else is refused at once."""
    n = len(data)
    if data[:12] != V2_SIGNATURE[:n] and data[:6] != V1_PREFIX[:n]:
        raise ProxyProtocolError("no PROXY protocol header (unexpected first bytes)")
    if n < MIN_HEADER:
        return MIN_HEADER - n
    if data.startswith(V2_SIGNATURE[:MIN_HEADER]):
        if n < V2_PREFIX:
            return V2_PREFIX - n
        (length,) = struct.unpack_from("!H", data, 14)
        if length > MAX_V2_BODY:
            raise ProxyProtocolError(f"v2 header length {length} exceeds {MAX_V2_BODY}")
        return max(0, V2_PREFIX + length - n)
    end = data.find(b"\r\n")
    if end >= 0:
        return 0
    if n >= V1_MAX:
        raise ProxyProtocolError(f"v1 header line longer than {V1_MAX} bytes")
    # the line ends with CRLF: after a lone CR one byte may finish it, otherwise two
    return 1 if data.endswith(b"\r") else min(2, V1_MAX - n)


def parse(data: bytes) -> tuple[ProxyHeader, int]:
    """The header at the start of ``data`` and how many bytes it used. Raises
    ProxyProtocolError when the bytes are not a complete, valid header."""
    if missing(data):
        raise ProxyProtocolError("PROXY header incomplete")
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    return _parse_v1(data)


def _parse_port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535 or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"v1 header: invalid port {text[:8]!r}")
    return int(text)


def _parse_ip(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"v1 header: invalid address {text[:48]!r}") from None
    if ip.version != version or "%" in text:
        raise ProxyProtocolError(f"v1 header: {text[:48]!r} is not an IPv{version} address")
    return str(ip)


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int]:
    end = data.find(b"\r\n")
    if end + 2 > V1_MAX:
        raise ProxyProtocolError(f"v1 header line longer than {V1_MAX} bytes")
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("v1 header is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, "unknown"), end + 2
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"v1 header: malformed line {line[:60]!r}")
    version = 4 if parts[1] == "TCP4" else 6
    src = (_parse_ip(parts[2], version), _parse_port(parts[4]))
    dst = (_parse_ip(parts[3], version), _parse_port(parts[5]))
    return ProxyHeader(1, parts[1].lower(), src, dst), end + 2


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int]:
    ver_cmd, fam, length = struct.unpack_from("!BBH", data, 12)
    used = V2_PREFIX + length
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"v2 header: unsupported version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError(f"v2 header: unsupported command {command}")
    family = _V2_FAMILIES.get(fam)
    if family is None:
        raise ProxyProtocolError(f"v2 header: unsupported family/protocol 0x{fam:02x}")
    if command == 0:
        return ProxyHeader(2, family, local=True), used
    layout = _V2_ADDRS.get(family)
    if layout is None:  # unspec or unix: no IP address to carry
        return ProxyHeader(2, family), used
    fmt, size = layout
    if length < struct.calcsize(fmt):
        raise ProxyProtocolError(f"v2 header: {family} needs {struct.calcsize(fmt)} address "
                                 f"bytes, length is {length}")
    src_ip, dst_ip, sport, dport = struct.unpack_from(fmt, data, V2_PREFIX)
    make = ipaddress.IPv4Address if size == 4 else ipaddress.IPv6Address
    return ProxyHeader(2, family, (str(make(src_ip)), sport), (str(make(dst_ip)), dport)), used


# -- encoding --------------------------------------------------------------------------------------
def _ips(src: Address, dst: Address) -> tuple[ipaddress._BaseAddress, ipaddress._BaseAddress]:
    """Both addresses in one family: an IPv4 one next to IPv6 becomes IPv4-mapped IPv6."""
    a = ipaddress.ip_address(src[0].split("%", 1)[0])
    b = ipaddress.ip_address(dst[0].split("%", 1)[0])
    if a.version != b.version:
        a, b = (ipaddress.IPv6Address(f"::ffff:{x}") if x.version == 4 else x for x in (a, b))
    return a, b


def encode(version: int, src: Address | None, dst: Address | None) -> bytes:
    """A header naming ``src`` (the client) and ``dst`` (the address it connected to); with no
    source, v1's ``UNKNOWN`` or v2's ``LOCAL``."""
    if version == 1:
        if src is None or dst is None:
            return b"PROXY UNKNOWN\r\n"
        a, b = _ips(src, dst)
        proto = "TCP4" if a.version == 4 else "TCP6"
        return f"PROXY {proto} {a} {b} {src[1]} {dst[1]}\r\n".encode("ascii")
    if version != 2:
        raise ValueError(f"PROXY protocol version {version} does not exist")
    if src is None or dst is None:
        return V2_SIGNATURE + bytes((0x20, 0x00)) + b"\x00\x00"
    a, b = _ips(src, dst)
    fam = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack("!HH", src[1], dst[1])
    return V2_SIGNATURE + bytes((0x21, fam)) + struct.pack("!H", len(body)) + body


# -- reading from a stream -------------------------------------------------------------------------
def receive(stream, timeout: float) -> ProxyHeader:
    """Read exactly one header from the start of ``stream`` (any object with ``recv_into``),
    never a byte more, within ``timeout`` seconds. Raises ProxyProtocolError (EOF, bad bytes,
    too long, too slow); an EOF before any byte says so, for health checks that connect and
    close."""
    data = bytearray()
    with gevent.Timeout(timeout, ProxyProtocolError(f"no complete PROXY header within {timeout:g} s")):
        while True:
            need = missing(bytes(data))
            if not need:
                return parse(bytes(data))[0]
            buf = bytearray(need)
            n = stream.recv_into(buf)
            if not n:
                if not data:
                    raise EmptyConnection("closed before sending a PROXY header (empty connection)")
                raise ProxyProtocolError(f"closed after {len(data)} bytes of a PROXY header")
            data += buf[:n]
