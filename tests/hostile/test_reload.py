"""Reloads under traffic (issue 10): a relay restarted on the same address never refuses a
connection, and restarts leave no fd and no greenlet behind on either node of an mwss tunnel."""

from __future__ import annotations

import os
import re
import signal
import time

import requests

from tests.support import EchoServer, LOOPBACK, free_port, roundtrip, wait_for, wait_port, write_config
from tests.hostile.slow import Prober, size


def reload_and_wait(proc, tmp_path, cfg: dict, done: int) -> None:
    """Write ``cfg``, SIGHUP, and wait for the ``done``-th restart of relay r to be logged."""
    write_config(tmp_path, cfg)
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while proc.log.count(": restarted r;") < done:
        assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log[-2000:]
        time.sleep(0.01)


def probe_1k(port: int) -> None:
    data = os.urandom(1024)
    assert roundtrip(port, data, timeout=10) == data


def test_restarted_relay_never_refuses_a_connection(ehco, tmp_path):
    reloads = 30
    a, b = EchoServer(), EchoServer()
    port = free_port()
    relay = {"listen": f"{LOOPBACK}:{port}", "label": "r", "tcp_remotes": [f"{LOOPBACK}:{a.port}"]}
    cfg = {"enable_ping": False, "relay_configs": [relay]}
    proc = ehco("-c", write_config(tmp_path, cfg))
    wait_port(port)
    try:
        with Prober(lambda: probe_1k(port), interval=0.01) as prober:
            for i in range(1, reloads + 1):
                relay["tcp_remotes"] = [f"{LOOPBACK}:{(b if i % 2 else a).port}"]
                before = prober.ok + len(prober.failures)
                reload_and_wait(proc, tmp_path, cfg, i)
                while prober.ok + len(prober.failures) < before + 2:  # probes span the reload
                    time.sleep(0.005)
        assert prober.failures == []
        assert prober.ok >= 2 * reloads
        assert a.accepted > 0 and b.accepted > 0  # the restarts did move the remote
    finally:
        a.close()
        b.close()


def fds(proc) -> int:
    return len(os.listdir(f"/proc/{proc.proc.pid}/fd"))


def greenlets(web_port: int) -> int:
    text = requests.get(f"http://{LOOPBACK}:{web_port}/metrics/", timeout=10).text
    return int(float(re.search(r"^ehco_gevent_greenlets\S* (\S+)$", text, re.M).group(1)))


def test_mwss_restarts_leave_no_fd_or_greenlet_behind(ehco, tmp_path):
    """Node A (raw in, mwss out) alternates its remote between two mwss listeners of node B;
    after each reload a transfer opens a pooled smux session. Within 10 s of the last reload
    both nodes are back to the fds and greenlets they had at the start."""
    reloads = size(20, 100)
    echo = EchoServer()
    b1, b2, a_port, a_web, b_web = (free_port() for _ in range(5))
    node_b = {"enable_ping": False, "web_host": LOOPBACK, "web_port": b_web, "relay_configs": [
        {"listen": f"{LOOPBACK}:{p}", "label": f"b{p}", "listen_type": "mwss",
         "tcp_remotes": [f"{LOOPBACK}:{echo.port}"]} for p in (b1, b2)]}
    relay = {"listen": f"{LOOPBACK}:{a_port}", "label": "r", "transport_type": "mwss",
             "tcp_remotes": [f"wss://{LOOPBACK}:{b1}"]}
    node_a = {"enable_ping": False, "web_host": LOOPBACK, "web_port": a_web, "relay_configs": [relay]}
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    proc_b = ehco("-c", write_config(b_dir, node_b))
    proc_a = ehco("-c", write_config(a_dir, node_a))
    try:
        for p in (b1, b2, a_port, a_web, b_web):
            wait_port(p)
        probe_1k(a_port)
        greenlets(a_web), greenlets(b_web)  # a first scrape may start greenlets of its own
        start = {"a": (fds(proc_a), greenlets(a_web)), "b": (fds(proc_b), greenlets(b_web))}
        for i in range(1, reloads + 1):
            relay["tcp_remotes"] = [f"wss://{LOOPBACK}:{b2 if i % 2 else b1}"]
            reload_and_wait(proc_a, a_dir, node_a, i)
            probe_1k(a_port)
        wait_for(lambda: {"a": (fds(proc_a), greenlets(a_web)), "b": (fds(proc_b), greenlets(b_web))},
                 lambda now: all(now[k][0] <= start[k][0] and now[k][1] <= start[k][1] for k in now),
                 f"(fds, greenlets) of both nodes back to their start {start}", timeout=10)
    finally:
        echo.close()
