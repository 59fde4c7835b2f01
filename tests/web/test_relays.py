"""The relays table's rows, from relay configs and a registry fed by hand."""

from __future__ import annotations

from ehco_gevent.config import parse_config
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.web.relays import relay_rows, relay_status


def cfgs():
    cfg, _ = parse_config({"relay_configs": [
        {"listen": "127.0.0.1:1", "label": "two", "transport_type": "ws",
         "tcp_remotes": ["ws://10.0.0.1:80", "ws://10.0.0.2:80"]},
        {"listen": "127.0.0.1:2", "label": "udp", "udp_remotes": ["10.0.0.3:53"]}]})
    return cfg.relay_configs


def test_rows_carry_dials_traffic_and_status():
    registry = ConnectionRegistry()
    two, udp = cfgs()
    registry.dial_ok(two.remote_label("ws://10.0.0.1:80"), 3.5)
    conn = registry.open("two", "tcp", "c:1", "ws://10.0.0.1:80",
                         two.remote_label("ws://10.0.0.1:80"), 3.5)
    conn.add_up(100)
    conn.add_down(200)
    registry.dial_failed(two.remote_label("ws://10.0.0.2:80"), "timed out")
    rows = relay_rows([two, udp], registry)
    row = rows[0]
    assert (row["label"], row["listen"], row["listen_type"], row["transport_type"]) == (
        "two", "127.0.0.1:1", "raw", "ws")
    assert (row["status"], row["active"], row["up_bytes"], row["down_bytes"],
            row["dials_failed"]) == ("degraded", 1, 100, 200, 1)
    good, bad = row["remotes"]
    assert (good["status"], good["last_dial_ms"], good["active"]) == ("ok", 3.5, 1)
    assert (bad["status"], bad["last_error"], bad["dials_failed"]) == ("failing", "timed out", 1)
    assert rows[1]["status"] == "idle" and rows[1]["remotes"][0]["type"] == "udp"
    # the open connection ends: its bytes stay in the row
    registry.close(conn)
    assert relay_rows([two], registry)[0]["up_bytes"] == 100


def test_udp_remote_that_never_answers():
    registry = ConnectionRegistry()
    _, udp = cfgs()
    conn = registry.open("udp", "udp", "c:2", "10.0.0.3:53", udp.remote_label("10.0.0.3:53"))
    conn.add_up(40)
    assert relay_rows([udp], registry)[0]["status"] == "no reply"
    conn.add_down(40)
    assert relay_rows([udp], registry)[0]["status"] == "ok"


def test_relay_status_is_the_worst_remote():
    tcp = lambda status: {"type": "tcp", "status": status}  # noqa: E731
    assert relay_status([tcp("failing"), tcp("failing")]) == "failing"
    assert relay_status([tcp("failing"), tcp("idle")]) == "degraded"
    assert relay_status([tcp("ok"), tcp("idle")]) == "ok"
    assert relay_status([tcp("idle")]) == "idle"
    assert relay_status([tcp("ok"), {"type": "udp", "status": "no reply"}]) == "no reply"
