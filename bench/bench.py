#!/usr/bin/env python3
"""ehco-gevent side by side with the Go relay and haproxy: connection rate, memory per held
connection, throughput. One run, every path in every round (rounds interleaved, so a noisy
moment hits all paths alike), medians and ratios printed as Markdown tables.

Paths: ``raw`` is one relay node; every tunnel (ws, wss, mwss, mtcp) is a two-node chain on
loopback (node A: raw in, tunnel out; node B: tunnel in, raw out). Implementations:

* ehco-gevent, once per ``--ehco NAME=ARGS`` variant (default ``ehco=`` : no extra arguments;
  add ``--ehco "auto=--workers auto"`` to compare worker counts);
* the Go relay, built from tests/interop/goehco (goroutine per connection, xtaci/smux,
  gorilla/websocket: the same kind of program as Go ehco);
* haproxy (raw only: a TCP relay with ``option splice-auto``).

Sections:

* ``rate``: wrk, one HTTP request per connection (``Connection: close``), to haproxy answering
  by itself (``http-request return``: the server behind costs little CPU);
* ``memory``: RSS growth per idle connection with ``--conns`` held open (each connection
  echoed 16 bytes once, so it is established end to end), summed over both nodes of a chain,
  and open fds per connection; a fresh chain per round;
* ``throughput``: ``iperf3 -P 8`` through each path, and direct.

    python bench/bench.py --quick                       # everything, short (~4 min)
    python bench/bench.py                               # the README's tables
    python bench/bench.py rate --ehco "w1=" --ehco "auto=--workers auto"
    python bench/bench.py memory --transports mwss --conns 5000
    python bench/bench.py throughput --streams 1 --transports raw,ws,ws+frames,wss,mwss

Only 127.0.0.1 is used; every process started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop import gobuild  # noqa: E402

LO = "127.0.0.1"
TRANSPORTS = ("raw", "ws", "wss", "mwss", "mtcp")
RATE_TRANSPORTS = ("raw", "ws", "mwss")
HOLDECHO = ROOT / "tests" / "holdecho.py"
FLOOR_RELAY = ROOT / "bench" / "floor_relay.py"
FLOOR_EPOLL = ROOT / "bench" / "floor_epoll.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """True once a TCP socket listens on ``port`` (from /proc/net/tcp: no probe connection,
    which a relay would carry to the target: an iperf3 server serves one client at a time and
    a probe that a Go smux chain keeps half-open would block it for good)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if time.monotonic() > deadline:
            raise OSError(f"nothing listens on port {port} after {timeout:g} s")
        time.sleep(0.05)


