"""The ``pgflow`` command: thin click commands that build Settings and call one function.

Exit codes: 0 success; 1 an error (one line on stderr says what to do; with several ids, the
others were still handled); 2 a usage error; 3 (``pgflow worker``) worker processes kept
failing to start.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click
from click.core import ParameterSource

from . import tables
from .errors import ConfigurationError, PgflowError
from .settings import Settings

if TYPE_CHECKING:
    from .client import Client
    from .records import StepRecord, WorkflowStatus

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fail(exc: BaseException) -> None:
    from .redaction import redact

    click.echo(f"pgflow: {redact(str(exc))}", err=True)
    sys.exit(1)


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a pgflow error becomes one line on stderr and exit code 1."""
    try:
        return fn()
    except PgflowError as exc:
        _fail(exc)


def setting_option(name: str, *, hidden_default: bool = False) -> Callable[[F], F]:
    """A click option declared by the Settings field ``name`` (its flag, variable and help).

    The option has no click default: a flag not given is None, and build_settings keeps only
    flags given on the command line, so variables and values in code stand (Settings.resolve).
    """
    import dataclasses

    f = next(f for f in dataclasses.fields(Settings) if f.name == name)
    decls = f.metadata["flag"].split("/")
    kind = str(f.type)
    help_text = f.metadata["doc"]
    if not hidden_default and f.default not in (None, (), False, 0, ""):
        help_text += (
            f" [default: {f.default:g}]"
            if isinstance(f.default, float)
            else f" [default: {f.default}]"
        )
    options: dict[str, Any] = {
        "default": None,
        "envvar": f.metadata["env"],
        "show_envvar": True,
        "help": help_text,
    }
    if kind.startswith("bool"):
        options["is_flag"] = True
    elif kind.startswith("int"):
        options["type"] = int
    elif kind.startswith("float"):
        options["type"] = float
    return click.option(*decls, name, **options)


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = setting_option("log_level")(fn)
    fn = click.option(
        "--log-format",
        envvar="PGFLOW_LOG_FORMAT",
        show_envvar=True,
        type=click.Choice(["auto", "console", "json"]),
        default=None,
        help="Log lines for people (console) or machines (json).",
    )(fn)
    fn = click.option(
        "--schema",
        envvar="PGFLOW_SCHEMA",
        show_envvar=True,
        default=None,
        help="Schema of pgflow's tables [default: pgflow].",
    )(fn)
    fn = click.option(
        "--database-url",
        envvar="PGFLOW_DATABASE_URL",
        show_envvar=True,
        default=None,
        help="PostgreSQL URL; unset: the embedded server under PGFLOW_HOME.",
    )(fn)
    return fn


def flags_given(given: dict[str, Any]) -> dict[str, Any]:
    """The options actually typed on the command line (click also reads their variables;
    Settings reads those itself, at their own level of precedence)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return given
    return {
        k: v for k, v in given.items() if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE
    }


def build_settings(**given: Any) -> Settings:
    settings = run_guarded(lambda: Settings.resolve(flags=flags_given(given)))
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
    from .logs import configure_logging
    from .worker.run import load_worker_app, run_worker

    flags = flags_given(given)
    if quiet and "log_level" not in flags:
        flags["log_level"] = "warning"
    settings = run_guarded(lambda: Settings.resolve(flags=flags))
    configure_logging(settings.log_format, settings.log_level)  # while the app loads
    loaded_before = frozenset(sys.modules)
    app = run_guarded(lambda: load_worker_app(app_spec, flags))
    configure_logging(app.settings.log_format, app.settings.log_level)
    sys.exit(run_guarded(lambda: run_worker(app, app_spec, flags, loaded_before)))


@main.command(context_settings=CONTEXT)
@click.option(
    "--grant",
    "grant_role",
    default=None,
    metavar="ROLE",
    help="Also grant ROLE the DML privileges pgflow's runtime needs (no DDL).",
)
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
        click.echo(
            f"migrated schema {settings.schema!r}: "
            + (f"applied {', '.join(map(str, applied))}" if applied else "up to date")
        )
        if grant_role:
            migrations.grant(db, grant_role)
            click.echo(f"granted runtime privileges on {settings.schema!r} to {grant_role!r}")

    run_guarded(go)


def _embedded(settings: Settings) -> str:
    from .db.embedded import locate_home, start_embedded

    return start_embedded(locate_home(settings.home))


# -- operator commands: the app's configuration, and no server started to read ------------------


def app_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-A",
        "--app",
        "app_spec",
        default=None,
        envvar="PGFLOW_APP",
        show_envvar=True,
        help="Task module holding the App (pkg.module[:attribute]): use its database URL, "
        "schema and serializer.",
    )(fn)


def operator_settings(app_spec: str | None, given: dict[str, Any]) -> Settings:
    """The settings of an operator command: flags and ``PGFLOW_*`` variables; with ``-A``, the
    app's own settings (its URL and schema set in code), under the flags actually given."""
    settings = build_settings(**given)
    if not app_spec:
        return settings
    from click.core import ParameterSource

    from .loader import load_app

    app = run_guarded(lambda: load_app(app_spec))
    ctx = click.get_current_context()
    flags = {
        k: given[k]
        for k in ("database_url", "schema")
        if given.get(k) is not None and ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE
    }
    return run_guarded(lambda: app.settings.replace(**flags))  # type: ignore[no-any-return]


