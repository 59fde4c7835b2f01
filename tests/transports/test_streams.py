"""Pooled read buffers (the process-wide pool, the buffers lent out as views) and send_all."""

import gc
import hashlib
import os

import gevent

from ehco_gevent.transports.streams import BufferPool, LentBuffers, send_all

from ..support import gevent_tcp_pair


def test_pool_reuses_buffers_by_size_and_keeps_a_bounded_number():
    pool = BufferPool(keep=2)
    bufs = [pool.take(1024) for _ in range(3)]
    for buf in bufs:
        pool.give(buf)
    assert pool.take(1024) is bufs[1] and pool.take(1024) is bufs[0]
    third = pool.take(1024)
    assert all(third is not buf for buf in bufs)  # the third was not kept
    assert len(pool.take(4096)) == 4096


def test_a_lent_buffer_goes_back_only_once_no_view_is_left():
    pool = BufferPool()
    lent = LentBuffers(pool, cap=4)
    buf = pool.take(1024)
    view = memoryview(buf)[10:20]
    assert lent.viewed(buf)
    lent.lend(buf)
    lent_id = id(buf)
    del buf
    lent.settle()
    assert len(lent) == 1 and id(pool.take(1024)) != lent_id  # still out: a view lives
    del view
    gc.collect()
    lent.settle()
    assert len(lent) == 0 and id(pool.take(1024)) == lent_id


def test_no_view_means_not_viewed_and_the_cap_makes_it_full():
    pool = BufferPool()
    lent = LentBuffers(pool, cap=2)
    buf = bytearray(16)
    with memoryview(buf) as view:
        view[:2] = b"ab"
    assert not lent.viewed(buf)
    views = []
    for _ in range(2):
        other = bytearray(16)
        views.append(memoryview(other)[:1])
        lent.lend(other)
    assert lent.full
    lent.forget()  # the owner ends: nothing more is tracked, the viewed ones die with views
    assert len(lent) == 0 and not lent.full
    assert bytes(views[0]) == b"\x00"


def test_send_all_sends_everything_when_the_kernel_takes_it_in_parts():
    """One send when it fits; the rest of a partial write still goes out, in order."""
    a, b = gevent_tcp_pair()
    data = os.urandom(8 * 1024 * 1024)  # far more than the socket buffers hold: partial sends

    def drain():
        got = hashlib.sha256()
        while chunk := b.recv(65536):
            got.update(chunk)
        return got.hexdigest()

    reader = gevent.spawn(drain)
    send_all(a, data)
    send_all(a, b"")
    a.close()
    assert reader.get(timeout=30) == hashlib.sha256(data).hexdigest()
    b.close()
