"""Migrations: applied once and recorded, safe when run concurrently, any schema, grants."""

from __future__ import annotations

import multiprocessing
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql

from pgflow.db.migrate import check_migrated, current_version, grant, latest_version, migrate
from pgflow.db.pool import Database
from pgflow.db.sql import Queries, migration_files
from pgflow.errors import ConfigurationError, SchemaNotMigrated
from pgflow.settings import Settings
from pgflow.testing.databases import with_dbname

ALL_VERSIONS = [version for version, _, _ in migration_files()]


@pytest.fixture
def fresh_db(fresh_database_url: str) -> Iterator[Database]:
    database = Database(fresh_database_url, "pgflow")
    yield database
    database.close()


def test_migration_files_are_numbered_from_one() -> None:
    assert list(range(1, len(ALL_VERSIONS) + 1)) == ALL_VERSIONS
    assert latest_version() == ALL_VERSIONS[-1]


def test_migrate_applies_every_file_and_records_it(fresh_db: Database) -> None:
    assert current_version(fresh_db) is None
    with pytest.raises(SchemaNotMigrated):
        check_migrated(fresh_db)

    assert migrate(fresh_db) == ALL_VERSIONS

    recorded = [row["version"] for row in fresh_db.fetchall("applied_migrations")]
    assert recorded == ALL_VERSIONS
    assert current_version(fresh_db) == latest_version()
    check_migrated(fresh_db)


def test_second_migrate_applies_nothing(fresh_db: Database) -> None:
    migrate(fresh_db)
    assert migrate(fresh_db) == []
    recorded = [row["version"] for row in fresh_db.fetchall("applied_migrations")]
    assert recorded == ALL_VERSIONS


def test_cloned_test_database_is_migrated(db: Database) -> None:
    check_migrated(db)
    assert migrate(db) == []


def _migrate_in_child(url: str, barrier: Any, results: Any) -> None:
    database = Database(url, "pgflow")
    barrier.wait(timeout=60)
    try:
        results.put(("ok", migrate(database)))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc)))
    finally:
        database.close()


@pytest.mark.slow
def test_two_processes_migrating_at_once_both_succeed(fresh_database_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_migrate_in_child, args=(fresh_database_url, barrier, results))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0

    assert [kind for kind, _ in outcomes] == ["ok", "ok"], outcomes
    applied = sorted(v for _, versions in outcomes for v in versions)
    assert applied == ALL_VERSIONS  # each migration applied by exactly one of them
    database = Database(fresh_database_url, "pgflow")
    try:
        recorded = [row["version"] for row in database.fetchall("applied_migrations")]
    finally:
        database.close()
    assert recorded == ALL_VERSIONS


def test_custom_schema_name(fresh_database_url: str) -> None:
    other = Database(fresh_database_url, "other_schema")
    default = Database(fresh_database_url, "pgflow")
    try:
        assert migrate(other) == ALL_VERSIONS
        check_migrated(other)
        assert current_version(default) is None  # nothing landed in the default schema
    finally:
        other.close()
        default.close()


HOSTILE = 'x"; drop'


def test_hostile_schema_name_is_refused_before_connecting() -> None:
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        Settings.from_env({}, schema=HOSTILE)
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        Queries(HOSTILE)
    # Nothing listens on port 1: a connection attempt would fail differently.
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        Database("postgresql://postgres@127.0.0.1:1/postgres", HOSTILE)


@pytest.fixture
def runtime_role(pg_server_url: str, database_url: str) -> Iterator[str]:
    """A fresh LOGIN role with no privileges of its own; dropped after the test."""
    role = f"pgflow_rt_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield role
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(with_dbname(pg_server_url, str(dbname)), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _as_role(url: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(url, user=role)


def test_grant_gives_dml_and_nothing_more(db: Database, runtime_role: str) -> None:
    grant(db, runtime_role)
    table = sql.Identifier("pgflow", "workflow_status")
    with psycopg.connect(_as_role(db.url, runtime_role), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (workflow_id, name, status, inputs) "
                "VALUES ('wf-1', 'checkout', 'ENQUEUED', '[]')"
            ).format(table)
        )
        row = conn.execute(sql.SQL("SELECT status FROM {}").format(table)).fetchone()
        assert row == ("ENQUEUED",)
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute(
                sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier("pgflow", "intruder"))
            )
