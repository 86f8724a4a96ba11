"""What an operator command runs against: its settings, its database and a Client on it; a
pgflow error becomes one line on stderr and exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import ConfigurationError, PgflowError
from ..settings import Settings
from .options import flags_given

if TYPE_CHECKING:
    from ..client import Client

T = TypeVar("T")


def _fail(exc: BaseException) -> None:
    from ..redaction import redact

    click.echo(f"pgflow: {redact(str(exc))}", err=True)
    sys.exit(1)


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a pgflow error becomes one line on stderr and exit code 1."""
    try:
        return fn()
    except PgflowError as exc:
        _fail(exc)


def build_settings(**given: Any) -> Settings:
    """Settings from the flags given and the ``PGFLOW_*`` variables; logging set up by them."""
    settings = run_guarded(lambda: Settings.resolve(flags=flags_given(given)))
    from ..logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    return settings  # type: ignore[no-any-return]


def embedded_url(settings: Settings) -> str:
    """The URL of the project's embedded server, which is started (or joined)."""
    from ..db.embedded import locate_home, start_embedded

    return start_embedded(locate_home(settings.home))


def operator_settings(app_spec: str | None, given: dict[str, Any]) -> Settings:
    """The settings of an operator command: flags and ``PGFLOW_*`` variables; with ``-A``, the
    app's own settings (its URL and schema set in code), under the flags actually given."""
    settings = build_settings(**given)
    if not app_spec:
        return settings
    from click.core import ParameterSource

    from ..loader import load_app

    app = run_guarded(lambda: load_app(app_spec))
    ctx = click.get_current_context()
    flags = {
        k: given[k]
        for k in ("database_url", "schema")
        if given.get(k) is not None and ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE
    }
    return run_guarded(lambda: app.settings.replace(**flags))  # type: ignore[no-any-return]


def operator_url(settings: Settings, *, may_start: bool) -> str:
    """The database an operator command talks to: the URL configured, else the project's
    embedded server if it runs. Only a command that writes new work (``enqueue``) starts one;
    the others say where to point instead."""
    if settings.database_url:
        return settings.database_url
    from ..db.embedded import embedded_status, locate_home

    home = locate_home(settings.home)
    found = embedded_status(home)
    if found.url is not None:
        return found.url
    if may_start:
        return embedded_url(settings)
    raise ConfigurationError(
        f"no database found: no URL is set and no embedded server runs under {home}; point "
        "at your database with --database-url URL or PGFLOW_DATABASE_URL, or with -A "
        "your.module to use the URL your App sets (pgflow starts the embedded server only "
        "for `pgflow worker`, `pgflow migrate` and `pgflow enqueue`)"
    )


def with_client(settings: Settings, fn: Callable[[Client], T], *, may_start: bool = False) -> T:
    """Call ``fn`` with a Client on the configured database (see :func:`operator_url`), closed
    afterwards; a pgflow error becomes one line and exit code 1."""
    from ..client import Client

    def go() -> T:
        from ..db.pool import Database

        url = operator_url(settings, may_start=may_start)
        # A command is interactive: a server that is down or full says so at once, with
        # its reason, where a library Client would wait for it.
        Database(url, settings.schema, application_name="pgflow:cli").connect().close()
        with Client(settings=settings.replace(database_url=url)) as client:
            return fn(client)

    return run_guarded(go)  # type: ignore[no-any-return]
