"""xray_config validation: pure function tests and the exit-2 path of a real process."""

import pytest

from ehco_gevent.config import ConfigError
from ehco_gevent.proxy.xray_config import parse_xray_config
from tests.support import free_port, write_config


def inbound(**kw):
    base = {"listen": "127.0.0.1", "port": 1234, "protocol": "shadowsocks", "tag": "ss_proxy",
            "settings": {"clients": []}}
    base.update(kw)
    return base


def test_ehco_example_shape_parses():
    cfg = parse_xray_config({
        "stats": {}, "api": {"tag": "api", "services": ["StatsService"]}, "log": {"loglevel": "error"},
        "policy": {"levels": {"0": {"statsUserUplink": True}}}, "routing": {"settings": {}},
        "inbounds": [
            {"listen": "127.0.0.1", "port": 8080, "protocol": "dokodemo-door", "tag": "api",
             "settings": {"address": "127.0.0.1"}},
            inbound(settings={"clients": [], "network": "tcp,udp"}),
            {"port": 10801, "protocol": "socks", "settings": {"udp": True}},
            {"port": 10802, "protocol": "http"},
            {"listen": "127.0.0.1", "port": 4443, "protocol": "trojan", "tag": "trojan_proxy",
             "settings": {"clients": [{"password": "123456xx", "email": "1.com"}],
                          "fallbacks": [{"dest": "127.0.0.1:1234"}]},
             "streamSettings": {"network": "tcp", "security": "tls",
                                "tlsSettings": {"alpn": ["h2", "http/1.1"]}}},
        ],
        "outbounds": [{"protocol": "freedom", "settings": {}}]}, xray_bin="")
    protos = [(i.protocol, i.listen, i.port, i.tcp, i.udp) for i in cfg.inbounds]
    assert protos == [("shadowsocks", "127.0.0.1", 1234, True, True),
                      ("socks", "0.0.0.0", 10801, True, True),
                      ("http", "0.0.0.0", 10802, True, False),
                      ("trojan", "127.0.0.1", 4443, True, True)]
    assert cfg.inbounds[3].fallback == "127.0.0.1:1234"
    assert cfg.inbounds[3].clients[0].password == "123456xx"


@pytest.mark.parametrize("ib, needle", [
    (inbound(port="x"), "xray_config.inbounds[0] (tag 'ss_proxy'): port"),
    (inbound(port=70000), "port: 70000 is not a port number"),
    (inbound(settings={"clients": [{"password": "p", "method": "rc4-md5"}]}),
     "settings.clients[0].method: unsupported cipher 'rc4-md5'"),
    (inbound(settings={"clients": [{"method": "aes-128-gcm"}]}), "settings.clients[0].password"),
    (inbound(settings={"network": "sctp"}), "settings.network"),
    (inbound(protocol="socks", tag="", settings={"auth": "password"}),
     "xray_config.inbounds[0]: settings.accounts"),
    (inbound(protocol="vmess", tag="vmess_proxy"),
     "xray_config.inbounds[0] (tag 'vmess_proxy'): protocol: 'vmess' is not served natively"),
    (inbound(protocol="trojan", streamSettings={"security": "reality"}), "streamSettings.security"),
])
def test_rejections_name_inbound_and_key(ib, needle):
    with pytest.raises(ConfigError) as err:
        parse_xray_config({"inbounds": [ib]}, xray_bin="")
    assert needle in str(err.value)


def test_duplicate_port_and_foreign_with_xray():
    with pytest.raises(ConfigError, match=r"inbounds\[1\].*also used by"):
        parse_xray_config({"inbounds": [inbound(), inbound(tag="b")]}, xray_bin="")
    cfg = parse_xray_config({"inbounds": [inbound(protocol="vless", tag="v")]}, xray_bin="/bin/xray")
    assert cfg.inbounds == () and cfg.foreign[0]["protocol"] == "vless"


def test_unservable_protocol_exits_2(tmp_path, ehco):
    cfg = {"enable_ping": False, "xray_config": {"inbounds": [
        {"listen": "127.0.0.1", "port": free_port(), "protocol": "vmess", "tag": "vmess_proxy"}]}}
    path = write_config(tmp_path, cfg)
    proc = ehco("-c", path, env={"EHCO_XRAY_BIN": "", "PATH": "/usr/bin:/bin"})
    assert proc.proc.wait(30) == 2
    log = proc.log
    assert "'vmess' is not served natively" in log and str(path) in log
    assert "Traceback" not in log


def test_missing_certificate_file_exits_2(tmp_path, ehco):
    cfg = {"enable_ping": False, "xray_config": {"inbounds": [
        {"listen": "127.0.0.1", "port": free_port(), "protocol": "trojan", "tag": "trojan_proxy",
         "settings": {"clients": [{"password": "x"}]},
         "streamSettings": {"security": "tls", "tlsSettings": {"certificates": [
             {"certificateFile": str(tmp_path / "nope.pem"), "keyFile": str(tmp_path / "nope.key")}]}}}]}}
    proc = ehco("-c", write_config(tmp_path, cfg))
    assert proc.proc.wait(30) == 2
    assert "inbounds[0] (tag 'trojan_proxy'): streamSettings.tlsSettings" in proc.log
    assert "Traceback" not in proc.log
