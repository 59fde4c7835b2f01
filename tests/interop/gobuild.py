"""Building tests/interop/goehco (our Go ehco-1.1.4-style node), shared by the interop tests
and the benchmarks in bench/.

Built offline in GOPATH mode from Debian's packages (golang-go, golang-github-xtaci-smux-dev,
golang-github-gorilla-websocket-dev). CGO_ENABLED stays as Go defaults it: Debian's Go 1.19
ships its standard library precompiled that way, so a build takes ~2 s instead of ~20 s with a
cold cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GOCODE = Path("/usr/share/gocode")
GO_LIBS = {
    "github.com/xtaci/smux": "golang-github-xtaci-smux-dev",
    "github.com/gorilla/websocket": "golang-github-gorilla-websocket-dev",
}
SOURCE = Path(__file__).resolve().parent / "goehco" / "main.go"


def missing() -> str | None:
    """Why the Go peer cannot be built here (a program or library not installed), or None."""
    if not shutil.which("go"):
        return "go not installed (Debian package golang-go)"
    for import_path, package in GO_LIBS.items():
        if not (GOCODE / "src" / import_path).is_dir():
            return f"Go library {import_path} not installed (Debian package {package})"
    return None


def build(work: Path) -> Path:
    """Compile into ``work``; the binary's path. A compile error raises RuntimeError with
    the compiler's output (it is our code: callers must not skip on it)."""
    binary = work / "goehco"
    env = dict(os.environ)
    env.update(GO111MODULE="off", GOPATH=f"{work / 'gopath'}{os.pathsep}{GOCODE}",
               GOCACHE=str(work / "gocache"), GOFLAGS="")
    result = subprocess.run([shutil.which("go") or "go", "build", "-o", str(binary), str(SOURCE)],
                            env=env, cwd=work, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"go build failed:\n{result.stdout}\n{result.stderr}")
    return binary
