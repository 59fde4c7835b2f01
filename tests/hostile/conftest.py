"""The hostile suite's node: one real ``ehco`` process with a raw relay (the probes' path), tunnel
listeners of every kind (the attacks' targets) and the web server, all to one echo server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from . import attack
from ..support import LOOPBACK, EchoServer, EhcoProcess, free_port, wait_port, write_config

#: limits the node runs with: small deadlines and caps so the tests see them act quickly
NODE_LIMITS = {
    "smux_handshake_timeout": 1.5,
    "smux_max_streams": 4,
    "tunnel_max_handshakes": 600,
    # a flooder's cut connection is held this long before its reset: the default (10 s) in
    # the long mode, whose timings are the ones an operator gets; 1 s in the short CI floods,
    # so that each sees the attacker cut and coming back
    "flood_hold_seconds": 10.0 if attack.LONG_MODE else 1.0,
}
#: relay label -> listen type; one relay per attack, so each attack's rate-limited log line
#: (one per relay and cause per 10 s) is its own
LISTENERS = {"raw": "raw", "mtcp": "mtcp", "mtcp-nop": "mtcp", "mtcp-psh": "mtcp",
             "mwss": "mwss", "ws": "ws"}


@dataclass
class Node:
    proc: EhcoProcess
    echo: EchoServer
    web_port: int
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def log_lines(self, *needles: str) -> list[str]:
        """The node's log lines that hold every one of ``needles``."""
        return [line for line in self.proc.log.splitlines() if all(n in line for n in needles)]


def start_node(tmp_path, limits: dict, ws_frames: bool = True) -> Node:
    """ehco with the relays of LISTENERS, ws in frames mode
    (so WebSocket frame reading is under attack too)."""
    echo = EchoServer()
    ports = {label: free_port() for label in LISTENERS}
    web_port = free_port()
    relays = [{"label": label, "listen": f"{LOOPBACK}:{port}", "listen_type": LISTENERS[label],
               "transport_type": "raw", "tcp_remotes": [f"{LOOPBACK}:{echo.port}"],
               **({"ws_frames": True} if LISTENERS[label] == "ws" and ws_frames else {})}
              for label, port in ports.items()]
    cfg = {"web_host": LOOPBACK, "web_port": web_port, "enable_ping": False,
           "log_level": "info", "relay_configs": relays, **limits}
    proc = EhcoProcess(["-c", str(write_config(tmp_path, cfg))], tmp_path)
    node = Node(proc, echo, web_port, ports)
    try:
        for port in (*ports.values(), web_port):
            wait_port(port)
    except Exception:
        proc.stop()
        echo.close()
        raise
    return node


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = start_node(tmp_path_factory.mktemp("hostile"), NODE_LIMITS)
    yield node
    node.proc.stop()
    node.echo.close()
