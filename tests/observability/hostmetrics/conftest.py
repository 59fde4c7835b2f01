"""A fake /proc and /sys tree for collector tests (``fake_root``), and the real collector."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehco_gevent.observability.hostmetrics import HostCollector, HostPaths


def families(collector) -> dict:
    """{family name as exposed (counters with _total): family} of one collect()."""
    return {f.name + ("_total" if f.type == "counter" else ""): f for f in collector.collect()}


def samples(fam) -> dict:
    """{tuple of label values: value} of one family."""
    return {tuple(s.labels.values()): s.value for s in fam.samples}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def fake_root(tmp_path):
    """``make(files)`` -> a HostCollector reading only the given files under tmp_path."""

    def make(files: dict[str, str]) -> HostCollector:
        write_tree(tmp_path, files)
        return HostCollector(paths=HostPaths(proc=str(tmp_path / "proc"),
                                             sys=str(tmp_path / "sys"),
                                             udev=str(tmp_path / "udev"),
                                             os_release=(str(tmp_path / "os-release"),)))

    return make
