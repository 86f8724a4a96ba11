"""``pgflow embedded status|stop``: the embedded PostgreSQL server, without starting it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from .. import tables
from ..settings import Settings
from .environment import run_guarded
from .options import CONTEXT, app_option, json_option


@click.group(context_settings=CONTEXT)
def embedded() -> None:
    """The embedded PostgreSQL server pgflow starts when no database URL is set (its data in
    PGFLOW_HOME, default ./.pgflow, found from subfolders too)."""


def embedded_home_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--home`` and ``-A``: where the embedded server keeps its data."""
    fn = click.option(
        "--home",
        envvar="PGFLOW_HOME",
        show_envvar=True,
        default=None,
        help="Folder of the embedded server's data [default: .pgflow].",
    )(fn)
    return app_option(fn)


def _embedded_home(home: str | None, app_spec: str | None) -> Any:
    from ..db.embedded import locate_home

    if home is None and app_spec:
        from ..loader import load_app

        home = run_guarded(lambda: load_app(app_spec)).settings.home
    return locate_home(home or Settings().home)


@embedded.command(name="status", context_settings=CONTEXT)
@embedded_home_option
@json_option
def embedded_status_command(home: str | None, app_spec: str | None, as_json: bool) -> None:
    """Whether the embedded server runs, its pid, data folder and URL. Exit code 0 when it
    runs, 3 when it does not (starts nothing)."""
    from ..db.embedded import embedded_status

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
    from ..db.embedded import stop_embedded

    path = _embedded_home(home, app_spec)
    if run_guarded(lambda: stop_embedded(path)):
        click.echo(f"stopped the embedded server under {path}")
    else:
        click.echo(f"no embedded server runs under {path}")
