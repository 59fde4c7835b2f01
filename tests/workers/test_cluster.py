"""The supervisor's read side as plain functions: counters summed, a reload's outcome and the
balancers' remote rows merged over the workers' answers."""

from ehco_gevent.server import Applied
from ehco_gevent.workers.cluster import (MergedBalancer, add_into, merge_applied,
                                         merge_remote_rows, sum_counters)


def test_counters_add_per_key_and_per_position():
    totals = sum_counters([{("a", "tcp"): [1, 2]}, {("a", "tcp"): [10, 20], ("b", "udp"): [5, 0]},
                           {}])
    assert totals == {("a", "tcp"): [11, 22], ("b", "udp"): [5, 0]}
    assert add_into({"x": 1}, {"x": 2, "y": 3}) == {"x": 3, "y": 3}


def test_a_reload_failed_where_any_worker_failed():
    one = Applied(started=["a", "b"], stopped=["old"], kept=2)
    two = Applied(started=["a"], stopped=["old"], kept=2,
                  failed={"b": "cannot listen on 127.0.0.1:7001: address already in use"})
    merged = merge_applied([one, two])
    assert (merged.started, merged.stopped, merged.kept) == (["a"], ["old"], 2)
    assert merged.failed == {"b": "cannot listen on 127.0.0.1:7001: address already in use"}
    assert merge_applied([]).summary() == "kept 0"


def test_remote_rows_of_the_workers_merge_into_one_per_remote():
    def row(remote, up=True, **kw):
        return {"remote": remote, "up": up, "reason": "" if up else "refused 3 times",
                "health_check": "up", "down_for_s": 0.0, "open_connections": 1, "dials": 2,
                "dial_failures": 0, "last_dial_ms": 1.5, "last_error": "", "last_change": None,
                **kw}

    worker1 = [row("a:1"), row("b:2", last_dial_ms=None)]
    worker2 = [row("a:1", last_dial_ms=4.0, last_change=100.0),
               row("b:2", up=False, down_for_s=7.5, dial_failures=3, last_change=90.0,
                   last_error="connection refused", last_dial_ms=None)]
    a, b = merge_remote_rows([worker1, worker2])
    assert (a["up"], a["open_connections"], a["dials"], a["last_dial_ms"]) == (True, 2, 4, 4.0)
    assert (b["up"], b["reason"], b["down_for_s"], b["dial_failures"]) == (
        False, "refused 3 times", 7.5, 3)
    assert (b["last_error"], b["last_dial_ms"]) == ("connection refused", None)
    view = MergedBalancer([a, b])
    assert view.up_states() == [("a:1", True), ("b:2", False)]
    assert [s.last_dial_ms for s in view.states] == [4.0, None]
