"""trojan inbound against the Debian `trojan` client, the fallback, and its parsers."""

import hashlib
import os
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ehco_gevent.transports import tls
from ehco_gevent.proxy import trojan
from tests.proxy.helpers import (
    recv_exact,
    socks5_connect,
    socks5_udp_associate,
    socks5_udp_packet,
    start_trojan_client,
)
from tests.support import (
    EchoServer,
    LOOPBACK,
    exchange,
    free_port,
    read_until_closed,
    sha,
    wait_port,
    write_config,
)

PASSWORD = "123456xx"


@pytest.fixture
def node(tmp_path, ehco):
    fallback = EchoServer()
    ports = {"fb": free_port(), "plain": free_port()}
    cfg = {"log_level": "debug", "enable_ping": False, "xray_config": {"inbounds": [
        {"listen": "127.0.0.1", "port": ports["fb"], "protocol": "trojan", "tag": "trojan_proxy",
         "settings": {"clients": [{"password": PASSWORD, "email": "1.com"}], "network": "tcp,udp",
                      "fallbacks": [{"dest": f"127.0.0.1:{fallback.port}"}]},
         "streamSettings": {"network": "tcp", "security": "tls",
                            "tlsSettings": {"alpn": ["http/1.1"]}}},
        {"listen": "127.0.0.1", "port": ports["plain"], "protocol": "trojan", "tag": "t2",
         "settings": {"clients": [{"password": "other"}]}},
    ], "outbounds": [{"protocol": "freedom"}]}}
    proc = ehco("-c", write_config(tmp_path, cfg))
    for p in ports.values():
        wait_port(p)
    yield proc, ports
    fallback.close()


def tls_connect(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((LOOPBACK, port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="ehco")


def request(password, port, cmd=1):
    h = hashlib.sha224(password.encode()).hexdigest().encode()
    return h + b"\r\n" + bytes([cmd]) + b"\x01" + socket.inet_aton(LOOPBACK) + port.to_bytes(2, "big") + b"\r\n"


def read_all(s):
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            break
        if not d:
            break
        out += d
    return out


@pytest.mark.interop
def test_trojan_client_tcp_and_udp(tmp_path, node, echo_server, udp_echo_server):
    proc, ports = node
    client, local = start_trojan_client(tmp_path, ports["fb"], PASSWORD, alpn=["http/1.1"])
    try:
        payload = os.urandom(2 * 1024 * 1024 + 3)
        with socks5_connect(local, LOOPBACK, echo_server.port) as s:
            assert sha(exchange(s, payload, half_close=False)) == sha(payload)
        ctl, relay = socks5_udp_associate(local)
        with ctl, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            for size in (1, 1400, 5000):
                data = os.urandom(size)
                u.sendto(socks5_udp_packet(LOOPBACK, udp_echo_server.port, data), relay)
                reply, _ = u.recvfrom(65535)
                assert reply[10:] == data
    finally:
        client.stop()


def test_raw_client_connect_and_wrong_password_fallback(node, echo_server):
    proc, ports = node
    with tls_connect(ports["fb"]) as s:
        s.sendall(request(PASSWORD, echo_server.port) + b"hello")
        got = b""
        while len(got) < 5:
            got += s.recv(100)
        assert got == b"hello"
    # wrong password: every byte goes to the fallback (an echo server), byte for byte
    wrong = request("wrong", echo_server.port) + b"payload after"
    with tls_connect(ports["fb"]) as s:
        s.sendall(wrong)
        got = b""
        while len(got) < len(wrong):
            d = s.recv(4096)
            assert d
            got += d
        assert got == wrong
    # a browser-like request to the inbound without fallback: the index text
    with tls_connect(ports["plain"]) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        out = read_all(s)
    assert out.startswith(b"HTTP/1.1 200 OK") and b"access from remote ip: 127.0.0.1:" in out
    # junk before TLS: closed, process fine
    with socket.create_connection((LOOPBACK, ports["fb"]), timeout=10) as j:
        # random bytes, but not starting like a TLS record (a content type of 20-23 would
        # make OpenSSL wait for the rest of a record up to the handshake deadline)
        j.sendall(b"\x00" + os.urandom(199))
        out = read_until_closed(j)
        client = "%s:%d" % j.getsockname()
    assert out == b"" or out[:1] == b"\x15"  # at most a TLS alert record, then closed
    proc.wait_log(f"{client}: TLS handshake failed")
    assert proc.proc.poll() is None


@pytest.mark.interop
def test_passwords_belong_to_their_inbound(tmp_path, ehco, echo_server):
    """Two trojan inbounds, one user each: through the real trojan client each password works
    on its own inbound, and on the other one it is a wrong password (handed to that inbound's
    fallback with its bytes, the target never dialled)."""
    fallbacks = {"a": EchoServer(), "b": EchoServer()}
    ports = {"a": free_port(), "b": free_port()}
    passwords = {"a": "pw-of-a", "b": "pw-of-b"}
    cfg = {"log_level": "debug", "enable_ping": False, "xray_config": {"inbounds": [
        {"listen": LOOPBACK, "port": ports[k], "protocol": "trojan", "tag": f"trojan-{k}",
         "settings": {"clients": [{"password": passwords[k], "email": f"{k}@x"}],
                      "fallbacks": [{"dest": f"{LOOPBACK}:{fallbacks[k].port}"}]}}
        for k in "ab"], "outbounds": [{"protocol": "freedom"}]}}
    ehco("-c", write_config(tmp_path, cfg))
    for p in ports.values():
        wait_port(p)
    try:
        for user in "ab":
            for inbound in "ab":
                client, local = start_trojan_client(tmp_path, ports[inbound], passwords[user])
                dialled, fell_back = echo_server.accepted, fallbacks[inbound].accepted
                try:
                    with socks5_connect(local, LOOPBACK, echo_server.port) as s:
                        s.sendall(b"payload")
                        got = recv_exact(s, 7 if user == inbound else 56)
                finally:
                    client.stop()
                if user == inbound:
                    assert got == b"payload"
                    assert echo_server.accepted == dialled + 1
                else:  # the fallback echoed the trojan request itself: it got every byte
                    assert got == hashlib.sha224(passwords[user].encode()).hexdigest().encode()
                    assert fallbacks[inbound].accepted == fell_back + 1
                    assert echo_server.accepted == dialled
    finally:
        for server in fallbacks.values():
            server.close()


def test_parsers():
    req = request("pw", 80)
    assert trojan.split_auth(req[:57]) is None
    assert trojan.split_auth(req) == hashlib.sha224(b"pw").hexdigest().encode()
    with pytest.raises(trojan.TrojanError):
        trojan.split_auth(b"G" * 60)
    with pytest.raises(trojan.TrojanError):
        trojan.split_auth(b"GET / HTTP/1.1\r\n")
    assert trojan.parse_request(req[:-1]) is None
    assert trojan.parse_request(req + b"x") == (1, "127.0.0.1", 80, len(req))
    with pytest.raises(trojan.TrojanError):
        trojan.parse_request(req[:58] + b"\x09" + req[59:])
    frame = trojan.udp_frame("example.com", 53, b"abc")
    assert trojan.parse_udp_frame(frame[:-1]) is None
    assert trojan.parse_udp_frame(frame + b"z") == ("example.com", 53, b"abc", len(frame))


def _peer_certificate(port):
    with tls_connect(port) as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True))


