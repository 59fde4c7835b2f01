"""The Clash rules of design.md section 7 as plain functions: grouping, labels, relays, YAML."""

from __future__ import annotations

import itertools

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ehco_gevent.clash.clash_groups import (Proxy, SubscriptionError, common_prefix, derive_relays,
                                      group_label, group_names, group_prefixes, parse_proxies,
                                      parse_subscription, provider_proxies, provider_yaml,
                                      proxy_label)
from ehco_gevent.config import RelayConfig

SEED = {"proxies": [
    {"name": "us-1", "type": "ss", "server": "s1", "port": 1, "cipher": "aes-128-gcm",
     "password": "p1"},
    {"name": "us-2", "type": "trojan", "server": "s2", "port": 2, "sni": "x.example",
     "password": "p2", "udp": True},
    {"name": "jb-1", "type": "vmess", "server": "s3", "port": 3, "uuid": "u",
     "future-field": {"a": [1, 2]}},
]}


def counter(start: int = 1000):
    ports = itertools.count(start)
    return lambda udp: next(ports)


# -- labels and grouping ------------------------------------------------------------------------
def test_labels():
    assert proxy_label("us-1", "SUB") == "us-1-SUB"
    assert proxy_label("us-", "SUB") == "us-SUB"
    assert group_label("us-") == "us-lb"
    assert group_label("jb-1") == "jb-1-lb"


def test_seed_example_groups():
    groups = group_names(["us-1", "us-2", "jb-1"])
    assert [(g.label, g.members) for g in groups] == [("jb-1-lb", ("jb-1",)),
                                                       ("us-lb", ("us-1", "us-2"))]


def test_shorter_prefixes_are_dropped():
    # us-la-* share "us-la-", and "us-" (with us-ny-1) is a prefix of it: dropped
    groups = group_names(["us-la-1", "us-la-2", "us-ny-1"])
    assert [(g.prefix, g.members) for g in groups] == [("us-la-", ("us-la-1", "us-la-2")),
                                                       ("us-ny-1", ("us-ny-1",))]


def test_empty_and_single():
    assert group_names([]) == []
    assert [(g.prefix, g.members) for g in group_names(["a"])] == [("a", ("a",))]


def brute_prefixes(names):
    """design.md's wording literally: every pair, then drop prefixes of other prefixes."""
    found = {common_prefix(a, b) for a, b in itertools.combinations(sorted(set(names)), 2)}
    found.discard("")
    return sorted(p for p in found if not any(q != p and q.startswith(p) for q in found))


names_st = st.lists(st.text(alphabet="ab-1", min_size=1, max_size=6), max_size=12)


@settings(max_examples=300, deadline=None)
@given(names_st)
def test_grouping_properties(names):
    groups = group_names(names)
    members = [m for g in groups for m in g.members]
    assert sorted(members) == sorted(set(names))  # every proxy in exactly one group
    for g in groups:
        assert all(m.startswith(g.prefix) for m in g.members)
        assert g.prefix
    # neighbours in sorted order find the same prefixes as all pairs
    assert group_prefixes(names) == brute_prefixes(names)


# -- parsing ------------------------------------------------------------------------------------
def test_parse_keeps_all_fields_and_skips_bad_proxies():
    data = {"proxies": SEED["proxies"] + [
        {"name": "noserver", "port": 1}, {"name": "badport", "server": "h", "port": 70000},
        {"name": "us-1", "server": "dup", "port": 9}, "junk", {"server": "h", "port": 1}]}
    proxies, warnings = parse_proxies(data)
    assert [p.name for p in proxies] == ["us-1", "us-2", "jb-1"]
    assert proxies[2].fields["future-field"] == {"a": [1, 2]}
    assert [p.udp for p in proxies] == [False, True, False]
    assert len(warnings) == 5
    assert any("badport" in w for w in warnings)


