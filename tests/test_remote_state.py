"""The per-remote dial record, and the registry calls the relay's dial path makes."""

from __future__ import annotations

from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.remote_state import RemoteState


def test_remote_state_follows_the_last_dial():
    state = RemoteState("r-1.2.3.4:5")
    assert state.status == "idle"
    assert state.to_json() == {"status": "idle", "dials_ok": 0, "dials_failed": 0,
                               "last_dial_at": None, "last_dial_ms": None, "last_error": ""}
    state.dial_failed("[Errno 111] Connection refused")
    assert (state.status, state.dials_failed, state.to_json()["last_error"]) == (
        "failing", 1, "[Errno 111] Connection refused")
    state.dial_ok(1.23456)
    out = state.to_json()
    assert (out["status"], out["dials_ok"], out["dials_failed"], out["last_dial_ms"]) == (
        "ok", 1, 1, 1.235)
    assert out["last_error"] == ""  # the error is history once a dial worked
    assert out["last_dial_at"] > 0


def test_registry_keeps_one_state_per_remote_label():
    registry = ConnectionRegistry()
    registry.dial_failed("a-r:1", "refused")
    registry.dial_failed("a-r:1", "refused")
    registry.dial_ok("a-r:2", 2.0)
    assert registry.remotes["a-r:1"].dials_failed == 2
    assert registry.remotes["a-r:2"].last_ms == 2.0
    assert registry.dial_failures == {"a-r:1": 2}  # what the metrics read
