"""node_exporter's ``uname``, ``os``, ``time``, ``timex`` and ``entropy`` collectors, and its
``node_exporter_build_info``: uname(2), /etc/os-release, the clock and clocksources,
adjtimex(2) (read-only) and /proc/sys/kernel/random."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import shlex
import time
from typing import Iterator

from prometheus_client.core import Metric

from .source import HostPaths, counter, gauge, read, read_or_none

OS_INFO = ("build_id", "id", "id_like", "image_id", "image_version", "name", "pretty_name",
           "variant", "variant_id", "version", "version_codename", "version_id")
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


def parse_os_release(text: str) -> dict[str, str]:
    """os-release's shell-style ``KEY="value"`` lines -> {key in lower case: value}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            parts = shlex.split(value) if value.strip() else [""]
            out[key.strip().lower()] = parts[0] if parts else ""
    return out


def collect_uname(paths: HostPaths) -> Iterator[Metric]:
    u = os.uname()
    # Python's uname has no domainname; the kernel gives the same text here ("(none)" unset)
    domain = read_or_none(f"{paths.proc}/sys/kernel/domainname") or "(none)"
    yield gauge("node_uname_info", "Labeled system information as provided by the uname "
                "system call.", [([domain, u.machine, u.nodename, u.release, u.sysname,
                                   u.version], 1.0)],
                labels=["domainname", "machine", "nodename", "release", "sysname", "version"])


def collect_os(paths: HostPaths) -> Iterator[Metric]:
    for path in paths.os_release:
        text = read_or_none(path)
        if text is not None:
            break
    else:
        raise OSError("no os-release file")
    info = parse_os_release(text)
    yield gauge("node_os_info", "A metric with a constant '1' value labeled by build_id, id, "
                "id_like, image_id, image_version, name, pretty_name, variant, variant_id, "
                "version, version_codename, version_id.",
                [([info.get(k, "") for k in OS_INFO], 1.0)], labels=list(OS_INFO))
    try:
        version = float(info.get("version_id", ""))
    except ValueError:
        version = 0.0
    yield gauge("node_os_version", "Metric containing the major.minor part of the OS version.",
                [([info.get("id", ""), info.get("id_like", ""), info.get("name", "")], version)],
                labels=["id", "id_like", "name"])


def collect_time(paths: HostPaths) -> Iterator[Metric]:
    now = time.time()
    yield gauge("node_time_seconds", "System time in seconds since epoch (1970).", value=now)
    local = time.localtime(now)
    yield gauge("node_time_zone_offset_seconds", "System time zone offset in seconds.",
                [([local.tm_zone], float(local.tm_gmtoff))], labels=["time_zone"])
    base = f"{paths.sys}/devices/system/clocksource"
    for kind, attr in (("available", "available_clocksource"), ("current", "current_clocksource")):
        rows = []
        for device in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if device.startswith("clocksource"):
                text = read_or_none(f"{base}/{device}/{attr}") or ""
                rows += [([source, device[len("clocksource"):]], 1.0) for source in text.split()]
        yield gauge(f"node_time_clocksource_{kind}_info", f"Clocksources {kind} on this system"
                    " by device.", rows, labels=["clocksource", "device"])


class Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (Linux); ctypes adds the same padding the C compiler does."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("constant", ctypes.c_long),
                ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long),
                ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
                ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long),
                ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
                ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11)]


STA_NANO = 0x2000
TIME_ERROR = 5
PPM16 = 1_000_000 * 65536  # freq, ppsfreq and stabil are ppm with a 16-bit fraction


@functools.cache
def _adjtimex():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.adjtimex
    fn.argtypes = [ctypes.POINTER(Timex)]
    fn.restype = ctypes.c_int
    return fn


