"""ehco's panel sync (``sync_traffic_endpoint``): users from the panel, traffic back to it.

Every ``sync_traffic_interval`` seconds (60 by default, as ehco): GET the endpoint for
``{"users": [...]}`` and apply it (add enabled new users, update changed ones, remove the ones
gone or disabled, closing their connections), then POST ``{"data": [...], "upload_bandwidth",
"download_bandwidth"}`` for the users with traffic since the last successful report. Counters
are reset only after the POST succeeded, so a panel that is down loses no traffic; a panel that
answers garbage changes no user.
"""

from __future__ import annotations

import logging
import time

import gevent

from .users import UserStore, parse_panel_users

log = logging.getLogger("ehco.proxy.panel")

HTTP_TIMEOUT = 10.0


def read_net_dev(path: str = "/proc/net/dev") -> tuple[int, int]:
    """Total (transmit, receive) bytes of every interface, as ehco summed node_exporter's
    node_network_*_bytes_total over all devices."""
    send = recv = 0
    try:
        with open(path) as fh:
            lines = fh.readlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        _, _, fields = line.partition(":")
        parts = fields.split()
        if len(parts) >= 9:
            recv += int(parts[0])
            send += int(parts[8])
    return send, recv


class Bandwidth:
    """Upload/download bytes per second of the host between two reports."""

    def __init__(self):
        self.last: tuple[float, int, int] | None = None
        self.up = self.down = 0.0

    def record(self) -> tuple[int, int]:
        send, recv = read_net_dev()
        now = time.monotonic()
        if self.last is not None and now > self.last[0]:
            elapsed = now - self.last[0]
            self.up = (send - self.last[1]) / elapsed
            self.down = (recv - self.last[2]) / elapsed
        self.last = (now, send, recv)
        return int(self.up), int(self.down)


class PanelSync:
    def __init__(self, url: str, store: UserStore, interval: int = 60):
        self.url = url
        self.store = store
        self.interval = interval
        self.bandwidth = Bandwidth()
        self._greenlet: gevent.Greenlet | None = None
        import requests

        self.http = requests.Session()

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
        self.http.close()

    def _loop(self) -> None:
        while True:
            self.sync_once()
            gevent.sleep(self.interval)

    def sync_once(self) -> bool:
        """One round: users, then traffic. Returns True when both succeeded."""
        ok = self.sync_users()
        return self.sync_traffic() and ok

    def sync_users(self) -> bool:
        try:
            resp = self.http.get(self.url, timeout=HTTP_TIMEOUT)
            resp.raise_for_status()
            entries = parse_panel_users(resp.json())
        except Exception as exc:  # network, HTTP status, JSON or shape: keep the users we have
            log.warning("panel sync: getting users from %s failed, keeping the current users: %s",
                        self.url, exc)
            return False
        added, updated, removed = self.store.apply_panel(entries)
        log.info("panel sync: %d users (%d added, %d updated, %d removed)", len(entries), added,
                 updated, removed)
        return True

    def sync_traffic(self) -> bool:
        rows, snapshot = self.store.traffic_report()
        up_bw, down_bw = self.bandwidth.record()
        body = {"data": rows, "upload_bandwidth": up_bw, "download_bandwidth": down_bw}
        try:
            resp = self.http.post(self.url, json=body, timeout=HTTP_TIMEOUT)
            resp.raise_for_status()
        except Exception as exc:
            log.warning("panel sync: posting traffic to %s failed, will report it next time: %s",
                        self.url, exc)
            return False
        self.store.commit_report(snapshot)
        log.info("panel sync: traffic of %d users reported", len(rows))
        return True
