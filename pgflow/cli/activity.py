"""``pgflow workers`` and ``pgflow explain``: what runs where, and why a workflow does not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .. import tables
from .environment import operator_settings, with_client
from .options import CONTEXT, app_option, common_options, json_option

if TYPE_CHECKING:
    from ..activity import DeadExecutor, WorkerInfo


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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
        click.echo(_executors_table(group))
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
        click.echo(_dead_table(dead))


def _executors_table(group: list[WorkerInfo]) -> str:
    return tables.table(
        ["executor", "host", "pid", "version", "kind", "queues", "heartbeat", "started", "running"],
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


def _dead_table(dead: list[DeadExecutor]) -> str:
    return tables.table(
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
