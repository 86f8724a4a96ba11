"""Named SQL statements loaded from ``sql/`` and rendered for one schema.

Every statement pgflow runs lives in ``sql/queries/*.sql`` under a ``-- name: NAME`` line. The
only thing substituted into the text is the schema, as a quoted identifier through
``psycopg.sql.Identifier``; every value is a query parameter.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

from psycopg import sql

from ..errors import ConfigurationError
from ..settings import validate_schema

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
# A statement that reads much of a table (a count, a report) says so with this line: it runs
# with sequential scans allowed, which pgflow's sessions otherwise turn off (db/sessions.py).
_SCANS_LINE = re.compile(r"^--\s*plan:\s*scans\s*$", re.MULTILINE)
# Identifier places other than {schema} ({role}, {channel}, {database}, ...) are filled per call.
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def sql_root() -> Path:
    """The folder holding ``migrations/`` and ``queries/``: inside the installed package, or the
    source tree's top-level ``sql/`` when running from a checkout."""
    packaged = Path(str(resources.files("pgflow"))) / "sql"
    if (packaged / "queries").is_dir():
        return packaged
    source = Path(__file__).resolve().parents[2] / "sql"
    if (source / "queries").is_dir():
        return source
    raise ConfigurationError(
        "pgflow's SQL files are missing from the installation; reinstall pgflow"
    )


def parse_named(text: str, origin: str) -> dict[str, str]:
    """Split a file into ``{name: statement}`` at its ``-- name:`` lines."""
    marks = list(_NAME_LINE.finditer(text))
    out: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[mark.end() : end].strip()
        name = mark.group(1)
        if name in out:
            raise ConfigurationError(f"query {name!r} is defined twice ({origin})")
        out[name] = body.rstrip(";").strip()
    return out


@functools.cache
def _raw_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted((sql_root() / "queries").glob("*.sql")):
        for name, body in parse_named(path.read_text(encoding="utf-8"), path.name).items():
            if name in queries:
                raise ConfigurationError(f"query {name!r} is defined twice ({path.name})")
            queries[name] = body
    return queries


def render(text: str, schema: str, **identifiers: str) -> str:
    """Put quoted identifiers (the schema, and any others named) into a statement's places."""
    names = {key: sql.Identifier(value) for key, value in identifiers.items()}
    composed = sql.SQL(text).format(schema=sql.Identifier(schema), **names)
    return composed.as_string(None)


class Queries:
    """All named statements rendered for one schema; look one up with ``queries["name"]``."""

    def __init__(self, schema: str) -> None:
        self.schema = validate_schema(schema)
        self._rendered = {
            name: render(body, schema)
            for name, body in _raw_queries().items()
            if set(_PLACEHOLDER.findall(body)) <= {"schema"}
        }

    def __getitem__(self, name: str) -> str:
        try:
            return self._rendered[name]
        except KeyError:
            raise ConfigurationError(f"no SQL statement named {name!r} in sql/queries") from None

    @functools.cached_property
    def scanning(self) -> frozenset[str]:
        """Names of the statements marked ``-- plan: scans``."""
        return frozenset(name for name, body in _raw_queries().items() if _SCANS_LINE.search(body))

    def with_identifiers(self, name: str, **identifiers: str) -> str:
        """A statement with extra identifier places filled (e.g. ``{role}`` of a GRANT)."""
        return render(_raw_queries()[name], self.schema, **identifiers)

    def names(self) -> list[str]:
        return sorted(self._rendered)


def migration_files() -> list[tuple[int, str, str]]:
    """``(version, name, text)`` of every migration, in order."""
    found = []
    for path in sorted((sql_root() / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version = int(path.name[:4])
        found.append((version, path.stem[5:], path.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError("two migrations share a version number")
    return found
