"""The supervisor's parts: error and exit descriptions, then a WorkerPool run in this
process with real worker processes behind it (its greenlets are gevent's own, so the test
process needs no monkey patching)."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import gevent
import pytest

from ehco_gevent.addresses import ListenError
from ehco_gevent.config import ConfigError, RelayConfig
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.workers.channel import RemoteError
from ehco_gevent.workers.supervisor import (WorkerFailure, become_supervisor, describe_exit,
                                            local_error)

from ..support import LOOPBACK, free_port


def test_a_workers_error_becomes_the_error_one_process_raises():
    assert type(local_error(RemoteError("ListenError", "relay a: cannot listen"))) is ListenError
    assert type(local_error(RemoteError("ConfigError", "TLS: no such file"))) is ConfigError
    failure = local_error(TimeoutError("worker 1 channel: no answer to 'start' in 60 s"))
    assert isinstance(failure, WorkerFailure) and "no answer" in str(failure)


def test_exit_descriptions():
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(3) == "status 3"


def held_connection(port: int) -> socket.socket:
    conn = socket.create_connection((LOOPBACK, port), timeout=10)
    conn.sendall(b"hi")
    assert conn.recv(10) == b"hi"  # relayed: the worker holds it now
    return conn


@pytest.fixture
def pool(echo_server):
    app = SimpleNamespace(config=None, opts={"log_level": "info"}, registry=ConnectionRegistry(),
                          relays=None, services=[])
    pool = become_supervisor(app, 2)
    port = free_port()
    pool.start_all([RelayConfig(f"{LOOPBACK}:{port}", label="lbl",
                                tcp_remotes=(f"{LOOPBACK}:{echo_server.port}",))])
    yield app, pool, port
    pool.stop_all(drop=True)


def test_close_reaches_the_worker_that_holds_the_connection(pool, echo_server):
    app, pool, port = pool
    conns, owners = [], {}
    while len(set(owners.values())) < 2:  # until both workers hold some
        assert len(conns) < 60, "the kernel put 60 connections on one worker"
        conns.append(held_connection(port))
        owners = {c.client_addr: c.id % 3 for c in app.registry.active.values()}
    assert len(owners) == len(conns)
    by_addr = {"%s:%d" % c.getsockname(): c for c in conns}
    victims = {addr for addr, worker in owners.items() if worker == 2}
    assert app.registry.close_where(lambda c: c.client_addr in victims) == len(victims)
    for addr, conn in by_addr.items():
        if addr in victims:
            try:
                assert conn.recv(10) == b""
            except ConnectionResetError:
                pass
        else:
            conn.sendall(b"still")
            assert conn.recv(10) == b"still"
        conn.close()
    remote = (f"lbl-{LOOPBACK}:{echo_server.port}", "tcp")
    expected = [2 * len(conns) + 5 * (len(conns) - len(victims))] * 2
    deadline = time.monotonic() + 10
    while app.registry.count_active().get(remote) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert app.registry.totals()[remote] == expected
    assert len(app.registry.closed) == len(conns)


def test_a_reload_asking_for_another_number_of_workers_says_it_needs_a_restart(caplog):
    from ehco_gevent.config import parse_config
    from ehco_gevent.workers.supervisor import WorkersService

    service = WorkersService(SimpleNamespace(count=2))
    service.on_config(parse_config({"workers": 2})[0])
    assert caplog.records == []
    service.on_config(parse_config({"workers": 3})[0])
    assert "the config asks for 3; 2 keep running until ehco restarts" in caplog.text