def operator_url(settings: Settings, *, may_start: bool) -> str:
    """The database an operator command talks to: the URL configured, else the project's
    embedded server if it runs. Only a command that writes new work (``enqueue``) starts one;
    the others say where to point instead."""
    if settings.database_url:
        return settings.database_url
    from .db.embedded import embedded_status, locate_home

    home = locate_home(settings.home)
    found = embedded_status(home)
    if found.url is not None:
        return found.url
    if may_start:
        return _embedded(settings)
    raise ConfigurationError(
        f"no database found: no URL is set and no embedded server runs under {home}; point "
        "at your database with --database-url URL or PGFLOW_DATABASE_URL, or with -A "
        "your.module to use the URL your App sets (pgflow starts the embedded server only "
        "for `pgflow worker`, `pgflow migrate` and `pgflow enqueue`)"
    )


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
    )(fn)


def with_client(settings: Settings, fn: Callable[[Client], T], *, may_start: bool = False) -> T:
    """Call ``fn`` with a Client on the configured database (see :func:`operator_url`), closed
    afterwards; a pgflow error becomes one line and exit code 1."""
    from .client import Client

    def go() -> T:
        from .db.pool import Database

        url = operator_url(settings, may_start=may_start)
        # A command is interactive: a server that is down or full says so at once, with
        # its reason, where a library Client would wait for it.
        Database(url, settings.schema, application_name="pgflow:cli").connect().close()
        with Client(settings=settings.replace(database_url=url)) as client:
            return fn(client)

    return run_guarded(go)  # type: ignore[no-any-return]


def _statuses(values: tuple[str, ...]) -> list[str] | None:
    found = [v.strip().upper() for value in values for v in value.split(",") if v.strip()]
    return found or None


@main.group(context_settings=CONTEXT)
def workflows() -> None:
    """List, inspect, cancel, resume and fork workflows."""


@workflows.command(name="list", context_settings=CONTEXT)
@click.option(
    "--status",
    multiple=True,
    metavar="STATUS[,STATUS]",
    help="ENQUEUED, PENDING, SUCCESS, ERROR, CANCELLED or "
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED (repeat or comma-separate).",
)
@click.option("--name", default=None, help="Only workflows of this name.")
@click.option("--queue", default=None, help="Only workflows of this queue.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many.")
@click.option("--offset", type=int, default=0, help="Skip this many first.")
@click.option("--oldest-first", is_flag=True, help="Oldest first [default: newest first].")
@json_option
@app_option
@common_options
def list_workflows(
    status: tuple[str, ...],
    name: str | None,
    queue: str | None,
    limit: int,
    offset: int,
    oldest_first: bool,
    as_json: bool,
    app_spec: str | None,
    **given: Any,
) -> None:
    """List workflows, newest first."""
    settings = operator_settings(app_spec, given)
    found = with_client(
        settings,
        lambda c: c.list_workflows(
            status=_statuses(status),
            name=name,
            queue=queue,
            limit=limit,
            offset=offset,
            newest_first=not oldest_first,
        ),
    )
    if as_json:
        click.echo(tables.to_json(found))
        return
    click.echo(
        tables.table(
            ["workflow_id", "name", "status", "queue", "created", "took"],
            [
                [w.workflow_id, w.name, w.status, w.queue_name, w.created_at, _took(w)]
                for w in found
            ],
        )
    )


def _took(w: WorkflowStatus) -> str:
    if w.started_at is None or not w.status.terminal:
        return "-"
    return tables.duration((w.updated_at - w.started_at).total_seconds())


