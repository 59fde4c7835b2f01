"""``python -m ehco_gevent.workers``: a relay worker process, started by the supervisor.

gevent's monkey patching comes first, before anything imports ssl or socket users."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from ehco_gevent.workers.worker import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
