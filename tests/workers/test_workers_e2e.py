"""``--workers 2`` through real processes, checked from the outside as an operator would:
bytes intact, /metrics/ exact, /connections/ complete, reloads, a killed worker, shutdown.

Which worker holds a connection: with N workers, the connection ids of worker S leave the
remainder S when divided by N + 1 (docs/configuration.md), so ``id % 3`` names the worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import psutil
import pytest
import requests

from ehco_gevent.observability.metrics import parse_samples

from ..support import (LOOPBACK, free_port, free_tcp_udp_port, parallel_roundtrips, roundtrip,
                       wait_port,
                       write_config)

WORKERS = 2


class Node:
    """A supervisor with two workers, a web server and relays to a real echo server."""

    def __init__(self, ehco, tmp_path, echo_port: int, labels=("lbl",), extra=None):
        self.web = f"http://{LOOPBACK}:{free_port()}"
        self.ports = {label: free_port() for label in labels}
        self.echo_port = echo_port
        self.path = tmp_path / "config.json"
        self.extra = extra or {}
        self.write(labels)
        self.proc = ehco("-c", self.path, "--workers", WORKERS)
        self.proc.wait_log("Start Web Server at")
        for port in self.ports.values():
            wait_port(port)

    def relay(self, label: str) -> dict:
        return {"listen": f"{LOOPBACK}:{self.ports[label]}", "label": label,
                "tcp_remotes": [f"{LOOPBACK}:{self.echo_port}"]}

    def write(self, labels) -> None:
        write_config(self.path.parent, {
            "web_host": LOOPBACK, "web_port": int(self.web.rsplit(":", 1)[1]),
            "enable_ping": False, "log_level": "debug",
            "relay_configs": [self.relay(label) for label in labels], **self.extra})

    def get(self, path: str) -> requests.Response:
        resp = requests.get(self.web + path, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp

    def active(self) -> dict[str, dict]:
        """Client address -> row of every open connection, from the supervisor's API."""
        rows = self.get("/api/v1/connections/?conn_type=active&page_size=1000").json()
        return {row["flow"].split(" → ")[0]: row for row in rows["connections"]}

    def transmit(self) -> dict[tuple, float]:
        return {(s.labels["remote"], s.labels["flow"]): s.value
                for s in parse_samples(self.get("/metrics/").text)
                if s.name == "ehco_traffic_network_transmit_bytes"}

    def worker_pids(self) -> dict[int, int]:
        """Worker number -> pid of the running worker, from the supervisor's log."""
        return {int(n): int(pid) for n, pid in
                re.findall(r"worker (\d+) started \(pid (\d+)\)", self.proc.log)}

    def hold_in_every_worker(self, label: str = "lbl") -> dict[socket.socket, int]:
        """Open connections (each echoes once) until every worker holds some; returns each
        connection's worker."""
        conns: list[socket.socket] = []
        while True:
            assert len(conns) < 60, "the kernel put 60 connections on one worker"
            conn = socket.create_connection((LOOPBACK, self.ports[label]), timeout=10)
            conn.sendall(b"hi")
            assert conn.recv(10) == b"hi"
            conns.append(conn)
            rows = self.active()
            owners = {c: rows["%s:%d" % c.getsockname()]["id"] % (WORKERS + 1) for c in conns}
            if set(owners.values()) == set(range(1, WORKERS + 1)):
                return owners


def echoes(conn: socket.socket, data: bytes = b"still here") -> bool:
    conn.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = conn.recv(65536)
        if not chunk:
            return False
        got += chunk
    return got == data


