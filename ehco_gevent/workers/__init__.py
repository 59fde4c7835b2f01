"""``--workers N``: one supervisor process and N relay worker processes on one node.

With N > 1 the process that reads the config becomes a supervisor: it serves the web server,
ping, relay sync, subscriptions and the embedded proxy server, and runs no relay itself. Each
worker is a separate process with its own gevent hub running the same relay code (server.py,
relay.py, udp.py) on listeners bound with ``SO_REUSEPORT``, so the kernel spreads the accepted
TCP connections (and, by the 4-tuple hash, each UDP client's datagrams) over the workers.

- :mod:`.channel`: the length-prefixed messages between the two, as plain functions, and the
  request/reply peer over one socketpair per worker;
- :mod:`.worker`: the worker process (``python -m ehco_gevent.workers``);
- :mod:`.supervisor`: spawning, restarting and reloading the workers;
- :mod:`.cluster`: the workers read as one node (counters summed, connections joined, remote
  state merged) for the metrics and the web pages.

This module imports nothing heavy: the config and the command line use :func:`parse_workers`.
"""

from __future__ import annotations

import os

AUTO = "auto"


def parse_workers(value) -> int | str:
    """A ``workers`` value as given in a config, flag or ``EHCO_WORKERS``: a whole number
    from 1, or ``"auto"``. Raises ValueError with a short reason."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if not text.isdigit():
            raise ValueError(f"{value!r} is neither a number of processes nor \"auto\"")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is neither a number of processes nor \"auto\"")
    if value < 1:
        raise ValueError(f"{value} is below 1")
    return value


def worker_count(value: int | str) -> int:
    """How many relay processes ``value`` means: ``auto`` is one per core this process may
    run on (its CPU affinity, which taskset, cgroups cpusets and container limits narrow)."""
    if value == AUTO:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)
    return int(value)
