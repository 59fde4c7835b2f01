"""ICMP latency to the hosts of the relays' TCP remotes, as ehco's ``enable_ping``.

Every distinct host among the ``tcp_remotes`` (scheme, path and port stripped) gets one echo
request every :data:`INTERVAL` seconds (``EHCO_PING_INTERVAL`` overrides it); the first requests are spread evenly over the interval so
the pings of many hosts do not leave together. The metric label ``label`` is the label of the
first relay that names the host, as in ehco.

Sockets: an unprivileged ICMP datagram socket (``SOCK_DGRAM, IPPROTO_ICMP``, allowed when the
process's group is inside ``net.ipv4.ping_group_range``) is tried first; the kernel then owns
the echo identifier and hands the socket only its own replies. Otherwise a raw socket (root or
CAP_NET_RAW), which sees every ICMP packet of the host, so replies are matched by source,
identifier and sequence. When neither can be opened, one log line says so and the node runs on
without ping.

Packet building and parsing are the plain functions at the top (tested directly); the greenlets
below only send, wait and record.
"""

from __future__ import annotations

import logging
import os
import random
import socket as _stdsocket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import gevent
from gevent import socket

from ..config import remote_host_port

log = logging.getLogger("ehco.ping")

#: seconds between two pings of one host (ehco's pingInterval)
INTERVAL = 30.0
#: seconds to wait for a reply before the ping counts as lost
TIMEOUT = 5.0
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


