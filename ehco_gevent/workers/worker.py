"""A relay worker process (``python -m ehco_gevent.workers --fd FD --slot S ...``).

It runs the relays the supervisor sends it, with the same code a single process runs
(:class:`~ehco_gevent.server.RelayServer` and its reload rules), on listeners that share their
ports with the other workers (``SO_REUSEPORT``). It has no web server and reads no config: the
supervisor's resolved relay list (subscription relays included) comes over the channel, and the
supervisor asks it for counters, connection lists and closes when a page or a scrape needs them.

It stops when the supervisor says so, on SIGTERM, or when the channel closes (the supervisor is
gone: a worker never outlives it). SIGINT and SIGHUP are the supervisor's to act on: a Ctrl-C or
a ``kill -HUP`` sent to the whole process group reaches the workers too, and the supervisor then
stops or reloads them in order.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import gevent
from gevent import socket
from gevent.event import Event

from .. import addresses, logs
from ..guards import limits as node_limits
from ..config import RelayConfig
from ..connections import Connection, ConnectionRegistry
from ..observability.metrics import freeze_startup_objects
from ..server import RelayServer
from .channel import Peer

log = logging.getLogger("ehco.workers")

#: dial times kept for the supervisor between two of its polls (it polls every few seconds;
#: this bounds memory if it stops asking)
MAX_PENDING_OPENS = 200_000


def wire(conn: Connection) -> Connection:
    """A connection record as it crosses the channel: a copy without its closer."""
    return replace(conn, closer=None)


class Worker:
    """The relays of one worker process and the answers to the supervisor's requests."""

    def __init__(self, slot: int, id_start: int, id_step: int):
        self.slot = slot
        self.registry = ConnectionRegistry()
        # ids unique across the node: the supervisor tells every worker its own residue
        self.registry._ids = itertools.count(id_start, id_step)
        self.relays = RelayServer(self.registry)
        self.opens: list[tuple[str, str, str, str, float]] = []
        self.opens_dropped = 0
        self.snapshots = itertools.count(1)
        self.registry.open_listeners.append(self._record_open)
        self.done = Event()

    def _record_open(self, conn: Connection) -> None:
        if len(self.opens) < MAX_PENDING_OPENS:
            self.opens.append((conn.relay_label, conn.conn_type, conn.remote, conn.remote_label,
                               conn.dial_ms))
        else:
            if not self.opens_dropped:
                log.warning("worker %d: %d dial times wait for the supervisor; later ones are "
                            "not kept for the handshake histogram", self.slot, MAX_PENDING_OPENS)
            self.opens_dropped += 1

    # -- the operations the supervisor calls --------------------------------------------------
    def handlers(self) -> dict[str, Any]:
        return {"start": self.start, "apply": self.apply, "snapshot": self.snapshot,
                "connections": self.connections, "drain_sync": self.drain_sync,
                "close": self.close, "stop": self.stop}

    def _settings(self, tls: tuple[str, str] | None, log_level: str,
                  limits: node_limits.Limits | None) -> None:
        logs.setup(log_level)
        if limits is not None:  # the supervisor's, from the config (docs/security.md)
            node_limits.set_current(limits)
        if tls is not None:
            self.tls_files(*tls)

    def start(self, relays: list[RelayConfig], tls: tuple[str, str] | None = None,
              log_level: str = "info", limits: node_limits.Limits | None = None,
              udp: list[str] = (), fds: list[int] = ()) -> list[str]:
        """Start-up: every relay binds or the error goes back (and nothing stays bound).
        ``udp`` names the listen address of each UDP socket in ``fds`` (the supervisor's)."""
        with held_udp(udp, fds):
            self._settings(tls, log_level, limits)
            self.relays.start_all(relays)
        freeze_startup_objects()
        return sorted(self.relays.relays)

    def apply(self, relays: list[RelayConfig], tls: tuple[str, str] | None = None,
              log_level: str = "info", what: str = "reload", timer: bool = False,
              limits: node_limits.Limits | None = None, udp: list[str] = (),
              fds: list[int] = ()) -> dict:
        """A reload (or a restarted worker's start): the same diff rules and log line as one
        process; returns what was done, the errors, and the relays running afterwards."""
        with held_udp(udp, fds):
            self._settings(tls, log_level, limits)
            done, errors = self.relays.apply(relays, what, timer=timer)
        return {"done": done, "errors": errors, "running": sorted(self.relays.relays)}

    def snapshot(self, process: bool = False) -> dict:
        """The counters the metrics and the charts read, cumulative since this worker started,
        and the dial times of the connections opened since the previous snapshot; with
        ``process``, this process's live greenlets and resident memory too (a scrape asks)."""
        opens, self.opens = self.opens, []
        registry = self.registry
        extra = {}
        if process:
            from ..observability.metrics import count_live_greenlets, resident_memory_bytes

            extra["process"] = {"greenlets": count_live_greenlets(),
                                "memory": resident_memory_bytes()}
        return {
            **extra,
            "balancers": self.balancers(),
            "seq": next(self.snapshots),
            "pid": os.getpid(),
            "totals": registry.totals(),
            "relay_totals": registry.relay_totals(),
            "count_active": registry.count_active(),
            "dial_failures": dict(registry.dial_failures),
            "opens": opens,
        }

    def balancers(self) -> dict[str, dict[str, list[dict]]]:
        """Each relay's remotes as its balancers see them in this worker (pages and metrics
        show them per relay; the supervisor merges the workers' views)."""
        out = {}
        for label, relay in list(self.relays.relays.items()):
            views = {}
            for kind, lb in (("tcp", relay.tcp_lb),
                             ("udp", relay.udp.lb if relay.udp is not None else None)):
                snapshot = getattr(lb, "snapshot", None)
                if snapshot is not None:
                    views[kind] = snapshot()
            out[label] = views
        return out

    def connections(self, conn_type: str) -> list[Connection]:
        if conn_type == "active":
            return [wire(c) for c in list(self.registry.active.values())]
        return [wire(c) for c in self.registry.closed]

    def drain_sync(self) -> list[Connection]:
        return [wire(c) for c in self.registry.drain_closed_for_sync()]

    def close(self, ids: list[int]) -> int:
        wanted = set(ids)
        return self.registry.close_where(lambda c: c.id in wanted)

    def tls_files(self, cert: str, key: str) -> None:
        """Serve the supervisor's certificate, so every worker shows the node's one
        certificate (set before any TLS listener of this worker made its own)."""
        from ..transports import tls

        if not (os.environ.get(tls.CERT_ENV) and os.environ.get(tls.KEY_ENV)):
            os.environ[tls.CERT_ENV], os.environ[tls.KEY_ENV] = cert, key

    def stop(self) -> None:
        gevent.spawn_later(0, self.done.set)  # after the reply went out

    def shutdown(self) -> None:
        self.relays.stop_all(drop=True)


