"""Workflows, steps and transactions end to end on a real Postgres: checkpoints, retries,
children, idempotency, serialization, versions, replay checks and recovery limits."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow.recovery import reap_dead_executors, release_executors
from tests.apps import MakeApp

# -- helpers -----------------------------------------------------------------------------------


class PaymentDeclined(Exception):
    """A user error type that must come back as itself from a recorded ERROR."""


class Crash(BaseException):
    """Stands for the process dying: unwinds the workflow without writing any outcome."""


class Basket:
    """A custom object only the pickle serializer can store (module level: picklable)."""

    def __init__(self, items: list[str], total: Decimal) -> None:
        self.items, self.total = items, total

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Basket) and (self.items, self.total) == (other.items, other.total)


def count(url: str, query: str, params: tuple[Any, ...] = ()) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(url: str, workflow_id: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status FROM pgflow.workflow_status WHERE workflow_id = %s", (workflow_id,)
        ).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app()


@pytest.fixture
def orders(database_url: str) -> str:
    """A user table in schema public; returns the database URL."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.orders (id serial PRIMARY KEY, ref text NOT NULL, note text)"
        )
    return database_url


# -- plain calls and checkpoints ---------------------------------------------------------------


def test_plain_call_returns_result_and_checkpoints_every_step(app: pgflow.App) -> None:
    @app.step()
    def double(x: int) -> int:
        return x * 2

    @app.step(name="shop.describe")
    def describe(x: int) -> str:
        return f"n={x}"

    @app.workflow()
    def flow(x: int) -> dict[str, Any]:
        a = double(x)
        b = double(a)
        return {"a": a, "b": b, "text": describe(b), "wid": pgflow.workflow_id()}

    result = flow(5)
    assert result["a"] == 10 and result["b"] == 20 and result["text"] == "n=20"
    wid = result["wid"]
    st = app.retrieve(wid).status()
    assert st.status is pgflow.Status.SUCCESS
    assert st.output == result
    assert st.inputs == {"args": [5], "kwargs": {}}
    assert st.name.endswith("flow") and st.parent_workflow_id is None
    assert st.created_at.tzinfo is not None and st.updated_at >= st.created_at
    steps = app.steps(wid)
    assert [s.step_id for s in steps] == [1, 2, 3]
    assert [s.name.rsplit(".", 1)[-1] for s in steps] == ["double", "double", "describe"]
    assert steps[2].name == "shop.describe"
    assert [s.output for s in steps] == [10, 20, "n=20"]
    assert all(s.error is None and s.child_workflow_id is None for s in steps)


def test_step_outside_a_workflow_is_a_plain_call(app: pgflow.App, database_url: str) -> None:
    @app.step()
    def inc(x: int) -> int:
        return x + 1

    assert inc(1) == 2
    assert count(database_url, "SELECT count(*) FROM pgflow.operation_outputs") == 0


# -- retries -----------------------------------------------------------------------------------


def test_step_retried_until_it_succeeds(app: pgflow.App) -> None:
    calls: list[float] = []

    @app.step(retries=2, interval=0.05, backoff=2.0)
    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise ConnectionError(f"attempt {len(calls)}")
        return "ok"

    @app.workflow()
    def flow() -> str:
        return flaky()

    h = app.options(workflow_id="retry-ok").start(flow)
    assert h.result(timeout=10) == "ok"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1
    (step,) = app.steps("retry-ok")
    assert step.output == "ok" and step.error is None