def note(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


class Procs:
    """Processes this script started, stopped by PID."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], name: str, **popen) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, **popen)
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen] | None = None) -> None:
        victims = self.procs if procs is None else procs
        for proc in victims:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in victims:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [p for p in self.procs if p not in victims]


# -- implementations -------------------------------------------------------------------------------
@dataclass
class Impl:
    name: str
    kind: str  # ehco, go, haproxy
    args: list[str] = field(default_factory=list)
    binary: str = ""

    def supports(self, transport: str) -> bool:
        return transport == "raw" if self.kind in ("haproxy", "floor") else True

    def chain(self, procs: Procs, path: str, target: int) -> tuple[int, list]:
        """Start the path (a transport, ``+frames`` for RFC 6455 frames mode); (entry port,
        processes of the path)."""
        transport, _, mode = path.partition("+")
        a = free_port()
        tag = f"{self.name}-{transport}-{a}"
        if self.kind == "haproxy":
            cfg = procs.tmp / f"{tag}.cfg"
            cfg.write_text(HAPROXY_TCP.format(port=a, target=target))
            return a, [procs.start(["haproxy", "-f", str(cfg), "-db"], tag)]
        if self.kind == "floor":
            return a, [procs.start([sys.executable, self.binary, str(a), str(target),
                                    *self.args], tag)]
        if transport == "raw":
            if self.kind == "go":
                argv = [self.binary, "-transport", "raw", "-l", f"{LO}:{a}", "-r", f"{LO}:{target}"]
            else:
                argv = self._ehco("-l", f"{LO}:{a}", "-r", f"{LO}:{target}")
            return a, [procs.start(argv, tag)]
        b = free_port()
        frames = mode == "frames"
        if self.kind == "go":
            extra = ["-frames"] if frames else []
            server = [self.binary, "-mode", "server", "-transport", transport, *extra,
                      "-l", f"{LO}:{b}", "-r", f"{LO}:{target}"]
            client = [self.binary, "-mode", "client", "-transport", transport, *extra,
                      "-l", f"{LO}:{a}", "-r", f"{LO}:{b}"]
        else:
            extra = ["--ws_frames"] if frames else []
            scheme = {"ws": "ws://", "wss": "wss://", "mwss": "wss://"}.get(transport, "")
            server = self._ehco("-l", f"{LO}:{b}", "-lt", transport, *extra,
                                "-r", f"{LO}:{target}")
            client = self._ehco("-l", f"{LO}:{a}", "-tt", transport, *extra,
                                "-r", f"{scheme}{LO}:{b}")
        pb = procs.start(server, tag + "-b")
        wait_port(b)
        pa = procs.start(client, tag + "-a")
        return a, [pa, pb]

    def _ehco(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ehco_gevent", "--log_level", "warn", *self.args, *args]


HAPROXY_TCP = """global
    maxconn 4000
defaults
    mode tcp
    option splice-auto
    timeout connect 3s
    timeout client 120s
    timeout server 120s
frontend f
    bind 127.0.0.1:{port}
    default_backend b
backend b
    server s1 127.0.0.1:{target}
"""

HAPROXY_HTTP = """global
    maxconn 8000
defaults
    mode http
    timeout connect 3s
    timeout client 30s
    timeout server 30s
frontend f
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "ok\\n"
"""


def implementations(args, tmp: Path) -> list[Impl]:
    impls = []
    for spec in args.ehco or ["ehco="]:
        name, _, extra = spec.partition("=")
        impls.append(Impl(name or "ehco", "ehco", shlex.split(extra)))
    for count in args.floor or []:
        impls.append(Impl(f"floor{count}", "floor", [str(count)], str(FLOOR_RELAY)))
    for count in args.floor_epoll or []:
        impls.append(Impl(f"epoll{count}", "floor", [str(count)], str(FLOOR_EPOLL)))
    if not args.no_go:
        reason = gobuild.missing()
        if reason:
            note(f"Go relay left out: {reason}")
        else:
            impls.append(Impl("go", "go", binary=str(gobuild.build(tmp))))
    if not args.no_haproxy:
        if shutil.which("haproxy"):
            impls.append(Impl("haproxy", "haproxy"))
        else:
            note("haproxy left out: not installed (Debian package haproxy)")
    return impls


def start_paths(procs: Procs, impls: list[Impl], transports, target: int) -> dict:
    """{(impl name, transport): (port, procs)} for every path that came up."""
    paths = {}
    for impl in impls:
        for transport in transports:
            if not impl.supports(transport):
                continue
            try:
                port, ps = impl.chain(procs, transport, target)
                wait_port(port)
                time.sleep(0.2)
                if any(p.poll() is not None for p in ps):
                    raise RuntimeError("a node exited")
            except (OSError, RuntimeError) as exc:
                note(f"{impl.name} {transport}: not available ({exc}); logs in {procs.tmp}")
                continue
            paths[(impl.name, transport)] = (port, ps)
    return paths


def interleaved(args, procs: Procs, impls: list[Impl], transports, target: int, section: str,
                unit: str, measure) -> tuple[dict, dict]:
    """Start every path to ``target``, then ``args.rounds`` rounds of ``measure(port)`` over
    all of them (and over ``target`` itself, as ("direct", "raw")); ({path: [values]},
    {path: [CPU seconds the path's relay processes used during each measurement]})."""
    paths = start_paths(procs, impls, transports, target)
    paths[("direct", "raw")] = (target, [])
    results: dict = {key: [] for key in paths}
    cpu: dict = {key: [] for key in paths}
    try:
        for rnd in range(args.rounds):
            for key, (port, ps) in paths.items():
                before = cpu_seconds(ps)
                try:
                    value = measure(port)
                except Exception as exc:  # one failed run is reported, not fatal
                    note(f"{section} round {rnd + 1} {key}: failed: {exc}")
                    continue
                results[key].append(value)
                cpu[key].append(cpu_seconds(ps) - before)
                note(f"{section} round {rnd + 1} {key[0]} {key[1]}: {value:.2f} {unit}")
    finally:
        procs.stop([p for _, ps in paths.values() for p in ps])
    return results, cpu


def tree(pid: int) -> list[int]:
    """The process and all its descendants (``--workers N``: the supervisor and its workers)."""
    import psutil

    proc = psutil.Process(pid)
    return [pid] + [child.pid for child in proc.children(recursive=True)]


def cpu_seconds(procs: list) -> float:
    """User + system CPU seconds used so far by these processes and their descendants."""
    import psutil

    total = 0.0
    for proc in procs:
        for pid in tree(proc.pid):
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def per_unit(cpu: dict, results: dict, scale) -> dict:
    """{path: [CPU cost per unit of work]} from each measurement's CPU seconds and result
    (``scale(result)``: how many units that measurement moved)."""
    return {key: [c / scale(r) for c, r in zip(cpu[key], results[key]) if scale(r)]
            for key in cpu if key[0] != "direct"}


def table(title: str, unit: str, results: dict, impls: list[Impl], transports, base: str | None,
          fmt: str = "{:.0f}", lower_is_better: bool = False) -> None:
    """One row per transport, one column per implementation (value and ratio to ``base``)."""
    names = [i.name for i in impls]
    print(f"\n### {title}\n")
    cols = [f"{n} ({unit})" for n in names]
    if base in names:
        cols += [f"{n} ÷ {base}" for n in names if n != base]
    print("| path | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for transport in transports:
        meds = {}
        for n in names:
            values = results.get((n, transport))
            meds[n] = statistics.median(values) if values else None
        if all(v is None for v in meds.values()):
            continue
        cells = [fmt.format(meds[n]) if meds[n] is not None else "" for n in names]
        if base in names:
            for n in names:
                if n == base:
                    continue
                if meds[n] is not None and meds[base]:
                    cells.append(f"{meds[n] / meds[base]:.2f}")
                else:
                    cells.append("")
        print(f"| {transport} | " + " | ".join(cells) + " |")
    if lower_is_better:
        print("\n(lower is better)")


# -- connection rate -------------------------------------------------------------------------------
def wrk(port: int, seconds: float, conns: int) -> float:
    out = subprocess.run(["wrk", "-c", str(conns), "-t", "2", "-d", f"{seconds:g}s",
                          "-H", "Connection: close", f"http://{LO}:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if not match:
        raise RuntimeError(out.strip()[-300:])
    if errors:
        note(f"  wrk socket errors on port {port}: {errors.group(1)}")
    return float(match.group(1))


def run_rate(args, procs: Procs, impls: list[Impl]) -> None:
    if not shutil.which("wrk"):
        note("rate: wrk not installed (Debian package wrk)")
        return
    if not shutil.which("haproxy"):
        note("rate: haproxy is the HTTP server behind the paths; not installed")
        return
    http_port = free_port()
    cfg = procs.tmp / "http.cfg"
    cfg.write_text(HAPROXY_HTTP.format(port=http_port))
    server = procs.start(["haproxy", "-f", str(cfg), "-db"], "http-server")
    wait_port(http_port)
    transports = args.transports or RATE_TRANSPORTS
    results, cpu = interleaved(args, procs, impls, transports, http_port, "rate", "req/s",
                               lambda port: wrk(port, args.seconds, args.wrk_conns))
    procs.stop([server])
    print(f"\nConnection rate: wrk -c {args.wrk_conns} -t 2, one request per connection "
          f"(Connection: close), {args.rounds} interleaved rounds of {args.seconds:g} s, medians; "
          f"direct to the HTTP server: "
          f"{statistics.median(results[('direct', 'raw')] or [0]):.0f} req/s")
    table("Connections per second", "req/s", results, impls, transports, base="go")
    # what each connection cost the relay's processes (user + system, every node, every
    # worker): on a machine whose cores are all busy this, not the core count, sets the rate
    table("Relay CPU per 1,000 connections", "CPU ms", per_unit(
        cpu, results, lambda rate: rate * args.seconds / 1e6), impls, transports, base="go",
        fmt="{:.0f}", lower_is_better=True)


# -- memory per held connection --------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    """Resident KiB of the process and its descendants."""
    total = 0
    for p in tree(pid):
        with open(f"/proc/{p}/status") as fh:
            total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return total


def fd_count(pid: int) -> int:
    """Open fds of the process and its descendants."""
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in tree(pid))


def echo_once(conns: list[socket.socket]) -> None:
    for c in conns:
        c.sendall(b"0123456789abcdef")
    for c in conns:
        got = b""
        while len(got) < 16:
            chunk = c.recv(16 - len(got))
            if not chunk:
                raise ConnectionError("closed before the echo came back")
            got += chunk


def hold(port: int, n: int) -> list[socket.socket]:
    """n connections through the path, each echoed once; held open."""
    conns: list[socket.socket] = []
    try:
        for start in range(0, n, 250):
            batch = [socket.create_connection((LO, port), timeout=30)
                     for _ in range(min(250, n - start))]
            conns += batch
            echo_once(batch)
    except BaseException:
        for c in conns:
            c.close()
        raise
    return conns


def measure_memory(procs: Procs, impl: Impl, transport: str, target: int, n: int) -> tuple[float, float]:
    """(KiB of RSS growth per held connection, fds per held connection) over the chain."""
    port, ps = impl.chain(procs, transport, target)
    try:
        wait_port(port)
        for c in hold(port, 50):  # warm up: one-time allocations are not per connection
            c.close()
        time.sleep(1.0)
        before = sum(rss_kib(p.pid) for p in ps)
        fds_before = sum(fd_count(p.pid) for p in ps)
        conns = hold(port, n)
        time.sleep(1.0)
        after = sum(rss_kib(p.pid) for p in ps)
        fds_after = sum(fd_count(p.pid) for p in ps)
        for c in conns:
            c.close()
        return (after - before) / n, (fds_after - fds_before) / n
    finally:
        procs.stop(ps)


def run_memory(args, procs: Procs, impls: list[Impl]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < args.conns + 500:
        note(f"memory: {args.conns} connections need more open files than the hard limit {hard}")
        return
    server = subprocess.Popen([sys.executable, str(HOLDECHO)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    target = int(server.stdout.readline())
    transports = args.transports or TRANSPORTS
    kib: dict = {}
    fds: dict = {}
    try:
        for rnd in range(args.memory_rounds):
            for impl in impls:
                for transport in transports:
                    if not impl.supports(transport) or impl.kind == "haproxy":
                        continue
                    key = (impl.name, transport)
                    try:
                        per_conn, per_fd = measure_memory(procs, impl, transport, target, args.conns)
                    except Exception as exc:
                        note(f"memory round {rnd + 1} {key}: failed: {exc}")
                        continue
                    kib.setdefault(key, []).append(per_conn)
                    fds.setdefault(key, []).append(per_fd)
                    note(f"memory round {rnd + 1} {impl.name} {transport}: {per_conn:.1f} KiB, "
                         f"{per_fd:.2f} fds per connection")
    finally:
        server.stdin.close()
        server.wait(10)
    shown = [i for i in impls if i.kind != "haproxy"]
    print(f"\nMemory: RSS growth per idle connection with {args.conns} held (both nodes of a "
          f"chain), {args.memory_rounds} round(s), medians")
    table("KiB per held connection", "KiB", kib, shown, transports, base="go", fmt="{:.1f}",
          lower_is_better=True)
    table("Open fds per held connection", "fds", fds, shown, transports, base="go", fmt="{:.2f}",
          lower_is_better=True)


# -- throughput ------------------------------------------------------------------------------------
def iperf(port: int, seconds: float, streams: int) -> float:
    out = subprocess.run(["iperf3", "-c", LO, "-p", str(port), "-t", f"{seconds:g}",
                          "-P", str(streams), "-J"],
                         capture_output=True, text=True, timeout=seconds + 30)
    data = json.loads(out.stdout)
    if "error" in data:
        raise RuntimeError(data["error"])
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def run_throughput(args, procs: Procs, impls: list[Impl]) -> None:
    if not shutil.which("iperf3"):
        note("throughput: iperf3 not installed (Debian package iperf3)")
        return
    iperf_port = free_port()
    server = procs.start(["iperf3", "-s", "-B", LO, "-p", str(iperf_port)], "iperf3-server")
    wait_port(iperf_port)
    transports = args.transports or TRANSPORTS
    results, cpu = interleaved(args, procs, impls, transports, iperf_port, "throughput",
                               "Gbit/s", lambda port: iperf(port, args.seconds, args.streams))
    procs.stop([server])
    print(f"\nThroughput: iperf3 -P {args.streams}, {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s, medians; direct: "
          f"{statistics.median(results[('direct', 'raw')] or [0]):.2f} Gbit/s")
    table("Gbit/s", "Gbit/s", results, impls, transports, base="go", fmt="{:.2f}")
    # the cost per byte behind the rate: with iperf3 and both nodes on two cores, the machine
    # is CPU-bound, so the path that spends less CPU per gigabyte moves more of them
    table("Relay CPU per GB moved (every node of the path)", "CPU s", per_unit(
        cpu, results, lambda gbit: gbit * args.seconds / 8), impls, transports, base="go",
        fmt="{:.2f}", lower_is_better=True)


SECTIONS = {"rate": run_rate, "memory": run_memory, "throughput": run_throughput}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sections", nargs="*", choices=[*SECTIONS, []], metavar="SECTION",
                    help="rate, memory, throughput (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="1 round of 3 s, 1,000 held connections: checks the setup, rough numbers")
    ap.add_argument("--ehco", action="append", metavar="NAME=ARGS",
                    help="an ehco-gevent variant: column name and extra arguments (repeatable)")
    ap.add_argument("--transports", type=lambda s: tuple(s.split(",")),
                    help="comma-separated paths among raw,ws,wss,mwss,mtcp; ws+frames, "
                         "wss+frames, mwss+frames for RFC 6455 frames mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=5000, help="held connections (memory)")
    ap.add_argument("--memory-rounds", type=int, default=1)
    ap.add_argument("--wrk-conns", type=int, default=32)
    ap.add_argument("--streams", type=int, default=8, help="iperf3 -P")
    ap.add_argument("--floor", type=int, action="append", metavar="N",
                    help="add the least a gevent relay can do (bench/floor_relay.py) with N "
                         "processes, raw only; repeat for several N")
    ap.add_argument("--floor-epoll", type=int, action="append", metavar="N",
                    help="add the least CPython can do without gevent (bench/floor_epoll.py) "
                         "with N processes, raw only")
    ap.add_argument("--no-go", action="store_true")
    ap.add_argument("--no-haproxy", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.conns = 1, 3, 1000
    tmp = Path(tempfile.mkdtemp(prefix="ehco-bench-"))
    procs = Procs(tmp)
    print(f"ehco-gevent benchmarks, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    try:
        impls = implementations(args, tmp)
        for section in args.sections or SECTIONS:
            SECTIONS[section](args, procs, impls)
    finally:
        procs.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
