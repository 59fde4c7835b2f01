"""The handshake histograms (dial time per remote), counted in plain lists and turned into
metric families only when a scrape asks.

Why not prometheus_client's ``Histogram``: it takes a lock for the sum and for the bucket of
every sample (gevent's lock, in this monkey-patched process) and looks the labels up each
time; observing the two histograms below cost ~4.5 us per relayed connection, a tenth of the
Python work of a raw connection. Here an observation is a dict lookup and, per histogram, a
division, a bisect and two additions; the exposition is the library's own
(``HistogramMetricFamily``), so a scrape gets the same text.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterator

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString


class _Family:
    """One histogram's name, help and bucket bounds; milliseconds divided by ``per_unit`` are
    its unit (a division, as the value was observed before: the same float on a bound)."""

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...],
                 per_unit: float):
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self.per_unit = per_unit
        self.les = [floatToGoString(b) for b in bounds] + ["+Inf"]


class DialHistograms:
    """Both handshake histograms, observed together from one dial time in milliseconds:
    Go ehco's ``ehco_traffic_handshake_duration`` (milliseconds, in Go's default buckets) and
    ours in seconds. A collector for a prometheus registry."""

    def __init__(self, families: list[tuple[str, str, tuple[float, ...], float]]):
        self.families = [_Family(*f) for f in families]
        #: remote label -> (bucket counts per family, sum per family)
        self._by_remote: dict[str, tuple[list[list[int]], list[float]]] = {}

    def observe(self, remote: str, dial_ms: float) -> None:
        rec = self._by_remote.get(remote)
        if rec is None:
            rec = self._by_remote[remote] = ([[0] * (len(f.bounds) + 1) for f in self.families],
                                             [0.0] * len(self.families))
        counts, sums = rec
        for i, family in enumerate(self.families):
            value = dial_ms / family.per_unit
            # a bucket counts the values <= its bound, as prometheus_client's Histogram; the
            # sum adds each value, as it does (one division of the total would round apart)
            counts[i][bisect_left(family.bounds, value)] += 1
            sums[i] += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        for i, family in enumerate(self.families):
            metric = HistogramMetricFamily(family.name, family.documentation, labels=["remote"])
            for remote, (counts, sums) in list(self._by_remote.items()):
                cumulative, buckets = 0, []
                for le, count in zip(family.les, counts[i]):
                    cumulative += count
                    buckets.append((le, float(cumulative)))
                metric.add_metric([remote], buckets, sums[i])
            yield metric
