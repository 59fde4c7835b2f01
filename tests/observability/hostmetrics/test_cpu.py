"""cpu, stat, loadavg, pressure: parsers on fixed text, the collector on a fake /proc and on
this host's real one (compared with what the test reads itself)."""

from __future__ import annotations

import os

from ehco_gevent.observability.hostmetrics.cpu import (parse_loadavg, parse_pressure,
                                                       parse_proc_stat, parse_proc_stat_guest,
                                                       parse_stat_totals)

from .conftest import families, samples

STAT = """\
cpu  100 20 30 400 5 6 7 8 9 10
cpu0 60 10 15 200 3 3 4 4 5 5
cpu1 40 10 15 200 2 3 3 4 4 5
intr 12345 1 2 3
ctxt 999
btime 1700000000
processes 4242
procs_running 3
procs_blocked 1
softirq 1 2 3
"""
PRESSURE_CPU = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\n"
PRESSURE_IO = ("some avg10=0.00 avg60=0.01 avg300=0.16 total=3917715\n"
               "full avg10=0.00 avg60=0.01 avg300=0.14 total=3551380\n")


def test_parse_proc_stat():
    cpus = parse_proc_stat(STAT, 100.0)
    assert set(cpus) == {"0", "1"}  # the "cpu " total line is not a cpu
    assert cpus["0"] == {"user": 0.6, "nice": 0.1, "system": 0.15, "idle": 2.0, "iowait": 0.03,
                         "irq": 0.03, "softirq": 0.04, "steal": 0.04}
    assert parse_proc_stat_guest(STAT, 100.0)["1"] == {"user": 0.04, "nice": 0.05}


def test_parse_stat_totals_loadavg_pressure():
    assert parse_stat_totals(STAT) == {"intr": 12345, "ctxt": 999, "btime": 1700000000,
                                       "processes": 4242, "procs_running": 3,
                                       "procs_blocked": 1}
    assert parse_loadavg("0.52 0.58 0.59 1/467 12345\n") == (0.52, 0.58, 0.59)
    assert parse_pressure(PRESSURE_IO) == {"some": 3.917715, "full": 3.55138}


def test_collectors_on_a_fake_proc(fake_root):
    fams = families(fake_root({"proc/stat": STAT, "proc/loadavg": "1.5 2.5 3.5 1/1 1\n",
                               "proc/pressure/cpu": PRESSURE_CPU,
                               "proc/pressure/io": PRESSURE_IO,
                               "proc/pressure/memory": PRESSURE_IO}))
    assert samples(fams["node_cpu_seconds_total"])[("1", "user")] == 0.4
    assert samples(fams["node_cpu_guest_seconds_total"])[("0", "nice")] == 0.05
    assert fams["node_context_switches_total"].samples[0].value == 999
    assert fams["node_forks_total"].samples[0].value == 4242
    assert fams["node_intr_total"].samples[0].value == 12345
    assert fams["node_procs_running"].samples[0].value == 3
    assert fams["node_boot_time_seconds"].samples[0].value == 1700000000
    assert fams["node_load15"].samples[0].value == 3.5
    assert fams["node_pressure_cpu_waiting_seconds_total"].samples[0].value == 1.5
    assert fams["node_pressure_io_stalled_seconds_total"].samples[0].value == 3.55138
    success = samples(fams["node_scrape_collector_success"])
    assert success[("stat",)] == success[("pressure",)] == success[("loadavg",)] == 1
    assert success[("meminfo",)] == 0  # no /proc/meminfo in this tree


def test_collector_on_this_host(fake_root):
    from ehco_gevent.observability.hostmetrics import HostCollector

    with open("/proc/loadavg") as f:
        before = float(f.read().split()[2])
    fams = families(HostCollector())
    with open("/proc/loadavg") as f:
        after = float(f.read().split()[2])
    assert fams["node_load15"].samples[0].value in (before, after)
    cpus = {s.labels["cpu"] for s in fams["node_cpu_seconds_total"].samples}
    assert len(cpus) == os.cpu_count()
    modes = {s.labels["mode"] for s in fams["node_cpu_seconds_total"].samples}
    assert modes == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    assert fams["node_boot_time_seconds"].samples[0].value == btime
