"""Builds tests/interop/goehco (our Go ehco-1.1.4-style node) once per session.

Without Go or its libraries (see :mod:`tests.interop.gobuild`) the interop tests skip with the
reason, or fail when EHCO_REQUIRE_INTEROP=1 (as tests/support.py's require_program does for
outside programs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import gobuild


@pytest.fixture(scope="session")
def goehco(tmp_path_factory) -> Path:
    """Path of the built Go peer; a compile error fails (it is our code), never skips."""
    reason = gobuild.missing()
    if reason:
        if os.environ.get("EHCO_REQUIRE_INTEROP") == "1":
            pytest.fail(reason + " but EHCO_REQUIRE_INTEROP=1")
        pytest.skip(reason)
    try:
        return gobuild.build(tmp_path_factory.mktemp("goehco-build"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
