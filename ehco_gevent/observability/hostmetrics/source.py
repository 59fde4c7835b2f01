"""What every host collector shares: where /proc and /sys are, how a file is read, and the
three kinds of family node_exporter uses (gauge, counter, untyped), built in one call each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


@dataclass(frozen=True)
class HostPaths:
    """Roots of the files read; tests point them at a temporary directory."""

    proc: str = "/proc"
    sys: str = "/sys"
    #: udev's database, where node_disk_info's path/wwn/model/serial/revision come from
    udev: str = "/run/udev/data"
    os_release: tuple[str, ...] = ("/etc/os-release", "/usr/lib/os-release")


def read(path: str) -> str:
    """The text of a file; OSError when it cannot be read (the caller's collector then reports
    ``node_scrape_collector_success 0``, as node_exporter does for a missing source)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read_or_none(path: str) -> str | None:
    """The stripped text of a file, or None: for /sys attributes that a device may not have
    (``speed`` of a down link answers EINVAL), which node_exporter leaves out one by one."""
    try:
        return read(path).strip()
    except OSError:
        return None


def family(kind: type, name: str, doc: str, rows: Iterable[tuple[list[str], float]] = (),
           labels: list[str] | None = None, value: float | None = None) -> Metric:
    """A gauge or counter family (``kind`` is GaugeMetricFamily or CounterMetricFamily) with
    one sample per ``(label values, value)`` row, or the single unlabelled ``value``."""
    fam = kind(name, doc, value=value, labels=labels)
    for values, v in rows:
        fam.add_metric(values, v)
    return fam


def gauge(name: str, doc: str, rows: Iterable[tuple[list[str], float]] = (),
          labels: list[str] | None = None, value: float | None = None) -> Metric:
    return family(GaugeMetricFamily, name, doc, rows, labels, value)


def counter(name: str, doc: str, rows: Iterable[tuple[list[str], float]] = (),
            labels: list[str] | None = None, value: float | None = None) -> Metric:
    """A counter named ``name`` without ``_total``: the exposition adds the suffix."""
    return family(CounterMetricFamily, name, doc, rows, labels, value)


def untyped(name: str, doc: str, value: float) -> Metric:
    """node_exporter's netstat and vmstat families are untyped; so are ours."""
    fam = Metric(name, doc, "unknown")
    fam.add_sample(name, {}, value)
    return fam
