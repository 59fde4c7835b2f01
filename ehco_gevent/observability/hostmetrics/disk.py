"""node_exporter's ``diskstats`` and ``filesystem`` collectors: /proc/diskstats (with udev's
database for node_disk_info) and /proc/mounts plus statvfs."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterator, NamedTuple

import gevent
from prometheus_client.core import Metric

from .source import HostPaths, counter, gauge, read

log = logging.getLogger("ehco.metrics")

#: node_exporter's default ``--collector.diskstats.device-exclude`` (partitions, ram, loop)
DISK_EXCLUDE = re.compile(r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$")
SECTOR = 512
#: /proc/diskstats columns after major, minor, name -> (family, counter?, scale)
DISK_COLUMNS = (
    ("reads_completed", True, 1), ("reads_merged", True, 1), ("read_bytes", True, SECTOR),
    ("read_time_seconds", True, 0.001), ("writes_completed", True, 1),
    ("writes_merged", True, 1), ("written_bytes", True, SECTOR),
    ("write_time_seconds", True, 0.001), ("io_now", False, 1), ("io_time_seconds", True, 0.001),
    ("io_time_weighted_seconds", True, 0.001), ("discards_completed", True, 1),
    ("discards_merged", True, 1), ("discarded_sectors", True, 1),
    ("discard_time_seconds", True, 0.001), ("flush_requests", True, 1),
    ("flush_requests_time_seconds", True, 0.001),
)
#: udev properties -> node_disk_info labels
UDEV_INFO = (("path", "ID_PATH"), ("wwn", "ID_WWN"), ("model", "ID_MODEL"),
             ("serial", "ID_SERIAL_SHORT"), ("revision", "ID_REVISION"))

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
FS_LABELS = ["device", "fstype", "mountpoint"]


class Disk(NamedTuple):
    major: str
    minor: str
    name: str
    values: dict[str, float]


class Mount(NamedTuple):
    device: str
    mountpoint: str
    fstype: str
    readonly: bool


def parse_diskstats(text: str) -> list[Disk]:
    """/proc/diskstats -> the whole disks node_exporter reports, values already in bytes and
    seconds. Older kernels have fewer columns (no discard or flush): those are left out."""
    disks = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 14 or DISK_EXCLUDE.match(fields[2]):
            continue
        values = {name: int(v) * scale
                  for (name, _, scale), v in zip(DISK_COLUMNS, fields[3:])}
        disks.append(Disk(fields[0], fields[1], fields[2], values))
    return disks


def parse_udev(text: str) -> dict[str, str]:
    """udev's ``/run/udev/data/bMAJ:MIN`` -> its ``E:KEY=VALUE`` properties."""
    props = {}
    for line in text.splitlines():
        if line.startswith("E:"):
            key, _, value = line[2:].partition("=")
            props[key] = value
    return props


def _unescape_mount(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    """/proc/mounts -> the mounts node_exporter reports (pseudo filesystems skipped), each
    mountpoint once (the last mount on a path is the visible one)."""
    seen: dict[str, Mount] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype = (_unescape_mount(f) for f in fields[:3])
        if SKIP_FSTYPES.match(fstype) or SKIP_MOUNTPOINTS.match(mountpoint):
            continue
        seen[mountpoint] = Mount(device, mountpoint, fstype, "ro" in fields[3].split(","))
    return list(seen.values())


def collect_diskstats(paths: HostPaths) -> Iterator[Metric]:
    disks = parse_diskstats(read(f"{paths.proc}/diskstats"))
    info = []
    for disk in disks:
        try:
            props = parse_udev(read(f"{paths.udev}/b{disk.major}:{disk.minor}"))
        except OSError:  # no udev (a container): the labels stay empty, as node_exporter's
            props = {}
        info.append(([disk.name, disk.major, disk.minor] +
                     [props.get(key, "") for _, key in UDEV_INFO], 1.0))
    yield gauge("node_disk_info", "Info of /sys/block/<block_device>.", info,
                labels=["device", "major", "minor"] + [label for label, _ in UDEV_INFO])
    for name, is_counter, _ in DISK_COLUMNS:
        rows = [([d.name], d.values[name]) for d in disks if name in d.values]
        if rows:
            yield (counter if is_counter else gauge)(
                f"node_disk_{name}", f"Disk statistic {name}.", rows, labels=["device"])


class FilesystemCollector:
    """statvfs of every mount, each in the hub's thread pool with a deadline: a mount whose
    statfs hangs (a dead NFS server) is reported with device_error 1 and skipped until its
    statfs returns, so hung mounts cannot pile up threads."""

    def __init__(self, paths: HostPaths):
        self.paths = paths
        self._stuck: dict[str, Any] = {}

    def __call__(self) -> Iterator[Metric]:
        fams = {name: gauge(f"node_filesystem_{name}", doc, labels=FS_LABELS) for name, doc in (
            ("avail_bytes", "Filesystem space available to non-root users in bytes."),
            ("free_bytes", "Filesystem free space in bytes."),
            ("size_bytes", "Filesystem size in bytes."),
            ("files", "Filesystem total file nodes."),
            ("files_free", "Filesystem total free file nodes."),
            ("readonly", "Filesystem read-only status."),
            ("device_error", "Whether an error occurred while getting statistics for the "
                             "given device."))}
        for mount in parse_mounts(read(f"{self.paths.proc}/mounts")):
            values = [mount.device, mount.fstype, mount.mountpoint]
            st = self._statvfs(mount.mountpoint)
            fams["device_error"].add_metric(values, 0.0 if st else 1.0)
            if st is None:
                continue
            fams["avail_bytes"].add_metric(values, st.f_bavail * st.f_frsize)
            fams["free_bytes"].add_metric(values, st.f_bfree * st.f_frsize)
            fams["size_bytes"].add_metric(values, st.f_blocks * st.f_frsize)
            fams["files"].add_metric(values, st.f_files)
            fams["files_free"].add_metric(values, st.f_ffree)
            fams["readonly"].add_metric(values, 1.0 if mount.readonly else 0.0)
        yield from fams.values()

    def _statvfs(self, mountpoint: str) -> os.statvfs_result | None:
        pending = self._stuck.get(mountpoint)
        if pending is not None and not pending.ready():
            return None
        job = gevent.get_hub().threadpool.spawn(os.statvfs, mountpoint)
        try:
            st = job.get(timeout=STATFS_TIMEOUT)
        except gevent.Timeout:
            log.warning("host metrics: statfs of %s did not return within %.0f s; "
                        "skipping it until it does", mountpoint, STATFS_TIMEOUT)
            self._stuck[mountpoint] = job
            return None
        except OSError:
            return None
        self._stuck.pop(mountpoint, None)
        return st
