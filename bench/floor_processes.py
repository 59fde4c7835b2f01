"""The command line both floor relays share: ``LISTEN_PORT TARGET_PORT [PROCESSES]``, with
PROCESSES copies sharing the port through SO_REUSEPORT (as ``ehco --workers N``)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable


def run(serve: Callable[[int, int], None], on_sigterm: Callable | None = None) -> None:
    """Fork PROCESSES - 1 children, all running ``serve(port, target_port)``; SIGTERM to the
    parent stops them all. ``on_sigterm(handler)`` installs the handler when a plain signal
    handler would not run (a gevent hub)."""
    port, target_port = int(sys.argv[1]), int(sys.argv[2])
    processes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            serve(port, target_port)
            os._exit(0)
        children.append(pid)

    def stop(*_):
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        os._exit(0)

    if on_sigterm is not None:
        on_sigterm(stop)
    else:
        signal.signal(signal.SIGTERM, stop)
    serve(port, target_port)
