"""RateLimitedLogger: one line per cause per interval, with the count of what it held back."""

import logging

from ehco_gevent.logs import RateLimitedLogger


def test_one_line_per_cause_per_interval(caplog, monkeypatch):
    now = [100.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])
    limited = RateLimitedLogger(logging.getLogger("t.rate"), interval=10)
    with caplog.at_level(logging.INFO, "t.rate"):
        results = [limited.log(logging.INFO, "flood", "flood from %s", ip) for ip in ("a", "b", "c")]
        assert limited.log(logging.INFO, "slow", "slow client %s", "d")  # another cause
        now[0] += 10
        assert limited.log(logging.INFO, "flood", "flood from %s", "e")
    assert results == [True, False, False]
    assert [r.getMessage() for r in caplog.records] == [
        "flood from a", "slow client d", "flood from e (and 2 more since the last report)"]


def test_causes_are_any_key_and_force_logs_anyway(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])
    limited = RateLimitedLogger(logging.getLogger("t.rate"), interval=60)
    with caplog.at_level(logging.INFO, "t.rate"):
        assert limited.warning(("relay r", "tls"), "relay %s: %s", "r", "tls")
        assert not any(limited.warning(("relay r", "tls"), "relay r: tls") for _ in range(99))
        assert limited.log(logging.INFO, ("relay r", "tls"), "asked for", force=True)
        now[0] += 30  # force started the interval again
        assert not limited.warning(("relay r", "tls"), "relay r: tls")
    assert [r.getMessage() for r in caplog.records] == [
        "relay r: tls", "asked for (and 99 more since the last report)"]


def test_the_table_of_causes_stays_bounded():
    limited = RateLimitedLogger(logging.getLogger("t.rate"), interval=60, max_keys=10)
    for i in range(1000):
        limited.log(logging.DEBUG, i, "x")
    assert len(limited._seen) <= 10