@contextmanager
def held_udp(listens: list[str], fds: list[int]):
    """Offer the supervisor's UDP sockets to the relays started inside (:func:`bind_socket
    <ehco_gevent.addresses.bind_socket>` takes them); close the ones no relay took (a relay
    that kept running has its own copy)."""
    socks = [socket.socket(fileno=fd) for fd in fds]  # owned from here on, whatever happens
    addresses.held_udp.update(zip(listens, socks))
    try:
        yield
    finally:
        for sock in addresses.held_udp.values():
            sock.close()
        addresses.held_udp.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ehco-worker")
    parser.add_argument("--fd", type=int, required=True, help="the channel's socket")
    parser.add_argument("--slot", type=int, required=True, help="worker number, from 1")
    parser.add_argument("--id-start", type=int, required=True)
    parser.add_argument("--id-step", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    logs.setup(args.log_level, tag=f"[worker {args.slot}] ")
    from ..app import tune_process

    tune_process()
    addresses.reuse_port = True
    worker = Worker(args.slot, args.id_start, args.id_step)
    sock = socket.socket(fileno=args.fd)
    peer = Peer(sock, worker.handlers(), name=f"worker {args.slot} channel")
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    gevent.signal_handler(signal.SIGTERM, worker.done.set)
    gevent.spawn(lambda: (peer.closed.wait(), worker.done.set()))
    worker.done.wait()
    worker.shutdown()
    peer.close()
    log.debug("worker %d (pid %d) exits", args.slot, os.getpid())
    return 0


