"""The web server's socket side: gevent's WSGI server with deadlines and a connection cap.

gevent's pywsgi reads a request head with no deadline at all, and keeps a keep-alive
connection open for as long as the client likes: a thousand clients trickling one byte every
few seconds would each hold a socket forever. Here:

- a request head is at most :data:`MAX_HEAD` bytes (pywsgi alone accepts 100 header lines of
  64 KiB each, 6 MiB per connection), else 431 and close;
- a request's whole head (request line and headers) must arrive within ``web_header_timeout``
  of the connection's start, and a keep-alive connection's next head within ``web_idle_timeout``
  of the previous answer, or the connection is closed (one log line per interval says so);
- at most ``web_max_connections`` connections are served at once; the rest wait in the
  kernel's accept queue, so the web server can never take the relays' file descriptors;
- accept errors (EMFILE...) are one log line, not a gevent traceback (:mod:`ehco_gevent.guards.listeners`).

The limits are read per connection from :func:`ehco_gevent.guards.limits.current`.
"""

from __future__ import annotations

import logging

import gevent
from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer

from ..guards import limits
from ..addresses import format_addr
from ..guards.listeners import QuietAccept
from ..logs import RateLimitedLogger

log = logging.getLogger("ehco.web")
_SLOW_LOG = RateLimitedLogger(log)
#: bytes of one request head (request line and headers); as the HTTP proxy inbound's
MAX_HEAD = 64 * 1024
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
              b"Connection: close\r\n\r\n")


class HeadTimeout(BaseException):
    """The request head did not arrive in time (a BaseException, so pywsgi's own
    ``except Exception`` around header parsing does not turn it into a 400)."""


class HeadTooLarge(BaseException):
    """More than MAX_HEAD bytes of request head (a BaseException for the same reason)."""


class _HeadReader:
    """The connection's read side, counting the bytes read by line while a head is read
    (``budget`` set); bodies and everything else pass straight through."""

    def __init__(self, raw):
        self._raw = raw
        self.budget: int | None = None

    def readline(self, size=-1):
        line = self._raw.readline(size)
        if self.budget is not None:
            self.budget -= len(line)
            if self.budget < 0:
                raise HeadTooLarge(f"request head over {MAX_HEAD} bytes")
        return line

    def __getattr__(self, name):
        return getattr(self._raw, name)


class DeadlineHandler(WSGIHandler):
    """pywsgi's handler with one deadline per request head (not per read) and a size cap."""

    _served = 0

    def __init__(self, sock, address, server, rfile=None):
        super().__init__(sock, address, server, rfile)
        self.rfile = _HeadReader(self.rfile)

    def handle_one_request(self):
        lim = limits.current()
        seconds = lim.web_idle_timeout if self._served else lim.web_header_timeout
        why = "keep-alive idle" if self._served else "slow request head"
        text = (f"no new request head within {seconds:g} s on a keep-alive connection"
                if self._served else f"request head not complete within {seconds:g} s")
        deadline = gevent.Timeout(seconds, HeadTimeout(text))
        self._head_deadline = deadline
        deadline.start()
        self.rfile.budget = MAX_HEAD
        try:
            return super().handle_one_request()
        except HeadTooLarge as exc:  # raised in the request line or headers: answer, close
            log.debug("web: %s: %s, connection closed", format_addr(self.client_address), exc)
            self.close_connection = True
            return ("431", _TOO_LARGE)
        except HeadTimeout as exc:
            client = format_addr(self.client_address)
            log.debug("web: %s: %s, connection closed", client, exc)
            _SLOW_LOG.log(logging.INFO, why, "web: closed %s: %s", client, exc)
            self.close_connection = True
            return None
        finally:
            deadline.close()
            self._served += 1

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)
        finally:
            # the head is in: the application's work and the answer are not bounded here
            self._head_deadline.cancel()
            self.rfile.budget = None


class WebServer(QuietAccept, WSGIServer):
    handler_class = DeadlineHandler

    def __init__(self, sock, application, max_connections: int | None = None):
        cap = max_connections or limits.current().web_max_connections
        super().__init__(sock, application, spawn=Pool(cap),
                         log=LoggingLogAdapter(logging.getLogger("ehco.web.access"), logging.DEBUG),
                         error_log=LoggingLogAdapter(log, logging.ERROR))
        self.label = "web server"
        self.max_connections = cap