# -- packets ------------------------------------------------------------------------------------
def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): ones' complement of the ones' complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo(icmp_type: int, ident: int, seq: int, payload: bytes = b"") -> bytes:
    """An ICMP echo message with its checksum filled in. (For ICMPv6 the kernel recomputes the
    checksum over its pseudo-header, so the value here does not matter there.)"""
    header = _HEADER.pack(icmp_type, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    return _HEADER.pack(icmp_type, 0, checksum(header + payload), ident & 0xFFFF,
                        seq & 0xFFFF) + payload


def build_echo_request(ident: int, seq: int, payload: bytes = b"", v6: bool = False) -> bytes:
    return build_echo(ICMP6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST, ident, seq, payload)


def strip_ipv4_header(packet: bytes) -> bytes:
    """What an IPv4 raw socket reads starts with the IP header (IHL words long)."""
    if not packet or packet[0] >> 4 != 4:
        return b""
    return packet[(packet[0] & 0x0F) * 4:]


def parse_echo_reply(message: bytes, v6: bool = False) -> tuple[int, int, bytes] | None:
    """``(identifier, sequence, payload)`` of an echo reply, or None for anything else (other
    ICMP types, truncated data, a bad IPv4 checksum)."""
    if len(message) < _HEADER.size:
        return None
    icmp_type, code, _, ident, seq = _HEADER.unpack_from(message)
    if icmp_type != (ICMP6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY) or code != 0:
        return None
    if not v6 and checksum(message) != 0:
        return None
    return ident, seq, message[_HEADER.size:]


def ping_host(remote: str) -> str | None:
    """The host part of a tcp remote (``host:port``, ``[v6]:port``, ``ws://host:port/path``)."""
    try:
        host, _ = remote_host_port(remote)
    except ValueError:
        return None
    return host or None


def ping_targets(relays: Iterable[Any]) -> dict[str, str]:
    """host -> label of the first relay naming it, over every relay's tcp_remotes in order."""
    out: dict[str, str] = {}
    for relay in relays:
        for remote in relay.tcp_remotes:
            host = ping_host(remote)
            if host is not None and host not in out:
                out[host] = relay.label
    return out


# -- sockets ------------------------------------------------------------------------------------
class PingUnavailable(OSError):
    """Neither an ICMP datagram socket nor a raw socket may be opened here."""


def open_icmp_socket(family: int) -> tuple[socket.socket, bool]:
    """``(socket, raw)``: a datagram ICMP socket if allowed, else a raw one."""
    proto = _stdsocket.IPPROTO_ICMPV6 if family == _stdsocket.AF_INET6 else _stdsocket.IPPROTO_ICMP
    errors = []
    for kind, raw in ((_stdsocket.SOCK_DGRAM, False), (_stdsocket.SOCK_RAW, True)):
        try:
            return socket.socket(family, kind, proto), raw
        except OSError as exc:
            errors.append(f"{'raw' if raw else 'datagram'}: {exc.strerror or exc}")
    raise PingUnavailable("; ".join(errors))


def ping_once(ip: str, family: int, seq: int, ident: int, timeout: float = TIMEOUT) -> float | None:
    """Send one echo request to ``ip``; the round trip in seconds, or None if no reply came
    within ``timeout``. Raises PingUnavailable when no ICMP socket can be opened."""
    sock, raw = open_icmp_socket(family)
    v6 = family == _stdsocket.AF_INET6
    try:
        payload = os.urandom(16)
        packet = build_echo_request(ident, seq, payload, v6)
        started = time.monotonic()
        deadline = started + timeout
        sock.sendto(packet, (ip, 0))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            try:
                data, addr = sock.recvfrom(65535)
            except socket.timeout:
                return None
            if raw and not v6:
                data = strip_ipv4_header(data)
            reply = parse_echo_reply(data, v6)
            if reply is None or addr[0] != ip:
                continue
            got_ident, got_seq, got_payload = reply
            # a datagram socket's identifier is the kernel's: only raw sockets check it
            if got_seq != seq or got_payload != payload or (raw and got_ident != ident):
                continue
            return time.monotonic() - started
    finally:
        sock.close()


# -- the service --------------------------------------------------------------------------------
@dataclass
class _Target:
    host: str
    label: str
    ident: int
    greenlet: gevent.Greenlet | None = None
    ip: str = ""
    seq: int = 0
    last_ms: float | None = None
    series: set = field(default_factory=set)


class PingService:
    """One greenlet per host; follows reloads (new hosts start, gone hosts stop)."""

    def __init__(self, app: Any, interval: float = INTERVAL, timeout: float = TIMEOUT):
        self.app = app
        self.interval = interval
        self.timeout = timeout
        self.targets: dict[str, _Target] = {}
        self.unavailable: set[int] = set()  # address families without any ICMP socket
        from .metrics import metrics_for  # the metrics module defines every series

        metrics = metrics_for(app)
        self.duration = metrics.ping_duration
        self.requests = metrics.ping_requests

    # -- service hooks ------------------------------------------------------------------------
    def start(self) -> None:
        self.on_config(self.app.config)

    def on_config(self, cfg: Any) -> None:
        want = ping_targets(cfg.relay_configs) if cfg is not None and cfg.enable_ping else {}
        for host in list(self.targets):
            if want.get(host) != self.targets[host].label:
                self._drop(host)
        new = [host for host in want if host not in self.targets]
        if new:
            log.info("ping: %d host(s) every %.0f s: %s", len(new), self.interval, ", ".join(new))
        for i, host in enumerate(new):
            target = _Target(host, want[host], ident=random.randrange(1, 0xFFFF))
            offset = i * self.interval / len(new)
            target.greenlet = gevent.spawn_later(offset, self._run, target)
            self.targets[host] = target

    #: a subscription refresh changed the relays: follow their hosts as after a reload
    on_relays = on_config

    def stop(self) -> None:
        for host in list(self.targets):
            self._drop(host)

    def latest(self) -> dict[str, float | None]:
        """host -> round trip of its last ping in milliseconds, or None (lost or not yet)."""
        return {host: t.last_ms for host, t in self.targets.items()}

    # -- pinging ------------------------------------------------------------------------------
    def _drop(self, host: str) -> None:
        target = self.targets.pop(host)
        if target.greenlet is not None:
            target.greenlet.kill(block=False)
        for labels in target.series:
            for metric in (self.duration, self.requests):
                try:
                    metric.remove(*labels)
                except KeyError:
                    pass

    def _run(self, target: _Target) -> None:
        while True:
            started = time.monotonic()
            try:
                self.ping(target)
            except Exception:  # one bad round must not end the host's pings
                log.debug("ping %s failed", target.host, exc_info=True)
            gevent.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def ping(self, target: _Target) -> float | None:
        """One round for a target: resolve, send, wait; records the metrics; RTT in ms."""
        try:
            infos = socket.getaddrinfo(target.host, None, 0, _stdsocket.SOCK_RAW)
        except OSError as exc:
            log.log(logging.WARNING if target.ip == "" and target.seq == 0 else logging.DEBUG,
                    "ping: cannot resolve %s (relay %s): %s", target.host, target.label, exc)
            target.seq += 1
            target.last_ms = None
            return None
        family, _, _, _, addr = infos[0]
        if family in self.unavailable:
            return None
        ip = addr[0]
        if ip != target.ip:
            log.debug("ping: resolved %s as %s", target.host, ip)
            target.ip = ip
        labels = (ip, target.host, target.label)
        target.seq = (target.seq + 1) & 0xFFFF
        try:
            rtt = ping_once(ip, family, target.seq, target.ident, self.timeout)
        except PingUnavailable as exc:
            self.unavailable.add(family)
            log.warning("ping disabled for %s hosts: no ICMP socket allowed (%s); allow "
                        "unprivileged ping with sysctl net.ipv4.ping_group_range, or run as "
                        "root / with CAP_NET_RAW", "IPv6" if family == _stdsocket.AF_INET6
                        else "IPv4", exc)
            return None
        except OSError as exc:  # e.g. ENETUNREACH: counts as a lost ping
            log.debug("ping %s (%s): %s", target.host, ip, exc)
            rtt = None
        target.series.add(labels)
        self.requests.labels(*labels).inc()
        # the histogram's series exist from the first request on, so that the loss alert
        # (requests against responses) sees a host that never answered
        self.duration.labels(*labels)
        if rtt is None:
            target.last_ms = None
            log.debug("ping %s (%s) seq=%d: no reply within %.0f s", target.host, ip,
                      target.seq, self.timeout)
            return None
        self.duration.labels(*labels).observe(rtt)
        target.last_ms = rtt * 1000
        log.debug("ping %s (%s) seq=%d: %.3f ms", target.host, ip, target.seq, target.last_ms)
        return target.last_ms


#: the smallest EHCO_PING_INTERVAL taken; a smaller one falls back to INTERVAL with a warning
MIN_INTERVAL = 0.1


def interval_from_env(environ: Any = os.environ) -> float:
    """Seconds between pings: ``EHCO_PING_INTERVAL`` when set (ehco had a fixed 30 s; a finer
    smokeping-like view, or a test that needs two pings quickly, sets it), else INTERVAL."""
    raw = environ.get("EHCO_PING_INTERVAL", "").strip()
    if not raw:
        return INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value >= MIN_INTERVAL:
        return value
    log.warning("EHCO_PING_INTERVAL=%r is not a number of seconds >= %g; pinging every %.0f s",
                raw, MIN_INTERVAL, INTERVAL)
    return INTERVAL


def create_service(app: Any) -> PingService:
    return PingService(app, interval=interval_from_env())