@workflows.command(context_settings=CONTEXT)
@click.argument("workflow_id")
@json_option
@app_option
@common_options
def show(workflow_id: str, as_json: bool, app_spec: str | None, **given: Any) -> None:
    """Show one workflow: status, inputs, outcome, every step with timings, children."""
    settings = operator_settings(app_spec, given)

    from .redaction import redact
    from .serialization import recorded_traceback

    def load(client: Client) -> tuple[WorkflowStatus, list[StepRecord], list[WorkflowStatus]]:
        return (
            client.retrieve(workflow_id).status(),
            client.steps(workflow_id),
            client.list_workflows(parent_workflow_id=workflow_id, limit=1000),
        )

    wf, steps, children = with_client(settings, load)
    if as_json:
        click.echo(tables.to_json({"workflow": wf, "steps": steps, "children": children}))
        return
    click.echo(
        tables.fields(
            [
                ("workflow", wf.workflow_id),
                ("name", wf.name),
                ("status", wf.status),
                ("queue", wf.queue_name),
                ("priority", wf.priority),
                ("partition", wf.partition_key),
                ("dedup id", wf.dedup_id),
                ("parent", wf.parent_workflow_id),
                ("forked from", wf.forked_from),
                ("app version", wf.app_version),
                ("executor", wf.executor_id),
                ("recoveries", f"{wf.recovery_attempts} of {_limit(wf.max_recovery_attempts)}"),
                ("created", wf.created_at),
                ("started", wf.started_at),
                ("updated", wf.updated_at),
                ("deadline", wf.deadline),
                ("inputs", wf.inputs),
                ("output", wf.output),
                ("error", wf.error),
            ]
        )
    )
    trace = recorded_traceback(wf.error) if isinstance(wf.error, BaseException) else None
    if trace:
        click.echo("\ntraceback:\n" + redact(trace.rstrip()))
    click.echo("\nsteps:")
    click.echo(
        tables.table(
            ["step", "name", "result", "tries", "started", "took", "output / error / child"],
            [
                [
                    s.step_id,
                    s.name,
                    "error" if s.error is not None else ("child" if s.child_workflow_id else "ok"),
                    s.attempts,
                    s.started_at,
                    tables.duration((s.completed_at - s.started_at).total_seconds())
                    if s.started_at and s.completed_at
                    else None,
                    s.error if s.error is not None else (s.child_workflow_id or s.output),
                ]
                for s in steps
            ],
        )
    )
    if children:
        click.echo("\nchildren:")
        click.echo(
            tables.table(
                ["workflow_id", "name", "status"],
                [[c.workflow_id, c.name, c.status] for c in children],
            )
        )


def _limit(max_recovery_attempts: int | None) -> str:
    return "unlimited" if max_recovery_attempts is None else str(max_recovery_attempts)


def _each(
    ids: tuple[str, ...],
    as_json: bool,
    act: Callable[[str], Any],
    describe: Callable[[str, Any], str],
) -> None:
    """Apply ``act`` to every id; report each; exit 1 if any failed (the others still ran)."""
    results: dict[str, Any] = {}
    failed = False
    for workflow_id in ids:
        try:
            results[workflow_id] = act(workflow_id)
        except PgflowError as exc:
            failed = True
            results[workflow_id] = {"error": str(exc)}
            if not as_json:
                from .redaction import redact

                click.echo(f"pgflow: {redact(str(exc))}", err=True)
            continue
        if not as_json:
            click.echo(describe(workflow_id, results[workflow_id]))
    if as_json:
        click.echo(tables.to_json(results))
    if failed:
        sys.exit(1)


