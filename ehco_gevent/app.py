"""The running process: config in, relays up, signals and reloads handled, clean exit.

Command-line values and the config file meet here. With ``-c`` the file decides; for the keys
it leaves out, a flag or ``EHCO_*`` variable that was given fills in (web_port, web_token,
enable_ping, log_level, and ``--config_reload_interval`` for reload_interval). Without ``-c``
the flags describe one relay, as in ehco.

Reload triggers: SIGHUP, the web reload routes, and a timer every reload_interval seconds when
a config path is set. An explicit trigger (signal, web) always re-reads the source; the timer
re-reads once per interval, which is the "at most once per reload_interval" of ehco.
"""

from __future__ import annotations

import logging
import resource
import signal
from dataclasses import replace
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from . import limits, logs
from .addresses import ListenError
from .config import Config, ConfigError, check_unique_labels, load_config, parse_config
from .connections import ConnectionRegistry
from .server import RelayServer
from .transports import UnsupportedTransport
from .version import VERSION

log = logging.getLogger("ehco.app")

DEFAULT_RELOAD_INTERVAL = 60
EXIT_CONFIG = 2
EXIT_RUNTIME = 1
#: flags that fill in config keys a file leaves unset
FLAG_FALLBACKS = {
    "web_port": "web_port",
    "web_token": "web_token",
    "enable_ping": "enable_ping",
    "log_level": "log_level",
    "config_reload_interval": "reload_interval",
}


def config_from_flags(opts: dict[str, Any]) -> Config:
    """The one-relay config that ``-l/-r/-ur/-lt/-tt`` describe."""
    if not opts.get("local"):
        raise ConfigError("invalid command line: give -c CONFIG, or -l LISTEN with -r and/or -ur")
    relay: dict[str, Any] = {
        "listen": opts["local"],
        "listen_type": opts.get("listen_type") or "raw",
        "transport_type": opts.get("transport_type") or "raw",
        "tcp_remotes": [opts["remote"]] if opts.get("remote") else [],
        "udp_remotes": [opts["udp_remote"]] if opts.get("udp_remote") else [],
    }
    if opts.get("ws_frames"):
        relay["ws_frames"] = True
    cfg, _ = parse_config({"relay_configs": [relay]}, "command line")
    return replace(cfg, path="")


def apply_flags(cfg: Config, opts: dict[str, Any]) -> Config:
    changes = {}
    for flag, key in FLAG_FALLBACKS.items():
        value = opts.get(flag)
        if value is not None and key not in cfg.explicit:
            changes[key] = value.lower() if key == "log_level" else value
    if "reload_interval" not in cfg.explicit and "reload_interval" not in changes:
        changes["reload_interval"] = DEFAULT_RELOAD_INTERVAL
    if changes.get("log_level") == "warning":
        changes["log_level"] = "warn"
    return replace(cfg, **changes) if changes else cfg


#: Optional parts of the process (web server, subscriptions, proxy server), each named as
#: "module:factory". A factory takes the App and returns a service object with any of these
#: methods, all optional:
#:   expand_config(cfg) -> cfg   on every load, before relays are compared (adds relays)
#:   start()                     once, after the relays are up
#:   on_config(cfg)              after every successful reload
#:   on_relays(cfg)              after a service changed the running relays outside a reload
#:                               (a subscription refresh); cfg is the new running config
#:   stop()                      at exit
SERVICE_FACTORIES: list[str] = [
    "ehco_gevent.observability.metrics:create_service",
    "ehco_gevent.web:create_service",
    "ehco_gevent.observability.ping:create_service",
    "ehco_gevent.observability.relay_sync:create_service",
    "ehco_gevent.proxy.server:create_service",
    "ehco_gevent.clash.subscriptions:create_service",
]


def load_services(app: "App") -> list[Any]:
    import importlib

    services = []
    for spec in SERVICE_FACTORIES:
        module_name, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        service = factory(app)
        if service is not None:
            services.append(service)
    return services


def _call_all(services: list[Any], method: str, *args: Any) -> None:
    for service in services:
        fn = getattr(service, method, None)
        if fn is not None:
            fn(*args)


class App:
    def __init__(self, opts: dict[str, Any]):
        self.opts = opts
        self.path: str = opts.get("config") or ""
        self.registry = ConnectionRegistry()
        self.relays = RelayServer(self.registry)
        self.config: Config | None = None
        self.stopping = Event()
        self._reload_lock = Semaphore()
        self.services: list[Any] = load_services(self)

    # -- config -------------------------------------------------------------------------------
    def load(self) -> Config:
        """Read and validate the config; raises ConfigError, changes nothing."""
        if not self.path:
            return apply_flags(config_from_flags(self.opts), self.opts)
        cfg, warnings = load_config(self.path)
        for warning in warnings:
            log.warning("%s", warning)
        cfg = apply_flags(cfg, self.opts)
        for service in self.services:
            expand = getattr(service, "expand_config", None)
            if expand is not None:
                cfg = expand(cfg)
        check_unique_labels(cfg.relay_configs, self.path)
        return cfg

    def reload(self, reason: str) -> tuple[bool, str]:
        """Re-read the config and apply it; on any error the running relays stay as they are."""
        with self._reload_lock:
            if not self.path:
                return False, "no config file or URL to reload (started from command-line flags)"
            log.log(logging.DEBUG if reason == "timer" else logging.INFO, "reload (%s): reading %s",
                    reason, self.path)
            try:
                cfg = self.load()
            except ConfigError as exc:
                log.error("reload (%s) failed, keeping the running config: %s", reason, exc)
                return False, str(exc)
            logs.setup(cfg.log_level)
            limits.set_current(cfg.limits)
            _, errors = self.relays.apply(cfg.relay_configs)
            self.config = cfg
            _call_all(self.services, "on_config", cfg)
            if errors:
                return False, "; ".join(errors)
            return True, "reload success"

    # -- running ------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.load()
        logs.setup(cfg.log_level)
        limits.set_current(cfg.limits)
        raise_fd_limit()
        log.info("Start ehco-gevent with version: %s", VERSION)
        self.relays.start_all(cfg.relay_configs)
        self.config = cfg
        _call_all(self.services, "start")
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload, "SIGHUP"))
        gevent.signal_handler(signal.SIGTERM, self.stopping.set)
        gevent.signal_handler(signal.SIGINT, self.stopping.set)
        if self.path:
            gevent.spawn(self._reload_ticker)

    def _reload_ticker(self) -> None:
        while not self.stopping.is_set():
            interval = self.config.reload_interval if self.config else 0
            if interval <= 0:
                self.stopping.wait(5)  # a later reload may turn the ticker on
                continue
            if self.stopping.wait(interval):
                return
            self.reload("timer")

    def stop(self) -> None:
        log.info("ehco exit now...")
        for service in self.services:
            try:
                _call_all([service], "stop")
            except Exception:
                log.exception("error while stopping %r", service)
        self.relays.stop_all(drop=True)


def raise_fd_limit() -> None:
    """A relay holds two sockets (and two pipes when splicing) per connection: take the
    hard limit, as the systemd unit's LimitNOFILE=65535 would."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65535
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


def run(opts: dict[str, Any]) -> int:
    logs.setup(opts.get("log_level") or "info")
    app = App(opts)
    try:
        app.start()
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except UnsupportedTransport as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except ListenError as exc:
        log.error("%s", exc)
        return EXIT_RUNTIME
    app.stopping.wait()
    app.stop()
    return 0
