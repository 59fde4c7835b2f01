"""Clash subscriptions as plain data: parse the YAML, group by name prefix, derive relays, write
the provider YAML back out (design.md section 7).

Everything here is a function over dicts, strings and :class:`RelayConfig`; the service in
:mod:`ehco_gevent.clash.subscriptions` only fetches, allocates ports and applies the result, so the
rules (labels, groups, which relays keep their port across a refresh) are tested without sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..config import RelayConfig


class SubscriptionError(Exception):
    """A subscription body that cannot be used (not YAML, no ``proxies`` list)."""


@dataclass(frozen=True)
class Proxy:
    """One usable proxy of a subscription: what the relay needs, plus every field as given."""

    name: str
    server: str
    port: int
    udp: bool
    fields: dict[str, Any] = field(compare=False, hash=False)

    @property
    def remote(self) -> str:
        host = f"[{self.server}]" if ":" in self.server else self.server
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Group:
    prefix: str
    members: tuple[str, ...]

    @property
    def label(self) -> str:
        return group_label(self.prefix)


# -- labels -------------------------------------------------------------------------------------
def proxy_label(name: str, sub_name: str) -> str:
    """``NAME-SUBNAME``, or ``NAMESUBNAME`` when the proxy name already ends with ``-``."""
    return f"{name}{sub_name}" if name.endswith("-") else f"{name}-{sub_name}"


def group_label(prefix: str) -> str:
    """``PREFIXlb`` when the prefix ends with ``-``, else ``PREFIX-lb``."""
    return f"{prefix}lb" if prefix.endswith("-") else f"{prefix}-lb"


# -- parsing ------------------------------------------------------------------------------------
def _port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    return None


def parse_proxies(data: Any) -> tuple[list[Proxy], list[str]]:
    """The usable proxies of a decoded subscription and a warning for each one skipped.

    A proxy without a name, server or valid port is skipped (Clash would reject it too); a
    repeated name keeps the first one, since labels and provider names must be unique.
    """
    if not isinstance(data, dict) or not isinstance(data.get("proxies"), list):
        raise SubscriptionError("no 'proxies' list at the top level")
    proxies: list[Proxy] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(data["proxies"]):
        if not isinstance(item, dict):
            warnings.append(f"proxies[{i}]: not a mapping, skipped")
            continue
        name, server, port = item.get("name"), item.get("server"), _port(item.get("port"))
        if not isinstance(name, str) or not name:
            warnings.append(f"proxies[{i}]: no name, skipped")
        elif not isinstance(server, str) or not server:
            warnings.append(f"proxies[{i}] ({name}): no server, skipped")
        elif port is None:
            warnings.append(f"proxies[{i}] ({name}): port {item.get('port')!r} is not valid, "
                            "skipped")
        elif name in seen:
            warnings.append(f"proxies[{i}] ({name}): name repeated, skipped")
        else:
            seen.add(name)
            proxies.append(Proxy(name, server, port, item.get("udp") is True, dict(item)))
    return proxies, warnings


def parse_subscription(text: str) -> tuple[list[Proxy], list[str]]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # one line: the problem and where, not PyYAML's drawing
        problem = getattr(exc, "problem", None) or type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise SubscriptionError(f"not valid YAML: {problem}{where}") from None
    return parse_proxies(data)


# -- grouping -----------------------------------------------------------------------------------
def common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def group_prefixes(names: Iterable[str]) -> list[str]:
    """The non-empty longest common prefixes of pairs of names, without those that are a prefix
    of another one; sorted.

    Only neighbours in sorted order are compared: for sorted a < b < c the prefix of (a, c) is
    a prefix of (a, b)'s, so it would be dropped anyway (the tests check this against all pairs).
    """
    ordered = sorted(set(names))
    found = {common_prefix(a, b) for a, b in zip(ordered, ordered[1:])}
    found.discard("")
    return sorted(p for p in found if not any(q != p and q.startswith(p) for q in found))


def group_names(names: Iterable[str]) -> list[Group]:
    """Each name joins the group whose prefix it starts with, or is a group of its own.

    After :func:`group_prefixes` no prefix starts another, so a name matches at most one.
    Groups come out sorted by prefix, members sorted.
    """
    ordered = sorted(set(names))
    prefixes = group_prefixes(ordered)
    members: dict[str, list[str]] = {p: [] for p in prefixes}
    for name in ordered:
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None:
            members[name] = [name]
        else:
            members[prefix].append(name)
    return [Group(p, tuple(m)) for p, m in sorted(members.items()) if m]


# -- relays -------------------------------------------------------------------------------------
def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class Plan:
    """The relays of one subscription: proxy relay label per proxy name, group relays."""

    relays: tuple[RelayConfig, ...]
    proxy_labels: dict[str, str]
    groups: tuple[Group, ...]
    #: groups left without a relay because their label was taken (see derive_relays)
    skipped: tuple[Group, ...] = ()


def derive_relays(sub_name: str, proxies: list[Proxy], host: str,
                  running: dict[str, RelayConfig], alloc_port: Callable[[bool], int]) -> Plan:
    """One raw relay per proxy and one load-balancing relay per group, listening on ``host``.

    Labels stay unique: a proxy whose label an earlier one has, and a group whose label is
    taken, get no relay (they are reported in ``Plan.skipped`` / left out of ``proxy_labels``).

    A relay whose label already runs with the same remotes on ``host`` keeps its listen address
    (so the port a Clash client has stays valid); any other gets ``alloc_port(udp)``, a port
    free now (for UDP too when it has udp_remotes). Changed remotes mean a new relay on a new
    port; labels that are no longer derived simply drop out (the caller stops them).
    """

    def relay(label: str, tcp: tuple[str, ...], udp: tuple[str, ...]) -> RelayConfig:
        old = running.get(label)
        if (old is not None and old.tcp_remotes == tcp and old.udp_remotes == udp
                and old.listen_type == "raw" and old.transport_type == "raw"
                and old.listen.rpartition(":")[0].strip("[]") == host.strip("[]")):
            listen = old.listen
        else:
            listen = join_host_port(host, alloc_port(bool(udp)))
        return RelayConfig(listen=listen, tcp_remotes=tcp, udp_remotes=udp, label=label)

    relays = []
    labels: dict[str, str] = {}
    kept = []
    for p in proxies:
        label = proxy_label(p.name, sub_name)
        if label in labels.values():  # "a" and "a-" both give "a-SUB": the first one wins
            continue
        labels[p.name] = label
        kept.append(p)
        relays.append(relay(label, (p.remote,), (p.remote,) if p.udp else ()))
    by_name = {p.name: p for p in kept}
    taken = set(labels.values())
    winners, skipped = set(), []
    # groups of several members first, so they win a label over a lone proxy; names "b" and
    # "b-" both give "b-lb", and a sub named "lb" can give a proxy a group's label
    for g in sorted(group_names(by_name), key=lambda g: (len(g.members) == 1, g.prefix)):
        if g.label in taken:
            skipped.append(g)
        else:
            taken.add(g.label)
            winners.add(g.prefix)
    groups = [g for g in group_names(by_name) if g.prefix in winners]
    for g in groups:
        members = [by_name[n] for n in g.members]
        relays.append(relay(g.label, _unique(m.remote for m in members),
                            _unique(m.remote for m in members if m.udp)))
    return Plan(tuple(relays), labels, tuple(groups), tuple(skipped))


# -- provider YAML ------------------------------------------------------------------------------
def _rewritten(fields: dict[str, Any], name: str, server: str, port: int) -> dict[str, Any]:
    out = dict(fields)
    out["name"], out["server"], out["port"] = name, server, port
    return out


def provider_proxies(proxies: list[Proxy], plan: Plan, ports: dict[str, int], server: str,
                     grouped: bool) -> list[dict[str, Any]]:
    """The provider's ``proxies``: every field as the subscription gave it, except name, server
    and port, which point at our relay. Grouped: one per group, the first member's fields under
    the group relay's label. Proxies whose relay is not running (``ports`` lacks it) are left out.
    """
    by_name = {p.name: p for p in proxies}
    out = []
    if grouped:
        for g in plan.groups:
            if g.label in ports:
                out.append(_rewritten(by_name[g.members[0]].fields, g.label, server,
                                      ports[g.label]))
    else:
        for p in proxies:
            label = plan.proxy_labels.get(p.name)
            if label in ports:
                out.append(_rewritten(p.fields, label, server, ports[label]))
    return out


def provider_yaml(proxies: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump({"proxies": proxies}, allow_unicode=True, sort_keys=False)
