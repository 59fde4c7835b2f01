"""Every web route of design.md 6.1 against a real ehco process."""

from __future__ import annotations

import json
import re
import socket
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from ehco_gevent.observability.metrics import parse_samples

from ..support import LOOPBACK, EhcoProcess, free_port, roundtrip, sha, wait_for, write_config
from .conftest import SUB_NAME


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append((tag, value))


def links_of(html: str) -> list[tuple[str, str]]:
    parser = Links()
    parser.feed(html)
    return parser.links


def test_index_shows_build_info_links_and_clash_providers(web_node):
    node = web_node()
    resp = node.get("/")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    page = resp.text
    assert "1.1.4-dev" in page
    assert 'id="start-time"' in page
    hrefs = [v for _, v in links_of(page)]
    for route in ("/metrics/", "/connections/", "/api/v1/config/"):
        assert route in hrefs
    # both provider URLs of the subscription, relative links and absolute ones to paste
    assert f"/clash_proxy_provider/?sub_name={SUB_NAME}" in hrefs
    assert f"/clash_proxy_provider/?sub_name={SUB_NAME}&amp;grouped=true" not in hrefs
    assert f"/clash_proxy_provider/?sub_name={SUB_NAME}&grouped=true" in hrefs
    assert f'url: "{node.base}/clash_proxy_provider/?sub_name={SUB_NAME}&amp;grouped=true"' in page
    # the live chart's feed lists the relay
    traffic = node.get("/api/v1/traffic/").json()
    assert "lbl" in traffic["relays"]
    assert set(traffic["relays"]["lbl"]) == {"t", "up", "down"}


def test_index_references_no_outside_host(web_node):
    node = web_node()
    for path in ("/", "/connections/", "/connections/?conn_type=closed"):
        page = node.get(path).text
        links = links_of(page)
        assert any(tag == "script" for tag, _ in links)
        for tag, value in links:
            parts = urlsplit(value)
            assert not parts.scheme and not parts.netloc and not value.startswith("//"), (tag, value)
            # every asset is really served by the node
            if tag in ("script", "link"):
                asset = node.get(value)
                assert asset.status_code == 200, value
                assert len(asset.content) > 100, value
                # nor does an asset load from elsewhere (inline URLs, CSS imports, sockets)
                code = re.sub(r"/\*.*?\*/", "", asset.text, flags=re.S)  # license comments
                assert not re.search(r"(?:https?|wss?)://|@import", code), value
        # nor inline in the page: the only absolute URL is the node's own (provider links)
        absolute = set(re.findall(r"(?:https?|wss?)://[^\s\"'<>/]+", page))
        assert absolute <= {node.base}, absolute
    chart = node.get("/static/uPlot.iife.min.js").text
    assert "uPlot" in chart


def test_config_dump_is_go_shaped(web_node):
    """Go ehco's json.Marshal of its Config: compact, PATH first, null for a relay's absent
    list, omitempty keys absent; relays and keys as configured."""
    node = web_node(relay_sync_url="http://127.0.0.1:9/sync?token=synctok")
    resp = node.get("/api/v1/config/")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    # no token, no basic auth: the secrets are never shown, even when asked for
    for path in ("/api/v1/config/", "/api/v1/config/?secrets=true"):
        assert "synctok" not in node.get(path).text
    assert "\n" not in resp.text and ": " not in resp.text  # compact, as Go's
    cfg = resp.json()
    assert list(cfg)[0] == "PATH" and cfg["PATH"] == str(node.config_path)
    relay = next(r for r in cfg["relay_configs"] if r["label"] == "lbl")
    assert relay == {"listen": f"{LOOPBACK}:{node.relay_port}", "listen_type": "raw",
                     "transport_type": "raw",
                     "tcp_remotes": node.config["relay_configs"][0]["tcp_remotes"],
                     "udp_remotes": None, "label": "lbl"}
    assert cfg["web_port"] == node.config["web_port"]
    assert "web_token" not in cfg and "enable_ping" not in cfg  # Go's omitempty
    assert [s["name"] for s in cfg["sub_configs"]] == [SUB_NAME]


