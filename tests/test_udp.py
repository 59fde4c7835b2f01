"""UDP sessions in-process on real loopback sockets: round robin per client, idle expiry."""

import gevent
from gevent import socket

from ehco_gevent.config import RelayConfig
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.udp import UDPRelay


def udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def echo(sock, tag):
    while True:
        data, addr = sock.recvfrom(65535)
        sock.sendto(tag + data, addr)


def test_round_robin_per_client_and_idle_expiry():
    a, b = udp_socket(), udp_socket()
    servers = [gevent.spawn(echo, a, b"A:"), gevent.spawn(echo, b, b"B:")]
    listen = udp_socket()
    cfg = RelayConfig(listen="127.0.0.1:0", label="u", udp_remotes=(
        f"127.0.0.1:{a.getsockname()[1]}", f"127.0.0.1:{b.getsockname()[1]}"))
    registry = ConnectionRegistry()
    relay = UDPRelay(cfg, listen, registry, idle_timeout=0.5)
    relay.start()
    clients = [udp_socket() for _ in range(3)]
    try:
        answers = []
        for c in clients:
            for i in range(2):  # a client keeps its remote for the whole session
                c.sendto(b"hi%d" % i, listen.getsockname())
                data, _ = c.recvfrom(100)
                answers.append(data)
        assert answers == [b"A:hi0", b"A:hi1", b"B:hi0", b"B:hi1", b"A:hi0", b"A:hi1"]
        assert len(registry.active) == 3
        gevent.sleep(1.2)  # idle for longer than the timeout
        assert registry.active == {}
        closed = list(registry.closed)
        assert len(closed) == 3 and all(c.up_bytes == 6 and c.down_bytes == 10 for c in closed)
        assert relay.sessions == {}
        # a new datagram after expiry opens a new session (round robin moves on to B)
        clients[0].sendto(b"again", listen.getsockname())
        assert clients[0].recvfrom(100)[0] == b"B:again"
    finally:
        relay.stop_listening()
        relay.close_sessions()
        gevent.killall(servers)
        for s in clients + [a, b]:
            s.close()