def test_certificate_from_env_or_generated(tmp_path, ehco, echo_server):
    """No certificate in the inbound: the process's one (ehco_gevent.transports.tls), i.e. the PEM files
    named by EHCO_CERT_FILE_NAME / EHCO_KEY_FILE_NAME, else a self-signed RSA-2048 one."""
    cert_pem, key_pem = tls.self_signed_pem("trojan-env-test")
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    ports = {"env": free_port(), "gen": free_port()}
    for name, env in (("env", {"EHCO_CERT_FILE_NAME": str(tmp_path / "c.pem"),
                               "EHCO_KEY_FILE_NAME": str(tmp_path / "k.pem")}),
                      ("gen", {"EHCO_CERT_FILE_NAME": "", "EHCO_KEY_FILE_NAME": ""})):
        cfg = {"enable_ping": False, "xray_config": {"inbounds": [
            {"listen": "127.0.0.1", "port": ports[name], "protocol": "trojan",
             "settings": {"clients": [{"password": PASSWORD}]}}]}}
        ehco("-c", write_config(tmp_path, cfg, f"{name}.json"), env=env)
    for port in ports.values():
        wait_port(port)
    env_cert = _peer_certificate(ports["env"])
    assert env_cert.public_bytes(serialization.Encoding.PEM) == cert_pem
    gen_cert = _peer_certificate(ports["gen"])
    assert gen_cert.subject.rfc4514_string() == "CN=ehco"
    assert isinstance(gen_cert.public_key(), rsa.RSAPublicKey)
    assert gen_cert.public_key().key_size == 2048
    # and it serves trojan with it
    with tls_connect(ports["gen"]) as s:
        s.sendall(request(PASSWORD, echo_server.port) + b"cert ok")
        got = b""
        while len(got) < 7:
            d = s.recv(100)
            assert d
            got += d
    assert got == b"cert ok"
