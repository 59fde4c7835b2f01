"""Builds tests/interop/goehco (our Go ehco-1.1.4-style node) once per session.

The Go peer is built offline in GOPATH mode from Debian's packages (golang-go,
golang-github-xtaci-smux-dev, golang-github-gorilla-websocket-dev); without them the interop
tests skip with the reason, or fail when EHCO_REQUIRE_INTEROP=1 (as tests/support.py's
require_program does for outside programs).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..support import require_program

GOCODE = Path("/usr/share/gocode")
GO_LIBS = {
    "github.com/xtaci/smux": "golang-github-xtaci-smux-dev",
    "github.com/gorilla/websocket": "golang-github-gorilla-websocket-dev",
}
SOURCE = Path(__file__).resolve().parent / "goehco" / "main.go"


def _require_go_lib(import_path: str, package: str) -> None:
    if (GOCODE / "src" / import_path).is_dir():
        return
    message = f"Go library {import_path} not installed (Debian package {package})"
    if os.environ.get("EHCO_REQUIRE_INTEROP") == "1":
        pytest.fail(message + " but EHCO_REQUIRE_INTEROP=1")
    pytest.skip(message)


@pytest.fixture(scope="session")
def goehco(tmp_path_factory) -> Path:
    """Path of the built Go peer; a compile error fails (it is our code), never skips.

    CGO_ENABLED stays as Go defaults it: Debian's Go 1.19 ships its standard library
    precompiled that way, so a build takes ~2 s instead of ~20 s with a cold cache.
    """
    go = require_program("go", "golang-go")
    for import_path, package in GO_LIBS.items():
        _require_go_lib(import_path, package)
    work = tmp_path_factory.mktemp("goehco-build")
    binary = work / "goehco"
    env = dict(os.environ)
    env.update(GO111MODULE="off", GOPATH=f"{work / 'gopath'}{os.pathsep}{GOCODE}",
               GOCACHE=str(work / "gocache"), GOFLAGS="")
    result = subprocess.run([go, "build", "-o", str(binary), str(SOURCE)], env=env, cwd=work,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"go build failed:\n{result.stdout}\n{result.stderr}"
    return binary