def test_config_dump_masks_secrets_unless_asked_with_the_token(web_node):
    sync_url = "http://relay:pw@127.0.0.1:9/api/sync?token=synctok"
    node = web_node(web_token="s3cret", web_auth_user="admin", web_auth_pass="pa55",
                    relay_sync_url=sync_url, xray_config={"inbounds": [
                        {"listen": LOOPBACK, "port": free_port(), "protocol": "shadowsocks",
                         "tag": "ss_proxy", "settings": {"clients": [
                             {"method": "aes-256-gcm", "password": "ss-pw", "email": "b"}]}}]})
    auth = ("admin", "pa55")
    masked = node.get("/api/v1/config/?token=s3cret", auth=auth)
    for secret in ("s3cret", "pa55", "synctok", ":pw@", "ss-pw", "sub.yaml"):
        assert secret not in masked.text, secret
    dump = masked.json()
    assert (dump["web_token"], dump["web_auth_pass"], dump["web_auth_user"]) == (
        "***", "***", "admin")
    assert dump["relay_sync_url"] == "http://***@127.0.0.1:9/***"
    assert dump["sub_configs"][0]["url"].endswith(":%d/***" % urlsplit(
        node.config["sub_configs"][0]["url"]).port)
    client = dump["xray_config"]["inbounds"][0]["settings"]["clients"][0]
    assert client == {"method": "aes-256-gcm", "password": "***", "email": "b"}
    # asked for, with the token: everything as configured
    full = node.get("/api/v1/config/?token=s3cret&secrets=true", auth=auth).json()
    assert (full["web_token"], full["web_auth_pass"]) == ("s3cret", "pa55")
    assert full["relay_sync_url"] == sync_url
    assert full["sub_configs"] == node.config["sub_configs"]
    assert full["xray_config"]["inbounds"][0]["settings"]["clients"][0]["password"] == "ss-pw"
    assert node.get("/api/v1/config/?secrets=true", auth=auth).status_code == 401


def test_metrics_route(web_node):
    node = web_node()
    resp = node.get("/metrics/")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = parse_samples(resp.text)
    alive = [s for s in samples if s.name == "ehco_alive_state"]
    assert [s.value for s in alive] == [1]
    assert alive[0].labels["ehco_runner_hostname"] == socket.gethostname()
    # host counters without node_exporter: loopback is always there
    lo = {s.name: s.value for s in samples if s.labels.get("device") == "lo"}
    assert lo["node_network_receive_bytes_total"] > 0
    assert lo["node_network_transmit_bytes_total"] > 0
    names = {s.name for s in samples}
    assert {"node_cpu_seconds_total", "node_load1", "node_memory_MemTotal_bytes"} <= names


@pytest.mark.workers
def test_connections_active_then_closed(web_node):
    node = web_node()
    payload = bytes(range(256)) * 12  # 3072 bytes
    conn = socket.create_connection((LOOPBACK, node.relay_port), timeout=10)
    try:
        conn.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            echoed += conn.recv(65536)
        assert echoed == payload
        client = "%s:%d" % conn.getsockname()

        def active():
            return node.get("/api/v1/connections/?conn_type=active").json()

        data = wait_for(active, lambda d: any(c["up_bytes"] == 3072 and c["down_bytes"] == 3072
                                              for c in d["connections"]),
                        "active connection with its bytes")
        row = data["connections"][0]
        assert row["relay_label"] == "lbl"
        assert row["flow"].startswith(client + " → ")
        assert data["active_count"] == 1
        page = node.get("/connections/?conn_type=active").text
        assert "lbl" in page and client in page
        assert "up: 3.00 KiB" in page and "down: 3.00 KiB" in page
        assert 'class="empty"' not in page
        assert "N/A" in page  # no end time yet
    finally:
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
        conn.close()

    def closed():
        return node.get("/api/v1/connections/?conn_type=closed").json()

    data = wait_for(closed, lambda d: d["closed_count"] == 1, "closed connection")
    row = data["connections"][0]
    assert (row["relay_label"], row["up_bytes"], row["down_bytes"]) == ("lbl", 3072, 3072)
    assert row["flow"] == f"{client} → {LOOPBACK}:{node.echo_port}"
    # the dial latency was recorded: the row's is the one the handshake histogram observed
    hist = {s.name: s.value for s in parse_samples(node.get("/metrics/").text)
            if s.name.startswith("ehco_traffic_handshake_duration_")
            and s.labels.get("remote") == f"lbl-{LOOPBACK}:{node.echo_port}"}
    assert hist["ehco_traffic_handshake_duration_count"] == 1
    assert row["dial_ms"] > 0
    assert abs(hist["ehco_traffic_handshake_duration_sum"] - row["dial_ms"]) < 0.001
    assert row["time"] and row["duration"] and row["active"] is False
    assert data["active_count"] == 0
    page = node.get("/connections/?conn_type=closed").text
    assert client in page and "up: 3.00 KiB" in page
    assert "No connection is open right now" in node.get("/connections/?conn_type=active").text
    # opened without a type, with nothing open: the page shows the closed one and says why
    page = node.get("/connections/").text
    assert 'id="auto-closed"' in page and client in page and "up: 3.00 KiB" in page


