"""Shared test machinery: real `ehco` processes, real echo servers, real sockets on loopback.

The test process itself is not monkey-patched: servers here are plain threads and blocking
sockets, so what is under test is only ever the ehco process (or the module a unit test calls).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def require_program(name: str, package: str) -> str:
    """Path of an outside program; skip without it, fail when EHCO_REQUIRE_INTEROP=1."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not installed (Debian package {package})"
    if os.environ.get("EHCO_REQUIRE_INTEROP") == "1":
        pytest.fail(message + " but EHCO_REQUIRE_INTEROP=1")
    pytest.skip(message)


_HANDED_OUT: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago (bound to 0 and read back, then released), and never
    handed out before in this test run: the kernel may give a just-released port to the next
    bind to 0, so a test asking for two ports (a relay's and the web server's) could get one
    port twice and its ehco would fail with "address already in use"."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port after 1000 tries")


def free_tcp_udp_port() -> int:
    """A port free for both TCP and UDP (relays with udp_remotes bind both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both tcp and udp")


def wait_port(port: int, host: str = LOOPBACK, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """All the peer sends until it closes the connection (EOF or reset, TLS included).

    A peer still silent after ``timeout`` fails the test: holding a connection open is not
    closing it, so a socket timeout is never taken for a close."""
    import ssl

    sock.settimeout(timeout)
    out = bytearray()
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        pytest.fail(f"still open after {timeout} s (got {len(out)} bytes): expected a close")
    except (ConnectionResetError, ssl.SSLError):
        pass
    return bytes(out)


def wait_for(fetch, check=bool, what: str = "condition", timeout: float = 15.0):
    """Poll ``fetch()`` until ``check(value)``; fail with the last value (not a timing check:
    the timeout only bounds how long a test waits for an event that should come)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: last value {value!r}")
        time.sleep(0.1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LoggedProcess:
    """A real child process with its output in a log file, stopped by PID (SIGTERM, then
    SIGKILL after ``grace`` seconds)."""

    grace = 10.0

    def __init__(self, cmd: list[str], log_path: Path, **popen):
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, **popen)

    @property
    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in {self.log_path.name}:\n{self.log}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


class EhcoProcess(LoggedProcess):
    """A real ehco process (``python -m ehco_gevent``, the console script's entry point)."""

    def __init__(self, args: list[str], tmp_path: Path, env: dict | None = None,
                 nofile: int | tuple[int, int] | None = None):
        """``nofile``: the child's open-files limit, one number for soft = hard (a cap it
        cannot raise), or ``(soft, hard)``."""
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        limits = (nofile, nofile) if isinstance(nofile, int) else nofile

        def limit_fds():  # runs in the child
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        super().__init__([sys.executable, "-m", "ehco_gevent", *args],
                         tmp_path / f"ehco-{time.monotonic_ns()}.log",
                         env=full_env, cwd=str(tmp_path),
                         preexec_fn=limit_fds if nofile else None)


def write_config(tmp_path: Path, cfg: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(cfg, indent=2))
    return path


class EchoServer:
    """Threaded TCP echo server; optionally greets first (a server-first protocol). ``port``
    brings a stopped server back on its old port."""

    def __init__(self, greeting: bytes = b"", host: str = LOOPBACK, port: int = 0):
        self.greeting = greeting
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.greeting:
                conn.sendall(self.greeting)
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._closed = True
        try:  # wakes the accept thread: a bare close() leaves the listener alive in its accept()
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class QuittingEchoServer(EchoServer):
    """EchoServer that, when a connection's first message is QUIT, says goodbye and shuts down
    its write side first (a server that ends the conversation, as SMTP or FTP do), then keeps
    reading: what the client sent after the goodbye goes, whole at the client's EOF, into
    ``after_goodbye`` (so a test can check those late bytes did arrive)."""

    QUIT, GOODBYE = b"QUIT\r\n", b"221 bye\r\n"

    def __init__(self, greeting: bytes = b"", host: str = LOOPBACK):
        self.after_goodbye: queue.Queue[bytes] = queue.Queue()
        super().__init__(greeting, host)

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.sendall(self.greeting)
            first = conn.recv(1 << 16)
            if first == self.QUIT:
                conn.sendall(self.GOODBYE)
                conn.shutdown(socket.SHUT_WR)
                late = bytearray()
                while chunk := conn.recv(1 << 16):
                    late += chunk
                self.after_goodbye.put(bytes(late))
                return
            while first:
                conn.sendall(first)
                first = conn.recv(1 << 16)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()


def check_server_closes_first(port: int, server: QuittingEchoServer, greeting: bytes = b"",
                              timeout: float = 15) -> None:
    """Through the relay at ``port``: the server says goodbye and shuts down its write side;
    the client reads the goodbye and EOF, then still sends, and the server gets those bytes."""
    late = os.urandom(64 * 1024) + b"late words\r\n"
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as conn:
        got = bytearray()
        while len(got) < len(greeting):
            chunk = conn.recv(65536)
            assert chunk, "closed before the greeting"
            got += chunk
        assert got == greeting
        conn.sendall(server.QUIT)
        assert read_until_closed(conn, timeout) == server.GOODBYE  # goodbye, then EOF
        conn.sendall(late)  # our direction is still open
        conn.shutdown(socket.SHUT_WR)
        try:
            heard = server.after_goodbye.get(timeout=timeout)
        except queue.Empty:
            pytest.fail("the server never saw the client's EOF after its goodbye")
    assert sha(heard) == sha(late), f"server got {len(heard)} of {len(late)} late bytes"


class UDPEchoServer:
    def __init__(self, host: str = LOOPBACK):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.clients: set = set()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            self.clients.add(addr)
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self.sock.close()


def exchange(sock: socket.socket, payload: bytes, half_close: bool = True) -> bytes:
    """Send payload and read the echo back: until EOF after a half-close, or (for clients such
    as ss-local that close both ways on the first EOF) until as many bytes came back."""
    errors = []

    def writer():
        try:
            sock.sendall(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    out = bytearray()
    while half_close or len(out) < len(payload):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        out += chunk
    t.join()
    assert not errors, errors
    return bytes(out)


def roundtrip(port: int, payload: bytes, host: str = LOOPBACK, greeting: bytes = b"",
              timeout: float = 60.0) -> bytes:
    """Send payload, half-close, read everything back (after an expected greeting)."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        received = bytearray()
        if greeting:
            while len(received) < len(greeting):
                chunk = conn.recv(len(greeting) - len(received))
                if not chunk:
                    break
                received += chunk
            assert bytes(received) == greeting
        return exchange(conn, payload)


def parallel_roundtrips(port: int, payloads: list[bytes], host: str = LOOPBACK,
                        timeout: float = 30.0) -> list[bool]:
    """One connection per payload, all open at once (a barrier after connecting, so a tunnel
    must carry them side by side: smux pools spread them over several sessions); each sends
    its payload, half-closes and checks that the echo is sha256-identical."""
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(len(payloads), timeout=timeout)

    def one(data: bytes) -> bool:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            barrier.wait()
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            out = bytearray()
            while chunk := conn.recv(65536):
                out += chunk
            return sha(bytes(out)) == sha(data)

    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(one, payloads))


def gevent_tcp_pair():
    """Two connected gevent TCP sockets on loopback, for in-process tests of greenlet code
    (real TCP, unlike socketpair's Unix sockets: splice and shutdown behave as in production)."""
    from gevent import socket as gsocket

    listener = gsocket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(1)
    client = gsocket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return client, server


class BlobHTTPServer:
    """A threaded HTTP server on loopback answering every GET with the same bytes."""

    def __init__(self, blob: bytes):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