def test_step_that_always_fails_raises_after_its_retries(app: pgflow.App) -> None:
    calls: list[float] = []

    @app.step(retries=2, interval=0.1, backoff=2.0)
    def charge(card: str) -> str:
        calls.append(time.monotonic())
        raise PaymentDeclined(f"card {card} declined")

    @app.workflow()
    def flow(card: str) -> str:
        return charge(card)

    started = time.monotonic()
    with pytest.raises(PaymentDeclined, match="card 4242 declined"):
        app.options(workflow_id="retry-fail").call(flow, "4242")
    elapsed = time.monotonic() - started
    assert len(calls) == 3  # 1 + retries
    assert calls[1] - calls[0] >= 0.1 and calls[2] - calls[1] >= 0.2
    assert elapsed >= 0.3
    h = app.retrieve("retry-fail")
    st = h.status()
    assert st.status is pgflow.Status.ERROR
    assert isinstance(st.error, PaymentDeclined)
    with pytest.raises(PaymentDeclined, match="card 4242 declined"):
        h.result(timeout=5)
    (step,) = app.steps("retry-fail")
    assert isinstance(step.error, PaymentDeclined) and step.output is None
    # The recorded failure is the answer: calling again does not run the step again.
    with pytest.raises(PaymentDeclined):
        app.options(workflow_id="retry-fail").call(flow, "4242")
    assert len(calls) == 3


def test_caught_step_error_is_recorded_and_replayed(app: pgflow.App) -> None:
    calls = []

    @app.step()
    def boom() -> None:
        calls.append(1)
        raise KeyError("missing")

    @app.workflow()
    def flow() -> str:
        try:
            boom()
        except KeyError as exc:
            return f"caught {exc.args[0]}"
        return "not raised"

    assert app.options(workflow_id="caught").call(flow) == "caught missing"
    (step,) = app.steps("caught")
    assert isinstance(step.error, KeyError) and step.error.args == ("missing",)
    assert calls == [1]


# -- transactions ------------------------------------------------------------------------------


def test_transaction_writes_user_row_exactly_once(app: pgflow.App, orders: str) -> None:
    bodies = []

    @app.transaction()
    def reserve(ref: str) -> int:
        bodies.append(ref)
        cur = pgflow.db()
        cur.execute("INSERT INTO public.orders (ref) VALUES (%s) RETURNING id", (ref,))
        row = cur.fetchone()
        assert row is not None
        return int(row["id"] if isinstance(row, dict) else row[0])

    @app.workflow()
    def flow(ref: str) -> int:
        return reserve(ref)

    first = app.options(workflow_id="tx-1").call(flow, "o-1")
    again = app.options(workflow_id="tx-1").call(flow, "o-1")
    assert first == again
    assert bodies == ["o-1"]
    assert count(orders, "SELECT count(*) FROM public.orders WHERE ref = 'o-1'") == 1
    (step,) = app.steps("tx-1")
    assert step.output == first


def test_transaction_retry_rolls_back_the_failed_attempt(app: pgflow.App, orders: str) -> None:
    attempts = []

    @app.transaction(retries=1, interval=0.0)
    def reserve(ref: str) -> str:
        attempts.append(ref)
        pgflow.db().execute(
            "INSERT INTO public.orders (ref, note) VALUES (%s, %s)",
            (ref, f"attempt {len(attempts)}"),
        )
        if len(attempts) == 1:
            raise ConnectionError("lost after the insert")
        return "reserved"

    @app.workflow()
    def flow() -> str:
        return reserve("o-2")

    assert flow() == "reserved"
    assert len(attempts) == 2
    with psycopg.connect(orders) as conn:
        notes = conn.execute("SELECT note FROM public.orders").fetchall()
    assert notes == [("attempt 2",)]


def test_failing_transaction_rolls_back_its_write(app: pgflow.App, orders: str) -> None:
    @app.transaction()
    def reserve(ref: str) -> None:
        pgflow.db().execute("INSERT INTO public.orders (ref) VALUES (%s)", (ref,))
        raise PaymentDeclined("no stock")

    @app.workflow()
    def flow() -> None:
        reserve("o-3")

    h = app.options(workflow_id="tx-fail").start(flow)
    with pytest.raises(PaymentDeclined, match="no stock"):
        h.result(timeout=10)
    assert h.status().status is pgflow.Status.ERROR
    assert count(orders, "SELECT count(*) FROM public.orders") == 0
    (step,) = app.steps("tx-fail")
    assert isinstance(step.error, PaymentDeclined)


