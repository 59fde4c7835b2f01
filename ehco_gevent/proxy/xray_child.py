"""A supervised ``xray`` child for the inbounds we do not serve natively (vmess, vless, ...).

The child gets a config of its own with only those inbounds, the outbounds and the log section
(``xray run -c FILE``). It is restarted when it exits (with a growing pause, reset after a
minute of running), replaced when those inbounds change on reload, and stopped with the process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time

import gevent
from gevent import subprocess

from .xray_config import XrayConfig

log = logging.getLogger("ehco.proxy.xray")

MAX_BACKOFF = 30.0


def child_config(xray: XrayConfig) -> dict:
    raw = xray.raw or {}
    out: dict = {"inbounds": list(xray.foreign),
                 "outbounds": raw.get("outbounds") or [{"protocol": "freedom", "settings": {}}]}
    for key in ("log", "policy", "routing"):
        if isinstance(raw.get(key), dict):
            out[key] = raw[key]
    # our process answers for the api inbound; the child must not route to a missing tag
    if "routing" in out:
        rules = out["routing"].get("rules") or out["routing"].get("settings", {}).get("rules")
        if isinstance(rules, list) and any(r.get("outboundTag") == "api" for r in rules if isinstance(r, dict)):
            out.pop("routing")
    return out


class XrayChild:
    def __init__(self, xray: XrayConfig):
        self.xray = xray
        self.config = child_config(xray)
        fd, self.path = tempfile.mkstemp(prefix="ehco-xray-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.config, fh)
        self.proc: subprocess.Popen | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False

    def same(self, xray: XrayConfig) -> bool:
        return child_config(xray) == self.config and xray.xray_bin == self.xray.xray_bin

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._supervise)

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping:
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen([self.xray.xray_bin, "run", "-c", self.path])
            except OSError as exc:
                log.error("xray: cannot start %s: %s", self.xray.xray_bin, exc)
            else:
                log.info("xray: started %s (pid %d) for %d inbound(s)", self.xray.xray_bin,
                         self.proc.pid, len(self.xray.foreign))
                code = self.proc.wait()
                if self._stopping:
                    return
                log.warning("xray: pid %d exited with status %s; restarting in %.0f s",
                            self.proc.pid, code, backoff)
            if time.monotonic() - started > 60:
                backoff = 1.0
            gevent.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.info("xray: pid %d stopped", proc.pid)
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        try:
            os.unlink(self.path)
        except OSError:
            pass
