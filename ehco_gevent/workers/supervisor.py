"""The supervisor side of ``--workers N``: N relay worker processes behind one App.

:func:`become_supervisor` swaps two parts of a started App for their multi-process versions;
everything else (web server, metrics, ping, relay sync, subscriptions, proxy server, reloads,
signals) runs unchanged in the supervisor and never learns that the relays live elsewhere:

- ``app.relays`` becomes a :class:`WorkerPool`: the same calls as
  :class:`~ehco_gevent.server.RelayServer` (``start_all``, ``apply``, ``configs``,
  ``relays``, ``stop_all``), carried out in every worker. A worker is sent the full resolved
  relay list (subscription relays included) on start, on every reload and when it restarts,
  and applies it with the same diff rules as a single process (open connections kept).
- ``app.registry`` becomes a :class:`~ehco_gevent.workers.cluster.ClusterRegistry`: the
  supervisor's own connections (the proxy server's) plus the workers'. Counters come from a
  snapshot each worker answers with; connection lists are fetched when a page asks; a close is
  sent to the worker that holds the connection. Nothing crosses the channel per connection
  (:mod:`.cluster` holds that read side and its merges).

Counters never go backwards: a worker's snapshot is cumulative since it started, and when a
worker dies its last snapshot is added to ``retired`` before the new one starts from zero (the
traffic it carried after that snapshot, at most :data:`POLL_INTERVAL` seconds of it, is lost
with it). Dial times reach the supervisor's ``open_listeners`` (the handshake histograms)
with the next snapshot.

UDP listeners are bound here, one per worker (SO_REUSEPORT), before any worker starts, and
handed to the workers over their channels; the supervisor keeps its copies while the relay
runs. The kernel picks a UDP port's socket by hashing the client's address over the sockets
bound to the port, so that set must not change while sessions live: a worker binding late at
start-up, or one dying and its successor binding anew, would move other workers' clients to
new sessions. A dead worker's socket stays bound (its datagrams wait in the socket for its
successor, which is handed the same socket).

Connection ids are unique across the node: with N workers, worker S numbers its connections
S, S + (N+1), S + 2(N+1)... and the supervisor's own are multiples of N+1; a restarted worker
starts far above its predecessor, so an id is never reused.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket as _stdsocket
import sys
import time
from typing import Any, Iterable

import gevent
from gevent import socket, subprocess
from gevent.lock import Semaphore

from ..guards import limits as node_limits
from ..addresses import ListenError, bind_socket
from ..config import ConfigError, RelayConfig
from ..connections import Connection, ConnectionRegistry
from ..server import Applied, plan
from ..transports import UnsupportedTransport
from .channel import Peer, RemoteError
from .cluster import (ClusterRegistry, RefreshFirst, RelayView, WorkersCollector, add_into,
                      merge_applied, sum_counters)

log = logging.getLogger("ehco.workers")

#: seconds between two snapshots of every worker when nobody asks
POLL_INTERVAL = 2.0
#: a snapshot this recent answers a scrape or a page without asking the workers again
SNAPSHOT_MAX_AGE = 0.25
START_TIMEOUT = 60.0  # importing, binding, maybe generating a certificate, on a busy machine
CALL_TIMEOUT = 10.0
APPLY_TIMEOUT = 30.0
STOP_GRACE = 10.0
#: restart delay after a worker died; doubles (up to the maximum) while workers keep dying
#: within STABLE seconds of their start, so a crash loop does not spin
RESTART_DELAY, RESTART_DELAY_MAX, STABLE = 0.2, 10.0, 30.0
#: the snapshot keys that are cumulative counters (kept from a dead worker)
CUMULATIVE = ("totals", "relay_totals", "dial_failures")
TLS_LISTEN_TYPES = ("wss", "mwss")
#: the directory that holds the ehco_gevent package, so a worker runs the supervisor's code
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: errors a worker reports that mean the same as in one process (exit codes 1 and 2)
KNOWN_ERRORS = {"ListenError": ListenError, "ConfigError": ConfigError,
                "UnsupportedTransport": UnsupportedTransport}


class WorkerFailure(ListenError):
    """A worker that could not start its relays for a reason other than a bad config: the
    process exits 1, as when a listener cannot bind."""


def local_error(exc: BaseException) -> Exception:
    """The exception the App would have seen had the relays run in this process."""
    if isinstance(exc, RemoteError) and exc.kind in KNOWN_ERRORS:
        return KNOWN_ERRORS[exc.kind](str(exc))
    return WorkerFailure(f"relay worker failed to start: {exc or type(exc).__name__}")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


class WorkerHandle:
    def __init__(self, slot: int, proc: subprocess.Popen, peer: Peer):
        self.slot = slot
        self.proc = proc
        self.peer = peer
        self.started = time.monotonic()
        self.last: dict | None = None  # the latest snapshot
        self.watcher: gevent.Greenlet | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, op: str, timeout: float, **args: Any) -> Any:
        return self.peer.call(op, timeout, **args)


def answer(handle: WorkerHandle, op: str, timeout: float,
           **args: Any) -> tuple[Any, Exception | None]:
    """(result, None), or (None, the error): a dead or stuck worker is an answer too."""
    try:
        return handle.call(op, timeout, **args), None
    except Exception as exc:
        return None, exc


def each(handles: list[WorkerHandle], ask) -> list[tuple[Any, Exception | None]]:
    """``ask(handle)`` for every worker at once, in the handles' order."""
    jobs = [gevent.spawn(ask, handle) for handle in handles]
    gevent.joinall(jobs)
    return [job.value for job in jobs]