def test_fenced_transaction_rolls_back_with_its_checkpoint(app: pgflow.App, orders: str) -> None:
    """A transaction whose workflow is taken away mid-body commits neither body nor
    checkpoint; the adopter runs it once."""
    bodies = []

    @app.transaction()
    def reserve(ref: str) -> str:
        bodies.append(ref)
        pgflow.db().execute("INSERT INTO public.orders (ref) VALUES (%s)", (ref,))
        if len(bodies) == 1:
            # Meanwhile this process is declared dead and its work handed back.
            released = release_executors(
                app, [app.executor.executor_id], charge=True, workflow_ids=[pgflow.workflow_id()]
            )
            assert [r["workflow_id"] for r in released] == [pgflow.workflow_id()]
        return "reserved"

    @app.workflow()
    def flow() -> str:
        return reserve("o-4")

    h = app.options(workflow_id="tx-fenced").start(flow)
    assert app.wait_idle(10)
    assert count(orders, "SELECT count(*) FROM public.orders") == 0
    assert app.steps("tx-fenced") == []
    st = h.status()
    assert st.status is pgflow.Status.PENDING and st.executor_id is None
    assert st.recovery_attempts == 1

    assert app.recover_now() == 1
    assert h.result(timeout=10) == "reserved"
    assert bodies == ["o-4", "o-4"]
    assert count(orders, "SELECT count(*) FROM public.orders") == 1
    assert [s.output for s in app.steps("tx-fenced")] == ["reserved"]


def test_db_outside_a_transaction_raises(app: pgflow.App) -> None:
    with pytest.raises(pgflow.PgflowError, match=r"@app\.transaction"):
        pgflow.db()

    @app.step()
    def plain() -> None:
        pgflow.db()

    @app.workflow()
    def flow() -> str:
        with pytest.raises(pgflow.PgflowError):
            pgflow.db()
        try:
            plain()
        except pgflow.PgflowError as exc:
            return str(exc)
        return "no error"

    assert "@app.transaction" in flow()


# -- children ----------------------------------------------------------------------------------


def test_child_workflow_call_is_recorded_as_a_step(app: pgflow.App) -> None:
    @app.step()
    def one() -> int:
        return 1

    @app.workflow()
    def child(x: int) -> dict[str, Any]:
        return {"x": x, "id": pgflow.workflow_id()}

    @app.workflow()
    def parent() -> Any:
        one()
        return child(7)

    result = app.options(workflow_id="par").call(parent)
    assert result == {"x": 7, "id": "par-2"}
    st = app.retrieve("par-2").status()
    assert st.parent_workflow_id == "par" and st.status is pgflow.Status.SUCCESS
    steps = app.steps("par")
    assert [s.step_id for s in steps] == [1, 2]
    assert steps[1].child_workflow_id == "par-2"
    assert steps[1].name == st.name
    assert steps[0].child_workflow_id is None
    children = app.list_workflows(parent_workflow_id="par")
    assert [c.workflow_id for c in children] == ["par-2"]


def test_start_inside_a_workflow_starts_a_recorded_child(app: pgflow.App) -> None:
    @app.workflow()
    def child(x: int) -> int:
        return x * 3

    @app.workflow()
    def parent() -> list[Any]:
        h1 = app.start(child, 1)
        h2 = app.start(child, 2)
        return [h1.workflow_id, h2.workflow_id, h1.result(timeout=10), h2.result(timeout=10)]

    assert app.options(workflow_id="p2").call(parent) == ["p2-1", "p2-2", 3, 6]
    steps = app.steps("p2")
    assert [(s.step_id, s.child_workflow_id) for s in steps] == [(1, "p2-1"), (2, "p2-2")]
    for cid in ("p2-1", "p2-2"):
        assert app.retrieve(cid).status().parent_workflow_id == "p2"


# -- ids, idempotency, listing -----------------------------------------------------------------


def test_start_with_same_id_returns_the_existing_execution(app: pgflow.App) -> None:
    runs = []

    @app.workflow()
    def flow(x: int) -> int:
        runs.append(x)
        return x + 100

    h1 = app.options(workflow_id="x").start(flow, 1)
    h2 = app.options(workflow_id="x").start(flow, 1)
    assert h1.workflow_id == h2.workflow_id == "x"
    assert h2.result(timeout=10) == 101 == h1.result(timeout=10)
    assert app.options(workflow_id="x").call(flow, 1) == 101
    assert runs == [1]
    assert len(app.list_workflows()) == 1


