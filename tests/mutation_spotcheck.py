"""Plant small, realistic bugs one at a time in a copy of the tree and check a test catches each.

Run before resolving an issue that touches the data path (docs/testing.md):

    python tests/mutation_spotcheck.py            # every mutant
    python tests/mutation_spotcheck.py no-half-close  # one, by name

Each mutant names the exact text it replaces, so a refactor that moves that text makes the
script say "not applicable" instead of silently testing nothing. The copy is a `git worktree`
of HEAD in a temporary folder (the working tree is never touched); the tests named for a mutant
run there with that copy first on the path. Exit status 1 when any mutant survives.
(Not collected by pytest: the file name does not start with test_.)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant("trojan-password-any-inbound", "ehco_gevent/proxy/users.py",
           'u.protocol == "trojan" and u.enable\n                     '
           "and (u.inbound_tag is None or u.inbound_tag == tag)}",
           'u.protocol == "trojan" and u.enable}',
           ("tests/proxy/test_trojan.py",)),
    Mutant("pump-stops-when-server-direction-ends", "ehco_gevent/pump.py",
           "        if exc is not None:\n            get_hub().loop.run_callback(self._interrupt)",
           "        if True:\n            get_hub().loop.run_callback(self._interrupt)",
           ("tests/transports/test_ws.py", "tests/transports/test_mtcp.py",
            "tests/test_relay_e2e.py")),
    Mutant("no-half-close", "ehco_gevent/pump.py",
           "        copy_loop(src, dst, count)\n    dst.shutdown_write()",
           "        copy_loop(src, dst, count)\n    dst.close()",
           ("tests/test_relay_e2e.py", "tests/transports/test_ws.py")),
    Mutant("smux-length-big-endian", "ehco_gevent/transports/smux.py",
           'HEADER = struct.Struct("<BBHI")', 'HEADER = struct.Struct(">BBHI")',
           ("tests/transports/test_smux.py",)),
    Mutant("round-robin-stuck", "ehco_gevent/remotes/balancer.py",
           "            return sorted(pool, key=lambda s: (s.index - turn) % len(self.states))",
           "            return list(pool)",
           ("tests/test_relay_e2e.py",)),
    Mutant("failed-remote-never-marked-down", "ehco_gevent/remotes/balancer.py",
           "        if state.fails >= self.max_fails:", "        if False:",
           ("tests/remotes/test_balancer.py", "tests/remotes/test_balancing_e2e.py")),
    Mutant("proxy-header-port-byte-order", "ehco_gevent/transports/proxy_protocol.py",
           'body = a.packed + b.packed + struct.pack("!HH", src[1], dst[1])',
           'body = a.packed + b.packed + struct.pack("<HH", src[1], dst[1])',
           ("tests/transports/test_proxy_protocol.py",)),
    Mutant("udp-session-per-datagram", "ehco_gevent/udp.py",
           "            session = self.sessions.get(client)",
           "            session = None",
           ("tests/test_relay_e2e.py", "tests/test_udp.py")),
]


def run(mutant: Mutant, tree: Path) -> str:
    target = tree / mutant.path
    text = target.read_text()
    if text.count(mutant.old) != 1:
        return "not applicable (text moved: update the mutant)"
    target.write_text(text.replace(mutant.old, mutant.new))
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                 *mutant.tests], cwd=tree, capture_output=True, text=True)
    finally:
        target.write_text(text)
    if result.returncode == 1:
        return "caught"
    if result.returncode == 0:
        return "SURVIVED"
    return f"broken mutant (pytest exit {result.returncode}: fix the mutant)"


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), "HEAD"], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            outcomes = {m.name: run(m, tree) for m in chosen}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           capture_output=True)
    for name, outcome in outcomes.items():
        print(f"{name:40} {outcome}")
    return 1 if any(o.startswith("SURVIVED") for o in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
