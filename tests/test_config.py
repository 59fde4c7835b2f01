"""Config validation as a pure function: defaults, ehco's rules, and the errors operators see."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehco_gevent.config import (ConfigError, default_label, load_config, parse_config,
                                split_host_port)


def relay(**kw):
    base = {"listen": "127.0.0.1:1234", "tcp_remotes": ["127.0.0.1:5201"]}
    base.update(kw)
    return base


def test_defaults():
    cfg, warnings = parse_config({"relay_configs": [relay(label="a")]})
    assert warnings == []
    assert cfg.web_host == "0.0.0.0" and cfg.web_port == 0 and cfg.log_level == "info"
    r = cfg.relay_configs[0]
    assert (r.listen_type, r.transport_type, r.udp_remotes) == ("raw", "raw", ())
    assert r.remote_label("127.0.0.1:5201") == "a-127.0.0.1:5201"


def test_balancing_and_proxy_keys_defaults_and_values():
    r = parse_config({"relay_configs": [relay()]})[0].relay_configs[0]
    assert (r.lb_strategy, r.max_fails, r.fail_timeout, r.dial_timeout, r.health_check,
            r.send_proxy, r.accept_proxy, r.accept_proxy_from) == (
        "round_robin", 1, 10.0, 13.0, None, "", False, ())
    cfg, warnings = parse_config({"relay_configs": [relay(
        lb_strategy="ip_hash", max_fails=3, fail_timeout=2.5, dial_timeout=4,
        health_check={"interval": 1, "rise": 3, "bogus": 1}, send_proxy="v2",
        accept_proxy=True, accept_proxy_from=["10.0.0.0/8", "::1/128"])]}, "c.json")
    r = cfg.relay_configs[0]
    assert (r.lb_strategy, r.max_fails, r.fail_timeout, r.dial_timeout) == ("ip_hash", 3, 2.5, 4.0)
    hc = r.health_check
    assert (hc.interval, hc.timeout, hc.rise, hc.fall) == (1.0, 2.0, 3, 3)
    assert r.accept_proxy_from == ("10.0.0.0/8", "::1/128")
    assert warnings == ["config c.json: relay_configs[0]: health_check: unknown key 'bogus' ignored"]
    assert parse_config({"relay_configs": [relay(health_check=True)]})[0].relay_configs[0] \
        .health_check.fall == 3
    _, warnings = parse_config({"relay_configs": [relay(accept_proxy_from=["10.0.0.0/8"])]}, "c")
    assert warnings == ["config c: relay_configs[0]: accept_proxy_from is ignored without "
                        "accept_proxy: true"]
    _, warnings = parse_config({"relay_configs": [relay(tcp_remotes=[], udp_remotes=["h:1"],
                                                        send_proxy="v1")]}, "c")
    assert warnings == ["config c: relay_configs[0]: send_proxy applies to TCP and is ignored "
                        "on a relay without tcp_remotes"]


def test_an_ehco_relay_reads_back_without_new_keys():
    """/api/v1/config/ of an ehco 1.1.4 config shows the keys it had, nothing added."""
    doc = relay(label="a", listen_type="raw", transport_type="ws", udp_remotes=[],
                tcp_remotes=["ws://1.1.1.1:1", "ws://2.2.2.2:2"])
    assert parse_config({"relay_configs": [doc]})[0].relay_configs[0].to_json() == doc
    changed = parse_config({"relay_configs": [{**doc, "lb_strategy": "failover"}]})[0]
    assert changed.relay_configs[0].to_json()["lb_strategy"] == "failover"


def test_default_label_is_ehco_format():
    cfg, _ = parse_config({"relay_configs": [relay(tcp_remotes=["1.1.1.1:1", "2.2.2.2:2"],
                                                   transport_type="ws")]})
    assert cfg.relay_configs[0].label == (
        "<At=127.0.0.1:1234 Over=raw TCP-To=[1.1.1.1:1 2.2.2.2:2] UDP-To=[] Through=ws>")
    assert default_label("l", "raw", [], [], "raw") == "<At=l Over=raw TCP-To=[] UDP-To=[] Through=raw>"


@pytest.mark.parametrize("bad, words", [
    (relay(listen_type="bogus"), ["relay_configs[0]", "listen_type", "bogus"]),
    (relay(transport_type="quic", label="x"), ["relay_configs[0] (label 'x')", "transport_type"]),
    (relay(listen=""), ["listen", "non-empty"]),
    (relay(listen="nohostport"), ["listen", "host:port"]),
    (relay(tcp_remotes=[""]), ["tcp_remotes[0]"]),
    (relay(tcp_remotes=[], udp_remotes=[]), ["both are empty"]),
    (relay(tcp_remotes="1.1.1.1:1"), ["tcp_remotes", "expected a list"]),
    (relay(udp_remotes=["1.1.1.1"]), ["udp_remotes[0]"]),
    (relay(listen="127.0.0.1:99999"), ["listen", "port"]),
    (relay(lb_strategy="fastest", label="x"), ["(label 'x')", "lb_strategy", "fastest"]),
    (relay(max_fails=0), ["max_fails", "at least 1"]),
    (relay(max_fails=1.5), ["max_fails", "whole number"]),
    (relay(fail_timeout=-1), ["fail_timeout", "greater than 0"]),
    (relay(dial_timeout="3s"), ["dial_timeout", "number of seconds"]),
    (relay(fail_timeout=float("nan")), ["fail_timeout", "finite"]),
    (relay(health_check=[1]), ["health_check", "expected an object"]),
    (relay(health_check={"interval": 0}), ["health_check: interval", "greater than 0"]),
    (relay(health_check={"fall": True}), ["health_check: fall", "whole number"]),
    (relay(send_proxy="v3"), ["send_proxy", "v1 or v2"]),
    (relay(send_proxy=2), ["send_proxy", "expected a string"]),
    (relay(accept_proxy="yes"), ["accept_proxy", "true or false"]),
    (relay(accept_proxy=True, accept_proxy_from=["10.0.0.0/33"]), ["accept_proxy_from[0]"]),
    (relay(accept_proxy=True, accept_proxy_from=[10]), ["accept_proxy_from[0]", "CIDR"]),
])
def test_relay_errors_name_relay_and_key(bad, words):
    with pytest.raises(ConfigError) as info:
        parse_config({"relay_configs": [bad]}, "conf/x.json")
    message = str(info.value)
    assert message.startswith("invalid config conf/x.json: ")
    for word in words:
        assert word in message


@pytest.mark.parametrize("bad, key", [
    ({"web_port": "80"}, "web_port"),
    ({"web_port": True}, "web_port"),
    ({"web_port": 70000}, "web_port"),
    ({"log_level": "loud"}, "log_level"),
    ({"relay_configs": {}}, "relay_configs"),
    ({"reload_interval": -1}, "reload_interval"),
    ({"sub_configs": [{"name": "a", "url": "ftp://x"}]}, "url"),
    ({"sub_configs": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]},
     "sub_configs"),
    ({"sub_configs": {"name": "a", "url": "http://x"}}, "sub_configs"),
    ({"sub_configs": ["http://x"]}, r"sub_configs[0]"),
    ({"sub_configs": [{"url": "http://x"}]}, r"sub_configs[0]: name"),
    ({"sub_configs": [{"name": 3, "url": "http://x"}]}, r"sub_configs[0]: name"),
    ({"sub_configs": [{"name": "a"}]}, r"sub_configs[0]: url"),
    ({"workers": 0}, "workers: 0 is below 1"),
    ({"workers": "many"}, "workers: 'many' is neither"),
    ({"workers": True}, "workers"),
    ({"workers": 1.5}, "workers"),
])
def test_top_level_errors_name_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        parse_config(bad)


@pytest.mark.parametrize("value,want", [(None, 1), (1, 1), (4, 4), ("3", 3), ("auto", "auto"),
                                        ("AUTO", "auto")])
def test_workers_key(value, want):
    doc = {} if value is None else {"workers": value}
    cfg, warnings = parse_config(doc)
    assert cfg.workers == want and warnings == []
    assert ("workers" in cfg.to_json()) == (want != 1)


def test_labels_must_be_unique():
    with pytest.raises(ConfigError, match=r"relay_configs\[1\] \(label 'a'\).*relay_configs\[0\]"):
        parse_config({"relay_configs": [relay(label="a"), relay(label="a", listen="127.0.0.1:2")]})


def test_sub_configs_are_parsed_in_order():
    cfg, warnings = parse_config({"sub_configs": [{"name": "b", "url": "https://h/b"},
                                                  {"name": "a", "url": "http://h/a", "typo": 1}]},
                                 "c.json")
    assert [(s.name, s.url) for s in cfg.sub_configs] == [("b", "https://h/b"), ("a", "http://h/a")]
    assert warnings == ["config c.json: sub_configs[1]: unknown key 'typo' ignored"]
    assert cfg.to_json()["sub_configs"] == [{"name": "b", "url": "https://h/b"},
                                            {"name": "a", "url": "http://h/a"}]


def test_unknown_keys_are_warned_about():
    cfg, warnings = parse_config({"web_prot": 1, "relay_configs": [relay(tcp_remote=["x"])]}, "c.json")
    assert any("'web_prot'" in w for w in warnings)
    assert any("relay_configs[0]" in w and "'tcp_remote'" in w for w in warnings)
    assert cfg.relay_configs[0].tcp_remotes == ("127.0.0.1:5201",)
    assert "(did you mean 'web_port'?)" in warnings[0]


def test_unknown_keys_come_with_the_error_they_cause():
    doc = {"web_prot": 1, "relay_configs": [{"listen": "127.0.0.1:1", "tcp_remote": ["h:1"]}]}
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "c.json")
    assert "note the unknown key 'tcp_remote' (did you mean 'tcp_remotes'?)" in str(info.value)
    assert len(info.value.warnings) == 2 and "'web_prot'" in info.value.warnings[0]
    assert "'tcp_remote' ignored (did you mean 'tcp_remotes'?)" in info.value.warnings[1]


def test_nothing_but_unknown_top_level_keys_is_an_error():
    with pytest.raises(ConfigError, match="only unknown 'relay_config' .did you mean "
                                          "'relay_configs'.."):
        parse_config({"relay_config": [relay()]}, "c.json")
    for fine in ({}, {"web_port": 1, "relay_config": []}, {"xray_config": {}}):
        parse_config(fine, "c.json")


@pytest.mark.parametrize("remote,hint", [("ws://h:1", "needs transport_type ws (-tt ws"),
                                         ("wss://h:1/p", "transport_type wss or mwss")])
def test_scheme_on_a_raw_relay_hints_at_the_transport_type(remote, hint):
    with pytest.raises(ConfigError, match="is not host:port") as info:
        parse_config({"relay_configs": [relay(tcp_remotes=[remote])]})
    assert hint in str(info.value)


def test_tunnel_remotes_may_carry_a_scheme():
    cfg, _ = parse_config({"relay_configs": [relay(transport_type="wss",
                                                   tcp_remotes=["wss://127.0.0.1:443"])]})
    assert cfg.relay_configs[0].tcp_remotes == ("wss://127.0.0.1:443",)
    with pytest.raises(ConfigError):
        parse_config({"relay_configs": [relay(tcp_remotes=["ws://127.0.0.1:443"])]})


def test_split_host_port():
    assert split_host_port("0.0.0.0:1") == ("0.0.0.0", 1)
    assert split_host_port("[::1]:443") == ("::1", 443)
    assert split_host_port(":80") == ("", 80)
    for bad in ("::1:80", "a", "a:", "a:b", "[::1]80"):
        with pytest.raises(ValueError):
            split_host_port(bad)


def test_load_json_and_yaml_files(tmp_path):
    data = {"web_port": 9000, "relay_configs": [relay(label="y")]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    (tmp_path / "c.yaml").write_text("web_port: 9000\nrelay_configs:\n  - listen: 127.0.0.1:1234\n"
                                     "    label: y\n    tcp_remotes: [127.0.0.1:5201]\n")
    a, _ = load_config(str(tmp_path / "c.json"))
    b, _ = load_config(str(tmp_path / "c.yaml"))
    assert a.relay_configs == b.relay_configs and a.web_port == b.web_port == 9000


def test_unreadable_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.json"):
        load_config(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_config(str(tmp_path / "bad.json"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=20)
relay_like = st.fixed_dictionaries({}, optional={
    "listen": st.sampled_from(["127.0.0.1:1", "", "x", ":0"]) | json_values,
    "listen_type": st.sampled_from(["raw", "ws", "mwss", "bogus"]) | json_values,
    "transport_type": st.sampled_from(["raw", "wss", "mtcp"]) | json_values,
    "tcp_remotes": st.lists(st.sampled_from(["1.1.1.1:1", "ws://h:2", ""]), max_size=3) | json_values,
    "udp_remotes": st.lists(st.sampled_from(["1.1.1.1:1", "h"]), max_size=2) | json_values,
    "label": st.sampled_from(["a", "b", ""]) | json_values,
    "lb_strategy": st.sampled_from(["ip_hash", "failover", "x"]) | json_values,
    "max_fails": json_values, "fail_timeout": json_values, "dial_timeout": json_values,
    "health_check": st.dictionaries(st.sampled_from(["interval", "timeout", "rise", "fall", "x"]),
                                    json_values, max_size=3) | json_values,
    "send_proxy": st.sampled_from(["v1", "v2", "v3"]) | json_values,
    "accept_proxy": json_values,
    "accept_proxy_from": st.lists(st.sampled_from(["10.0.0.0/8", "::1", "bad/99"]),
                                  max_size=2) | json_values,
})


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "relay_configs": st.lists(relay_like, max_size=3) | json_values,
    "web_port": json_values, "log_level": json_values, "sub_configs": json_values,
    "reload_interval": json_values, "enable_ping": json_values,
}) | json_values)
def test_fuzz_only_config_errors(doc):
    """Whatever JSON arrives, the answer is a config or a ConfigError, never a crash."""
    try:
        cfg, _ = parse_config(doc, "fuzz.json")
    except ConfigError as exc:
        assert str(exc).startswith("invalid config fuzz.json")
        return
    labels = [r.label for r in cfg.relay_configs]
    assert len(labels) == len(set(labels))
    for r in cfg.relay_configs:
        assert r.tcp_remotes or r.udp_remotes
