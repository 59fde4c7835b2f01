"""The user store's counters, as pure objects: what Prometheus and the web page read."""

import pytest

from ehco_gevent.proxy.users import TRAFFIC_FACTOR, UserStore, parse_panel_users
from ehco_gevent.proxy.xray_config import parse_xray_config


def xray(password):
    return parse_xray_config({"inbounds": [
        {"port": 8388, "protocol": "shadowsocks", "tag": "ss_proxy",
         "settings": {"clients": [{"method": "aes-128-gcm", "password": password,
                                   "email": "a"}]}}]}, xray_bin="")


PANEL_USER = {"user_id": 7, "protocol": "ss", "method": "aes-256-gcm", "password": "p7",
              "level": 0, "enable": True}


def test_lifetime_counters_survive_reports_and_config_changes():
    store = UserStore()
    store.set_config(xray("one"))
    store.apply_panel([PANEL_USER])
    cfg_user, panel_user = store.users["ss_proxy/a"], store.users["7"]
    panel_user.count_up(100)
    panel_user.count_down(40)
    cfg_user.count_up(5)
    rows, snapshot = store.traffic_report()
    assert rows[0]["upload_traffic"] == 100 * TRAFFIC_FACTOR
    store.commit_report(snapshot)  # the panel counters restart from zero ...
    panel_user.count_up(1)
    by_user = {r["user"]: r for r in store.collect()}
    # ... the lifetime ones do not (they back Prometheus counters)
    assert by_user["7"]["upload_bytes"] == 101 * TRAFFIC_FACTOR
    assert by_user["7"]["unreported_upload_bytes"] == 1 * TRAFFIC_FACTOR
    assert by_user["7"]["download_bytes"] == 40 * TRAFFIC_FACTOR
    assert by_user["7"]["source"] == "panel" and by_user["ss_proxy/a"]["source"] == "config"
    # a config client with a new password is a new User object, but its counters go on
    store.set_config(xray("two"))
    assert store.users["ss_proxy/a"] is not cfg_user
    assert {r["user"]: r for r in store.collect()}["ss_proxy/a"]["upload_bytes"] == 5 * TRAFFIC_FACTOR
    # order: config clients, then panel users by numeric id
    store.apply_panel([PANEL_USER, dict(PANEL_USER, user_id=10), dict(PANEL_USER, user_id=9)])
    assert [r["user"] for r in store.collect()] == ["ss_proxy/a", "7", "9", "10"]


@pytest.mark.parametrize("answer", [None, [], "users", {"users": None}, {"users": {"1": {}}},
                                    {"data": []}])
def test_panel_answer_of_the_wrong_shape_is_refused(answer):
    with pytest.raises(ValueError):
        parse_panel_users(answer)


def test_malformed_panel_entries_are_skipped():
    good = dict(PANEL_USER)
    entries = parse_panel_users({"users": [
        good, "junk", dict(good, user_id="7"), dict(good, user_id=True), dict(good, protocol="vmess"),
        dict(good, method="rc4-md5"), dict(good, password=""), dict(good, user_id=8, level="x"),
        dict(PANEL_USER, user_id=9, protocol="trojan", method=None)]})
    assert [(e["user_id"], e["protocol"], e["level"]) for e in entries] == [
        (7, "ss", 0), (8, "ss", 0), (9, "trojan", 0)]
