"""Issue 12 through real processes on loopback: passive failover, active health checks, the
strategies, PROXY protocol refusals, and the visible state (/api/v1/relays/, metrics).

Assertions count (connections served, connections each remote's echo server saw, dials the
API reports); small ``fail_timeout``/``interval`` values come from the config, and the only
waits are for an event (a log line) or past a configured interval before counting again."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

from ..support import (EchoServer, free_port, parallel_roundtrips, roundtrip, wait_port,
                      write_config)

LO = "127.0.0.1"


def served(port: int, n: int, workers: int = 20) -> int:
    """Open n connections, ``workers`` at a time, each echoing its own random payload; how
    many came back identical (a reset fails the test where it happens)."""
    ok = 0
    for start in range(0, n, workers):
        ok += sum(parallel_roundtrips(port, [os.urandom(1000 + i)
                                             for i in range(start, min(n, start + workers))]))
    return ok


def get_json(web_port: int, path: str):
    with urllib.request.urlopen(f"http://{LO}:{web_port}{path}", timeout=10) as resp:
        body = resp.read().decode()
    return json.loads(body) if path.startswith("/api/") else body


def remote_rows(web_port: int, label: str) -> dict:
    relays = get_json(web_port, "/api/v1/relays/")["relays"]
    relay = next(r for r in relays if r["label"] == label)
    return {row["remote"]: row for row in relay["tcp_remotes"]}


def successes(web_port: int, label: str) -> dict:
    """Successful dials per remote, as the relay counted them (a connection from outside the
    test to one of its echo servers' ports cannot move these)."""
    return {remote: row["dials"] - row["dial_failures"]
            for remote, row in remote_rows(web_port, label).items()}


def remote_up(web_port: int, label: str, remote: str) -> float:
    """The value of ehco_gevent_remote_up{label,remote} on /metrics/."""
    from ehco_gevent.observability.metrics import parse_samples

    samples = parse_samples(get_json(web_port, "/metrics/"))
    return next(s.value for s in samples if s.name == "ehco_gevent_remote_up"
                and s.labels["label"] == label and s.labels["remote"] == remote)


def ws_exit(listen_port: int, echo_port: int, label: str) -> dict:
    return {"listen": f"{LO}:{listen_port}", "listen_type": "ws", "label": label,
            "tcp_remotes": [f"{LO}:{echo_port}"]}


def test_refusing_and_silent_remotes_cost_no_connection_and_come_back(ehco, tmp_path):
    """Three ws remotes: A works, B refuses, C accepts TCP and never answers the upgrade.
    300 connections are all served; once B and C are real exits again, they get traffic
    after fail_timeout."""
    echo_a, echo_b, echo_c = EchoServer(), EchoServer(), EchoServer()
    pa, pb, pc, entry, web = (free_port() for _ in range(5))
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind((LO, pc))
    silent.listen(512)  # the kernel accepts; nobody ever answers
    try:
        exits1 = write_config(tmp_path, {"relay_configs": [ws_exit(pa, echo_a.port, "A")]},
                              "exit1.json")
        ehco("-c", exits1).wait_log("tcp listening on")
        remotes = [f"ws://{LO}:{p}" for p in (pa, pb, pc)]
        cfg = write_config(tmp_path, {"web_port": web, "enable_ping": False, "relay_configs": [{
            "listen": f"{LO}:{entry}", "label": "three", "transport_type": "ws",
            "tcp_remotes": remotes, "max_fails": 1, "fail_timeout": 2,
            "dial_timeout": 6}]})  # a 2 s slice per attempt: roomy for A on a loaded machine
        proc = ehco("-c", cfg)
        proc.wait_log("tcp listening on")
        assert served(entry, 300) == 300
        proc.wait_log(f"tcp remote ws://{LO}:{pb} is down")
        proc.wait_log(f"tcp remote ws://{LO}:{pc} is down")
        assert "no remote answered" not in proc.log
        rows = remote_rows(web, "three")
        assert rows[f"ws://{LO}:{pb}"]["dial_failures"] >= 1
        assert "within" in rows[f"ws://{LO}:{pc}"]["last_error"]  # the slice of the deadline
        assert successes(web, "three") == {remotes[0]: 300, remotes[1]: 0, remotes[2]: 0}
        assert remote_up(web, "three", f"ws://{LO}:{pa}") == 1

        silent.close()
        exits2 = write_config(tmp_path, {"relay_configs": [ws_exit(pb, echo_b.port, "B"),
                                                           ws_exit(pc, echo_c.port, "C")]},
                              "exit2.json")
        ehco("-c", exits2).wait_log("tcp listening on")
        wait_port(pb)
        time.sleep(2.2)  # past fail_timeout: B and C are candidates again
        assert served(entry, 30, workers=1) == 30
        after = successes(web, "three")
        assert after[remotes[1]] > 0 and after[remotes[2]] > 0
        assert echo_b.accepted > 0 and echo_c.accepted > 0
        proc.wait_log(f"tcp remote ws://{LO}:{pc} is up: dial succeeded")
        rows = remote_rows(web, "three")
        assert all(row["up"] for row in rows.values())
    finally:
        silent.close()
        for server in (echo_a, echo_b, echo_c):
            server.close()


def test_active_checks_take_a_remote_down_and_bring_it_back(ehco, tmp_path):
    """health_check marks the refusing remote down before any client meets it; when it comes
    back, rise passes bring it up (fail_timeout is long: only the checks can do that)."""
    echo_a = EchoServer()
    pb, entry, web = free_port(), free_port(), free_port()
    echo_b = None
    try:
        cfg = write_config(tmp_path, {"web_port": web, "enable_ping": False, "relay_configs": [{
            "listen": f"{LO}:{entry}", "label": "act",
            "tcp_remotes": [f"{LO}:{echo_a.port}", f"{LO}:{pb}"], "fail_timeout": 600,
            "health_check": {"interval": 0.2, "timeout": 0.5, "rise": 2, "fall": 1}}]})
        proc = ehco("-c", cfg)
        proc.wait_log(f"tcp remote {LO}:{pb} is down: health check failed 1 time(s)")
        assert remote_up(web, "act", f"{LO}:{pb}") == 0
        assert served(entry, 10, workers=1) == 10
        assert remote_rows(web, "act")[f"{LO}:{pb}"]["dials"] == 0  # no client was sent there
        echo_b = EchoServer(port=pb)
        proc.wait_log(f"tcp remote {LO}:{pb} is up: health check passed 2 time(s)")
        assert served(entry, 10, workers=1) == 10
        rows = remote_rows(web, "act")
        assert rows[f"{LO}:{pb}"]["dials"] == 5 and rows[f"{LO}:{pb}"]["up"]
        assert remote_up(web, "act", f"{LO}:{pb}") == 1
        assert proc.log.count(f"tcp remote {LO}:{pb} is") == 2  # one line per transition
    finally:
        echo_a.close()
        if echo_b is not None:
            echo_b.close()


def test_ip_hash_keeps_one_source_on_one_remote(ehco, tmp_path):
    servers = [EchoServer() for _ in range(3)]
    entry, web = free_port(), free_port()
    try:
        cfg = write_config(tmp_path, {"web_port": web, "enable_ping": False, "relay_configs": [{
            "listen": f"{LO}:{entry}", "label": "hash", "lb_strategy": "ip_hash",
            "tcp_remotes": [f"{LO}:{s.port}" for s in servers]}]})
        ehco("-c", cfg).wait_log("tcp listening on")
        assert served(entry, 20, workers=5) == 20
        assert sorted(successes(web, "hash").values()) == [0, 0, 20]
    finally:
        for s in servers:
            s.close()


def test_failover_uses_the_first_until_it_stops_then_the_second_then_the_first(ehco, tmp_path):
    first, second = EchoServer(), EchoServer()
    entry, web, first_port = free_port(), free_port(), first.port
    a, b = f"{LO}:{first.port}", f"{LO}:{second.port}"
    try:
        cfg = write_config(tmp_path, {"web_port": web, "enable_ping": False, "relay_configs": [{
            "listen": f"{LO}:{entry}", "label": "fo", "lb_strategy": "failover",
            "fail_timeout": 0.5, "tcp_remotes": [a, b]}]})
        proc = ehco("-c", cfg)
        proc.wait_log("tcp listening on")
        assert served(entry, 5, workers=1) == 5
        assert successes(web, "fo") == {a: 5, b: 0}
        first.close()
        assert served(entry, 5, workers=1) == 5  # the first refused: served by the second
        assert successes(web, "fo") == {a: 5, b: 5}
        first = EchoServer(port=first_port)
        time.sleep(0.6)  # past fail_timeout
        assert served(entry, 5, workers=1) == 5
        assert successes(web, "fo") == {a: 10, b: 5}
        assert proc.log.count(f"tcp remote {a} is down") == 1
    finally:
        first.close()
        second.close()


def test_proxy_header_refusals(ehco, echo_server, tmp_path):
    """accept_proxy: a header from an address outside accept_proxy_from, a missing header and
    a malformed one each close the connection with a log line; an allowed one's address
    becomes the client address."""
    entry, web = free_port(), free_port()
    cfg = write_config(tmp_path, {"web_port": web, "enable_ping": False, "relay_configs": [{
        "listen": f"{LO}:{entry}", "label": "pp", "accept_proxy": True,
        "accept_proxy_from": ["127.0.0.2/32"], "tcp_remotes": [f"{LO}:{echo_server.port}"]}]})
    proc = ehco("-c", cfg, "--log_level", "debug")
    proc.wait_log("tcp listening on")
    header = b"PROXY TCP4 203.0.113.5 127.0.0.1 4321 80\r\n"

    def attempt(source: str, data: bytes) -> bytes:
        with socket.create_connection((LO, entry), timeout=10, source_address=(source, 0)) as c:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            out = bytearray()
            try:
                while chunk := c.recv(65536):
                    out += chunk
            except ConnectionResetError:
                pass
            return bytes(out)

    assert attempt("127.0.0.1", header + b"hello") == b""
    proc.wait_log("relay pp: closed connection from 127.0.0.1:")
    assert "not in accept_proxy_from" in proc.log
    assert attempt("127.0.0.2", b"GET / HTTP/1.1\r\n\r\n") == b""
    proc.wait_log("bad PROXY header: no PROXY protocol header")
    assert attempt("127.0.0.2", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n") == b""
    proc.wait_log("bad PROXY header: v1 header: invalid port")
    assert remote_rows(web, "pp")[f"{LO}:{echo_server.port}"]["dials"] == 0  # none got through
    assert attempt("127.0.0.2", header + b"hello") == b"hello"
    proc.wait_log(f"relay pp: 203.0.113.5:4321 -> {LO}:{echo_server.port} connected")
    conns = get_json(web, "/api/v1/connections/?conn_type=closed")["connections"]
    assert any("203.0.113.5:4321" in json.dumps(c) for c in conns)


def test_reload_changing_balancing_keys_keeps_open_connections(ehco, echo_server, tmp_path):
    entry = free_port()
    relay = {"listen": f"{LO}:{entry}", "label": "r", "tcp_remotes": [f"{LO}:{echo_server.port}"]}
    path = write_config(tmp_path, {"relay_configs": [relay]})
    proc = ehco("-c", path)
    proc.wait_log("tcp listening on")
    live = socket.create_connection((LO, entry), timeout=10)
    live.sendall(b"before")
    assert live.recv(100) == b"before"
    write_config(tmp_path, {"relay_configs": [{**relay, "lb_strategy": "least_conn",
                                               "max_fails": 3, "send_proxy": "v1",
                                               "health_check": {"interval": 5}}]})
    proc.signal(signal.SIGHUP)
    proc.wait_log("restarted r;")
    live.sendall(b"after")
    assert live.recv(100) == b"after"
    live.close()
    wait_port(entry)
    # the new settings are live: the echo server now sees a v1 header first
    assert roundtrip(entry, b"x").startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")


def test_a_bad_balancing_key_exits_2_naming_file_relay_and_key(tmp_path):
    from ..test_cli import assert_clean_failure, run_ehco

    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"{LO}:1", "label": "lb", "tcp_remotes": [f"{LO}:2"],
        "health_check": {"interval": -1}}]})
    assert_clean_failure(run_ehco("-c", cfg), 2, str(cfg), "relay_configs[0] (label 'lb')",
                         "health_check: interval")


