"""uname, os, time, timex, entropy, selinux and the build info, on this host and a fake tree."""

from __future__ import annotations

import os
import time

from ehco_gevent.observability.hostmetrics import HostCollector
from ehco_gevent.observability.hostmetrics.system import Timex, parse_os_release, timex_values

from .conftest import families, samples

OS_RELEASE = '''PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
# a comment
ID=debian
'''


def test_parse_os_release_and_the_os_families(fake_root):
    assert parse_os_release(OS_RELEASE) == {"pretty_name": "Debian GNU/Linux 12 (bookworm)",
                                            "name": "Debian GNU/Linux", "version_id": "12",
                                            "id": "debian"}
    fams = families(fake_root({"os-release": OS_RELEASE}))
    info = fams["node_os_info"].samples[0].labels
    assert info["id"] == "debian" and info["variant"] == "" and len(info) == 12
    assert samples(fams["node_os_version"]) == {("debian", "", "Debian GNU/Linux"): 12}


def test_timex_values_units():
    tx = Timex(offset=1500, freq=65536 * 10, maxerror=16000, esterror=100, status=0x2000,
               tick=10000, stbcnt=3)
    values = {name: v for name, _, _, v in timex_values(tx, 0)}
    assert values["offset_seconds"] == 1500 / 1e9  # STA_NANO: nanoseconds
    assert values["frequency_adjustment_ratio"] == 1 + 10 / 1e6
    assert values["maxerror_seconds"] == 0.016 and values["tick_seconds"] == 0.01
    assert values["pps_stability_exceeded"] == 3 and values["sync_status"] == 1
    assert {name: v for name, _, _, v in timex_values(tx, 5)}["sync_status"] == 0


def test_collector_on_this_host():
    before = time.time()
    fams = families(HostCollector())
    after = time.time()
    assert before <= fams["node_time_seconds"].samples[0].value <= after
    u = os.uname()
    uname = fams["node_uname_info"].samples[0].labels
    with open("/proc/sys/kernel/domainname") as f:
        domain = f.read().strip()
    assert uname == {"domainname": domain, "machine": u.machine, "nodename": u.nodename,
                     "release": u.release, "sysname": u.sysname, "version": u.version}
    # adjtimex read-only works for any user; the kernel's tick is 1/USER_HZ-ish microseconds
    assert fams["node_timex_tick_seconds"].samples[0].value > 0
    assert fams["node_timex_sync_status"].samples[0].value in (0, 1)
    with open("/proc/sys/kernel/random/poolsize") as f:
        assert fams["node_entropy_pool_size_bits"].samples[0].value == float(f.read())
    build = fams["node_exporter_build_info"].samples[0].labels
    assert build["version"] == "1.1.4-dev" and build["goversion"].startswith("python3")
    zone = fams["node_time_zone_offset_seconds"].samples[0]
    assert zone.value == time.localtime().tm_gmtoff
