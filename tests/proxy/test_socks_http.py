"""socks and http inbounds with curl and a raw SOCKS5 client; pure parser tests."""

import os
import socket
import subprocess

import pytest

from ehco_gevent.proxy import http_proxy, socks
from tests.proxy.helpers import recv_exact, socks5_connect, socks5_udp_associate, socks5_udp_packet
from tests.support import (
    BlobHTTPServer,
    LOOPBACK,
    exchange,
    free_port,
    require_program,
    sha,
    wait_port,
    write_config,
)

BLOB = os.urandom(2 * 1024 * 1024 + 5)


@pytest.fixture
def origin():
    server = BlobHTTPServer(BLOB)
    yield server.port
    server.close()


@pytest.fixture
def proxies(tmp_path, ehco):
    ports = {k: free_port() for k in ("socks", "socks_auth", "http", "http_auth")}
    cfg = {"log_level": "debug", "enable_ping": False, "xray_config": {"inbounds": [
        {"listen": "127.0.0.1", "port": ports["socks"], "protocol": "socks", "settings": {"udp": True}},
        {"listen": "127.0.0.1", "port": ports["socks_auth"], "protocol": "socks",
         "settings": {"auth": "password", "accounts": [{"user": "u1", "pass": "p1"}]}},
        {"listen": "127.0.0.1", "port": ports["http"], "protocol": "http"},
        {"listen": "127.0.0.1", "port": ports["http_auth"], "protocol": "http",
         "settings": {"accounts": [{"user": "u2", "pass": "p2"}]}},
    ], "outbounds": [{"protocol": "freedom"}]}}
    proc = ehco("-c", write_config(tmp_path, cfg))
    for p in ports.values():
        wait_port(p)
    return proc, ports


def curl(*args):
    exe = require_program("curl", "curl")
    return subprocess.run([exe, "-sS", "--max-time", "30", *args], capture_output=True, timeout=60)


@pytest.mark.interop
def test_curl_through_socks_and_http(proxies, origin):
    _, ports = proxies
    url = f"http://{LOOPBACK}:{origin}/blob"
    for args in (["--socks5", f"{LOOPBACK}:{ports['socks']}"],
                 ["--socks5-hostname", f"u1:p1@{LOOPBACK}:{ports['socks_auth']}"],
                 ["-x", f"http://{LOOPBACK}:{ports['http']}"],
                 ["-x", f"http://{LOOPBACK}:{ports['http']}", "--proxytunnel"],
                 ["-x", f"http://u2:p2@{LOOPBACK}:{ports['http_auth']}"]):
        out = curl(*args, url)
        assert out.returncode == 0, (args, out.stderr)
        assert sha(out.stdout) == sha(BLOB), args
    # wrong credentials are refused
    assert curl("--socks5", f"u1:bad@{LOOPBACK}:{ports['socks_auth']}", url).returncode != 0
    bad = curl("-o", "/dev/null", "-w", "%{http_code}", "-x",
               f"http://u2:bad@{LOOPBACK}:{ports['http_auth']}", url)
    assert bad.stdout == b"407"


def test_socks_connect_udp_and_bad_input(proxies, echo_server, udp_echo_server):
    proc, ports = proxies
    payload = os.urandom(500_000)
    with socks5_connect(ports["socks"], LOOPBACK, echo_server.port) as s:
        assert sha(exchange(s, payload)) == sha(payload)
    ctl, relay = socks5_udp_associate(ports["socks"])
    with ctl, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(10)
        for size in (1, 1400, 9000):
            data = os.urandom(size)
            u.sendto(socks5_udp_packet(LOOPBACK, udp_echo_server.port, data), relay)
            reply, _ = u.recvfrom(65535)
            assert reply[10:] == data
    # bad version: closed without a SOCKS answer
    with socket.create_connection((LOOPBACK, ports["socks"]), timeout=10) as s:
        s.sendall(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00")
        assert s.recv(10) == b""
    # unsupported command (BIND): reply 7
    with socket.create_connection((LOOPBACK, ports["socks"]), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")
        assert recv_exact(s, 2) == b"\x05\x00"
        s.sendall(b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")
        assert recv_exact(s, 2) == b"\x05\x07"
    # no-auth offered to the inbound that requires a password: no acceptable method
    with socket.create_connection((LOOPBACK, ports["socks_auth"]), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")
        assert recv_exact(s, 2) == b"\x05\xff"
    # UDP associate on the inbound without udp: true: command not supported (7)
    with socket.create_connection((LOOPBACK, ports["socks_auth"]), timeout=10) as s:
        s.sendall(b"\x05\x01\x02")
        assert recv_exact(s, 2) == b"\x05\x02"
        s.sendall(b"\x01\x02u1\x02p1")
        assert recv_exact(s, 2) == b"\x01\x00"
        s.sendall(b"\x05\x03\x00\x01" + bytes(6))
        assert recv_exact(s, 2) == b"\x05\x07"
    # a bad version in the request (after a good greeting): general failure, closed
    with socket.create_connection((LOOPBACK, ports["socks"]), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")
        assert recv_exact(s, 2) == b"\x05\x00"
        s.sendall(b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50")
        assert recv_exact(s, 2) == b"\x05\x01"
        while s.recv(100):  # the rest of the reply, then the close
            pass
    # still serving
    with socks5_connect(ports["socks"], LOOPBACK, echo_server.port) as s:
        assert exchange(s, b"again") == b"again"
    assert proc.proc.poll() is None


def test_socks_parsers():
    assert socks.parse_greeting(b"\x05") is None
    assert socks.parse_greeting(b"\x05\x02\x00\x02") == ({0, 2}, 4)
    with pytest.raises(socks.SocksError):
        socks.parse_greeting(b"\x04\x01")
    assert socks.parse_request(b"\x05\x01\x00\x03\x0bexample.com\x01") is None
    assert socks.parse_request(b"\x05\x01\x00\x03\x0bexample.com\x01\xbb") == (1, "example.com", 443, 18)
    with pytest.raises(socks.SocksError):
        socks.parse_request(b"\x05\x01\x00\x09\x00\x00")
    assert socks.parse_userpass(b"\x01\x02ab\x01c") == ("ab", "c", 6)
    assert socks.parse_udp_datagram(b"\x00\x00\x01\x01" + bytes(6) + b"x") is None  # fragment
    assert socks.parse_udp_datagram(socks.udp_datagram("::1", 53, b"q")) == ("::1", 53, b"q")


def test_http_parsers():
    assert http_proxy.parse_head(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n") is None
    head = http_proxy.parse_head(b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\nXYZ")
    assert head == ("CONNECT", "h:443", "HTTP/1.1", [("Host", "h")], 35)
    assert http_proxy.forward_target("GET", "http://[::1]:8080/p?q=1") == ("::1", 8080, "/p?q=1")
    with pytest.raises(http_proxy.HttpError):
        http_proxy.forward_target("GET", "/relative")
    with pytest.raises(http_proxy.HttpError):
        http_proxy.parse_head(b"garbage\r\n\r\n")
    out = http_proxy.rewrite_head("GET", "/", "HTTP/1.1", [("Host", "a"), ("Proxy-Connection", "x")])
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
