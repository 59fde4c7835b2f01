"""``sub_configs``: Clash subscriptions turned into relays, and the proxy-provider route.

Registered last in :data:`ehco_gevent.app.SERVICE_FACTORIES`. The relays it derives are added
to the config in ``expand_config``, so they are started, compared on reload, dumped by
``/api/v1/config/``, counted in the metrics and listed among the connections exactly like the
relays of ``relay_configs``.

A subscription is fetched (GET, 10 s timeout) at start-up, on every reload (SIGHUP, web, the
reload ticker) and on every provider request. A fetch that fails, or a body that is not a Clash
YAML with a ``proxies`` list, keeps the last good proxies and their relays serving and is
logged (and told in the provider answer); at start-up, with nothing good yet, it is a config
error (exit 2), as is a subscription added by a reload that cannot be fetched.

The rules themselves (labels, groups, which relays keep their port) are plain functions in
:mod:`ehco_gevent.clash.clash_groups`.
"""

from __future__ import annotations

import logging
import socket as _stdsocket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..addresses import ListenError, bind_socket
from .clash_groups import (Plan, Proxy, SubscriptionError, derive_relays, join_host_port,
                           parse_subscription, provider_proxies, provider_yaml)
from ..config import Config, ConfigError, RelayConfig, SubConfig, check_unique_labels, split_host_port
from ..version import VERSION

log = logging.getLogger("ehco.clash")

FETCH_TIMEOUT = 10.0
#: many subscription services answer Clash YAML only to a client that says it is Clash
USER_AGENT = f"clash ehco-gevent/{VERSION}"
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


@dataclass
class SubState:
    sub: SubConfig
    proxies: list[Proxy]
    plan: Plan


def fetch_subscription(sub: SubConfig) -> tuple[list[Proxy], list[str]]:
    """GET and parse one subscription; every failure is a SubscriptionError naming it."""
    import requests

    try:
        resp = requests.get(sub.url, timeout=FETCH_TIMEOUT, headers={"User-Agent": USER_AGENT})
        resp.raise_for_status()
        return parse_subscription(resp.text)
    except requests.RequestException as exc:
        raise SubscriptionError(f"subscription {sub.name!r}: cannot fetch {sub.url}: {exc}") from None
    except SubscriptionError as exc:
        raise SubscriptionError(f"subscription {sub.name!r} from {sub.url}: {exc}") from None


def allocate_port(host: str, udp: bool, taken: set[int]) -> int:
    """A port free on ``host`` now (for UDP too when asked), by binding port 0 and releasing it."""
    for _ in range(50):
        sock = bind_socket(join_host_port(host, 0), _stdsocket.SOCK_STREAM, "clash relay")
        port = sock.getsockname()[1]
        sock.close()
        if port in taken:
            continue
        if udp:
            try:
                bind_socket(join_host_port(host, port), _stdsocket.SOCK_DGRAM, "clash relay").close()
            except ListenError:
                continue
        taken.add(port)
        return port
    raise ListenError(f"clash relay: no free port on {host}")


def listen_port(relay: RelayConfig) -> int:
    return split_host_port(relay.listen)[1]


