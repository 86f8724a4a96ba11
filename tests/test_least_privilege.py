"""pgflow's runtime needs DML only: a LOGIN role granted by ``grant`` (``pgflow migrate --grant
ROLE``) runs workflows and enqueues, cannot change the schema, and is told to run
``pgflow migrate`` where the schema is missing."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql

import pgflow
from pgflow.db.migrate import grant
from pgflow.db.pool import Database


class Role:
    """A LOGIN role with no DDL rights, and the databases where it was granted something."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"pgflow_lp_{secrets.token_hex(5)}"
        self.password = secrets.token_hex(8)
        self.granted_in: list[str] = []

    def url(self, database_url: str) -> str:
        """The same server and database, connecting as this role."""
        return psycopg.conninfo.make_conninfo(database_url, user=self.name, password=self.password)


@pytest.fixture
def role(pg_server_url: str) -> Iterator[Role]:
    r = Role(pg_server_url)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(r.name), sql.Literal(r.password)
            )
        )
    yield r
    for url in r.granted_in:  # test databases are dropped after this fixture's teardown
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (r.name,),
            )
            conn.execute(
                sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER; DROP OWNED BY {}").format(
                    sql.Identifier(r.name), sql.Identifier(r.name)
                )
            )
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (r.name,)
        )
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(r.name)))


def grant_runtime(database_url: str, role: Role) -> None:
    """As the owner: pgflow's grant, plus a user table the role may write."""
    role.granted_in.append(database_url)
    owner_db = Database(database_url, "pgflow")
    try:
        grant(owner_db, role.name)
    finally:
        owner_db.close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.tickets (id serial PRIMARY KEY, holder text)")
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT ON public.tickets TO {}; "
                "GRANT USAGE ON SEQUENCE public.tickets_id_seq TO {}"
            ).format(sql.Identifier(role.name), sql.Identifier(role.name))
        )


def test_runtime_role_runs_workflows_and_enqueues(database_url: str, role: Role) -> None:
    grant_runtime(database_url, role)
    app = pgflow.App("lp", database_url=role.url(database_url))
    try:
        q = app.queue("mail")

        @app.step(retries=1, interval=0.0)
        def price(n: int) -> int:
            return n * 250

        @app.transaction()
        def book(holder: str) -> int:
            cur = pgflow.db()
            cur.execute("INSERT INTO public.tickets (holder) VALUES (%s) RETURNING id", (holder,))
            row = cur.fetchone()
            assert row is not None
            return int(row["id"] if isinstance(row, dict) else row[0])

        @app.workflow()
        def notify(holder: str) -> str:
            return f"mail to {holder}"

        @app.workflow()
        def buy(holder: str, n: int) -> dict[str, Any]:
            ticket = book(holder)
            mail = q.options(dedup_id=f"mail-{holder}").enqueue(notify, holder)
            return {"ticket": ticket, "cents": price(n), "mail": mail.workflow_id}

        result = app.options(workflow_id="buy-1").call(buy, "ada", 3)
        assert result == {"ticket": 1, "cents": 750, "mail": "buy-1-2"}
        assert [(s.output, s.child_workflow_id) for s in app.steps("buy-1")] == [
            (1, None),
            (None, "buy-1-2"),
            (750, None),
        ]
        mail = app.retrieve("buy-1-2").status()
        assert mail.status is pgflow.Status.ENQUEUED and mail.queue_name == "mail"
        with pytest.raises(pgflow.Deduplicated):
            q.options(dedup_id="mail-ada").enqueue(notify, "ada")
        # Recovery (executor rows, adoption) works under the role too.
        app.launch()
        assert app.recover_now() == 0
        with psycopg.connect(role.url(database_url), autocommit=True) as conn:
            current = conn.execute("SELECT current_user").fetchone()
            assert current is not None and current[0] == role.name
            rows = conn.execute(
                "SELECT DISTINCT executor_id FROM pgflow.workflow_status "
                "WHERE workflow_id = 'buy-1'"
            ).fetchall()
            assert rows == [(app.executor.executor_id,)]
    finally:
        app.shutdown(timeout=5)


def test_runtime_role_cannot_change_the_schema(database_url: str, role: Role) -> None:
    grant_runtime(database_url, role)
    with psycopg.connect(role.url(database_url), autocommit=True) as conn:
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("CREATE TABLE pgflow.intruder (x int)")
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("DROP TABLE pgflow.workflow_status")
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("ALTER TABLE pgflow.operation_outputs ADD COLUMN x int")
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("CREATE SCHEMA intruder")
        # DML is what it has.
        assert conn.execute("SELECT count(*) FROM pgflow.workflow_status").fetchone() == (0,)
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('pgflow.intruder')").fetchone()
    assert found == (None,)


def test_role_without_grants_is_told_how_to_fix_it(database_url: str, role: Role) -> None:
    role.granted_in.append(database_url)
    app = pgflow.App("lp", database_url=role.url(database_url))
    try:

        @app.workflow()
        def flow() -> int:
            return 1

        with pytest.raises(pgflow.PermissionDenied, match=r"pgflow migrate --grant"):
            flow()
    finally:
        app.shutdown(timeout=5)


def test_unmigrated_schema_says_run_pgflow_migrate(fresh_database_url: str, role: Role) -> None:
    role.granted_in.append(fresh_database_url)
    app = pgflow.App("lp", database_url=role.url(fresh_database_url))
    try:

        @app.workflow()
        def flow() -> int:
            return 1

        with pytest.raises(pgflow.SchemaNotMigrated, match=r"run `pgflow migrate`") as info:
            flow()
        assert "pgflow" in str(info.value)
        with pytest.raises(pgflow.SchemaNotMigrated, match=r"run `pgflow migrate`"):
            app.list_workflows()
    finally:
        app.shutdown(timeout=5)
    # The role could not create the schema while trying.
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgflow'")
        assert found.fetchone() == (0,)
