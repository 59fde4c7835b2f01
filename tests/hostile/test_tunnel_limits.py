"""What an unauthenticated peer gets from a tunnel listener of a real node (issue 10, item 2):
sessions that open no stream are closed at the handshake deadline, SYN floods dial at most
``smux_max_streams`` remotes per session, handshakes in progress are capped per listener, and
the node's memory and fds come back once the attackers leave."""

from __future__ import annotations

import time

import pytest

from ehco_gevent.transports.smux import FIN, PSH, encode_frame

from ..support import read_until_closed, wait_for
from . import attack
from .conftest import NODE_LIMITS, start_node

TIMEOUT_LINE = "no stream within 1.5 s (smux_handshake_timeout)"
CAP_LINE = "handshakes in progress (tunnel_max_handshakes)"
MIB = 1024


def settle(pid: int, start_kib: int, start_fds: int) -> tuple[int, int]:
    """Wait for the node's RSS to come within 20 MiB of ``start_kib`` and its fds back to
    ``start_fds``; the last (rss KiB, fds) either way (the caller asserts and prints)."""
    sample = lambda: (attack.rss_kib(pid), attack.open_fds(pid))  # noqa: E731
    try:
        return wait_for(sample, lambda v: v[0] <= start_kib + 20 * MIB and v[1] <= start_fds,
                        "RSS and fds back", timeout=10)
    except AssertionError:
        return sample()


def test_500_silent_mtcp_connections_closed_at_the_handshake_deadline(node):
    attack.echo_probe(node.ports["raw"])  # warm
    start_rss, start_fds = attack.rss_kib(node.pid), attack.open_fds(node.pid)
    socks = [attack.connect_plain(node.ports["mtcp"]) for _ in range(500)]
    try:
        loaded_rss = attack.rss_kib(node.pid)
        for s in socks:  # each one closed by the node (EOF or reset), none left open
            assert read_until_closed(s, NODE_LIMITS["smux_handshake_timeout"] + 10) == b""
    finally:
        for s in socks:
            s.close()
    lines = node.log_lines("relay mtcp: ", TIMEOUT_LINE)
    assert len(lines) == 1, lines  # rate-limited: one line for 500 closes
    rss, fds = settle(node.pid, start_rss, start_fds)
    print(f"500 silent mtcp: RSS {start_rss / MIB:.1f} -> {loaded_rss / MIB:.1f} -> "
          f"{rss / MIB:.1f} MiB, fds {start_fds} -> {fds}")
    assert fds <= start_fds
    assert rss <= start_rss + 20 * MIB
    assert attack.echo_probe(node.ports["raw"]) > 0


def test_syn_floods_dial_at_most_the_stream_cap_per_session(node):
    cap = NODE_LIMITS["smux_max_streams"]
    attack.echo_probe(node.ports["raw"])
    start_rss, start_fds = attack.rss_kib(node.pid), attack.open_fds(node.pid)
    dials_before = node.echo.accepted
    socks = [attack.connect_plain(node.ports["mtcp"], timeout=30) for _ in range(20)]
    try:
        for s in socks:
            s.sendall(attack.syns(3, 2000))
        for s in socks:  # every SYN beyond the cap is answered with FIN at once
            frames = attack.recv_frames(
                s, lambda fs: sum(1 for f in fs if f[0] == FIN) >= 2000 - cap)
            refused = {sid for cmd, sid, _ in frames if cmd == FIN}
            assert len(refused) == 2000 - cap
            assert min(refused) == 3 + 2 * cap
        loaded_rss = attack.rss_kib(node.pid)
        dials = node.echo.accepted - dials_before
    finally:
        for s in socks:
            s.close()
    print(f"20 x 2000 SYNs: {dials} upstream dials (cap {cap} x 20 = {cap * 20})")
    assert 0 < dials <= cap * 20
    assert node.log_lines("relay mtcp: ", "(smux_max_streams)")
    rss, fds = settle(node.pid, start_rss, start_fds)
    print(f"20 x 2000 SYNs: RSS {start_rss / MIB:.1f} -> {loaded_rss / MIB:.1f} -> "
          f"{rss / MIB:.1f} MiB, fds {start_fds} -> {fds}")
    assert fds <= start_fds
    assert rss <= start_rss + 20 * MIB


@pytest.fixture(scope="module")
def capped_node(tmp_path_factory):
    """A node that lets 3 handshakes run at once and gives them a long deadline."""
    node = start_node(tmp_path_factory.mktemp("capped"),
                      {"tunnel_max_handshakes": 3, "smux_handshake_timeout": 60})
    yield node
    node.proc.stop()
    node.echo.close()


@pytest.mark.parametrize("label", ["mtcp", "mwss", "ws"])
def test_handshakes_in_progress_are_capped_per_listener(capped_node, label):
    node, port = capped_node, capped_node.ports[label]
    wait_for(lambda: attack.accepted_on(node.pid, port), lambda n: n == 0, "no connection left")
    holders = [attack.connect_plain(port) for _ in range(3)]  # silent: 3 slots held
    try:
        wait_for(lambda: attack.accepted_on(node.pid, port), lambda n: n == 3,
                 "the node accepted the three")
        with attack.connect_plain(port) as extra:
            # closed by the node at once, while the first three are still waiting
            assert read_until_closed(extra) == b""
        assert all(attack.still_open(s, 0.2) for s in holders)
    finally:
        for s in holders:
            s.close()
    assert node.log_lines(f"relay {label}: ", CAP_LINE)
    # the slots come back: a real session gets through
    deadline = time.monotonic() + 10
    while True:
        try:
            if label == "mtcp":
                with attack.connect_plain(port) as s:
                    s.sendall(attack.syns(3, 1) + encode_frame(PSH, 3, b"hi")
                              + attack.fin(3))
                    frames = attack.recv_frames(s, lambda fs: any(f[0] == FIN for f in fs))
                    assert b"".join(p for _, sid, p in frames if sid == 3) == b"hi"
            else:
                attack.connect_upgraded(port, f"/{label}/", tls=label == "mwss").close()
            break
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_limits_reach_worker_processes(tmp_path):
    """With ``workers``, the relays run in worker processes: the config's limits go with them."""
    node = start_node(tmp_path, {"workers": 2, "smux_handshake_timeout": 1})
    try:
        with attack.connect_plain(node.ports["mtcp"]) as silent:
            assert read_until_closed(silent, 15) == b""
        wait_for(lambda: node.log_lines("relay mtcp: ", "no stream within 1 s"),
                 what="the worker's timeout line")
    finally:
        node.proc.stop()
        node.echo.close()
