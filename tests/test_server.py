"""The reload policy (which relays stop, start, restart or stay) as a pure function."""

from ehco_gevent.config import RelayConfig
from ehco_gevent.server import plan


def rc(label, remote="127.0.0.1:1", listen="127.0.0.1:9"):
    return RelayConfig(listen=listen, label=label, tcp_remotes=(remote,))


def test_plan_diffs_by_label():
    old = {"keep": rc("keep"), "change": rc("change"), "gone": rc("gone")}
    new = {"keep": rc("keep"), "change": rc("change", remote="127.0.0.1:2"), "fresh": rc("fresh")}
    steps = plan(old, new)
    assert steps.keep == ["keep"]
    assert steps.restart == ["change"]
    assert steps.stop == ["gone"]
    assert steps.start == ["fresh"]


def test_identical_config_touches_nothing():
    cfgs = {"a": rc("a"), "b": rc("b", listen="127.0.0.1:10")}
    steps = plan(cfgs, dict(cfgs))
    assert (steps.stop, steps.start, steps.restart) == ([], [], [])
    assert sorted(steps.keep) == ["a", "b"]


def test_remote_order_is_a_change():
    a = RelayConfig(listen="l:1", label="x", tcp_remotes=("h:1", "h:2"))
    b = RelayConfig(listen="l:1", label="x", tcp_remotes=("h:2", "h:1"))
    assert plan({"x": a}, {"x": b}).restart == ["x"]


def test_applied_summary_names_what_started_and_what_failed():
    from ehco_gevent.server import Applied

    done = Applied(started=["a", "b"], stopped=["old"], kept=2,
                   failed={"c": "cannot listen on 127.0.0.1:1: address already in use"})
    assert done.summary() == ("started a, b; stopped old; kept 2; "
                              "failed: c (cannot listen on 127.0.0.1:1: address already in use)")
    assert Applied(kept=3).summary() == "kept 3" and not Applied(kept=3).changed
