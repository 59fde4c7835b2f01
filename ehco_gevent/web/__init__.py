"""The web server: pages, JSON feeds, metrics, reload and config dump, in the relays' hub.

Registered in :data:`ehco_gevent.app.SERVICE_FACTORIES` as ``ehco_gevent.web:create_service``;
it runs only when the config sets ``web_port`` > 0.
"""

from .service import WebService, create_service

__all__ = ["WebService", "create_service"]
