"""Test databases on a real PostgreSQL server, one fresh database per test, made by pgflow's
own :class:`pgflow.testing.DatabaseServer`; ``make_app``, Apps on the test's database; and
``workers``, ``pgflow worker`` processes on it (tests/processes.py).

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
from pathlib import Path

import pytest

from pgflow.db.pool import Database
from pgflow.testing import DatabaseServer
from tests.apps import MakeApp, app_maker
from tests.processes import StartWorker, started_workers


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


@pytest.fixture
def make_app(database_url: str) -> Iterator[MakeApp]:
    """``make_app(name="test", **kwargs)``: an App on the test's database (keyword arguments
    as ``pgflow.App`` takes them); every one is shut down after the test, newest first."""
    with app_maker(database_url) as make:
        yield make


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    """``workers(*args, app=..., env=..., url=...)`` starts a ``pgflow worker`` (of
    tests.worker_app unless ``app`` says otherwise) on the test's database; every process group
    is killed at teardown."""
    with started_workers(database_url, tmp_path) as start:
        yield start
