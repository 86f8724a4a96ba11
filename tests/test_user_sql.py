"""The user's own SQL in ``@app.transaction`` bodies, on a real Postgres: its errors reach the
user's code as psycopg raised them (and are what gets recorded), transaction control inside the
body is refused before anything commits, and a lost connection is still pgflow's to retry."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql

import pgflow
from pgflow.user_sql import transaction_control
from tests.apps import MakeApp


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("usersql")


@pytest.fixture
def orders(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.orders (id serial PRIMARY KEY, ref text NOT NULL "
            "UNIQUE, note text)"
        )
        conn.execute("INSERT INTO public.orders (ref) VALUES ('taken')")
    return database_url


def rows(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT ref FROM public.orders ORDER BY id")]


def recorded(url: str, workflow_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The raw recorded error of a workflow and of its steps (JSON as stored)."""
    with psycopg.connect(url, autocommit=True) as conn:
        wf = conn.execute(
            "SELECT error FROM pgflow.workflow_status WHERE workflow_id = %s", (workflow_id,)
        ).fetchone()
        steps = conn.execute(
            "SELECT error FROM pgflow.operation_outputs WHERE workflow_id = %s ORDER BY step_id",
            (workflow_id,),
        ).fetchall()
    assert wf is not None
    return (json.loads(wf[0]) if wf[0] else {}), [json.loads(s[0]) for s in steps if s[0]]


def test_unique_violation_is_catchable_in_the_workflow(app: pgflow.App, orders: str) -> None:
    @app.transaction()
    def reserve(ref: str) -> None:
        pgflow.db().execute("INSERT INTO public.orders (ref) VALUES ('fresh')")
        pgflow.db().execute("INSERT INTO public.orders (ref) VALUES (%s)", (ref,))

    @app.workflow()
    def flow() -> str:
        try:
            reserve("taken")
        except pgerrors.UniqueViolation as exc:
            assert exc.diag.constraint_name == "orders_ref_key"
            return f"duplicate {exc.sqlstate}"
        return "inserted"

    assert app.options(workflow_id="dup").call(flow) == "duplicate 23505"
    assert rows(orders) == ["taken"]  # the whole body rolled back
    (step,) = app.steps("dup")
    assert isinstance(step.error, pgerrors.UniqueViolation)
    assert step.error.sqlstate == "23505"
    _, (step_error,) = recorded(orders, "dup")
    assert step_error["type"] == "UniqueViolation" and step_error["sqlstate"] == "23505"
    assert step_error["module"] == "psycopg.errors"
    # Replayed, the recorded error is raised as itself again.
    assert app.options(workflow_id="dup").call(flow) == "duplicate 23505"


def test_undefined_table_is_the_users_error_not_schema_not_migrated(
    app: pgflow.App, orders: str
) -> None:
    @app.transaction()
    def lookup() -> Any:
        return pgflow.db().execute("SELECT * FROM public.no_such_table").fetchall()

    @app.workflow()
    def flow() -> Any:
        return lookup()

    h = app.options(workflow_id="undef").start(flow)
    with pytest.raises(pgerrors.UndefinedTable, match="no_such_table") as caught:
        h.result(timeout=10)
    assert not isinstance(caught.value, pgflow.PgflowError)
    assert caught.value.sqlstate == "42P01"
    st = h.status()
    assert st.status is pgflow.Status.ERROR
    assert isinstance(st.error, pgerrors.UndefinedTable)
    wf_error, (step_error,) = recorded(orders, "undef")
    for error in (wf_error, step_error):
        assert error["type"] == "UndefinedTable" and error["sqlstate"] == "42P01"
        assert "no_such_table" in error["message"]

    # The same body outside a workflow: the user's error, as psycopg raised it.
    with pytest.raises(pgerrors.UndefinedTable):
        lookup()


def test_user_error_is_retried_by_the_step_policy_as_itself(app: pgflow.App, orders: str) -> None:
    calls = []

    @app.transaction(retries=2, interval=0.0)
    def reserve() -> None:
        calls.append(1)
        pgflow.db().execute("INSERT INTO public.orders (ref) VALUES ('taken')")

    with pytest.raises(pgerrors.UniqueViolation):
        reserve()
    assert len(calls) == 3


@pytest.mark.parametrize(
    "statement",
    [
        "COMMIT",
        "commit work",
        "END",
        "ROLLBACK",
        "abort",
        "BEGIN",
        "START TRANSACTION",
        "PREPARE TRANSACTION 'pgflow-test'",
        "INSERT INTO public.orders (ref) VALUES ('second'); COMMIT",
        sql.SQL("COMMIT"),
        b"COMMIT",
    ],
)
def test_transaction_control_in_the_body_is_refused_and_nothing_commits(
    app: pgflow.App, orders: str, statement: Any
) -> None:
    @app.transaction()
    def reserve() -> str:
        pgflow.db().execute("INSERT INTO public.orders (ref) VALUES ('first')")
        pgflow.db().execute(statement)
        return "committed?"

    @app.workflow()
    def flow() -> str:
        return reserve()

    h = app.options(workflow_id="ctl").start(flow)
    with pytest.raises(pgflow.TransactionControlError, match="refused"):
        h.result(timeout=10)
    assert rows(orders) == ["taken"]
    (step,) = app.steps("ctl")
    assert isinstance(step.error, pgflow.TransactionControlError)
    assert step.output is None

    # Outside a workflow too.
    with pytest.raises(pgflow.TransactionControlError):
        reserve()
    assert rows(orders) == ["taken"]