def test_retrieve_unknown_id_raises(app: pgflow.App) -> None:
    with pytest.raises(pgflow.UnknownWorkflow):
        app.retrieve("no-such-workflow")


def test_list_workflows_filters(app: pgflow.App) -> None:
    q = app.queue("later")

    @app.workflow(name="wf_a")
    def wf_a(i: int) -> int:
        return i

    @app.workflow(name="wf_b")
    def wf_b() -> None:
        raise PaymentDeclined("b fails")

    app.options(workflow_id="a1").call(wf_a, 1)
    app.options(workflow_id="a2").call(wf_a, 2)
    with pytest.raises(PaymentDeclined):
        app.options(workflow_id="b1").call(wf_b)
    q.options(workflow_id="a3").enqueue(wf_a, 3)

    def ids(rows: list[pgflow.WorkflowStatus]) -> list[str]:
        return [r.workflow_id for r in rows]

    assert ids(app.list_workflows()) == ["a1", "a2", "b1", "a3"]
    assert ids(app.list_workflows(newest_first=True)) == ["a3", "b1", "a2", "a1"]
    assert ids(app.list_workflows(limit=2)) == ["a1", "a2"]
    assert ids(app.list_workflows(limit=2, newest_first=True)) == ["a3", "b1"]
    assert ids(app.list_workflows(name="wf_a")) == ["a1", "a2", "a3"]
    assert ids(app.list_workflows(status="SUCCESS")) == ["a1", "a2"]
    assert ids(app.list_workflows(status=pgflow.Status.ERROR)) == ["b1"]
    assert ids(app.list_workflows(status=["ERROR", "ENQUEUED"])) == ["b1", "a3"]
    assert ids(app.list_workflows(queue="later")) == ["a3"]
    assert ids(app.list_workflows(name="wf_a", status="ENQUEUED", queue="later")) == ["a3"]
    assert ids(app.list_workflows(name="wf_b", status="SUCCESS")) == []
    (a3,) = app.list_workflows(queue="later")
    assert a3.status is pgflow.Status.ENQUEUED and a3.queue_name == "later"
    assert a3.executor_id is None and a3.inputs == {"args": [3], "kwargs": {}}


# -- serialization -----------------------------------------------------------------------------


def test_unserializable_argument_is_refused_before_any_write(
    app: pgflow.App, database_url: str
) -> None:
    q = app.queue("jobs")

    @app.workflow()
    def flow(a: Any, b: Any = None) -> None:
        return None

    with pytest.raises(pgflow.SerializationError, match=r"positional argument 2 \(args\[1\]\)"):
        flow(1, {1, 2})
    with pytest.raises(pgflow.SerializationError, match=r"keyword argument 'b'.*function"):
        app.start(flow, 1, b=lambda: 0)
    with pytest.raises(pgflow.SerializationError, match="positional argument 1"):
        q.enqueue(flow, {3})
    assert count(database_url, "SELECT count(*) FROM pgflow.workflow_status") == 0


def test_unserializable_output_ends_in_error_naming_it(app: pgflow.App) -> None:
    @app.workflow(name="bad_output")
    def flow() -> Any:
        return {"tags": {"a", "b"}}

    with pytest.raises(pgflow.SerializationError, match="output of workflow 'bad_output'"):
        app.options(workflow_id="bad-out").call(flow)
    h = app.retrieve("bad-out")
    assert h.status().status is pgflow.Status.ERROR
    with pytest.raises(pgflow.SerializationError, match=r"output of workflow 'bad_output'.*set"):
        h.result(timeout=5)


def test_unserializable_step_output_fails_the_step(app: pgflow.App) -> None:
    @app.step(name="bad_step")
    def bad() -> Any:
        return object()

    @app.workflow()
    def flow() -> str:
        try:
            bad()
        except pgflow.SerializationError as exc:
            return str(exc)
        return "stored"

    message = app.options(workflow_id="bad-step").call(flow)
    assert "output of step 'bad_step'" in message
    (step,) = app.steps("bad-step")
    assert isinstance(step.error, pgflow.SerializationError)


