"""The open-files limit: ehco takes the hard limit at start, as Go programs do, so a node
holds thousands of idle connections without anyone raising ``ulimit -n`` by hand."""

from __future__ import annotations

import os
import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support import EhcoProcess, free_port, wait_for, wait_port

HELD = 9000
HARD = 20000
SOFT = 1024

HOLDECHO = str(Path(__file__).resolve().parent / "holdecho.py")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def own_fd_room():
    """This process opens the clients' ends: give it room (the hard limit must allow it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = HELD + 1000
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
        except (ValueError, OSError):
            pytest.skip(f"the test process needs {need} open files; hard limit is {hard}")
    elif soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_9000_idle_connections_under_a_20000_hard_limit(tmp_path, own_fd_room):
    server = subprocess.Popen([sys.executable, HOLDECHO], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    port = free_port()
    proc = EhcoProcess(["-l", f"127.0.0.1:{port}", "-r",
                        f"127.0.0.1:{server.stdout.readline().strip()}", "--log_level", "debug"],
                       tmp_path, nofile=(SOFT, HARD))
    try:
        wait_port(port)
        proc.wait_log(f"open files limit: {HARD} (was {SOFT}")

        def held() -> int:
            server.stdin.write("?\n")
            server.stdin.flush()
            return int(server.stdout.readline())

        wait_for(held, lambda n: n == 0, "wait_port's probe to end at the server")
        base = 0
        for i in range(HELD):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            if i % 500 == 499:  # let the relay keep up with the listen backlog
                deadline = time.monotonic() + 30
                while held() - base < i + 1 - 200 and time.monotonic() < deadline:
                    time.sleep(0.05)
        deadline = time.monotonic() + 60
        while held() - base < HELD and time.monotonic() < deadline:
            time.sleep(0.1)
        assert held() - base >= HELD
        assert "accept failed" not in proc.log  # never ran out of fds
        fds = fd_count(proc.proc.pid)
        assert fds <= 2.1 * HELD, f"{fds} fds for {HELD} idle connections"
        for conn in random.sample(clients, 20):  # the held connections still relay
            conn.sendall(b"still here")
            assert conn.recv(64) == b"still here"
    finally:
        for conn in clients:
            conn.close()
        proc.stop()
        server.stdin.close()
        server.wait(10)