def wait_until(check, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


@pytest.fixture
def node(ehco, tmp_path, echo_server):
    return lambda labels=("lbl",), **extra: Node(ehco, tmp_path, echo_server.port, labels, extra)


def test_200_connections_intact_metrics_exact_and_every_workers_connections_listed(node):
    n = node()
    payloads = [os.urandom(1 + (i * 7919) % 150_000) for i in range(200)]
    assert all(parallel_roundtrips(n.ports["lbl"], payloads))
    total = sum(len(p) for p in payloads)
    remote = f"lbl-{LOOPBACK}:{n.echo_port}"
    # each connection adds up + down to both flows, as ehco counts (docs/metrics.md)
    want = {(remote, "read"): 2 * total, (remote, "write"): 2 * total}
    got = wait_until(lambda: (t := n.transmit()) == want and t, "exact transmit bytes")
    assert got == want
    closed = n.get("/api/v1/connections/?conn_type=closed&page_size=1000").json()
    rows = [r for r in closed["connections"] if r["up_bytes"]]  # not wait_port's probe
    assert sorted(r["up_bytes"] for r in rows) == sorted(len(p) for p in payloads)
    per_worker = {w: sum(1 for r in rows if r["id"] % (WORKERS + 1) == w)
                  for w in range(1, WORKERS + 1)}
    assert all(per_worker.values()), per_worker  # the traffic was spread over both
    for worker in range(1, WORKERS + 1):  # as their logs say (the config's level reached them)
        assert re.search(rf"\[worker {worker}\] relay lbl: \S+ -> \S+ closed, up [1-9]", n.proc.log)
    samples = parse_samples(n.get("/metrics/").text)
    dials = [s.value for s in samples
             if s.name == "ehco_traffic_handshake_duration_count" and s.labels["remote"] == remote]
    assert dials == [201]  # every dial of every worker, wait_port's probe included

    # the connections pages list the open connections of every worker
    owners = n.hold_in_every_worker()
    data = n.get("/api/v1/connections/?conn_type=active").json()
    assert data["active_count"] == len(owners)
    # the process gauges hold the whole node: the workers' memory (and greenlets) too
    processes = [psutil.Process(n.proc.proc.pid), *psutil.Process(n.proc.proc.pid).children()]
    rss = sum(p.memory_info().rss for p in processes)
    gauges = {s.name: s.value for s in parse_samples(n.get("/metrics/").text)}
    assert gauges["ehco_gevent_resident_memory_bytes"] >= 0.8 * rss  # the supervisor's is ~1/3
    page = n.get(f"/connections/?conn_type=active&page_size={len(owners)}").text
    for conn in owners:
        assert "%s:%d" % conn.getsockname() in page
        conn.close()
    wait_until(lambda: n.get("/api/v1/connections/?conn_type=active").json()["active_count"] == 0,
               "every connection closed")


def test_the_proxy_server_runs_in_the_supervisor_beside_the_workers_relays(node):
    from ..proxy.helpers import socks5_connect

    socks = free_port()
    n = node(xray_config={"inbounds": [{"listen": LOOPBACK, "port": socks, "protocol": "socks",
                                        "tag": "socks_in"}],
                          "outbounds": [{"protocol": "freedom"}]})
    wait_port(socks)
    owners = n.hold_in_every_worker()
    proxied = socks5_connect(socks, LOOPBACK, n.echo_port)
    assert echoes(proxied, b"through the proxy")
    rows = n.active()
    row = rows["%s:%d" % proxied.getsockname()]
    assert row["id"] % (WORKERS + 1) == 0  # the supervisor's own connection, listed with theirs
    assert len(rows) == len(owners) + 1
    proxied.close()
    for conn in owners:
        conn.close()


def test_sighup_removing_a_relay_closes_it_in_every_worker_and_keeps_its_connections(node):
    n = node(("keep", "gone"))
    owners = n.hold_in_every_worker("gone")
    n.write(("keep",))
    n.proc.signal(signal.SIGHUP)
    for worker in range(1, WORKERS + 1):
        n.proc.wait_log(f"[worker {worker}] relay gone: stopped listening")
    for _ in range(10):  # any worker still listening would take some of these
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, n.ports["gone"]), timeout=5)
    for conn in owners:  # opened before the reload, in both workers: they go on
        assert echoes(conn)
        conn.close()
    assert roundtrip(n.ports["keep"], b"kept") == b"kept"


def test_a_killed_worker_is_restarted_and_nothing_else_moves(node):
    n = node()
    owners = n.hold_in_every_worker()
    for conn in owners:
        assert echoes(conn, os.urandom(100_000))
    before = wait_until(lambda: (t := n.transmit()) and min(t.values()) > 0 and t, "counters")
    pids = n.worker_pids()
    os.kill(pids[1], signal.SIGKILL)
    n.proc.wait_log(f"worker 1 (pid {pids[1]}) exited with signal SIGKILL; restarting it")
    wait_until(lambda: n.worker_pids()[1] != pids[1], "a new worker 1")
    n.proc.wait_log("[worker 1] relay lbl: tcp listening on")
    for conn, worker in owners.items():
        if worker == 1:  # went down with its worker
            try:
                assert conn.recv(10) == b""
            except ConnectionResetError:
                pass
        else:
            assert echoes(conn)
        conn.close()
    after = n.transmit()
    assert all(after[key] >= value for key, value in before.items()), (before, after)
    samples = {s.name: s.value for s in parse_samples(n.get("/metrics/").text)}
    assert (samples["ehco_gevent_workers"], samples["ehco_gevent_worker_restarts_total"]) == (2, 1)
    assert psutil.pid_exists(pids[2]) and n.worker_pids()[2] == pids[2]
    payloads = [os.urandom(10_000) for _ in range(20)]  # and the node relays as before
    assert all(parallel_roundtrips(n.ports["lbl"], payloads))
    wait_until(lambda: all(n.transmit()[k] >= after[k] + 2 * 200_000 for k in after),
               "the counters grow by the new traffic")

    # SIGTERM to the supervisor: every worker (the restarted one too) is gone, status 0
    pids = sorted(n.worker_pids().values())
    assert sorted(c.pid for c in psutil.Process(n.proc.proc.pid).children()) == pids
    n.proc.signal(signal.SIGTERM)
    assert n.proc.proc.wait(20) == 0
    for pid in pids:
        assert not psutil.pid_exists(pid), f"worker pid {pid} left behind"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, n.ports["lbl"]), timeout=5)


