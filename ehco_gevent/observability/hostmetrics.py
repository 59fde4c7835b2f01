"""Host metrics under node_exporter's names, read from /proc at scrape time.

ehco linked node_exporter in and its Grafana dashboard (and the panel's traffic sync) read
``node_network_*``, ``node_cpu_seconds_total``, ``node_memory_*``, ``node_load*`` and
``node_filesystem_*`` from the relay's own ``/metrics/``. We serve the same names and labels for
that basic set without running node_exporter: the parsers below are plain functions over the
text of the /proc files (tested directly), and :class:`HostCollector` turns them into metric
families when Prometheus scrapes.

Not every node_exporter metric is here: only the ones the dashboards and ehco's sync use, plus
``node_uname_info`` (the dashboard's instance picker) and a few neighbours of those.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterator

import gevent
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("ehco.metrics")

#: node_exporter's cpu modes from /proc/stat, in column order (guest columns are left out:
#: the kernel already counts guest time inside user and nice)
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
#: node_exporter's defaults for which mounts to skip (pseudo and container-internal ones);
#: overlay is kept, because a relay in a container has its root on overlay
SKIP_FSTYPES = re.compile(
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|"
    r"iso9660|mqueue|nsfs|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|"
    r"tracefs)$")
SKIP_MOUNTPOINTS = re.compile(
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)")
#: a statvfs on a hung network mount must not hold up the scrape
STATFS_TIMEOUT = 1.0


# -- parsers: text of a /proc file in, numbers out ---------------------------------------------
def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev -> {device: {receive_bytes, receive_packets, ..., transmit_bytes, ...}}."""
    lines = text.splitlines()
    if len(lines) < 2:
        return {}
    # the second header line names the columns of each half: "bytes packets errs drop ..."
    _, rx_head, tx_head = lines[1].split("|")
    names = ([f"receive_{n}" for n in rx_head.split()] + [f"transmit_{n}" for n in tx_head.split()])
    out: dict[str, dict[str, int]] = {}
    for line in lines[2:]:
        device, sep, rest = line.partition(":")
        if not sep:
            continue
        values = rest.split()
        out[device.strip()] = {name: int(v) for name, v in zip(names, values)}
    return out


