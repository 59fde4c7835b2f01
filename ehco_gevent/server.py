"""The set of running relays, and how a new config is applied to it.

:func:`plan` is the whole reload policy as a pure function over two label->config maps, so it is
tested without sockets: labels that vanished stop, new labels start, a relay whose settings
changed restarts, an unchanged relay is left alone and its open connections are not touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

from .config import RelayConfig
from .connections import ConnectionRegistry
from .relay import Relay

log = logging.getLogger("ehco.server")


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


class RelayServer:
    def __init__(self, registry: ConnectionRegistry):
        self.registry = registry
        self.relays: dict[str, Relay] = {}

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

    def _start(self, cfg: RelayConfig, inherited: dict | None = None) -> None:
        relay = Relay(cfg, self.registry)
        relay.start(inherited)
        self.relays[cfg.label] = relay

    def apply(self, cfgs: Iterable[RelayConfig]) -> tuple[Plan, list[str]]:
        """Move the running set to ``cfgs``; returns the plan and the relays that failed to
        start (each message names the relay). Failures do not stop the rest."""
        new = {cfg.label: cfg for cfg in cfgs}
        steps = plan(self.configs(), new)
        errors = []
        leaving = {label: self.relays.pop(label) for label in steps.stop + steps.restart}
        # a relay started on an address a leaving relay listens on takes over its listening
        # sockets before the old one closes them: the address never refuses a connection
        by_listen = {relay.cfg.listen: relay for relay in leaving.values()}
        later = []
        for label in steps.restart + steps.start:
            old = by_listen.pop(new[label].listen, None)
            if old is None:
                later.append(label)
                continue
            try:
                self._start(new[label], old.take_listeners())
            except Exception as exc:
                log.error("%s", exc)
                errors.append(str(exc))
            finally:
                leaving.pop(old.label).stop()
        for relay in leaving.values():
            relay.stop()
        for label in later:
            try:
                self._start(new[label])
            except Exception as exc:
                log.error("%s", exc)
                errors.append(str(exc))
        if steps.stop or steps.start or steps.restart:
            log.info("reload: started %s, restarted %s, stopped %s, kept %d",
                     steps.start or "none", steps.restart or "none", steps.stop or "none",
                     len(steps.keep))
        return steps, errors

    def stop_all(self, drop: bool = False) -> None:
        for relay in list(self.relays.values()):
            relay.stop()
            if drop:
                relay.drop_connections()
        self.relays.clear()