@pytest.mark.parametrize("text", ["proxies: [unclosed", "just a string", "proxies: 3", "{}"])
def test_parse_rejects_bodies_without_proxies(text):
    with pytest.raises(SubscriptionError):
        parse_subscription(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_any_text_is_proxies_or_a_subscription_error(text):
    try:
        proxies, _ = parse_subscription(text)
    except SubscriptionError:
        return
    assert all(isinstance(p, Proxy) for p in proxies)


# -- relays -------------------------------------------------------------------------------------
def seed_plan(running=None, data=SEED, alloc=None):
    proxies, _ = parse_proxies(data)
    return proxies, derive_relays("SUB", proxies, "127.0.0.1", running or {},
                                  alloc or counter())


@settings(max_examples=200, deadline=None)
@given(names_st, st.sampled_from(["SUB", "lb", "1"]))
def test_derived_labels_are_unique(names, sub):
    proxies, _ = parse_proxies({"proxies": [{"name": n, "server": "h", "port": 1} for n in names]})
    plan = derive_relays(sub, proxies, "127.0.0.1", {}, counter())
    labels = [r.label for r in plan.relays]
    assert len(labels) == len(set(labels))
    assert len(plan.groups) + len(plan.skipped) == len(group_names(plan.proxy_labels))


def test_colliding_group_label_gets_no_relay():
    _, plan = seed_plan(data={"proxies": [{"name": n, "server": "h", "port": 1}
                                          for n in ("b", "b-x", "b-y")]})
    assert [g.prefix for g in plan.groups] == ["b-"]
    assert [g.prefix for g in plan.skipped] == ["b"]


def test_seed_example_relays():
    _, plan = seed_plan()
    relays = {r.label: r for r in plan.relays}
    assert list(relays) == ["us-1-SUB", "us-2-SUB", "jb-1-SUB", "jb-1-lb", "us-lb"]
    assert relays["us-1-SUB"] == RelayConfig(listen="127.0.0.1:1000", tcp_remotes=("s1:1",),
                                             label="us-1-SUB")
    assert relays["us-2-SUB"].udp_remotes == ("s2:2",)
    assert relays["us-lb"].tcp_remotes == ("s1:1", "s2:2")
    assert relays["us-lb"].udp_remotes == ("s2:2",)
    assert relays["jb-1-lb"].tcp_remotes == ("s3:3",)
    assert len({r.listen for r in plan.relays}) == 5


def test_group_skips_duplicate_servers_and_brackets_ipv6():
    data = {"proxies": [{"name": "a1", "server": "::1", "port": 5},
                        {"name": "a2", "server": "::1", "port": 5}]}
    _, plan = seed_plan(data=data)
    assert {r.label: r.tcp_remotes for r in plan.relays}["a-lb"] == ("[::1]:5",)


def test_refresh_keeps_ports_of_unchanged_and_moves_changed():
    _, first = seed_plan()
    running = {r.label: r for r in first.relays}
    moved = {"proxies": [dict(p) for p in SEED["proxies"]]}
    moved["proxies"][2]["server"] = "s9"          # jb-1 moves
    moved["proxies"][0]["password"] = "new"       # not a relay setting: us-1 stays
    del moved["proxies"][1]                       # us-2 removed
    _, second = seed_plan(running, moved, counter(2000))
    relays = {r.label: r for r in second.relays}
    assert relays["us-1-SUB"] == running["us-1-SUB"]
    assert relays["jb-1-SUB"].tcp_remotes == ("s9:3",)
    assert relays["jb-1-SUB"].listen.startswith("127.0.0.1:2")   # a new port
    assert "us-2-SUB" not in relays
    # the group lost us-2: "us-1" is now a group of its own, on a new relay
    assert set(relays) == {"us-1-SUB", "jb-1-SUB", "jb-1-lb", "us-1-lb"}


def test_unchanged_subscription_gives_the_same_relays():
    _, first = seed_plan()
    _, again = seed_plan({r.label: r for r in first.relays}, alloc=counter(5000))
    assert again.relays == first.relays


# -- provider YAML ------------------------------------------------------------------------------
def test_provider_yaml_rewrites_name_server_port_only():
    proxies, plan = seed_plan()
    ports = {r.label: int(r.listen.rsplit(":", 1)[1]) for r in plan.relays}
    out = yaml.safe_load(provider_yaml(provider_proxies(proxies, plan, ports, "10.0.0.1", False)))
    got = out["proxies"]
    assert [p["name"] for p in got] == ["us-1-SUB", "us-2-SUB", "jb-1-SUB"]
    for given_, p in zip(SEED["proxies"], got):
        assert p["server"] == "10.0.0.1"
        assert p["port"] == ports[p["name"]]
        rest = {k: v for k, v in p.items() if k not in ("name", "server", "port")}
        assert rest == {k: v for k, v in given_.items() if k not in ("name", "server", "port")}
    grouped = yaml.safe_load(provider_yaml(provider_proxies(proxies, plan, ports, "h", True)))
    assert [(p["name"], p["port"], p["type"]) for p in grouped["proxies"]] == [
        ("jb-1-lb", ports["jb-1-lb"], "vmess"), ("us-lb", ports["us-lb"], "ss")]
