"""The handshake histograms counted by hand must expose exactly what prometheus_client's own
Histogram exposes for the same dials: it is the reference here."""

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ehco_gevent.observability.dial_histograms import DialHistograms
from ehco_gevent.observability.metrics import GO_DEFAULT_BUCKETS, HANDSHAKE_BUCKETS_SECONDS

FAMILIES = [("ehco_traffic_handshake_duration", "dial time in ms", GO_DEFAULT_BUCKETS, 1),
            ("ehco_gevent_handshake_duration_seconds", "dial time", HANDSHAKE_BUCKETS_SECONDS,
             1000)]

bounds_in_ms = [b for b in GO_DEFAULT_BUCKETS] + [b * 1000 for b in HANDSHAKE_BUCKETS_SECONDS]
dial_ms = st.one_of(st.sampled_from(bounds_in_ms),  # exactly on a bound: le is "<="
                    st.floats(0, 20000, allow_nan=False))


def reference(dials) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    hists = [Histogram(name, doc, ["remote"], buckets=bounds, registry=registry)
             for name, doc, bounds, _ in FAMILIES]
    for remote, ms in dials:
        hists[0].labels(remote).observe(ms)
        hists[1].labels(remote).observe(ms / 1000)
    return generate_latest(registry)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["r1:1", "lbl-r2:2"]), dial_ms), max_size=30))
def test_the_same_text_as_prometheus_client_histograms(dials):
    ours = DialHistograms(FAMILIES)
    for remote, ms in dials:
        ours.observe(remote, ms)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ours)
    assert generate_latest(registry).decode() == reference(dials).decode()


def test_counts_per_remote_and_bucket():
    ours = DialHistograms(FAMILIES)
    for ms in (0.004, 3.0, 3.0, 250.0):
        ours.observe("r", ms)
    ms_family = next(ours.collect())
    samples = {(s.name, s.labels.get("le")): s.value for s in ms_family.samples}
    assert samples[("ehco_traffic_handshake_duration_bucket", "0.005")] == 1
    assert samples[("ehco_traffic_handshake_duration_bucket", "2.5")] == 1
    assert samples[("ehco_traffic_handshake_duration_bucket", "5.0")] == 3
    assert samples[("ehco_traffic_handshake_duration_bucket", "+Inf")] == 4
    assert samples[("ehco_traffic_handshake_duration_count", None)] == 4
    assert samples[("ehco_traffic_handshake_duration_sum", None)] == 256.004
