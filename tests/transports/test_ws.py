"""ws, wss and mwss end to end: chains of two real ehco processes, raw -> (tunnel) -> raw.

Every tunnel kind runs in 1.1.4's raw mode and in frames mode, started from flags and from config
files. Processes are module-scoped: one set of chains serves every test here, and the bad-input
tests check that those same processes still relay afterwards.
"""

import os
import signal
import socket
import ssl
import struct
import threading
import time

import pytest

from ehco_gevent.transports import smux
from ehco_gevent.transports import websocket as wsproto

from ..support import free_port as support_free_port
from ..support import (EchoServer, EhcoProcess, QuittingEchoServer, check_server_closes_first, parallel_roundtrips,
                       read_until_closed, roundtrip, sha, wait_port, write_config)

KINDS = [("ws", False), ("ws", True), ("wss", False), ("wss", True), ("mwss", False), ("mwss", True)]
IDS = [f"{k}-{'frames' if f else 'raw'}" for k, f in KINDS]
GREETING = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
LATE_ANSWER = os.urandom(1024 * 1024)


class AnswerAfterEOF:
    """Reads the whole request, then answers sha256(request) + 1 MiB (like `nc -q` scripts)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            got = bytearray()
            while chunk := conn.recv(65536):
                got += chunk
            conn.sendall(sha(bytes(got)).encode() + LATE_ANSWER)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def scheme(kind):
    return "ws" if kind == "ws" else "wss"


@pytest.fixture(scope="module")
def targets():
    servers = {"echo": EchoServer(), "greet": EchoServer(greeting=GREETING), "late": AnswerAfterEOF(),
               "quit": QuittingEchoServer(greeting=GREETING)}
    yield servers
    for s in servers.values():
        s.close()


@pytest.fixture(scope="module")
def chains(targets, tmp_path_factory):
    """{(mode, kind, frames, target): (entry port on node A, tunnel port on node B)}.

    mode "cli": one pair of processes per tunnel kind, from flags, to the echo server.
    mode "config": one pair of processes for all, from config files, to every target.
    mode "workers": as "config", to the echo server, both nodes with ``workers: 2`` (a
    supervisor and two relay worker processes each).
    """
    tmp = tmp_path_factory.mktemp("ws-chains")
    procs, out, ports = [], {}, []
    taken = set()

    def free_port():  # 60 listeners: never hand out one port twice
        while (port := support_free_port()) in taken:
            pass
        taken.add(port)
        return port

    for kind, frames in KINDS:
        a, b = free_port(), free_port()
        extra = ["--ws_frames", "true"] if frames else []
        procs.append(EhcoProcess(["-l", f"127.0.0.1:{b}", "-lt", kind, "-r",
                                  f"127.0.0.1:{targets['echo'].port}", *extra], tmp))
        procs.append(EhcoProcess(["-l", f"127.0.0.1:{a}", "-tt", kind, "-r",
                                  f"{scheme(kind)}://127.0.0.1:{b}", *extra], tmp))
        out[("cli", kind, frames, "echo")] = (a, b)
        ports += [a, b]
    for mode, workers, names in (("config", 1, list(targets)), ("workers", 2, ["echo"])):
        relays_a, relays_b = [], []
        for kind, frames in KINDS:
            for target in names:
                a, b = free_port(), free_port()
                relays_b.append({"listen": f"127.0.0.1:{b}", "listen_type": kind,
                                 "transport_type": "raw", "ws_frames": frames,
                                 "tcp_remotes": [f"127.0.0.1:{targets[target].port}"],
                                 "label": f"b-{kind}-{frames}-{target}"})
                relays_a.append({"listen": f"127.0.0.1:{a}", "listen_type": "raw",
                                 "transport_type": kind, "ws_frames": frames,
                                 "tcp_remotes": [f"{scheme(kind)}://127.0.0.1:{b}"],
                                 "label": f"a-{kind}-{frames}-{target}"})
                out[(mode, kind, frames, target)] = (a, b)
                ports += [a, b]
        for node, relays in (("b", relays_b), ("a", relays_a)):
            cfg = write_config(tmp, {"workers": workers, "relay_configs": relays},
                               f"{mode}-{node}.json")
            procs.append(EhcoProcess(["-c", str(cfg)], tmp))
    try:
        deadline = time.monotonic() + 90  # 16 processes (20 with the workers) start at once
        for port in ports:
            while True:
                dead = [p for p in procs if p.proc.poll() is not None]
                assert not dead, f"ehco exited at start:\n{dead[0].log}"
                try:
                    wait_port(port, timeout=0.5)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"port {port} not listening"
        yield out
    finally:
        for proc in procs:  # all at once, then wait for each
            if proc.proc.poll() is None:
                proc.signal(signal.SIGTERM)
        for proc in procs:
            proc.stop()


CHAIN_PARAMS = [pytest.param((mode, k, f), id=f"{mode}-{i}")
                for mode in ("cli", "config", "workers") for (k, f), i in zip(KINDS, IDS)]


#: 16 MiB once per tunnel kind (the cli chains): the config chains run the same data path
PAYLOAD_PARAMS = [pytest.param(p.values[0], size, id=f"{p.id}-{label}")
                  for p in CHAIN_PARAMS
                  for size, label in ((1, "1B"), (64 * 1024, "64KiB"), (16 * 1024 * 1024, "16MiB"))
                  if size <= 64 * 1024 or p.values[0][0] == "cli"]


@pytest.mark.parametrize("which,size", PAYLOAD_PARAMS)
def test_payload_comes_back_identical(chains, which, size):
    a, _ = chains[(*which, "echo")]
    data = os.urandom(size)
    assert sha(roundtrip(a, data)) == sha(data)


@pytest.mark.parametrize("which", CHAIN_PARAMS)
def test_twenty_parallel_connections(chains, which):
    a, _ = chains[(*which, "echo")]
    payloads = [os.urandom(50_000 + 997 * i) for i in range(20)]
    assert all(parallel_roundtrips(a, payloads))  # all open at once: mwss uses several sessions


@pytest.mark.parametrize("kind,frames", KINDS, ids=IDS)
def test_server_first_greeting_arrives_first(chains, kind, frames):
    a, _ = chains[("config", kind, frames, "greet")]
    with socket.create_connection(("127.0.0.1", a), timeout=10) as conn:
        got = b""
        while len(got) < len(GREETING):  # nothing sent yet: the greeting must come by itself
            chunk = conn.recv(100)
            assert chunk, "closed before the greeting"
            got += chunk
        assert got == GREETING
    assert roundtrip(a, b"after the greeting", greeting=GREETING) == b"after the greeting"


@pytest.mark.parametrize("kind,frames", KINDS, ids=IDS)
def test_server_closes_first_and_still_hears_the_client(chains, targets, kind, frames):
    """The final server ends the conversation first (goodbye + shutdown): the client gets the
    goodbye and EOF through the tunnel, and what it says after that still reaches the server."""
    a, _ = chains[("config", kind, frames, "quit")]
    check_server_closes_first(a, targets["quit"], GREETING)


@pytest.mark.parametrize("kind,frames", KINDS, ids=IDS)
def test_half_closed_client_gets_the_whole_answer(chains, kind, frames):
    a, _ = chains[("config", kind, frames, "late")]
    request = os.urandom(300_000)
    answer = roundtrip(a, request)  # sends, shuts down its write side, reads to EOF
    assert answer == sha(request).encode() + LATE_ANSWER


# -- bad input on the tunnel ports -------------------------------------------------------------
def tunnel(chains, kind, frames=False):
    return chains[("cli", kind, frames, "echo")]


def connect(port, tls):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)
    return sock


def still_serves(chains, kind, frames=False):
    a, _ = tunnel(chains, kind, frames)
    data = os.urandom(100_000)
    assert sha(roundtrip(a, data, timeout=15)) == sha(data)


@pytest.mark.parametrize("kind", ["ws", "wss", "mwss"])
def test_health_text_on_get_root(chains, kind):
    _, b = tunnel(chains, kind)
    with connect(b, kind != "ws") as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = read_until_closed(sock).split(b"\r\n\r\n", 1)
        ip, port = sock.getsockname()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == f"access from remote ip: {ip}:{port} \n".encode()
    still_serves(chains, kind)


@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_head_root_gets_the_head_only(chains, kind):
    _, b = tunnel(chains, kind)
    with connect(b, kind != "ws") as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: " in head and body == b""


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.1", b"GET /nope HTTP/1.1"])
def test_tls_answers_end_with_close_notify(chains, request_line):
    """curl and browsers report a TLS stream cut without close_notify as an error."""
    _, b = tunnel(chains, "wss")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", b), timeout=10)
    with ctx.wrap_socket(raw, suppress_ragged_eofs=False) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # SSLEOFError here if the end was not clean
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 ")


@pytest.mark.parametrize("kind", ["ws", "wss", "mwss"])
def test_wrong_path_is_404(chains, kind):
    _, b = tunnel(chains, kind)
    with connect(b, kind != "ws") as sock:
        sock.sendall(wsproto.build_request("x", "/nope/", wsproto.new_key()))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 404 ") and answer.endswith(b"404 page not found\n")
    still_serves(chains, kind)


@pytest.mark.parametrize("kind", ["ws", "wss", "mwss"])
def test_plain_get_on_the_upgrade_path_is_400(chains, kind):
    _, b = tunnel(chains, kind)
    with connect(b, kind != "ws") as sock:
        sock.sendall(f"GET /{kind}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    still_serves(chains, kind)


@pytest.mark.parametrize("kind", ["ws", "wss", "mwss"])
def test_invalid_websocket_key_is_400(chains, kind):
    """As gobwas/ws (Go ehco's server): a key that is not base64 of 16 bytes gets no 101."""
    _, b = tunnel(chains, kind)
    with connect(b, kind != "ws") as sock:
        sock.sendall(wsproto.build_request("x", f"/{kind}/", "not-a-key"))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Sec-WebSocket-Key" in answer
    still_serves(chains, kind)


@pytest.mark.parametrize("kind", ["ws", "wss", "mwss"])
def test_wrong_websocket_version_is_426(chains, kind):
    _, b = tunnel(chains, kind)
    request = wsproto.build_request("x", f"/{kind}/", wsproto.new_key())
    with connect(b, kind != "ws") as sock:
        sock.sendall(request.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 426 ") and b"\r\nSec-WebSocket-Version: 13\r\n" in answer
    still_serves(chains, kind)


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02 not http at all\r\n\r\n",
                                     b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
                                     os.urandom(40_000).replace(b"\r\n\r\n", b"")],
                         ids=["binary", "ssh", "endless-head"])
