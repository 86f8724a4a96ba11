"""``pgflow migrate`` and ``pgflow reset``: create or upgrade pgflow's schema, or drop it."""

from __future__ import annotations

import sys
from typing import Any

import click

from .environment import build_settings, embedded_url, run_guarded
from .options import CONTEXT, common_options


@click.command(context_settings=CONTEXT)
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
    from ..db import migrate as migrations
    from ..db.pool import Database

    settings = build_settings(**given)

    def go() -> None:
        url = settings.database_url or embedded_url(settings)
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


@click.command(context_settings=CONTEXT)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common_options
def reset(yes: bool, **given: Any) -> None:
    """Drop pgflow's schema and everything in it (asks first without --yes)."""
    from ..db import migrate as migrations
    from ..db.errors import describe_target
    from ..db.pool import Database

    settings = build_settings(**given)
    url: str = run_guarded(lambda: settings.database_url or embedded_url(settings))
    target = describe_target(url)
    if not yes and not click.confirm(
        f"Drop schema {settings.schema!r} of database {target}, and every workflow in it?",
        default=False,
    ):
        sys.exit(1)
    run_guarded(lambda: migrations.drop_schema(Database(url, settings.schema)))
    click.echo(f"dropped schema {settings.schema!r} of database {target}")
