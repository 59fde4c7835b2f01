"""The command line as scripts use it: flags, environment variables, exit codes, messages."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .support import ROOT, free_port, roundtrip, wait_port, write_config


def run_ehco(*args, env=None, timeout=20, cwd=None):
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ehco_gevent", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


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
    """The `ehco` command that `pip install` put beside this Python (found there first, so a
    venv's python run without activating the venv still tests its own command)."""
    beside = Path(sys.executable).with_name("ehco")
    exe = str(beside) if beside.exists() else shutil.which("ehco")
    if exe is None:
        message = "the ehco console script is not installed (pip install -e .)"
        if os.environ.get("EHCO_REQUIRE_INTEROP") == "1":
            pytest.fail(message + " but EHCO_REQUIRE_INTEROP=1")
        pytest.skip(message)
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "Version=" in out.stdout


def test_bogus_listen_type_exits_2_naming_the_key(tmp_path):
    cfg = write_config(tmp_path, {"relay_configs": [{"listen": "127.0.0.1:1", "listen_type": "bogus",
                                                     "tcp_remotes": ["127.0.0.1:2"]}]})
    result = run_ehco("-c", cfg)
    assert_clean_failure(result, 2, "listen_type", "bogus", str(cfg), "relay_configs[0]")
    assert len(result.stderr.strip().splitlines()) == 1  # one clear message
    # a relay with a label is named by it too
    cfg = write_config(tmp_path, {"relay_configs": [
        {"listen": "127.0.0.1:3", "label": "fine", "tcp_remotes": ["127.0.0.1:2"]},
        {"listen": "127.0.0.1:1", "listen_type": "bogus", "label": "mylbl",
         "tcp_remotes": ["127.0.0.1:2"]}]})
    assert_clean_failure(run_ehco("-c", cfg), 2, "relay_configs[1]", "'mylbl'", "listen_type")


def test_bogus_listen_type_flag_exits_2():
    assert_clean_failure(run_ehco("-l", "127.0.0.1:1", "-lt", "bogus", "-r", "127.0.0.1:2"), 2,
                         "listen_type", "bogus")


def test_missing_config_file_exits_2(tmp_path):
    assert_clean_failure(run_ehco("-c", tmp_path / "nope.json"), 2, "nope.json")


def test_nothing_to_do_exits_2():
    assert_clean_failure(run_ehco(), 2, "-c CONFIG", "-l LISTEN")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_bad_workers_value_exits_2(how):
    args = ["-l", "127.0.0.1:1", "-r", "127.0.0.1:2"]
    if how == "flag":
        result = run_ehco(*args, "--workers", "0")
    else:
        result = run_ehco(*args, env={"EHCO_WORKERS": "lots"})
    assert_clean_failure(result, 2, "workers")


def test_workers_from_the_file_beat_the_flag(ehco, echo_server, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, {"workers": 2, "relay_configs": [
        {"listen": f"127.0.0.1:{port}", "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}]})
    proc = ehco("-c", cfg, "--workers", "1")
    proc.wait_log("runs the relays in 2 worker processes")
    wait_port(port)
    assert roundtrip(port, b"two") == b"two"


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
    assert roundtrip(port, b"x") == b"x"
    proc.wait_log("closed, up 1 down 1 bytes")  # a debug line: the flag's level took effect


@pytest.mark.parametrize("style", ["flags", "env"])
def test_every_option_takes_effect(ehco, echo_server, udp_echo_server, style):
    """-l -r -ur --web_port --web_host --web_token --enable_ping --log_level, or their EHCO_*
    variables: each one visibly changes what the process does (the web server stays on
    loopback; test_service.py checks where --web_host puts it)."""
    import requests

    from ehco_gevent.observability.metrics import parse_samples

    from .support import free_tcp_udp_port

    port, web = free_tcp_udp_port(), free_port()
    listen, remote = f"127.0.0.1:{port}", f"127.0.0.1:{echo_server.port}"
    udp_remote = f"127.0.0.1:{udp_echo_server.port}"
    if style == "flags":
        proc = ehco("-l", listen, "-r", remote, "-ur", udp_remote, "--web_port", web,
                    "--web_host", "127.0.0.1", "--web_token", "tok", "--enable_ping", "false", "--log_level", "debug")
    else:
        proc = ehco(env={"EHCO_LOCAL_ADDR": listen, "EHCO_REMOTE_ADDR": remote,
                         "EHCO_UDP_REMOTE_ADDR": udp_remote, "EHCO_WEB_PORT": str(web),
                         "EHCO_WEB_HOST": "127.0.0.1",
                         "EHCO_WEB_TOKEN": "tok", "EHCO_ENABLE_PING": "false",
                         "EHCO_LOG_LEVEL": "debug"})
    wait_port(port)
    proc.wait_log("udp listening")
    wait_port(web)
    assert roundtrip(port, b"tcp leg") == b"tcp leg"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"udp leg", ("127.0.0.1", port))
        assert sock.recvfrom(100)[0] == b"udp leg"
    url = f"http://127.0.0.1:{web}/metrics/"
    assert requests.get(url, timeout=10).status_code == 401
    resp = requests.get(url + "?token=tok", timeout=10)
    assert resp.status_code == 200
    names = {s.name for s in parse_samples(resp.text)}
    assert "ehco_alive_state" in names
    assert "ehco_ping_requests_total" not in names  # ping is off
    assert "ping:" not in proc.log
    proc.wait_log("DEBUG")


@pytest.mark.parametrize("style", ["flags", "env"])
def test_listen_and_transport_type_are_read(style):
    for key, flag in (("listen_type", "-lt"), ("transport_type", "-tt")):
        if style == "flags":
            result = run_ehco("-l", "127.0.0.1:1", flag, "bogus", "-r", "127.0.0.1:2")
        else:
            result = run_ehco(env={"EHCO_LOCAL_ADDR": "127.0.0.1:1",
                                   "EHCO_REMOTE_ADDR": "127.0.0.1:2",
                                   f"EHCO_{key.upper()}": "bogus"})
        assert_clean_failure(result, 2, key, "bogus")


@pytest.mark.parametrize("style", ["flags", "env"])
def test_config_reload_interval(ehco, echo_server, tmp_path, style):
    """A file without reload_interval is re-read every --config_reload_interval seconds."""
    p1, p2 = free_port(), free_port()
    relay = {"listen": f"127.0.0.1:{p1}", "label": "r",
             "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}
    cfg = write_config(tmp_path, {"relay_configs": [relay]})
    if style == "flags":
        proc = ehco("--config", cfg, "--config_reload_interval", "1")
    else:
        proc = ehco(env={"EHCO_CONFIG_FILE": str(cfg), "EHCO_CONFIG_RELOAD_INTERVAL": "1"})
    wait_port(p1)
    relay2 = dict(relay, label="r2", listen=f"127.0.0.1:{p2}")
    write_config(tmp_path, {"relay_configs": [relay, relay2]})
    wait_port(p2, timeout=10)  # the default interval (60 s) would not get here in time
    assert roundtrip(p2, b"ticker") == b"ticker"
    assert roundtrip(p1, b"kept") == b"kept"
    assert "stopped listening" not in proc.log


def test_install_writes_the_absolute_config_path(tmp_path):
    """systemd runs the unit in /: a relative --config must not stay relative."""
    unit = tmp_path / "ehco.service"
    out = run_ehco("install", "--path", unit, "--config", "conf/config.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    exec_line = next(l for l in unit.read_text().splitlines() if l.startswith("ExecStart="))
    assert exec_line.endswith(f" -c {tmp_path}/conf/config.json")


def test_typo_is_shown_with_the_error_it_causes(tmp_path):
    cfg = write_config(tmp_path, {"relay_configs": [{"listen": "127.0.0.1:1", "label": "t",
                                                     "tcp_remote": ["127.0.0.1:2"]}]})
    result = run_ehco("-c", cfg)
    assert_clean_failure(result, 2, str(cfg), "relay_configs[0] (label 't')")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    warning, error = lines  # the warning first, then the error, which hints at the fix itself
    assert "WARN" in warning and "unknown key 'tcp_remote' ignored (did you mean 'tcp_remotes'?)" in warning
    assert "ERROR" in error and "both are empty" in error
    assert "note the unknown key 'tcp_remote' (did you mean 'tcp_remotes'?)" in error


def test_config_of_nothing_but_typos_exits_2(tmp_path):
    cfg = write_config(tmp_path, {"relay_config": [{"listen": "127.0.0.1:1",
                                                    "tcp_remotes": ["127.0.0.1:2"]}]})
    assert_clean_failure(run_ehco("-c", cfg), 2, str(cfg), "'relay_config'",
                         "did you mean 'relay_configs'?", "nothing to serve")


@pytest.mark.parametrize("extra", [{}, {"relay_confg": []}], ids=["web-only", "web-and-typo"])
def test_config_with_only_a_web_port_starts(tmp_path, ehco, extra):
    web = free_port()
    proc = ehco("-c", write_config(tmp_path, {"web_host": "127.0.0.1", "web_port": web,
                                              "enable_ping": False, **extra}))
    wait_port(web)
    assert "nothing is served" not in proc.log
    if extra:
        proc.wait_log("unknown key 'relay_confg' ignored (did you mean 'relay_configs'?)")


@pytest.mark.parametrize("scheme,hint", [("ws", "-tt ws"), ("wss", "-tt wss or -tt mwss")])
def test_tunnel_remote_without_transport_type_hints_at_tt(scheme, hint):
    result = run_ehco("-l", "127.0.0.1:1", "-r", f"{scheme}://127.0.0.1:2")
    assert_clean_failure(result, 2, "is not host:port", hint)


def test_relay_flags_beside_a_config_are_named_as_ignored(tmp_path, ehco, echo_server):
    """ehco lets the file win over -l/-r; so do we, but the log says so."""
    port, flag_port = free_port(), free_port()
    cfg = write_config(tmp_path, {"relay_configs": [{
        "listen": f"127.0.0.1:{port}", "tcp_remotes": [f"127.0.0.1:{echo_server.port}"]}]})
    proc = ehco("-c", cfg, "-l", f"127.0.0.1:{flag_port}", "-r", "127.0.0.1:9",
                env={"EHCO_TRANSPORT_TYPE": "ws"})
    wait_port(port)
    proc.wait_log("-l -r -tt ignored: with -c the config file describes the relays")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", flag_port), timeout=5).close()


def test_config_that_serves_nothing_says_so(tmp_path, ehco):
    proc = ehco("-c", write_config(tmp_path, {"log_level": "info"}))
    proc.wait_log("nothing is served until a reload adds some")
