"""The connection registry: live records, closed history, totals that survive closing."""

from ehco_gevent.connections import ConnectionRegistry


def test_totals_include_open_and_closed():
    reg = ConnectionRegistry(closed_keep=2)
    c1 = reg.open("lbl", "tcp", "127.0.0.1:1", "127.0.0.1:9", "lbl-127.0.0.1:9", 1.5)
    c2 = reg.open("lbl", "tcp", "127.0.0.1:2", "127.0.0.1:9", "lbl-127.0.0.1:9")
    c1.add_up(10)
    c1.add_down(20)
    c2.add_up(1)
    assert reg.totals() == {("lbl-127.0.0.1:9", "tcp"): [11, 20]}
    assert reg.count_active() == {("lbl-127.0.0.1:9", "tcp"): 2}
    reg.close(c1)
    reg.close(c1)  # closing twice counts once
    assert reg.totals() == {("lbl-127.0.0.1:9", "tcp"): [11, 20]}
    assert list(reg.active) == [c2.id] and list(reg.closed) == [c1]
    assert c1.ended_at is not None and not c1.active


def test_closed_history_is_bounded_but_totals_are_not():
    reg = ConnectionRegistry(closed_keep=2)
    for i in range(5):
        c = reg.open("r", "udp", f"c{i}", "h:1", "r-h:1")
        c.add_down(100)
        reg.close(c)
    assert len(reg.closed) == 2 and reg.closed[0].client_addr == "c4"  # newest first
    assert reg.totals()[("r-h:1", "udp")] == [0, 500]


def test_sync_drain_forgets_what_it_returned():
    reg = ConnectionRegistry()
    c = reg.open("r", "tcp", "c", "h:1", "r-h:1")
    reg.close(c)
    assert reg.drain_closed_for_sync() == [c]
    assert reg.drain_closed_for_sync() == []


def test_close_where_calls_closers():
    reg = ConnectionRegistry()
    hit = []
    a = reg.open("keep", "tcp", "c1", "h:1", "keep-h:1")
    b = reg.open("drop", "tcp", "c2", "h:1", "drop-h:1")
    a.closer = lambda: hit.append("a")
    b.closer = lambda: hit.append("b")
    assert reg.close_where(lambda c: c.relay_label == "drop") == 1
    assert hit == ["b"]
