"""node_exporter's ``meminfo``, ``vmstat`` and ``filefd`` collectors: /proc/meminfo,
/proc/vmstat and /proc/sys/fs/file-nr."""

from __future__ import annotations

import re
from typing import Iterator

from prometheus_client.core import Metric

from .source import HostPaths, gauge, read, untyped

#: node_exporter's default ``--collector.vmstat.fields``
VMSTAT_FIELDS = re.compile(r"^(oom_kill|pgpg|pswp|pg.*fault).*")


def parse_meminfo(text: str) -> dict[str, float]:
    """/proc/meminfo -> {node_exporter's name part: value}: ``kB`` values become bytes with a
    ``_bytes`` suffix (``MemTotal_bytes``), counts keep their name (``HugePages_Total``), and
    ``Active(anon)`` becomes ``Active_anon_bytes``, as node_exporter names them."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        value = float(parts[0])
        key = re.sub(r"[()]", "_", key.strip()).rstrip("_")
        if len(parts) > 1 and parts[1] == "kB":
            value *= 1024
            key += "_bytes"
        out[key] = value
    return out


def parse_vmstat(text: str) -> dict[str, float]:
    """/proc/vmstat -> {field: value} for the fields node_exporter exposes by default."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and VMSTAT_FIELDS.match(fields[0]):
            out[fields[0]] = float(fields[1])
    return out


def parse_file_nr(text: str) -> tuple[float, float]:
    """/proc/sys/fs/file-nr "allocated unused maximum" -> (allocated, maximum)."""
    allocated, _unused, maximum = (float(v) for v in text.split()[:3])
    return allocated, maximum


def collect_meminfo(paths: HostPaths) -> Iterator[Metric]:
    for key, value in parse_meminfo(read(f"{paths.proc}/meminfo")).items():
        yield gauge(f"node_memory_{key}", f"Memory information field {key}.", value=value)


def collect_vmstat(paths: HostPaths) -> Iterator[Metric]:
    for key, value in parse_vmstat(read(f"{paths.proc}/vmstat")).items():
        yield untyped(f"node_vmstat_{key}", f"/proc/vmstat information field {key}.", value)


def collect_filefd(paths: HostPaths) -> Iterator[Metric]:
    allocated, maximum = parse_file_nr(read(f"{paths.proc}/sys/fs/file-nr"))
    yield gauge("node_filefd_allocated", "File descriptor statistics: allocated.",
                value=allocated)
    yield gauge("node_filefd_maximum", "File descriptor statistics: maximum.", value=maximum)
