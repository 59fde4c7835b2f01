"""The ``xray_config`` object (Xray's JSON format), validated into frozen dataclasses.

ehco embedded all of Xray; we serve natively the inbounds its user sync manages (shadowsocks,
trojan) and the simple ones next to them (socks, http), accept the ``dokodemo-door`` inbound
tagged ``api`` (Xray's gRPC stats endpoint, which ehco itself talked to: our stats live in
process, so nothing listens there), and the ``freedom`` outbound. Any other inbound protocol
needs a real ``xray`` binary (``EHCO_XRAY_BIN`` or ``xray`` on PATH), which then serves those
inbounds as a supervised child; without one the config is refused, naming the protocol.

Validation is a pure function over dicts: :func:`parse_xray_config` raises
:class:`~ehco_gevent.config.ConfigError` whose message names the inbound (index and tag) and the
key, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError

NATIVE_PROTOCOLS = ("shadowsocks", "trojan", "socks", "http")
SS_METHODS = ("aes-128-gcm", "aes-256-gcm", "chacha20-ietf-poly1305")
#: the tag ehco reserves for Xray's API inbound
API_TAG = "api"
#: the inbounds ehco's panel sync manages
SS_TAG = "ss_proxy"
TROJAN_TAG = "trojan_proxy"


@dataclass(frozen=True)
class Client:
    """A user written in the config (``settings.clients`` or the single-user form)."""

    password: str
    method: str = ""  # shadowsocks only
    email: str = ""
    level: int = 0


@dataclass(frozen=True)
class Inbound:
    index: int
    protocol: str
    tag: str
    listen: str  # host to bind; "0.0.0.0" when not given, as Xray
    port: int
    tcp: bool = True
    udp: bool = False
    clients: tuple[Client, ...] = ()
    #: trojan: where a connection that fails authentication goes ("host:port"), or ""
    fallback: str = ""
    #: trojan TLS files; empty means the generated self-signed certificate (as ehco)
    cert_file: str = ""
    key_file: str = ""
    alpn: tuple[str, ...] = ()
    #: socks/http accounts (user, pass); socks ``auth: password`` requires them
    accounts: tuple[tuple[str, str], ...] = ()
    #: Xray's ``streamSettings.sockopt.acceptProxyProtocol``: every connection starts with a
    #: PROXY header (v1 or v2) naming the client (a relay with ``send_proxy`` in front)
    accept_proxy: bool = False

    @property
    def where(self) -> str:
        return where(self.index, self.tag)

    @property
    def name(self) -> str:
        return self.tag or f"inbound-{self.index}"

    @property
    def listen_key(self) -> tuple[str, str, int, bool, bool]:
        """What forces a restart when it changes: protocol and listen address (and which of
        tcp/udp are bound there)."""
        return (self.protocol, self.listen, self.port, self.tcp, self.udp)

    @property
    def address(self) -> str:
        return f"[{self.listen}]:{self.port}" if ":" in self.listen else f"{self.listen}:{self.port}"


@dataclass(frozen=True)
class XrayConfig:
    inbounds: tuple[Inbound, ...] = ()
    #: inbounds with other protocols, as written, for the supervised xray child
    foreign: tuple[dict, ...] = field(default=(), compare=False)
    xray_bin: str = ""
    outbound_protocols: tuple[str, ...] = ("freedom",)
    raw: dict = field(default_factory=dict, compare=False, repr=False)


def where(index: int, tag: str) -> str:
    return f"xray_config.inbounds[{index}]" + (f" (tag {tag!r})" if tag else "")


def _fail(place: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"invalid config: {place}: {key}: {problem}")


def _get(data: dict, key: str, kind, place: str, default: Any) -> Any:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind in (int, str):
        raise _fail(place, key, f"expected {'a number' if kind is int else 'a string'}, got {json.dumps(value)}")
    if not isinstance(value, kind):
        names = {str: "a string", int: "a number", bool: "true or false", list: "a list",
                 dict: "an object"}
        want = names.get(kind, "a value") if isinstance(kind, type) else "a value"
        raise _fail(place, key, f"expected {want}, got {json.dumps(value)[:60]}")
    return value


def find_xray() -> str:
    """Path of a usable ``xray`` binary, or "" (EHCO_XRAY_BIN wins over PATH)."""
    env = os.environ.get("EHCO_XRAY_BIN", "")
    if env:
        return env if os.access(env, os.X_OK) else ""
    return shutil.which("xray") or ""


def parse_port(value: Any, place: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(place, "port", f"expected a port number, got {json.dumps(value)[:40]} "
                                   "(port ranges are served only by xray itself)")
    if not 1 <= value <= 65535:
        raise _fail(place, "port", f"{value} is not a port number")
    return value


def parse_network(settings: dict, place: str, default: str) -> tuple[bool, bool]:
    net = _get(settings, "network", str, place + ": settings", default) or default
    parts = {p.strip() for p in net.split(",") if p.strip()}
    bad = parts - {"tcp", "udp"}
    if bad or not parts:
        raise _fail(place, "settings.network", f"invalid value {net!r} (expected tcp, udp or tcp,udp)")
    return "tcp" in parts, "udp" in parts


def parse_clients(settings: dict, place: str, protocol: str) -> tuple[Client, ...]:
    items = _get(settings, "clients", list, place, [])
    out = []
    for i, item in enumerate(items):
        key = f"settings.clients[{i}]"
        if not isinstance(item, dict):
            raise _fail(place, key, "expected an object")
        password = _get(item, "password", str, f"{place}: {key}", "")
        if not password:
            raise _fail(place, f"{key}.password", "must be a non-empty string")
        method = ""
        if protocol == "shadowsocks":
            method = _get(item, "method", str, f"{place}: {key}", "") or \
                _get(settings, "method", str, place, "")
            if method.lower() not in SS_METHODS:
                raise _fail(place, f"{key}.method", f"unsupported cipher {method!r} (expected one "
                                                    f"of {', '.join(SS_METHODS)})")
            method = method.lower()
        level = _get(item, "level", int, f"{place}: {key}", 0)
        email = _get(item, "email", str, f"{place}: {key}", "")
        out.append(Client(password=password, method=method, email=email, level=level))
    if protocol == "shadowsocks" and settings.get("password"):
        # Xray's single-user form: settings.method + settings.password
        password = _get(settings, "password", str, place, "")
        method = (_get(settings, "method", str, place, "") or "").lower()
        if method not in SS_METHODS:
            raise _fail(place, "settings.method", f"unsupported cipher {method!r} (expected one of "
                                                  f"{', '.join(SS_METHODS)})")
        out.append(Client(password=password, method=method,
                          email=_get(settings, "email", str, place, ""),
                          level=_get(settings, "level", int, place, 0)))
    return tuple(out)


def parse_accounts(settings: dict, place: str) -> tuple[tuple[str, str], ...]:
    out = []
    for i, item in enumerate(_get(settings, "accounts", list, place, [])):
        key = f"settings.accounts[{i}]"
        if not isinstance(item, dict):
            raise _fail(place, key, "expected an object with user and pass")
        user = _get(item, "user", str, f"{place}: {key}", "")
        pw = _get(item, "pass", str, f"{place}: {key}", "")
        if not user:
            raise _fail(place, f"{key}.user", "must be a non-empty string")
        out.append((user, pw))
    return tuple(out)


def parse_fallback(settings: dict, place: str) -> str:
    items = _get(settings, "fallbacks", list, place, [])
    if not items:
        return ""
    first = items[0]
    if not isinstance(first, dict):
        raise _fail(place, "settings.fallbacks[0]", "expected an object with dest")
    dest = first.get("dest")
    if isinstance(dest, int) and not isinstance(dest, bool):
        return f"127.0.0.1:{dest}"  # Xray: a bare port means localhost
    if isinstance(dest, str) and dest.isdigit():
        return f"127.0.0.1:{dest}"
    if isinstance(dest, str) and ":" in dest:
        host, _, port = dest.rpartition(":")
        if port.isdigit() and host:
            return dest
    raise _fail(place, "settings.fallbacks[0].dest",
                f"expected a port or host:port, got {json.dumps(dest)[:60]}")


def parse_tls(inbound: dict, place: str) -> tuple[str, str, tuple[str, ...]]:
    stream = _get(inbound, "streamSettings", dict, place, {})
    network = _get(stream, "network", str, place + ": streamSettings", "tcp") or "tcp"
    if network not in ("tcp", "raw"):
        raise _fail(place, "streamSettings.network",
                    f"{network!r} is served only by xray itself (native trojan runs over tcp)")
    security = _get(stream, "security", str, place + ": streamSettings", "tls") or "tls"
    if security != "tls":
        raise _fail(place, "streamSettings.security",
                    f"{security!r} is not supported for the native trojan inbound (use tls)")
    tls = _get(stream, "tlsSettings", dict, place + ": streamSettings", {})
    alpn = tuple(a for a in _get(tls, "alpn", list, place + ": streamSettings.tlsSettings", [])
                 if isinstance(a, str))
    certs = _get(tls, "certificates", list, place + ": streamSettings.tlsSettings", [])
    cert = key = ""
    if certs:
        first = certs[0]
        if not isinstance(first, dict):
            raise _fail(place, "streamSettings.tlsSettings.certificates[0]", "expected an object")
        cert = _get(first, "certificateFile", str, place, "")
        key = _get(first, "keyFile", str, place, "")
        if not cert or not key:
            raise _fail(place, "streamSettings.tlsSettings.certificates[0]",
                        "needs certificateFile and keyFile (inline certificates are not supported)")
    return cert, key, alpn


def parse_inbound(data: Any, index: int) -> Inbound | dict | None:
    """One inbound: an :class:`Inbound` to serve, a dict for xray, or None (the api inbound)."""
    if not isinstance(data, dict):
        raise _fail(f"xray_config.inbounds[{index}]", "inbound", "expected an object")
    tag = _get(data, "tag", str, f"xray_config.inbounds[{index}]", "")
    place = where(index, tag)
    protocol = _get(data, "protocol", str, place, "")
    if not protocol:
        raise _fail(place, "protocol", "missing")
    if protocol == "dokodemo-door" and tag == API_TAG:
        return None
    if protocol not in NATIVE_PROTOCOLS:
        return data
    listen = _get(data, "listen", str, place, "") or "0.0.0.0"
    port = parse_port(data.get("port"), place)
    settings = _get(data, "settings", dict, place, {})
    stream = _get(data, "streamSettings", dict, place, {})
    sockopt = _get(stream, "sockopt", dict, place + ": streamSettings", {})
    accept_proxy = _get(sockopt, "acceptProxyProtocol", bool, place + ": streamSettings.sockopt",
                        False)
    common = dict(index=index, protocol=protocol, tag=tag, listen=listen, port=port,
                  accept_proxy=accept_proxy)
    if protocol == "shadowsocks":
        tcp, udp = parse_network(settings, place, "tcp")
        return Inbound(tcp=tcp, udp=udp, clients=parse_clients(settings, place, protocol), **common)
    if protocol == "trojan":
        cert, key, alpn = parse_tls(data, place)
        _, udp = parse_network(settings, place, "tcp,udp")
        return Inbound(udp=udp, clients=parse_clients(settings, place, protocol),
                       fallback=parse_fallback(settings, place), cert_file=cert, key_file=key,
                       alpn=alpn, **common)
    if protocol == "socks":
        auth = _get(settings, "auth", str, place, "noauth") or "noauth"
        if auth not in ("noauth", "password"):
            raise _fail(place, "settings.auth", f"invalid value {auth!r} (expected noauth or password)")
        accounts = parse_accounts(settings, place)
        if auth == "password" and not accounts:
            raise _fail(place, "settings.accounts", "auth is password but no account is given")
        if auth == "noauth":
            accounts = ()
        return Inbound(udp=_get(settings, "udp", bool, place, False), accounts=accounts, **common)
    # http
    return Inbound(accounts=parse_accounts(settings, place), **common)


def parse_xray_config(data: Any, xray_bin: str | None = None) -> XrayConfig:
    """Validate the ``xray_config`` object. ``xray_bin`` None means look for one."""
    if not isinstance(data, dict):
        raise ConfigError("invalid config: xray_config: expected an object")
    inbounds_raw = _get(data, "inbounds", list, "xray_config", [])
    served: list[Inbound] = []
    foreign: list[dict] = []
    for i, item in enumerate(inbounds_raw):
        parsed = parse_inbound(item, i)
        if isinstance(parsed, Inbound):
            served.append(parsed)
        elif isinstance(parsed, dict):
            foreign.append(parsed)
    binds: dict[tuple[str, int, str], Inbound] = {}
    tags: dict[str, int] = {}
    for ib in served:
        for net, on in (("tcp", ib.tcp), ("udp", ib.udp)):
            if not on:
                continue
            other = binds.get((ib.listen, ib.port, net))
            if other is not None:
                raise _fail(ib.where, "port", f"{ib.address}/{net} is also used by {other.where}")
            binds[(ib.listen, ib.port, net)] = ib
        if ib.tag:
            if ib.tag in tags:
                raise _fail(ib.where, "tag", f"not unique, xray_config.inbounds[{tags[ib.tag]}] has it too")
            tags[ib.tag] = ib.index
    outbound_protocols = []
    for i, item in enumerate(_get(data, "outbounds", list, "xray_config", [])):
        place = f"xray_config.outbounds[{i}]"
        if not isinstance(item, dict):
            raise _fail(place, "outbound", "expected an object")
        proto = _get(item, "protocol", str, place, "")
        if proto not in ("freedom", "blackhole") and not foreign:
            raise _fail(place, "protocol", f"{proto!r} is not supported (only freedom: direct)")
        outbound_protocols.append(proto)
    for key in ("log", "api", "stats", "policy", "routing"):
        _get(data, key, dict, "xray_config", {})
    bin_path = ""
    if foreign:
        bin_path = find_xray() if xray_bin is None else xray_bin
        if not bin_path:
            first = foreign[0]
            idx = list(inbounds_raw).index(first)
            raise _fail(where(idx, first.get("tag") or ""), "protocol",
                        f"{first.get('protocol')!r} is not served natively (only "
                        f"{', '.join(NATIVE_PROTOCOLS)}) and no xray binary was found "
                        "(install xray on PATH or set EHCO_XRAY_BIN)")
    return XrayConfig(inbounds=tuple(served), foreign=tuple(foreign), xray_bin=bin_path,
                      outbound_protocols=tuple(outbound_protocols) or ("freedom",), raw=data)
