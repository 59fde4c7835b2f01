"""The /proc parsers on fixed text, and the collector on this machine's real /proc."""

from __future__ import annotations

import os

from ehco_gevent.observability.hostmetrics import (HostCollector, parse_meminfo, parse_mounts, parse_net_dev,
                                     parse_proc_stat)

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1234567     100    0    0    0     0          0         0  1234567     100    0    0    0     0       0          0
  eth0: 98765432   4321    1    2    0     0          0         5 12345678   2222    0    3    0     0       0          0
"""

STAT = """\
cpu  100 20 30 400 5 6 7 8 9 10
cpu0 60 10 15 200 3 3 4 4 5 5
cpu1 40 10 15 200 2 3 3 4 4 5
intr 12345
btime 1700000000
"""

MEMINFO = """\
MemTotal:        2048000 kB
MemFree:          512000 kB
Cached:           256000 kB
Active(anon):      10000 kB
SwapTotal:             0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""

MOUNTS = r"""/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
sysfs /sys sysfs rw 0 0
tmpfs /run tmpfs rw 0 0
/dev/sdb1 /mnt/my\040disk xfs rw 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
/dev/sdc1 /data ext4 rw 0 0
/dev/sdd1 /data ext4 rw 0 0
"""


def test_parse_net_dev():
    devices = parse_net_dev(NET_DEV)
    assert set(devices) == {"lo", "eth0"}
    assert devices["eth0"]["receive_bytes"] == 98765432
    assert devices["eth0"]["receive_packets"] == 4321
    assert devices["eth0"]["receive_drop"] == 2
    assert devices["eth0"]["receive_multicast"] == 5
    assert devices["eth0"]["transmit_bytes"] == 12345678
    assert devices["eth0"]["transmit_drop"] == 3
    assert parse_net_dev("") == {}


def test_parse_proc_stat():
    cpus = parse_proc_stat(STAT, 100.0)
    assert set(cpus) == {"0", "1"}  # the "cpu " total line is not a cpu
    assert cpus["0"] == {"user": 0.6, "nice": 0.1, "system": 0.15, "idle": 2.0, "iowait": 0.03,
                         "irq": 0.03, "softirq": 0.04, "steal": 0.04}


def test_parse_meminfo():
    mem = parse_meminfo(MEMINFO)
    assert mem["MemTotal_bytes"] == 2048000 * 1024
    assert mem["MemFree_bytes"] == 512000 * 1024
    assert mem["Cached_bytes"] == 256000 * 1024
    assert mem["Active_anon_bytes"] == 10000 * 1024
    assert mem["SwapTotal_bytes"] == 0
    assert mem["HugePages_Total"] == 0
    assert mem["Hugepagesize_bytes"] == 2048 * 1024


def test_parse_mounts():
    assert parse_mounts(MOUNTS) == [
        ("/dev/sda1", "/", "ext4"),
        ("tmpfs", "/run", "tmpfs"),
        ("/dev/sdb1", "/mnt/my disk", "xfs"),
        ("/dev/sdd1", "/data", "ext4"),
    ]


def _families():
    return {f.name: f for f in HostCollector().collect()}


def test_collector_reads_this_host():
    fams = _families()
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    assert fams["node_memory_MemTotal_bytes"].samples[0].value == total_kb * 1024
    cpus = {s.labels["cpu"] for s in fams["node_cpu_seconds"].samples}
    assert len(cpus) == os.cpu_count()
    modes = {s.labels["mode"] for s in fams["node_cpu_seconds"].samples}
    assert {"user", "system", "idle", "iowait"} <= modes
    rx = {s.labels["device"]: s.value for s in fams["node_network_receive_bytes"].samples}
    assert "lo" in rx and rx["lo"] >= 0
    assert [s.value >= 0 for s in fams["node_load15"].samples] == [True]
    roots = [s for s in fams["node_filesystem_avail_bytes"].samples
             if s.labels["mountpoint"] == "/"]
    assert len(roots) == 1
    st = os.statvfs("/")
    size = [s.value for s in fams["node_filesystem_size_bytes"].samples
            if s.labels["mountpoint"] == "/"]
    assert size == [st.f_blocks * st.f_frsize]
    assert fams["node_uname_info"].samples[0].labels["nodename"] == os.uname().nodename


def test_collector_without_proc_yields_what_it_can(tmp_path):
    fams = {f.name: f for f in HostCollector(proc=str(tmp_path)).collect()}
    assert "node_memory_MemTotal_bytes" not in fams
    assert "node_load1" in fams and "node_uname_info" in fams