def test_ws_health_check_fails_a_remote_that_never_answers_the_upgrade(ehco, tmp_path):
    """The probe is the tunnel's own dial: TCP connects to the silent remote, the upgrade gets
    no answer, the check fails; an mwss exit that works stays up (a stream on its session)."""
    echo = EchoServer()
    silent = socket.create_server((LO, 0), backlog=64)
    exit_port, ws_entry, mwss_entry, web = (free_port() for _ in range(4))
    try:
        exits = write_config(tmp_path, {"relay_configs": [
            {"listen": f"{LO}:{exit_port}", "listen_type": "mwss", "label": "exit",
             "tcp_remotes": [f"{LO}:{echo.port}"]}]}, "exit.json")
        ehco("-c", exits).wait_log("tcp listening on")
        check = {"interval": 0.2, "timeout": 0.5, "rise": 1, "fall": 1}
        silent_remote = f"ws://{LO}:{silent.getsockname()[1]}"
        cfg = write_config(tmp_path, {"web_port": web, "enable_ping": False, "relay_configs": [
            {"listen": f"{LO}:{ws_entry}", "label": "ws", "transport_type": "ws",
             "tcp_remotes": [silent_remote], "health_check": check},
            {"listen": f"{LO}:{mwss_entry}", "label": "mwss", "transport_type": "mwss",
             "tcp_remotes": [f"wss://{LO}:{exit_port}"], "health_check": check}]})
        proc = ehco("-c", cfg)
        proc.wait_log(f"relay ws: tcp remote {silent_remote} is down: health check failed "
                      "1 time(s): no answer within 0.5 s")
        relays = {r["label"]: r for r in get_json(web, "/api/v1/relays/")["relays"]}
        assert relays["ws"]["tcp_remotes"][0]["up"] is False
        assert relays["mwss"]["tcp_remotes"][0]["up"] is True
        assert relays["mwss"]["health_check"] == check
        assert roundtrip(mwss_entry, b"still fine") == b"still fine"
        assert "relay mwss: tcp remote" not in proc.log  # never a transition: never a line
    finally:
        silent.close()
        echo.close()


def test_udp_sessions_follow_the_strategy_and_skip_an_unreachable_remote(ehco, tmp_path):
    """failover over two UDP remotes whose first has no listener: the ICMP unreachable marks
    it down and ends the session; the client's retry is answered by the second."""
    from ..support import UDPEchoServer, free_tcp_udp_port

    echo = UDPEchoServer()
    dead = free_port(socket.SOCK_DGRAM)
    entry = free_tcp_udp_port()
    try:
        cfg = write_config(tmp_path, {"relay_configs": [{
            "listen": f"{LO}:{entry}", "label": "u", "lb_strategy": "failover",
            "udp_remotes": [f"{LO}:{dead}", f"{LO}:{echo.port}"]}]})
        proc = ehco("-c", cfg)
        proc.wait_log("udp listening on")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(0.5)
            answer = None
            for attempt in range(20):  # a UDP client retries; count the tries, not the time
                client.sendto(b"dns? %d" % attempt, (LO, entry))
                try:
                    answer = client.recvfrom(100)[0]
                    break
                except socket.timeout:
                    continue
            assert answer is not None and answer.startswith(b"dns?")
        proc.wait_log(f"relay u: udp remote {LO}:{dead} is down")
        assert len(echo.clients) == 1
    finally:
        echo.close()
