#!/usr/bin/env python3
"""Shadowsocks inbound throughput: ours against shadowsocks-libev's ss-server, in one run.

iperf3 cannot speak SOCKS, so the client side is shadowsocks-libev's ss-tunnel (ss-local's
port-forwarding twin: the same client code, a fixed target). Paths, interleaved per round:

    direct:       iperf3 -> iperf3 server
    ss-server:    iperf3 -> ss-tunnel -> ss-server (C)        -> iperf3 server
    ehco:         iperf3 -> ss-tunnel -> ehco shadowsocks inbound -> iperf3 server

    python bench/bench_shadowsocks.py [--cipher aes-128-gcm] [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import LO, Procs, free_port, iperf, wait_port  # noqa: E402

PASSWORD = "bench-password"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cipher", default="aes-128-gcm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    for prog, pkg in (("iperf3", "iperf3"), ("ss-server", "shadowsocks-libev"),
                      ("ss-tunnel", "shadowsocks-libev")):
        if not shutil.which(prog):
            print(f"{prog} is needed (Debian package {pkg})", file=sys.stderr)
            return 2
    procs = Procs()
    try:
        iperf_port = free_port()
        procs.start("iperf3", "-s", "-B", LO, "-p", str(iperf_port), name="iperf3-server")
        target = f"{LO}:{iperf_port}"

        ss_port, ours_port = free_port(), free_port()
        procs.start("ss-server", "-s", LO, "-p", str(ss_port), "-k", PASSWORD, "-m", args.cipher,
                    name="ss-server")
        cfg = procs.tmp / "ehco.json"
        cfg.write_text(json.dumps({"xray_config": {
            "inbounds": [{"tag": "ss_proxy", "protocol": "shadowsocks", "listen": LO,
                          "port": ours_port, "settings": {"clients": [
                              {"password": PASSWORD, "method": args.cipher, "email": "bench"}],
                              "network": "tcp"}}],
            "outbounds": [{"protocol": "freedom"}]}}))
        ehco = procs.ehco("-c", str(cfg), name="ehco")

        paths = {"direct": iperf_port}
        for name, server_port in (("ss-server", ss_port), ("ehco", ours_port)):
            wait_port(server_port)
            local = free_port()
            procs.start("ss-tunnel", "-s", LO, "-p", str(server_port), "-l", str(local),
                        "-b", LO, "-k", PASSWORD, "-m", args.cipher, "-L", target,
                        name=f"ss-tunnel-{name}")
            wait_port(local)
            paths[name] = local
        results: dict[str, list[float]] = {name: [] for name in paths}
        for rnd in range(args.rounds):
            for name, port in paths.items():
                gbps = iperf(port, args.seconds)
                results[name].append(gbps)
                print(f"# round {rnd + 1} {name}: {gbps:.2f} Gbit/s", file=sys.stderr)
        med = {name: statistics.median(v) for name, v in results.items()}
        print(f"iperf3 through ss-tunnel, {args.cipher}, {args.rounds} interleaved rounds of "
              f"{args.seconds:g} s, medians")
        print()
        print("| server | Gbit/s | × ss-server | × direct |")
        print("|---|---:|---:|---:|")
        for name, value in med.items():
            print(f"| {name} | {value:.2f} | {value / med['ss-server']:.2f} | "
                  f"{value / med['direct']:.2f} |")
        print()
        with open(f"/proc/{ehco.pid}/status") as fh:
            hwm = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
        print(f"peak RSS of ehco: {int(hwm) / 1024:.0f} MiB")
    finally:
        procs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
