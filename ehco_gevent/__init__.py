"""ehco-gevent: a gevent drop-in replacement for the ehco network relay (1.1.4-dev)."""

from .version import VERSION as __version__  # noqa: F401
