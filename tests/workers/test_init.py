"""How a ``workers`` value is read and what ``auto`` means."""

import os

import pytest

from ehco_gevent.workers import parse_workers, worker_count


@pytest.mark.parametrize("value,want", [(1, 1), (8, 8), ("2", 2), (" auto ", "auto")])
def test_accepted_values(value, want):
    assert parse_workers(value) == want


@pytest.mark.parametrize("value", [0, -1, "0", "two", "", None, 2.0, True, [2]])
def test_rejected_values(value):
    with pytest.raises(ValueError):
        parse_workers(value)


def test_auto_is_one_per_core_this_process_may_use():
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count(3) == 3
