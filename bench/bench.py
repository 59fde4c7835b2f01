#!/usr/bin/env python3
"""Throughput and memory of the relay, side by side in one run, as ratios to direct iperf3.

Every path is measured in each round, rounds interleaved (direct, ehco, haproxy, direct, ...),
so a noisy moment on the machine hits every path alike; the table reports medians. Tunnel paths
are two-node chains on loopback (node A: raw in, tunnel out; node B: tunnel in, raw out).
Only loopback addresses are used.

    python bench/bench.py                 # all paths, 3 rounds of 5 s
    python bench/bench.py --only raw,haproxy --rounds 5 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LO = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((LO, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Procs:
    """Processes this script started, stopped by PID at the end."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="ehco-bench-"))

    def start(self, *argv: str, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def ehco(self, *args: str, name: str) -> subprocess.Popen:
        return self.start(sys.executable, "-m", "ehco_gevent", "--log_level", "warn", *args,
                          name=name)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def rss_mib(proc: subprocess.Popen) -> float:
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):  # peak resident set
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def setup_paths(procs: Procs, iperf_port: int, only: set[str] | None):
    """Start every relay under test; return {name: (port, [ehco procs])}."""
    paths: dict[str, tuple[int, list]] = {"direct": (iperf_port, [])}
    target = f"{LO}:{iperf_port}"

    def want(name):
        return only is None or name in only

    if want("raw"):
        port = free_port()
        p = procs.ehco("-l", f"{LO}:{port}", "-r", target, name="raw")
        paths["raw"] = (port, [p])
    if want("haproxy") and shutil.which("haproxy"):
        port = free_port()
        cfg = procs.tmp / "haproxy.cfg"
        cfg.write_text(f"""global
    maxconn 4096
    tune.bufsize 65536
defaults
    mode tcp
    option splice-auto
    timeout connect 3s
    timeout client 120s
    timeout server 120s
frontend f
    bind {LO}:{port}
    default_backend b
backend b
    server s1 {target}
""")
        procs.start("haproxy", "-f", str(cfg), "-db", name="haproxy")
        paths["haproxy"] = (port, [])
    for kind in ("ws", "wss", "mwss", "mtcp"):
        for frames in (False, True):
            name = kind + ("+frames" if frames else "")
            if not want(name) or (frames and kind == "mtcp"):
                continue
            a, b = free_port(), free_port()
            extra = ["--ws_frames"] if frames else []
            scheme = "wss" if kind in ("wss", "mwss") else ("ws" if kind == "ws" else "tcp")
            remote = f"{scheme}://{LO}:{b}" if scheme != "tcp" else f"{LO}:{b}"
            pb = procs.ehco("-l", f"{LO}:{b}", "-lt", kind, "-r", target, *extra, name=f"{name}-b")
            pa = procs.ehco("-l", f"{LO}:{a}", "-tt", kind, "-r", remote, *extra, name=f"{name}-a")
            paths[name] = (a, [pa, pb])
    for name, (port, ps) in list(paths.items()):
        try:
            wait_port(port)
            time.sleep(0.2)
            if any(p.poll() is not None for p in ps):
                raise RuntimeError("exited")
        except (OSError, RuntimeError) as exc:
            print(f"# {name}: not available ({exc}); see {procs.tmp}", file=sys.stderr)
            del paths[name]
    return paths


def iperf(port: int, seconds: float) -> float:
    out = subprocess.run(["iperf3", "-c", LO, "-p", str(port), "-t", str(seconds), "-J"],
                         capture_output=True, text=True, timeout=seconds + 30)
    data = json.loads(out.stdout)
    if "error" in data:
        raise RuntimeError(data["error"])
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--only", help="comma-separated paths (direct is always measured)")
    args = ap.parse_args()
    if not shutil.which("iperf3"):
        print("iperf3 is needed (Debian package iperf3)", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    procs = Procs()
    try:
        iperf_port = free_port()
        procs.start("iperf3", "-s", "-B", LO, "-p", str(iperf_port), name="iperf3-server")
        wait_port(iperf_port)
        paths = setup_paths(procs, iperf_port, only)
        results: dict[str, list[float]] = {name: [] for name in paths}
        for rnd in range(args.rounds):
            for name, (port, _) in paths.items():
                try:
                    gbps = iperf(port, args.seconds)
                except Exception as exc:  # one failed run is reported, not fatal
                    print(f"# round {rnd + 1} {name}: failed: {exc}", file=sys.stderr)
                    continue
                results[name].append(gbps)
                print(f"# round {rnd + 1} {name}: {gbps:.2f} Gbit/s", file=sys.stderr)
        direct = statistics.median(results["direct"])
        print(f"iperf3 TCP, loopback, {args.rounds} interleaved rounds of {args.seconds:g} s, "
              f"medians; {os.cpu_count()} cores")
        print()
        print("| path | Gbit/s | × direct | peak RSS of ehco (MiB) |")
        print("|---|---:|---:|---:|")
        for name, values in results.items():
            if not values:
                continue
            med = statistics.median(values)
            rss = ", ".join(f"{rss_mib(p):.0f}" for p in paths[name][1]) or "-"
            print(f"| {name} | {med:.2f} | {med / direct:.2f} | {rss} |")
    finally:
        procs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
