"""Test databases on a real PostgreSQL server, one fresh database per test.

The server, chosen once per run:

1. ``PGFLOW_TEST_DATABASE_URL`` when set (an admin URL: it may create databases and roles);
2. else the server at 127.0.0.1:5432 (user postgres) when it answers within a second, unless
   ``PGFLOW_TEST_EMBEDDED=1``;
3. else an embedded server under ``$PGFLOW_TEST_HOME`` (default: a folder in the temp dir),
   started on first use and left running for the next run.

A template database ``pgflow_tpl_<pid>`` is migrated once per run; each test gets a clone
``pgflow_t_<pid>_<random>`` (``CREATE DATABASE ... TEMPLATE``), dropped after the test. Names
carry the run's pid, so runs from several checkouts can share one server, and a run on a server
of this machine drops what killed runs left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from pgflow.db.migrate import migrate
from pgflow.db.pool import Database

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
_OURS = re.compile(r"^pgflow_(?:tpl|t)_(\d+)(?:_[0-9a-f]+)?$")


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.Error:
        return False


def _choose_server() -> str:
    url = os.environ.get("PGFLOW_TEST_DATABASE_URL")
    if url:
        return url
    if os.environ.get("PGFLOW_TEST_EMBEDDED") != "1" and _answers(LOCAL_SERVER):
        return LOCAL_SERVER
    from pgflow.db.embedded import start_embedded

    home = os.environ.get("PGFLOW_TEST_HOME") or str(
        Path(tempfile.gettempdir()) / "pgflow-test-embedded"
    )
    return start_embedded(home)


def with_dbname(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    if "://" in url:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


@contextlib.contextmanager
def admin(url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection (CREATE and DROP DATABASE refuse to run in a transaction)."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def create_database(server_url: str, name: str, template: str = "template0") -> str:
    with admin(server_url) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return with_dbname(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop a test database, ending any session a test left connected to it."""
    with admin(server_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))


def _on_this_machine(url: str) -> bool:
    host = str(psycopg.conninfo.conninfo_to_dict(url).get("host") or "")
    return host in ("", "localhost", "::1") or host.startswith(("/", "127."))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_leftovers(server_url: str) -> None:
    """Drop test databases of runs that died (their pid is gone) on this machine's server."""
    if not _on_this_machine(server_url):
        return
    with admin(server_url) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    for name in names:
        match = _OURS.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            drop_database(server_url, name)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """Admin URL of the run's server (database ``postgres``)."""
    url = _choose_server()
    drop_leftovers(url)
    return url


def _test_database_name() -> str:
    return f"pgflow_t_{os.getpid()}_{secrets.token_hex(6)}"


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """Name of this run's migrated template database."""
    name = f"pgflow_tpl_{os.getpid()}"
    drop_database(pg_server_url, name)  # left by a killed run whose pid was reused
    url = create_database(pg_server_url, name)
    db = Database(url, "pgflow")
    try:
        migrate(db)
    except BaseException:
        db.close()
        drop_database(pg_server_url, name)
        raise
    db.close()
    yield name
    drop_database(pg_server_url, name)


@pytest.fixture
def database_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    """URL of a fresh database with pgflow's schema migrated, dropped after the test."""
    name = _test_database_name()
    url = create_database(pg_server_url, name, template=template_database)
    yield url
    drop_database(pg_server_url, name)


@pytest.fixture
def fresh_database_url(pg_server_url: str) -> Iterator[str]:
    """URL of an empty, unmigrated database, dropped after the test."""
    name = _test_database_name()
    url = create_database(pg_server_url, name)
    yield url
    drop_database(pg_server_url, name)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A :class:`Database` on the test's migrated database, schema ``pgflow``; closed after."""
    database = Database(database_url, "pgflow")
    yield database
    database.close()
