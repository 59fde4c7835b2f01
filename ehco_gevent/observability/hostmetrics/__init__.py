"""Host metrics under node_exporter 1.6's names, types, labels and units, read from /proc and
/sys when Prometheus scrapes, without running node_exporter.

Go ehco linked node_exporter's default collectors into its ``/metrics/``; its dashboard and the
panel's traffic sync read ``node_network_*``, ``node_cpu_seconds_total``, ``node_memory_*``,
``node_load*`` and ``node_filesystem_*`` from there, and operators' own panels and alerts read
the rest. One module per group of collectors (cpu, memory, network, netqueues, disk, system), each with
its parsers as plain functions over the text of its files; :class:`HostCollector` runs the
collectors by node_exporter's names and reports each one's duration and success in
``node_scrape_collector_duration_seconds`` / ``node_scrape_collector_success``, as
node_exporter does. A source that cannot be read (not Linux, a locked-down container, a kernel
without PSI) fails only its own collector; the scrape goes on.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Iterator

from prometheus_client.core import Metric

from ...guards.fairness import yield_turn
from . import cpu, disk, memory, netqueues, network, system
from .source import HostPaths, gauge

log = logging.getLogger("ehco.metrics")

__all__ = ["HostCollector", "HostPaths"]


class HostCollector:
    """node_exporter-named families for this host, collector by collector."""

    def __init__(self, proc: str = "/proc", sys: str = "/sys", paths: HostPaths | None = None):
        p = self.paths = paths or HostPaths(proc=proc, sys=sys)
        ticks = cpu.ticks_per_second()
        #: node_exporter's collector name -> a callable yielding its families
        self.collectors: dict[str, Callable[[], Iterable[Metric]]] = {
            "arp": lambda: netqueues.collect_arp(p),
            "conntrack": lambda: netqueues.collect_conntrack(p),
            "cpu": lambda: cpu.collect_cpu(p, ticks),
            "diskstats": lambda: disk.collect_diskstats(p),
            "entropy": lambda: system.collect_entropy(p),
            "filefd": lambda: memory.collect_filefd(p),
            "filesystem": disk.FilesystemCollector(p),
            "loadavg": lambda: cpu.collect_loadavg(p),
            "meminfo": lambda: memory.collect_meminfo(p),
            "netclass": lambda: network.collect_netclass(p),
            "netdev": lambda: network.collect_netdev(p),
            "netstat": lambda: network.collect_netstat(p),
            "os": lambda: system.collect_os(p),
            "pressure": lambda: cpu.collect_pressure(p),
            "selinux": lambda: system.collect_selinux(p),
            "softnet": lambda: netqueues.collect_softnet(p),
            "sockstat": lambda: network.collect_sockstat(p),
            "stat": lambda: cpu.collect_stat(p),
            "time": lambda: system.collect_time(p),
            "timex": lambda: system.collect_timex(p),
            "udp_queues": lambda: netqueues.collect_udp_queues(p),
            "uname": lambda: system.collect_uname(p),
            "vmstat": lambda: memory.collect_vmstat(p),
        }

    def collect(self) -> Iterator[Metric]:
        durations, successes = [], []
        for name, collector in self.collectors.items():
            started = time.perf_counter()
            try:
                families = list(collector())  # all or nothing: no half-read collector
                ok = 1.0
            except Exception as exc:  # one broken source must not fail the whole scrape
                log.debug("host metrics: collector %s failed: %s", name, exc)
                families, ok = [], 0.0
            durations.append(([name], time.perf_counter() - started))
            successes.append(([name], ok))
            yield from families
            yield_turn()  # one source's reading at a time: the relays get a turn between
        yield gauge("node_scrape_collector_duration_seconds",
                    "node_exporter: Duration of a collector scrape.", durations,
                    labels=["collector"])
        yield gauge("node_scrape_collector_success",
                    "node_exporter: Whether a collector succeeded.", successes,
                    labels=["collector"])
        yield from system.collect_build_info()
