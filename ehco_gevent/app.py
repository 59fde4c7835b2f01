"""The running process: config in, relays up, signals and reloads handled, clean exit.

Command-line values and the config file meet here. With ``-c`` the file decides; for the keys
it leaves out, a flag or ``EHCO_*`` variable that was given fills in (web_host, web_port,
web_token, enable_ping, log_level, and ``--config_reload_interval`` for reload_interval).
Without ``-c`` the flags describe one relay, as in ehco.

Reload triggers: SIGHUP, the web reload routes, and a timer every reload_interval seconds when
a config path is set. An explicit trigger (signal, web) always re-reads the source; the timer
re-reads once per interval, which is the "at most once per reload_interval" of ehco.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import signal
from dataclasses import replace
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from . import logs
from .addresses import ListenError
from .config import Config, ConfigError, check_unique_labels, load_config, parse_config
from .connections import ConnectionRegistry
from .guards import limits
from .server import REPEAT_INTERVAL, RelayServer
from .transports import UnsupportedTransport
from .version import VERSION
from .workers import worker_count

log = logging.getLogger("ehco.app")

DEFAULT_RELOAD_INTERVAL = 60
EXIT_CONFIG = 2
EXIT_RUNTIME = 1
#: flags that fill in config keys a file leaves unset
FLAG_FALLBACKS = {
    "web_host": "web_host",
    "web_port": "web_port",
    "web_token": "web_token",
    "enable_ping": "enable_ping",
    "log_level": "log_level",
    "config_reload_interval": "reload_interval",
    "workers": "workers",
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
    "ehco_gevent.remotes.state:create_service",
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
        self._repeats = logs.RateLimitedLogger(log, interval=REPEAT_INTERVAL)
        self.services: list[Any] = load_services(self)

    # -- config -------------------------------------------------------------------------------
    def load(self, timer: bool = False) -> Config:
        """Read and validate the config; raises ConfigError, changes nothing. ``timer``: the
        periodic re-read, whose repeated warnings are rate-limited."""
        if not self.path:
            return apply_flags(config_from_flags(self.opts), self.opts)
        try:
            cfg, warnings = load_config(self.path)
        except ConfigError as exc:
            self._warn(exc.warnings, timer)  # a typo is often why it failed: show it first
            raise
        self._warn(warnings, timer)
        cfg = apply_flags(cfg, self.opts)
        for service in self.services:
            expand = getattr(service, "expand_config", None)
            if expand is not None:
                cfg = expand(cfg)
        check_unique_labels(cfg.relay_configs, self.path)
        return cfg

    def _warn(self, warnings: list[str], timer: bool) -> None:
        """Config warnings; the timer's repeats of a warning at most every REPEAT_INTERVAL
        (it re-reads the same file every reload_interval)."""
        for warning in warnings:
            self._repeats.log(logging.WARNING, warning, "%s", warning, force=not timer)

    def reload(self, reason: str) -> tuple[bool, str]:
        """Re-read the config and apply it; on a config error the running relays stay as they
        are. Returns ``(True, "reload success")`` when everything applied, else False and the
        reason: the config error, or ``reload: started ...; failed: LABEL (why)`` when the
        config was applied but some relay did not start (docs/configuration.md, Reload)."""
        with self._reload_lock:
            if not self.path:
                return False, "no config file or URL to reload (started from command-line flags)"
            log.log(logging.DEBUG if reason == "timer" else logging.INFO, "reload (%s): reading %s",
                    reason, self.path)
            try:
                cfg = self.load(timer=reason == "timer")
            except ConfigError as exc:
                message = f"reload ({reason}) failed, keeping the running config: {exc}"
                # the timer reads the same broken file again every interval: not every line
                self._repeats.log(logging.ERROR, str(exc), "%s", message, force=reason != "timer")
                return False, str(exc)
            logs.setup(cfg.log_level)
            limits.set_current(cfg.limits)
            done, _ = self.relays.apply(cfg.relay_configs, f"reload ({reason})",
                                        timer=reason == "timer")
            self.config = cfg
            _call_all(self.services, "on_config", cfg)
            if done.failed:
                return False, f"reload: {done.summary()}"
            return True, "reload success"

    # -- running ------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.load()
        logs.setup(cfg.log_level)
        limits.set_current(cfg.limits)
        tune_process()
        log.info("Start ehco-gevent with version: %s", VERSION)
        workers = worker_count(cfg.workers)
        if workers > 1:  # relays in worker processes; this one supervises (workers/)
            from .workers.supervisor import become_supervisor

            become_supervisor(self, workers)
        # signals first: one that comes while the relays start (workers take a moment, and
        # the first of them already serves) waits for the start instead of ending the process
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload, "SIGHUP"))
        gevent.signal_handler(signal.SIGTERM, self.stopping.set)
        gevent.signal_handler(signal.SIGINT, self.stopping.set)
        with self._reload_lock:
            self.relays.start_all(cfg.relay_configs)
            self.config = cfg
            if not (cfg.relay_configs or cfg.web_port or cfg.sub_configs or cfg.xray_config):
                log.warning("config %s has no relay_configs, web_port, sub_configs or "
                            "xray_config: nothing is served until a reload adds some",
                            self.path or "")
            _call_all(self.services, "start")
        if self.path:
            gevent.spawn(self._reload_ticker)
        from .observability.metrics import freeze_startup_objects

        freeze_startup_objects()

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


def tune_process() -> None:
    """What every ehco process sets for itself at start (one process, the supervisor, each
    worker)."""
    raise_fd_limit()
    keep_large_buffers_in_heap()


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: allocations up to this size come from the heap, never from an mmap of their own
LARGE_FROM_HEAP = 4 << 20
#: free memory at the top of the heap kept for the next allocations before any goes back
HEAP_KEEP = 16 << 20


def keep_large_buffers_in_heap() -> None:
    """Tell glibc's malloc to serve large temporaries (a TLS record batch, a joined frame: 64
    KiB to 1 MiB, made and freed thousands of times a second on a tunnel) from its heap and to
    keep up to HEAP_KEEP of free heap, instead of mapping and unmapping them. With glibc's
    adaptive defaults every such buffer could be a fresh mapping: a page fault for each 4 KiB
    written and the kernel zeroing it. Profiled on an mwss client node, page faults were 13 %
    of its CPU and its system time per GB doubled in some runs (tunables fixed it, see
    docs/performance.md). Elsewhere than glibc this does nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        ok = mallopt(_M_MMAP_THRESHOLD, LARGE_FROM_HEAP) and mallopt(_M_TRIM_THRESHOLD,
                                                                     HEAP_KEEP)
    except (OSError, AttributeError) as exc:
        log.debug("malloc tuning: not available here (%s)", exc)
        return
    log.debug("malloc tuning: %s", "large buffers from the heap" if ok else "refused")


def raise_fd_limit() -> None:
    """Take the hard open-files limit as the soft one, as every Go 1.19+ program does at start
    (so ehco users never had to raise it): an idle relayed connection holds two sockets, and
    the usual soft default of 1024 would stop a node at ~500 clients. The limit in force is
    logged at debug level."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65535
        if soft == resource.RLIM_INFINITY or soft >= want:
            want = soft
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        log.debug("open files limit: %s (was %s, hard limit %s)", want, soft,
                  "unlimited" if hard == resource.RLIM_INFINITY else hard)
    except (ValueError, OSError) as exc:
        log.debug("open files limit: could not raise it: %s", exc)


def run(opts: dict[str, Any]) -> int:
    logs.setup(opts.get("log_level") or "info")
    if opts.get("ignored_flags"):
        log.warning("%s ignored: with -c the config file describes the relays (as in ehco); "
                    "put them in %s", " ".join(opts["ignored_flags"]), opts["config"])
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
