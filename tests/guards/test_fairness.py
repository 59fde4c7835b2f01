"""A read loop that spends a Budget lets other greenlets run while its socket stays full, those
waiting for I/O included."""

import gevent

from ehco_gevent.guards.fairness import Budget, yield_turn
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


def parked_reader():
    """A greenlet waiting on a socket that is then made readable, and what it saw."""
    client, server = gevent_tcp_pair()
    seen = []
    reader = gevent.spawn(lambda: seen.append(server.recv(10)))
    gevent.sleep(0.01)  # parked in the hub, waiting for its socket
    client.sendall(b"ready")
    return reader, seen, (client, server)


def test_a_turn_lets_a_connection_whose_socket_is_ready_run():
    """gevent.sleep(0) would not: it runs the greenlets already scheduled and comes back
    before the loop polls for I/O, so a greedy loop yielding with it starves every socket."""
    reader, seen, socks = parked_reader()
    rounds_before_reader = 0
    for _ in range(100):  # a greedy loop: no I/O of its own, a turn after each slice of work
        if seen:
            break
        rounds_before_reader += 1
        yield_turn()
    assert seen == [b"ready"] and rounds_before_reader == 1  # one turn was enough
    reader.join()
    for sock in socks:
        sock.close()


def test_a_budget_spent_without_blocking_lets_a_ready_socket_be_read():
    reader, seen, socks = parked_reader()
    budget = Budget(8)
    for _ in range(8):  # exactly one budget: one turn
        budget.spend()
    assert seen == [b"ready"]
    reader.join()
    for sock in socks:
        sock.close()