def timex_values(tx: Timex, state: int) -> list[tuple[str, str, str, float]]:
    """(family, kind, help, value) for node_exporter's timex families from a read-only
    adjtimex(2) result; offsets are microseconds unless the kernel says STA_NANO."""
    div = 1e9 if tx.status & STA_NANO else 1e6
    return [
        ("offset_seconds", "gauge", "Time offset in between local system and reference clock.",
         tx.offset / div),
        ("frequency_adjustment_ratio", "gauge", "Local clock frequency adjustment.",
         1 + tx.freq / PPM16),
        ("maxerror_seconds", "gauge", "Maximum error in seconds.", tx.maxerror / 1e6),
        ("estimated_error_seconds", "gauge", "Estimated error in seconds.", tx.esterror / 1e6),
        ("status", "gauge", "Value of the status array bits.", float(tx.status)),
        ("loop_time_constant", "gauge", "Phase-locked loop time constant.", float(tx.constant)),
        ("tick_seconds", "gauge", "Seconds between clock ticks.", tx.tick / 1e6),
        ("pps_frequency_hertz", "gauge", "Pulse per second frequency.", tx.ppsfreq / PPM16),
        ("pps_jitter_seconds", "gauge", "Pulse per second jitter.", tx.jitter / div),
        ("pps_shift_seconds", "gauge", "Pulse per second interval duration.", float(tx.shift)),
        ("pps_stability_hertz", "gauge", "Pulse per second stability, average of recent "
         "frequency changes.", tx.stabil / PPM16),
        ("pps_jitter", "counter", "Pulse per second count of jitter limit exceeded events.",
         float(tx.jitcnt)),
        ("pps_calibration", "counter", "Pulse per second count of calibration intervals.",
         float(tx.calcnt)),
        ("pps_error", "counter", "Pulse per second count of calibration errors.",
         float(tx.errcnt)),
        ("pps_stability_exceeded", "counter", "Pulse per second count of stability limit "
         "exceeded events.", float(tx.stbcnt)),
        ("tai_offset_seconds", "gauge", "International Atomic Time (TAI) offset.",
         float(tx.tai)),
        ("sync_status", "gauge", "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
         0.0 if state == TIME_ERROR else 1.0),
    ]


def collect_timex(paths: HostPaths) -> Iterator[Metric]:
    tx = Timex()  # modes 0: read only, allowed to any user
    state = _adjtimex()(ctypes.byref(tx))
    if state < 0:
        raise OSError(ctypes.get_errno(), "adjtimex failed")
    for name, kind, doc, value in timex_values(tx, state):
        yield (counter if kind == "counter" else gauge)(f"node_timex_{name}", doc, value=value)


def collect_entropy(paths: HostPaths) -> Iterator[Metric]:
    base = f"{paths.proc}/sys/kernel/random"
    yield gauge("node_entropy_available_bits", "Bits of available entropy.",
                value=float(read(f"{base}/entropy_avail")))
    yield gauge("node_entropy_pool_size_bits", "Bits of entropy pool.",
                value=float(read(f"{base}/poolsize")))


@functools.cache
def build_labels() -> tuple[str, ...]:
    """node_exporter_build_info's labels describing this program: the Python version stands in
    the goversion label (read once: build_info asks git)."""
    from ...build import build_info

    info = build_info()
    machine = platform.machine()
    return (info["branch"], GOARCH.get(machine, machine), platform.system().lower(),
            f"python{platform.python_version()}", info["revision"], info["version"])


def collect_build_info() -> Iterator[Metric]:
    yield gauge("node_exporter_build_info", "A metric with a constant '1' value labeled by "
                "version, revision, branch, goversion from which node_exporter was built, and "
                "the goos and goarch for the build.", [(list(build_labels()), 1.0)],
                labels=["branch", "goarch", "goos", "goversion", "revision", "version"])


def collect_selinux(paths: HostPaths) -> Iterator[Metric]:
    """Only whether SELinux is on (node_exporter adds its modes where it is)."""
    enabled = os.path.isdir(f"{paths.sys}/fs/selinux")
    yield gauge("node_selinux_enabled", "SELinux is enabled, 1 is true, 0 is false",
                value=1.0 if enabled else 0.0)