def parse_duration_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """An option's duration: 90s, 15m, 12h, 30d, or seconds (pgflow.durations)."""
    if value is None:
        return None
    from .durations import parse_duration

    try:
        return parse_duration(value, what=param.opts[0])
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The filters of a bulk cancel or resume (instead of ids)."""
    for decl in reversed(
        [
            click.option(
                "--status",
                multiple=True,
                metavar="STATUS[,STATUS]",
                help="Only workflows in these statuses (repeat or comma-separate).",
            ),
            click.option("--queue", default=None, help="Only workflows of this queue."),
            click.option("--name", default=None, help="Only workflows of this name."),
            click.option(
                "--older-than",
                callback=parse_duration_option,
                default=None,
                metavar="DURATION",
                help="Only workflows created longer ago than this: 90s, 15m, 12h, 30d.",
            ),
            click.option(
                "--all",
                "everything",
                is_flag=True,
                help="Every workflow the command applies to (no filter).",
            ),
            click.option("--dry-run", is_flag=True, help="Only print how many match."),
            click.option("--yes", is_flag=True, help="Do not ask for confirmation."),
            click.option(
                "--batch-size",
                type=click.IntRange(min=1),
                default=1000,
                show_default=True,
                help="Workflows per statement (short transactions).",
            ),
        ]
    ):
        fn = decl(fn)
    return fn


def _bulk(
    action: Literal["cancel", "resume"],
    ids: tuple[str, ...],
    filters: dict[str, Any],
    as_json: bool,
    settings: Settings,
) -> bool:
    """Cancel or resume by filter when filters are given (False: act on ``ids``): print the
    count, ask unless --yes, then act in batches with a progress line."""
    dry_run, yes, batch = filters.pop("dry_run"), filters.pop("yes"), filters.pop("batch_size")
    filters["status"] = _statuses(filters["status"])
    chosen = {k: v for k, v in filters.items() if v not in (None, False)}
    if ids:
        if chosen:
            flags = sorted(
                "--all" if k == "everything" else "--" + k.replace("_", "-") for k in chosen
            )
            raise click.UsageError(f"give workflow ids or filters ({', '.join(flags)}), not both")
        return False
    if not chosen:
        raise click.UsageError(
            f"{action} needs workflow ids or filters (--status, --queue, --name, "
            f"--older-than); to {action} every workflow it applies to, pass --all"
        )
    from .bulk import match
    from .durations import format_duration

    m = run_guarded(lambda: match(action, **filters))
    n = with_client(settings, lambda c: c.count_matching(action, **filters))
    what = ", ".join(
        [f"status {'|'.join(m.statuses)}"]
        + ([f"queue {m.queue}"] if m.queue else [])
        + ([f"name {m.name}"] if m.name else [])
        + (
            [f"created more than {format_duration(m.older_than)} ago"]
            if m.older_than is not None
            else []
        )
    )
    extra = " and their children" if action == "cancel" else ""
    if dry_run or n == 0:
        if as_json:
            click.echo(tables.to_json({"matched": n, "dry_run": dry_run}))
        else:
            click.echo(
                f"{n} workflow(s) match ({what}); {action} would take them{extra}"
                " (dry run: nothing changed)"
                if dry_run
                else f"no workflow matches ({what}): nothing to {action}"
            )
        return True
    if not yes and not click.confirm(
        f"{action.capitalize()} {n} workflow(s) ({what}){extra}?", default=False
    ):
        sys.exit(1)

    def progress(r: Any) -> None:
        kids = f" (+{r.children} children)" if r.children else ""
        click.echo(f"{action}: {r.matched} of about {n} done, {r.changed} changed{kids}", err=True)

    done = with_client(
        settings,
        lambda c: getattr(c, f"{action}_matching")(batch=batch, on_batch=progress, **filters),
    )
    if as_json:
        click.echo(tables.to_json(done))
    else:
        past = "cancelled" if action == "cancel" else "resumed"
        kids = f" and {done.children} of their children" if done.children else ""
        click.echo(
            f"{past} {done.changed} workflow(s){kids}; {done.unchanged} left as they "
            f"were, in {done.batches} batch(es)"
        )
    return True


@workflows.command(context_settings=CONTEXT)
@click.argument("workflow_ids", nargs=-1)
@filter_options
@json_option
@app_option
@common_options
def cancel(
    workflow_ids: tuple[str, ...],
    as_json: bool,
    app_spec: str | None,
    status: tuple[str, ...],
    queue: str | None,
    name: str | None,
    older_than: float | None,
    everything: bool,
    dry_run: bool,
    yes: bool,
    batch_size: int,
    **given: Any,
) -> None:
    """Cancel workflows and their children (a running one stops at its next step).

    By id, or by filter: `pgflow workflows cancel --queue emails --status ENQUEUED
    --older-than 1d` prints how many match, asks (unless --yes), then cancels them in
    batches. Filters apply to ENQUEUED and PENDING workflows; --all takes every one."""
    settings = operator_settings(app_spec, given)
    if _bulk(
        "cancel",
        workflow_ids,
        dict(
            status=status,
            queue=queue,
            name=name,
            older_than=older_than,
            everything=everything,
            dry_run=dry_run,
            yes=yes,
            batch_size=batch_size,
        ),
        as_json,
        settings,
    ):
        return
    with_client(
        settings,
        lambda c: _each(
            workflow_ids,
            as_json,
            lambda i: {"status": c.cancel(i).status},
            lambda i, r: f"{i}: {r['status']}",
        ),
    )


@workflows.command(context_settings=CONTEXT)
@click.argument("workflow_ids", nargs=-1)
@filter_options
@json_option
@app_option
@common_options
def resume(
    workflow_ids: tuple[str, ...],
    as_json: bool,
    app_spec: str | None,
    status: tuple[str, ...],
    queue: str | None,
    name: str | None,
    older_than: float | None,
    everything: bool,
    dry_run: bool,
    yes: bool,
    batch_size: int,
    **given: Any,
) -> None:
    """Run workflows now: CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED ones again from
    their last completed step (on their queue, or by any executor of their version); queued
    ones without their delay. Running and succeeded ones are left as they are.

    By id, or by filter (as `cancel`): filters take CANCELLED, ERROR and
    MAX_RECOVERY_ATTEMPTS_EXCEEDED workflows unless --status says otherwise (ENQUEUED: drop
    their delays)."""
    settings = operator_settings(app_spec, given)
    if _bulk(
        "resume",
        workflow_ids,
        dict(
            status=status,
            queue=queue,
            name=name,
            older_than=older_than,
            everything=everything,
            dry_run=dry_run,
            yes=yes,
            batch_size=batch_size,
        ),
        as_json,
        settings,
    ):
        return
    with_client(
        settings,
        lambda c: _each(
            workflow_ids,
            as_json,
            lambda i: {"status": c.resume(i).status().status},
            lambda i, r: f"{i}: {r['status']}",
        ),
    )


@workflows.command(context_settings=CONTEXT)
@click.argument("workflow_id")
@click.option(
    "--step",
    "from_step",
    type=int,
    default=1,
    show_default=True,
    help="First step to run again; the steps before it are reused.",
)
@click.option(
    "--workflow-id",
    "new_workflow_id",
    default=None,
    help="Id of the new workflow [default: a new UUID].",
)
@click.option(
    "--app-version",
    default=None,
    help="Run it on workers of this version [default: the original's].",
)
@json_option
@app_option
@common_options
def fork(
    workflow_id: str,
    from_step: int,
    new_workflow_id: str | None,
    app_version: str | None,
    as_json: bool,
    app_spec: str | None,
    **given: Any,
) -> None:
    """Start a new workflow from WORKFLOW_ID's inputs, reusing its steps before --step."""
    settings = operator_settings(app_spec, given)
    handle = with_client(
        settings,
        lambda c: c.fork(
            workflow_id, from_step, new_workflow_id=new_workflow_id, app_version=app_version
        ),
    )
    if as_json:
        click.echo(tables.to_json({"workflow_id": handle.workflow_id, "forked_from": workflow_id}))
    else:
        click.echo(handle.workflow_id)


