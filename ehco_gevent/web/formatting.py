"""How connection records read on the page: sizes, times, pages. Plain functions, no Flask."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def pretty_bytes(n: float) -> str:
    """``1536`` -> ``1.50 KiB``; whole bytes below 1 KiB."""
    if n < 1024:
        return f"{int(n)} B"
    exp = min(int(math.log(n, 1024)), len(_UNITS) - 1)
    return f"{n / 1024 ** exp:.2f} {_UNITS[exp]}"


def stamp(ts: float | None) -> str:
    """Local time like Go's time.Stamp (``Jan  2 15:04:05``), ``N/A`` for a missing time."""
    if ts is None:
        return "N/A"
    return time.strftime("%b %e %H:%M:%S", time.localtime(ts))


def span(started: float, ended: float | None) -> str:
    return f"{stamp(started)} - {stamp(ended)}"


def duration(started: float, ended: float | None, now: float | None = None) -> str:
    secs = max(0.0, (ended if ended is not None else (now or time.time())) - started)
    if secs < 60:
        return f"{secs:.1f}s"
    minutes, s = divmod(int(secs), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m{s:02d}s" if hours else f"{m}m{s:02d}s"


def parse_positive(value: str | None, default: int, limit: int | None = None) -> int:
    """A query parameter as a positive int; anything else (missing, junk, < 1) is the default."""
    try:
        n = int(value) if value is not None else default
    except ValueError:
        return default
    if n < 1:
        return default
    return min(n, limit) if limit else n


@dataclass(frozen=True)
class Page:
    page: int
    page_size: int
    total: int

    @property
    def total_pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))

    @property
    def start(self) -> int:
        return (self.page - 1) * self.page_size

    @property
    def prev(self) -> int:
        """Previous page number, 0 when there is none."""
        return self.page - 1 if self.page > 1 else 0

    @property
    def next(self) -> int:
        """Next page number, 0 when this is the last."""
        return self.page + 1 if self.page * self.page_size < self.total else 0

    def slice(self, items: list) -> list:
        return items[self.start:self.start + self.page_size]
