"""Fuzzing the network parsers in CI: a few seconds in all (issue 10).

Each target of :mod:`tests.fuzz.targets` gets hypothesis-generated inputs (random bytes, and
mutations of valid messages so the parsers get past their first checks), and, where atheris
is installed, one short coverage-guided run over all targets in a subprocess (libFuzzer exits
its process). The long run is ``python -m tests.fuzz.run_atheris all -max_total_time=600``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehco_gevent.proxy import trojan
from ehco_gevent.transports import proxy_protocol, smux, websocket
from tests.fuzz.targets import TARGETS
from tests.support import ROOT

#: valid messages of every protocol, to be mutated
SEEDS = [
    smux.encode_frame(smux.SYN, 3) + smux.encode_data(3, b"hello") + smux.encode_frame(smux.FIN, 3),
    websocket.encode_frame(websocket.OP_BINARY, b"x" * 200, masked=True),
    websocket.encode_frame(websocket.OP_PING, b"p") + websocket.encode_frame(websocket.OP_BINARY, b"y" * 300),
    websocket.build_request("h:1", "/ws/", websocket.new_key()),
    websocket.build_101("dGhlIHNhbXBsZSBub25jZQ=="),
    b"\x05\x02\x00\x02", b"\x01\x02u1\x02p1", b"\x05\x01\x00\x03\x07example\x01\xbb",
    b"\x00\x00\x00\x04" + bytes(16) + b"\x00\x35data",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET http://[::1]:8080/a?b HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
    b"a" * 56 + b"\r\n\x01\x01\x7f\x00\x00\x01\x00\x50\r\npayload",
    trojan.udp_frame("1.2.3.4", 53, b"dns"),
    b"\x00\x00\x10\x01\x00\x20" + b"z" * 32,
    proxy_protocol.encode(1, ("192.0.2.1", 5000), ("198.51.100.2", 443)) + b"payload",
    proxy_protocol.encode(2, ("2001:db8::1", 5000), ("2001:db8::2", 443)) + b"payload",
]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(("flip", "cut", "insert")))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    # the decoder targets read a split byte first, the others the message itself
    return draw(st.binary(max_size=1)) + bytes(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parser_survives_hostile_bytes(name):
    target = TARGETS[name]

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(st.binary(max_size=300), mutated()))
    def run(data):
        target(data)

    run()


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_coverage_guided_short_run(tmp_path):
    """All targets in one libFuzzer process for a few seconds; any finding fails (its input
    is in the output and in a crash-* file)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.run_atheris", "all",
                           "-max_total_time=2", "-rss_limit_mb=1024"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Done" in proc.stderr