@main.command(context_settings=CONTEXT)
@click.option(
    "--older-than",
    required=True,
    callback=parse_duration_option,
    metavar="DURATION",
    help="Delete workflows that ended longer ago than this: 90s, 15m, 12h, 30d.",
)
@click.option(
    "--status",
    multiple=True,
    metavar="STATUS[,STATUS]",
    help="Only these statuses [default: SUCCESS, ERROR, CANCELLED, "
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED].",
)
@click.option("--dry-run", is_flag=True, help="Only print how many would be deleted.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Workflows deleted per transaction.",
)
@json_option
@app_option
@common_options
def prune(
    older_than: float,
    status: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    batch_size: int,
    as_json: bool,
    app_spec: str | None,
    **given: Any,
) -> None:
    """Delete finished workflows that ended more than --older-than ago, with their
    checkpoints, the messages sent to them and their events, in batches (short
    transactions). Active workflows are never deleted, nor a child whose parent stays (its
    parent's replay reads it). Workers can do this on their own: the `retention` setting
    (PGFLOW_RETENTION=30d)."""
    from .durations import format_duration

    settings = operator_settings(app_spec, given)
    statuses = _statuses(status)
    age = format_duration(older_than)
    n = with_client(settings, lambda c: c.count_prunable(older_than, statuses))
    if dry_run or n == 0:
        if as_json:
            click.echo(tables.to_json({"matched": n, "dry_run": dry_run}))
        else:
            click.echo(
                f"{n} workflow(s) ended more than {age} ago"
                + (
                    " would be deleted (dry run: nothing changed)"
                    if dry_run
                    else ": nothing to delete"
                )
            )
        return
    if not yes and not click.confirm(
        f"Delete {n} workflow(s) that ended more than {age} ago, with their steps, "
        "messages and events?",
        default=False,
    ):
        sys.exit(1)

    def progress(r: Any) -> None:
        click.echo(f"prune: {r.workflows} of about {n} deleted", err=True)

    done = with_client(
        settings, lambda c: c.prune(older_than, statuses, batch=batch_size, on_batch=progress)
    )
    if as_json:
        click.echo(tables.to_json(done))
        return
    click.echo(
        f"deleted {done.workflows} workflow(s) that ended before "
        f"{tables.cell(done.cutoff)}, with {done.steps} step(s), {done.messages} "
        f"message(s) and {done.events} event row(s), in {done.batches} batch(es)"
    )


@main.group(context_settings=CONTEXT, invoke_without_command=True)
@json_option
@app_option
@common_options
@click.pass_context
def queues(ctx: click.Context, /, as_json: bool, app_spec: str | None, **given: Any) -> None:
    """Per queue: enqueued, running, partitions, limits, rate-window use, oldest wait, paused;
    and work no live worker can run, with the reason. `pgflow queues pause Q` and
    `pgflow queues resume Q` stop and restart the claims of a queue."""
    if ctx.invoked_subcommand is not None:
        return
    settings = operator_settings(app_spec, given)
    found, stranded = with_client(settings, lambda c: c.queue_report())
    if as_json:
        click.echo(tables.to_json({"queues": found, "stranded": stranded}))
        return
    rows = []
    for q in found:
        rate = (
            None
            if q.rate_limit is None
            else f"{q.started_in_window}/{q.rate_limit} per {q.rate_per_seconds:g}s"
        )
        rows.append(
            [
                q.name + (" (paused)" if q.paused else ""),
                q.enqueued,
                q.delayed,
                q.pending,
                q.live_workers,
                q.concurrency,
                q.worker_concurrency,
                rate,
                tables.duration(q.oldest_wait_s),
            ]
        )
        rows += [
            [f"  {q.name}[{key}]", n["enqueued"], None, n["pending"], None, None, None, None, None]
            for key, n in q.partitions.items()
        ]
    click.echo(
        tables.table(
            [
                "queue",
                "enqueued",
                "delayed",
                "running",
                "workers",
                "concurrency",
                "per_worker",
                "rate_window",
                "oldest_wait",
            ],
            rows,
        )
    )
    for q in found:
        if q.paused:
            click.echo(
                f"queue {q.name} is paused since {tables.cell(q.paused_at)}: no worker "
                f"claims from it; `pgflow queues resume {q.name}` resumes it"
            )
    if stranded:
        click.echo("\nleft waiting (no live worker can run them):")
        click.echo(
            tables.table(
                ["queue", "workflow", "app_version", "reason", "workflows", "since"],
                [
                    [
                        s.queue_name or "(no queue)",
                        s.name,
                        s.app_version,
                        s.reason.replace("_", " "),
                        s.count,
                        s.since,
                    ]
                    for s in stranded
                ],
            )
        )
        for s in stranded:
            click.echo(f"  {s.queue_name or '(no queue)'} / {s.name}: {s.remedy}")