@pytest.mark.workers
def test_connections_paging(web_node):
    node = web_node()
    for i in range(3):
        assert roundtrip(node.relay_port, b"x" * (i + 1)) == b"x" * (i + 1)

    def closed(page):
        return node.get(f"/api/v1/connections/?conn_type=closed&page={page}&page_size=2").json()

    wait_for(lambda: closed(1), lambda d: d["closed_count"] == 3, "three closed")
    first, second = closed(1), closed(2)
    assert [c["up_bytes"] for c in first["connections"]] == [3, 2]  # newest first
    assert [c["up_bytes"] for c in second["connections"]] == [1]
    html = node.get("/connections/?conn_type=closed&page=1&page_size=2").text
    assert "Page 1 of 2" in html
    assert "/connections/?conn_type=closed&amp;page=2&amp;page_size=2" in html
    # page_size defaults to 10: twelve closed connections make two pages of 10 and 2
    for i in range(9):
        assert roundtrip(node.relay_port, b"y" * (10 + i)) == b"y" * (10 + i)
    wait_for(lambda: closed(1), lambda d: d["closed_count"] == 12, "twelve closed")
    default = node.get("/api/v1/connections/?conn_type=closed").json()
    assert (default["page"], default["page_size"], default["total"]) == (1, 10, 12)
    assert [c["up_bytes"] for c in default["connections"]] == [18, 17, 16, 15, 14, 13, 12, 11,
                                                               10, 3]
    page2 = node.get("/api/v1/connections/?conn_type=closed&page=2").json()
    assert [c["up_bytes"] for c in page2["connections"]] == [2, 1]
    html = node.get("/connections/?conn_type=closed&page=2").text
    assert "Page 2 of 2" in html
    assert html.count("up: 2 B") == 1 and html.count("up: 1 B") == 1 and "up: 3 B" not in html
    # junk parameters fall back to the defaults instead of failing
    assert node.get("/connections/?conn_type=bogus&page=x&page_size=-1").status_code == 200


