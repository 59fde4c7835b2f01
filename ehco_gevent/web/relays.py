"""The index page's relays table: one row per running relay, in the ``table`` key of the page's
feed (``/api/v1/traffic/``).

Each row carries what an operator checks first: where the relay listens and how (listen and
transport types), each remote with what its last dial did (latency, or the error), the open
connections, the bytes moved and the failed dials. The remotes' dial record is the balancer's
(:mod:`ehco_gevent.remotes.balancer`, shown raw at ``/api/v1/relays/``); the bytes come from the
connection registry. This module only reads both and names a status, so a relay whose remote
refuses every dial reads ``failing``, not idle. Plain functions over dicts, tested without
sockets.
"""

from __future__ import annotations

from typing import Any, Iterable

#: remote statuses the page shows as errors
BAD = ("down", "failing")


def remote_status(state: dict, kind: str) -> str:
    """``down`` (skipped: failover or health checks), ``failing`` (the last dial failed),
    ``ok``, ``no reply`` (a UDP session open whose remote never answered), or ``idle``."""
    if not state.get("up", True):
        return "down"
    if state.get("last_error"):
        return "failing"
    if state.get("dials", 0) > state.get("dial_failures", 0):
        return "ok"
    if kind == "udp" and state.get("open_connections", 0):
        return "no reply"
    return "idle"


def side_status(statuses: list[str]) -> str:
    """One side's (TCP or UDP) status, the worst of its remotes': failing (every remote is down
    or failing), degraded (some are), no reply, ok, idle."""
    bad = sum(1 for s in statuses if s in BAD)
    if bad and bad == len(statuses):
        return "failing"
    if bad:
        return "degraded"
    for status in ("no reply", "ok"):
        if status in statuses:
            return status
    return "idle"


def relay_status(remotes: list[dict]) -> str:
    """A relay's status from its remotes' rows: each side's status, and the relay failing only
    when every side in use fails (an unused UDP side does not soften a failing TCP one)."""
    sides = [side_status([r["status"] for r in remotes if r["type"] == kind])
             for kind in ("tcp", "udp") if any(r["type"] == kind for r in remotes)]
    used = [s for s in sides if s != "idle"]
    if used and all(s == "failing" for s in used):
        return "failing"
    for status in ("failing", "degraded", "no reply", "ok"):
        if status in used:
            return "degraded" if status == "failing" else status
    return "idle"


def relay_rows(states: Iterable[dict], totals: dict[tuple[str, str], list[int]]) -> list[dict]:
    """Rows from :func:`ehco_gevent.remotes.state.relay_states` (each running relay and its
    remotes' balancer state) and the registry's ``totals()`` ((remote label, type) -> [up,
    down] bytes)."""
    rows = []
    for item in states:
        label = item["label"]
        remotes = []
        for kind in ("tcp", "udp"):
            for state in item.get(f"{kind}_remotes") or ():
                up, down = totals.get((f"{label}-{state['remote']}", kind), (0, 0))
                remotes.append({
                    "remote": state["remote"],
                    "type": kind,
                    "status": remote_status(state, kind),
                    "reason": state.get("reason", ""),
                    "down_for_s": state.get("down_for_s", 0),
                    "last_dial_ms": state.get("last_dial_ms"),
                    "last_error": state.get("last_error", ""),
                    "dials": state.get("dials", 0),
                    "dials_failed": state.get("dial_failures", 0),
                    "active": state.get("open_connections", 0),
                    "up_bytes": up,
                    "down_bytes": down,
                })
        rows.append({
            "label": label,
            "listen": item["listen"],
            "listen_type": item["listen_type"],
            "transport_type": item["transport_type"],
            "lb_strategy": item.get("lb_strategy", "round_robin"),
            "status": relay_status(remotes),
            "active": sum(r["active"] for r in remotes),
            "up_bytes": sum(r["up_bytes"] for r in remotes),
            "down_bytes": sum(r["down_bytes"] for r in remotes),
            "dials_failed": sum(r["dials_failed"] for r in remotes),
            "remotes": remotes,
        })
    return rows


def table(app: Any) -> list[dict]:
    """The running relays' rows."""
    from ..remotes.state import relay_states

    return relay_rows(relay_states(app), app.registry.totals())