@pytest.mark.parametrize("frames", [False, True], ids=["raw", "frames"])
def test_garbage_instead_of_http_is_closed(chains, garbage, frames):
    _, b = tunnel(chains, "ws", frames)
    with connect(b, False) as sock:
        try:
            sock.sendall(garbage)
        except (BrokenPipeError, ConnectionResetError):
            pass
        # no answer, just closed: at once, well before the 10 s handshake deadline
        assert read_until_closed(sock, timeout=5) == b""
    still_serves(chains, "ws", frames)


@pytest.mark.parametrize("kind", ["wss", "mwss"])
def test_garbage_tls_client_hello_is_closed(chains, kind):
    _, b = tunnel(chains, kind)
    hello = b"\x16\x03\x01\x00\x40" + os.urandom(0x40)  # a handshake record full of noise
    for junk in (hello, b"GET / HTTP/1.1\r\n\r\n"):  # and plain HTTP on a TLS port
        with socket.create_connection(("127.0.0.1", b), timeout=10) as sock:
            sock.sendall(junk)
            answer = read_until_closed(sock)
        assert b"HTTP" not in answer  # at most a TLS alert, then closed
    still_serves(chains, kind)


@pytest.mark.parametrize("kind", ["ws", "wss", "mwss"])
def test_silent_clients_do_not_block_others(chains, kind):
    """Connected, sending nothing; meanwhile the listener serves everyone else."""
    _, b = tunnel(chains, kind)
    silent = [socket.create_connection(("127.0.0.1", b), timeout=10) for _ in range(20)]
    try:
        still_serves(chains, kind)
    finally:
        for sock in silent:
            sock.close()


