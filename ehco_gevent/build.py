"""Build information for ``--version``, the web index and the relay sync POST.

ehco stamped these in at link time. A pip install has no link step, so the revision is read
from the git checkout the package runs from, when there is one, and said to be unknown otherwise.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time

from .version import GIT_BRANCH, VERSION

START_TIME = time.time()


@functools.lru_cache(maxsize=1)
def build_info() -> dict[str, str]:
    here = os.path.dirname(os.path.abspath(__file__))
    revision = "unknown"
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            revision = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(__file__)))
    return {"version": VERSION, "branch": GIT_BRANCH, "revision": revision, "build_time": built}
