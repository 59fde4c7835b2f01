"""The SOCKS5-style target address that shadowsocks, trojan and SOCKS5 all use.

``ATYP`` 1 = IPv4 (4 bytes), 3 = domain (1 length byte + name), 4 = IPv6 (16 bytes), then a
big-endian port. Pure functions over bytes.
"""

from __future__ import annotations

import ipaddress
import struct


class AddressError(ValueError):
    """An address that can never become valid (unknown type, empty name)."""


def parse_address(buf, pos: int = 0) -> tuple[str, int, int] | None:
    """``(host, port, end)`` of the address starting at ``buf[pos]``; None if incomplete."""
    if len(buf) <= pos:
        return None
    atyp = buf[pos]
    if atyp == 1:
        end = pos + 1 + 4 + 2
        if len(buf) < end:
            return None
        host = str(ipaddress.IPv4Address(bytes(buf[pos + 1:pos + 5])))
    elif atyp == 4:
        end = pos + 1 + 16 + 2
        if len(buf) < end:
            return None
        host = str(ipaddress.IPv6Address(bytes(buf[pos + 1:pos + 17])))
    elif atyp == 3:
        if len(buf) < pos + 2:
            return None
        n = buf[pos + 1]
        if n == 0:
            raise AddressError("empty domain name")
        end = pos + 2 + n + 2
        if len(buf) < end:
            return None
        try:
            host = bytes(buf[pos + 2:pos + 2 + n]).decode("ascii")
        except UnicodeDecodeError:
            raise AddressError("domain name is not ASCII") from None
    else:
        raise AddressError(f"unknown address type {atyp}")
    port = struct.unpack(">H", bytes(buf[end - 2:end]))[0]
    return host, port, end


def encode_address(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise AddressError(f"domain name of length {len(name)}") from None
        return b"\x03" + bytes([len(name)]) + name + struct.pack(">H", port)
    if ip.version == 4:
        return b"\x01" + ip.packed + struct.pack(">H", port)
    return b"\x04" + ip.packed + struct.pack(">H", port)


def format_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
