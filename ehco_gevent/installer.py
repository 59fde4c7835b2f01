"""``ehco install``: the systemd unit ehco writes, pointed at this installation."""

from __future__ import annotations

import os
import shutil
import sys

SYSTEMD_PATH = "/etc/systemd/system/ehco.service"
DEFAULT_CONFIG = "/etc/ehco/config.json"

UNIT = """# Ehco service
[Unit]
Description=ehco
After=network.target

[Service]
LimitNOFILE=65535
ExecStart={exec_start}
Restart=always

[Install]
WantedBy=multi-user.target
"""


def ehco_executable() -> str:
    found = shutil.which("ehco")
    if found:
        return os.path.abspath(found)
    return f"{sys.executable} -m ehco_gevent"


def unit_text(config_path: str) -> str:
    """systemd starts the service in ``/``: a relative config path is made absolute here,
    against the directory ``ehco install`` ran in (URLs are kept as they are)."""
    if "://" not in config_path:
        config_path = os.path.abspath(config_path)
    return UNIT.format(exec_start=f"{ehco_executable()} -c {config_path}")


def install(path: str, config_path: str, force: bool) -> tuple[bool, str]:
    """Write the unit; an existing file is kept unless forced (ehco opened it in vi)."""
    if os.path.exists(path) and not force:
        return False, f"{path} already exists; edit it, or run again with --force to overwrite"
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(unit_text(config_path))
    return True, f"Install ehco systemd file to `{path}`"