def test_mismatched_tunnel_kind_closes_the_client_promptly(chains, tmp_path):
    """A wss node pointed at an mwss listener gets a 404, not a 101: its client is closed."""
    _, b = tunnel(chains, "mwss")
    a = support_free_port()
    node = EhcoProcess(["-l", f"127.0.0.1:{a}", "-tt", "wss", "-r", f"wss://127.0.0.1:{b}"], tmp_path)
    try:
        wait_port(a)
        with socket.create_connection(("127.0.0.1", a), timeout=10) as sock:
            sock.sendall(b"hello")
            assert read_until_closed(sock) == b""
        node.wait_log("upgrade refused")
    finally:
        node.stop()


def upgraded(port, path, frames=False):
    """A TLS + WebSocket-upgraded socket to an mwss listener (for hand-made smux frames)."""
    sock = connect(port, True)
    key = wsproto.new_key()
    sock.sendall(wsproto.build_request(f"127.0.0.1:{port}", path, key))
    data = b""
    while (split := wsproto.split_head(data)) is None:
        chunk = sock.recv(4096)
        assert chunk, "closed during the upgrade"
        data += chunk
    wsproto.check_response(split[0], key)
    assert split[1] == b""
    return sock


def test_mwss_unknown_smux_version_closes_the_session(chains):
    _, b = tunnel(chains, "mwss")
    with upgraded(b, "/mwss/") as sock:
        sock.sendall(smux.encode_frame(smux.SYN, 3) + struct.pack("<BBHI", 2, smux.PSH, 0, 3))
        read_until_closed(sock)  # the session (and its connection) end: EOF or reset
    still_serves(chains, "mwss")


