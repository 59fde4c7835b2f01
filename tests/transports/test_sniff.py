"""Mismatched tunnels: the byte guesses as plain functions, then two real ehco nodes wired
wrongly on purpose (node A's transport_type is not node B's listen_type), as an operator's first
hour goes. The side that can tell logs one line naming the likely mismatch; the client is closed
at once instead of being held until the 10 s handshake timeout."""

import os
import socket

import pytest

from ehco_gevent.transports import sniff

from ..support import EchoServer, EhcoProcess, free_port, read_until_closed, wait_port, write_config

HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40)  # a TLS ClientHello
SSH = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"  # no blank line: an HTTP head would never end
SMUX_SYN = b"\x01\x00\x00\x00\x03\x00\x00\x00"
#: closed "at once" means well before the 10 s handshake timeout the old code waited out
PROMPT = 5


# -- the guesses, over bytes -----------------------------------------------------------------------
@pytest.mark.parametrize("data,kind", [
    (HELLO, "tls"), (b"\x16", "tls"), (SMUX_SYN, "smux"), (SSH, "ssh"),
    (b"GET /ws/ HTTP/1.1\r\n", "http"), (b"OPTIONS", "http"), (b"\x00\x01garbage", "unknown"),
    (b"hello world", "unknown"), (b"get / HTTP/1.1", "unknown")])
def test_guess(data, kind):
    assert sniff.guess(data) == kind


@pytest.mark.parametrize("listen_type,data,named", [
    ("ws", HELLO, "a wss or mwss client"), ("ws", SSH, "a raw client"),
    ("ws", SMUX_SYN, "an mtcp client"), ("wss", b"GET /ws/ HTTP/1.1", "a ws client"),
    ("mwss", SMUX_SYN, "an mtcp client"), ("mtcp", b"GET /ws/", "a ws client"),
    ("mtcp", HELLO, "a wss or mwss client"), ("mtcp", b"hello", "a raw client")])
def test_first_bytes_of_another_tunnel_name_the_likely_client(listen_type, data, named):
    with pytest.raises(sniff.Mismatch) as info:
        sniff.check_first_bytes(data, listen_type)
    assert named in str(info.value) and f"this {listen_type} listener" in str(info.value)


@pytest.mark.parametrize("listen_type,data", [
    ("ws", b"G"), ("ws", b"GET / HTTP/1.1\r\n"), ("ws", b"CONNECT"), ("wss", HELLO),
    ("wss", b"\x16"), ("mwss", HELLO), ("mtcp", SMUX_SYN), ("raw", HELLO), ("ws", b"")])
def test_expected_first_bytes_pass(listen_type, data):
    sniff.check_first_bytes(data, listen_type)


def test_upgrade_hints_name_the_fix():
    assert "is wss://h:1 a wss/mwss listener?" in sniff.upgrade_hint(
        "wss", "wss://h:1", "tls", "closed during the TLS handshake")
    assert "/mwss/" in sniff.upgrade_hint("mwss", "wss://h:1", "http", "upgrade refused: 404")
    assert "expects TLS" in sniff.upgrade_hint("ws", "ws://h:1", "http",
                                               "closed after 0 bytes of HTTP head")


