"""The raw TCP/UDP relay through a real `ehco` process, as an operator would check it."""

import json
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .support import (EchoServer, UDPEchoServer, exchange, free_port, free_tcp_udp_port, parallel_roundtrips,
                      read_until_closed, roundtrip, sha, wait_for, wait_port, write_config)


def start_relay(ehco, echo_port, *extra):
    port = free_port()
    proc = ehco("-l", f"127.0.0.1:{port}", "-r", f"127.0.0.1:{echo_port}", *extra)
    wait_port(port)
    return port, proc


@pytest.mark.workers
@pytest.mark.parametrize("size", [1, 64 * 1024, 16 * 1024 * 1024])
def test_payload_comes_back_identical(ehco, echo_server, size):
    port, _ = start_relay(ehco, echo_server.port)
    data = os.urandom(size)
    assert sha(roundtrip(port, data)) == sha(data)


@pytest.mark.workers
def test_100_parallel_connections(ehco, echo_server):
    port, _ = start_relay(ehco, echo_server.port)
    payloads = [os.urandom(1000 + i * 997) for i in range(100)]
    assert all(parallel_roundtrips(port, payloads))


def test_server_speaks_first(ehco):
    server = EchoServer(greeting=b"220 smtp.example ESMTP ready\r\n")
    try:
        port, _ = start_relay(ehco, server.port)
        data = os.urandom(5000)
        assert roundtrip(port, data, greeting=server.greeting) == data
    finally:
        server.close()


def test_client_half_close_receives_all_data(ehco):
    """A server that answers only after the client finished sending (like `nc -q`)."""
    answer = os.urandom(2 * 1024 * 1024)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:  # wait_port's probe connection comes first
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                got = bytearray()
                while chunk := conn.recv(65536):
                    got += chunk
                conn.sendall(sha(bytes(got)).encode() + answer)
            except OSError:
                pass  # the probe went away
            finally:
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port, _ = start_relay(ehco, listener.getsockname()[1])
    request = os.urandom(100_000)
    assert roundtrip(port, request) == sha(request).encode() + answer
    listener.close()


def test_server_half_close_still_receives_client_data(ehco):
    """The other direction: the server says its piece and shuts its write side first; the
    client sees EOF yet can still send, and every byte reaches the server."""
    greeting = os.urandom(300_000)
    got: list = []
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(greeting)
                    conn.shutdown(socket.SHUT_WR)
                    data = bytearray()
                    while chunk := conn.recv(65536):
                        data += chunk
                except OSError:
                    continue  # wait_port's probe
                if data:
                    got.append(bytes(data))
                    done.set()

    threading.Thread(target=serve, daemon=True).start()
    port, _ = start_relay(ehco, listener.getsockname()[1])
    request = os.urandom(1_000_000)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        received = bytearray()
        while chunk := conn.recv(65536):  # until the server's EOF comes through
            received += chunk
        assert sha(bytes(received)) == sha(greeting)
        conn.sendall(request)  # our direction is still open
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(10) == b""
        assert done.wait(30)
    assert [sha(g) for g in got] == [sha(request)]
    listener.close()


@pytest.mark.workers
def test_udp_datagrams_keep_boundaries(ehco, udp_echo_server):
    port = free_tcp_udp_port()
    proc = ehco("-l", f"127.0.0.1:{port}", "-ur", f"127.0.0.1:{udp_echo_server.port}")
    proc.wait_log("udp listening")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        for size in (1, 2, 100, 1400, 4096, 8000):
            data = os.urandom(size)
            sock.send(data)
            assert sock.recv(65535) == data  # one datagram back, same size and bytes
    # one session per client address: the echo server saw a single upstream socket
    assert len(udp_echo_server.clients) == 1