def test_json_round_trips_rich_types(app: pgflow.App) -> None:
    when = datetime(2024, 5, 17, 12, 30, 1, 123456, tzinfo=timezone(timedelta(hours=2)))
    amount = Decimal("12.3400")
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    blob = b"\x00\xffbytes"
    pair = (1, ("nested", 2))

    @app.step()
    def echo(value: Any) -> Any:
        return value

    @app.workflow()
    def flow(
        when: datetime, amount: Decimal, uid: uuid.UUID, blob: bytes, pair: tuple[Any, ...]
    ) -> dict[str, Any]:
        assert type(when) is datetime and type(amount) is Decimal and type(uid) is uuid.UUID
        assert type(blob) is bytes and type(pair) is tuple
        return {
            "when": echo(when),
            "amount": echo(amount),
            "uid": echo(uid),
            "blob": echo(blob),
            "pair": echo(pair),
        }

    expected = {"when": when, "amount": amount, "uid": uid, "blob": blob, "pair": pair}
    h = app.options(workflow_id="rich").start(flow, when, amount, uid, blob=blob, pair=pair)
    result = h.result(timeout=10)
    assert result == expected
    assert str(result["amount"]) == "12.3400"
    assert result["when"].utcoffset() == timedelta(hours=2)
    assert type(result["pair"]) is tuple and type(result["pair"][1]) is tuple
    st = h.status()
    assert st.inputs == {"args": [when, amount, uid], "kwargs": {"blob": blob, "pair": pair}}
    assert st.output == expected
    assert [s.output for s in app.steps("rich")] == [when, amount, uid, blob, pair]


def test_pickle_app_round_trips_custom_objects(make_app: MakeApp) -> None:
    app = make_app("pickled", serializer="pickle")

    @app.step()
    def add(basket: Basket, item: str) -> Basket:
        return Basket([*basket.items, item], basket.total + Decimal("1.50"))

    @app.workflow()
    def flow(basket: Basket) -> Basket:
        return add(basket, "pear")

    h = app.options(workflow_id="pk").start(flow, Basket(["apple"], Decimal("1.00")))
    assert h.result(timeout=10) == Basket(["apple", "pear"], Decimal("2.50"))
    st = h.status()
    assert st.inputs == {"args": [Basket(["apple"], Decimal("1.00"))], "kwargs": {}}
    assert app.steps("pk")[0].output == Basket(["apple", "pear"], Decimal("2.50"))


def test_json_app_refuses_to_read_a_pickled_row(make_app: MakeApp) -> None:
    pickler = make_app("pickled", serializer="pickle", app_version="v1")
    reader = make_app("reader", app_version="v1")

    @pickler.workflow(name="pk_flow")
    def flow(basket: Basket) -> Basket:
        return basket

    h = pickler.options(workflow_id="pk2").start(flow, Basket(["fig"], Decimal("3")))
    assert h.result(timeout=10) == Basket(["fig"], Decimal("3"))

    other = reader.retrieve("pk2")
    st = other.status()
    assert st.status is pgflow.Status.SUCCESS
    assert isinstance(st.output, str) and "pickle" in st.output
    assert isinstance(st.inputs, str) and "pickle" in st.inputs
    with pytest.raises(pgflow.SerializationError, match="pickle"):
        other.result(timeout=5)


# -- versions, replay checks, recovery limits --------------------------------------------------


def _versioned_app(make_app: MakeApp, version: str, gate: dict[str, Any]) -> pgflow.App:
    app = make_app(f"app-{version}", app_version=version)

    @app.step(name="v.step")
    def step() -> str:
        if gate.get("crash"):
            gate["crash"] = False
            raise Crash()
        return version

    @app.workflow(name="v.flow")
    def flow() -> str:
        return f"ran on {step()}"

    return app