class SubscriptionService:
    def __init__(self, app: Any):
        self.app = app
        #: the subscriptions whose relays run now, by name
        self.current: dict[str, SubState] = {}
        #: derived by the last expand_config, promoted once that config is running
        self._pending: dict[str, SubState] = {}
        #: last refresh error per subscription name ("" when the last one worked); the web
        #: index finds it by this name
        self.subscription_errors: dict[str, str] = {}

    # -- fetching and deriving ----------------------------------------------------------------
    def _fetch(self, sub: SubConfig) -> list[Proxy] | None:
        """Fresh proxies, or None (error logged and kept) when the fetch or parse failed."""
        try:
            proxies, warnings = fetch_subscription(sub)
        except SubscriptionError as exc:
            self.subscription_errors[sub.name] = str(exc)
            return None
        for warning in warnings:
            log.warning("subscription %r: %s", sub.name, warning)
        self.subscription_errors[sub.name] = ""
        return proxies

    def _proxies(self, sub: SubConfig, starting: bool) -> list[Proxy]:
        proxies = self._fetch(sub)
        if proxies is not None:
            return proxies
        last = self.current.get(sub.name)
        if last is None or last.sub != sub:
            prefix = "" if starting else "reload: "
            raise ConfigError(f"{prefix}{self.subscription_errors[sub.name]}")
        log.error("%s; keeping its last %d proxies", self.subscription_errors[sub.name], len(last.proxies))
        return last.proxies

    def _derive(self, cfg: Config, sub: SubConfig, proxies: list[Proxy],
                taken: set[int]) -> SubState:
        try:
            plan = derive_relays(sub.name, proxies, cfg.web_host, self.app.relays.configs(),
                                 lambda udp: allocate_port(cfg.web_host, udp, taken))
        except ListenError as exc:
            raise ConfigError(f"subscription {sub.name!r}: {exc}") from None
        return SubState(sub, proxies, plan)

    def _own_labels(self) -> set[str]:
        return {r.label for state in self.current.values() for r in state.plan.relays}

    # -- service hooks ------------------------------------------------------------------------
    def expand_config(self, cfg: Config) -> Config:
        """Add the relays of every subscription to a freshly loaded config."""
        starting = self.app.config is None
        taken: set[int] = set()
        self._pending = {}
        extra: list[RelayConfig] = []
        for sub in cfg.sub_configs:
            state = self._derive(cfg, sub, self._proxies(sub, starting), taken)
            self._pending[sub.name] = state
            extra.extend(state.plan.relays)
            log.debug("subscription %r: %d proxies, %d relays", sub.name, len(state.proxies),
                      len(state.plan.relays))
        return cfg.with_relays(cfg.relay_configs + tuple(extra)) if extra else cfg

    def start(self) -> None:
        self._promote()
        for name, state in self.current.items():
            log.info("subscription %r: %d proxies as %d relays (%s)", name, len(state.proxies),
                     len(state.plan.relays), ", ".join(r.label for r in state.plan.relays))

    def on_config(self, cfg: Config) -> None:
        self._promote()

    def _promote(self) -> None:
        self.current, self._pending = self._pending, {}

    def blueprint(self):
        from flask import Blueprint, Response, request

        from ..web.errors import echo_error

        bp = Blueprint("clash", __name__)

        @bp.get("/clash_proxy_provider/")
        def clash_proxy_provider():
            name = request.args.get("sub_name", "")
            grouped = request.args.get("grouped", "false").lower() in ("true", "1", "yes")
            if not name:  # Go ehco's answers, word for word: text here, JSON below
                return Response("sub_name is empty", 400, mimetype="text/plain")
            names = [s.name for s in self.app.config.sub_configs] if self.app.config else []
            if name not in names:
                return echo_error(400, f"sub_name={name} not found", sub_names=names)
            body, error = self.provider(name, grouped, request_host(request.host_url))
            headers = {"X-Ehco-Subscription-Error": one_line(error)[:500]} if error else {}
            return Response(body, 200, mimetype="text/yaml", headers=headers)

        return bp

    # -- provider -----------------------------------------------------------------------------
    def refresh(self, name: str) -> str:
        """Fetch one subscription again and move its relays to it; "" or the error kept."""
        app = self.app
        sub = next((s for s in app.config.sub_configs if s.name == name), None)
        if sub is None:
            return f"unknown sub_name {name!r}"
        proxies = self._fetch(sub)
        if proxies is None:
            log.error("%s; keeping its last relays", self.subscription_errors[name])
            return self.subscription_errors[name]
        with app._reload_lock:  # one writer of the running relays at a time
            cfg = app.config
            if sub not in cfg.sub_configs:  # a reload changed it meanwhile
                return ""
            try:
                state = self._derive(cfg, sub, proxies, set())
            except ConfigError as exc:
                log.error("%s", exc)
                return str(exc)
            own = self._own_labels()
            states = dict(self.current)
            states[name] = state
            relays = tuple(r for r in cfg.relay_configs if r.label not in own) + tuple(
                r for s in cfg.sub_configs if s.name in states for r in states[s.name].plan.relays)
            if relays != cfg.relay_configs:
                try:
                    check_unique_labels(relays, f"{cfg.path} (subscription {name})")
                except ConfigError as exc:
                    log.error("%s; keeping the running relays", exc)
                    return str(exc)
                _, errors = app.relays.apply(relays)
                app.config = cfg.with_relays(relays)
                for service in app.services:
                    follow = getattr(service, "on_relays", None)
                    if follow is not None:
                        follow(app.config)
                if errors:
                    return "; ".join(errors)
            self.current[name] = state
        return ""

    def provider(self, name: str, grouped: bool, client_host: str) -> tuple[str, str]:
        """The provider YAML of one subscription after a refresh, and the refresh error."""
        error = self.refresh(name)
        cfg = self.app.config
        server = cfg.web_host if cfg.web_host not in WILDCARD_HOSTS else client_host
        state = self.current.get(name)
        if state is None:
            return provider_yaml([]), error or f"subscription {name!r} has no proxies yet"
        ports = {label: listen_port(r) for label, r in self.app.relays.configs().items()}
        body = provider_yaml(provider_proxies(state.proxies, state.plan, ports, server, grouped))
        if error:
            body = f"# refresh failed, serving the last good copy: {one_line(error)}\n" + body
        return body, error


def one_line(text: str) -> str:
    """An error as one ASCII line, fit for a header and a YAML comment."""
    return " ".join(text.split()).encode("ascii", "replace").decode("ascii")


def request_host(host_url: str) -> str:
    """The host a client used to reach us: the server to give it when web_host is a wildcard."""
    return urlsplit(host_url).hostname or "127.0.0.1"


def create_service(app: Any) -> SubscriptionService:
    return SubscriptionService(app)
