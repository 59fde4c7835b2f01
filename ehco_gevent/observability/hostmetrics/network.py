"""node_exporter's ``netdev``, ``netclass``, ``netstat`` and ``sockstat`` collectors:
/proc/net/dev, /sys/class/net/*, /proc/net/{netstat,snmp,snmp6} and /proc/net/sockstat{,6}.

ehco's traffic sync and both dashboards read ``node_network_{receive,transmit}_bytes_total``."""

from __future__ import annotations

import os
import re
from typing import Iterator

from prometheus_client.core import Metric

from .source import HostPaths, counter, gauge, read, read_or_none, untyped

#: node_exporter's default ``--collector.netstat.fields``
NETSTAT_FIELDS = re.compile(
    r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)"
    r"|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)"
    r"|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)"
    r"|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$")

#: /sys/class/net/DEV attribute -> node_exporter's family, counter or gauge (netclass)
NETCLASS_VALUES = (
    ("addr_assign_type", "address_assign_type", "gauge"),
    ("carrier", "carrier", "gauge"),
    ("carrier_changes", "carrier_changes", "counter"),
    ("carrier_up_count", "carrier_up_changes", "counter"),
    ("carrier_down_count", "carrier_down_changes", "counter"),
    ("dev_id", "device_id", "gauge"),
    ("dormant", "dormant", "gauge"),
    ("flags", "flags", "gauge"),
    ("ifindex", "iface_id", "gauge"),
    ("iflink", "iface_link", "gauge"),
    ("link_mode", "iface_link_mode", "gauge"),
    ("mtu", "mtu_bytes", "gauge"),
    ("name_assign_type", "name_assign_type", "gauge"),
    ("netdev_group", "net_dev_group", "gauge"),
    ("tx_queue_len", "transmit_queue_length", "gauge"),
    ("type", "protocol_type", "gauge"),
)
NETCLASS_INFO = ("address", "broadcast", "duplex", "ifalias", "operstate")


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev -> {device: {receive_bytes, receive_packets, ..., transmit_bytes, ...}}."""
    lines = text.splitlines()
    if len(lines) < 2:
        return {}
    # the second header line names the columns of each half: "bytes packets errs drop ..."
    _, rx_head, tx_head = lines[1].split("|")
    names = [f"receive_{n}" for n in rx_head.split()] + [f"transmit_{n}" for n in tx_head.split()]
    out: dict[str, dict[str, int]] = {}
    for line in lines[2:]:
        device, sep, rest = line.partition(":")
        if sep:
            out[device.strip()] = {name: int(v) for name, v in zip(names, rest.split())}
    return out


def parse_netstat(text: str) -> dict[str, float]:
    """/proc/net/netstat or /proc/net/snmp (a header line then a value line per protocol) ->
    {"Tcp_ActiveOpens": value, ...} for every field."""
    out: dict[str, float] = {}
    lines = text.splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        proto, _, names = head.partition(":")
        proto2, _, numbers = values.partition(":")
        if proto != proto2:
            continue
        for name, value in zip(names.split(), numbers.split()):
            out[f"{proto}_{name}"] = float(value)
    return out


def parse_snmp6(text: str) -> dict[str, float]:
    """/proc/net/snmp6 ("Udp6InDatagrams 12" lines) -> {"Udp6_InDatagrams": 12, ...}: the
    protocol is the name up to its first "6", as node_exporter splits it."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and "6" in fields[0]:
            cut = fields[0].index("6") + 1
            out[f"{fields[0][:cut]}_{fields[0][cut:]}"] = float(fields[1])
    return out


