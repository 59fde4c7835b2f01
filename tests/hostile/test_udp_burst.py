"""UDP under bursts (issue 10): a relay with a large receive buffer loses under 1 % of bursty
32 KB datagrams, and a burst of new client addresses gets one session each."""

from __future__ import annotations

import socket
import threading
import time

from tests.support import LOOPBACK, UDPEchoServer, free_tcp_udp_port, write_config
from tests.hostile.slow import LONG, big_receive_buffer, size


def udp_relay(ehco, tmp_path, echo_port: int, **top):
    port = free_tcp_udp_port()
    cfg = {"enable_ping": False, **top, "relay_configs": [
        {"listen": f"{LOOPBACK}:{port}", "label": "u", "udp_remotes": [f"{LOOPBACK}:{echo_port}"]}]}
    proc = ehco("-c", write_config(tmp_path, cfg))
    proc.wait_log("udp listening")
    return proc, port


def test_bursts_of_large_datagrams_lose_under_one_percent(ehco, tmp_path):
    seconds = 5 if LONG else 1
    echo = UDPEchoServer()
    big_receive_buffer(echo.sock)
    proc, port = udp_relay(ehco, tmp_path, echo.port)
    assert "receive buffer" in proc.log and "4194304 asked" in proc.log
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    big_receive_buffer(client)
    client.bind((LOOPBACK, 0))
    payload = b"\xa5" * 32 * 1024
    received = [0]

    def reader() -> None:
        client.settimeout(3)
        try:
            while True:
                assert client.recv(65535) == payload
                received[0] += 1
        except socket.timeout:
            pass

    try:
        client.sendto(b"x" * 10, (LOOPBACK, port))  # opens the session
        client.settimeout(10)
        client.recv(100)
        t = threading.Thread(target=reader)
        t.start()
        sent = 0
        start = time.monotonic()
        for burst in range(100 * seconds):  # 100 bursts a second of 10 x 32 KB
            for _ in range(10):
                client.sendto(payload, (LOOPBACK, port))
                sent += 1
            pause = start + (burst + 1) / 100 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        t.join()
        assert received[0] >= sent * 0.99, f"{sent - received[0]} of {sent} lost"
    finally:
        client.close()
        echo.close()


def test_burst_of_new_clients_gets_a_session_each(ehco, tmp_path):
    n = size(2000, 2000)
    echo = UDPEchoServer()
    big_receive_buffer(echo.sock)
    proc, port = udp_relay(ehco, tmp_path, echo.port)
    clients = []
    try:
        for _ in range(n):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.bind((LOOPBACK, 0))
            clients.append(c)
        for i, c in enumerate(clients):  # all at once: no waiting for answers in between
            c.sendto(b"hello %d" % i, (LOOPBACK, port))
        answered = 0
        for i, c in enumerate(clients):
            c.settimeout(10)
            try:
                answered += c.recv(100) == b"hello %d" % i
            except socket.timeout:
                pass
        assert answered == n
        assert len(echo.clients) == n  # one upstream socket (session) per client address
    finally:
        for c in clients:
            c.close()
        echo.close()
