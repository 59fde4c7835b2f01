"""netdev, netclass, netstat, sockstat: parsers on fixed text, a fake /sys/class/net, and the
real counters moved by traffic this test sends over loopback."""

from __future__ import annotations

import socket

from ehco_gevent.observability.hostmetrics import HostCollector
from ehco_gevent.observability.hostmetrics.network import (parse_net_dev, parse_netstat,
                                                           parse_snmp6, parse_sockstat)

from ...support import LOOPBACK
from .conftest import families, samples

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1234567     100    0    0    0     0          0         0  1234567     100    0    0    0     0       0          0
  eth0: 98765432   4321    1    2    0     0          0         5 12345678   2222    0    3    0     0       0          0
"""
NETSTAT = """\
TcpExt: SyncookiesSent ListenOverflows TCPTimeouts PruneCalled
TcpExt: 1 2 3 4
"""
SNMP = """\
Ip: Forwarding DefaultTTL
Ip: 2 64
Tcp: RtoAlgorithm MaxConn ActiveOpens CurrEstab
Tcp: 1 -1 77 5
"""
SNMP6 = "Ip6InOctets                     \t300\nUdp6InDatagrams \t7\nUdpLite6InErrors 0\n"
SOCKSTAT = """\
sockets: used 100
TCP: inuse 82 orphan 0 tw 2437 alloc 82 mem 3
UDP: inuse 2 mem 1
FRAG: inuse 0 memory 0
"""


def test_parse_net_dev():
    devices = parse_net_dev(NET_DEV)
    assert set(devices) == {"lo", "eth0"}
    assert devices["eth0"]["receive_multicast"] == 5
    assert devices["eth0"]["transmit_drop"] == 3
    assert devices["eth0"]["transmit_colls"] == 0
    assert parse_net_dev("") == {}


def test_parse_netstat_snmp_snmp6_sockstat():
    assert parse_netstat(NETSTAT) == {"TcpExt_SyncookiesSent": 1, "TcpExt_ListenOverflows": 2,
                                      "TcpExt_TCPTimeouts": 3, "TcpExt_PruneCalled": 4}
    assert parse_netstat(SNMP)["Tcp_MaxConn"] == -1
    assert parse_snmp6(SNMP6) == {"Ip6_InOctets": 300, "Udp6_InDatagrams": 7,
                                  "UdpLite6_InErrors": 0}
    stats = parse_sockstat(SOCKSTAT, 4096)
    assert stats["sockets_used"] == 100
    assert stats["TCP_tw"] == 2437
    assert stats["TCP_mem"] == 3 and stats["TCP_mem_bytes"] == 3 * 4096
    assert stats["FRAG_memory"] == 0


def test_collectors_on_a_fake_tree(fake_root):
    sysnet = {f"sys/class/net/eth0/{k}": v for k, v in {
        "operstate": "up\n", "address": "02:fc:00:00:00:01\n", "mtu": "1500\n",
        "speed": "1000\n", "carrier_changes": "4\n", "flags": "0x1003\n", "ifindex": "2\n",
        "duplex": "full\n", "type": "1\n", "statistics/rx_nohandler": "9\n"}.items()}
    sysnet.update({"sys/class/net/tun0/operstate": "down\n", "sys/class/net/tun0/speed": "-1\n"})
    fams = families(fake_root({"proc/net/dev": NET_DEV, "proc/net/netstat": NETSTAT,
                               "proc/net/snmp": SNMP, "proc/net/snmp6": SNMP6,
                               "proc/net/sockstat": SOCKSTAT, **sysnet}))
    assert samples(fams["node_network_up"]) == {("eth0",): 1, ("tun0",): 0}
    info = {s.labels["device"]: s.labels for s in fams["node_network_info"].samples}
    assert info["eth0"]["address"] == "02:fc:00:00:00:01" and info["eth0"]["duplex"] == "full"
    assert info["tun0"]["address"] == ""
    assert samples(fams["node_network_mtu_bytes"]) == {("eth0",): 1500}
    assert samples(fams["node_network_flags"]) == {("eth0",): 0x1003}
    assert samples(fams["node_network_carrier_changes_total"]) == {("eth0",): 4}
    # 1000 Mbit/s in bytes; the unknown speed (-1) is left out
    assert samples(fams["node_network_speed_bytes"]) == {("eth0",): 125_000_000}
    assert samples(fams["node_network_receive_nohandler_total"]) == {("eth0",): 9}
    assert samples(fams["node_network_receive_bytes_total"])[("eth0",)] == 98765432
    names = {n for n in fams if n.startswith("node_netstat_")}
    assert names == {"node_netstat_TcpExt_SyncookiesSent", "node_netstat_TcpExt_ListenOverflows",
                     "node_netstat_TcpExt_TCPTimeouts", "node_netstat_Ip_Forwarding",
                     "node_netstat_Tcp_ActiveOpens", "node_netstat_Tcp_CurrEstab",
                     "node_netstat_Ip6_InOctets", "node_netstat_Udp6_InDatagrams",
                     "node_netstat_UdpLite6_InErrors"}
    assert fams["node_sockstat_TCP_inuse"].samples[0].value == 82


def _value(fams, name, **labels) -> float:
    return next(s.value for s in fams[name].samples
                if all(s.labels.get(k) == v for k, v in labels.items()))


def test_loopback_traffic_and_connects_move_the_real_counters():
    collector = HostCollector()
    before = families(collector)
    payload = b"x" * 1_000_000
    listener = socket.create_server((LOOPBACK, 0))
    opened = []
    for _ in range(5):  # five active opens from this side
        opened.append(socket.create_connection(listener.getsockname()))
        opened.append(listener.accept()[0])
    opened[0].sendall(payload)
    got = 0
    while got < len(payload):
        got += len(opened[1].recv(1 << 20))
    after = families(collector)
    for sock in opened + [listener]:
        sock.close()
    for name in ("node_network_receive_bytes_total", "node_network_transmit_bytes_total"):
        moved = _value(after, name, device="lo") - _value(before, name, device="lo")
        assert moved >= len(payload), name  # other tests may add to it, never less
    assert _value(after, "node_network_receive_packets_total", device="lo") > \
        _value(before, "node_network_receive_packets_total", device="lo")
    opens = after["node_netstat_Tcp_ActiveOpens"].samples[0].value - \
        before["node_netstat_Tcp_ActiveOpens"].samples[0].value
    assert opens >= 5
    assert after["node_sockstat_TCP_inuse"].samples[0].value >= 11  # our 11 sockets at least
    assert _value(after, "node_network_mtu_bytes", device="lo") == \
        int(open("/sys/class/net/lo/mtu").read())
    assert _value(after, "node_network_iface_id", device="lo") == socket.if_nametoindex("lo")
