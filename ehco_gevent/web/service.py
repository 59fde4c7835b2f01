"""The web service's life cycle: bind, serve with gevent's WSGI server, sample traffic, rebind.

The Flask app is built at start (not when the factory runs) so the blueprints of services loaded
after this one are there too. Binding goes through :func:`bind_socket`, so a taken port is a
:class:`ListenError` naming the address, which the CLI reports as one line.
"""

from __future__ import annotations

import logging
import socket as _stdsocket
import time
from typing import Any

import gevent
from gevent.pywsgi import LoggingLogAdapter, WSGIServer

from ..addresses import bind_socket
from ..config import Config
from .auth import unguarded_exposure
from .traffic import SAMPLE_INTERVAL, PingLatency, TrafficHistory

log = logging.getLogger("ehco.web")
#: seconds a ping reading is reused before the metrics are rendered again
PING_REFRESH = 5.0


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class WebService:
    def __init__(self, app: Any):
        self.app = app
        self.flask = None
        self.server: WSGIServer | None = None
        self.bound: tuple[str, int] | None = None
        self.history = TrafficHistory()
        self.pings = PingLatency()
        self._pings_at = 0.0
        self._sampler: gevent.Greenlet | None = None
        self._unguarded = False

    # -- service hooks ------------------------------------------------------------------------
    def start(self) -> None:
        self._sampler = gevent.spawn(self._sample_loop)
        self._serve(self.app.config)

    def on_config(self, cfg: Config) -> None:
        """Follow a reload: a new web_host/web_port rebinds; auth settings apply per request."""
        want = (cfg.web_host, cfg.web_port) if cfg.web_port > 0 else None
        if want == self.bound:
            self._warn_if_unguarded(cfg)
            return
        old = self.server
        if want is not None:
            try:
                self._serve(cfg)
            except Exception as exc:  # keep serving on the old address rather than on none
                log.error("%s; web server stays at %s", exc,
                          join_host_port(*self.bound) if self.bound else "(not running)")
                return
        else:
            self.server, self.bound = None, None
            log.info("web server stopped (web_port is 0)")
        if old is not None and old is not self.server:
            # in its own greenlet: the reload may have come in through this very server, and
            # its request should finish (and answer) before the old server is torn down
            gevent.spawn(old.stop, 5)

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.kill(block=False)
        if self.server is not None:
            self.server.stop(timeout=1)
            self.server = None

    # -- serving ------------------------------------------------------------------------------
    def _serve(self, cfg: Config | None) -> None:
        if cfg is None or cfg.web_port <= 0:
            return
        addr = join_host_port(cfg.web_host, cfg.web_port)
        sock = bind_socket(addr, _stdsocket.SOCK_STREAM, "web server")
        if self.flask is None:
            from .views import create_flask_app

            self.flask = create_flask_app(self.app, self)
        server = WSGIServer(sock, self.flask,
                            log=LoggingLogAdapter(logging.getLogger("ehco.web.access"),
                                                  logging.DEBUG),
                            error_log=LoggingLogAdapter(log, logging.ERROR))
        server.start()
        self.server, self.bound = server, (cfg.web_host, cfg.web_port)
        log.info("Start Web Server at http://%s", addr)
        self._unguarded = False
        self._warn_if_unguarded(cfg)

    def _warn_if_unguarded(self, cfg: Config) -> None:
        """Warn (once per bind, and again when a reload drops the guard) when the server is
        reachable beyond this machine with neither a token nor basic auth."""
        unguarded = self.server is not None and unguarded_exposure(
            cfg.web_host, cfg.web_token, cfg.web_auth_user, cfg.web_auth_pass)
        if unguarded and not self._unguarded:
            log.warning("web server at http://%s is reachable beyond this machine with no "
                        "web_token and no web_auth_user/web_auth_pass: anyone who can reach it "
                        "sees the relays and can reload the config; set web_token, or "
                        "--web_host 127.0.0.1", join_host_port(cfg.web_host, cfg.web_port))
        self._unguarded = unguarded

    @property
    def port(self) -> int | None:
        return self.server.server_port if self.server is not None else None

    # -- live data ----------------------------------------------------------------------------
    def _sample_loop(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a bad sample must not end the chart feed
                log.debug("traffic sample failed", exc_info=True)
            gevent.sleep(SAMPLE_INTERVAL)

    def sample(self) -> None:
        labels = list(self.app.relays.relays)
        self.history.sample(time.time(), self.app.registry.relay_totals(), labels)

    def ping_latencies(self) -> list[dict]:
        """Latency per pinged host, read from the rendered metrics at most every few seconds."""
        now = time.monotonic()
        if now - self._pings_at >= PING_REFRESH:
            self._pings_at = now
            try:
                from ..observability.metrics import render_metrics

                body, _ = render_metrics(self.app)
                self.pings.update(body.decode("utf-8", "replace"))
            except Exception as exc:  # metrics missing or failing: the page shows no pings
                log.debug("ping latencies unavailable: %s", exc)
        return self.pings.to_json()


def create_service(app: Any) -> WebService:
    return WebService(app)
