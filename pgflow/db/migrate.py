"""Apply ``sql/migrations`` in order, once, under a schema-namespaced advisory lock."""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import SchemaNotMigrated
from .errors import translate
from .pool import Database
from .sql import migration_files, render


def _lock_name(schema: str) -> str:
    return f"pgflow:{schema}:migrate"


def latest_version() -> int:
    files = migration_files()
    return files[-1][0] if files else 0


def migrate(db: Database) -> list[int]:
    """Bring the schema up to date; return the versions applied now (empty when current).

    Safe when several processes migrate at once: the first holds the lock and applies, the
    others wait and then find nothing left to do.
    """
    q = db.queries
    applied_now: list[int] = []
    try:
        with db.connect() as conn:
            conn.execute(q["migrate_lock"], {"lock_name": _lock_name(db.schema)})
            try:
                conn.execute(q["create_schema"])
                conn.execute(q["create_migrations_table"])
                done = {r["version"] for r in conn.execute(q["applied_migrations"]).fetchall()}
                for version, name, text in migration_files():
                    if version in done:
                        continue
                    with conn.transaction():
                        conn.execute(render(text, db.schema))
                        conn.execute(q["record_migration"], {"version": version, "name": name})
                    applied_now.append(version)
            finally:
                conn.execute(q["migrate_unlock"], {"lock_name": _lock_name(db.schema)})
    except psycopg.Error as exc:
        raise translate(exc, db.target) from None
    return applied_now


def current_version(db: Database) -> int | None:
    """The schema's migration version, or None when pgflow's tables do not exist."""
    present = db.fetchone("migrations_table_exists", {"schema": db.schema})
    if not present or not present["present"]:
        return None
    row: dict[str, Any] | None = db.fetchone("schema_version")
    if row is None or row["version"] is None:
        return None
    return int(row["version"])


def check_migrated(db: Database) -> None:
    """Raise :class:`SchemaNotMigrated` unless the schema is at this version's migration."""
    version = current_version(db)
    if version is None or version < latest_version():
        raise SchemaNotMigrated(
            f"pgflow's schema {db.schema!r} at {db.target} is "
            f"{'missing' if version is None else f'at version {version}'}; "
            f"run `pgflow migrate` as the owner"
        )


def grant(db: Database, role: str) -> None:
    """Grant ``role`` the DML privileges pgflow's runtime needs on this schema (nothing else)."""
    q = db.queries
    # Each statement named literally: tests/test_named_queries.py finds every use by its name.
    statements = [
        q.with_identifiers("grant_schema_usage", role=role),
        q.with_identifiers("grant_table_dml", role=role),
        q.with_identifiers("grant_sequences", role=role),
    ]
    try:
        with db.connect() as conn:
            for stmt in statements:
                conn.execute(stmt)
    except psycopg.Error as exc:
        raise translate(exc, db.target) from None


def drop_schema(db: Database) -> None:
    """Drop pgflow's schema and everything in it (``pgflow reset``)."""
    try:
        with db.connect() as conn:
            conn.execute(db.queries["drop_schema"])
    except psycopg.Error as exc:
        raise translate(exc, db.target) from None
