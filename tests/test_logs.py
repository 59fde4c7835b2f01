"""RateLimitedLog: one line per key per interval, the held-back count on the next line."""

import logging

from ehco_gevent.logs import RateLimitedLog


def test_one_line_per_key_per_interval(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("ehco_gevent.logs.time.monotonic", lambda: now[0])
    limited = RateLimitedLog(logging.getLogger("t"), interval=60)
    with caplog.at_level(logging.INFO, "t"):
        assert limited.warning(("r", "tls"), "relay %s: %s", "r", "tls")
        assert not any(limited.warning(("r", "tls"), "relay %s: %s", "r", "tls")
                       for _ in range(99))
        assert limited.warning(("r", "ssh"), "relay r: ssh")  # another cause: its own line
        now[0] += 61
        assert limited.warning(("r", "tls"), "relay %s: %s", "r", "tls")
        assert limited.log(logging.INFO, ("r", "tls"), "asked for", force=True)
    assert [r.getMessage() for r in caplog.records] == [
        "relay r: tls", "relay r: ssh", "relay r: tls (99 more like this in the last 60 s)",
        "asked for"]


def test_the_key_table_stays_bounded():
    limited = RateLimitedLog(logging.getLogger("t"), interval=60, max_keys=10)
    for i in range(1000):
        limited.log(logging.DEBUG, i, "x")
    assert len(limited._seen) <= 10