def test_orphan_of_another_version_is_not_adopted(make_app: MakeApp, database_url: str) -> None:
    gate = {"crash": True}
    app_a = _versioned_app(make_app, "A", gate)
    app_b = _versioned_app(make_app, "B", gate)
    with pytest.raises(Crash):
        app_a.options(workflow_id="va").call("v.flow")
    release_executors(app_a, [app_a.executor.executor_id], charge=True)
    st = app_a.retrieve("va").status()
    assert st.status is pgflow.Status.PENDING and st.executor_id is None
    assert st.app_version == "A"

    assert app_b.recover_now() == 0
    # Starting it by id from B does not take it over either.
    h = app_b.options(workflow_id="va").start("v.flow")
    with pytest.raises(pgflow.WorkflowTimeout):
        h.result(timeout=0.3)
    st = app_b.retrieve("va").status()
    assert st.status is pgflow.Status.PENDING and st.executor_id is None
    assert count(database_url, "SELECT count(*) FROM pgflow.operation_outputs") == 0

    app_a2 = _versioned_app(make_app, "A", gate)
    assert app_a2.recover_now() == 1
    assert app_a2.retrieve("va").result(timeout=10) == "ran on A"
    assert app_a2.retrieve("va").status().executor_id == app_a2.executor.executor_id


def test_replay_with_a_different_step_raises_nondeterminism(app: pgflow.App) -> None:
    plan = {"path": "old", "crash": True}

    @app.step(name="reserve_stock")
    def reserve_stock() -> str:
        return "reserved"

    @app.step(name="reserve_warehouse")
    def reserve_warehouse() -> str:
        return "warehouse"

    @app.step(name="charge")
    def charge() -> str:
        if plan["crash"]:
            plan["crash"] = False
            raise Crash()
        return "charged"

    @app.workflow()
    def flow() -> str:
        # The code changes between the crash and the recovery: step 1 is another step.
        first = reserve_stock() if plan["path"] == "old" else reserve_warehouse()
        return f"{first} {charge()}"

    with pytest.raises(Crash):
        app.options(workflow_id="nd").call(flow)
    assert [s.name for s in app.steps("nd")] == ["reserve_stock"]
    release_executors(app, [app.executor.executor_id], charge=True)

    plan["path"] = "new"
    assert app.recover_now() == 1
    h = app.retrieve("nd")
    with pytest.raises(pgflow.NonDeterminism) as info:
        h.result(timeout=10)
    message = str(info.value)
    assert "'reserve_stock'" in message and "'reserve_warehouse'" in message
    assert "step 1" in message
    assert h.status().status is pgflow.Status.ERROR
    # Nothing after the mismatch ran or was recorded.
    assert [s.name for s in app.steps("nd")] == ["reserve_stock"]


def test_replay_with_a_different_child_raises_nondeterminism(app: pgflow.App) -> None:
    plan = {"path": "old", "crash": True}

    @app.workflow(name="child_old")
    def child_old() -> str:
        return "old"

    @app.workflow(name="child_new")
    def child_new() -> str:
        return "new"

    @app.step(name="after")
    def after() -> None:
        if plan["crash"]:
            plan["crash"] = False
            raise Crash()

    @app.workflow()
    def flow() -> str:
        result = child_old() if plan["path"] == "old" else child_new()
        after()
        return str(result)

    with pytest.raises(Crash):
        app.options(workflow_id="ndc").call(flow)
    release_executors(app, [app.executor.executor_id], charge=True)
    plan["path"] = "new"
    app.recover_now()
    with pytest.raises(pgflow.NonDeterminism, match=r"'child_old'.*'child_new'"):
        app.retrieve("ndc").result(timeout=10)


def _claim(app: pgflow.App, queue: str) -> list[str]:
    """Claim a queue's ENQUEUED rows as this app's executor, the way a worker does."""
    app.executor.ensure_registered()
    rows = app.db.fetchall(
        "claim_workflows",
        {
            "queue_name": queue,
            "app_version": app.app_version,
            "names": sorted(app.registry.workflows),
            "executor_id": app.executor.executor_id,
            "limit": 10,
            "strict": False,
        },
    )
    return [r["workflow_id"] for r in rows]