def parse_proc_stat(text: str, ticks_per_second: float) -> dict[str, dict[str, float]]:
    """/proc/stat -> {cpu number as a string: {mode: seconds}} for each ``cpuN`` line."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        fields = line.split()
        cpu = fields[0][3:]
        out[cpu] = {mode: int(v) / ticks_per_second for mode, v in zip(CPU_MODES, fields[1:])}
    return out


def parse_meminfo(text: str) -> dict[str, float]:
    """/proc/meminfo -> {node_exporter's name part: value}: ``kB`` values become bytes with a
    ``_bytes`` suffix (``MemTotal_bytes``), counts keep their name (``HugePages_Total``), and
    ``Active(anon)`` becomes ``Active_anon_bytes``, as node_exporter names them."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        value = float(parts[0])
        key = re.sub(r"[()]", "_", key.strip()).rstrip("_")
        if len(parts) > 1 and parts[1] == "kB":
            value *= 1024
            key += "_bytes"
        out[key] = value
    return out


def _unescape_mount(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[tuple[str, str, str]]:
    """/proc/mounts -> [(device, mountpoint, fstype)] without pseudo filesystems, each
    mountpoint once (the last mount on a path is the visible one)."""
    seen: dict[str, tuple[str, str, str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mountpoint, fstype = (_unescape_mount(f) for f in fields[:3])
        if SKIP_FSTYPES.match(fstype) or SKIP_MOUNTPOINTS.match(mountpoint):
            continue
        seen[mountpoint] = (device, mountpoint, fstype)
    return list(seen.values())


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


# -- the collector -----------------------------------------------------------------------------
class HostCollector:
    """node_exporter-named families for this host; a /proc file that cannot be read (not
    Linux, a locked-down container) leaves its families out instead of failing the scrape."""

    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        try:
            self.ticks = float(os.sysconf("SC_CLK_TCK"))
        except (ValueError, OSError, AttributeError):
            self.ticks = 100.0
        #: mountpoint -> statvfs still running in a thread (a hung mount is skipped until it
        #: returns, so hung mounts cannot pile up threads)
        self._stuck: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        for part in (self._network, self._cpu, self._memory, self._load, self._filesystem,
                     self._uname):
            try:
                yield from part()
            except Exception:  # one broken source must not fail the whole scrape
                log.debug("host metrics: %s failed", part.__name__, exc_info=True)

    def _network(self) -> Iterator[Metric]:
        text = _read(f"{self.proc}/net/dev")
        if text is None:
            return
        devices = parse_net_dev(text)
        for direction in ("receive", "transmit"):
            for what, doc in (("bytes", "bytes"), ("packets", "packets"), ("errs", "errors"),
                              ("drop", "dropped packets")):
                fam = CounterMetricFamily(f"node_network_{direction}_{what}",
                                          f"Network device statistic {direction}_{what} ({doc}).",
                                          labels=["device"])
                for device, stats in sorted(devices.items()):
                    if f"{direction}_{what}" in stats:
                        fam.add_metric([device], stats[f"{direction}_{what}"])
                yield fam

    def _cpu(self) -> Iterator[Metric]:
        text = _read(f"{self.proc}/stat")
        if text is None:
            return
        fam = CounterMetricFamily("node_cpu_seconds", "Seconds the CPUs spent in each mode.",
                                  labels=["cpu", "mode"])
        for cpu, modes in parse_proc_stat(text, self.ticks).items():
            for mode, seconds in modes.items():
                fam.add_metric([cpu, mode], seconds)
        yield fam
        boot = re.search(r"^btime\s+(\d+)", text, re.M)
        if boot:
            yield GaugeMetricFamily("node_boot_time_seconds", "Node boot time, in unixtime.",
                                    value=float(boot.group(1)))

    def _memory(self) -> Iterator[Metric]:
        text = _read(f"{self.proc}/meminfo")
        if text is None:
            return
        for key, value in parse_meminfo(text).items():
            yield GaugeMetricFamily(f"node_memory_{key}", f"Memory information field {key}.",
                                    value=value)

    def _load(self) -> Iterator[Metric]:
        load = os.getloadavg()
        for minutes, value in zip((1, 5, 15), load):
            yield GaugeMetricFamily(f"node_load{minutes}", f"{minutes}m load average.",
                                    value=value)

    def _filesystem(self) -> Iterator[Metric]:
        text = _read(f"{self.proc}/mounts")
        if text is None:
            return
        labels = ["device", "fstype", "mountpoint"]
        avail = GaugeMetricFamily("node_filesystem_avail_bytes",
                                  "Filesystem space available to non-root users in bytes.",
                                  labels=labels)
        free = GaugeMetricFamily("node_filesystem_free_bytes",
                                 "Filesystem free space in bytes.", labels=labels)
        size = GaugeMetricFamily("node_filesystem_size_bytes", "Filesystem size in bytes.",
                                 labels=labels)
        pool = gevent.get_hub().threadpool
        for device, mountpoint, fstype in parse_mounts(text):
            pending = self._stuck.get(mountpoint)
            if pending is not None and not pending.ready():
                continue
            job = pool.spawn(os.statvfs, mountpoint)
            try:
                st = job.get(timeout=STATFS_TIMEOUT)
            except gevent.Timeout:
                log.warning("host metrics: statfs of %s did not return within %.0f s; "
                            "skipping it until it does", mountpoint, STATFS_TIMEOUT)
                self._stuck[mountpoint] = job
                continue
            except OSError:
                continue
            self._stuck.pop(mountpoint, None)
            values = [device, fstype, mountpoint]
            avail.add_metric(values, st.f_bavail * st.f_frsize)
            free.add_metric(values, st.f_bfree * st.f_frsize)
            size.add_metric(values, st.f_blocks * st.f_frsize)
        yield from (avail, free, size)

    def _uname(self) -> Iterator[Metric]:
        u = os.uname()
        fam = GaugeMetricFamily("node_uname_info", "Labeled system information as provided "
                                "by the uname system call.",
                                labels=["sysname", "release", "version", "machine", "nodename"])
        fam.add_metric([u.sysname, u.release, u.version, u.machine, u.nodename], 1)
        yield fam
