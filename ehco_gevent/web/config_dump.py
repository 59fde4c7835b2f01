"""``/api/v1/config/``: the running config in Go ehco's shape, with its secrets masked.

Go ehco answered ``json.Marshal`` of its Config struct: compact, a ``PATH`` key first (the -c
value, a file path or URL), ``omitempty`` on most top-level keys, ``relay_configs`` always
(``null`` when empty) and ``tcp_remotes``/``udp_remotes`` written as ``null`` when a relay has
none. Tools written against that dump read this one the same way.

Beyond ehco: the dump no longer hands secrets to whoever can reach the page. Masked unless the
request asks for them (``?secrets=true``) on a node that has a token or basic auth configured:
``web_token``, ``web_auth_pass``, the credentials and token-bearing parts of every URL (the
config URL, ``relay_sync_url``, ``sync_traffic_endpoint``, the ``sub_configs`` URLs), and the
credential fields of ``xray_config`` (passwords, user ids, private keys). Plain functions over
dicts, so they are tested without a server.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
#: top-level keys Go's Config struct tags ``omitempty``: absent when empty, zero or false
GO_OMITEMPTY = frozenset({
    "web_host", "web_port", "web_token", "web_auth_user", "web_auth_pass", "log_level",
    "enable_ping", "reload_interval", "relay_sync_url", "relay_sync_interval", "sub_configs",
    "xray_config", "sync_traffic_endpoint",
})
#: relay list keys Go writes as ``null`` when the relay has none
GO_NULL_LISTS = ("tcp_remotes", "udp_remotes")
#: top-level keys whose values are URLs (the config's own PATH is one too)
URL_KEYS = ("PATH", "relay_sync_url", "sync_traffic_endpoint")
#: xray_config keys (any depth, case-insensitive) whose values are credentials
XRAY_SECRET_KEYS = frozenset({"password", "pass", "passwd", "psk", "secret", "secretkey",
                              "token", "privatekey", "key", "seed"})
#: in a client/user/account entry of these lists, ``id`` is the credential (vmess, vless)
XRAY_ID_LISTS = frozenset({"clients", "users", "accounts"})


def go_shape(cfg: dict[str, Any], path: str) -> dict[str, Any]:
    """Reshape ``Config.to_json()`` as Go ehco's dump: PATH first, omitempty, nulls."""
    out: dict[str, Any] = {"PATH": path}
    for key, value in cfg.items():
        if key in GO_OMITEMPTY and not value:
            continue
        if key == "relay_configs":
            value = [relay_shape(r) for r in value] or None
        out[key] = value
    out.setdefault("relay_configs", None)
    return out


def relay_shape(relay: dict[str, Any]) -> dict[str, Any]:
    out = dict(relay)
    for key in GO_NULL_LISTS:
        if key in out and not out[key]:
            out[key] = None
    if not out.get("label"):
        out.pop("label", None)
    return out


def mask_url(url: str) -> str:
    """Keep where a URL points (scheme, host, port); hide what may carry a credential.

    User info becomes ``***@``; a path, query or fragment becomes ``/***``: subscription and
    panel URLs carry their tokens in either (``/link/TOKEN?clash=1``, ``/api?token=...``).
    A value that is not a URL (a file path) is returned unchanged.
    """
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return url
    userinfo, at, host = parts.netloc.rpartition("@")
    hidden = bool(parts.path.strip("/") or parts.query or parts.fragment)
    return (f"{parts.scheme}://{MASK + '@' if at else ''}{host}"
            + (f"/{MASK}" if hidden else parts.path))


def mask_xray(value: Any, in_id_list: bool = False) -> Any:
    """A copy of an xray_config (sub)tree with its credential values replaced by ``***``."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            lower = key.lower()
            if lower in XRAY_SECRET_KEYS or (in_id_list and lower == "id"):
                out[key] = MASK if item not in (None, "", [], {}) else item
            else:
                out[key] = mask_xray(item, lower in XRAY_ID_LISTS)
        return out
    if isinstance(value, list):
        return [mask_xray(item, in_id_list) for item in value]
    return value


def mask_secrets(dump: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Go-shaped dump with every secret masked (see the module docstring)."""
    out = dict(dump)
    for key in ("web_token", "web_auth_pass"):
        if out.get(key):
            out[key] = MASK
    for key in URL_KEYS:
        if out.get(key):
            out[key] = mask_url(out[key])
    if out.get("sub_configs"):
        out["sub_configs"] = [{**sub, "url": mask_url(sub.get("url", ""))}
                              for sub in out["sub_configs"]]
    if out.get("xray_config") is not None:
        out["xray_config"] = mask_xray(out["xray_config"])
    return out


def go_json(value: Any) -> str:
    """Compact JSON as Go's encoding/json writes it, including its HTML-safe escapes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def config_dump(cfg: Any, show_secrets: bool) -> str:
    """The body of ``/api/v1/config/`` for a running :class:`~ehco_gevent.config.Config`."""
    dump = go_shape(cfg.to_json(), cfg.path)
    return go_json(dump if show_secrets else mask_secrets(dump))
