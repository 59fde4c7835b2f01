"""Test-side clients for the proxy tests: a plain blocking SOCKS5 client, outside programs
(ss-local, trojan) started and stopped by PID, and a panel HTTP server in a thread."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support import LOOPBACK, free_port, read_until_closed, require_program, wait_port


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return out


def assert_closed_by_server(sock: socket.socket, timeout: float = 10) -> None:
    """The server ends this connection (EOF or reset) without sending anything; closes it."""
    assert read_until_closed(sock, timeout) == b""
    sock.close()


def socks5_connect(proxy_port: int, host: str, port: int, auth: tuple[str, str] | None = None,
                   timeout: float = 30) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, proxy_port), timeout=timeout)
    sock.sendall(b"\x05\x01" + (b"\x02" if auth else b"\x00"))
    ver, method = recv_exact(sock, 2)
    assert ver == 5 and method == (2 if auth else 0), (ver, method)
    if auth:
        u, p = auth[0].encode(), auth[1].encode()
        sock.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        assert recv_exact(sock, 2) == b"\x01\x00"
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port))
    reply = recv_exact(sock, 4)
    assert reply[1] == 0, f"socks5 reply {reply[1]}"
    recv_exact(sock, {1: 6, 4: 18}[reply[3]])
    return sock


def socks5_udp_associate(proxy_port: int, timeout: float = 30) -> tuple[socket.socket, tuple]:
    """Returns the control connection and the relay's UDP address."""
    ctl = socket.create_connection((LOOPBACK, proxy_port), timeout=timeout)
    ctl.sendall(b"\x05\x01\x00")
    assert recv_exact(ctl, 2) == b"\x05\x00"
    ctl.sendall(b"\x05\x03\x00\x01" + bytes(4) + b"\x00\x00")
    reply = recv_exact(ctl, 4)
    assert reply[1] == 0, f"socks5 udp associate reply {reply[1]}"
    addr = recv_exact(ctl, 6)
    host = socket.inet_ntoa(addr[:4])
    port = struct.unpack(">H", addr[4:])[0]
    if host == "0.0.0.0":
        host = LOOPBACK
    return ctl, (host, port)


def socks5_udp_packet(host: str, port: int, data: bytes) -> bytes:
    return b"\x00\x00\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port) + data


class Program:
    """An outside program run for one test, stopped by its PID."""

    def __init__(self, args: list[str], log_path):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_ss_local(tmp_path, server_port: int, password: str, method: str, udp: bool = False) -> tuple[Program, int]:
    exe = require_program("ss-local", "shadowsocks-libev")
    local = free_port()
    args = [exe, "-s", LOOPBACK, "-p", str(server_port), "-b", LOOPBACK, "-l", str(local),
            "-k", password, "-m", method, "-v"]
    if udp:
        args.append("-u")
    prog = Program(args, tmp_path / f"ss-local-{local}.log")
    wait_port(local)
    return prog, local


def start_trojan_client(tmp_path, server_port: int, password: str,
                        alpn: list[str] | None = None) -> tuple[Program, int]:
    """The Debian `trojan` program as a client of ``server_port``; returns it and its local
    SOCKS5 port."""
    exe = require_program("trojan", "trojan")
    local = free_port()
    ssl_cfg = {"verify": False, "verify_hostname": False, "sni": "ehco"}
    if alpn:
        ssl_cfg["alpn"] = alpn
    cfg = {"run_type": "client", "local_addr": LOOPBACK, "local_port": local,
           "remote_addr": LOOPBACK, "remote_port": server_port, "password": [password],
           "log_level": 1, "ssl": ssl_cfg}
    path = tmp_path / f"trojan-client-{local}.json"
    path.write_text(json.dumps(cfg))
    prog = Program([exe, "-c", str(path)], tmp_path / f"trojan-client-{local}.log")
    wait_port(local)
    return prog, local


class Panel:
    """ehco's panel: GET returns the users, POST records the traffic reports."""

    def __init__(self):
        self.users: list[dict] = []
        self.posts: list[dict] = []
        self.mode = "ok"  # "ok", "garbage", "slow", "post_fail"
        self.gets = 0
        panel = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                panel.gets += 1
                if panel.mode == "slow":
                    time.sleep(12)
                body = (b"<html>not json" if panel.mode == "garbage"
                        else json.dumps({"users": panel.users}).encode())
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                data = json.loads(self.rfile.read(n))
                if panel.mode in ("post_fail", "slow", "garbage"):
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                panel.posts.append(data)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}/api/proxy_configs/1/?token=t"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