def test_mwss_unknown_smux_command_closes_the_session(chains):
    _, b = tunnel(chains, "mwss")
    with upgraded(b, "/mwss/") as sock:
        sock.sendall(struct.pack("<BBHI", 1, 9, 0, 3))
        read_until_closed(sock)
    still_serves(chains, "mwss")


def test_mwss_smux_frame_longer_than_its_data_then_close(chains):
    _, b = tunnel(chains, "mwss")
    with upgraded(b, "/mwss/") as sock:
        sock.sendall(smux.encode_frame(smux.SYN, 3) + struct.pack("<BBHI", 1, smux.PSH, 1000, 3)
                     + b"only ten b")
        sock.settimeout(10)
        try:  # close_notify in the middle of the frame; unwrap waits for the server's answer
            raw = sock.unwrap()
        except TimeoutError:
            pytest.fail("no answer to our close_notify: the session was not closed")
        except (ssl.SSLError, OSError):
            pass  # the server dropped the session without a close_notify of its own: a reset
        else:  # it answered with its own close_notify; then the TCP connection ends too
            assert read_until_closed(raw) == b""
    still_serves(chains, "mwss")


def test_mwss_ten_thousand_syns_are_bounded(chains, targets):
    """1024 streams at most per session; every SYN beyond gets a FIN at once, nothing queues."""
    _, b = tunnel(chains, "mwss")
    with upgraded(b, "/mwss/") as sock:
        sock.sendall(b"".join(smux.encode_frame(smux.SYN, 3 + 2 * i) for i in range(10_000)))
        got = bytearray()
        decoder = smux.FrameDecoder()
        fins = set()
        sock.settimeout(20)
        while len(fins) < 10_000 - smux.MAX_STREAMS:
            chunk = sock.recv(65536)
            assert chunk, "session closed"
            got += chunk
            fins.update(sid for cmd, sid, _ in decoder.feed(chunk) if cmd == smux.FIN)
        assert min(fins) == 3 + 2 * smux.MAX_STREAMS  # the first 1024 were accepted
    still_serves(chains, "mwss")


