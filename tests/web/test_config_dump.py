"""The config dump's shape (Go ehco's json.Marshal of its Config) and its secret masking, as
plain functions over a parsed config."""

from __future__ import annotations

import json

from ehco_gevent.config import parse_config
from ehco_gevent.web.config_dump import (config_dump, go_json, go_shape, mask_secrets, mask_url,
                                         mask_xray)


def parsed(**top):
    cfg, _ = parse_config({"relay_configs": [
        {"listen": "127.0.0.1:1", "label": "a", "tcp_remotes": ["127.0.0.1:2"]},
        {"listen": "127.0.0.1:3", "label": "b", "udp_remotes": ["127.0.0.1:4"]}], **top})
    return cfg


def test_go_shape_path_first_nulls_and_omitempty():
    dump = json.loads(config_dump(parsed(), show_secrets=False))
    assert list(dump)[0] == "PATH" and dump["PATH"] == "<config>"  # the source
    a, b = dump["relay_configs"]
    assert (a["udp_remotes"], b["tcp_remotes"]) == (None, None)
    assert a == {"listen": "127.0.0.1:1", "listen_type": "raw", "transport_type": "raw",
                 "tcp_remotes": ["127.0.0.1:2"], "udp_remotes": None, "label": "a"}
    for key in ("web_port", "web_token", "web_auth_user", "web_auth_pass", "relay_sync_url",
                "sub_configs", "xray_config", "sync_traffic_endpoint", "reload_interval"):
        assert key not in dump, key
    assert dump["web_host"] == "0.0.0.0" and dump["log_level"] == "info"


def test_no_relays_is_null():
    assert go_shape({"web_port": 9, "relay_configs": []}, "c.json") == {
        "PATH": "c.json", "web_port": 9, "relay_configs": None}


def test_compact_with_go_html_escapes():
    assert go_json({"a": "<b>&", "c": [1, "é"]}) == '{"a":"\\u003cb\\u003e\\u0026","c":[1,"é"]}'
    assert json.loads(go_json({"a": "<b>&\u2028"})) == {"a": "<b>&\u2028"}


def test_mask_url():
    assert mask_url("https://sub.example.com/link/AbC123?clash=1") == "https://sub.example.com/***"
    assert mask_url("http://u:p@10.0.0.1:8000/api?token=t") == "http://***@10.0.0.1:8000/***"
    assert mask_url("http://10.0.0.1:8000/") == "http://10.0.0.1:8000/"
    assert mask_url("https://h.example#frag") == "https://h.example/***"
    assert mask_url("/etc/ehco/config.json") == "/etc/ehco/config.json"  # a file path
    assert mask_url("") == ""


def test_mask_xray_credentials_only():
    xray = {"inbounds": [
        {"protocol": "shadowsocks", "tag": "ss", "port": 1,
         "settings": {"password": "top", "method": "aes-128-gcm",
                      "clients": [{"password": "p1", "email": "e1", "method": "m"}]}},
        {"protocol": "vmess", "settings": {"clients": [{"id": "uuid-1", "alterId": 0}]}},
        {"protocol": "socks", "settings": {"accounts": [{"user": "u", "pass": "pw"}]}},
        {"protocol": "trojan", "streamSettings": {"tlsSettings": {"certificates": [
            {"certificateFile": "/c.pem", "key": ["-----BEGIN"], "keyFile": "/k.pem"}]}}},
    ], "outbounds": [{"protocol": "freedom", "tag": "direct"}], "id": "kept"}
    masked = mask_xray(xray)
    ss, vmess, socks, trojan = masked["inbounds"]
    assert ss["settings"] == {"password": "***", "method": "aes-128-gcm", "clients": [
        {"password": "***", "email": "e1", "method": "m"}]}
    assert vmess["settings"]["clients"] == [{"id": "***", "alterId": 0}]
    assert socks["settings"]["accounts"] == [{"user": "u", "pass": "***"}]
    cert = trojan["streamSettings"]["tlsSettings"]["certificates"][0]
    assert cert == {"certificateFile": "/c.pem", "key": "***", "keyFile": "/k.pem"}
    assert masked["outbounds"] == xray["outbounds"] and masked["id"] == "kept"
    assert xray["inbounds"][0]["settings"]["password"] == "top"  # a copy, not in place


def test_mask_secrets_and_show_them_on_request():
    cfg = parsed(web_token="tok", web_auth_user="admin", web_auth_pass="pw",
                 relay_sync_url="http://p:8/sync?token=s",
                 sync_traffic_endpoint="https://panel/api/traffic?key=k",
                 sub_configs=[{"name": "s", "url": "https://sub/x/TOKEN"}])
    masked = json.loads(config_dump(cfg, show_secrets=False))
    assert (masked["web_token"], masked["web_auth_user"], masked["web_auth_pass"]) == (
        "***", "admin", "***")
    assert masked["relay_sync_url"] == "http://p:8/***"
    assert masked["sync_traffic_endpoint"] == "https://panel/***"
    assert masked["sub_configs"] == [{"name": "s", "url": "https://sub/***"}]
    full = json.loads(config_dump(cfg, show_secrets=True))
    assert (full["web_token"], full["web_auth_pass"]) == ("tok", "pw")
    assert full["sub_configs"] == [{"name": "s", "url": "https://sub/x/TOKEN"}]
    assert mask_secrets({"PATH": "https://cfg.example/c.json?token=z"})["PATH"] == (
        "https://cfg.example/***")