@queues.command(name="pause", context_settings=CONTEXT)
@click.argument("queue")
@app_option
@common_options
def pause_queue(queue: str, app_spec: str | None, **given: Any) -> None:
    """Stop every worker claiming from QUEUE (within about a second; running work finishes).
    Durable: it stays paused across restarts until `pgflow queues resume QUEUE`."""
    settings = operator_settings(app_spec, given)
    changed = with_client(settings, lambda c: c.pause_queue(queue))
    click.echo(f"queue {queue} paused" if changed else f"queue {queue} was already paused")


@queues.command(name="resume", context_settings=CONTEXT)
@click.argument("queue")
@app_option
@common_options
def resume_queue(queue: str, app_spec: str | None, **given: Any) -> None:
    """Let workers claim from QUEUE again."""
    settings = operator_settings(app_spec, given)
    changed = with_client(settings, lambda c: c.resume_queue(queue))
    click.echo(f"queue {queue} resumed" if changed else f"queue {queue} was not paused")


@main.command(context_settings=CONTEXT)
@click.argument("workflow_id")
@json_option
@app_option
@common_options
def explain(workflow_id: str, as_json: bool, app_spec: str | None, **given: Any) -> None:
    """Why is WORKFLOW_ID not running? Every reason that holds, with its numbers: delayed or
    sleeping until when; the queue's concurrency, its key's limit or its rate window full;
    every live worker's worker_concurrency full; no live worker of its queue, name or version;
    workflows ahead of it; the executor it runs on, alive (in which step) or dead (adoption
    due when). For an ended workflow, that it is done."""
    settings = operator_settings(app_spec, given)
    found = with_client(settings, lambda c: c.explain(workflow_id))
    if as_json:
        click.echo(tables.to_json(found))
        return
    click.echo(click.wrap_text(found.text, width=100, preserve_paragraphs=True))


@main.command(context_settings=CONTEXT)
@json_option
@app_option
@common_options
def workers(as_json: bool, app_spec: str | None, **given: Any) -> None:
    """Live executors and what each runs now; then executors whose heartbeat is stale (dead,
    not yet reaped: a live executor hands their work back within the heartbeat timeout); then
    those that died recently, with how many workflows were handed back from each."""
    settings = operator_settings(app_spec, given)
    found, dead = with_client(settings, lambda c: (c.workers(), c.dead_workers()))
    if as_json:
        click.echo(tables.to_json({"workers": found, "died_recently": dead}))
        return
    for alive, title in ((True, None), (False, "stale heartbeat (dead, not reaped yet):")):
        group = [w for w in found if w.alive is alive]
        if not alive and not group:
            continue
        if title:
            click.echo(f"\n{title}")
        click.echo(
            tables.table(
                [
                    "executor",
                    "host",
                    "pid",
                    "version",
                    "kind",
                    "queues",
                    "heartbeat",
                    "started",
                    "running",
                ],
                [
                    [
                        w.executor_id,
                        w.hostname,
                        w.pid,
                        w.app_version,
                        w.kind,
                        ",".join(w.queues) or None,
                        f"{tables.duration(w.heartbeat_age_s)} ago",
                        w.started_at,
                        len(w.workflows),
                    ]
                    for w in group
                ],
            )
        )
        held = [(w, a) for w in group for a in w.workflows]
        if held:
            click.echo("\n" + ("running now:" if alive else "held by them:"))
            click.echo(
                tables.table(
                    ["executor", "workflow_id", "name", "queue", "for"],
                    [
                        [
                            w.executor_id,
                            a.workflow_id,
                            a.name,
                            a.queue_name,
                            tables.duration(a.running_s),
                        ]
                        for w, a in held
                    ],
                )
            )
    if dead:
        click.echo("\ndied recently:")
        click.echo(
            tables.table(
                ["executor", "host", "pid", "version", "kind", "died", "reaped by", "handed back"],
                [
                    [
                        d.executor_id,
                        d.hostname,
                        d.pid,
                        d.app_version,
                        d.kind,
                        f"{tables.duration(d.died_ago_s)} ago",
                        d.reaped_by,
                        d.released,
                    ]
                    for d in dead
                ],
            )
        )


