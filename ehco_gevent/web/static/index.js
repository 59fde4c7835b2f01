/* Index page: the relays table, one uPlot chart per relay (bytes/s up and down), ping
 * latencies, the proxy's users, reload button. Polls /api/v1/traffic/ every sample interval;
 * charts are kept in window.ehcoCharts by label. */
(function () {
    "use strict";
    var root = document.getElementById("traffic");
    var interval = parseFloat(root.getAttribute("data-interval")) || 2;
    var charts = {};
    window.ehcoCharts = charts;
    window.ehcoTrafficPolls = 0;

    function rate(v) { return window.ehcoBytes(v) + "/s"; }

    // axis ticks: the header's units (KiB/s, MiB/s), one decimal so the label fits the gutter
    function tick(v) { return window.ehcoBytes(v, 1) + "/s"; }

    function clock(t) {
        var d = new Date(t * 1000);
        return [d.getHours(), d.getMinutes(), d.getSeconds()].map(function (n) {
            return (n < 10 ? "0" : "") + n;
        }).join(":");
    }

    function chartWidth() { return Math.max(300, root.clientWidth - 4); }

    function makeChart(label) {
        var box = document.createElement("div");
        box.className = "relay";
        box.setAttribute("data-relay", label);
        var head = document.createElement("div");
        head.className = "relay-head";
        var name = document.createElement("span");
        name.className = "label";
        name.textContent = label;
        var up = document.createElement("span");
        up.className = "rate-up";
        var down = document.createElement("span");
        down.className = "rate-down";
        var badge = document.createElement("span");  // set from the relays feed
        badge.className = "badge";
        head.appendChild(name); head.appendChild(badge); head.appendChild(up); head.appendChild(down);
        var plot = document.createElement("div");
        plot.className = "plot";
        box.appendChild(head); box.appendChild(plot);
        root.appendChild(box);
        var opts = {
            width: chartWidth(), height: 170,
            scales: { y: { range: function (u, min, max) { return [0, Math.max(1024, max * 1.1)]; } } },
            series: [
                {},
                { label: "up", stroke: "#2f6fdb", fill: "rgba(47,111,219,0.12)", width: 2,
                  value: function (u, v) { return v == null ? "-" : rate(v); } },
                { label: "down", stroke: "#1a9a62", fill: "rgba(26,154,98,0.12)", width: 2,
                  value: function (u, v) { return v == null ? "-" : rate(v); } }
            ],
            axes: [
                { space: 70, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600],
                  values: function (u, vals) { return vals.map(clock); } },
                { size: 84, values: function (u, vals) { return vals.map(tick); } }
            ]
        };
        var u = new uPlot(opts, [[], [], []], plot);
        return { box: box, upText: up, downText: down, badge: badge, plot: u };
    }

    // one muted row across the table, for a table with nothing to show yet
    function emptyRow(body, columns, text) {
        var tr = document.createElement("tr");
        var td = document.createElement("td");
        td.colSpan = columns; td.className = "muted"; td.textContent = text;
        tr.appendChild(td); body.appendChild(tr);
    }

    function renderPings(pings) {
        var body = document.getElementById("pings");
        body.textContent = "";
        if (!pings.length) {
            emptyRow(body, 4, "No ping results yet.");
            return;
        }
        pings.forEach(function (p) {
            var tr = document.createElement("tr");
            [p.label, p.host, p.ip, p.latency_ms.toFixed(2) + " ms"].forEach(function (v) {
                var td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
            });
            body.appendChild(tr);
        });
    }

    // proxy users: totals from the feed, rates from the difference between two polls
    var lastUsers = {};

    function renderProxyUsers(users, now) {
        var body = document.getElementById("proxy-users");
        if (!body || !users) return;
        body.textContent = "";
        if (!users.length) emptyRow(body, 8, "No proxy users.");
        var seen = {};
        users.forEach(function (u) {
            var prev = lastUsers[u.user], upRate = null, downRate = null;
            if (prev && now > prev.t) {
                upRate = Math.max(0, u.upload_bytes - prev.up) / (now - prev.t);
                downRate = Math.max(0, u.download_bytes - prev.down) / (now - prev.t);
            }
            seen[u.user] = { t: now, up: u.upload_bytes, down: u.download_bytes };
            var tr = document.createElement("tr");
            tr.setAttribute("data-user", u.user);
            tr.setAttribute("data-upload-bytes", u.upload_bytes);
            tr.setAttribute("data-download-bytes", u.download_bytes);
            tr.setAttribute("data-connections", u.connections);
            var cells = [
                [u.user, ""], [u.protocol, ""],
                [u.source + (u.inbound ? " (" + u.inbound + ")" : ""), ""],
                [window.ehcoBytes(u.upload_bytes), "up"], [window.ehcoBytes(u.download_bytes), "down"],
                [upRate == null ? "-" : rate(upRate), "up-rate"],
                [downRate == null ? "-" : rate(downRate), "down-rate"],
                [String(u.connections), "conns"]
            ];
            cells.forEach(function (c) {
                var td = document.createElement("td");
                td.textContent = c[0];
                if (c[1]) td.className = c[1];
                tr.appendChild(td);
            });
            body.appendChild(tr);
        });
        lastUsers = seen;
    }

    function apply(data) {
        var seen = {};
        var empty = document.getElementById("no-relays");
        Object.keys(data.relays).forEach(function (label) {
            seen[label] = true;
            var s = data.relays[label];
            var c = charts[label];
            if (!c) {
                if (empty) { empty.remove(); empty = null; }
                c = charts[label] = makeChart(label);
                paintStatus(label);
            }
            c.plot.setData([s.t, s.up, s.down]);
            var n = s.t.length;
            var lastUp = n ? s.up[n - 1] : 0, lastDown = n ? s.down[n - 1] : 0;
            c.upText.textContent = "\u2191 " + rate(lastUp);
            c.downText.textContent = "\u2193 " + rate(lastDown);
            c.box.setAttribute("data-last-up", lastUp);
            c.box.setAttribute("data-last-down", lastDown);
        });
        Object.keys(charts).forEach(function (label) {
            if (!seen[label]) { charts[label].plot.destroy(); charts[label].box.remove(); delete charts[label]; }
        });
        renderRelays(data.table || []);
        renderPings(data.pings || []);
        renderProxyUsers(data.proxy_users, data.now);
        window.ehcoTrafficPolls += 1;
    }

    // -- relays table ----------------------------------------------------------------------

    function el(tag, cls, text) {
        var e = document.createElement(tag);
        if (cls) e.className = cls;
        if (text != null) e.textContent = text;
        return e;
    }

    // one line per remote: status badge, address, then the latency, or the error in red
    var BADGE = { ok: "ok", failing: "failed", down: "down", idle: "no dial yet",
                  "no reply": "no reply" };

    function remoteLine(r) {
        var line = el("div", "remote status-" + r.status.replace(" ", "-"));
        line.setAttribute("data-remote", r.remote);
        line.setAttribute("data-status", r.status);
        line.appendChild(el("span", "badge", BADGE[r.status] || r.status));
        line.appendChild(el("code", "", r.remote));
        if (r.type === "udp") line.appendChild(el("span", "tag", "udp"));
        if (r.status === "failing" || r.status === "down") {
            var why = [r.reason, r.last_error].filter(function (x) { return x; }).join("; last: ");
            line.appendChild(el("span", "error", " " + why));
        } else if (r.status === "no reply") {
            line.appendChild(el("span", "muted", " datagrams sent, none came back yet"));
        } else if (r.last_dial_ms != null) {
            line.appendChild(el("span", "latency", " " + r.last_dial_ms.toFixed(1) + " ms"));
        }
        if (r.dials_failed) {
            line.appendChild(el("span", "fails", " (" + r.dials_failed + " of " + r.dials +
                                " dials failed)"));
        }
        return line;
    }

    // a failing relay's flat chart must not look like an idle one: its head carries the status
    var relayStatus = {};

    function paintStatus(label) {
        var chart = charts[label], status = relayStatus[label];
        if (!chart || !status) return;
        chart.box.className = "relay status-" + status.replace(" ", "-");
        chart.badge.textContent = status;
    }

    function renderRelays(rows) {
        var body = document.getElementById("relays");
        body.textContent = "";
        if (!rows.length) emptyRow(body, 7, "No relays running.");
        rows.forEach(function (relay) {
            var tr = el("tr", "relay-row status-" + relay.status.replace(" ", "-"));
            tr.setAttribute("data-relay", relay.label);
            tr.setAttribute("data-status", relay.status);
            var name = el("td", "label");
            name.appendChild(el("div", "", relay.label));
            name.appendChild(el("span", "badge", relay.status));
            tr.appendChild(name);
            var listen = el("td"); listen.appendChild(el("code", "", relay.listen)); tr.appendChild(listen);
            var types = el("td", "types", relay.listen_type + " \u2192 " + relay.transport_type);
            if (relay.remotes.length > 1) types.appendChild(el("div", "muted small", relay.lb_strategy));
            tr.appendChild(types);
            var remotes = el("td", "remotes");
            relay.remotes.forEach(function (r) { remotes.appendChild(remoteLine(r)); });
            tr.appendChild(remotes);
            tr.appendChild(el("td", "num active", String(relay.active)));
            var traffic = el("td", "traffic");
            traffic.appendChild(el("div", "up", "\u2191 " + window.ehcoBytes(relay.up_bytes)));
            traffic.appendChild(el("div", "down", "\u2193 " + window.ehcoBytes(relay.down_bytes)));
            tr.appendChild(traffic);
            tr.appendChild(el("td", "num failed" + (relay.dials_failed ? " error" : ""),
                              String(relay.dials_failed)));
            body.appendChild(tr);
            relayStatus[relay.label] = relay.status;
            paintStatus(relay.label);
        });
    }

    function poll() {
        fetch(window.ehcoUrl("/api/v1/traffic/"), { credentials: "same-origin" })
            .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
            .then(apply)
            .catch(function (e) { console.warn("traffic poll failed:", e); });
    }

    window.addEventListener("resize", function () {
        Object.keys(charts).forEach(function (label) {
            charts[label].plot.setSize({ width: chartWidth(), height: 170 });
        });
    });

    var button = document.getElementById("reloadButton");
    var result = document.getElementById("reloadResult");
    button.addEventListener("click", function () {
        result.textContent = "reloading...";
        fetch(window.ehcoUrl("/api/v1/config/reload/"), { method: "POST", credentials: "same-origin" })
            .then(function (r) { return r.text().then(function (t) { return [r.ok, t]; }); })
            .then(function (res) {
                var text = res[1];
                if (!res[0]) {  // errors come as echo's {"message": ...}
                    try { text = JSON.parse(text).message; } catch (e) { /* plain text */ }
                }
                // a partial reload names what started, was kept and failed: no "failed:" first
                result.textContent = (res[0] || text.indexOf("reload:") === 0 ? "" : "failed: ") + text;
            })
            .catch(function (e) { result.textContent = "failed: " + e; });
    });

    poll();
    setInterval(poll, interval * 1000);
})();
