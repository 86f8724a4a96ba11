"""``pgflow workflows cancel|resume``: by id, or by filter (count, confirm, then batches)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import click

from .. import tables
from ..errors import PgflowError
from ..settings import Settings
from .environment import operator_settings, run_guarded, with_client
from .options import (
    CONTEXT,
    app_option,
    common_options,
    json_option,
    parse_duration_option,
    parse_statuses,
)

if TYPE_CHECKING:
    from ..bulk import Match


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
    filters["status"] = parse_statuses(filters["status"])
    if not _by_filter(action, ids, filters):
        return False
    from ..bulk import match

    m = run_guarded(lambda: match(action, **filters))
    n = with_client(settings, lambda c: c.count_matching(action, **filters))
    what = _describe_match(m)
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
    _act_in_batches(action, n, batch, filters, as_json, settings)
    return True


def _by_filter(action: str, ids: tuple[str, ...], filters: dict[str, Any]) -> bool:
    """True when filters choose the workflows, False when ids do; both or neither is a usage
    error."""
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
    return True


def _describe_match(m: Match) -> str:
    """The filters of a match in words: ``status ENQUEUED, queue emails, ...``."""
    from ..durations import format_duration

    return ", ".join(
        [f"status {'|'.join(m.statuses)}"]
        + ([f"queue {m.queue}"] if m.queue else [])
        + ([f"name {m.name}"] if m.name else [])
        + (
            [f"created more than {format_duration(m.older_than)} ago"]
            if m.older_than is not None
            else []
        )
    )


def _act_in_batches(
    action: str,
    n: int,
    batch: int,
    filters: dict[str, Any],
    as_json: bool,
    settings: Settings,
) -> None:
    """Cancel or resume the matching workflows, a progress line per batch on stderr."""

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
                from ..redaction import redact

                click.echo(f"pgflow: {redact(str(exc))}", err=True)
            continue
        if not as_json:
            click.echo(describe(workflow_id, results[workflow_id]))
    if as_json:
        click.echo(tables.to_json(results))
    if failed:
        sys.exit(1)


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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
