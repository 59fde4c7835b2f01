"""diskstats and filesystem: parsers on fixed text, a fake tree, and this host's real disks
and root filesystem compared with /proc/diskstats and statvfs read by the test."""

from __future__ import annotations

import os

from ehco_gevent.observability.hostmetrics import HostCollector
from ehco_gevent.observability.hostmetrics.disk import Mount, parse_diskstats, parse_mounts, parse_udev

from .conftest import families, samples

DISKSTATS = """\
   7       0 loop0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 100 2 800 1500 50 3 400 2500 1 3000 4000 7 1 16 20 9 30
 254       1 vda1 90 2 700 1400 40 3 300 2400 0 2900 3900 0 0 0 0 0 0
 259       0 nvme0n1 10 0 80 15 5 0 40 25 0 30 40
"""
MOUNTS = r"""/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
sysfs /sys sysfs rw 0 0
tmpfs /run tmpfs rw 0 0
/dev/sdb1 /mnt/my\040disk xfs ro,noatime 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
/dev/sdc1 /data ext4 rw 0 0
/dev/sdd1 /data ext4 rw 0 0
"""
UDEV = "S:disk/by-path/pci-0000:00:05.0\nE:ID_PATH=pci-0000:00:05.0\nE:ID_MODEL=QEMU\n" \
       "E:ID_SERIAL_SHORT=abc123\n"


def test_parse_diskstats_skips_partitions_and_scales_units():
    disks = parse_diskstats(DISKSTATS)
    assert [d.name for d in disks] == ["vda", "nvme0n1"]
    vda = disks[0].values
    assert vda["reads_completed"] == 100 and vda["read_bytes"] == 800 * 512
    assert vda["read_time_seconds"] == 1.5 and vda["written_bytes"] == 400 * 512
    assert vda["io_now"] == 1 and vda["io_time_weighted_seconds"] == 4.0
    assert vda["discarded_sectors"] == 16 and vda["flush_requests_time_seconds"] == 0.03
    assert "discards_completed" not in disks[1].values  # an older kernel's 14 columns


def test_parse_mounts_and_udev():
    assert parse_mounts(MOUNTS) == [
        Mount("/dev/sda1", "/", "ext4", False),
        Mount("tmpfs", "/run", "tmpfs", False),
        Mount("/dev/sdb1", "/mnt/my disk", "xfs", True),
        Mount("/dev/sdd1", "/data", "ext4", False),
    ]
    assert parse_udev(UDEV) == {"ID_PATH": "pci-0000:00:05.0", "ID_MODEL": "QEMU",
                                "ID_SERIAL_SHORT": "abc123"}


def test_diskstats_collector_on_a_fake_tree(fake_root, tmp_path):
    fams = families(fake_root({"proc/diskstats": DISKSTATS, "udev/b254:0": UDEV,
                               "proc/mounts": f"/dev/x {tmp_path} ext4 ro 0 0\n"
                                              f"/dev/gone {tmp_path}/missing ext4 rw 0 0\n"}))
    info = {s.labels["device"]: s.labels for s in fams["node_disk_info"].samples}
    assert info["vda"] == {"device": "vda", "major": "254", "minor": "0",
                           "path": "pci-0000:00:05.0", "wwn": "", "model": "QEMU",
                           "serial": "abc123", "revision": ""}
    assert info["nvme0n1"]["model"] == ""  # no udev record: empty labels, as node_exporter
    assert samples(fams["node_disk_read_bytes_total"]) == {("vda",): 409600,
                                                          ("nvme0n1",): 40960}
    assert fams["node_disk_io_now"].type == "gauge"
    assert samples(fams["node_disk_flush_requests_total"]) == {("vda",): 9}
    ro = {s.labels["mountpoint"]: s.value for s in fams["node_filesystem_readonly"].samples}
    assert ro == {str(tmp_path): 1}
    errors = {s.labels["mountpoint"]: s.value
              for s in fams["node_filesystem_device_error"].samples}
    assert errors == {str(tmp_path): 0, f"{tmp_path}/missing": 1}


def test_collector_on_this_host():
    def sectors_read() -> dict[str, int]:
        with open("/proc/diskstats") as f:
            return {line.split()[2]: int(line.split()[5]) * 512 for line in f}

    before = sectors_read()
    fams = families(HostCollector())
    after = real = sectors_read()
    for sample in fams["node_disk_read_bytes_total"].samples:
        device = sample.labels["device"]
        assert before[device] <= sample.value <= after[device]
    whole = [n for n in real if os.path.exists(f"/sys/block/{n}") and not n.startswith(
        ("loop", "ram"))]
    assert {s.labels["device"] for s in fams["node_disk_info"].samples} == set(whole)
    st = os.statvfs("/")
    root = {name: [s.value for s in fams[name].samples if s.labels["mountpoint"] == "/"]
            for name in ("node_filesystem_size_bytes", "node_filesystem_files",
                         "node_filesystem_readonly", "node_filesystem_device_error")}
    assert root == {"node_filesystem_size_bytes": [st.f_blocks * st.f_frsize],
                    "node_filesystem_files": [st.f_files],
                    "node_filesystem_readonly": [1.0 if st.f_flag & os.ST_RDONLY else 0.0],
                    "node_filesystem_device_error": [0.0]}
