"""The allocator setting every ehco process makes at start: large temporaries come from the
heap, not from a fresh mapping each (which page-faults on every 4 KiB written)."""

import subprocess
import sys

import pytest

ROUNDS = 200
#: the tunnel's pattern: two large buffers made, written and freed, again and again
PATTERN = f"""
import resource, sys
from ehco_gevent.app import keep_large_buffers_in_heap
if sys.argv[1] == "tuned":
    keep_large_buffers_in_heap()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range({ROUNDS}):
    a = bytearray(300_000)
    b = bytearray(300_000)
    del a, b
print(faults() - before)
"""


def faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return int(out) / ROUNDS


def test_large_temporaries_stop_page_faulting():
    default = faults_per_round("default")
    if default < 20:
        pytest.skip(f"this C library's malloc does not map large buffers afresh "
                    f"({default:.1f} faults per round without the setting)")
    tuned = faults_per_round("tuned")
    # each round writes ~150 pages: mapped afresh they fault every time, from the heap once
    assert tuned < default / 10, (tuned, default)