def test_queued_workflow_over_its_recovery_limit(app: pgflow.App, database_url: str) -> None:
    """Charged once too often: MAX_RECOVERY_ATTEMPTS_EXCEEDED, the waiting parent gets the
    error, and the dedup id is free for a new enqueue."""
    jobs = app.queue("jobs")

    @app.workflow(name="job", max_recovery_attempts=1)
    def job(n: int) -> int:  # never runs: the test plays the crashing worker
        raise AssertionError("a crashed job must not run")

    @app.workflow(name="waiter")
    def waiter() -> list[Any]:
        h = jobs.options(dedup_id="job-1").enqueue(job, 1)
        try:
            return ["ok", h.result(timeout=30)]
        except pgflow.MaxRecoveryAttemptsExceeded as exc:
            return ["max", exc.workflow_id, type(exc).__name__]

    parent = app.options(workflow_id="w").start(waiter)
    child_id = "w-1"
    wait_for(lambda: status_of(database_url, child_id) == "ENQUEUED", what="child enqueued")
    with pytest.raises(pgflow.Deduplicated) as dup:
        jobs.options(dedup_id="job-1").enqueue(job, 2)
    assert dup.value.existing_workflow_id == child_id

    # First crash: charged, within the limit -> back on its queue.
    assert _claim(app, "jobs") == [child_id]
    release_executors(app, [app.executor.executor_id], charge=True, workflow_ids=[child_id])
    st = app.retrieve(child_id).status()
    assert st.status is pgflow.Status.ENQUEUED and st.recovery_attempts == 1
    assert st.dedup_id == "job-1"
    with pytest.raises(pgflow.Deduplicated):
        jobs.options(dedup_id="job-1").enqueue(job, 2)

    # Second crash: over the limit.
    assert _claim(app, "jobs") == [child_id]
    release_executors(app, [app.executor.executor_id], charge=True, workflow_ids=[child_id])
    st = app.retrieve(child_id).status()
    assert st.status is pgflow.Status.MAX_RECOVERY_ATTEMPTS_EXCEEDED
    assert st.recovery_attempts == 2 and st.executor_id is None
    # The recorded error names this workflow and its limit (written by the release statement).
    assert isinstance(st.error, pgflow.MaxRecoveryAttemptsExceeded)
    assert st.error.workflow_id == child_id and child_id in str(st.error)

    assert parent.result(timeout=10) == ["max", child_id, "MaxRecoveryAttemptsExceeded"]
    with pytest.raises(pgflow.MaxRecoveryAttemptsExceeded) as info:
        app.retrieve(child_id).result(timeout=5)
    assert info.value.workflow_id == child_id
    # Terminal: never claimed again; its dedup id is released.
    assert _claim(app, "jobs") == []
    fresh = jobs.options(dedup_id="job-1").enqueue(job, 3)
    assert fresh.workflow_id != child_id
    assert fresh.status().status is pgflow.Status.ENQUEUED
    assert (
        count(
            database_url,
            "SELECT count(*) FROM pgflow.workflow_status "
            "WHERE dedup_id = 'job-1' AND status IN ('ENQUEUED', 'PENDING')",
        )
        == 1
    )


def test_reaped_workflow_over_its_recovery_limit_fences_its_old_owner(
    make_app: MakeApp, database_url: str
) -> None:
    """Reaping an executor twice (adopted in between) ends a max_recovery_attempts=1
    workflow; the original, frozen run wakes up and writes nothing."""
    gate = threading.Event()
    entered = threading.Event()
    apps = []
    for label in ("first", "adopter"):
        a = make_app(label, app_version="v")

        @a.step(name="slow")
        def slow() -> str:
            entered.set()
            gate.wait(20)
            return "slow done"

        @a.workflow(name="limited", max_recovery_attempts=1)
        def limited() -> str:
            return slow()

        apps.append(a)
    first, adopter = apps
    h = first.options(workflow_id="lim").start("limited")
    try:
        _over_the_limit(first, adopter, h, gate, entered, database_url)
    finally:
        gate.set()