@main.command(context_settings=CONTEXT)
@click.argument("queue")
@click.argument("workflow")
@click.argument("args_json", default="[]", required=False)
@click.option("--workflow-id", default=None, help="Id of the new workflow (idempotency key).")
@click.option("--dedup-id", default=None, help="At most one active workflow per id and queue.")
@click.option("--priority", type=int, default=None, help="Lower runs first (priority queues).")
@click.option("--partition-key", default=None, help="Partition of a partitioned queue.")
@click.option("--delay", type=float, default=None, help="Seconds before it may start.")
@click.option("--timeout", type=float, default=None, help="Seconds until it is cancelled.")
@click.option(
    "--app-version",
    default=None,
    help="Only workers of this version may start it [default: any version that "
    "knows the workflow's name].",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse a name no registered version knows (default: warn and enqueue).",
)
@json_option
@app_option
@common_options
def enqueue(
    queue: str,
    workflow: str,
    args_json: str,
    workflow_id: str | None,
    dedup_id: str | None,
    priority: int | None,
    partition_key: str | None,
    delay: float | None,
    timeout: float | None,
    app_version: str | None,
    strict: bool,
    as_json: bool,
    app_spec: str | None,
    **given: Any,
) -> None:
    """Queue WORKFLOW (its registered name, e.g. shop.tasks.checkout) on QUEUE with ARGS_JSON:
    a JSON list of positional arguments, or an object of keyword arguments."""
    try:
        parsed = json.loads(args_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc})", param_hint="ARGS_JSON") from None
    if not isinstance(parsed, (list, dict)):
        raise click.BadParameter(
            "give a JSON list (positional arguments) or object (keyword arguments)",
            param_hint="ARGS_JSON",
        )
    args, kwargs = (parsed, {}) if isinstance(parsed, list) else ([], parsed)
    settings = operator_settings(app_spec, given)
    handle = with_client(
        settings,
        lambda c: c.enqueue(
            queue,
            workflow,
            *args,
            kwargs=kwargs,
            workflow_id=workflow_id,
            dedup_id=dedup_id,
            priority=priority,
            partition_key=partition_key,
            delay=delay,
            timeout=timeout,
            app_version=app_version,
            strict=strict,
        ),
        may_start=True,
    )
    if as_json:
        click.echo(tables.to_json({"workflow_id": handle.workflow_id, "queue": queue}))
    else:
        click.echo(handle.workflow_id)


@workflows.command(context_settings=CONTEXT)
@click.option(
    "--from",
    "from_version",
    required=True,
    metavar="VERSION",
    help="Application version the workflows carry now.",
)
@click.option(
    "--to",
    "to_version",
    required=True,
    metavar="VERSION",
    help="Application version to give them (one `pgflow versions` lists).",
)
@click.option(
    "--status",
    multiple=True,
    metavar="STATUS[,STATUS]",
    help="Statuses to move [default: ENQUEUED and ownerless PENDING: waiting work].",
)
@click.option("--dry-run", is_flag=True, help="Only print how many would move.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common_options
def retarget(
    from_version: str,
    to_version: str,
    status: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    **given: Any,
) -> None:
    """Move workflows stranded on an old version to another one, keeping their ids.

    A workflow that started runs only on its own version (its checkpoints came from that
    code); when no worker of that version will run again, retarget it to one that will. It
    replays its recorded steps there, so the new code must call the same steps in the same
    order up to where it stopped (else NonDeterminism). Works in batches; PENDING rows that a
    live worker owns are never moved."""
    from .versions import WAITING

    settings = build_settings(**given)
    statuses = tuple(_statuses(status) or WAITING)
    n = with_client(settings, lambda c: c.count_retarget(from_version, statuses))
    what = f"{n} workflow(s) of version {from_version} ({', '.join(statuses)})"
    if dry_run or n == 0:
        click.echo(f"{what} would move to version {to_version}" if n else f"no {what[2:]}")
        return
    if not yes and not click.confirm(f"Move {what} to version {to_version}?", default=False):
        sys.exit(1)
    moved = with_client(settings, lambda c: c.retarget(from_version, to_version, statuses))
    click.echo(f"moved {moved} workflow(s) from version {from_version} to {to_version}")


@main.command(context_settings=CONTEXT)
@json_option
@common_options
def versions(as_json: bool, **given: Any) -> None:
    """Application versions: first and last seen, live executors, workflows per status."""
    settings = build_settings(**given)
    found = with_client(settings, lambda c: c.versions())
    if as_json:
        click.echo(tables.to_json({"versions": found}))
        return
    statuses = [
        "ENQUEUED",
        "PENDING",
        "SUCCESS",
        "ERROR",
        "CANCELLED",
        "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
    ]
    click.echo(
        tables.table(
            [
                "app_version",
                "first_seen",
                "last_seen",
                "live",
                "workflows",
                "enqueued",
                "pending",
                "success",
                "error",
                "cancelled",
                "max_recovery",
            ],
            [
                [
                    v.app_version or "(none yet)",
                    v.first_seen,
                    v.last_seen,
                    v.live_executors,
                    v.workflows,
                    *[v.work.get(s, 0) for s in statuses],
                ]
                for v in found
            ],
        )
    )


@main.command(context_settings=CONTEXT)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (another than localhost exposes the dashboard).",
)
@click.option("--port", default=8089, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--admin-token",
    envvar="PGFLOW_DASHBOARD_TOKEN",
    show_envvar=True,
    default=None,
    help="Enables actions (cancel, resume, fork, pause) for whoever logs in with it; "
    "unset: read-only.",
)
@app_option
@common_options
def dashboard(
    host: str, port: int, admin_token: str | None, app_spec: str | None, **given: Any
) -> None:
    """Serve the web dashboard: workflows, queues, workers, and "why is this not running?"."""
    try:
        import uvicorn

        from .dashboard import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra ({exc.name} is missing): "
            "pip install 'pgflow[dashboard]'"
        ) from None
    settings = operator_settings(app_spec, given)
    url = run_guarded(lambda: operator_url(settings, may_start=False))
    app = run_guarded(
        lambda: create_app(settings=settings.replace(database_url=url), admin_token=admin_token)
    )
    mode = "admin actions with the token" if admin_token else "read-only"
    click.echo(f"pgflow dashboard on http://{host}:{port}/ ({mode})")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@main.command(context_settings=CONTEXT)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common_options
