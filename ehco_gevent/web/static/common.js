/* Shared by the pages: links and fetches carry ?token= when the page was opened with one. */
(function () {
    "use strict";
    var token = new URLSearchParams(window.location.search).get("token");
    window.ehcoUrl = function (path) {
        if (!token) return path;
        return path + (path.indexOf("?") >= 0 ? "&" : "?") + "token=" + encodeURIComponent(token);
    };
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    window.ehcoBytes = function (n) {
        if (n == null || isNaN(n)) return "-";
        var i = 0;
        while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
        return (i === 0 ? Math.round(n) : n.toFixed(2)) + " " + units[i];
    };
})();
