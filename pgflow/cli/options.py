"""The options the commands share: settings declared by ``Settings`` fields, the connection
options, ``-A``, ``--json``, durations and statuses, and which flags were actually typed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ..errors import ConfigurationError
from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def setting_option(name: str, *, hidden_default: bool = False) -> Callable[[F], F]:
    """A click option declared by the Settings field ``name`` (its flag, variable and help).

    The option has no click default: a flag not given is None, and build_settings keeps only
    flags given on the command line, so variables and values in code stand (Settings.resolve).
    """
    import dataclasses

    f = next(f for f in dataclasses.fields(Settings) if f.name == name)
    decls = f.metadata["flag"].split("/")
    kind = str(f.type)
    help_text = f.metadata["doc"]
    if not hidden_default and f.default not in (None, (), False, 0, ""):
        help_text += (
            f" [default: {f.default:g}]"
            if isinstance(f.default, float)
            else f" [default: {f.default}]"
        )
    options: dict[str, Any] = {
        "default": None,
        "envvar": f.metadata["env"],
        "show_envvar": True,
        "help": help_text,
    }
    if kind.startswith("bool"):
        options["is_flag"] = True
    elif kind.startswith("int"):
        options["type"] = int
    elif kind.startswith("float"):
        options["type"] = float
    return click.option(*decls, name, **options)


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The database and logging options every command takes."""
    fn = setting_option("log_level")(fn)
    fn = click.option(
        "--log-format",
        envvar="PGFLOW_LOG_FORMAT",
        show_envvar=True,
        type=click.Choice(["auto", "console", "json"]),
        default=None,
        help="Log lines for people (console) or machines (json).",
    )(fn)
    fn = click.option(
        "--schema",
        envvar="PGFLOW_SCHEMA",
        show_envvar=True,
        default=None,
        help="Schema of pgflow's tables [default: pgflow].",
    )(fn)
    fn = click.option(
        "--database-url",
        envvar="PGFLOW_DATABASE_URL",
        show_envvar=True,
        default=None,
        help="PostgreSQL URL; unset: the embedded server under PGFLOW_HOME.",
    )(fn)
    return fn


def app_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-A``: an operator command uses the App's database URL, schema and serializer."""
    return click.option(
        "-A",
        "--app",
        "app_spec",
        default=None,
        envvar="PGFLOW_APP",
        show_envvar=True,
        help="Task module holding the App (pkg.module[:attribute]): use its database URL, "
        "schema and serializer.",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: JSON for scripts instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
    )(fn)


def parse_duration_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """An option's duration: 90s, 15m, 12h, 30d, or seconds (pgflow.durations)."""
    if value is None:
        return None
    from ..durations import parse_duration

    try:
        return parse_duration(value, what=param.opts[0])
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def flags_given(given: dict[str, Any]) -> dict[str, Any]:
    """The options actually typed on the command line (click also reads their variables;
    Settings reads those itself, at their own level of precedence)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return given
    return {
        k: v for k, v in given.items() if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE
    }


def parse_statuses(values: tuple[str, ...]) -> list[str] | None:
    """The statuses of a repeated or comma-separated --status, upper-cased (None: none)."""
    found = [v.strip().upper() for value in values for v in value.split(",") if v.strip()]
    return found or None
