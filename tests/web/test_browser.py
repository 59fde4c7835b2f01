"""The pages in a real browser (Debian's chromium driven by Playwright) while traffic flows:
the relay's chart draws and moves, and the live connection shows up with growing byte counts."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ..support import LOOPBACK, ROOT, require_program

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class SteadyTraffic:
    """One connection through the relay that keeps echoing 32 KiB chunks until stopped
    (bounded: at most ``limit`` seconds)."""

    def __init__(self, port: int, limit: float = 90.0):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=10)
        self.client = "%s:%d" % self.sock.getsockname()
        self.stop_event = threading.Event()
        self.sent = 0
        self.limit = limit
        self.errors: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        chunk = b"e" * 32768
        end = time.monotonic() + self.limit
        try:
            while not self.stop_event.is_set() and time.monotonic() < end:
                self.sock.sendall(chunk)
                got = 0
                while got < len(chunk):
                    data = self.sock.recv(len(chunk) - got)
                    if not data:
                        raise ConnectionError("relay closed the connection")
                    got += len(data)
                self.sent += len(chunk)
                time.sleep(0.02)
        except OSError as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        self.sock.close()


def wait_js(page, expr: str, what: str, timeout_ms: int = 30000):
    try:
        page.wait_for_function(expr, timeout=timeout_ms)
    except Exception as exc:
        raise AssertionError(f"{what}: {expr} never held ({exc})") from None


@pytest.fixture
def browser():
    path = require_program("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_index_chart_moves_and_connection_row_updates(web_node, browser):
    node = web_node()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    outside: list[str] = []
    page.on("request", lambda req: outside.append(req.url)
            if not req.url.startswith(node.base) else None)
    page.goto(node.url("/"))
    assert "ehco is a network relay tool" in page.text_content("h1")
    wait_js(page, "window.ehcoCharts && window.ehcoCharts['lbl'] && window.ehcoTrafficPolls >= 1",
            "chart for relay lbl")
    idle = page.evaluate("window.ehcoCharts['lbl'].plot.data")
    assert max(idle[1] + idle[2]) == 0  # nothing relayed yet
    idle_pixels = page.evaluate("window.ehcoCharts['lbl'].plot.ctx.canvas.toDataURL()")

    traffic = SteadyTraffic(node.relay_port)
    try:
        # the chart's own data shows bytes moving up and down, and the drawing changes
        wait_js(page, "(() => { const d = window.ehcoCharts['lbl'].plot.data;"
                      " return Math.max(...d[1]) > 50000 && Math.max(...d[2]) > 50000; })()",
                "chart shows traffic")
        first = page.evaluate("window.ehcoCharts['lbl'].plot.data")
        polls = page.evaluate("window.ehcoTrafficPolls")
        wait_js(page, f"window.ehcoTrafficPolls >= {polls + 2}", "chart keeps polling")
        later = page.evaluate("window.ehcoCharts['lbl'].plot.data")
        assert later[0][-1] > first[0][-1]  # new points on the time axis
        assert later != first
        assert page.evaluate("window.ehcoCharts['lbl'].plot.scales.y.max") > 50000
        busy_pixels = page.evaluate("window.ehcoCharts['lbl'].plot.ctx.canvas.toDataURL()")
        assert busy_pixels != idle_pixels
        rate_text = page.text_content("#traffic [data-relay='lbl'] .rate-up")
        assert rate_text.startswith("\u2191 ") and "/s" in rate_text
        assert float(page.get_attribute("#traffic [data-relay='lbl']", "data-last-up")) > 0
        page.screenshot(path=str(ARTIFACTS / "web-index.png"), full_page=True)

        # follow the link to the connections page: the live connection is listed and its
        # byte counts move without a reload
        page.click("#connections-link")
        page.wait_for_url("**/connections/")
        assert page.get_attribute("#tab-active", "class") == "is-active"  # one is open
        row = page.locator("#conn-rows tr", has_text=traffic.client)
        row.wait_for(timeout=15000)
        assert row.locator("td.label").text_content() == "lbl"
        assert traffic.client + " \u2192 " in row.locator("td.flow").text_content()
        up_before = row.locator(".up").text_content()
        polls = page.evaluate("window.ehcoConnPolls")
        wait_js(page, f"window.ehcoConnPolls >= {polls + 2}", "connections keep polling")
        row = page.locator("#conn-rows tr", has_text=traffic.client)
        up_after = row.locator(".up").text_content()
        assert up_after != up_before, (up_before, up_after)
        assert page.text_content("#active-count") == "1"
        page.screenshot(path=str(ARTIFACTS / "web-connections.png"), full_page=True)
    finally:
        traffic.stop()
    assert not traffic.errors, traffic.errors
    assert traffic.sent > 0
    assert outside == [], outside


def test_index_lists_proxy_users_with_live_traffic(web_node, browser, echo_server):
    """With an xray_config the index page lists the proxy's users; their byte counts and
    connection count follow the traffic without a reload."""
    from ..proxy.test_shadowsocks import read_reply, raw_ss_connect
    from ..support import free_tcp_udp_port, wait_port

    ss_port = free_tcp_udp_port()
    node = web_node(xray_config={"inbounds": [
        {"listen": LOOPBACK, "port": ss_port, "protocol": "shadowsocks", "tag": "ss_proxy",
         "settings": {"clients": [{"method": "aes-256-gcm", "password": "pw-b", "email": "b"}]}}]})
    wait_port(ss_port)
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    page.goto(node.url("/"))
    row = "#proxy-users tr[data-user='ss_proxy/b']"
    assert page.get_attribute(row, "data-upload-bytes") == "0"
    wait_js(page, "window.ehcoTrafficPolls >= 1", "first poll")

    payload = b"p" * 70_000
    s, _, _ = raw_ss_connect(ss_port, "aes-256-gcm", "pw-b", echo_server.port, first=payload)
    try:
        assert read_reply(s, "aes-256-gcm", "pw-b", len(payload)) == payload
        expected = 2 * len(payload)  # the panel's quantity
        wait_js(page, f"(() => {{ const r = document.querySelector(\"{row}\");"
                      f" return r && r.dataset.uploadBytes === '{expected}'"
                      " && r.dataset.connections === '1'; })()", "user row shows the traffic")
        assert page.text_content(f"{row} td.up") == "136.72 KiB"
        page.screenshot(path=str(ARTIFACTS / "web-proxy-users.png"), full_page=True)
    finally:
        s.close()
    wait_js(page, f"document.querySelector(\"{row}\").dataset.connections === '0'",
            "connection count drops when the client leaves")


def test_index_relays_table_marks_the_failing_remote(three_relays, browser):
    """Three relays (one whose remote refuses every dial): the relays table sits above the
    charts, the refusing remote reads as failed with its error, the axes use the header's
    units, and the connections page opens on the finished connection once none is open."""
    from ..support import roundtrip
    node = three_relays.node
    assert roundtrip(three_relays.ok_port, b"hello") == b"hello"
    page = browser.new_page(viewport={"width": 1280, "height": 1000})

    # nothing open any more: the connections page opens on Closed and says why
    page.goto(node.url("/connections/"))
    assert page.is_visible("#auto-closed")
    assert page.get_attribute("#tab-closed", "class") == "is-active"
    page.locator("#conn-rows tr td.label", has_text="ok").first.wait_for(timeout=15000)

    page.goto(node.url("/"))
    three_relays.refuse_and_echo_udp(dials=3)
    traffic = SteadyTraffic(three_relays.ok_port)
    try:
        failing = "#relays tr[data-relay='refused'][data-status='failing']"
        page.wait_for_selector(failing, timeout=30000)
        line = page.locator(f"{failing} .remote[data-status='down']")  # max_fails 1: down
        assert line.locator(".badge").text_content() == "down"
        assert "refused" in line.locator(".error").text_content().lower()
        # the row turns failing at the first refused dial; the page catches up with the
        # other two at its next refresh
        wait_js(page, f"(() => {{ const r = document.querySelector(\"{failing}\");"
                      " return r && r.querySelector('td.failed').textContent === '3'"
                      " && r.querySelector('.remote[data-status=\"down\"]').textContent"
                      ".includes('(3 of 3 dials failed)'); })()",
                "all three refused dials on the failing row")
        # an error reads as an error: red, not the muted grey of an idle remote
        color = page.eval_on_selector(f"{failing} .remote .error", "e => getComputedStyle(e).color")
        assert color == "rgb(197, 48, 48)", color
        ok = "#relays tr[data-relay='ok']"
        wait_js(page, "(() => { const r = document.querySelector(\"#relays tr[data-relay='ok']\");"
                      " return r && r.dataset.status === 'ok'"
                      " && r.querySelector('td.active').textContent === '1'; })()",
                "working relay with its open connection")
        assert " ms" in page.text_content(f"{ok} .remote .latency")
        assert page.get_attribute("#relays tr[data-relay='udp']", "data-status") == "ok"
        assert page.text_content("#relays tr[data-relay='udp'] td.types") == "raw \u2192 raw"
        # above the charts, and every relay has its chart, drawing the traffic
        table_y = page.locator("#relays-section").bounding_box()["y"]
        assert table_y < page.locator("#traffic-section").bounding_box()["y"]
        wait_js(page, "['ok', 'refused', 'udp'].every(l => window.ehcoCharts[l])"
                      " && Math.max(...window.ehcoCharts['ok'].plot.data[2]) > 50000",
                "charts for the three relays")
        wait_js(page, "document.querySelector(\"#traffic [data-relay='refused'] .badge\")"
                      ".textContent === 'failing'", "the failing relay's chart says so")
        # the y axis speaks the header's units
        ticks = page.evaluate("window.ehcoCharts['ok'].plot.axes[1]._values")
        assert ticks and all(t.endswith(("B/s", "KiB/s", "MiB/s")) for t in ticks), ticks
        assert page.evaluate("window.ehcoBytes(7.2 * 1048576, 1) + '/s'") == "7.2 MiB/s"
        page.screenshot(path=str(ARTIFACTS / "web-index-relays.png"), full_page=True)
    finally:
        traffic.stop()
    assert not traffic.errors, traffic.errors
    # the reload button reads the reason out of the JSON error
    node.config_path.write_text('{"relay_configs": [')
    page.click("#reloadButton")
    wait_js(page, "document.getElementById('reloadResult').textContent.startsWith('failed: ')",
            "reload failure shown")
    shown = page.text_content("#reloadResult")
    assert "not valid JSON" in shown and '"message"' not in shown, shown
