"""Xray's ``streamSettings.sockopt.acceptProxyProtocol`` on a native inbound: a relay with
``send_proxy`` in front of the node's shadowsocks inbound, and the user's address (not the
relay's) is what the panel's ``ip_list`` and the users API get."""

import requests

from tests.proxy.helpers import assert_closed_by_server
from tests.proxy.test_shadowsocks import Reader, raw_ss_connect
from tests.support import LOOPBACK, EchoServer, free_port, free_tcp_udp_port, wait_port, write_config

METHOD, PASSWORD = "aes-128-gcm", "pw-bob"
GREETING = b"hi\n"


def test_relay_send_proxy_into_ss_inbound_names_the_user_address(tmp_path, ehco):
    greeter = EchoServer(greeting=GREETING)
    ss_port, relay_port, web_port = free_tcp_udp_port(), free_port(), free_port()
    try:
        cfg = {"enable_ping": False, "web_host": LOOPBACK, "web_port": web_port,
               "relay_configs": [{"listen": f"{LOOPBACK}:{relay_port}", "label": "front",
                                  "send_proxy": "v2", "tcp_remotes": [f"{LOOPBACK}:{ss_port}"]}],
               "xray_config": {"inbounds": [
                   {"listen": LOOPBACK, "port": ss_port, "protocol": "shadowsocks",
                    "tag": "ss_proxy", "streamSettings": {"sockopt": {"acceptProxyProtocol": True}},
                    "settings": {"network": "tcp", "clients": [
                        {"method": METHOD, "password": PASSWORD, "email": "bob"}]}}]}}
        proc = ehco("-c", write_config(tmp_path, cfg))
        proc.wait_log("Start Web Server at")
        wait_port(ss_port)
        s, _, _ = raw_ss_connect(relay_port, METHOD, PASSWORD, greeter.port, first=b"x",
                                 source="127.0.0.2")
        assert Reader(s, METHOD, PASSWORD).read(len(GREETING) + 1) == GREETING + b"x"
        s.close()
        users = requests.get(f"http://{LOOPBACK}:{web_port}/api/v1/proxy_users/", timeout=10).json()
        bob = next(u for u in users["users"] if u["user"] == "ss_proxy/bob")
        assert bob["ips"] == ["127.0.0.2"]
        # straight to the inbound, no header: closed, with the reason in the log
        direct, _, _ = raw_ss_connect(ss_port, METHOD, PASSWORD, greeter.port)
        assert_closed_by_server(direct)
        proc.wait_log("closed connection from 127.0.0.1:")
        assert "bad PROXY header: no PROXY protocol header" in proc.log
    finally:
        greeter.close()
