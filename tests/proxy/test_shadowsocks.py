"""shadowsocks inbound against shadowsocks-libev's ss-local, plus bad input on the wire."""

import os
import socket

import pytest
import requests

from ehco_gevent.proxy import aead
from tests.proxy.helpers import (
    socks5_connect,
    socks5_udp_associate,
    socks5_udp_packet,
    start_ss_local,
)
from tests.support import (LOOPBACK, exchange, free_port, free_tcp_udp_port, read_until_closed,
                           sha, wait_for, wait_port, write_config)

USERS = {"aes-128-gcm": "pw-aes128", "aes-256-gcm": "pw-aes256",
         "chacha20-ietf-poly1305": "pw-chacha"}


def ss_config(port, web_port=0):
    return {
        "log_level": "debug",
        "enable_ping": False,
        "web_host": LOOPBACK,
        "web_port": web_port,
        "xray_config": {
            "inbounds": [
                {"listen": "127.0.0.1", "port": 1, "protocol": "dokodemo-door", "tag": "api"},
                {"listen": "127.0.0.1", "port": port, "protocol": "shadowsocks", "tag": "ss_proxy",
                 "settings": {"network": "tcp,udp", "clients": [
                     {"method": m, "password": p, "email": m} for m, p in USERS.items()]}},
            ],
            "outbounds": [{"protocol": "freedom", "settings": {}}],
        },
    }


@pytest.fixture
def ss_server(tmp_path, ehco):
    port, web_port = free_tcp_udp_port(), free_port()
    proc = ehco("-c", write_config(tmp_path, ss_config(port, web_port)))
    proc.wait_log("shadowsocks listening")
    wait_port(port)
    proc.web = f"http://{LOOPBACK}:{web_port}"
    return proc, port


def user_traffic(proc, user):
    """(upload, download) of one proxy user, as the node reports it to a panel."""
    rows = requests.get(proc.web + "/api/v1/proxy_users/", timeout=10).json()["users"]
    row = next(r for r in rows if r["user"] == user)
    return row["upload_bytes"], row["download_bytes"]


@pytest.mark.interop
@pytest.mark.parametrize("method", sorted(USERS))
def test_ss_local_tcp_and_udp(tmp_path, ss_server, echo_server, udp_echo_server, method):
    proc, port = ss_server
    client, local = start_ss_local(tmp_path, port, USERS[method], method, udp=True)
    try:
        payload = os.urandom(3 * 1024 * 1024 + 17)
        with socks5_connect(local, LOOPBACK, echo_server.port) as s:
            assert sha(exchange(s, payload, half_close=False)) == sha(payload)
        ctl, relay = socks5_udp_associate(local)
        with ctl, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            for size in (1, 700, 1400):  # ss-local refuses datagrams much over its MTU
                data = os.urandom(size)
                u.sendto(socks5_udp_packet(LOOPBACK, udp_echo_server.port, data), relay)
                reply, _ = u.recvfrom(65535)
                assert reply[10:] == data  # 10 = rsv, frag, ipv4 address header
    finally:
        client.stop()
    # the user's counters moved by what ss-local carried: 2 x the payload (the panel's
    # quantity), TCP and UDP alike
    carried = 2 * (len(payload) + 1 + 700 + 1400)
    wait_for(lambda: user_traffic(proc, f"ss_proxy/{method}"), lambda v: v == (carried, carried),
             "the user's traffic counters")


def raw_ss_connect(port, method, password, target_port, salt=None, first=b"hello", source=""):
    c = aead.CIPHERS[method]
    enc = aead.Encryptor(c, aead.master_key(c, password), salt)
    s = socket.create_connection((LOOPBACK, port), timeout=10,
                                 source_address=(source, 0) if source else None)
    header = b"\x01" + socket.inet_aton(LOOPBACK) + target_port.to_bytes(2, "big")
    wire = enc.encrypt(header + first)
    s.sendall(wire)
    return s, enc, wire


class Reader:
    """Decrypts what the server sends on one connection, across several reads."""

    def __init__(self, s, method, password):
        self.s, self.c, self.key = s, aead.CIPHERS[method], aead.master_key(aead.CIPHERS[method], password)
        self.dec, self.buf = None, b""

    def read(self, n):
        while len(self.buf) < n:
            data = self.s.recv(65536)
            assert data, "EOF before the reply"
            if self.dec is None:
                self.buf_salt = getattr(self, "buf_salt", b"") + data
                if len(self.buf_salt) < self.c.salt_size:
                    continue
                self.dec = aead.Decryptor(self.c, self.key, self.buf_salt[:self.c.salt_size])
                data = self.buf_salt[self.c.salt_size:]
            self.buf += self.dec.feed(data)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def read_reply(s, method, password, n):
    return Reader(s, method, password).read(n)


def assert_ignored(proc, s, cause):
    """The node read what this client sent and ignored it, as a shadowsocks server must (no
    answer, no early close, so a prober learns nothing): the log names the cause for this
    client's address, the connection is still open then, and when the client stops writing the
    node closes it without having sent one byte."""
    host, port = s.getsockname()[:2]
    proc.wait_log(f"{host}:{port}: {cause}")
    s.setblocking(False)
    with pytest.raises(BlockingIOError):  # neither data nor EOF has arrived
        s.recv(1)
    s.setblocking(True)
    s.shutdown(socket.SHUT_WR)
    assert read_until_closed(s) == b""


def test_bad_input_is_ignored_and_server_keeps_serving(ss_server, echo_server):
    proc, port = ss_server
    method, password = "aes-256-gcm", USERS["aes-256-gcm"]
    # a wrong key: no answer, the connection stays open (read and discarded)
    s, _, _ = raw_ss_connect(port, method, "not-the-password", echo_server.port)
    assert_ignored(proc, s, "no user's key fits")
    s.close()
    # junk
    with socket.create_connection((LOOPBACK, port), timeout=10) as j:
        j.sendall(os.urandom(300))
        assert_ignored(proc, j, "no user's key fits")
    # a good connection works
    s, _, wire = raw_ss_connect(port, method, password, echo_server.port, first=b"ping")
    assert read_reply(s, method, password, 4) == b"ping"
    s.close()
    # the same bytes again (a replayed salt): silence
    with socket.create_connection((LOOPBACK, port), timeout=10) as r:
        r.sendall(wire)
        assert_ignored(proc, r, "replayed salt")
    # a truncated chunk, then EOF: the connection is closed, nothing echoed beyond it
    s, enc, _ = raw_ss_connect(port, method, password, echo_server.port, first=b"abc")
    assert read_reply(s, method, password, 3) == b"abc"
    s.sendall(enc.encrypt(b"tail-bytes")[:-4])
    s.shutdown(socket.SHUT_WR)
    assert read_until_closed(s) == b""  # closed, and not one byte more: the tail never decrypted
    s.close()
    # still serving, every cipher
    for m, p in USERS.items():
        s, _, _ = raw_ss_connect(port, m, p, echo_server.port, first=b"after")
        assert read_reply(s, m, p, 5) == b"after"
        s.close()
    assert proc.proc.poll() is None
