"""The balancer as plain bookkeeping: strategies, gost's max_fails/fail_timeout, haproxy's
rise/fall, fail open. A fake clock stands in for time; no sockets."""

from __future__ import annotations

import logging
import random

import pytest

from ehco_gevent.remotes.balancer import Balancer


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(strategy="round_robin", remotes=("a", "b", "c"), **kw):
    clock = Clock()
    return Balancer("L", list(remotes), strategy, clock=clock, rng=random.Random(7), **kw), clock


def firsts(lb, n, host=""):
    return [lb.candidates(host)[0].address for _ in range(n)]


def test_round_robin_is_ehcos_order_and_skips_a_down_remote_without_shifting_others():
    lb, _ = make()
    assert firsts(lb, 6) == ["a", "b", "c", "a", "b", "c"]
    lb.failed(lb.states[1], "refused")  # max_fails 1: b is down
    picks = firsts(lb, 6)
    assert "b" not in picks and set(picks) == {"a", "c"}
    # the down remote is still a last resort behind the up ones
    assert lb.candidates()[-1].address == "b"


def test_passive_down_for_fail_timeout_then_tried_again_and_cleared_by_success(caplog):
    lb, clock = make(max_fails=2, fail_timeout=10)
    b = lb.states[1]
    lb.failed(b, "refused")
    assert b.up(clock.now)  # one failure of two
    clock.now += 11  # outside the window: the count starts again
    lb.failed(b, "refused")
    assert b.up(clock.now)
    with caplog.at_level(logging.INFO, "ehco.balancer"):
        lb.failed(b, "refused")
        assert not b.up(clock.now)
        clock.now += 9.9
        assert not b.up(clock.now)
        clock.now += 0.2
        assert b.up(clock.now)  # fail_timeout over: real traffic tries it again
        lb.failed(b, "refused")  # and fails: marked again, silently
        assert not b.up(clock.now)
        clock.now += 10.1
        lb.succeeded(b, 3.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "relay L: tcp remote b is down: 2 failed dial(s) within 10 s (last: refused); "
        "skipped for 10 s",
        "relay L: tcp remote b is up: dial succeeded"]


def test_all_down_fails_open_and_says_so_once(caplog):
    lb, _ = make("failover")
    for s in lb.states:
        lb.failed(s, "refused")
    caplog.clear()
    with caplog.at_level(logging.WARNING, "ehco.balancer"):
        assert [s.address for s in lb.candidates()] == ["a", "b", "c"]
        lb.candidates()
    assert [r.getMessage() for r in caplog.records] == [
        "relay L: every tcp remote is down; trying all of them anyway"]


def test_ip_hash_keeps_a_host_on_one_remote_while_it_is_up():
    lb, clock = make("ip_hash")
    hosts = [f"10.0.0.{i}" for i in range(40)]
    home = {h: lb.candidates(h)[0].address for h in hosts}
    assert all(lb.candidates(h)[0].address == home[h] for h in hosts for _ in range(3))
    assert len(set(home.values())) == 3  # different hosts spread over the remotes
    victim = home[hosts[0]]
    lb.failed(next(s for s in lb.states if s.address == victim), "refused")
    moved = {h: lb.candidates(h)[0].address for h in hosts}
    assert all(moved[h] == home[h] for h in hosts if home[h] != victim)  # others stay
    assert all(moved[h] != victim for h in hosts)
    clock.now += 11
    assert all(lb.candidates(h)[0].address == home[h] for h in hosts)  # back home


def test_least_conn_prefers_fewest_open_and_takes_turns_among_equals():
    lb, _ = make("least_conn")
    a, b, c = lb.states
    lb.opened(a)
    lb.opened(a)
    lb.opened(b)
    assert lb.candidates()[0] is c
    lb.opened(c)
    assert lb.candidates()[0] in (b, c)
    lb.closed(a)
    lb.closed(a)
    assert lb.candidates()[0] is a
    lb2, _ = make("least_conn")
    assert set(firsts(lb2, 3)) == {"a", "b", "c"}


def test_failover_prefers_the_first_up_remote():
    lb, clock = make("failover", fail_timeout=5)
    assert firsts(lb, 3) == ["a", "a", "a"]
    lb.failed(lb.states[0], "refused")
    assert firsts(lb, 3) == ["b", "b", "b"]
    clock.now += 6
    assert firsts(lb, 3) == ["a", "a", "a"]


def test_random_covers_every_remote():
    lb, _ = make("random")
    assert set(firsts(lb, 60)) == {"a", "b", "c"}


def test_health_checks_rise_and_fall(caplog):
    lb, clock = make()
    b = lb.states[1]
    with caplog.at_level(logging.INFO, "ehco.balancer"):
        lb.checked(b, False, 2, 3, "refused")
        lb.checked(b, False, 2, 3, "refused")
        assert b.up(clock.now)
        lb.checked(b, True, 2, 3)  # a pass breaks the streak
        for _ in range(3):
            lb.checked(b, False, 2, 3, "refused")
        assert not b.up(clock.now)
        lb.checked(b, False, 2, 3, "refused")  # already down: no second line
        lb.checked(b, True, 2, 3)
        assert not b.up(clock.now)
        lb.checked(b, True, 2, 3)
        assert b.up(clock.now)
    assert [r.getMessage() for r in caplog.records] == [
        "relay L: tcp remote b is down: health check failed 3 time(s): refused",
        "relay L: tcp remote b is up: health check passed 2 time(s)"]


def test_udp_remote_follows_the_tcp_remotes_checks():
    tcp, clock = make(remotes=("h:1", "h:2"))
    udp = Balancer("L", ["h:2", "h:3"], kind="udp", clock=clock)
    udp.follow_checks(tcp)
    tcp.checked(tcp.states[1], False, 1, 1, "refused")
    assert [s.address for s in udp.candidates()] == ["h:3", "h:2"]
    assert udp.snapshot()[0]["health_check"] == "down"


def test_one_remote_is_always_the_candidate():
    lb, _ = make(remotes=("only",))
    lb.failed(lb.states[0], "refused")
    assert [s.address for s in lb.candidates()] == ["only"]


def test_unknown_strategy_is_a_value_error():
    with pytest.raises(ValueError):
        Balancer("L", ["a"], "fastest")
