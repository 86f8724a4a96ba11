"""``pgflow enqueue``: queue a workflow by its registered name, without the app's code."""

from __future__ import annotations

import json
from typing import Any

import click

from .. import tables
from .environment import operator_settings, with_client
from .options import CONTEXT, app_option, common_options, json_option


@click.command(context_settings=CONTEXT)
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
