"""The web package's plain functions, and the Flask app's wiring with a real blueprint."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest
from flask import Blueprint
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ehco_gevent.config import parse_config
from ehco_gevent.connections import ConnectionRegistry
from ehco_gevent.web.auth import basic_ok, loopback_only, token_ok, unguarded_exposure
from ehco_gevent.web.formatting import Page, parse_positive, pretty_bytes
from ehco_gevent.web.traffic import PING_METRIC, PingLatency, TrafficHistory, ping_sums
from ehco_gevent.web.views import connection_page, create_flask_app


def test_token_gate():
    assert token_ok("", None) and token_ok("", "anything")
    assert token_ok("t", "t")
    assert not token_ok("t", None) and not token_ok("t", "") and not token_ok("t", "T")
    assert not token_ok("tok", "to") and not token_ok("tok", "tokk")
    assert token_ok("ünï", "ünï")


def test_basic_gate():
    assert basic_ok("", "", None, None)
    assert basic_ok("u", "", None, None)  # half-configured is off, as in ehco
    assert basic_ok("u", "p", "u", "p")
    for user, pw in ((None, None), ("u", None), ("u", "x"), ("x", "p"), ("", ""), ("up", "")):
        assert not basic_ok("u", "p", user, pw), (user, pw)


def test_exposure():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"):
        assert loopback_only(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", ""):
        assert not loopback_only(host), host
    assert unguarded_exposure("0.0.0.0", "", "", "")
    assert unguarded_exposure("0.0.0.0", "", "user", "")  # half of basic auth is no auth
    assert not unguarded_exposure("0.0.0.0", "tok", "", "")
    assert not unguarded_exposure("0.0.0.0", "", "user", "pw")
    assert not unguarded_exposure("127.0.0.1", "", "", "")


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"),
                                    (1536, "1.50 KiB"), (3 * 1024 ** 3, "3.00 GiB")])
def test_pretty_bytes(n, text):
    assert pretty_bytes(n) == text


def test_paging():
    assert parse_positive(None, 10) == 10
    assert parse_positive("x", 10) == 10
    assert parse_positive("0", 10) == 10
    assert parse_positive("-3", 10) == 10
    assert parse_positive("7", 10) == 7
    assert parse_positive("5000", 10, 1000) == 1000
    page = Page(1, 10, 25)
    assert (page.total_pages, page.prev, page.next) == (3, 0, 2)
    assert Page(3, 10, 25).next == 0 and Page(3, 10, 25).prev == 2
    assert Page(3, 10, 25).slice(list(range(25))) == [20, 21, 22, 23, 24]
    assert Page(9, 10, 25).slice(list(range(25))) == []
    assert Page(1, 10, 0).total_pages == 1 and Page(1, 10, 10).next == 0


def test_traffic_history_rates():
    hist = TrafficHistory(points=3)
    hist.sample(100.0, {}, ["a"])
    hist.sample(102.0, {"a": [2000, 500]}, ["a", "b"])
    hist.sample(104.0, {"a": [2000, 4500], "b": [10, 0]}, ["a", "b"])
    data = hist.to_json()
    assert data["a"] == {"t": [100.0, 102.0, 104.0], "up": [0.0, 1000.0, 0.0],
                         "down": [0.0, 250.0, 2000.0]}
    assert data["b"]["up"] == [0.0, 5.0]
    hist.sample(106.0, {"a": [4000, 4500]}, ["a"])
    data = hist.to_json()
    assert list(data) == ["a"]  # b stopped: forgotten
    assert data["a"]["t"] == [102.0, 104.0, 106.0]  # ring of 3
    assert data["a"]["up"][-1] == 1000.0
    hist.sample(108.0, {"a": [0, 0]}, ["a"])  # totals never draw a negative rate
    assert hist.to_json()["a"]["up"][-1] == 0.0


def _ping_text(observations: dict[tuple[str, str, str], list[float]]) -> str:
    registry = CollectorRegistry()
    hist = Histogram(PING_METRIC, "ping", ["ip", "host", "label"], registry=registry)
    for (label, host, ip), values in observations.items():
        for v in values:
            hist.labels(ip=ip, host=host, label=label).observe(v)
    return generate_latest(registry).decode()


def test_ping_latency_from_histogram_text():
    key = ("lbl", "example.test", "127.0.0.1")
    assert ping_sums(_ping_text({key: [0.010, 0.030]})) == {key: (pytest.approx(0.04), 2.0)}
    pings = PingLatency()
    assert pings.update(_ping_text({key: [0.010, 0.030]})) == [
        {"label": "lbl", "host": "example.test", "ip": "127.0.0.1", "latency_ms": 20.0}]
    # the next reading is the mean of the pings since the previous one
    assert pings.update(_ping_text({key: [0.010, 0.030, 0.005]}))[0]["latency_ms"] == 5.0
    # no new ping: the last value stays
    assert pings.update(_ping_text({key: [0.010, 0.030, 0.005]}))[0]["latency_ms"] == 5.0
    assert pings.update("# nothing\n") == []


def _fake_app(**cfg):
    config, _ = parse_config({"relay_configs": [], **cfg})
    return SimpleNamespace(config=config, registry=ConnectionRegistry(),
                           relays=SimpleNamespace(relays={}), services=[],
                           reload=lambda reason: (False, "no"))


def test_blueprints_of_other_services_sit_behind_the_gate():
    bp = Blueprint("extra", __name__)
    bp.add_url_rule("/extra/", "extra", lambda: "from a service")
    app = _fake_app(web_token="tok")
    app.services = [SimpleNamespace(blueprint=lambda: bp), object()]
    client = create_flask_app(app, SimpleNamespace()).test_client()
    assert client.get("/extra/").status_code == 401
    resp = client.get("/extra/?token=tok")
    assert (resp.status_code, resp.text) == (200, "from a service")


def test_basic_auth_header_parsing():
    client = create_flask_app(_fake_app(web_auth_user="a", web_auth_pass="b:c"),
                              SimpleNamespace()).test_client()

    def hdr(raw: str):
        return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}

    assert client.get("/api/v1/config/", headers=hdr("a:b:c")).status_code == 200
    assert client.get("/api/v1/config/", headers=hdr("a:b")).status_code == 401
    assert client.get("/api/v1/config/", headers={"Authorization": "Bearer x"}).status_code == 401
    assert client.get("/api/v1/config/", headers={"Authorization": "Basic !!!"}).status_code == 401


def test_connection_page_orders():
    reg = ConnectionRegistry()
    a = reg.open("b-relay", "tcp", "127.0.0.1:1", "127.0.0.1:9", "b-relay-127.0.0.1:9")
    b = reg.open("a-relay", "tcp", "127.0.0.1:2", "127.0.0.1:9", "a-relay-127.0.0.1:9")
    c = reg.open("a-relay", "udp", "127.0.0.1:3", "127.0.0.1:9", "a-relay-127.0.0.1:9")
    view = connection_page(reg, {"conn_type": "active"})
    assert [r["id"] for r in view["rows"]] == [b.id, c.id, a.id]  # by label, then age
    for conn in (a, b):
        conn.add_up(10)
        reg.close(conn)
    view = connection_page(reg, {"conn_type": "closed", "page_size": "1", "page": "2"})
    assert [r["id"] for r in view["rows"]] == [a.id]  # newest first: b, a
    assert (view["active_count"], view["closed_count"]) == (1, 2)
    assert reg.relay_totals() == {"a-relay": [10, 0], "b-relay": [10, 0]}


def test_a_failing_view_answers_echo_json_500():
    bp = Blueprint("broken", __name__)

    def broken():
        raise RuntimeError("boom")

    bp.add_url_rule("/broken/", "broken", broken)
    app = _fake_app()
    app.services = [SimpleNamespace(blueprint=lambda: bp)]
    resp = create_flask_app(app, SimpleNamespace()).test_client().get("/broken/")
    assert resp.status_code == 500
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert resp.json == {"message": "Internal Server Error"}  # no traceback to the client


def test_connection_page_opens_on_what_there_is():
    reg = ConnectionRegistry()
    assert connection_page(reg, {})["conn_type"] == "active"  # nothing at all: Active
    conn = reg.open("r", "tcp", "127.0.0.1:1", "127.0.0.1:9", "r-127.0.0.1:9")
    assert connection_page(reg, {})["conn_type"] == "active"
    reg.close(conn)
    view = connection_page(reg, {"conn_type": "bogus"})
    assert (view["conn_type"], view["auto_closed"]) == ("closed", True)
    assert connection_page(reg, {"conn_type": "active"})["auto_closed"] is False