def call_all(handles: list[WorkerHandle], op: str, timeout: float,
             **args: Any) -> list[tuple[Any, Exception | None]]:
    """``op`` on every worker at once; (result, None) or (None, the error) for each."""
    return each(handles, lambda handle: answer(handle, op, timeout, **args))


class WorkerPool:
    """N worker processes that run the same relays; RelayServer's interface."""

    def __init__(self, app: Any, count: int, local: ConnectionRegistry):
        self.app = app
        self.count = count
        self.handles: dict[int, WorkerHandle] = {}
        self.relays: dict[str, RelayView] = {}
        self.wanted: list[RelayConfig] = []
        self.retired: dict[str, dict] = {key: {} for key in CUMULATIVE}
        self.restarts = 0
        self.stopping = False
        self.registry = ClusterRegistry(local, self)
        # the supervisor's own connections (the proxy server's) take the ids worker 0 would
        local._ids = itertools.count(count + 1, count + 1)
        self._spawned = dict.fromkeys(range(1, count + 1), 0)
        self._delay = dict.fromkeys(range(1, count + 1), RESTART_DELAY)
        self._refresh_lock = Semaphore()
        self._refreshed_at = 0.0
        self._poller: gevent.Greenlet | None = None
        self._tls: tuple[str, str] | None = None
        #: UDP listen address -> the socket of each worker slot (index slot - 1)
        self.udp_held: dict[str, list[socket.socket]] = {}

    # -- RelayServer's interface ---------------------------------------------------------------
    def configs(self) -> dict[str, RelayConfig]:
        return {label: view.cfg for label, view in self.relays.items()}

    def start_all(self, cfgs: Iterable[RelayConfig]) -> None:
        """Start every worker with every relay; any failure stops them all and raises what
        one process would have raised (ListenError, ConfigError, UnsupportedTransport)."""
        self.wanted = list(cfgs)
        tls = self._tls_files(self.wanted)
        try:
            self._hold_udp(self.wanted, strict=True)
        except Exception:
            self._release_udp(set())
            raise
        for slot in range(1, self.count + 1):
            self.handles[slot] = self._spawn(slot)
        handles = list(self.handles.values())
        answers = each(handles, lambda handle: answer(
            handle, "start", START_TIMEOUT, relays=self.wanted, tls=tls,
            log_level=self._log_level(), limits=node_limits.current(), **self._udp_for(handle)))
        failed = [exc for _, exc in answers if exc is not None]
        if failed:
            self.stop_all()
            raise local_error(failed[0])
        self.relays = {cfg.label: RelayView(cfg, self) for cfg in self.wanted}
        for handle in handles:
            handle.watcher = gevent.spawn(self._watch, handle)
        self._poller = gevent.spawn(self._poll_loop)

    def apply(self, cfgs: Iterable[RelayConfig], what: str = "reload",
              timer: bool = False) -> tuple[Applied, list[str]]:
        """A reload in every worker (each logs what it did); returns what was done across
        them (:func:`merge_applied`) and the errors, each once. A relay counts as running
        when every worker that answered runs it; a worker that did not answer gets the new
        relays when it is restarted."""
        cfgs = list(cfgs)
        new = {cfg.label: cfg for cfg in cfgs}
        keep = plan(self.configs(), new).keep
        self.wanted = cfgs
        errors: list[str] = []
        try:
            tls = self._tls_files(cfgs)
        except ConfigError as exc:  # a bad certificate file must not end the reload
            errors.append(str(exc))
            tls = None
        self._hold_udp(cfgs)
        live = list(self.handles.values())
        answers = each(live, lambda handle: answer(
            handle, "apply", APPLY_TIMEOUT, relays=cfgs, tls=tls, log_level=self._log_level(),
            limits=node_limits.current(), what=what, timer=timer, **self._udp_for(handle)))
        running, dones = set(new), []
        for handle, (result, exc) in zip(live, answers):
            if exc is not None:
                log.error("worker %d: %s failed: %s", handle.slot, what, exc)
                continue
            running &= set(result["running"])
            errors += [e for e in result["errors"] if e not in errors]
            dones.append(result["done"])
        old = self.relays
        self.relays = {label: old[label] if label in keep and label in old
                       else RelayView(cfg, self) for label, cfg in new.items() if label in running}
        self._release_udp({cfg.listen for cfg in cfgs if cfg.udp_remotes and cfg.label in running})
        return merge_applied(dones), errors

    def stop_all(self, drop: bool = False) -> None:
        """Stop every worker (they drop their connections) and wait for them to exit."""
        self.stopping = True
        if self._poller is not None:
            self._poller.kill(block=False)
        handles = list(self.handles.values())
        call_all(handles, "stop", CALL_TIMEOUT)
        for handle in handles:
            try:
                handle.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not stop; killing it", handle.slot,
                            handle.pid)
                handle.proc.kill()
                handle.proc.wait()
            handle.peer.close()
        self.handles.clear()
        self.relays.clear()
        self._release_udp(set())

    def stop_restarting(self) -> None:
        self.stopping = True

    # -- UDP listeners held for the workers --------------------------------------------------
    def _hold_udp(self, cfgs: list[RelayConfig], strict: bool = False) -> None:
        """Bind one UDP socket per worker for every UDP relay's listen address not yet held.
        ``strict`` (start-up) raises the ListenError one process would; on a reload a relay
        that cannot bind here is left to the workers, which report it as one process does."""
        for cfg in cfgs:
            if not cfg.udp_remotes or cfg.listen in self.udp_held:
                continue
            socks: list[socket.socket] = []
            try:
                for _ in range(self.count):
                    socks.append(bind_socket(cfg.listen, _stdsocket.SOCK_DGRAM,
                                             f"relay {cfg.label} (udp)", share=True))
            except ListenError:
                for sock in socks:
                    sock.close()
                if strict:
                    raise
                continue
            self.udp_held[cfg.listen] = socks

    def _release_udp(self, keep: set[str]) -> None:
        """Close the held sockets of every UDP listen address not in ``keep`` (the workers
        have closed theirs: the port is free again)."""
        for listen in [listen for listen in self.udp_held if listen not in keep]:
            for sock in self.udp_held.pop(listen):
                sock.close()

    def _udp_for(self, handle: WorkerHandle) -> dict[str, list]:
        """The arguments that hand a worker the UDP sockets held for its slot."""
        held = [(listen, socks[handle.slot - 1]) for listen, socks in self.udp_held.items()]
        return {"udp": [listen for listen, _ in held],
                "pass_fds": [sock.fileno() for _, sock in held]}

    # -- workers ----------------------------------------------------------------------------------
    @staticmethod
    def _log_level() -> str:
        """The level this process logs at (the App set it from the config being applied)."""
        return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()

    def _tls_files(self, cfgs: list[RelayConfig]) -> tuple[str, str] | None:
        """The node's certificate files, made once here when a relay serves TLS, so every
        worker presents the same certificate (as one process would)."""
        if self._tls is None and any(c.listen_type in TLS_LISTEN_TYPES for c in cfgs):
            from ..transports.tls import certificate_files

            self._tls = certificate_files()
        return self._tls

    def _spawn(self, slot: int) -> WorkerHandle:
        generation = self._spawned[slot]
        self._spawned[slot] = generation + 1
        step = self.count + 1
        parent, child = socket.socketpair(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "ehco_gevent.workers", "--fd", str(child.fileno()),
               "--slot", str(slot), "--id-start", str(slot + step * (generation << 32)),
               "--id-step", str(step), "--log-level", self._log_level()]
        try:
            proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), env=env)
        finally:
            child.close()
        log.info("worker %d started (pid %d)", slot, proc.pid)
        return WorkerHandle(slot, proc, Peer(parent, name=f"worker {slot} channel"))

    def _watch(self, handle: WorkerHandle) -> None:
        """Wait for the worker to exit; unless the pool is stopping, keep its counters and
        start a new one in its place with the current relays."""
        code = handle.proc.wait()
        handle.peer.close()
        if self.stopping or self.handles.get(handle.slot) is not handle:
            return
        del self.handles[handle.slot]
        if handle.last is not None:
            for key in CUMULATIVE:
                add_into(self.retired[key], handle.last.get(key, {}))
        self.restarts += 1
        slot = handle.slot
        lived = time.monotonic() - handle.started
        delay = RESTART_DELAY if lived > STABLE else self._delay[slot]
        self._delay[slot] = min(RESTART_DELAY_MAX, delay * 2) if lived <= STABLE else RESTART_DELAY
        log.error("worker %d (pid %d) exited with %s; restarting it in %.1f s", slot,
                  handle.pid, describe_exit(code), delay)
        gevent.sleep(delay)
        if self.stopping:
            return
        new = self._spawn(slot)
        self.handles[slot] = new
        new.watcher = gevent.spawn(self._watch, new)
        # the worker logs what started and what failed
        _, exc = answer(new, "apply", START_TIMEOUT, relays=self.wanted, tls=self._tls,
                        log_level=self._log_level(), limits=node_limits.current(),
                        what="restarted worker", **self._udp_for(new))
        if exc is not None:
            log.error("worker %d (pid %d): could not start its relays: %s", slot, new.pid, exc)

    # -- reading the workers -------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self.stopping:
            gevent.sleep(POLL_INTERVAL)
            try:
                self.refresh(0)
            except Exception:  # a bad round must not end the polling
                log.exception("polling the workers failed")

    def refresh(self, max_age: float = SNAPSHOT_MAX_AGE, process: bool = False) -> None:
        """Take a snapshot of every worker unless one was taken in the last ``max_age``
        seconds; replay the dial times they report into the supervisor's open_listeners.
        ``process`` asks for their greenlets and memory too (a scrape)."""
        with self._refresh_lock:
            if time.monotonic() - self._refreshed_at < max_age:
                return
            live = list(self.handles.values())
            results = self._ask(live, "snapshot", process=process)
            for handle, snap in zip(live, results):
                if snap is None or self.handles.get(handle.slot) is not handle:
                    continue  # no answer, or the worker died meanwhile (already retired)
                if handle.last is not None and snap["seq"] <= handle.last["seq"]:
                    continue
                handle.last = snap
                self._replay(snap["opens"])
            self._refreshed_at = time.monotonic()

    def _replay(self, opens: list[tuple]) -> None:
        listeners = self.registry.local.open_listeners
        if not listeners:
            return
        for relay_label, conn_type, remote, remote_label, dial_ms in opens:
            conn = Connection(id=0, relay_label=relay_label, conn_type=conn_type,
                              client_addr="", remote=remote, remote_label=remote_label,
                              dial_ms=dial_ms)
            for listener in listeners:
                listener(conn)

    def _ask(self, handles: list[WorkerHandle], op: str, **args: Any) -> list[Any]:
        """``op`` on every handle at once; None for a worker that failed to answer."""
        out = []
        for handle, (result, exc) in zip(handles, call_all(handles, op, CALL_TIMEOUT, **args)):
            if exc is not None:
                log.debug("worker %d: %s failed: %s", handle.slot, op, exc)
            out.append(result)
        return out

    def counters(self, key: str) -> list[dict]:
        """The cumulative counters ``key`` of the dead workers and every live one."""
        self.refresh()
        live = [h.last[key] for h in list(self.handles.values()) if h.last is not None]
        return ([self.retired[key]] if key in self.retired else []) + live

    def process_totals(self) -> dict[str, float]:
        """The live workers' greenlets and memory, summed (from their last snapshot)."""
        return sum_counters(h.last["process"] for h in list(self.handles.values())
                            if h.last is not None and "process" in h.last)

    def close_in(self, handle: WorkerHandle, ids: list[int]) -> int:
        """Close connections by id in the worker that holds them; how many it closed."""
        try:
            return handle.call("close", CALL_TIMEOUT, ids=ids)
        except Exception as exc:
            log.warning("worker %d: closing %d connections failed: %s", handle.slot, len(ids), exc)
            return 0

    def connections(self, op: str, **args: Any) -> list[tuple[WorkerHandle, list[Connection]]]:
        handles = list(self.handles.values())
        return [(h, conns or []) for h, conns in zip(handles, self._ask(handles, op, **args))]


class WorkersService:
    """Says so when a reload asks for another number of workers (that needs a restart)."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool

    def on_config(self, cfg: Any) -> None:
        from . import worker_count

        wanted = worker_count(getattr(cfg, "workers", 1))
        if wanted != self.pool.count:
            log.warning("workers: the config asks for %d; %d keep running until ehco restarts",
                        wanted, self.pool.count)


def become_supervisor(app: Any, count: int) -> WorkerPool:
    """Turn a loaded, not yet started App into the supervisor of ``count`` relay workers."""
    pool = WorkerPool(app, count, app.registry)
    app.registry = pool.registry
    app.relays = pool
    metrics = getattr(app, "metrics", None)
    if metrics is not None:
        metrics.add(WorkersCollector(pool))
        metrics.registry = RefreshFirst(metrics.registry, pool)
    app.services.append(WorkersService(pool))
    for sig in (signal.SIGTERM, signal.SIGINT):
        # the App stops on these too, a moment later; a worker that a service manager
        # signalled along with us (systemd signals the whole group) is not restarted meanwhile
        gevent.signal_handler(sig, pool.stop_restarting)
    log.info("supervisor (pid %d) runs the relays in %d worker processes", os.getpid(), count)
    return pool