def test_udp_round_robin_per_client_and_session_expiry(ehco, tmp_path):
    """Through the real process: each new client address takes the next remote and keeps it
    for its whole session; a session ends after ehco's 10 s without traffic (logged with its
    exact bytes), and the client's next datagram opens a new one on the next remote."""
    remotes = [UDPEchoServer(), UDPEchoServer()]
    names = {f"127.0.0.1:{r.port}": i for i, r in enumerate(remotes)}
    port = free_tcp_udp_port()
    proc = ehco("-c", write_config(tmp_path, {"log_level": "debug", "relay_configs": [{
        "listen": f"127.0.0.1:{port}", "label": "u",
        "udp_remotes": list(names)}]}))
    proc.wait_log("udp listening")
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for c in clients:
            c.bind(("127.0.0.1", 0))
            c.settimeout(5)
            for i in range(2):
                c.sendto(b"hi%d" % i, ("127.0.0.1", port))
                assert c.recvfrom(100)[0] == b"hi%d" % i

        def sessions_of(client):  # the remote of each session the client had, in order
            return [names[r] for r in re.findall(
                rf"udp session 127\.0\.0\.1:{client.getsockname()[1]} -> (\S+)\n", proc.log)]

        assert [sessions_of(c) for c in clients] == [[0], [1], [0]]  # round robin per client address
        assert [len(r.clients) for r in remotes] == [2, 1]  # one upstream socket per session
        for c in clients:  # idle for ehco's 10 s: each session ends, with its exact bytes
            proc.wait_log(f"udp session 127.0.0.1:{c.getsockname()[1]} -> "
                          f"{list(names)[sessions_of(c)[0]]} closed, up 6 down 6 bytes", timeout=25)
        clients[0].sendto(b"again", ("127.0.0.1", port))
        assert clients[0].recvfrom(100)[0] == b"again"
        # a new session, and round robin has moved on to the second remote
        wait_for(lambda: sessions_of(clients[0]), lambda v: v == [0, 1], "the client's sessions")
    finally:
        for s in clients:
            s.close()
        for r in remotes:
            r.close()


@pytest.mark.workers
def test_udp_and_tcp_on_one_listen_address(ehco, echo_server, udp_echo_server, tmp_path):
    port = free_tcp_udp_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"127.0.0.1:{port}", "label": "both",
        "tcp_remotes": [f"127.0.0.1:{echo_server.port}"],
        "udp_remotes": [f"127.0.0.1:{udp_echo_server.port}"]}]})
    proc = ehco("-c", cfg)
    wait_port(port)
    proc.wait_log("udp listening")
    assert roundtrip(port, b"tcp!") == b"tcp!"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"udp!", ("127.0.0.1", port))
        assert sock.recvfrom(100)[0] == b"udp!"


def test_round_robin_splits_5_5(ehco, tmp_path):
    a, b = EchoServer(), EchoServer()
    try:
        port = free_port()
        cfg = write_config(tmp_path, {"relay_configs": [{
            "listen": f"127.0.0.1:{port}", "label": "rr",
            "tcp_remotes": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}]})
        ehco("-c", cfg).wait_log("tcp listening on")  # no probe connection: it would count
        for i in range(10):
            assert roundtrip(port, b"n%d" % i) == b"n%d" % i
        assert (a.accepted, b.accepted) == (5, 5)
    finally:
        a.close()
        b.close()


def test_refused_remote_closes_client_promptly(ehco, echo_server):
    dead = free_port()  # nothing listens there
    port, proc = start_relay(ehco, dead, "--log_level", "info")
    for _ in range(2):  # and the listener keeps serving after a failed dial
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"anyone?")
            try:
                assert conn.recv(10) == b""  # closed, not hung (a timeout would raise)
            except ConnectionResetError:
                pass  # closed with our unread bytes in its buffer: the kernel sends RST
    proc.wait_log(f"dial 127.0.0.1:{dead} for 127.0.0.1:")
    assert "Connection refused" in proc.log