def reset(yes: bool, **given: Any) -> None:
    """Drop pgflow's schema and everything in it (asks first without --yes)."""
    from .db import migrate as migrations
    from .db.errors import describe_target
    from .db.pool import Database

    settings = build_settings(**given)
    url: str = run_guarded(lambda: settings.database_url or _embedded(settings))
    target = describe_target(url)
    if not yes and not click.confirm(
        f"Drop schema {settings.schema!r} of database {target}, and every workflow in it?",
        default=False,
    ):
        sys.exit(1)
    run_guarded(lambda: migrations.drop_schema(Database(url, settings.schema)))
    click.echo(f"dropped schema {settings.schema!r} of database {target}")


@main.group(context_settings=CONTEXT)
def embedded() -> None:
    """The embedded PostgreSQL server pgflow starts when no database URL is set (its data in
    PGFLOW_HOME, default ./.pgflow, found from subfolders too)."""


def embedded_home_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--home",
        envvar="PGFLOW_HOME",
        show_envvar=True,
        default=None,
        help="Folder of the embedded server's data [default: .pgflow].",
    )(fn)
    return app_option(fn)


def _embedded_home(home: str | None, app_spec: str | None) -> Any:
    from .db.embedded import locate_home

    if home is None and app_spec:
        from .loader import load_app

        home = run_guarded(lambda: load_app(app_spec)).settings.home
    return locate_home(home or Settings().home)


@embedded.command(name="status", context_settings=CONTEXT)
@embedded_home_option
@json_option
def embedded_status_command(home: str | None, app_spec: str | None, as_json: bool) -> None:
    """Whether the embedded server runs, its pid, data folder and URL. Exit code 0 when it
    runs, 3 when it does not (starts nothing)."""
    from .db.embedded import embedded_status

    found = embedded_status(_embedded_home(home, app_spec))
    if as_json:
        click.echo(
            tables.to_json(
                {
                    "home": str(found.home),
                    "initialized": found.initialized,
                    "running": found.running,
                    "pid": found.pid,
                    "url": found.url,
                }
            )
        )
    elif found.running:
        click.echo(
            f"running (pid {found.pid}) with its data in {found.home / 'pgdata'}\nurl: {found.url}"
        )
    else:
        state = "stopped" if found.initialized else "not created"
        click.echo(f"{state}: no embedded server runs under {found.home}")
    sys.exit(0 if found.running else 3)


@embedded.command(name="stop", context_settings=CONTEXT)
@embedded_home_option
def embedded_stop_command(home: str | None, app_spec: str | None) -> None:
    """Stop the embedded server (fast shutdown: its clients are disconnected; workflows
    they ran are recovered later). Exit code 0, also when it was not running."""
    from .db.embedded import stop_embedded

    path = _embedded_home(home, app_spec)
    if run_guarded(lambda: stop_embedded(path)):
        click.echo(f"stopped the embedded server under {path}")
    else:
        click.echo(f"no embedded server runs under {path}")


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="pgflow")
