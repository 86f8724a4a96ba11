"""``pgflow prune``: delete finished workflows older than a duration, in batches."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import tables
from .environment import operator_settings, with_client
from .options import (
    CONTEXT,
    app_option,
    common_options,
    json_option,
    parse_duration_option,
    parse_statuses,
)


@click.command(context_settings=CONTEXT)
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
    from ..durations import format_duration

    settings = operator_settings(app_spec, given)
    statuses = parse_statuses(status)
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
