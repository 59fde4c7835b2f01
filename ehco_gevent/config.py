"""The JSON (or YAML) config of ehco 1.1.4, read, validated and turned into frozen dataclasses.

Validation is a plain function over dicts (:func:`parse_config`) so it can be tested and fuzzed
without files or sockets. Every rejection is a :class:`ConfigError` whose message names the
source, the relay (index and label) and the key; the CLI prints that one line and exits 2.
Unknown keys are not errors (ehco ignored them) but are returned as warnings, because a typo
such as ``tcp_remote`` silently did nothing in ehco.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable

from .guards.limits import KEYS as LIMIT_KEYS, Limits, parse_limits
from .workers import parse_workers

RELAY_TYPES = ("raw", "ws", "wss", "mwss", "mtcp")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error")

RELAY_KEYS = {
    "listen", "listen_type", "transport_type", "tcp_remotes", "udp_remotes", "label", "ws_frames",
    "lb_strategy", "max_fails", "fail_timeout", "dial_timeout", "health_check", "send_proxy",
    "accept_proxy", "accept_proxy_from",
}
LB_STRATEGIES = ("round_robin", "random", "ip_hash", "least_conn", "failover")
HEALTH_CHECK_KEYS = ("interval", "timeout", "rise", "fall")
SEND_PROXY_VERSIONS = ("v1", "v2")
TOP_KEYS = {
    "web_host", "web_port", "web_token", "web_auth_user", "web_auth_pass", "log_level",
    "enable_ping", "reload_interval", "relay_configs", "relay_sync_url", "relay_sync_interval",
    "sub_configs", "xray_config", "sync_traffic_endpoint", "sync_traffic_interval", "workers",
} | LIMIT_KEYS


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` is the one line shown to the operator.

    ``warnings`` are the unknown-key warnings found before the error: a typo (``tcp_remote``)
    is most often the reason a relay fails validation, so they are shown with it."""

    def __init__(self, message: str, warnings: list[str] | None = None):
        super().__init__(message)
        self.warnings = warnings or []


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`` (did you mean 'tcp_remotes'?)`` for a key close to a known one, else ``""``."""
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_warning(source: str, where: str, key: str, known: Iterable[str]) -> str:
    place = f"{where}: " if where else ""
    return f"config {source}: {place}unknown key {key!r} ignored{did_you_mean(key, known)}"


@dataclass(frozen=True)
class RelayConfig:
    listen: str
    listen_type: str = "raw"
    transport_type: str = "raw"
    tcp_remotes: tuple[str, ...] = ()
    udp_remotes: tuple[str, ...] = ()
    label: str = ""
    #: beyond ehco 1.1.4: RFC 6455 binary frames on ws/wss/mwss instead of raw bytes.
    ws_frames: bool = False
    #: beyond ehco 1.1.4 (issue 12; docs/configuration.md): balancing, failover, health checks
    #: and the PROXY protocol. The defaults are ehco's behaviour plus passive failover.
    lb_strategy: str = "round_robin"
    max_fails: int = 1
    fail_timeout: float = 10.0
    dial_timeout: float = 13.0
    health_check: "HealthCheck | None" = None
    send_proxy: str = ""
    accept_proxy: bool = False
    accept_proxy_from: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tcp_remotes"] = list(self.tcp_remotes)
        out["udp_remotes"] = list(self.udp_remotes)
        out["accept_proxy_from"] = list(self.accept_proxy_from)
        # keys beyond ehco appear only when set, so an ehco config reads back as it was
        for key, default in _RELAY_DEFAULTS.items():
            if out[key] == default:
                del out[key]
        return out

    def remote_label(self, remote: str) -> str:
        """The ``remote`` label of this relay's metrics, as ehco builds it."""
        return f"{self.label}-{remote}"


@dataclass(frozen=True)
class HealthCheck:
    """``health_check``: probe every remote each ``interval`` seconds, each probe limited to
    ``timeout``; ``rise`` passes in a row bring a remote up, ``fall`` failures take it down
    (haproxy's ``inter``, ``timeout check``, ``rise``, ``fall`` and their defaults)."""

    interval: float = 2.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3


_RELAY_DEFAULTS = {
    "ws_frames": False, "lb_strategy": "round_robin", "max_fails": 1, "fail_timeout": 10.0,
    "dial_timeout": 13.0, "health_check": None, "send_proxy": "", "accept_proxy": False,
    "accept_proxy_from": [],
}


