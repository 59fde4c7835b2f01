"""The proxy service in a real process: reload behaviour and the supervised xray child."""

import os
import signal
import socket
import time

import pytest

from tests.proxy.helpers import socks5_connect
from tests.proxy.test_shadowsocks import Reader, raw_ss_connect, read_reply
from tests.support import (
    LOOPBACK,
    exchange,
    free_port,
    free_tcp_udp_port,
    wait_port,
    write_config,
)


def config(ss_port, socks_port, clients):
    return {"log_level": "debug", "enable_ping": False, "xray_config": {"inbounds": [
        {"listen": "127.0.0.1", "port": ss_port, "protocol": "shadowsocks", "tag": "ss_proxy",
         "settings": {"clients": clients}},
        {"listen": "127.0.0.1", "port": socks_port, "protocol": "socks", "tag": "s"},
    ]}}


def test_reload_restarts_only_changed_inbounds(tmp_path, ehco, echo_server):
    ss_port, socks_a, socks_b = free_tcp_udp_port(), free_port(), free_port()
    c1 = {"method": "aes-128-gcm", "password": "one", "email": "a"}
    c2 = {"method": "aes-256-gcm", "password": "two", "email": "b"}
    path = write_config(tmp_path, config(ss_port, socks_a, [c1]))
    proc = ehco("-c", path)
    wait_port(ss_port)
    wait_port(socks_a)
    s, enc, _ = raw_ss_connect(ss_port, "aes-128-gcm", "one", echo_server.port, first=b"before")
    reader = Reader(s, "aes-128-gcm", "one")
    assert reader.read(6) == b"before"
    write_config(tmp_path, config(ss_port, socks_b, [c1, c2]))
    proc.signal(signal.SIGHUP)
    proc.wait_log(f"stopped listening on 127.0.0.1:{socks_a}")
    wait_port(socks_b)
    # the shadowsocks inbound kept running: its open connection still relays
    s.sendall(enc.encrypt(b"after"))
    s.settimeout(10)
    assert reader.read(5) == b"after"
    assert f"shadowsocks listening on 127.0.0.1:{ss_port}" in proc.log
    assert proc.log.count(f"shadowsocks listening on 127.0.0.1:{ss_port}") == 1
    s.close()
    # the new client works without a restart; the moved socks inbound is on its new port
    s2, _, _ = raw_ss_connect(ss_port, "aes-256-gcm", "two", echo_server.port, first=b"new")
    assert read_reply(s2, "aes-256-gcm", "two", 3) == b"new"
    s2.close()
    with socks5_connect(socks_b, LOOPBACK, echo_server.port) as t:
        assert exchange(t, b"moved") == b"moved"
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, socks_a), timeout=2).close()


STAND_IN = """#!/bin/sh
# stand-in for xray: records each start, crashes the first time, then stays up
echo "$$ $*" >> "{log}"
cp "$3" "{cfg}"
if [ ! -e "{mark}" ]; then touch "{mark}"; exit 3; fi
exec sleep 600
"""


def test_foreign_inbound_runs_in_supervised_child(tmp_path, ehco):
    log, cfg_copy, mark = tmp_path / "starts", tmp_path / "child.json", tmp_path / "crashed"
    stand_in = tmp_path / "xray"
    stand_in.write_text(STAND_IN.format(log=log, cfg=cfg_copy, mark=mark))
    stand_in.chmod(0o755)
    cfg = {"enable_ping": False, "xray_config": {"inbounds": [
        {"listen": "127.0.0.1", "port": free_port(), "protocol": "vless", "tag": "vless_proxy",
         "settings": {"clients": [], "decryption": "none"}}],
        "outbounds": [{"protocol": "freedom"}]}}
    proc = ehco("-c", write_config(tmp_path, cfg), env={"EHCO_XRAY_BIN": str(stand_in)})
    deadline = time.monotonic() + 20
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert time.monotonic() < deadline, proc.log
        time.sleep(0.1)
    starts = log.read_text().splitlines()
    assert starts[0].split(" ", 1)[1].startswith("run -c ")
    assert '"vless"' in cfg_copy.read_text()
    assert "exited with status 3; restarting" in proc.log
    pid = int(starts[1].split()[0])
    os.kill(pid, 0)  # running
    assert proc.stop() == 0
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
