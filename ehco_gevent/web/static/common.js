/* Shared by the pages: links and fetches carry ?token= when the page was opened with one. */
(function () {
    "use strict";
    var token = new URLSearchParams(window.location.search).get("token");
    window.ehcoUrl = function (path) {
        if (!token) return path;
        return path + (path.indexOf("?") >= 0 ? "&" : "?") + "token=" + encodeURIComponent(token);
    };
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    // 1536 -> "1.50 KiB" (the server's pretty_bytes); digits: decimals above 1 KiB (default 2)
    window.ehcoBytes = function (n, digits) {
        if (n == null || isNaN(n)) return "-";
        var i = 0;
        while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
        return (i === 0 ? Math.round(n) : n.toFixed(digits == null ? 2 : digits)) + " " + units[i];
    };
})();
