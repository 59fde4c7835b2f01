"""The relays table's rows and statuses, from balancer snapshots and registry totals."""

from __future__ import annotations

from ehco_gevent.web.relays import relay_rows, relay_status, remote_status, side_status


def state(remote, **kw):
    base = {"remote": remote, "up": True, "reason": "", "open_connections": 0, "dials": 0,
            "dial_failures": 0, "last_dial_ms": None, "last_error": ""}
    base.update(kw)
    return base


def test_remote_status():
    assert remote_status(state("a"), "tcp") == "idle"
    assert remote_status(state("a", dials=2, last_dial_ms=1.5), "tcp") == "ok"
    assert remote_status(state("a", dials=3, dial_failures=3, last_error="refused"),
                         "tcp") == "failing"
    # the error is history once a dial worked (the balancer clears it)
    assert remote_status(state("a", dials=4, dial_failures=3), "tcp") == "ok"
    assert remote_status(state("a", up=False, reason="health check failed"), "tcp") == "down"
    assert remote_status(state("a", open_connections=1), "udp") == "no reply"


def test_rows_carry_dials_traffic_and_status():
    states = [{"label": "two", "listen": "127.0.0.1:1", "listen_type": "raw",
               "transport_type": "ws", "lb_strategy": "failover",
               "tcp_remotes": [state("ws://10.0.0.1:80", dials=1, last_dial_ms=3.5,
                                     open_connections=1),
                               state("ws://10.0.0.2:80", dials=1, dial_failures=1,
                                     last_error="timed out")],
               "udp_remotes": []}]
    totals = {("two-ws://10.0.0.1:80", "tcp"): [100, 200]}
    (row,) = relay_rows(states, totals)
    assert (row["label"], row["listen"], row["listen_type"], row["transport_type"],
            row["lb_strategy"]) == ("two", "127.0.0.1:1", "raw", "ws", "failover")
    assert (row["status"], row["active"], row["up_bytes"], row["down_bytes"],
            row["dials_failed"]) == ("degraded", 1, 100, 200, 1)
    good, bad = row["remotes"]
    assert (good["status"], good["last_dial_ms"], good["active"], good["up_bytes"]) == (
        "ok", 3.5, 1, 100)
    assert (bad["status"], bad["last_error"], bad["dials_failed"], bad["up_bytes"]) == (
        "failing", "timed out", 1, 0)


def test_relay_status_is_the_worst_side():
    assert side_status(["failing", "down"]) == "failing"
    assert side_status(["failing", "idle"]) == "degraded"
    assert side_status(["ok", "idle"]) == "ok"
    assert side_status(["idle"]) == "idle"

    def rows(*pairs):
        return [{"type": kind, "status": status} for kind, status in pairs]

    assert relay_status(rows(("tcp", "failing"))) == "failing"
    # an unused UDP side does not soften a failing TCP one; a working one does
    assert relay_status(rows(("tcp", "failing"), ("udp", "idle"))) == "failing"
    assert relay_status(rows(("tcp", "failing"), ("udp", "ok"))) == "degraded"
    assert relay_status(rows(("tcp", "ok"), ("udp", "no reply"))) == "no reply"
    assert relay_status(rows(("tcp", "idle"), ("udp", "idle"))) == "idle"