@dataclass(frozen=True)
class SubConfig:
    name: str
    url: str


@dataclass(frozen=True)
class Config:
    path: str = ""
    web_host: str = "0.0.0.0"
    web_port: int = 0
    web_token: str = ""
    web_auth_user: str = ""
    web_auth_pass: str = ""
    log_level: str = "info"
    enable_ping: bool = True
    reload_interval: int = 0
    relay_configs: tuple[RelayConfig, ...] = ()
    relay_sync_url: str = ""
    relay_sync_interval: int = 60
    sub_configs: tuple[SubConfig, ...] = ()
    xray_config: dict[str, Any] | None = None
    sync_traffic_endpoint: str = ""
    sync_traffic_interval: int = 60
    #: deadlines and caps for unauthenticated peers (ehco_gevent.guards.limits, docs/security.md)
    limits: Limits = field(default_factory=Limits)
    #: beyond ehco 1.1.4: relay worker processes, a number or "auto" (ehco_gevent.workers)
    workers: int | str = 1
    #: the keys the file actually set, so command-line values can fill in the rest
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    def to_json(self) -> dict[str, Any]:
        """The running config as ``/api/v1/config/`` shows it (secrets included, as ehco)."""
        out: dict[str, Any] = {
            "web_host": self.web_host,
            "web_port": self.web_port,
            "web_token": self.web_token,
            "web_auth_user": self.web_auth_user,
            "web_auth_pass": self.web_auth_pass,
            "log_level": self.log_level,
            "enable_ping": self.enable_ping,
            "reload_interval": self.reload_interval,
            "relay_configs": [r.to_json() for r in self.relay_configs],
            "relay_sync_url": self.relay_sync_url,
            "relay_sync_interval": self.relay_sync_interval,
            "sub_configs": [asdict(s) for s in self.sub_configs],
            "sync_traffic_endpoint": self.sync_traffic_endpoint,
            "sync_traffic_interval": self.sync_traffic_interval,
        }
        if self.xray_config is not None:
            out["xray_config"] = self.xray_config
        out.update({k: v for k, v in asdict(self.limits).items() if k in self.explicit})
        if self.workers != 1:
            out["workers"] = self.workers
        return out

    def with_relays(self, relays: Iterable[RelayConfig]) -> "Config":
        return replace(self, relay_configs=tuple(relays))


def go_list(items: Iterable[str]) -> str:
    """Format a list as Go's ``%s`` does for ``[]string``: ``[a b]``."""
    return "[" + " ".join(items) + "]"


def default_label(listen: str, listen_type: str, tcp: Iterable[str], udp: Iterable[str],
                  transport_type: str) -> str:
    return (f"<At={listen} Over={listen_type} TCP-To={go_list(tcp)} "
            f"UDP-To={go_list(udp)} Through={transport_type}>")


