"""The ``ehco`` command line, flag for flag as ehco 1.1.4 (urfave/cli) had it.

Go's flag parsing accepts one or two dashes for every name, and scripts in the wild use the
multi-letter short forms (``-lt``, ``-ur``, ``-tt``) and single-dash long forms (``-local``);
click takes all of them because each is declared. This module imports nothing heavy: gevent's
monkey patching must run before ssl and requests are imported, which :func:`main` does first.
"""

from __future__ import annotations

import sys

import click

from .version import GIT_BRANCH, VERSION

BOOL = click.BOOL
#: the flags that describe the one relay of a config-less start (ignored with -c)
RELAY_FLAGS = {"local": "-l", "remote": "-r", "udp_remote": "-ur", "listen_type": "-lt",
               "transport_type": "-tt", "ws_frames": "--ws_frames"}


def _names(*names: str) -> list[str]:
    """Every name in both dash styles Go's flag package accepts."""
    out = []
    for name in names:
        bare = name.lstrip("-")
        out += [f"-{bare}", f"--{bare}"] if len(bare) > 1 else [f"-{bare}"]
    return out


class WorkersType(click.ParamType):
    name = "N|auto"

    def convert(self, value, param, ctx):
        from .workers import parse_workers

        try:
            return parse_workers(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def print_version(ctx: click.Context, _param, value) -> None:
    if not value or ctx.resilient_parsing:
        return
    from .build import build_info

    info = build_info()
    click.echo("Welcome to ehco (ehco is a network relay tool and a typo)")
    click.echo(f"Version={VERSION}")
    click.echo(f"GitBranch={info['branch']}")
    click.echo(f"GitRevision={info['revision']}")
    click.echo(f"BuildTime={info['build_time']}")
    ctx.exit(0)


@click.group(invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(*_names("l", "local"), "local", envvar="EHCO_LOCAL_ADDR",
              help="listen address, e.g. 0.0.0.0:1234")
@click.option(*_names("lt", "listen_type"), "listen_type", envvar="EHCO_LISTEN_TYPE",
              default="raw", show_default=True, help="raw, ws, wss, mwss or mtcp")
@click.option(*_names("r", "remote"), "remote", envvar="EHCO_REMOTE_ADDR",
              help="TCP remote, e.g. 0.0.0.0:5201; ws://host:port through a ws tunnel")
@click.option(*_names("ur", "udp_remote"), "udp_remote", envvar="EHCO_UDP_REMOTE_ADDR",
              help="UDP remote, e.g. 0.0.0.0:1234")
@click.option(*_names("tt", "transport_type"), "transport_type", envvar="EHCO_TRANSPORT_TYPE",
              default="raw", show_default=True, help="raw, ws, wss, mwss or mtcp")
@click.option(*_names("c", "config"), "config", envvar="EHCO_CONFIG_FILE",
              help="config file path, or an http(s) URL that returns it")
@click.option(*_names("web_host"), "web_host", envvar="EHCO_WEB_HOST",
              help="address the web server listens on  [default: 0.0.0.0]")
@click.option(*_names("web_port"), "web_port", envvar="EHCO_WEB_PORT", type=int,
              help="web server port (metrics, pages, reload); 0 = no web server  [default: 0]")
@click.option(*_names("web_token"), "web_token", envvar="EHCO_WEB_TOKEN",
              help="token every web request must carry as ?token=")
@click.option(*_names("enable_ping"), "enable_ping", envvar="EHCO_ENABLE_PING", type=BOOL,
              is_flag=False, flag_value=True,
              help="ICMP latency metrics for the remotes' hosts  [default: true]")
@click.option(*_names("log_level"), "log_level", envvar="EHCO_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warn", "warning", "error"],
                                case_sensitive=False),
              help="debug, info, warn or error  [default: info]")
@click.option(*_names("config_reload_interval"), "config_reload_interval",
              envvar="EHCO_CONFIG_RELOAD_INTERVAL", type=click.IntRange(min=0),
              help="seconds between config re-reads, when the file sets no "
                   "reload_interval  [default: 60]")
@click.option("--ws_frames", "-ws_frames", "ws_frames", envvar="EHCO_WS_FRAMES", type=BOOL,
              is_flag=False, flag_value=True, default=False,
              help="beyond ehco 1.1.4: RFC 6455 frames on ws/wss/mwss (ehco >= 1.1.5, CDNs)")
@click.option(*_names("workers"), "workers", envvar="EHCO_WORKERS", type=WorkersType(),
              help="beyond ehco 1.1.4: relay processes, a number or auto (one per core); "
                   "above 1 a supervisor serves the web and runs them  [default: 1]")
@click.option("-v", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=print_version, help="print the version and build info")
@click.pass_context
def cli(ctx: click.Context, **opts) -> None:
    """ehco is a network relay tool and a typo :)"""
    if ctx.invoked_subcommand is not None:
        return
    if opts.get("config"):
        # ehco ignores the relay flags when -c is given (the file wins); we do too, but say so
        opts["ignored_flags"] = [flag for name, flag in RELAY_FLAGS.items()
                                 if ctx.get_parameter_source(name) not in
                                 (None, click.core.ParameterSource.DEFAULT)]
    from .app import run

    sys.exit(run(opts))


@cli.command()
@click.option("--path", default=None, help="where to write the unit "
              "[default: /etc/systemd/system/ehco.service]")
@click.option("--config", "config_path", default=None,
              help="the config the service runs with  [default: /etc/ehco/config.json]")
@click.option("--force", is_flag=True, help="overwrite an existing unit")
def install(path: str | None, config_path: str | None, force: bool) -> None:
    """install ehco systemd service"""
    from .installer import DEFAULT_CONFIG, SYSTEMD_PATH, install as do_install

    ok, message = do_install(path or SYSTEMD_PATH, config_path or DEFAULT_CONFIG, force)
    click.echo(message, err=not ok)
    sys.exit(0 if ok else 1)


def main() -> None:
    from gevent import monkey

    monkey.patch_all()
    cli(prog_name="ehco")


__all__ = ["cli", "main", "GIT_BRANCH"]