@pytest.mark.workers
@pytest.mark.parametrize("route", ["/api/v1/config/reload/", "/reload/"])
def test_reload_routes(web_node, route, echo_server):
    node = web_node()
    assert node.get(route).status_code == 405  # POST only
    resp = node.post(route)
    assert (resp.status_code, resp.text) == (200, "reload success")
    # a new relay from the changed file is served after the reload
    new_port = free_port()
    cfg = json.loads(node.config_path.read_text())
    cfg["relay_configs"].append({"listen": f"{LOOPBACK}:{new_port}", "label": "second",
                                 "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]})
    write_config(node.config_path.parent, cfg)
    resp = node.post(route)
    assert (resp.status_code, resp.text) == (200, "reload success")
    assert roundtrip(new_port, b"second relay") == b"second relay"
    labels = [r["label"] for r in node.get("/api/v1/config/").json()["relay_configs"]]
    assert "second" in labels
    # an invalid file: 400 with the reason, relays keep serving
    node.config_path.write_text('{"relay_configs": [{"listen": "nope"}]')
    resp = node.post(route)
    assert resp.status_code == 400  # echo's shape: the reason as the message
    assert "not valid JSON" in resp.json()["message"]
    assert str(node.config_path) in resp.json()["message"]
    node.config_path.write_text(json.dumps({**cfg, "relay_configs": [
        {"listen": f"{LOOPBACK}:{node.relay_port}", "label": "lbl", "tcp_remotes": []}]}))
    resp = node.post(route)
    assert resp.status_code == 400
    assert "tcp_remotes/udp_remotes" in resp.json()["message"] and "lbl" in resp.text
    payload = bytes(range(256)) * 100
    assert sha(roundtrip(node.relay_port, payload)) == sha(payload)
    assert roundtrip(new_port, b"still here") == b"still here"


def test_web_token(web_node):
    node = web_node(web_token="s3cret")
    for path in ("/", "/static/style.css", "/api/v1/config/", "/connections/", "/metrics/",
                 "/api/v1/connections/", "/api/v1/traffic/",
                 f"/clash_proxy_provider/?sub_name={SUB_NAME}"):
        resp = node.get(path)
        assert resp.status_code == 401, path
        assert "s3cret" not in resp.text and "lbl" not in resp.text and "ehco_" not in resp.text
        sep = "&" if "?" in path else "?"
        assert node.get(f"{path}{sep}token=wrong").status_code == 401, path
        assert node.get(f"{path}{sep}token=s3cret").status_code == 200, path
    for route in ("/reload/", "/api/v1/config/reload/"):
        assert node.post(route).status_code == 401
        assert node.post(route + "?token=wrong").status_code == 401
        assert node.post(route + "?token=s3cret").text == "reload success"
    resp = node.get("/?token=s3cret")
    assert resp.status_code == 200
    # every link on the page carries the token, so following them works
    for tag, value in links_of(resp.text):
        assert parse_qs(urlsplit(value).query).get("token") == ["s3cret"], (tag, value)
        if tag in ("script", "link") or value.startswith("/connections/"):
            assert node.get(value).status_code == 200, value
    assert node.get("/api/v1/config/?token=s3cret").json()["web_token"] == "***"
    assert node.get("/api/v1/config/?token=s3cret&secrets=true").json()["web_token"] == "s3cret"


def test_basic_auth(web_node):
    node = web_node(web_auth_user="admin", web_auth_pass="pa55")
    for path in ("/", "/static/style.css", "/api/v1/config/", "/connections/", "/metrics/",
                 "/api/v1/connections/", "/api/v1/traffic/"):
        resp = node.get(path)
        assert resp.status_code == 401, path
        assert resp.headers["WWW-Authenticate"] == "basic realm=Restricted"  # echo's
        assert resp.json() == {"message": "Unauthorized"}
        assert "lbl" not in resp.text
        for creds in (("admin", "wrong"), ("wrong", "pa55"), ("", ""), ("admin", "pa55x")):
            assert node.get(path, auth=creds).status_code == 401, (path, creds)
        assert node.get(path, auth=("admin", "pa55")).status_code == 200, path
    for route in ("/reload/", "/api/v1/config/reload/"):
        assert node.post(route).status_code == 401
        assert node.post(route, auth=("admin", "nope")).status_code == 401
        assert node.post(route, auth=("admin", "pa55")).text == "reload success"


def test_web_port_taken_is_a_clear_error(tmp_path, echo_server):
    holder = socket.socket()
    holder.bind((LOOPBACK, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        path = write_config(tmp_path, {
            "web_host": LOOPBACK, "web_port": port, "enable_ping": False,
            "relay_configs": [{"listen": f"{LOOPBACK}:{free_port()}",
                               "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]}]})
        proc = EhcoProcess(["-c", str(path)], tmp_path)
        assert proc.proc.wait(30) == 1
        log = proc.log
        proc.stop()
        assert f"web server: cannot listen on {LOOPBACK}:{port}: address already in use" in log
        assert "Traceback" not in log
    finally:
        holder.close()


def test_traffic_feed_counts_bytes_per_relay(web_node):
    node = web_node()
    payload = b"z" * 200_000
    assert sha(roundtrip(node.relay_port, payload)) == sha(payload)

    def feed():
        return node.get("/api/v1/traffic/").json()["relays"]["lbl"]

    # rates are bytes/s over each sample interval: summed over time they give the bytes moved
    def moved(series):
        t = series["t"]
        return sum(up * (t[i] - t[i - 1]) for i, up in enumerate(series["up"]) if i)

    series = wait_for(feed, lambda s: round(moved(s)) >= 200_000, "traffic in the feed")
    assert round(moved(series)) == 200_000
    assert round(sum(d * (series["t"][i] - series["t"][i - 1])
                     for i, d in enumerate(series["down"]) if i)) == 200_000
    assert requests.get(node.url("/api/v1/traffic/"), timeout=10).json()["pings"] == []


def test_reload_moves_the_web_server_to_a_new_port(web_node):
    node = web_node()
    cfg = json.loads(node.config_path.read_text())
    cfg["web_port"] = new_port = free_port()
    write_config(node.config_path.parent, cfg)
    assert node.post("/reload/").text == "reload success"
    node.proc.wait_log(f"Start Web Server at http://{LOOPBACK}:{new_port}")
    resp = requests.get(f"http://{LOOPBACK}:{new_port}/api/v1/config/", timeout=10)
    assert resp.json()["web_port"] == new_port
    with pytest.raises(requests.ConnectionError):
        requests.get(node.url("/"), timeout=5)


def assert_echo_error(resp: requests.Response, code: int, message: str) -> None:
    """The shape Go ehco's web framework (echo) gives every error."""
    assert resp.status_code == code, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert resp.json()["message"] == message


def test_errors_answer_json_as_echo(web_node):
    node = web_node()
    for path in ("/nope", "/static/nope.js", "/api/v1/nope/"):
        assert_echo_error(node.get(path), 404, "Not Found")
        assert node.get(path).json() == {"message": "Not Found"}
    for method, path in (("GET", "/api/v1/config/reload/"), ("POST", "/metrics/"),
                         ("DELETE", "/")):
        resp = requests.request(method, node.url(path), timeout=10)
        assert_echo_error(resp, 405, "Method Not Allowed")
        assert resp.headers["Allow"]
    resp = node.get("/clash_proxy_provider/?sub_name=nope")
    assert_echo_error(resp, 400, "sub_name=nope not found")
    assert resp.json()["sub_names"] == [SUB_NAME]
    resp = node.get("/clash_proxy_provider/")
    assert (resp.status_code, resp.text) == (400, "sub_name is empty")


def test_auth_errors_answer_json_as_echo(web_node):
    node = web_node(web_token="s3cret")
    for path in ("/", "/nope", "/api/v1/config/"):  # the gate answers before routing
        assert_echo_error(node.get(path), 401, "missing key in the query string")
        assert_echo_error(node.get(path + "?token=bad"), 401, "Unauthorized")
    assert_echo_error(node.get("/nope?token=s3cret"), 404, "Not Found")


def test_path_without_trailing_slash_redirects_keeping_the_query(web_node):
    """Go answered 404 for /metrics; we redirect to /metrics/ (docs/decisions.md), after the
    auth gate and with the token kept, and the method kept for POST."""
    node = web_node(web_token="s3cret")
    resp = node.get("/metrics?token=s3cret", allow_redirects=False)
    assert resp.status_code == 308
    assert resp.headers["Location"].endswith("/metrics/?token=s3cret")
    assert "ehco_alive_state" in node.get("/metrics?token=s3cret").text
    assert node.get("/metrics", allow_redirects=False).status_code == 401
    assert node.get("/api/v1/config?token=s3cret").json()["PATH"] == str(node.config_path)
    resp = node.post("/api/v1/config/reload?token=s3cret")
    assert (resp.status_code, resp.text) == (200, "reload success")
    assert resp.history and resp.history[0].status_code == 308


def test_relays_feed_shows_dials_traffic_and_failures(three_relays):
    """The index page's table (the ``table`` of its feed): the relay whose remote refuses every
    dial reads failing, with the error and the exact count; the working one its latency and
    bytes; the UDP one its session."""
    node = three_relays.node
    payload = b"r" * 5000
    assert sha(roundtrip(three_relays.ok_port, payload)) == sha(payload)
    three_relays.refuse_and_echo_udp(dials=3)

    def rows():
        return {r["label"]: r for r in node.get("/api/v1/traffic/").json()["table"]}

    data = wait_for(rows, lambda d: d["ok"]["down_bytes"] == 5000
                    and d["refused"]["dials_failed"] == 3 and d["udp"]["down_bytes"] == 4,
                    "relays table")
    assert list(data) == ["ok", "refused", "udp"]  # config order
    ok, refused, udp = data["ok"], data["refused"], data["udp"]
    assert (ok["status"], ok["up_bytes"], ok["active"], ok["dials_failed"]) == ("ok", 5000, 0, 0)
    remote = ok["remotes"][0]
    assert (remote["status"], remote["dials"], remote["type"]) == ("ok", 1, "tcp")
    assert remote["last_dial_ms"] > 0 and remote["last_error"] == ""
    assert (refused["status"], refused["listen"], refused["listen_type"],
            refused["transport_type"]) == ("failing", f"{LOOPBACK}:{three_relays.refused_port}",
                                           "raw", "raw")
    bad = refused["remotes"][0]
    assert (bad["remote"], bad["dials_failed"], bad["dials"]) == (
        three_relays.refused_remote, 3, 3)
    # marked down by passive failover (max_fails 1), the refusal kept as the last error
    assert bad["status"] == "down" and "failed dial" in bad["reason"]
    assert "refused" in bad["last_error"].lower()
    assert (udp["status"], udp["remotes"][0]["type"], udp["up_bytes"]) == ("ok", "udp", 4)
    assert udp["active"] == 1  # the UDP session lives until its idle timeout
    # the same count in the metrics, so an alert sees what the page shows
    from ehco_gevent.observability.metrics import parse_samples

    fails = [s.value for s in parse_samples(node.get("/metrics/").text)
             if s.name == "ehco_gevent_dial_failures_total"
             and s.labels["remote"] == f"refused-{three_relays.refused_remote}"]
    assert fails == [3]
