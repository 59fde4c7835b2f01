"""Our host families next to the real node_exporter's on this machine.

Debian bookworm ships prometheus-node-exporter 1.5.0 while Go ehco 1.1.4-dev linked
node_exporter 1.6.0. The default collectors and their families are the same in both for what we
serve (1.6 added collectors that are off by default and a few udev-derived disk families);
where 1.5 differs from 1.6 docs/metrics.md says so. Compared here: the TYPE of every family both
expose, the label names of every family both have samples for, a few values that do not move
between two scrapes, and that every family node_exporter exposes under a collector we claim is
ours too."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import requests

from ehco_gevent.observability.hostmetrics import HostCollector
from prometheus_client import CollectorRegistry, generate_latest

from ...support import LOOPBACK, LoggedProcess, free_port, require_program, wait_port

#: node_exporter family prefixes of the collectors we implement (their whole output is ours)
CLAIMED = re.compile(
    r"^node_(arp_|boot_time|context_switches|cpu_seconds|cpu_guest|disk_(?!ata_|device_mapper|"
    r"filesystem_info)|entropy_|exporter_build_info|filefd_|filesystem_|forks|intr|load|memory_|"
    r"netstat_|network_|nf_conntrack_|os_|pressure_|procs_|scrape_collector_|selinux_enabled|"
    r"sockstat_|softnet_(dropped|processed|times_squeezed)|time_|timex_|udp_queues|uname_|"
    r"vmstat_)")
#: what the issue names, with node_exporter's types
REQUIRED = {"node_network_up": "gauge", "node_network_info": "gauge",
            "node_disk_read_bytes_total": "counter", "node_sockstat_TCP_inuse": "gauge",
            "node_netstat_Tcp_ActiveOpens": "untyped", "node_filefd_allocated": "gauge",
            "node_time_seconds": "gauge", "node_filesystem_readonly": "gauge",
            "node_filesystem_files": "gauge", "node_filesystem_files_free": "gauge",
            "node_filesystem_device_error": "gauge", "node_vmstat_pgfault": "untyped",
            "node_pressure_io_waiting_seconds_total": "counter",
            "node_exporter_build_info": "gauge", "node_scrape_collector_success": "gauge",
            "node_scrape_collector_duration_seconds": "gauge",
            "node_uname_info": "gauge"}


def exposition(text: str) -> tuple[dict[str, str], dict[str, set[str]], dict[tuple, float]]:
    """TYPE per family, label names per family, and value per (name, labels)."""
    types, labels, values = {}, defaultdict(set), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][\w:]*)(\{.*\})? (\S+)", line)
            pairs = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            labels[m.group(1)] |= {k for k, _ in pairs}
            values[(m.group(1), pairs)] = float(m.group(3))
    return types, labels, values


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    exe = require_program("prometheus-node-exporter", "prometheus-node-exporter")
    port = free_port()
    proc = LoggedProcess([exe, f"--web.listen-address={LOOPBACK}:{port}"],
                         tmp_path_factory.mktemp("node_exporter") / "node_exporter.log")
    try:
        wait_port(port)
        theirs = requests.get(f"http://{LOOPBACK}:{port}/metrics", timeout=30).text
        registry = CollectorRegistry(auto_describe=False)
        registry.register(HostCollector())
        ours = generate_latest(registry).decode()
    finally:
        proc.stop()
    return exposition(ours), exposition(theirs)


def test_same_types_and_label_names(both):
    (our_types, our_labels, _), (their_types, their_labels, _) = both
    common = set(our_types) & set(their_types)
    assert len(common) > 150
    assert {n: (our_types[n], their_types[n]) for n in common
            if our_types[n] != their_types[n]} == {}
    assert {n: (sorted(our_labels[n]), sorted(their_labels[n])) for n in common
            if n in our_labels and n in their_labels and our_labels[n] != their_labels[n]} == {}


def test_every_family_of_our_collectors_is_there(both):
    (our_types, _, _), (their_types, _, _) = both
    assert sorted(n for n in their_types if CLAIMED.match(n) and n not in our_types) == []
    assert {n: our_types.get(n) for n in REQUIRED} == REQUIRED


def test_values_that_hold_still_agree(both):
    (_, _, ours), (_, _, theirs) = both

    def pick(values, name):
        return {labels: v for (n, labels), v in values.items() if n == name}

    for name in ("node_memory_MemTotal_bytes", "node_filefd_maximum", "node_network_mtu_bytes",
                 "node_network_iface_id", "node_network_up", "node_boot_time_seconds",
                 "node_entropy_pool_size_bits", "node_uname_info", "node_os_version",
                 "node_time_zone_offset_seconds", "node_network_info"):
        assert pick(ours, name) == pick(theirs, name), name
    # node_exporter lists PID 1's mounts, we list our own (what statfs here sees): the same
    # filesystems where both list them, the root among them
    for name in ("node_filesystem_size_bytes", "node_filesystem_files",
                 "node_filesystem_readonly"):
        our_fs, their_fs = pick(ours, name), pick(theirs, name)
        both_fs = our_fs.keys() & their_fs.keys()
        assert any(dict(k)["mountpoint"] == "/" for k in both_fs), (our_fs, their_fs)
        assert {k: our_fs[k] for k in both_fs} == {k: their_fs[k] for k in both_fs}, name
    assert pick(ours, "node_disk_info").keys() == pick(theirs, "node_disk_info").keys()
    # our collectors carry node_exporter's names
    ours_ok = {dict(k)["collector"] for k in pick(ours, "node_scrape_collector_success")}
    theirs_all = {dict(k)["collector"] for k in pick(theirs, "node_scrape_collector_success")}
    assert ours_ok <= theirs_all
    cpu = {k: v for k, v in pick(ours, "node_cpu_seconds_total").items()}
    assert cpu.keys() == pick(theirs, "node_cpu_seconds_total").keys()