# -- two real nodes, wired wrongly -----------------------------------------------------------------
#: node A's relay label -> (A's transport_type, B's listener it is aimed at)
WRONG = {
    "wss-to-ws": ("wss", "ws"),
    "mtcp-to-mwss": ("mtcp", "mwss"),
    "ws-to-wss": ("ws", "wss"),
    "mwss-to-wss": ("mwss", "wss"),
    "ws-to-mtcp": ("ws", "mtcp"),
    "mtcp-to-raw": ("mtcp", "raw"),
    "raw-to-ws": ("raw", "ws"),
}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Node A has one relay per wrong pairing, each aimed at a listener of its own on node B
    (so every log line below comes from its own test); B also has "ws" and "flood", plain ws
    listeners for raw bytes sent straight at them. B's raw listener leads to a server that
    speaks first, as SSH does; the others to an echo server."""
    tmp = tmp_path_factory.mktemp("mismatch")
    echo, ssh = EchoServer(), EchoServer(greeting=SSH)
    b_kinds = {label: target for label, (_, target) in WRONG.items()}
    b_kinds.update(ws="ws", flood="ws")
    b_ports = {name: free_port() for name in b_kinds}
    b_relays = [{"label": f"b-{name}", "listen": f"127.0.0.1:{b_ports[name]}", "listen_type": kind,
                 "tcp_remotes": [f"127.0.0.1:{(ssh if kind == 'raw' else echo).port}"]}
                for name, kind in b_kinds.items()]
    a_ports, a_relays = {}, []
    for label, (tt, _) in WRONG.items():
        a_ports[label] = free_port()
        scheme = {"ws": "ws://", "wss": "wss://", "mwss": "wss://"}.get(tt, "")
        a_relays.append({"label": label, "listen": f"127.0.0.1:{a_ports[label]}",
                         "transport_type": tt,
                         "tcp_remotes": [f"{scheme}127.0.0.1:{b_ports[label]}"]})
    b = EhcoProcess(["-c", write_config(tmp, {"relay_configs": b_relays}, "b.json")], tmp)
    a = EhcoProcess(["-c", write_config(tmp, {"relay_configs": a_relays}, "a.json")], tmp)
    try:
        for port in [*b_ports.values(), *a_ports.values()]:
            wait_port(port, timeout=30)
        yield {"a": a, "b": b, "a_ports": a_ports, "b_ports": b_ports}
    finally:
        for proc in (a, b):
            proc.stop()
        echo.close()
        ssh.close()


def through_a(nodes, label, data=b"hello"):
    """A client of node A's wrongly wired relay: it is closed promptly."""
    sock = socket.create_connection(("127.0.0.1", nodes["a_ports"][label]), timeout=PROMPT)
    try:
        sock.sendall(data)
    except OSError:
        pass
    with sock:
        assert read_until_closed(sock, timeout=PROMPT) == b""


def straight_to_b(nodes, kind, data):
    sock = socket.create_connection(("127.0.0.1", nodes["b_ports"][kind]), timeout=PROMPT)
    sock.sendall(data)
    with sock:  # the old code held it 10 s, waiting for an HTTP head
        assert read_until_closed(sock, timeout=PROMPT) == b""


@pytest.mark.parametrize("data,named", [(HELLO, "got a TLS ClientHello"),
                                        (SSH, "got an SSH banner")], ids=["tls", "ssh"])
def test_non_http_bytes_on_a_ws_port_are_closed_at_once(nodes, data, named):
    straight_to_b(nodes, "ws", data)
    nodes["b"].wait_log("relay b-ws: ws listener closed 127.0.0.1:")
    nodes["b"].wait_log(named)


@pytest.mark.parametrize("label,b_says,a_says", [
    ("wss-to-ws", "a wss or mwss client (-tt wss/mwss) aimed at this ws listener",
     "a wss/mwss listener?"),
    ("mtcp-to-mwss", "an mtcp client (-tt mtcp) aimed at this mwss listener", None),
    ("ws-to-wss", "a ws client (-tt ws) or a browser aimed at this wss listener",
     "a wss or mwss listener expects TLS"),
    ("mwss-to-wss", "a mwss client (-tt mwss) aimed at this wss listener", "/mwss/"),
    ("ws-to-mtcp", "a ws client (-tt ws) or a browser aimed at this mtcp listener",
     "is ws://127.0.0.1:"),
    ("mtcp-to-raw", None, "an mtcp or mwss listener?"),
    ("raw-to-ws", "a raw client (-tt raw, or a program connecting directly) aimed at this ws",
     None),
])
def test_mismatched_tunnel_is_named_in_the_log(nodes, label, b_says, a_says):
    """Node A's client is closed promptly, and the side that can tell says what is wrong."""
    through_a(nodes, label, SSH if label == "raw-to-ws" else b"hello")
    target = nodes["b_ports"][label]
    if b_says:
        nodes["b"].wait_log(f"relay b-{label}: {WRONG[label][1]} listener closed")
        nodes["b"].wait_log(b_says)
    if a_says:
        nodes["a"].wait_log(a_says)
        line = next(l for l in nodes["a"].log.splitlines() if a_says in l and
                    f"127.0.0.1:{target}" in l)
        assert "WARN" in line  # the default level shows it


def test_mismatch_lines_are_rate_limited(nodes):
    """Thirty TLS clients at one ws listener: thirty closes, one line (per relay and cause)."""
    for _ in range(30):
        straight_to_b(nodes, "flood", HELLO)  # each one observed closed: all were handled
    nodes["b"].wait_log("relay b-flood: ws listener closed")
    lines = [l for l in nodes["b"].log.splitlines() if "relay b-flood: ws listener closed" in l]
    assert len(lines) == 1, lines
    straight_to_b(nodes, "flood", SSH)  # another cause gets its own line
    nodes["b"].wait_log("got an SSH banner")
    assert len([l for l in nodes["b"].log.splitlines() if "relay b-flood: ws listener closed" in l]) == 2
