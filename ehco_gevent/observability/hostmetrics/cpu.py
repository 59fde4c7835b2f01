"""node_exporter's ``cpu``, ``stat``, ``loadavg`` and ``pressure`` collectors: /proc/stat,
/proc/loadavg and /proc/pressure/*, parsed by plain functions over their text."""

from __future__ import annotations

import os
from typing import Iterator

from prometheus_client.core import Metric

from .source import HostPaths, counter, gauge, read

#: /proc/stat's columns as node_exporter names the modes (guest time is already inside user and
#: nice, so node_exporter reports it apart, in node_cpu_guest_seconds_total)
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
GUEST_MODES = ("user", "nice")  # the guest and guest_nice columns


def ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


def parse_proc_stat(text: str, ticks: float) -> dict[str, dict[str, float]]:
    """/proc/stat -> {cpu number as a string: {mode: seconds}} for each ``cpuN`` line."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        fields = line.split()
        out[fields[0][3:]] = {mode: int(v) / ticks for mode, v in zip(CPU_MODES, fields[1:])}
    return out


def parse_proc_stat_guest(text: str, ticks: float) -> dict[str, dict[str, float]]:
    """/proc/stat -> {cpu: {"user": guest seconds, "nice": guest_nice seconds}}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("cpu") and not line.startswith("cpu "):
            fields = line.split()[9:11]
            if len(fields) == 2:
                out[line.split()[0][3:]] = {m: int(v) / ticks for m, v in zip(GUEST_MODES, fields)}
    return out


def parse_stat_totals(text: str) -> dict[str, float]:
    """/proc/stat's single-number lines: intr (its first number), ctxt, btime, processes,
    procs_running, procs_blocked."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in ("intr", "ctxt", "btime", "processes",
                                              "procs_running", "procs_blocked"):
            out[fields[0]] = float(fields[1])
    return out


def parse_loadavg(text: str) -> tuple[float, float, float]:
    one, five, fifteen = (float(v) for v in text.split()[:3])
    return one, five, fifteen


def parse_pressure(text: str) -> dict[str, float]:
    """/proc/pressure/RESOURCE -> {"some": seconds, "full": seconds} from the ``total=``
    microseconds of each line."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        for field in fields:
            key, _, value = field.partition("=")
            if key == "total":
                out[kind] = int(value) / 1e6
    return out


def collect_cpu(paths: HostPaths, ticks: float) -> Iterator[Metric]:
    text = read(f"{paths.proc}/stat")
    yield counter("node_cpu_seconds", "Seconds the CPUs spent in each mode.",
                  ([[cpu, mode], s] for cpu, modes in parse_proc_stat(text, ticks).items()
                   for mode, s in modes.items()), labels=["cpu", "mode"])
    yield counter("node_cpu_guest_seconds", "Seconds the CPUs spent in guests (VMs) for each "
                  "mode.", ([[cpu, mode], s]
                            for cpu, modes in parse_proc_stat_guest(text, ticks).items()
                            for mode, s in modes.items()), labels=["cpu", "mode"])


def collect_stat(paths: HostPaths) -> Iterator[Metric]:
    totals = parse_stat_totals(read(f"{paths.proc}/stat"))
    for key, name, doc, kind in (
            ("intr", "node_intr", "Total number of interrupts serviced.", counter),
            ("ctxt", "node_context_switches", "Total number of context switches.", counter),
            ("btime", "node_boot_time_seconds", "Node boot time, in unixtime.", gauge),
            ("processes", "node_forks", "Total number of forks.", counter),
            ("procs_running", "node_procs_running",
             "Number of processes in runnable state.", gauge),
            ("procs_blocked", "node_procs_blocked",
             "Number of processes blocked waiting for I/O to complete.", gauge)):
        if key in totals:
            yield kind(name, doc, value=totals[key])


def collect_loadavg(paths: HostPaths) -> Iterator[Metric]:
    for minutes, value in zip((1, 5, 15), parse_loadavg(read(f"{paths.proc}/loadavg"))):
        yield gauge(f"node_load{minutes}", f"{minutes}m load average.", value=value)


def collect_pressure(paths: HostPaths) -> Iterator[Metric]:
    """Absent on kernels without PSI: the collector then fails, as node_exporter's does."""
    cpu = parse_pressure(read(f"{paths.proc}/pressure/cpu"))
    io = parse_pressure(read(f"{paths.proc}/pressure/io"))
    memory = parse_pressure(read(f"{paths.proc}/pressure/memory"))
    yield counter("node_pressure_cpu_waiting_seconds",
                  "Total time in seconds that processes have waited for CPU time",
                  value=cpu.get("some", 0.0))
    for resource, values in (("io", io), ("memory", memory)):
        yield counter(f"node_pressure_{resource}_waiting_seconds",
                      f"Total time in seconds that processes have waited due to {resource}",
                      value=values.get("some", 0.0))
        yield counter(f"node_pressure_{resource}_stalled_seconds",
                      f"Total time in seconds no process could make progress due to {resource}",
                      value=values.get("full", 0.0))