def test_frames_mode_peer_speaks_rfc_6455(chains):
    """A hand-written standard client (masked frames, ping, close) against a frames-mode ws
    listener: the bytes come back in binary frames, the ping gets its pong."""
    _, b = tunnel(chains, "ws", True)
    with connect(b, False) as sock:
        key = wsproto.new_key()
        sock.sendall(wsproto.build_request(f"127.0.0.1:{b}", "/ws/", key)
                     + wsproto.encode_frame(wsproto.OP_PING, b"are you there", masked=True)
                     + wsproto.encode_frame(wsproto.OP_BINARY, b"hello ", masked=True)
                     + wsproto.encode_frame(wsproto.OP_BINARY, b"frames", masked=True)
                     + wsproto.encode_frame(wsproto.OP_BINARY, b"", masked=True))  # end of writing
        data = read_until_closed(sock)
    head, rest = wsproto.split_head(data)
    wsproto.check_response(head, key)
    frames = wsproto.FrameDecoder(from_client=False).feed(rest)
    assert frames[0] == (True, wsproto.OP_PONG, b"are you there")
    payload = b"".join(p for fin, op, p in frames if op == wsproto.OP_BINARY)
    assert payload == b"hello frames"
    assert frames[-2] == (True, wsproto.OP_BINARY, b"")  # the echo's end of writing
    assert frames[-1][1] == wsproto.OP_CLOSE and frames[-1][2][:2] == struct.pack("!H", 1000)



@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_raw_mode_first_bytes_in_the_request_packet_are_relayed(chains, kind):
    """An ehco-1.1.4-style client may write its first bytes right behind the upgrade request."""
    _, b = tunnel(chains, kind)
    with connect(b, kind == "wss") as sock:
        key = wsproto.new_key()
        data = os.urandom(70_000)
        sock.sendall(wsproto.build_request(f"127.0.0.1:{b}", f"/{kind}/", key) + data)
        got = b""
        while (split := wsproto.split_head(got)) is None:
            got += sock.recv(65536)
        wsproto.check_response(split[0], key)
        echoed = bytearray(split[1])
        while len(echoed) < len(data):
            chunk = sock.recv(65536)
            assert chunk
            echoed += chunk
    assert bytes(echoed) == data


def test_silent_clients_are_closed_at_the_handshake_deadline(tmp_path):
    """ws_handshake_timeout set small: a client that connects and says nothing is closed
    without an answer, and the node logs that the handshake timed out."""
    ports = {kind: support_free_port() for kind in ("ws", "wss", "mwss")}
    cfg = {"log_level": "debug", "ws_handshake_timeout": 1, "relay_configs": [
        {"listen": f"127.0.0.1:{port}", "listen_type": kind, "label": kind,
         "tcp_remotes": ["127.0.0.1:9"]} for kind, port in ports.items()]}
    node = EhcoProcess(["-c", str(write_config(tmp_path, cfg))], tmp_path)
    try:
        for kind, port in ports.items():
            wait_port(port)
            with socket.create_connection(("127.0.0.1", port)) as sock:
                client = "127.0.0.1:%d" % sock.getsockname()[1]
                assert read_until_closed(sock, timeout=30) == b"", kind  # closed, no answer
            node.wait_log(f"handshake from {client} failed: upgrade handshake not complete "
                          "within 1 s")
    finally:
        node.stop()