def _over_the_limit(
    first: pgflow.App,
    adopter: pgflow.App,
    h: Any,
    gate: threading.Event,
    entered: threading.Event,
    database_url: str,
) -> None:
    assert entered.wait(10)

    reaped = reap_dead_executors(adopter, "tester", [first.executor.executor_id])
    assert reaped == [first.executor.executor_id]
    st = adopter.retrieve("lim").status()
    assert st.status is pgflow.Status.PENDING and st.executor_id is None
    assert st.recovery_attempts == 1
    adopter.executor.ensure_registered()
    assert [c.workflow_id for c in adopter.executor.adopt(10)] == ["lim"]
    reap_dead_executors(adopter, "tester", [adopter.executor.executor_id])
    st = adopter.retrieve("lim").status()
    assert st.status is pgflow.Status.MAX_RECOVERY_ATTEMPTS_EXCEEDED
    assert st.recovery_attempts == 2
    updated = st.updated_at
    with pytest.raises(pgflow.MaxRecoveryAttemptsExceeded):
        h.result(timeout=5)

    gate.set()  # the frozen first run wakes up
    assert first.wait_idle(10)
    st = adopter.retrieve("lim").status()
    assert st.status is pgflow.Status.MAX_RECOVERY_ATTEMPTS_EXCEEDED
    assert st.output is None and st.updated_at == updated
    assert count(database_url, "SELECT count(*) FROM pgflow.operation_outputs") == 0


def test_enqueue_with_active_dedup_id_raises_deduplicated(app: pgflow.App) -> None:
    q = app.queue("mail")
    other = app.queue("sms")

    @app.workflow()
    def send(to: str) -> None:
        return None

    h = q.options(dedup_id="user-1").enqueue(send, "a@example.com")
    with pytest.raises(pgflow.Deduplicated) as info:
        q.options(dedup_id="user-1").enqueue(send, "b@example.com")
    err = info.value
    assert err.existing_workflow_id == h.workflow_id
    assert err.queue == "mail" and err.dedup_id == "user-1"
    assert h.workflow_id in str(err)
    # Another queue or another id is not a duplicate.
    other.options(dedup_id="user-1").enqueue(send, "c@example.com")
    q.options(dedup_id="user-2").enqueue(send, "d@example.com")
    assert len(app.list_workflows(queue="mail")) == 2


def test_stale_run_abandons_even_under_the_same_executor_id(app: pgflow.App) -> None:
    """A run frozen inside step 1 whose workflow is released and re-adopted by the same
    process (same executor id, a new attempt) records nothing and runs no later step when
    it wakes, even though the checkpoint it meets was written under its executor id."""
    first_in, wake_first = threading.Event(), threading.Event()
    second_in, wake_second = threading.Event(), threading.Event()
    calls: dict[str, int] = {"s1": 0, "s2": 0}
    stale: list[threading.Thread] = []

    @app.step(name="s1")
    def s1() -> str:
        calls["s1"] += 1
        if calls["s1"] == 1:
            stale.append(threading.current_thread())
            first_in.set()
            assert wake_first.wait(10)
        return "one"

    @app.step(name="s2")
    def s2() -> str:
        calls["s2"] += 1
        if calls["s2"] == 1:
            second_in.set()
            assert wake_second.wait(10)
        return "two"

    @app.workflow()
    def flow() -> list[str]:
        return [s1(), s2()]

    h = app.options(workflow_id="stale").start(flow)
    try:
        assert first_in.wait(10)
        release_executors(app, [app.executor.executor_id], charge=True, workflow_ids=["stale"])
        assert app.recover_now() == 1  # same App, same executor id, attempt bumped
        assert second_in.wait(10)  # the adopted run recorded s1 and is inside s2
        owner = h.status()
        assert owner.executor_id == app.executor.executor_id

        wake_first.set()
        stale[0].join(10)
        assert not stale[0].is_alive()
        assert calls == {"s1": 2, "s2": 1}  # the stale run went no further than its step
        assert [s.name for s in app.steps("stale")] == ["s1"]
        assert h.status().attempt == owner.attempt

        wake_second.set()
        assert h.result(timeout=10) == ["one", "two"]
        assert calls == {"s1": 2, "s2": 1}
    finally:
        wake_first.set()
        wake_second.set()


def test_batch_ids_are_distinct_version_4_uuids() -> None:
    from pgflow.enqueue import new_workflow_ids

    ids = new_workflow_ids(2_000)
    assert len(set(ids)) == 2_000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    assert new_workflow_ids(0) == []