class UpstreamPortEcho:
    """A UDP server that answers each datagram with the port it came from: the client learns
    which upstream socket (which relay session) carried it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                _, addr = self.sock.recvfrom(65535)
                self.sock.sendto(str(addr[1]).encode(), addr)
            except OSError:
                return


def test_a_killed_worker_leaves_the_other_workers_udp_sessions_where_they_were(ehco, tmp_path):
    """The kernel picks a UDP port's socket by hashing the client over the sockets bound to
    it; the supervisor holds them, so a worker's death and restart moves nobody else's
    datagrams: the surviving worker's clients keep their sessions (same upstream port)."""
    upstream = UpstreamPortEcho()
    port = free_tcp_udp_port()
    proc = ehco("-c", write_config(tmp_path, {"log_level": "debug", "relay_configs": [{
        "listen": f"{LOOPBACK}:{port}", "label": "u",
        "udp_remotes": [f"{LOOPBACK}:{upstream.port}"]}]}), "--workers", WORKERS)
    listening = "relay u: udp listening on"
    wait_until(lambda: proc.log.count(listening) == WORKERS, "every worker listening")
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        for c in clients:
            c.bind((LOOPBACK, 0))
            c.settimeout(5)

        def sessions() -> dict[socket.socket, int]:  # client -> upstream port of its session
            out = {}
            for c in clients:
                c.sendto(b"which", (LOOPBACK, port))
                out[c] = int(c.recvfrom(100)[0])
            return out

        before = sessions()
        assert sessions() == before  # a session keeps its upstream socket
        owner = {int(client): int(worker) for worker, client in re.findall(
            r"\[worker (\d+)\] relay u: udp session 127\.0\.0\.1:(\d+) ->", proc.log)}
        workers = {c: owner[c.getsockname()[1]] for c in clients}
        assert set(workers.values()) == {1, 2}, "the kernel put 16 clients on one worker"
        pid = int(re.search(r"worker 1 started \(pid (\d+)\)", proc.log)[1])
        os.kill(pid, signal.SIGKILL)
        proc.wait_log(f"worker 1 (pid {pid}) exited with signal SIGKILL; restarting it")
        wait_until(lambda: proc.log.count(listening) == WORKERS + 1, "worker 1 listening again")
        after = sessions()
        assert {c: after[c] for c in clients if workers[c] == 2} == \
            {c: before[c] for c in clients if workers[c] == 2}
    finally:
        for c in clients:
            c.close()
        upstream.sock.close()


def test_a_reload_removing_a_udp_relay_frees_its_port_and_keeps_the_other(ehco, tmp_path):
    """The supervisor's copies of a removed UDP relay's sockets close with the workers'
    (the port can be bound again without SO_REUSEPORT); the relay that stays still answers."""
    upstream = UpstreamPortEcho()
    ports = {"u": free_tcp_udp_port(), "v": free_tcp_udp_port()}

    def write(labels):
        return write_config(tmp_path, {"relay_configs": [{
            "listen": f"{LOOPBACK}:{ports[label]}", "label": label,
            "udp_remotes": [f"{LOOPBACK}:{upstream.port}"]} for label in labels]})

    proc = ehco("-c", write(("u", "v")), "--workers", WORKERS)
    wait_until(lambda: proc.log.count("udp listening on") == 2 * WORKERS, "every relay listening")

    def answers(label: str) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(b"hi", (LOOPBACK, ports[label]))
            return c.recvfrom(100)[0].isdigit()

    def bindable(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return False
            return True

    try:
        assert answers("u") and answers("v") and not bindable(ports["u"])
        write(("v",))
        proc.signal(signal.SIGHUP)
        wait_until(lambda: bindable(ports["u"]), "the removed relay's port free again")
        assert answers("v")
    finally:
        upstream.sock.close()


def test_workers_exit_when_the_supervisor_is_killed(node):
    n = node()
    pids = list(n.worker_pids().values())
    n.proc.proc.kill()
    n.proc.proc.wait(10)
    deadline = time.monotonic() + 15
    while any(psutil.pid_exists(p) for p in pids):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_a_taken_port_stops_the_start_with_status_1(ehco, tmp_path, echo_server, kind):
    """TCP listeners are bound by the workers, UDP ones by the supervisor: either way the
    start stops with the message one process gives."""
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else
                            socket.SOCK_DGRAM)  # no SO_REUSEPORT: nobody may share it
    blocker.bind((LOOPBACK, 0))
    port = blocker.getsockname()[1]
    if kind == "tcp":
        blocker.listen()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"{LOOPBACK}:{port}", "label": "busy",
        f"{kind}_remotes": [f"{LOOPBACK}:{echo_server.port}"]}]})
    proc = ehco("-c", cfg, "--workers", WORKERS)
    assert proc.proc.wait(30) == 1
    what = "relay busy" if kind == "tcp" else "relay busy (udp)"
    assert f"{what}: cannot listen on {LOOPBACK}:{port}: address already in use" in proc.log
    assert "Traceback" not in proc.log
    blocker.close()
