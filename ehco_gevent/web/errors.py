"""Error answers shaped like Go ehco's web framework (echo v4) wrote them.

echo answers every error as JSON ``{"message": TEXT}`` with ``application/json;
charset=UTF-8``: ``Not Found``, ``Method Not Allowed`` (with ``Allow``), ``Unauthorized`` (basic
auth adds ``WWW-Authenticate: basic realm=Restricted``), a handler's own message for a 400. A
script or panel written against a Go node reads ``message`` from ours the same way.

ehco 1.1.4-dev ran echo in debug mode, which also adds an ``error`` key (``code=404,
message=Not Found``) and indents; we answer the plain form, the one every echo-based server in
production mode gives (docs/decisions.md).
"""

from __future__ import annotations

import json
from http import HTTPStatus

from flask import Response
from werkzeug.exceptions import HTTPException

JSON_TYPE = "application/json; charset=UTF-8"
#: echo's basic-auth challenge (its default realm, its lower-case scheme)
BASIC_CHALLENGE = "basic realm=Restricted"
#: echo's key-auth message when the token is missing from the query
MISSING_TOKEN = "missing key in the query string"


def status_text(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def echo_error(code: int, message: str | None = None, headers: dict | None = None,
               **extra: object) -> Response:
    """``{"message": ...}`` with ``code``; the message defaults to the status text. ``extra``
    keys follow ``message`` (hints of ours; a client reading echo's shape ignores them)."""
    body = json.dumps({"message": status_text(code) if message is None else message, **extra},
                      ensure_ascii=False, separators=(",", ":")) + "\n"
    return Response(body, code, headers=headers, content_type=JSON_TYPE)


def from_http_exception(exc: HTTPException) -> Response:
    """A werkzeug error (404, 405, 400, 500 ...) as echo writes it; redirects pass through."""
    if exc.code is None or exc.code < 400:
        return exc  # type: ignore[return-value]
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    return echo_error(exc.code, headers=headers)
