"""Proxy users: the ones written in ``xray_config`` and the ones the panel sync manages.

A user owns its traffic counters and its open connections, so removing or disabling a user at
the panel can close exactly that user's connections. Counters come in two kinds:

- ``up``/``down``: payload bytes seen on the client side since the last *successful* report
  to the panel (a failed POST loses nothing: :meth:`UserStore.commit_report` subtracts only
  what was reported, so bytes counted during the POST stay);
- ``total_up``/``total_down``: cumulative, never reset, for Prometheus (:meth:`collect`).

Metrics and the web page read :func:`collect` (one dict per user, see there); the byte figures
there are in the panel's quantity (:data:`TRAFFIC_FACTOR` x the client-side payload bytes), so
Prometheus, the web page and the panel all show a user the same number.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import aead
from .xray_config import XrayConfig

log = logging.getLogger("ehco.proxy.users")

PANEL_PROTOCOLS = ("ss", "trojan")
INBOUND_PROTOCOL = {"shadowsocks": "ss", "trojan": "trojan"}
#: ehco reported twice the bytes Xray counted on the client side (both legs of a connection);
#: the panel POST, the Prometheus counters and the web page all use that quantity
TRAFFIC_FACTOR = 2


def trojan_hash(password: str) -> bytes:
    """What a trojan client sends: hex(SHA-224(password)), 56 ASCII bytes."""
    return hashlib.sha224(password.encode("utf-8")).hexdigest().encode("ascii")


@dataclass(eq=False)
class User:
    key: str  # unique: the panel's user_id, or "TAG/EMAIL-or-INDEX" for a config client
    protocol: str  # "ss" or "trojan"
    password: str
    method: str = ""
    level: int = 0
    enable: bool = True
    user_id: int | None = None  # set for panel users: what the traffic POST reports
    inbound_tag: str | None = None  # config clients belong to their own inbound only
    up: int = 0
    down: int = 0
    total_up: int = 0
    total_down: int = 0
    ips: set = field(default_factory=set)
    conns: set = field(default_factory=set)  # greenlets serving this user

    def __post_init__(self) -> None:
        self.cipher = aead.CIPHERS.get(self.method) if self.protocol == "ss" else None
        self.master = aead.master_key(self.cipher, self.password) if self.cipher else b""
        self.hash = trojan_hash(self.password) if self.protocol == "trojan" else b""

    @property
    def label(self) -> str:
        return str(self.user_id) if self.user_id is not None else self.key

    def settings(self) -> tuple:
        return (self.protocol, self.method, self.password, self.enable, self.level)

    def count_up(self, n: int) -> None:
        self.up += n
        self.total_up += n

    def count_down(self, n: int) -> None:
        self.down += n
        self.total_down += n

    def close_connections(self) -> int:
        victims = list(self.conns)
        for greenlet in victims:
            greenlet.kill(block=False)
        return len(victims)


def parse_panel_users(data: Any) -> list[dict]:
    """The ``users`` list of a panel answer, keeping only well-formed entries.

    Raises ValueError when the document as a whole is not what ehco expects, so a panel that
    returns garbage changes nothing.
    """
    if not isinstance(data, dict) or not isinstance(data.get("users"), list):
        raise ValueError("answer is not an object with a users list")
    out = []
    for item in data["users"]:
        if not isinstance(item, dict):
            continue
        uid = item.get("user_id")
        proto = item.get("protocol")
        password = item.get("password")
        if isinstance(uid, bool) or not isinstance(uid, int) or proto not in PANEL_PROTOCOLS:
            log.warning("panel user %r skipped: needs an integer user_id and protocol ss or trojan",
                        uid)
            continue
        if not isinstance(password, str) or not password:
            log.warning("panel user %d skipped: no password", uid)
            continue
        method = item.get("method") or ""
        if proto == "ss" and method not in aead.CIPHERS:
            log.warning("panel user %d skipped: unsupported cipher %r", uid, method)
            continue
        level = item.get("level") if isinstance(item.get("level"), int) else 0
        out.append({"user_id": uid, "protocol": proto, "password": password, "method": method,
                    "level": level, "enable": bool(item.get("enable"))})
    return out


class UserStore:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self._ss_cache: dict[str | None, list[User]] = {}
        self._trojan_cache: dict[str | None, dict[bytes, User]] = {}

    # -- changes ----------------------------------------------------------------------------
    def _changed(self) -> None:
        self._ss_cache.clear()
        self._trojan_cache.clear()

    def _remove(self, key: str, why: str) -> None:
        user = self.users.pop(key)
        n = user.close_connections()
        log.info("proxy user %s removed (%s), %d open connection(s) closed", user.label, why, n)

    def set_config(self, cfg: XrayConfig) -> None:
        """Make the config's clients the static users; changed or vanished ones are dropped."""
        wanted: dict[str, User] = {}
        for ib in cfg.inbounds:
            proto = INBOUND_PROTOCOL.get(ib.protocol)
            if proto is None:
                continue
            for i, client in enumerate(ib.clients):
                key = f"{ib.name}/{client.email or i}"
                wanted[key] = User(key=key, protocol=proto, password=client.password,
                                   method=client.method, level=client.level,
                                   inbound_tag=ib.tag)
        for key, user in list(self.users.items()):
            if user.user_id is not None:
                continue
            new = wanted.pop(key, None)
            if new is None or new.settings() != user.settings() or new.inbound_tag != user.inbound_tag:
                self._remove(key, "config changed")
                if new is not None:
                    # same user, new settings: its lifetime counters go on (Prometheus counters)
                    new.total_up, new.total_down = user.total_up, user.total_down
                    self.users[key] = new
        self.users.update(wanted)
        self._changed()

    def remove_panel_users(self, why: str) -> int:
        """Forget every user that came from a panel (its open connections closed): for a
        reload that drops the panel, whose users nobody would update or remove any more."""
        keys = [key for key, user in self.users.items() if user.user_id is not None]
        for key in keys:
            self._remove(key, why)
        if keys:
            self._changed()
        return len(keys)

    def apply_panel(self, entries: Iterable[dict]) -> tuple[int, int, int]:
        """Apply the panel's user list; returns (added, updated, removed)."""
        added = updated = removed = 0
        seen = set()
        for entry in entries:
            key = str(entry["user_id"])
            seen.add(key)
            old = self.users.get(key)
            if not entry["enable"]:
                if old is not None:
                    self._remove(key, "disabled at the panel")
                    removed += 1
                continue
            new = User(key=key, user_id=entry["user_id"], protocol=entry["protocol"],
                       password=entry["password"], method=entry["method"], level=entry["level"])
            if old is None:
                self.users[key] = new
                added += 1
                log.info("proxy user %s added (%s)", key, new.protocol)
            elif old.settings() != new.settings():
                # new credentials: connections opened with the old ones must end
                n = old.close_connections()
                old.protocol, old.method, old.password, old.level = (new.protocol, new.method,
                                                                     new.password, new.level)
                old.__post_init__()
                updated += 1
                log.info("proxy user %s updated, %d open connection(s) closed", key, n)
        for key, user in list(self.users.items()):
            if user.user_id is not None and key not in seen:
                self._remove(key, "gone from the panel")
                removed += 1
        self._changed()
        return added, updated, removed

    # -- lookups used by the inbounds ---------------------------------------------------------
    def ss_users(self, tag: str | None) -> list[User]:
        users = self._ss_cache.get(tag)
        if users is None:
            users = [u for u in self.users.values() if u.protocol == "ss" and u.enable
                     and (u.inbound_tag is None or u.inbound_tag == tag)]
            self._ss_cache[tag] = users
        return users

    def trojan_user(self, tag: str | None, hashed: bytes) -> User | None:
        table = self._trojan_cache.get(tag)
        if table is None:
            table = {u.hash: u for u in self.users.values() if u.protocol == "trojan" and u.enable
                     and (u.inbound_tag is None or u.inbound_tag == tag)}
            self._trojan_cache[tag] = table
        return table.get(hashed)

    def is_current(self, user: User) -> bool:
        return self.users.get(user.key) is user

    # -- reporting ----------------------------------------------------------------------------
    def traffic_report(self) -> tuple[list[dict], dict[str, tuple[int, int]]]:
        """The POST's ``data`` rows and the snapshot to commit once the POST succeeded.

        Like ehco, the reported numbers are twice the bytes seen on the client side (ehco's
        Xray counted the inbound only and doubled it to account for the outbound leg).
        """
        rows, snapshot = [], {}
        for user in self.users.values():
            if user.user_id is None or not (user.up or user.down):
                continue
            snapshot[user.key] = (user.up, user.down)
            rows.append({"user_id": user.user_id, "upload_traffic": user.up * TRAFFIC_FACTOR,
                         "download_traffic": user.down * TRAFFIC_FACTOR, "ip_list": sorted(user.ips),
                         "tcp_conn_num": len(user.conns)})
        return rows, snapshot

    def commit_report(self, snapshot: dict[str, tuple[int, int]]) -> None:
        for key, (up, down) in snapshot.items():
            user = self.users.get(key)
            if user is None:
                continue
            user.up -= up
            user.down -= down
            if not user.conns:
                user.ips.clear()

    def collect(self) -> list[dict]:
        """One dict per user, sorted by label, for Prometheus and the web page.

        ``upload_bytes``/``download_bytes`` are lifetime totals (never reset by the panel sync,
        so they can back Prometheus counters); ``unreported_*`` is what the next panel POST will
        carry. All four are in the panel's quantity (TRAFFIC_FACTOR x client-side payload).
        """
        f = TRAFFIC_FACTOR
        rows = [{"user": u.label, "protocol": u.protocol,
                 "source": "panel" if u.user_id is not None else "config",
                 "inbound": u.inbound_tag, "upload_bytes": u.total_up * f,
                 "download_bytes": u.total_down * f, "unreported_upload_bytes": u.up * f,
                 "unreported_download_bytes": u.down * f, "connections": len(u.conns),
                 "ips": sorted(u.ips)}
                for u in list(self.users.values())]
        return sorted(rows, key=_order)


def _order(row: dict) -> tuple:
    """Config clients first, then panel users by numeric user_id."""
    label = row["user"]
    return (row["source"], int(label) if label.isdigit() else -1, label)


#: the process-wide store (one proxy service per process)
STORE = UserStore()


def collect() -> list[dict]:
    return STORE.collect()


__all__ = ["STORE", "User", "UserStore", "collect", "parse_panel_users", "trojan_hash"]
