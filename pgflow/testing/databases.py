"""Fresh, migrated test databases on a real PostgreSQL server.

The server: the ``url`` given, else ``PGFLOW_TEST_DATABASE_URL``, else PostgreSQL at
127.0.0.1:5432 (user postgres) when it answers within a second, else an embedded server under
``$PGFLOW_TEST_HOME`` (default: a folder in the temp dir), started once and left running.
The URL must be an admin one: it creates and drops databases. Test databases are named
``pgflow_testing_<pid>_...``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from ..db.migrate import migrate
from ..db.pool import Database
from ..executor import pid_alive

if TYPE_CHECKING:
    from ..app import App

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "pgflow_testing_"


def server_url(url: str | None = None) -> str:
    """The admin URL of the server test databases are made on (see the module's doc)."""
    chosen = url or os.environ.get("PGFLOW_TEST_DATABASE_URL")
    if chosen:
        return chosen
    if os.environ.get("PGFLOW_TEST_EMBEDDED") != "1" and _answers(LOCAL_SERVER):
        return LOCAL_SERVER
    from ..db.embedded import start_embedded

    home = os.environ.get("PGFLOW_TEST_HOME") or str(
        Path(tempfile.gettempdir()) / "pgflow-test-embedded"
    )
    return start_embedded(home)


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.Error:
        return False


def with_dbname(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    if "://" in url:
        return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def _drop_leftovers(admin: Database, conn: psycopg.Connection[Any]) -> None:
    """Drop databases of test runs on this machine that died before dropping theirs."""
    for row in conn.execute(admin.queries["testing_databases"]).fetchall():
        name = row["datname"]
        pid = name[len(PREFIX) :].split("_")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            conn.execute(admin.queries.with_identifiers("testing_drop_database", database=name))


def _on_this_machine(url: str) -> bool:
    host = str(psycopg.conninfo.conninfo_to_dict(url).get("host") or "")
    return host in ("", "localhost", "::1") or host.startswith(("/", "127."))


class DatabaseServer:
    """A server to make test databases on (see the module's doc for which); each database is
    fresh and dropped after use. Made on this machine's server, it first drops what test runs
    that died left behind (their names carry the pid).

    A test suite migrates one template per run and copies it for each test, which is much
    faster than migrating every database:

    >>> server = DatabaseServer()
    >>> with server.template() as template, server.database(template=template) as url:
    ...     app = pgflow.App("shop", database_url=url)
    """

    def __init__(self, url: str | None = None, schema: str = "pgflow") -> None:
        self.url = server_url(url)
        self.schema = schema
        self._admin = Database(self.url, schema)
        if _on_this_machine(self.url):
            with self._admin.connect() as conn:
                _drop_leftovers(self._admin, conn)

    def close(self) -> None:
        self._admin.close()

    def create(self, name: str, template: str = "template0") -> str:
        """Create database ``name`` as a copy of ``template``; its URL."""
        statement = self._admin.queries.with_identifiers(
            "testing_create_database", database=name, template=template
        )
        with self._admin.connect() as conn:
            conn.execute(statement)
        return with_dbname(self.url, name)

    def drop(self, name: str) -> None:
        """Drop database ``name`` if it exists, ending any session left connected to it."""
        with self._admin.connect() as conn:
            conn.execute(
                self._admin.queries.with_identifiers("testing_drop_database", database=name)
            )

    @contextlib.contextmanager
    def database(self, *, template: str | None = None, migrated: bool = True) -> Iterator[str]:
        """A fresh database; yields its URL and drops it after. A copy of ``template`` (see
        :meth:`template`) when given; else migrated, or empty with ``migrated=False``."""
        name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
        url = self.create(name, template or "template0")
        try:
            if migrated and template is None:
                self._migrate(url)
            yield url
        finally:
            self.drop(name)

    @contextlib.contextmanager
    def template(self) -> Iterator[str]:
        """A migrated database to copy test databases from (``database(template=...)``);
        yields its name and drops it after. Keep no session open on it while copying."""
        name = f"{PREFIX}{os.getpid()}_template"
        self.drop(name)  # left by a killed run whose pid this process now has
        try:
            self._migrate(self.create(name))
            yield name
        finally:
            self.drop(name)

    def _migrate(self, url: str) -> None:
        db = Database(url, self.schema)
        try:
            migrate(db)
        finally:
            db.close()


@contextlib.contextmanager
def database(url: str | None = None, schema: str = "pgflow") -> Iterator[str]:
    """A fresh database with pgflow's schema migrated; yields its URL and drops it after.

    >>> with pgflow.testing.database() as url:
    ...     app = pgflow.App("shop", database_url=url)
    """
    server = DatabaseServer(url, schema)
    try:
        with server.database() as db_url:
            yield db_url
    finally:
        server.close()


@contextlib.contextmanager
def use_database(app: App, url: str) -> Iterator[App]:
    """Point ``app`` (not connected yet, or shut down) at ``url`` for the block; afterwards its
    executor is deregistered, its LISTEN session stopped, its pool closed, and its settings
    restored.

    >>> with database() as url, use_database(app, url):
    ...     emails.enqueue(send_email, "a@example.com")
    """
    saved = app.settings
    app.close_db()
    app.settings = saved.replace(database_url=url)
    try:
        yield app
    finally:
        executor = app.use_executor(None)
        if executor is not None:
            executor.stop(deregister=True)
        app.runtime.close_notifications()
        app.close_db()
        app.settings = saved


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for pgflow.testing
    pass
else:

    @pytest.fixture
    def pgflow_database() -> Iterator[str]:
        """pytest fixture: the URL of a fresh migrated database, dropped after the test.
        Import it into your ``conftest.py``: ``from pgflow.testing import pgflow_database``."""
        with database() as url:
            yield url