def test_refused_remote_is_failed_over_and_leaves_other_connections_alone(ehco, echo_server,
                                                                          tmp_path):
    """Round robin over a live and a dead remote: the connection whose turn is the dead remote
    is dialled to the live one instead (passive failover, on by default), and the connection
    already open is not touched."""
    port, dead = free_port(), free_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"127.0.0.1:{port}", "label": "half",
        "tcp_remotes": [f"127.0.0.1:{echo_server.port}", f"127.0.0.1:{dead}"]}]})
    proc = ehco("-c", cfg)
    proc.wait_log("tcp listening on")
    live = socket.create_connection(("127.0.0.1", port), timeout=10)  # to the echo server
    live.sendall(b"first")
    assert live.recv(100) == b"first"
    assert roundtrip(port, b"second") == b"second"  # its turn was the dead remote
    proc.wait_log(f"dial 127.0.0.1:{dead} for 127.0.0.1:")
    proc.wait_log(f"tcp remote 127.0.0.1:{dead} is down")
    data = os.urandom(100_000)
    assert sha(exchange(live, data)) == sha(data)
    live.close()
    assert roundtrip(port, b"third") == b"third"
    assert echo_server.accepted == 3


@pytest.mark.workers
def test_sighup_adds_relay_and_keeps_open_connection(ehco, echo_server, tmp_path):
    p1, p2 = free_port(), free_port()
    first = {"listen": f"127.0.0.1:{p1}", "label": "one",
             "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}
    cfg = write_config(tmp_path, {"relay_configs": [first]})
    proc = ehco("-c", cfg)
    wait_port(p1)
    old = socket.create_connection(("127.0.0.1", p1), timeout=10)
    old.sendall(b"before")
    assert old.recv(100) == b"before"

    second = {"listen": f"127.0.0.1:{p2}", "label": "two",
              "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}
    write_config(tmp_path, {"relay_configs": [first, second]})
    proc.signal(signal.SIGHUP)
    wait_port(p2)
    assert roundtrip(p2, b"new relay") == b"new relay"
    old.sendall(b"after")  # the connection opened before the reload still works
    assert old.recv(100) == b"after"
    old.close()
    assert "stopped listening" not in proc.log  # relay one was not restarted


@pytest.mark.workers
def test_invalid_reload_changes_nothing(ehco, echo_server, tmp_path):
    port = free_port()
    good = {"relay_configs": [{"listen": f"127.0.0.1:{port}", "label": "keep",
                               "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}]}
    cfg = write_config(tmp_path, good)
    proc = ehco("-c", cfg)
    wait_port(port)
    old = socket.create_connection(("127.0.0.1", port), timeout=10)
    old.sendall(b"before")
    assert old.recv(100) == b"before"
    cfg.write_text(json.dumps({"relay_configs": [{"listen": "", "label": "broken"}]}))
    proc.signal(signal.SIGHUP)
    proc.wait_log("reload (SIGHUP) failed, keeping the running config")
    assert roundtrip(port, b"still here") == b"still here"
    cfg.write_text("{ this is not json")
    proc.signal(signal.SIGHUP)
    proc.wait_log("not valid JSON")
    assert roundtrip(port, b"still here") == b"still here"
    old.sendall(b"after")  # and the connection opened before both reloads was not touched
    assert old.recv(100) == b"after"
    old.close()
    assert proc.proc.poll() is None
    assert "stopped listening" not in proc.log and "reload: started" not in proc.log


@pytest.mark.workers
def test_reload_changed_relay_moves_to_new_remote(ehco, tmp_path):
    a, b = EchoServer(greeting=b"A"), EchoServer(greeting=b"B")
    try:
        port = free_port()
        relay = {"listen": f"127.0.0.1:{port}", "label": "mv",
                 "tcp_remotes": [f"127.0.0.1:{a.port}"]}
        cfg = write_config(tmp_path, {"relay_configs": [relay]})
        proc = ehco("-c", cfg)
        wait_port(port)
        assert roundtrip(port, b"x", greeting=b"A") == b"x"
        relay["tcp_remotes"] = [f"127.0.0.1:{b.port}"]
        write_config(tmp_path, {"relay_configs": [relay]})
        proc.signal(signal.SIGHUP)
        proc.wait_log("reload (SIGHUP): restarted mv")
        wait_port(port)
        assert roundtrip(port, b"y", greeting=b"B") == b"y"
    finally:
        a.close()
        b.close()


def test_reload_interval_picks_up_edits(ehco, echo_server, tmp_path):
    p1, p2 = free_port(), free_port()
    relay = {"listen": f"127.0.0.1:{p1}", "label": "r",
             "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}
    cfg = write_config(tmp_path, {"reload_interval": 1, "relay_configs": [relay]})
    ehco("-c", cfg)
    wait_port(p1)
    relay2 = dict(relay, label="r2", listen=f"127.0.0.1:{p2}")
    write_config(tmp_path, {"reload_interval": 1, "relay_configs": [relay, relay2]})
    wait_port(p2, timeout=10)
    assert roundtrip(p2, b"ticker") == b"ticker"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_zero_and_closes_listener(ehco, echo_server, sig):
    port, proc = start_relay(ehco, echo_server.port)
    proc.signal(sig)
    assert proc.proc.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_config_from_http_url(ehco, echo_server):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    port = free_port()
    body = json.dumps({"relay_configs": [{"listen": f"127.0.0.1:{port}", "label": "http",
                                          "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}]})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        ehco("-c", f"http://127.0.0.1:{httpd.server_port}/config.json")
        wait_port(port)
        assert roundtrip(port, b"from url") == b"from url"
    finally:
        httpd.shutdown()


def test_connection_log_lines_name_relay_and_addresses(ehco, echo_server):
    port, proc = start_relay(ehco, echo_server.port, "--log_level", "debug")
    roundtrip(port, b"abc")
    deadline = time.monotonic() + 5
    while "closed, up 3 down 3 bytes" not in proc.log and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(l for l in proc.log.splitlines() if "closed, up 3 down 3" in l)
    assert f"TCP-To=[127.0.0.1:{echo_server.port}]" in line and "127.0.0.1:" in line


def test_unanswering_remote_times_out_and_closes_client(ehco):
    """A remote whose accept queue is full drops SYNs: the 3 s dial timeout must end it."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue; further connects are never answered
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(blackhole.getsockname())
        fillers.append(s)
    try:
        port, proc = start_relay(ehco, blackhole.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
            # closed by the relay (EOF or reset) when its dial gives up, not by our timeout
            assert read_until_closed(conn, timeout=15) == b""
        proc.wait_log("timed out")
    finally:
        for s in fillers:
            s.close()
        blackhole.close()


def test_nothing_left_behind_after_connections_end(ehco, echo_server):
    """Sockets and splice pipes of finished connections are all closed in the process."""
    port, proc = start_relay(ehco, echo_server.port)
    assert roundtrip(port, b"warm up") == b"warm up"

    def fds():
        return sorted(os.listdir(f"/proc/{proc.proc.pid}/fd"))

    time.sleep(0.3)
    before = fds()
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: roundtrip(port, os.urandom(200_000)), range(40)))
    deadline = time.monotonic() + 5
    while fds() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fds() == before


def test_out_of_file_descriptors_pauses_accepting_then_recovers(tmp_path, echo_server):
    """EMFILE must neither spin the accept loop nor kill the listener."""
    from .support import EhcoProcess

    port = free_port()
    limit = 48
    proc = EhcoProcess(["-l", f"127.0.0.1:{port}", "-r", f"127.0.0.1:{echo_server.port}"],
                       tmp_path, nofile=limit)
    try:
        wait_port(port)
        hogs = []
        for _ in range(limit):  # each relayed connection holds 2 sockets (and a pipe while moving data)
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            hogs.append(s)
        proc.wait_log("pausing accepts")
        assert proc.proc.poll() is None
        assert proc.proc.poll() is None
        # not spinning: every failed accept is one log line followed by a pause (doubling while
        # it keeps failing), so there are fewer of them than clients that came
        failed = proc.log.count("accept failed")
        assert 1 <= failed <= limit, failed
        pauses = [float(p) for p in re.findall(r"pausing accepts for ([0-9.]+) s", proc.log)]
        assert len(pauses) == failed and pauses[0] == 0.01
        assert all(b in (a * 2, 1.0, 0.01) for a, b in zip(pauses, pauses[1:])), pauses
        for s in hogs:
            s.close()
        time.sleep(0.5)
        assert roundtrip(port, b"recovered", timeout=15) == b"recovered"
    finally:
        proc.stop()


@pytest.mark.workers
def test_reload_reports_what_started_and_what_failed(ehco, echo_server, tmp_path, ehco_workers):
    """A reload that adds two relays, one on a busy port: the log and the web reload route say
    which one started and which one failed (and why); the failed one starts on a later reload
    once its port is free."""
    import requests

    web, p1, p2 = free_port(), free_port(), free_port()
    remote = [f"127.0.0.1:{echo_server.port}"]
    relays = [{"listen": f"127.0.0.1:{p1}", "label": "a", "tcp_remotes": remote}]
    doc = {"web_host": "127.0.0.1", "web_port": web, "enable_ping": False, "reload_interval": 0,
           "relay_configs": relays}
    cfg = write_config(tmp_path, doc)
    proc = ehco("-c", cfg)
    wait_port(p1)
    wait_port(web)
    busy = socket.create_server(("127.0.0.1", 0))
    p3 = busy.getsockname()[1]
    relays += [{"listen": f"127.0.0.1:{p2}", "label": "b", "tcp_remotes": remote},
               {"listen": f"127.0.0.1:{p3}", "label": "c", "tcp_remotes": remote}]
    write_config(tmp_path, doc)
    why = f"cannot listen on 127.0.0.1:{p3}: address already in use"
    resp = requests.post(f"http://127.0.0.1:{web}/reload/", timeout=10)
    # echo's shape, as Go answered a failed reload: {"message": ...}
    assert (resp.status_code, resp.json()["message"]) == (
        400, f"reload: started b; kept 1; failed: c ({why})")
    line = next(l for l in proc.log.splitlines() if "reload (web): started" in l)
    assert "ERROR" in line and "started b; kept 1; failed: c" in line  # c is not "started"
    assert roundtrip(p2, b"b serves") == b"b serves"
    # again, port still busy: nothing new started, the failure is still answered
    resp = requests.post(f"http://127.0.0.1:{web}/api/v1/config/reload/", timeout=10)
    assert (resp.status_code, resp.json()["message"]) == (400, f"reload: kept 2; failed: c ({why})")
    proc.wait_log("reload (web): kept 2; failed: c")  # asked for: logged, though a repeat
    busy.close()
    proc.signal(signal.SIGHUP)
    proc.wait_log("reload (SIGHUP): started c; kept 2")
    assert roundtrip(p3, b"c serves") == b"c serves"
    resp = requests.post(f"http://127.0.0.1:{web}/reload/", timeout=10)
    assert (resp.status_code, resp.text) == (200, "reload success")
    # once (with workers: once in each worker's log line)
    assert proc.log.count("started b") == proc.log.count("started c") == ehco_workers


def test_timer_reload_retries_a_failed_relay_without_repeating_itself(ehco, echo_server,
                                                                      tmp_path):
    p1 = free_port()
    busy = socket.create_server(("127.0.0.1", 0))
    p2 = busy.getsockname()[1]
    remote = [f"127.0.0.1:{echo_server.port}"]
    relays = [{"listen": f"127.0.0.1:{p1}", "label": "a", "tcp_remotes": remote}]
    doc = {"reload_interval": 1, "enable_ping": False, "log_level": "debug",
           "relay_configs": relays}
    cfg = write_config(tmp_path, doc)
    proc = ehco("-c", cfg)
    wait_port(p1)
    relays.append({"listen": f"127.0.0.1:{p2}", "label": "c", "tcp_remotes": remote})
    write_config(tmp_path, doc)
    proc.wait_log("reload (timer): kept 1; failed: c (cannot listen on")
    ticks = proc.log.count("reload (timer): reading")
    wait_for(lambda: proc.log.count("reload (timer): reading"), lambda n: n >= ticks + 3,
             "three more timer reloads")
    assert proc.log.count("failed: c") == 1  # retried each time, reported once
    assert "started" not in proc.log.split("failed: c", 1)[1]
    busy.close()
    proc.wait_log("reload (timer): started c; kept 1")  # the retry that finds the port free
    assert roundtrip(p2, b"c serves") == b"c serves"
