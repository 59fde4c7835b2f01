"""meminfo, vmstat, filefd: parsers on fixed text, the collector against this host's /proc."""

from __future__ import annotations

from ehco_gevent.observability.hostmetrics import HostCollector
from ehco_gevent.observability.hostmetrics.memory import parse_file_nr, parse_meminfo, parse_vmstat

from .conftest import families

MEMINFO = """\
MemTotal:        2048000 kB
MemFree:          512000 kB
Cached:           256000 kB
Active(anon):      10000 kB
SwapTotal:             0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""
VMSTAT = "nr_free_pages 1\npgpgin 10\npgpgout 20\npswpin 3\npgfault 400\npgmajfault 5\n" \
         "oom_kill 2\npgsteal_kswapd 7\n"


def test_parse_meminfo():
    mem = parse_meminfo(MEMINFO)
    assert mem["MemTotal_bytes"] == 2048000 * 1024
    assert mem["Active_anon_bytes"] == 10000 * 1024
    assert mem["SwapTotal_bytes"] == 0
    assert mem["HugePages_Total"] == 0
    assert mem["Hugepagesize_bytes"] == 2048 * 1024


def test_parse_vmstat_keeps_node_exporters_default_fields():
    assert parse_vmstat(VMSTAT) == {"pgpgin": 10, "pgpgout": 20, "pswpin": 3, "pgfault": 400,
                                    "pgmajfault": 5, "oom_kill": 2}


def test_parse_file_nr():
    assert parse_file_nr("2208\t0\t1048576\n") == (2208, 1048576)


def test_collector_on_this_host():
    fams = families(HostCollector())
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    assert fams["node_memory_MemTotal_bytes"].samples[0].value == total_kb * 1024
    with open("/proc/sys/fs/file-nr") as f:
        maximum = float(f.read().split()[2])
    assert fams["node_filefd_maximum"].samples[0].value == maximum
    assert fams["node_filefd_allocated"].type == "gauge"
    assert fams["node_vmstat_pgfault"].type == "unknown"  # untyped, as node_exporter's
