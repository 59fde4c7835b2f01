"""conf/config.json, the config the README's first command starts, does what the README says."""

import json
import urllib.request

from ehco_gevent.config import parse_config

from .support import ROOT, free_port, wait_port, write_config


def test_bundled_config_is_valid_and_demo_relay_reaches_web_ui(ehco, tmp_path):
    original = json.loads((ROOT / "conf" / "config.json").read_text())
    cfg, warnings = parse_config(original, "conf/config.json")
    assert warnings == [] and cfg.web_port > 0
    relay = original["relay_configs"][0]
    assert relay["tcp_remotes"] == [f"{cfg.web_host}:{cfg.web_port}"]  # the demo loops to the UI

    # the same config on free ports, so the test can run beside anything
    web, listen = free_port(), free_port()
    original["web_port"] = web
    relay["listen"] = f"127.0.0.1:{listen}"
    relay["tcp_remotes"] = [f"127.0.0.1:{web}"]
    ehco("-c", write_config(tmp_path, original))
    wait_port(web)
    wait_port(listen)
    page = urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=10).read().decode()
    assert "ehco" in page and "Build Info" in page  # the web UI, through the relay
    closed = urllib.request.urlopen(
        f"http://127.0.0.1:{web}/connections/?conn_type=closed", timeout=10).read().decode()
    assert relay["label"] in closed