def parse_sockstat(text: str, page_size: int) -> dict[str, float]:
    """/proc/net/sockstat{,6} -> node_exporter's names: "sockets: used 5" -> sockets_used,
    "TCP: inuse 3 ... mem 2" -> TCP_inuse, TCP_mem and TCP_mem_bytes (pages times the page
    size); in sockstat6 the protocols already end in 6 (TCP6_inuse)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        proto, _, rest = line.partition(":")
        fields = rest.split()
        for key, value in zip(fields[::2], fields[1::2]):
            out[f"{proto}_{key}"] = float(value)
            if key == "mem":
                out[f"{proto}_mem_bytes"] = float(value) * page_size
    return out


def collect_netdev(paths: HostPaths) -> Iterator[Metric]:
    devices = parse_net_dev(read(f"{paths.proc}/net/dev"))
    # netlink gives node_exporter one more counter than /proc/net/dev has; sysfs has it too
    for device, stats in devices.items():
        nohandler = read_or_none(f"{paths.sys}/class/net/{device}/statistics/rx_nohandler")
        if nohandler is not None and nohandler.isdigit():
            stats["receive_nohandler"] = int(nohandler)
    names = sorted({name for stats in devices.values() for name in stats})
    for name in names:
        yield counter(f"node_network_{name}", f"Network device statistic {name}.",
                      (([device], stats[name]) for device, stats in sorted(devices.items())
                       if name in stats), labels=["device"])


def read_netclass(sys_root: str) -> dict[str, dict[str, str]]:
    """/sys/class/net/* -> {device: {attribute: text}}, attributes that cannot be read left out."""
    base = f"{sys_root}/class/net"
    out: dict[str, dict[str, str]] = {}
    for device in sorted(os.listdir(base)):
        attrs = {}
        for attr in [a for a, _, _ in NETCLASS_VALUES] + list(NETCLASS_INFO) + ["speed"]:
            value = read_or_none(f"{base}/{device}/{attr}")
            if value is not None:
                attrs[attr] = value
        out[device] = attrs
    return out


def netclass_families(devices: dict[str, dict[str, str]]) -> Iterator[Metric]:
    """node_exporter's netclass families from the attributes :func:`read_netclass` found."""
    yield gauge("node_network_up", "Value is 1 if operstate is 'up', 0 otherwise.",
                (([d], 1.0 if a.get("operstate") == "up" else 0.0) for d, a in devices.items()),
                labels=["device"])
    yield gauge("node_network_info", "Non-numeric data from /sys/class/net/<iface>, value is "
                "always 1.", (([d] + [a.get(k, "") for k in NETCLASS_INFO], 1.0)
                              for d, a in devices.items()), labels=["device", *NETCLASS_INFO])
    for attr, name, kind in NETCLASS_VALUES:
        make = counter if kind == "counter" else gauge
        yield make(f"node_network_{name}", f"Network device property: {name}",
                   (([d], int(a[attr], 0)) for d, a in devices.items()
                    if _is_int(a.get(attr))), labels=["device"])
    # Mbit/s in sysfs; -1 (unknown) is left out, as node_exporter does
    yield gauge("node_network_speed_bytes", "Network device property: speed_bytes",
                (([d], int(a["speed"]) * 1000 * 1000 / 8) for d, a in devices.items()
                 if _is_int(a.get("speed")) and int(a["speed"]) >= 0), labels=["device"])


def _is_int(text: str | None) -> bool:
    try:
        int(text, 0)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def collect_netclass(paths: HostPaths) -> Iterator[Metric]:
    yield from netclass_families(read_netclass(paths.sys))


def collect_netstat(paths: HostPaths) -> Iterator[Metric]:
    fields = parse_netstat(read(f"{paths.proc}/net/netstat"))
    fields.update(parse_netstat(read(f"{paths.proc}/net/snmp")))
    snmp6 = f"{paths.proc}/net/snmp6"
    if os.path.exists(snmp6):  # absent with IPv6 disabled
        fields.update(parse_snmp6(read(snmp6)))
    for key, value in sorted(fields.items()):
        if NETSTAT_FIELDS.match(key):
            yield untyped(f"node_netstat_{key}", f"Statistic {key}.", value)


def collect_sockstat(paths: HostPaths) -> Iterator[Metric]:
    page_size = os.sysconf("SC_PAGE_SIZE")
    values = parse_sockstat(read(f"{paths.proc}/net/sockstat"), page_size)
    sockstat6 = f"{paths.proc}/net/sockstat6"
    if os.path.exists(sockstat6):
        values.update(parse_sockstat(read(sockstat6), page_size))
    for key, value in sorted(values.items()):
        yield gauge(f"node_sockstat_{key}", f"Number of {key.replace('_', ' ')}.", value=value)
