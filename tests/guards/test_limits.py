"""The limits config keys (ehco_gevent.guards.limits): defaults, validation naming the key, and the
running value following the loaded config."""

import pytest

from ehco_gevent.guards import limits
from ehco_gevent.config import ConfigError, parse_config


def test_defaults_and_explicit_values():
    cfg, warnings = parse_config({"web_header_timeout": 2, "udp_receive_buffer": 1 << 20}, "f.json")
    assert warnings == []
    assert cfg.limits == limits.Limits(web_header_timeout=2.0, udp_receive_buffer=1 << 20)
    assert cfg.limits.ws_handshake_timeout == 10.0 and cfg.limits.web_max_connections == 256
    # /api/v1/config/ shows what the file set, and only that
    assert cfg.to_json()["web_header_timeout"] == 2.0 and "web_idle_timeout" not in cfg.to_json()


@pytest.mark.parametrize("key, value, problem", [
    ("web_max_connections", 1.5, "expected a whole number"),
    ("proxy_handshake_timeout", "30", "expected a number"),
    ("ws_handshake_timeout", True, "expected a number"),
    ("web_idle_timeout", 0, "must be greater than 0"),
    ("udp_receive_buffer", -1, "must be greater than 0"),
])
def test_bad_values_name_the_file_and_key(key, value, problem):
    with pytest.raises(ConfigError) as err:
        parse_config({key: value}, "f.json")
    assert str(err.value).startswith(f"invalid config f.json: {key}: {problem}")


def test_current_follows_set_current():
    before = limits.current()
    try:
        limits.set_current(limits.Limits(proxy_handshake_timeout=1.0))
        assert limits.current().proxy_handshake_timeout == 1.0
    finally:
        limits.set_current(before)
