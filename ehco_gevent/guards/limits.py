"""Deadlines and caps for what a peer gets before it proves itself (issue 10), as config keys.

Every limit is a top-level config key (beyond ehco 1.1.4, which had none of them) with the
default below; docs/security.md lists them with what each protects. They are process-wide:
:func:`current` is what the listeners read when a connection starts, and :func:`set_current`
is called on every successful load, so a reload changes them for new connections.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable


@dataclass(frozen=True)
class Limits:
    #: seconds from accept until the web server has a request's whole head (line + headers)
    web_header_timeout: float = 10.0
    #: seconds a keep-alive web connection may wait for (and send) its next request head
    web_idle_timeout: float = 60.0
    #: web connections served at once; more wait in the kernel's accept queue, using no fd
    web_max_connections: int = 256
    #: seconds an inbound proxy (http, socks, trojan, shadowsocks) client has to finish its
    #: whole handshake (TLS included) and name its target
    proxy_handshake_timeout: float = 30.0
    #: unauthenticated handshakes in progress at once per proxy inbound; a connection beyond
    #: it is closed at once (the slots free up as handshakes finish or hit their deadline)
    proxy_max_handshakes: int = 256
    #: seconds a ws/wss/mwss client has for the whole upgrade (TLS included); ehco's was 10 s
    ws_handshake_timeout: float = 10.0
    #: receive buffer asked for every UDP listening socket, bytes (the kernel caps it at
    #: net.core.rmem_max unless the process may use SO_RCVBUFFORCE)
    udp_receive_buffer: int = 4 * 1024 * 1024

    # -- tunnel listeners (mtcp, ws, wss, mwss) and smux sessions ---------------------------
    #: unauthenticated handshakes in progress at once per tunnel listener (mtcp: accept until
    #: the first stream; ws, wss: until the 101; mwss: until the first stream); a connection
    #: beyond it is closed at once
    tunnel_max_handshakes: int = 256
    #: seconds an smux session (mtcp: from accept; mwss: from the 101) has to open its first
    #: stream; Go ehco's client opens one at once
    smux_handshake_timeout: float = 10.0
    #: streams open at once in one smux session a peer opened (Go ehco's client uses at most
    #: 5 and then dials another session); a SYN beyond it is answered with FIN
    smux_max_streams: int = 32
    #: new streams per second per smux session (burst: one second's worth); over it the
    #: session's reader waits, which slows that peer only
    smux_streams_per_second: float = 500.0
    #: seconds a served smux session that carried streams may sit with none open; longer than
    #: the 10 minutes Go ehco's client keeps a session pooled, so a client never reuses a
    #: session we closed
    smux_idle_timeout: float = 660.0
    #: frames per second per session that carry nothing (smux NOP, PSH/FIN for unknown or
    #: closed streams; WebSocket ping, pong and empty frames); burst: 1 s worth.
    #: A session over it is closed
    empty_frames_per_second: float = 1000.0
    #: seconds the TCP connection of a session cut for flooding is kept open and unread
    #: before it is reset (guards/penalty.py): the flooder waits instead of reconnecting
    flood_hold_seconds: float = 10.0


KEYS = frozenset(f.name for f in fields(Limits))
_CURRENT = Limits()


def current() -> Limits:
    return _CURRENT


def set_current(limits: Limits) -> None:
    global _CURRENT
    _CURRENT = limits


def parse_limits(data: dict[str, Any], fail: Callable[[str, str], Exception]) -> Limits:
    """The limits a config document sets (others keep their default); ``fail(key, problem)``
    builds the error for a bad value."""
    values: dict[str, Any] = {}
    for f in fields(Limits):
        if data.get(f.name) is None:
            continue
        value = data[f.name]
        whole = f.type in (int, "int")
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise fail(f.name, f"expected a {'whole ' if whole else ''}number, got {value!r}"[:90])
        if value <= 0:
            raise fail(f.name, "must be greater than 0")
        values[f.name] = value if whole else float(value)
    return Limits(**values)
