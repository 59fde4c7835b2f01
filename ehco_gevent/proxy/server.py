"""The embedded proxy service: serves ``xray_config``'s inbounds in the process's gevent hub.

Registered in ``app.SERVICE_FACTORIES``. On every config load ``expand_config`` validates
``xray_config`` (a bad one fails the start with exit 2, or fails the reload and changes
nothing). A reload restarts only the inbounds whose protocol or listen address changed; other
settings (clients, fallback, accounts) are swapped into the running inbound, and users come
and go without restarting anything.
"""

from __future__ import annotations

import importlib
import logging
import socket as _stdsocket
from typing import Any

from gevent.server import StreamServer

from ..addresses import ListenError, bind_socket, format_addr
from ..config import Config, ConfigError
from ..guards.listeners import Listener
from ..relay import PROXY_HEADER_TIMEOUT, limited
from ..transports import proxy_protocol
from ..transports.streams import SocketStream
from .common import REFUSED, Context, HandshakeRefused, HandshakeTimeout, refused
from .users import STORE, UserStore
from .xray_config import Inbound, XrayConfig, parse_xray_config

log = logging.getLogger("ehco.proxy")

#: the module:function serving one accepted TCP connection, per protocol
TCP_HANDLERS = {
    "shadowsocks": "ehco_gevent.proxy.shadowsocks:handle_tcp",
    "trojan": "ehco_gevent.proxy.trojan:handle_tcp",
    "socks": "ehco_gevent.proxy.socks:handle_tcp",
    "http": "ehco_gevent.proxy.http_proxy:handle_tcp",
}


def _load(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def parse_for(cfg: Config) -> XrayConfig | None:
    """The validated xray_config of a loaded config, with the file named in errors."""
    if cfg.xray_config is None:
        return None
    try:
        return parse_xray_config(cfg.xray_config)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("invalid config:", f"invalid config {cfg.path}:", 1)) from None


class InboundServer:
    """One native inbound: its TCP listener (and UDP socket for shadowsocks)."""

    def __init__(self, inbound: Inbound, store: UserStore, registry):
        self.ctx = Context(inbound, store, registry)
        self.tcp: StreamServer | None = None
        self.udp = None
        self.extra: Any = None  # protocol state (TLS context, socks UDP relay)
        self._handler = _load(TCP_HANDLERS[inbound.protocol])

    @property
    def inbound(self) -> Inbound:
        return self.ctx.inbound

    def start(self) -> None:
        ib = self.inbound
        what = f"proxy inbound {ib.where}"
        listen = ib.address
        setup = getattr(importlib.import_module(self._handler.__module__), "setup", None)
        tcp_sock = udp_sock = None
        if setup is not None:
            try:
                setup(self.ctx)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError(f"invalid config: {ib.where}: streamSettings.tlsSettings: "
                                  f"cannot load the certificate: {exc}") from None
        try:
            if ib.tcp:
                tcp_sock = bind_socket(listen, _stdsocket.SOCK_STREAM, what)
            if ib.udp and ib.protocol == "shadowsocks":
                udp_sock = bind_socket(listen, _stdsocket.SOCK_DGRAM, what + " (udp)")
        except Exception:
            for sock in (tcp_sock, udp_sock):
                if sock is not None:
                    sock.close()
            raise
        if tcp_sock is not None:
            self.tcp = Listener(tcp_sock, self._handle, self.ctx.name, kind="proxy")
            self.tcp.start()
        if udp_sock is not None:
            from .shadowsocks import ShadowsocksUDP

            self.udp = ShadowsocksUDP(self.ctx, udp_sock)
            self.udp.start()
        log.info("proxy %s: %s listening on %s%s", self.ctx.name, ib.protocol, listen,
                 " (tcp+udp)" if self.udp else "")

    def _handle(self, sock, address) -> None:
        client = format_addr(address)
        try:
            if self.inbound.accept_proxy:
                header = self._accept_header(sock, client)
                if header is None:
                    return
                if header.src is not None:
                    client = format_addr(header.src)
            self._handler(self.ctx, sock, client)
        except HandshakeTimeout as exc:
            refused(self.ctx.name, client, "handshake_timeout", f"{exc}, connection closed")
        except HandshakeRefused:
            REFUSED["handshake_cap"] += 1  # its gate logged it (at most once per interval)
        except Exception as exc:  # one bad client ends its own connection only
            log.debug("proxy %s: %s: %s: %s", self.ctx.name, client, type(exc).__name__, exc)
        finally:
            sock.close()

    def _accept_header(self, sock, client: str):
        """acceptProxyProtocol: the header before the protocol's first byte, or None (logged,
        the connection closed) when there is none; the payload after it stays unread."""
        try:
            return proxy_protocol.receive(SocketStream(sock), PROXY_HEADER_TIMEOUT)
        except proxy_protocol.EmptyConnection:
            log.debug("proxy %s: %s closed before sending a PROXY header", self.ctx.name, client)
        except proxy_protocol.ProxyProtocolError as exc:
            limited.warning((self.ctx.name, "PROXY header", proxy_protocol.cause(exc)),
                            "proxy %s: closed connection from %s: bad PROXY header: %s",
                            self.ctx.name, client, exc)
        return None

    def update(self, inbound: Inbound) -> None:
        """Same protocol and address: new settings apply to new connections."""
        self.ctx.inbound = inbound
        setup = getattr(importlib.import_module(self._handler.__module__), "setup", None)
        if setup is not None:
            setup(self.ctx)

    def stop(self, drop: bool = True) -> None:
        if self.tcp is not None:
            self.tcp.close()
            if drop:
                self.tcp.pool.kill(block=True, timeout=5)
        if self.udp is not None:
            self.udp.stop()
        teardown = getattr(importlib.import_module(self._handler.__module__), "teardown", None)
        if teardown is not None:
            teardown(self.ctx)
        log.info("proxy %s: stopped listening on %s", self.ctx.name, self.inbound.address)


