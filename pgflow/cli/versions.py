"""``pgflow versions`` and ``pgflow workflows retarget``: application versions, and moving
stranded work from one version to another."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import tables
from .environment import build_settings, with_client
from .options import CONTEXT, common_options, json_option, parse_statuses


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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
    from ..versions import WAITING

    settings = build_settings(**given)
    statuses = tuple(parse_statuses(status) or WAITING)
    n = with_client(settings, lambda c: c.count_retarget(from_version, statuses))
    what = f"{n} workflow(s) of version {from_version} ({', '.join(statuses)})"
    if dry_run or n == 0:
        click.echo(f"{what} would move to version {to_version}" if n else f"no {what[2:]}")
        return
    if not yes and not click.confirm(f"Move {what} to version {to_version}?", default=False):
        sys.exit(1)
    moved = with_client(settings, lambda c: c.retarget(from_version, to_version, statuses))
    click.echo(f"moved {moved} workflow(s) from version {from_version} to {to_version}")