def split_host_port(addr: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` / ``:port`` as Go's net.SplitHostPort accepts them.

    Raises ValueError with a short reason.
    """
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0 or not addr[end + 1:].startswith(":"):
            raise ValueError(f"{addr!r} is not host:port")
        host, port_s = addr[1:end], addr[end + 2:]
    else:
        host, sep, port_s = addr.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{addr!r} is not host:port")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"{addr!r} has no valid port")
    return host, int(port_s)


def remote_host_port(remote: str) -> tuple[str, int]:
    """``host, port`` of a remote written as ``host:port`` or ``ws://host:port/path``."""
    rest = remote.split("://", 1)[1] if "://" in remote else remote
    rest = rest.split("/", 1)[0]
    return split_host_port(rest)


class _Checker:
    """Builds the error messages: every one names the source, the place and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, key: str, problem: str) -> ConfigError:
        place = f"{where}: " if where else ""
        return ConfigError(f"invalid config {self.source}: {place}{key}: {problem}")

    def typed(self, data: dict, key: str, kind: type | tuple, where: str, default: Any) -> Any:
        value = data.get(key, default)
        if value is None:
            return default
        # bool is an int in Python; JSON true must not pass as a port number
        if isinstance(value, bool) and kind is int:
            raise self.fail(where, key, f"expected a number, got {json.dumps(value)}")
        if not isinstance(value, kind):
            names = {str: "a string", int: "a number", bool: "true or false", list: "a list",
                     dict: "an object"}
            want = names.get(kind, str(kind)) if isinstance(kind, type) else "a value"
            raise self.fail(where, key, f"expected {want}, got {json.dumps(value)[:60]}")
        return value


def parse_relay(data: Any, index: int, check: _Checker, warnings: list[str]) -> RelayConfig:
    where = f"relay_configs[{index}]"
    if not isinstance(data, dict):
        raise check.fail("", where, "expected an object")
    label = check.typed(data, "label", str, where, "")
    if label:
        where = f"{where} (label {label!r})"
    unknown = sorted(set(data) - RELAY_KEYS)
    warnings += [unknown_key_warning(check.source, where, key, RELAY_KEYS) for key in unknown]
    try:
        return _parse_relay(data, where, label, check, warnings)
    except ConfigError as exc:
        if not unknown:
            raise
        # the typo is most likely the cause: say so on the error line itself
        notes = ", ".join(f"{key!r}{did_you_mean(key, RELAY_KEYS)}" for key in unknown)
        raise ConfigError(f"{exc}; note the unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{notes} in this relay") from None


def _parse_relay(data: dict, where: str, label: str, check: _Checker,
                 warnings: list[str]) -> RelayConfig:
    listen = check.typed(data, "listen", str, where, "")
    if not listen:
        raise check.fail(where, "listen", "must be a non-empty host:port")
    try:
        split_host_port(listen)
    except ValueError as exc:
        raise check.fail(where, "listen", str(exc)) from None
    types = {}
    for key in ("listen_type", "transport_type"):
        value = check.typed(data, key, str, where, "") or "raw"
        if value not in RELAY_TYPES:
            raise check.fail(where, key, f"invalid value {value!r} (expected one of "
                                         f"{', '.join(RELAY_TYPES)})")
        types[key] = value
    remotes = {}
    for key in ("tcp_remotes", "udp_remotes"):
        items = check.typed(data, key, list, where, [])
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise check.fail(where, f"{key}[{i}]", "must be a non-empty string")
            try:
                if key == "udp_remotes" or types["transport_type"] == "raw":
                    split_host_port(item)
                else:
                    remote_host_port(item)
            except ValueError as exc:
                raise check.fail(where, f"{key}[{i}]", str(exc) + scheme_hint(
                    item, key, types["transport_type"])) from None
        remotes[key] = tuple(items)
    if not remotes["tcp_remotes"] and not remotes["udp_remotes"]:
        raise check.fail(where, "tcp_remotes/udp_remotes", "both are empty; give at least one remote")
    ws_frames = check.typed(data, "ws_frames", bool, where, False)
    extra = parse_balancing(data, check, where, warnings)
    if not remotes["tcp_remotes"]:
        for key in ("health_check", "send_proxy", "accept_proxy"):
            if extra.get(key):
                warnings.append(f"config {check.source}: {where}: {key} applies to TCP and is "
                                "ignored on a relay without tcp_remotes")
    if not label:
        label = default_label(listen, types["listen_type"], remotes["tcp_remotes"],
                              remotes["udp_remotes"], types["transport_type"])
    return RelayConfig(listen=listen, label=label, ws_frames=ws_frames, **types, **remotes,
                       **extra)


def _number(check: _Checker, data: dict, key: str, where: str, default: float,
            integer: bool = False, minimum: float = 0.0) -> Any:
    """A positive number (an integer where ``integer``); bools are not numbers here."""
    value = data.get(key)
    if value is None:
        return default
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = "a whole number" if integer else "a number of seconds"
        raise check.fail(where, key, f"expected {want}, got {json.dumps(value)[:60]}")
    if value != value or value in (float("inf"), float("-inf")):
        raise check.fail(where, key, f"must be a finite number, got {value}")
    if value < minimum or (not integer and value <= 0):
        bound = f"at least {minimum:g}" if integer else "greater than 0"
        raise check.fail(where, key, f"must be {bound}, got {value}")
    return value if integer else float(value)


def parse_balancing(data: dict, check: _Checker, where: str, warnings: list[str]) -> dict:
    """The relay keys of issue 12: lb_strategy, max_fails, fail_timeout, dial_timeout,
    health_check, send_proxy, accept_proxy, accept_proxy_from."""
    out: dict[str, Any] = {}
    strategy = check.typed(data, "lb_strategy", str, where, "") or "round_robin"
    if strategy not in LB_STRATEGIES:
        raise check.fail(where, "lb_strategy", f"invalid value {strategy!r} (expected one of "
                                               f"{', '.join(LB_STRATEGIES)})")
    out["lb_strategy"] = strategy
    out["max_fails"] = _number(check, data, "max_fails", where, 1, integer=True, minimum=1)
    out["fail_timeout"] = _number(check, data, "fail_timeout", where, 10.0)
    out["dial_timeout"] = _number(check, data, "dial_timeout", where, 13.0)
    hc = data.get("health_check")
    if hc is not None and hc is not False:
        if hc is True:
            hc = {}
        if not isinstance(hc, dict):
            raise check.fail(where, "health_check", "expected an object with interval, timeout, "
                                                    f"rise, fall, got {json.dumps(hc)[:60]}")
        hwhere = f"{where}: health_check"
        warnings += [unknown_key_warning(check.source, hwhere, key, HEALTH_CHECK_KEYS)
                     for key in sorted(set(hc) - set(HEALTH_CHECK_KEYS))]
        defaults = HealthCheck()
        out["health_check"] = HealthCheck(
            interval=_number(check, hc, "interval", hwhere, defaults.interval),
            timeout=_number(check, hc, "timeout", hwhere, defaults.timeout),
            rise=_number(check, hc, "rise", hwhere, defaults.rise, integer=True, minimum=1),
            fall=_number(check, hc, "fall", hwhere, defaults.fall, integer=True, minimum=1))
    send = check.typed(data, "send_proxy", str, where, "")
    if send and send not in SEND_PROXY_VERSIONS:
        raise check.fail(where, "send_proxy", f"invalid value {send!r} (expected v1 or v2)")
    out["send_proxy"] = send
    out["accept_proxy"] = check.typed(data, "accept_proxy", bool, where, False)
    cidrs = check.typed(data, "accept_proxy_from", list, where, [])
    for i, item in enumerate(cidrs):
        try:
            if not isinstance(item, str):
                raise ValueError("expected a CIDR string such as 10.0.0.0/8")
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise check.fail(where, f"accept_proxy_from[{i}]", str(exc)) from None
    out["accept_proxy_from"] = tuple(cidrs)
    if cidrs and not out["accept_proxy"]:
        warnings.append(f"config {check.source}: {where}: accept_proxy_from is ignored without "
                        "accept_proxy: true")
    return out


def scheme_hint(remote: str, key: str, transport_type: str) -> str:
    """A ``ws://`` or ``wss://`` remote on a raw relay: the transport type was left out."""
    scheme = remote.split("://", 1)[0].lower() if "://" in remote else ""
    if key != "tcp_remotes" or transport_type != "raw" or scheme not in ("ws", "wss"):
        return ""
    kinds = "ws" if scheme == "ws" else "wss or mwss"
    flags = "-tt ws" if scheme == "ws" else "-tt wss or -tt mwss"
    return f"; a {scheme}:// remote needs transport_type {kinds} ({flags} on the command line)"


def check_unique_labels(relays: Iterable[RelayConfig], source: str) -> None:
    seen: dict[str, int] = {}
    for i, relay in enumerate(relays):
        if relay.label in seen:
            raise ConfigError(
                f"invalid config {source}: relay_configs[{i}] (label {relay.label!r}): label: "
                f"not unique, relay_configs[{seen[relay.label]}] has it too")
        seen[relay.label] = i


def parse_config(data: Any, source: str = "<config>") -> tuple[Config, list[str]]:
    """Validate a decoded config document; return it and the warnings about unknown keys."""
    check = _Checker(source)
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a JSON object")
    unknown = sorted(set(data) - TOP_KEYS)
    warnings = [unknown_key_warning(source, "", key, TOP_KEYS) for key in unknown]
    if unknown and not set(data) & TOP_KEYS:
        # nothing but typos (``relay_config``): starting would serve nothing, silently
        notes = ", ".join(f"{key!r}{did_you_mean(key, TOP_KEYS)}" for key in unknown)
        raise ConfigError(f"invalid config {source}: no known top-level key, only unknown "
                          f"{notes}; nothing to serve")
    try:
        return _parse_config(data, source, check, warnings)
    except ConfigError as exc:
        exc.warnings = warnings + exc.warnings
        raise


def _parse_config(data: dict, source: str, check: _Checker, warnings: list[str]
                  ) -> tuple[Config, list[str]]:
    web_port = check.typed(data, "web_port", int, "", 0)
    if not 0 <= web_port <= 65535:
        raise check.fail("", "web_port", f"{web_port} is not a port number")
    log_level = (check.typed(data, "log_level", str, "", "") or "info").lower()
    if log_level not in LOG_LEVELS:
        raise check.fail("", "log_level", f"invalid value {log_level!r} (expected one of "
                                          "debug, info, warn, error)")
    ints = {}
    for key, default in (("reload_interval", 0), ("relay_sync_interval", 60),
                         ("sync_traffic_interval", 60)):
        ints[key] = check.typed(data, key, int, "", default)
        if ints[key] < 0:
            raise check.fail("", key, "must not be negative")
    relays_raw = check.typed(data, "relay_configs", list, "", [])
    relays = tuple(parse_relay(item, i, check, warnings) for i, item in enumerate(relays_raw))
    check_unique_labels(relays, source)
    subs = []
    for i, item in enumerate(check.typed(data, "sub_configs", list, "", [])):
        where = f"sub_configs[{i}]"
        if not isinstance(item, dict):
            raise check.fail("", where, "expected an object with name and url")
        warnings += [unknown_key_warning(source, where, key, ("name", "url"))
                     for key in sorted(set(item) - {"name", "url"})]
        name = check.typed(item, "name", str, where, "")
        url = check.typed(item, "url", str, where, "")
        if not name:
            raise check.fail(where, "name", "must be a non-empty string")
        if not url.startswith(("http://", "https://")):
            raise check.fail(where, "url", f"{url!r} is not an http(s) URL")
        subs.append(SubConfig(name=name, url=url))
    if len({s.name for s in subs}) != len(subs):
        raise check.fail("", "sub_configs", "names must be unique")
    xray = check.typed(data, "xray_config", dict, "", None)
    try:
        workers = parse_workers(1 if data.get("workers") is None else data["workers"])
    except ValueError as exc:
        raise check.fail("", "workers", str(exc)) from None
    cfg = Config(
        path=source,
        web_host=check.typed(data, "web_host", str, "", "") or "0.0.0.0",
        web_port=web_port,
        web_token=check.typed(data, "web_token", str, "", ""),
        web_auth_user=check.typed(data, "web_auth_user", str, "", ""),
        web_auth_pass=check.typed(data, "web_auth_pass", str, "", ""),
        log_level="warn" if log_level == "warning" else log_level,
        enable_ping=check.typed(data, "enable_ping", bool, "", True),
        relay_configs=relays,
        relay_sync_url=check.typed(data, "relay_sync_url", str, "", ""),
        sub_configs=tuple(subs),
        xray_config=xray,
        sync_traffic_endpoint=check.typed(data, "sync_traffic_endpoint", str, "", ""),
        limits=parse_limits(data, lambda key, problem: check.fail("", key, problem)),
        workers=workers,
        explicit=frozenset(k for k, v in data.items() if v is not None),
        **ints,
    )
    return cfg, warnings


def decode(text: str, source: str, yaml_hint: bool) -> Any:
    """Decode JSON, or YAML when the source says so (beyond ehco: YAML configs)."""
    if yaml_hint:
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid config {source}: not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid config {source}: not valid JSON: {exc}") from None


def read_source(path: str, fetch: Callable[[str], str] | None = None) -> Any:
    """Read and decode the ``-c`` value: a file path or an ``http(s)://`` URL."""
    yaml_hint = path.lower().split("?", 1)[0].endswith((".yaml", ".yml"))
    if path.startswith(("http://", "https://")):
        fetch = fetch or fetch_url
        try:
            text = fetch(path)
        except Exception as exc:  # requests raises many kinds; all mean "could not fetch"
            raise ConfigError(f"cannot load config {path}: {exc}") from None
    else:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read config file {path}: {reason}") from None
    return decode(text, path, yaml_hint)


def fetch_url(url: str) -> str:
    import requests

    resp = requests.get(url, timeout=10)
    resp.raise_for_status()
    return resp.text


def load_config(path: str, fetch: Callable[[str], str] | None = None) -> tuple[Config, list[str]]:
    return parse_config(read_source(path, fetch), path)
