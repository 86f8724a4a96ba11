"""The ``pgflow`` command: thin click commands that build Settings and call one function.

Exit codes: 0 success; 1 an error (one line on stderr says what to do); 2 usage errors and
commands not available in this version.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .errors import PgflowError
from .settings import Settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fail(exc: BaseException) -> None:
    from .db.errors import redact

    click.echo(f"pgflow: {redact(str(exc))}", err=True)
    sys.exit(1)


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a pgflow error becomes one line on stderr and exit code 1."""
    try:
        return fn()
    except PgflowError as exc:
        _fail(exc)


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--log-level", envvar="PGFLOW_LOG_LEVEL", show_envvar=True,
                      default=None, help="debug, info, warning or error.")(fn)
    fn = click.option("--log-format", envvar="PGFLOW_LOG_FORMAT", show_envvar=True,
                      type=click.Choice(["auto", "console", "json"]), default=None,
                      help="Log lines for people (console) or machines (json).")(fn)
    fn = click.option("--schema", envvar="PGFLOW_SCHEMA", show_envvar=True, default=None,
                      help="Schema of pgflow's tables [default: pgflow].")(fn)
    fn = click.option("--database-url", envvar="PGFLOW_DATABASE_URL", show_envvar=True,
                      default=None,
                      help="PostgreSQL URL; unset: the embedded server under PGFLOW_HOME.")(fn)
    return fn


def build_settings(**given: Any) -> Settings:
    settings = run_guarded(lambda: Settings.from_env(**given))
    from .logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    return settings  # type: ignore[no-any-return]


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="pgflow")
def main() -> None:
    """pgflow: durable workflows and task queues on PostgreSQL.

    \b
    Quick start:
      pgflow worker -A examples.shop --burst     run the example's queues until empty
      pgflow workflows list                      what ran, and how it ended
    """


@main.command(context_settings=CONTEXT)
@click.option("-A", "--app", "app_spec", required=True, envvar="PGFLOW_APP", show_envvar=True,
              help="Task module holding the App: pkg.module or pkg.module:attribute.")
@click.option("-P", "--processes", type=int, default=None, envvar="PGFLOW_PROCESSES",
              show_envvar=True, help="Worker processes [default: number of cores].")
@click.option("-c", "--threads", type=int, default=None, envvar="PGFLOW_THREADS",
              show_envvar=True, help="Threads per worker process [default: 4].")
@click.option("-Q", "--queues", default=None, envvar="PGFLOW_QUEUES", show_envvar=True,
              help="Comma-separated queues to serve [default: every queue of the app].")
@click.option("--burst", is_flag=True, default=None, envvar="PGFLOW_BURST", show_envvar=True,
              help="Exit 0 once the queues hold nothing this worker could run.")
@click.option("--max-jobs-per-child", type=int, default=None,
              envvar="PGFLOW_MAX_JOBS_PER_CHILD", show_envvar=True,
              help="Replace a worker process after it ran N workflows [default: never].")
@click.option("--grace", type=float, default=None, envvar="PGFLOW_GRACE", show_envvar=True,
              help="Seconds in-flight work may finish after SIGTERM [default: 30].")
@click.option("--heartbeat-interval", type=float, default=None,
              envvar="PGFLOW_HEARTBEAT_INTERVAL", show_envvar=True,
              help="Seconds between heartbeats [default: 5].")
@click.option("--heartbeat-timeout", type=float, default=None,
              envvar="PGFLOW_HEARTBEAT_TIMEOUT", show_envvar=True,
              help="Seconds of silence after which an executor's work is adopted [default: 30].")
@click.option("--poll-interval", type=float, default=None, envvar="PGFLOW_POLL_INTERVAL",
              show_envvar=True, help="Seconds between polls without NOTIFY [default: 1].")
@common_options
def worker(app_spec: str, **given: Any) -> None:
    """Run worker processes that claim and run queued workflows.

    SIGTERM or Ctrl-C drains: no new claims, in-flight work gets --grace seconds, the rest
    goes back to its queue uncharged; a second Ctrl-C stops at once. Exit code 0 after a
    drain or a finished --burst.
    """
    from .worker.run import run_worker

    settings = build_settings(**given)
    code = run_guarded(lambda: run_worker(app_spec, settings))
    sys.exit(code)


@main.command(context_settings=CONTEXT)
@click.option("--grant", "grant_role", default=None, metavar="ROLE",
              help="Also grant ROLE the DML privileges pgflow's runtime needs (no DDL).")
@common_options
def migrate(grant_role: str | None, **given: Any) -> None:
    """Create or upgrade pgflow's tables (run as the schema's owner; safe to repeat)."""
    from .db import migrate as migrations
    from .db.pool import Database

    settings = build_settings(**given)

    def go() -> None:
        url = settings.database_url or _embedded(settings)
        db = Database(url, settings.schema)
        applied = migrations.migrate(db)
        click.echo(f"migrated schema {settings.schema!r}: "
                   + (f"applied {', '.join(map(str, applied))}" if applied else "up to date"))
        if grant_role:
            migrations.grant(db, grant_role)
            click.echo(f"granted runtime privileges on {settings.schema!r} to {grant_role!r}")

    run_guarded(go)


def _embedded(settings: Settings) -> str:
    from .db.embedded import start_embedded

    return start_embedded(settings.home)


def _not_yet(name: str) -> Callable[..., None]:
    def command(**_: Any) -> None:
        click.echo(f"pgflow {name}: not available in this version yet", err=True)
        sys.exit(2)
    command.__name__ = name.replace(" ", "_")
    return command


@main.group(context_settings=CONTEXT)
def workflows() -> None:
    """List, inspect, cancel, resume and fork workflows."""


for _name, _doc in (("list", "List workflows."), ("show", "Show one workflow and its steps."),
                    ("cancel", "Cancel workflows."), ("resume", "Resume workflows."),
                    ("fork", "Fork a workflow from a step.")):
    workflows.command(name=_name, help=_doc + " (not available yet)",
                      context_settings={**CONTEXT, "ignore_unknown_options": True})(
        click.argument("args", nargs=-1)(_not_yet(f"workflows {_name}")))

main.command(name="queues", help="Per-queue counts and limits. (not available yet)",
             context_settings={**CONTEXT, "ignore_unknown_options": True})(
    click.argument("args", nargs=-1)(_not_yet("queues")))
main.command(name="enqueue", help="Enqueue QUEUE WORKFLOW ARGS_JSON. (not available yet)",
             context_settings={**CONTEXT, "ignore_unknown_options": True})(
    click.argument("args", nargs=-1)(_not_yet("enqueue")))


@main.command(context_settings=CONTEXT)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common_options
def reset(yes: bool, **given: Any) -> None:
    """Drop pgflow's schema and everything in it (asks first without --yes)."""
    from .db import migrate as migrations
    from .db.pool import Database

    settings = build_settings(**given)
    if not yes and not click.confirm(
            f"Drop schema {settings.schema!r} and every workflow in it?", default=False):
        sys.exit(1)

    def go() -> None:
        url = settings.database_url or _embedded(settings)
        migrations.drop_schema(Database(url, settings.schema))
        click.echo(f"dropped schema {settings.schema!r}")

    run_guarded(go)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
