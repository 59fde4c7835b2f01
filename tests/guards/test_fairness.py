"""A read loop that spends a Budget lets other greenlets run while its socket stays full."""

import gevent

from ehco_gevent.guards.fairness import Budget
from tests.support import gevent_tcp_pair


def test_a_flooded_loop_yields_to_others():
    client, server = gevent_tcp_pair()
    client.sendall(b"x" * 1_000_000)  # the reader's socket never runs dry below
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0) for _ in range(1000)])
    budget = Budget(8)
    try:
        for _ in range(200):  # 200 reads that never block
            assert server.recv(1000)
            budget.spend()
        assert len(ticks) >= 200 // 8 - 1  # the ticker ran at every yield
    finally:
        ticker.kill()
        client.close()
        server.close()
