"""The Flask app: ehco's routes, the JSON feeds behind the live parts, and the auth gate.

Every request, static files and other services' blueprints included, passes ``before_request``
first, so with a token or basic auth configured nothing at all is served without it. The gate
reads the running config on each request, so a reload that changes the token applies at once.
Errors, the gate's included, answer in the JSON shape of Go ehco's framework (:mod:`.errors`).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urlencode

from flask import Flask, Response, render_template, request
from werkzeug.exceptions import HTTPException

from .. import build
from .auth import basic_ok, token_ok
from .config_dump import config_dump
from .errors import BASIC_CHALLENGE, JSON_TYPE, MISSING_TOKEN, echo_error, from_http_exception
from .formatting import (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, duration, parse_positive,
                         pretty_bytes, span)
from .relays import table
from .traffic import SAMPLE_INTERVAL

log = logging.getLogger("ehco.web")
CONN_TYPES = ("active", "closed")
EMPTY_TEXT = {
    "active": "No connection is open right now. Finished connections are listed under Closed.",
    "closed": "No connection has finished yet.",
}


def create_flask_app(app: Any, service: Any) -> Flask:
    flask = Flask("ehco_gevent.web", static_folder="static", template_folder="templates")
    flask.json.sort_keys = False  # type: ignore[attr-defined]

    # -- auth ---------------------------------------------------------------------------------
    @flask.before_request
    def gate():
        cfg = app.config
        if cfg is None:
            return None
        given = request.args.get("token")
        if not token_ok(cfg.web_token, given):
            # echo's key-auth wording; 401 for a missing token too (echo said 400 there)
            return echo_error(401, MISSING_TOKEN if given is None else None)
        creds = request.authorization
        user = creds.username if creds is not None and creds.type == "basic" else None
        password = creds.password if creds is not None and creds.type == "basic" else None
        if not basic_ok(cfg.web_auth_user, cfg.web_auth_pass, user, password):
            return echo_error(401, headers={"WWW-Authenticate": BASIC_CHALLENGE})
        return None

    flask.register_error_handler(HTTPException, from_http_exception)

    def url(path: str, **params: Any) -> str:
        """A link on this node that carries the token, when one is configured."""
        token = app.config.web_token if app.config is not None else ""
        if token:
            params["token"] = token
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"{path}?{query}" if query else path

    @flask.context_processor
    def helpers() -> dict:
        return {"url": url, "version": build.VERSION}

    # -- pages --------------------------------------------------------------------------------
    @flask.get("/")
    def index():
        cfg = app.config
        info = build.build_info()
        base = request.host_url.rstrip("/")
        subs = []
        errors = subscription_errors(app)
        for sub in (cfg.sub_configs if cfg is not None else ()):
            plain = url("/clash_proxy_provider/", sub_name=sub.name)
            grouped = url("/clash_proxy_provider/", sub_name=sub.name, grouped="true")
            subs.append({"name": sub.name, "url": plain, "grouped_url": grouped,
                         "full_url": base + plain, "full_grouped_url": base + grouped,
                         "key": quote(sub.name, safe=""), "error": errors.get(sub.name, "")})
        relays = [{"label": label, "listen": relay.cfg.listen,
                   "remotes": list(relay.cfg.tcp_remotes) + list(relay.cfg.udp_remotes)}
                  for label, relay in app.relays.relays.items()]
        return render_template(
            "index.html", info=info,
            start_time=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(build.START_TIME)),
            subs=subs, relays=relays, sample_interval=SAMPLE_INTERVAL,
            proxy_users=proxy_users(app))

    @flask.get("/connections/")
    def connections():
        view = connection_page(app.registry, request.args)
        return render_template("connections.html", **view)
    # -- feeds and API ------------------------------------------------------------------------
    @flask.get("/api/v1/connections/")
    def connections_json():
        view = connection_page(app.registry, request.args)
        return {"conn_type": view["conn_type"], "page": view["page"].page,
                "page_size": view["page"].page_size, "total": view["page"].total,
                "active_count": view["active_count"], "closed_count": view["closed_count"],
                "connections": view["rows"]}

    @flask.get("/api/v1/traffic/")
    def traffic_json():
        """Everything the index page shows live: chart series, the relays table, pings,
        proxy users, in one poll."""
        return {"interval": SAMPLE_INTERVAL, "now": time.time(),
                "relays": service.history.to_json(), "table": table(app),
                "pings": service.ping_latencies(), "proxy_users": proxy_users(app)}

    @flask.get("/api/v1/proxy_users/")
    def proxy_users_json():
        return {"now": time.time(), "users": proxy_users(app)}

    @flask.get("/api/v1/config/")
    def current_config():
        cfg = app.config
        if cfg is None:
            return echo_error(503, "no config loaded yet")
        # secrets only on request, and only behind a gate the request has just passed
        gated = bool(cfg.web_token or (cfg.web_auth_user and cfg.web_auth_pass))
        show = gated and request.args.get("secrets", "").lower() in ("true", "1", "yes")
        return Response(config_dump(cfg, show), 200, content_type=JSON_TYPE)

    @flask.post("/api/v1/config/reload/")
    @flask.post("/reload/")
    def reload():
        ok, message = app.reload("web")
        if ok:
            return Response("reload success", 200, mimetype="text/plain")
        return echo_error(400, message)

    @flask.get("/metrics/")
    def metrics():
        from ..observability.metrics import metrics_response  # owns names, collectors, gzip

        body, headers = metrics_response(app, request.headers.get("Accept-Encoding", ""))
        return Response(body, 200, headers=headers)

    # -- other services' routes ---------------------------------------------------------------
    for other in app.services:
        make = getattr(other, "blueprint", None)
        if make is not None:
            flask.register_blueprint(make())
    return flask


def subscription_errors(app: Any) -> dict[str, str]:
    """The last refresh error of each subscription ("" or missing when it worked), so the
    operator sees on the page that a provider is serving stale relays."""
    for service in getattr(app, "services", ()):
        errors = getattr(service, "subscription_errors", None)
        if errors is not None:
            return errors
    return {}


def proxy_users(app: Any) -> list[dict] | None:
    """The embedded proxy's users with their traffic, or None when no xray_config is served.

    Bytes are lifetime totals in the panel's quantity (2 x client-side payload, as ehco), the
    same numbers as the ehco_proxy_user_* metrics."""
    cfg = app.config
    if cfg is None or cfg.xray_config is None:
        return None
    from ..proxy.users import collect  # only loaded when a proxy is configured

    rows = collect()
    for row in rows:
        row["up"] = pretty_bytes(row["upload_bytes"])
        row["down"] = pretty_bytes(row["download_bytes"])
    return rows


def connection_row(conn: Any, now: float) -> dict:
    return {
        "id": conn.id,
        "relay_label": conn.relay_label,
        "type": conn.conn_type,
        "flow": f"{conn.client_addr} → {conn.remote}",
        "up_bytes": conn.up_bytes,
        "down_bytes": conn.down_bytes,
        "up": pretty_bytes(conn.up_bytes),
        "down": pretty_bytes(conn.down_bytes),
        "dial_ms": round(conn.dial_ms, 3),
        "time": span(conn.started_at, conn.ended_at),
        "duration": duration(conn.started_at, conn.ended_at, now),
        "active": conn.active,
    }


def connection_page(registry: Any, args: Any) -> dict:
    """One page of connections. Active ones are grouped by relay label, oldest first (as
    ehco's list); closed ones newest first, since that is what an operator looks for.

    Without a (valid) ``conn_type`` the page opens on what there is to see: the active
    connections, or the closed ones when none is open (``auto_closed`` says so on the page)."""
    conn_type = args.get("conn_type")
    active = list(registry.active.values())
    closed = list(registry.closed)
    auto_closed = False
    if conn_type not in CONN_TYPES:
        auto_closed = not active and bool(closed)
        conn_type = "closed" if auto_closed else "active"
    if conn_type == "active":
        items = sorted(active, key=lambda c: (c.relay_label, c.started_at, c.id))
    else:
        items = closed
    page = Page(parse_positive(args.get("page"), 1),
                parse_positive(args.get("page_size"), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
                len(items))
    now = time.time()
    return {
        "conn_type": conn_type,
        "auto_closed": auto_closed,
        "empty_text": EMPTY_TEXT[conn_type],
        "page": page,
        "rows": [connection_row(c, now) for c in page.slice(items)],
        "active_count": len(active),
        "closed_count": len(closed),
    }
