"""Test databases on a real PostgreSQL server, one fresh database per test, made by pgflow's
own :class:`pgflow.testing.DatabaseServer`.

The server, chosen once per run (:func:`pgflow.testing.server_url`):

1. ``PGFLOW_TEST_DATABASE_URL`` when set (an admin URL: it may create databases and roles);
2. else the server at 127.0.0.1:5432 (user postgres) when it answers within a second, unless
   ``PGFLOW_TEST_EMBEDDED=1``;
3. else an embedded server under ``$PGFLOW_TEST_HOME`` (default: a folder in the temp dir),
   started on first use and left running for the next run.

A template database is migrated once per run; each test gets a copy (``CREATE DATABASE ...
TEMPLATE``), dropped after the test. Names carry the run's pid, so runs from several checkouts
can share one server, and a run on a server of this machine drops what killed runs left behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgflow.db.pool import Database
from pgflow.testing import DatabaseServer


@pytest.fixture(scope="session")
def database_server() -> Iterator[DatabaseServer]:
    """The run's server, where each test's databases are made."""
    server = DatabaseServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_server_url(database_server: DatabaseServer) -> str:
    """Admin URL of the run's server (database ``postgres``)."""
    return database_server.url


@pytest.fixture(scope="session")
def template_database(database_server: DatabaseServer) -> Iterator[str]:
    """Name of this run's migrated template database."""
    with database_server.template() as name:
        yield name


@pytest.fixture
def database_url(database_server: DatabaseServer, template_database: str) -> Iterator[str]:
    """URL of a fresh database with pgflow's schema migrated, dropped after the test."""
    with database_server.database(template=template_database) as url:
        yield url


@pytest.fixture
def fresh_database_url(database_server: DatabaseServer) -> Iterator[str]:
    """URL of an empty, unmigrated database, dropped after the test."""
    with database_server.database(migrated=False) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A :class:`Database` on the test's migrated database, schema ``pgflow``; closed after."""
    database = Database(database_url, "pgflow")
    yield database
    database.close()
