"""The index page's relays table (``/api/v1/relays/``): one row per running relay.

Each row carries what an operator checks first: where the relay listens and how (listen and
transport types), each remote with what its last dial did (latency, or the error), the open
connections, the bytes moved and the failed dials. A relay whose remotes refuse every dial reads
``failing``, not idle. Built from the relay configs and the connection registry only, so it is
tested with plain objects.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..remote_state import RemoteState


def tcp_remote_row(remote: str, state: RemoteState | None) -> dict:
    row = {"remote": remote, "type": "tcp"}
    row.update((state or RemoteState(remote)).to_json())
    return row


def udp_remote_row(remote: str, up: int, down: int) -> dict:
    """UDP has no dial: a remote that was sent datagrams and never answered is ``no reply``."""
    status = "idle" if not up else ("ok" if down else "no reply")
    return {"remote": remote, "type": "udp", "status": status}


def relay_status(remotes: list[dict]) -> str:
    """The worst of the remotes': failing (every TCP remote's last dial failed), degraded
    (some did), no reply, ok, idle."""
    tcp = [r["status"] for r in remotes if r["type"] == "tcp"]
    failing = tcp.count("failing")
    if failing and failing == len(tcp):
        return "failing"
    if failing:
        return "degraded"
    statuses = {r["status"] for r in remotes}
    for status in ("no reply", "ok"):
        if status in statuses:
            return status
    return "idle"


def relay_rows(cfgs: Iterable[Any], registry: Any) -> list[dict]:
    """Rows for the running relays (``RelayConfig`` objects), in config order."""
    counts = registry.count_active()  # (remote_label, type) -> open connections
    totals = registry.totals()  # (remote_label, type) -> [up, down]
    rows = []
    for cfg in cfgs:
        remotes = []
        for kind, addresses in (("tcp", cfg.tcp_remotes), ("udp", cfg.udp_remotes)):
            for remote in addresses:
                key = (cfg.remote_label(remote), kind)
                up, down = totals.get(key, (0, 0))
                if kind == "tcp":
                    row = tcp_remote_row(remote, registry.remotes.get(key[0]))
                else:
                    row = udp_remote_row(remote, up, down)
                row.update(active=counts.get(key, 0), up_bytes=up, down_bytes=down)
                remotes.append(row)
        rows.append({
            "label": cfg.label,
            "listen": cfg.listen,
            "listen_type": cfg.listen_type,
            "transport_type": cfg.transport_type,
            "status": relay_status(remotes),
            "active": sum(r["active"] for r in remotes),
            "up_bytes": sum(r["up_bytes"] for r in remotes),
            "down_bytes": sum(r["down_bytes"] for r in remotes),
            "dials_failed": sum(r.get("dials_failed", 0) for r in remotes),
            "remotes": remotes,
        })
    return rows
