"""Where the web server listens (``--web_host``, ``EHCO_WEB_HOST``, the config key) and the
warning a node gives when it serves the network with no token and no basic auth."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from ..support import LOOPBACK, ROOT, EhcoProcess, LoggedProcess, free_port, require_program

WARNING = "is reachable beyond this machine with no web_token"


def test_web_host_flag_and_env_choose_the_address(tmp_path, echo_server):
    """127.0.0.2 is loopback but not 127.0.0.1: the server is reachable exactly where asked,
    and a loopback-only server gives no exposure warning."""
    for how in ("flag", "env"):
        web_port = free_port()
        args = ["-l", f"{LOOPBACK}:{free_port()}", "-r", f"{LOOPBACK}:{echo_server.port}",
                "--web_port", str(web_port), "--enable_ping", "false"]
        env = {}
        if how == "flag":
            args += ["--web_host", "127.0.0.2"]
        else:
            env["EHCO_WEB_HOST"] = "127.0.0.2"
        proc = EhcoProcess(args, tmp_path, env=env)
        try:
            proc.wait_log(f"Start Web Server at http://127.0.0.2:{web_port}")
            resp = requests.get(f"http://127.0.0.2:{web_port}/api/v1/config/", timeout=10)
            assert resp.json()["web_host"] == "127.0.0.2", how
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://{LOOPBACK}:{web_port}/", timeout=5)
        finally:
            proc.stop()
        assert WARNING not in proc.log_path.read_text()


def test_config_web_host_wins_over_the_flag(tmp_path, echo_server, ehco):
    from ..support import write_config

    web_port = free_port()
    path = write_config(tmp_path, {
        "web_host": "127.0.0.3", "web_port": web_port, "enable_ping": False,
        "relay_configs": [{"listen": f"{LOOPBACK}:{free_port()}",
                           "tcp_remotes": [f"{LOOPBACK}:{echo_server.port}"]}]})
    proc = ehco("-c", path, "--web_host", "127.0.0.2")
    proc.wait_log(f"Start Web Server at http://127.0.0.3:{web_port}")


def in_own_netns(args: list[str], tmp_path, env: dict) -> LoggedProcess:
    """ehco in a network namespace of its own (only a loopback, down): binding 0.0.0.0 there
    reaches nothing, so the test exposes nothing while the node believes it serves the world."""
    require_program("unshare", "util-linux")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return LoggedProcess(["unshare", "-rn", sys.executable, "-m", "ehco_gevent", *args],
                         tmp_path / f"ehco-netns-{len(env)}.log", env=full_env,
                         cwd=str(tmp_path))


@pytest.mark.parametrize("guard,warned", [({}, True), ({"EHCO_WEB_TOKEN": "t0ken"}, False)])
def test_warning_when_serving_the_network_unguarded(tmp_path, guard, warned):
    web_port = free_port()
    proc = in_own_netns(["-l", "0.0.0.0:1234", "-r", f"{LOOPBACK}:9", "--enable_ping", "false"],
                        tmp_path, {"EHCO_WEB_HOST": "0.0.0.0", "EHCO_WEB_PORT": str(web_port),
                                   **guard})
    try:
        proc.wait_log(f"Start Web Server at http://0.0.0.0:{web_port}")
        if warned:
            proc.wait_log(f"web server at http://0.0.0.0:{web_port} {WARNING}")
            assert "set web_token, or --web_host 127.0.0.1" in proc.log
    finally:
        proc.stop()  # every line the process wrote is in the log now
    assert (WARNING in proc.log_path.read_text()) == warned
