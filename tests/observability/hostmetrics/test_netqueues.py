"""arp, softnet, udp_queues, conntrack parsers on fixed text, and a UDP queue this test fills."""

from __future__ import annotations

import socket

from ehco_gevent.observability.hostmetrics import HostCollector
from ehco_gevent.observability.hostmetrics.netqueues import (parse_arp, parse_conntrack_stat,
                                                             parse_softnet, parse_udp_queues)

from ...support import LOOPBACK
from .conftest import families, samples

ARP = """\
IP address       HW type     Flags       HW address            Mask     Device
192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0
192.0.2.2        0x1         0x2         02:fc:00:00:00:06     *        eth0
10.0.0.1         0x1         0x2         02:fc:00:00:00:07     *        eth1
"""
UDP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
  1: 0100007F:0035 00000000:0000 07 00000010:00000300 00:00000000 00000000     0        0 1 2
  2: 0100007F:0036 00000000:0000 07 00000000:00000100 00:00000000 00000000     0        0 1 2
"""
CONNTRACK = """\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop
00000003  00000000 00000002 00000000 00000001 00000000 00000000 00000000 00000000 00000000 0000000a 00000000
00000003  00000000 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000
"""


def test_parsers():
    assert parse_arp(ARP) == {"eth0": 2, "eth1": 1}
    assert parse_softnet("0000000a 00000001 00000002 0\n000000ff 0 0 0\n") == [
        (10, 1, 2), (255, 0, 0)]
    assert parse_udp_queues(UDP) == (0x10, 0x400)
    stats = parse_conntrack_stat(CONNTRACK)
    assert stats["found"] == 5 and stats["drop"] == 11 and stats["invalid"] == 1


def test_collectors_on_a_fake_proc(fake_root):
    fams = families(fake_root({"proc/net/arp": ARP, "proc/net/udp": UDP,
                               "proc/net/softnet_stat": "0000000a 00000001 00000002\n",
                               "proc/sys/net/netfilter/nf_conntrack_count": "7\n",
                               "proc/sys/net/netfilter/nf_conntrack_max": "65536\n",
                               "proc/net/stat/nf_conntrack": CONNTRACK}))
    assert samples(fams["node_arp_entries"]) == {("eth0",): 2, ("eth1",): 1}
    assert samples(fams["node_udp_queues"]) == {("v4", "tx"): 16, ("v4", "rx"): 1024}
    assert samples(fams["node_softnet_processed_total"]) == {("0",): 10}
    assert fams["node_nf_conntrack_entries"].samples[0].value == 7
    assert fams["node_nf_conntrack_entries_limit"].samples[0].value == 65536
    assert fams["node_nf_conntrack_stat_found"].samples[0].value == 5


def test_unread_datagrams_show_in_the_real_udp_rx_queue():
    collector = HostCollector()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind((LOOPBACK, 0))
        for _ in range(4):
            sender.sendto(b"q" * 1000, receiver.getsockname())
        rx = samples(families(collector)["node_udp_queues"])[("v4", "rx")]
        assert rx >= 4000  # the kernel counts buffer memory: at least the payload
    finally:
        receiver.close()
        sender.close()
