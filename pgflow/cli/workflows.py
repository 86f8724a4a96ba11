"""``pgflow workflows list|show|fork``: read workflows, and fork one (cancel and resume are in
:mod:`.cancel_resume`, retarget in :mod:`.versions`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .. import tables
from .environment import operator_settings, with_client
from .options import CONTEXT, app_option, common_options, json_option, parse_statuses

if TYPE_CHECKING:
    from ..client import Client
    from ..records import StepRecord, WorkflowStatus


@click.group(context_settings=CONTEXT)
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
            status=parse_statuses(status),
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

    from ..redaction import redact
    from ..serialization import recorded_traceback

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
    click.echo(_workflow_fields(wf))
    trace = recorded_traceback(wf.error) if isinstance(wf.error, BaseException) else None
    if trace:
        click.echo("\ntraceback:\n" + redact(trace.rstrip()))
    click.echo("\nsteps:")
    click.echo(_steps_table(steps))
    if children:
        click.echo("\nchildren:")
        click.echo(
            tables.table(
                ["workflow_id", "name", "status"],
                [[c.workflow_id, c.name, c.status] for c in children],
            )
        )


def _workflow_fields(wf: WorkflowStatus) -> str:
    return tables.fields(
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


def _steps_table(steps: list[StepRecord]) -> str:
    return tables.table(
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


def _limit(max_recovery_attempts: int | None) -> str:
    return "unlimited" if max_recovery_attempts is None else str(max_recovery_attempts)


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
