/* Connections page: refresh the rows (byte counts, new and finished connections) and the
 * counts every two seconds from /api/v1/connections/. */
(function () {
    "use strict";
    var box = document.getElementById("connections");
    var connType = box.getAttribute("data-conn-type");
    var page = box.getAttribute("data-page");
    var pageSize = box.getAttribute("data-page-size");
    window.ehcoConnPolls = 0;

    function cell(tr, cls, build) {
        var td = document.createElement("td");
        td.className = cls;
        build(td);
        tr.appendChild(td);
    }

    function span(parent, cls, text) {
        var s = document.createElement(cls === "code" ? "code" : "span");
        if (cls !== "code") s.className = cls;
        s.textContent = text;
        parent.appendChild(s);
        return s;
    }

    function render(data) {
        document.getElementById("active-count").textContent = data.active_count;
        document.getElementById("closed-count").textContent = data.closed_count;
        document.getElementById("all-count").textContent = data.active_count + data.closed_count;
        var body = document.getElementById("conn-rows");
        body.textContent = "";
        if (!data.connections.length) {
            var tr = document.createElement("tr");
            tr.className = "empty";
            cell(tr, "muted", function (td) { td.colSpan = 4; td.textContent = box.getAttribute("data-empty-text"); });
            body.appendChild(tr);
        }
        data.connections.forEach(function (c) {
            var tr = document.createElement("tr");
            tr.setAttribute("data-conn-id", c.id);
            cell(tr, "label", function (td) { td.textContent = c.relay_label; });
            cell(tr, "flow", function (td) {
                span(td, "code", c.flow); td.appendChild(document.createTextNode(" ")); span(td, "tag", c.type);
            });
            cell(tr, "traffic", function (td) {
                span(td, "up", "up: " + c.up); td.appendChild(document.createTextNode(", "));
                span(td, "down", "down: " + c.down);
                td.appendChild(document.createTextNode(", handshake latency: " + c.dial_ms + "ms"));
            });
            cell(tr, "time", function (td) { td.textContent = c.time + " (" + c.duration + ")"; });
            body.appendChild(tr);
        });
        window.ehcoConnPolls += 1;
    }

    function poll() {
        var path = "/api/v1/connections/?conn_type=" + encodeURIComponent(connType) +
            "&page=" + encodeURIComponent(page) + "&page_size=" + encodeURIComponent(pageSize);
        fetch(window.ehcoUrl(path), { credentials: "same-origin" })
            .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
            .then(render)
            .catch(function (e) { console.warn("connections poll failed:", e); });
    }

    setInterval(poll, 2000);
})();