class ProxyService:
    def __init__(self, app):
        self.app = app
        self.store = STORE
        self.servers: dict[tuple, InboundServer] = {}
        self.xray: XrayConfig | None = None
        self.panel = None
        self.child = None

    # -- App hooks ----------------------------------------------------------------------------
    def expand_config(self, cfg: Config) -> Config:
        parse_for(cfg)  # raises ConfigError: refuses the start or the reload
        return cfg

    def start(self) -> None:
        cfg = self.app.config
        xray = parse_for(cfg)
        if xray is not None:
            try:
                self._apply(xray, starting=True)
            except ConfigError as exc:
                raise ConfigError(str(exc).replace("invalid config:", f"invalid config {cfg.path}:", 1)) from None
        self._sync_panel(cfg)

    def on_config(self, cfg: Config) -> None:
        xray = parse_for(cfg)
        self._apply(xray or XrayConfig(), starting=False)
        self._sync_panel(cfg)

    def stop(self) -> None:
        if self.panel is not None:
            self.panel.stop()
            self.panel = None
        if self.child is not None:
            self.child.stop()
            self.child = None
        for server in list(self.servers.values()):
            server.stop(drop=True)
        self.servers.clear()

    # -- applying a config ----------------------------------------------------------------------
    def _apply(self, xray: XrayConfig, starting: bool) -> None:
        self.store.set_config(xray)
        wanted = {ib.listen_key: ib for ib in xray.inbounds}
        for key in list(self.servers):
            if key not in wanted:
                self.servers.pop(key).stop(drop=True)
        for key, ib in wanted.items():
            server = self.servers.get(key)
            if server is not None:
                if server.inbound != ib:
                    server.update(ib)
                continue
            server = InboundServer(ib, self.store, self.app.registry)
            try:
                server.start()
            except (ListenError, ConfigError) as exc:
                if starting:
                    raise
                log.error("proxy %s: cannot start, skipped: %s", ib.where, exc)
                continue
            self.servers[key] = server
        self._apply_child(xray)
        self.xray = xray

    def _apply_child(self, xray: XrayConfig) -> None:
        if not xray.foreign:
            if self.child is not None:
                self.child.stop()
                self.child = None
            return
        from .xray_child import XrayChild

        if self.child is not None and self.child.same(xray):
            return
        if self.child is not None:
            self.child.stop()
        self.child = XrayChild(xray)
        self.child.start()

    def _sync_panel(self, cfg: Config) -> None:
        url = cfg.sync_traffic_endpoint if cfg.xray_config is not None else ""
        if self.panel is not None and (self.panel.url != url or not url):
            self.panel.stop()
            self.panel = None
            if not url:
                self.store.remove_panel_users("panel no longer configured")
        if url:
            from .panel import PanelSync

            if self.panel is None:
                self.panel = PanelSync(url, self.store, cfg.sync_traffic_interval or 60)
                self.panel.start()
            else:
                self.panel.interval = cfg.sync_traffic_interval or 60


def create_service(app) -> ProxyService:
    return ProxyService(app)
