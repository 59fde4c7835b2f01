"""The command line as scripts use it: flags, environment variables, exit codes, messages."""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from .support import ROOT, free_port, roundtrip, wait_port, write_config


def run_ehco(*args, env=None, timeout=20):
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ehco_gevent", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def assert_clean_failure(result, code, *words):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in result.stderr


def test_version():
    out = run_ehco("--version")
    assert out.returncode == 0
    assert "Version=1.1.4-dev" in out.stdout and "GitRevision=" in out.stdout


def test_console_script_is_installed():
    exe = shutil.which("ehco")
    if exe is None:
        pytest.skip("the ehco console script is not installed (pip install -e .)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "Version=" in out.stdout


def test_bogus_listen_type_exits_2_naming_the_key(tmp_path):
    cfg = write_config(tmp_path, {"relay_configs": [{"listen": "127.0.0.1:1", "listen_type": "bogus",
                                                     "tcp_remotes": ["127.0.0.1:2"]}]})
    assert_clean_failure(run_ehco("-c", cfg), 2, "listen_type", "bogus", str(cfg),
                         "relay_configs[0]")


def test_bogus_listen_type_flag_exits_2():
    assert_clean_failure(run_ehco("-l", "127.0.0.1:1", "-lt", "bogus", "-r", "127.0.0.1:2"), 2,
                         "listen_type", "bogus")


def test_missing_config_file_exits_2(tmp_path):
    assert_clean_failure(run_ehco("-c", tmp_path / "nope.json"), 2, "nope.json")


def test_nothing_to_do_exits_2():
    assert_clean_failure(run_ehco(), 2, "-c CONFIG", "-l LISTEN")


def test_listen_address_in_use_is_a_clear_error():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_ehco("-l", f"127.0.0.1:{port}", "-r", "127.0.0.1:9")
    assert_clean_failure(result, 1, f"cannot listen on 127.0.0.1:{port}", "address already in use")


def test_unknown_keys_are_warned(tmp_path, ehco, echo_server):
    port = free_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"127.0.0.1:{port}", "tcp_remotes": [f"127.0.0.1:{echo_server.port}"],
        "tcp_remote": "typo"}]})
    proc = ehco("-c", cfg)
    wait_port(port)
    assert "unknown key 'tcp_remote' ignored" in proc.log


@pytest.mark.parametrize("style", ["short", "long", "go-single-dash", "env"])
def test_flag_spellings(ehco, echo_server, style):
    port = free_port()
    listen, remote = f"127.0.0.1:{port}", f"127.0.0.1:{echo_server.port}"
    if style == "short":
        proc = ehco("-l", listen, "-lt", "raw", "-r", remote, "-tt", "raw")
    elif style == "long":
        proc = ehco("--local", listen, "--listen_type=raw", "--remote", remote,
                    "--transport_type", "raw", "--log_level", "debug")
    elif style == "go-single-dash":
        proc = ehco("-local", listen, "-remote", remote, "-enable_ping=false")
    else:
        proc = ehco(env={"EHCO_LOCAL_ADDR": listen, "EHCO_REMOTE_ADDR": remote,
                         "EHCO_LISTEN_TYPE": "raw", "EHCO_TRANSPORT_TYPE": "raw",
                         "EHCO_LOG_LEVEL": "debug", "EHCO_ENABLE_PING": "false"})
    wait_port(port)
    assert roundtrip(port, b"spelled") == b"spelled"
    if style in ("long", "env"):
        proc.wait_log("DEBUG")  # the log level flag took effect


def test_config_file_from_env(ehco, echo_server, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"127.0.0.1:{port}", "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}]})
    ehco(env={"EHCO_CONFIG_FILE": str(cfg)})
    wait_port(port)
    assert roundtrip(port, b"env config") == b"env config"


def test_yaml_config(ehco, echo_server, tmp_path):
    port = free_port()
    path = tmp_path / "c.yml"
    path.write_text(f"relay_configs:\n  - listen: 127.0.0.1:{port}\n    label: y\n"
                    f"    tcp_remotes: ['127.0.0.1:{echo_server.port}']\n")
    ehco("-c", path)
    wait_port(port)
    assert roundtrip(port, b"yaml") == b"yaml"


def test_install_writes_systemd_unit(tmp_path):
    unit = tmp_path / "systemd" / "ehco.service"
    out = run_ehco("install", "--path", unit, "--config", "/etc/ehco/relay.json")
    assert out.returncode == 0, out.stderr
    text = unit.read_text()
    assert "LimitNOFILE=65535" in text and "Restart=always" in text
    exec_line = next(l for l in text.splitlines() if l.startswith("ExecStart="))
    assert exec_line.endswith("-c /etc/ehco/relay.json")
    # an existing unit is kept, unless forced
    unit.write_text("mine")
    again = run_ehco("install", "--path", unit)
    assert again.returncode == 1 and unit.read_text() == "mine" and "--force" in again.stderr
    assert run_ehco("install", "--path", unit, "--force").returncode == 0
    assert "LimitNOFILE" in unit.read_text()


def test_flags_fill_in_what_the_file_leaves_out(tmp_path, ehco, echo_server):
    port = free_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"127.0.0.1:{port}", "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}]})
    proc = ehco("-c", cfg, "--log_level", "debug")
    wait_port(port)
    roundtrip(port, b"x")
    proc.wait_log("DEBUG")
