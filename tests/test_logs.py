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
