"""``pgflow dashboard``: serve the web dashboard (an optional extra)."""

from __future__ import annotations

from typing import Any

import click

from .environment import operator_settings, operator_url, run_guarded
from .options import CONTEXT, app_option, common_options


@click.command(context_settings=CONTEXT)
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

        from ..dashboard import create_app
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
