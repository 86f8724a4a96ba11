"""``pgflow queues [pause|resume QUEUE]``: the queues' report, and pausing their claims."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .. import tables
from .environment import operator_settings, with_client
from .options import CONTEXT, app_option, common_options, json_option

if TYPE_CHECKING:
    from ..management import QueueInfo, Stranded


@click.group(context_settings=CONTEXT, invoke_without_command=True)
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
    click.echo(_queues_table(found))
    for q in found:
        if q.paused:
            click.echo(
                f"queue {q.name} is paused since {tables.cell(q.paused_at)}: no worker "
                f"claims from it; `pgflow queues resume {q.name}` resumes it"
            )
    if stranded:
        _print_stranded(stranded)


def _queues_table(found: list[QueueInfo]) -> str:
    """A row per queue, and one per partition key under a partitioned queue."""
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
    return tables.table(
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


def _print_stranded(stranded: list[Stranded]) -> None:
    """The work no live worker can run, and what resolves each."""
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
