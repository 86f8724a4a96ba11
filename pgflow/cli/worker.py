"""``pgflow worker``: run worker processes that claim and run queued workflows."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..settings import Settings
from .environment import run_guarded
from .options import CONTEXT, common_options, flags_given, setting_option


@click.command(context_settings=CONTEXT)
@click.option(
    "-A",
    "--app",
    "app_spec",
    required=True,
    envvar="PGFLOW_APP",
    show_envvar=True,
    help="Task module holding the App: pkg.module or pkg.module:attribute.",
)
@setting_option("processes", hidden_default=True)
@setting_option("threads")
@setting_option("queues")
@setting_option("burst")
@setting_option("burst_wait_delayed")
@setting_option("max_jobs_per_child")
@setting_option("grace")
@setting_option("heartbeat_interval", hidden_default=True)
@setting_option("heartbeat_timeout")
@setting_option("poll_interval")
@setting_option("child_timeout")
@setting_option("pool_size", hidden_default=True)
@setting_option("pool_idle_timeout")
@setting_option("metrics_port", hidden_default=True)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    default=False,
    help="Log only warnings and errors (failed workflows, step retries): --log-level warning.",
)
@common_options
def worker(app_spec: str, quiet: bool, **given: Any) -> None:
    """Run worker processes that claim and run queued workflows.

    Settings: a flag given here > its PGFLOW_* variable > the value in the app's code >
    the default. The worker_starting line shows the effective values.

    SIGTERM or Ctrl-C drains: no new claims, in-flight work gets --grace seconds, the rest
    goes back to its queue uncharged; a second Ctrl-C stops at once. SIGHUP replaces the
    worker processes gracefully, each importing the task module afresh. Exit code 0 after a
    drain or a finished --burst; 3 when worker processes keep failing to start.
    """
    from ..logs import configure_logging
    from ..worker.run import load_worker_app, run_worker

    flags = flags_given(given)
    if quiet and "log_level" not in flags:
        flags["log_level"] = "warning"
    settings = run_guarded(lambda: Settings.resolve(flags=flags))
    configure_logging(settings.log_format, settings.log_level)  # while the app loads
    loaded_before = frozenset(sys.modules)
    app = run_guarded(lambda: load_worker_app(app_spec, flags))
    configure_logging(app.settings.log_format, app.settings.log_level)
    sys.exit(run_guarded(lambda: run_worker(app, app_spec, flags, loaded_before)))