def test_commit_through_the_raw_connection_fails_the_step(app: pgflow.App, orders: str) -> None:
    """Going around the guard (the cursor's connection) cannot be stopped before the server
    commits, but the step fails loudly and records no output."""

    @app.transaction()
    def sneaky() -> str:
        cur = pgflow.db()
        cur.execute("INSERT INTO public.orders (ref) VALUES ('sneaky')")
        cur.connection.execute("COMMIT")
        return "done"

    @app.workflow()
    def flow() -> str:
        return sneaky()

    h = app.options(workflow_id="sneaky").start(flow)
    with pytest.raises(pgflow.TransactionControlError, match="ended pgflow's transaction"):
        h.result(timeout=10)
    (step,) = app.steps("sneaky")
    assert step.output is None and isinstance(step.error, pgflow.TransactionControlError)


def test_savepoints_are_allowed_and_a_swallowed_error_is_explained(
    app: pgflow.App, orders: str
) -> None:
    @app.transaction()
    def careful() -> str:
        cur = pgflow.db()
        cur.execute("INSERT INTO public.orders (ref) VALUES ('kept')")
        try:
            with cur.connection.transaction():  # a savepoint
                cur.execute("INSERT INTO public.orders (ref) VALUES ('taken')")
        except pgerrors.UniqueViolation:
            pass
        cur.execute("SAVEPOINT mine")
        cur.execute("INSERT INTO public.orders (ref) VALUES ('undone')")
        cur.execute("ROLLBACK TO SAVEPOINT mine")
        cur.execute("RELEASE SAVEPOINT mine")
        return "ok"

    @app.transaction()
    def careless() -> str:
        cur = pgflow.db()
        cur.execute("INSERT INTO public.orders (ref) VALUES ('lost')")
        with contextlib.suppress(pgerrors.UniqueViolation):  # leaves the transaction aborted
            cur.execute("INSERT INTO public.orders (ref) VALUES ('taken')")
        return "ok"

    @app.workflow()
    def flow() -> list[str]:
        out = [careful()]
        try:
            careless()
        except pgflow.TransactionControlError as exc:
            out.append(str(exc))
        return out

    out = app.options(workflow_id="savepoints").call(flow)
    assert out[0] == "ok" and "savepoint" in out[1]
    assert rows(orders) == ["taken", "kept"]


def test_lost_connection_in_the_body_is_retried_by_pgflow(app: pgflow.App, orders: str) -> None:
    """The body's session is killed mid-body: not the user's error; pgflow retries the whole
    transaction on a new connection (the first attempt rolled back)."""
    bodies = []

    @app.transaction()
    def reserve() -> int:
        bodies.append(1)
        cur = pgflow.db()
        cur.execute("INSERT INTO public.orders (ref) VALUES (%s)", (f"try-{len(bodies)}",))
        if len(bodies) == 1:
            cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return len(bodies)

    @app.workflow()
    def flow() -> int:
        return reserve()

    assert app.options(workflow_id="lost").call(flow) == 2
    assert rows(orders) == ["taken", "try-2"]
    assert [s.output for s in app.steps("lost")] == [2]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("commit", "COMMIT"),
        ("  /* a /* nested */ comment */ COMMIT;", "COMMIT"),
        ("END TRANSACTION", "END"),
        ("rollback", "ROLLBACK"),
        ("ROLLBACK AND CHAIN", "ROLLBACK"),
        ("ABORT WORK", "ABORT"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN"),
        ("START TRANSACTION", "START"),
        ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"),
        ("SELECT 1; COMMIT", "COMMIT"),
        ("SELECT E'it\\'s; COMMIT'; ROLLBACK", "ROLLBACK"),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC "
            "SELECT CASE WHEN true THEN 1 END; END; COMMIT",
            "COMMIT",
        ),
        ("ROLLBACK TO SAVEPOINT a", None),
        ("rollback work to a", None),
        ("SAVEPOINT a; RELEASE SAVEPOINT a", None),
        ("PREPARE q AS SELECT 1", None),
        ("SELECT 'COMMIT'", None),
        ('SELECT "commit" FROM t', None),
        ("-- COMMIT\nSELECT 1", None),
        ("DO $$BEGIN PERFORM 1; END$$", None),
        ("DO $body$ BEGIN COMMIT; END $body$", None),
        ("SELECT $1::int; SELECT 2", None),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", None),
        ("INSERT INTO t (note) VALUES ('a;b''c'); UPDATE t SET x = 1", None),
    ],
)
def test_transaction_control_is_found_outside_quotes_and_comments(
    text: str, found: str | None
) -> None:
    assert transaction_control(text) == found
