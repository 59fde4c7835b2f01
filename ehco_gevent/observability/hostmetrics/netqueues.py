"""node_exporter's ``arp``, ``softnet``, ``udp_queues`` and ``conntrack`` collectors: the
kernel's neighbour table, per-CPU packet backlog, UDP socket queues and connection tracking
(/proc/net/arp, /proc/net/softnet_stat, /proc/net/udp{,6}, /proc/net/stat/nf_conntrack)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Iterator

from prometheus_client.core import Metric

from .source import HostPaths, counter, gauge, read

#: /proc/net/stat/nf_conntrack columns node_exporter reports, with its help texts
CONNTRACK_STATS = (
    ("found", "Number of searched entries which were successful."),
    ("invalid", "Number of packets seen which can not be tracked."),
    ("ignore", "Number of packets seen which are already connected to a conntrack entry."),
    ("insert", "Number of entries inserted into the list."),
    ("insert_failed", "Number of entries for which list insertion was attempted but failed."),
    ("drop", "Number of packets dropped due to conntrack failure."),
    ("early_drop", "Number of dropped conntrack entries to make room for new ones, if maximum "
                   "table size was reached."),
    ("search_restart", "Number of conntrack table lookups which had to be restarted due to "
                       "hashtable resizes."),
)


def parse_arp(text: str) -> dict[str, int]:
    """/proc/net/arp -> {device: number of entries}."""
    return dict(Counter(line.split()[5] for line in text.splitlines()[1:]
                        if len(line.split()) >= 6))


def parse_softnet(text: str) -> list[tuple[int, int, int]]:
    """/proc/net/softnet_stat (hex columns, one row per CPU) -> [(processed, dropped,
    times_squeezed)] in CPU order."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            rows.append((int(fields[0], 16), int(fields[1], 16), int(fields[2], 16)))
    return rows


def parse_udp_queues(text: str) -> tuple[int, int]:
    """/proc/net/udp{,6} -> (tx_queue, rx_queue) summed over the sockets (hex "tx:rx")."""
    tx = rx = 0
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 4 and ":" in fields[4]:
            t, _, r = fields[4].partition(":")
            tx += int(t, 16)
            rx += int(r, 16)
    return tx, rx


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack (a header, then hex values per CPU) -> sums per column."""
    lines = text.splitlines()
    names = lines[0].split() if lines else []
    totals: Counter[str] = Counter()
    for line in lines[1:]:
        for name, value in zip(names, line.split()):
            totals[name] += int(value, 16)
    return dict(totals)


def collect_arp(paths: HostPaths) -> Iterator[Metric]:
    yield gauge("node_arp_entries", "ARP entries by device",
                (([d], n) for d, n in sorted(parse_arp(read(f"{paths.proc}/net/arp")).items())),
                labels=["device"])


def collect_softnet(paths: HostPaths) -> Iterator[Metric]:
    rows = parse_softnet(read(f"{paths.proc}/net/softnet_stat"))
    for i, (name, doc) in enumerate((
            ("processed", "Number of processed packets"),
            ("dropped", "Number of dropped packets"),
            ("times_squeezed", "Number of times processing packets ran out of quota"))):
        yield counter(f"node_softnet_{name}", doc,
                      (([str(cpu)], row[i]) for cpu, row in enumerate(rows)), labels=["cpu"])


def collect_udp_queues(paths: HostPaths) -> Iterator[Metric]:
    rows = []
    for ip, name in (("v4", "udp"), ("v6", "udp6")):
        path = f"{paths.proc}/net/{name}"
        if ip == "v6" and not os.path.exists(path):
            continue
        tx, rx = parse_udp_queues(read(path))
        rows += [([ip, "tx"], tx), ([ip, "rx"], rx)]
    yield gauge("node_udp_queues", "Number of allocated memory in the kernel for UDP datagrams "
                "in bytes.", rows, labels=["ip", "queue"])


def collect_conntrack(paths: HostPaths) -> Iterator[Metric]:
    """Only where the nf_conntrack module is loaded; elsewhere the collector fails, as
    node_exporter's does."""
    base = f"{paths.proc}/sys/net/netfilter"
    yield gauge("node_nf_conntrack_entries", "Number of currently allocated flow entries for "
                "connection tracking.", value=float(read(f"{base}/nf_conntrack_count")))
    yield gauge("node_nf_conntrack_entries_limit", "Maximum size of connection tracking "
                "table.", value=float(read(f"{base}/nf_conntrack_max")))
    stats = parse_conntrack_stat(read(f"{paths.proc}/net/stat/nf_conntrack"))
    for name, doc in CONNTRACK_STATS:
        yield gauge(f"node_nf_conntrack_stat_{name}", doc, value=stats.get(name, 0))
