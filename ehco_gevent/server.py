"""The set of running relays, and how a new config is applied to it.

:func:`plan` is the whole reload policy as a pure function over two label->config maps, so it is
tested without sockets: labels that vanished stop, new labels start, a relay whose settings
changed restarts, an unchanged relay is left alone and its open connections are not touched.
:class:`Applied` is what really happened (a relay can fail to bind), as logs and the web
reload routes report it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

from .config import RelayConfig
from .connections import ConnectionRegistry
from .logs import RateLimitedLogger
from .relay import Relay

log = logging.getLogger("ehco.server")

#: a relay that keeps failing for the same reason is reported again at most this often
REPEAT_INTERVAL = 600.0


@dataclass
class Plan:
    stop: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)


def plan(old: dict[str, RelayConfig], new: dict[str, RelayConfig]) -> Plan:
    result = Plan()
    for label in old:
        if label not in new:
            result.stop.append(label)
    for label, cfg in new.items():
        if label not in old:
            result.start.append(label)
        elif old[label] != cfg:
            result.restart.append(label)
        else:
            result.keep.append(label)
    return result


@dataclass
class Applied:
    """What a reload did: the relays that really started, restarted and stopped, and those
    that failed to start (label -> reason). A failed relay is not running."""

    started: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    kept: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.started or self.restarted or self.stopped or self.failed)

    def summary(self) -> str:
        """``started a, b; kept 1; failed: c (cannot listen on ...: address already in use)``"""
        parts = [f"{name} {', '.join(labels)}" for name, labels in (
            ("started", self.started), ("restarted", self.restarted), ("stopped", self.stopped))
            if labels]
        parts.append(f"kept {self.kept}")
        if self.failed:
            parts.append("failed: " + ", ".join(f"{label} ({reason})"
                                                for label, reason in self.failed.items()))
        return "; ".join(parts)


class RelayServer:
    def __init__(self, registry: ConnectionRegistry):
        self.registry = registry
        self.relays: dict[str, Relay] = {}
        #: relays of the last apply that did not start (label -> reason); each later apply
        #: (every reload, the timer's included) tries them again
        self.failed: dict[str, str] = {}
        self._repeats = RateLimitedLogger(log, interval=REPEAT_INTERVAL)

    def configs(self) -> dict[str, RelayConfig]:
        return {label: relay.cfg for label, relay in self.relays.items()}

    def start_all(self, cfgs: Iterable[RelayConfig]) -> None:
        """Start-up: every relay must bind, or none stays up (ListenError propagates)."""
        try:
            for cfg in cfgs:
                self._start(cfg)
        except Exception:
            self.stop_all()
            raise

    def _start(self, cfg: RelayConfig) -> None:
        relay = Relay(cfg, self.registry)
        relay.start()
        self.relays[cfg.label] = relay

    def apply(self, cfgs: Iterable[RelayConfig], what: str = "reload", timer: bool = False
              ) -> tuple[Applied, list[str]]:
        """Move the running set to ``cfgs``; returns what was done and the messages of the
        relays that failed to start (each names the relay). Failures do not stop the rest.

        One log line: info when all went well, error when a relay failed for a new reason; a
        relay that fails again as it did last time is repeated by the ``timer`` at most every
        REPEAT_INTERVAL seconds, and "started" names only the relays that really started."""
        new = {cfg.label: cfg for cfg in cfgs}
        steps = plan(self.configs(), new)
        done = Applied(stopped=list(steps.stop), kept=len(steps.keep))
        errors = []
        for label in steps.stop + steps.restart:
            self.relays.pop(label).stop()
        for label in steps.restart + steps.start:
            try:
                self._start(new[label])
            except Exception as exc:
                errors.append(str(exc))
                done.failed[label] = str(exc).removeprefix(f"relay {label}").lstrip(": ")
                continue
            (done.restarted if label in steps.restart else done.started).append(label)
        fresh = {label: reason for label, reason in done.failed.items()
                 if self.failed.get(label) != reason}
        self.failed = dict(done.failed)
        line = f"{what}: {done.summary()}"
        key = tuple(sorted(done.failed.items()))
        if fresh:
            self._repeats.log(logging.ERROR, key, "%s", line + " (failed relays are retried at "
                              "every reload)", force=True)
        elif done.started or done.restarted or done.stopped:
            log.log(logging.WARNING if done.failed else logging.INFO, "%s", line)
        elif done.failed:
            self._repeats.log(logging.WARNING, key, "%s",
                              line + " (still failing; retried at every reload)", force=not timer)
        return done, errors

    def stop_all(self, drop: bool = False) -> None:
        for relay in list(self.relays.values()):
            relay.stop()
            if drop:
                relay.drop_connections()
        self.relays.clear()
