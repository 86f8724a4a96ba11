"""Property: a workflow killed at any operation and recovered by another executor ends exactly
as an uninterrupted run does, and no completed step runs twice.

Hypothesis draws a workflow shape (plain steps, flaky retried steps, always-failing steps the
workflow catches, transaction steps, child workflows), runs it once uninterrupted, then runs it
again under a new id, "kills" it inside one drawn operation (a BaseException the engine does not
handle, so no outcome is written), releases the executor as the recovery path does for a dead
process, and lets a fresh App recover it.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import pgflow
from pgflow.recovery import release_executors

pytestmark = pytest.mark.slow

VERSION = "replay-prop"
_EXAMPLE = itertools.count()  # distinct workflow ids for the examples of one database


class Crash(BaseException):
    """The run dies here: nothing after this point is written but its hand back."""


@dataclass
class World:
    """State shared by every App of one test: execution counts and the crash plan."""

    url: str
    calls: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    crash_at: tuple[str, int] | None = None
    crashed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, tag: str, op: int, kind: str) -> int:
        """Called first in every step body: crash when planned, else count the execution."""
        with self.lock:
            if not self.crashed and self.crash_at == (tag, op):
                self.crashed = True
                raise Crash()
            self.calls[(tag, op, kind)] += 1
            return self.calls[(tag, op, kind)]


def build_app(world: World, name: str) -> pgflow.App:
    """The same workflows and steps (same names, same version) on a new App."""
    app = pgflow.App(name, database_url=world.url, app_version=VERSION)

    @app.step(name="plain")
    def plain(tag: str, op: int, x: int) -> dict[str, int]:
        world.enter(tag, op, "plain")
        return {"op": op, "v": x * 10 + op}

    @app.step(name="flaky", retries=2, interval=0.0)
    def flaky(tag: str, op: int, x: int, failures: int) -> int:
        n = world.enter(tag, op, "flaky")
        if n <= failures:
            raise ConnectionError(f"flaky {op} attempt {n}")
        return x + op * 100 + n

    @app.step(name="doomed")
    def doomed(tag: str, op: int, x: int) -> None:
        world.enter(tag, op, "doomed")
        raise ValueError(f"doomed {op} with {x}")

    @app.transaction(name="book")
    def book(tag: str, op: int, x: int) -> int:
        world.enter(tag, op, "book")
        cur = pgflow.db()
        cur.execute(
            "INSERT INTO public.bookings (tag, op, amount) VALUES (%s, %s, %s)", (tag, op, x + op)
        )
        return x + op

    @app.step(name="child_step")
    def child_step(tag: str, op: int, x: int) -> str:
        world.enter(tag, op, "child")
        return f"child {op}: {x * x}"

    @app.workflow(name="child")
    def child(tag: str, op: int, x: int) -> list[Any]:
        return [child_step(tag, op, x), op]

    @app.workflow(name="shape")
    def shape(tag: str, ops: list[list[Any]], x: int) -> list[Any]:
        out: list[Any] = []
        for op, (kind, arg) in enumerate(ops):
            if kind == "plain":
                out.append(plain(tag, op, x))
            elif kind == "flaky":
                out.append(flaky(tag, op, x, arg))
            elif kind == "doomed":
                try:
                    doomed(tag, op, x)
                    out.append("not raised")
                except ValueError as exc:
                    out.append(f"caught: {exc}")
            elif kind == "book":
                out.append(book(tag, op, x))
            elif kind == "child":
                out.append(child(tag, op, x))
        return out

    return app


OPERATIONS = st.one_of(
    st.just(["plain", None]),
    st.tuples(st.just("flaky"), st.integers(0, 2)).map(list),
    st.just(["doomed", None]),
    st.just(["book", None]),
    st.just(["child", None]),
)


def step_log(app: pgflow.App, workflow_id: str) -> list[Any]:
    """Steps of a workflow and, recursively, of its children; ids relative to the root."""
    log: list[Any] = []
    for s in app.steps(workflow_id):
        error = None if s.error is None else (type(s.error).__name__, str(s.error))
        child = None
        if s.child_workflow_id is not None:
            assert s.child_workflow_id == f"{workflow_id}-{s.step_id}"
            child = step_log(app, s.child_workflow_id)
        log.append((s.step_id, s.name, s.output, error, child))
    return log


def bookings(url: str, tag: str) -> list[tuple[int, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT op, amount FROM public.bookings WHERE tag = %s ORDER BY op", (tag,)
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def counts_of(world: World, tag: str) -> dict[tuple[int, str], int]:
    return {(op, kind): n for (t, op, kind), n in world.calls.items() if t == tag}


@pytest.fixture
def world(database_url: str) -> World:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.bookings (tag text, op int, amount int, PRIMARY KEY (tag, op))"
        )
    return World(database_url)


# Each kind of operation as the crash point at least once, whatever hypothesis draws.
@example(ops=[["plain", None], ["flaky", 2], ["plain", None]], x=3, crash=1)
@example(ops=[["doomed", None], ["book", None]], x=-4, crash=1)
@example(ops=[["plain", None], ["child", None], ["flaky", 1]], x=5, crash=1)
@example(ops=[["doomed", None], ["plain", None]], x=0, crash=0)
@example(ops=[["book", None], ["plain", None], ["doomed", None]], x=7, crash=0)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(OPERATIONS, min_size=1, max_size=6),
    x=st.integers(-50, 50),
    crash=st.integers(0, 5),
)
def test_recovered_run_matches_uninterrupted_run(
    world: World, ops: list[list[Any]], x: int, crash: int
) -> None:
    n = next(_EXAMPLE)
    crash_op = crash % len(ops)
    event(f"crash inside a {ops[crash_op][0]} operation")
    ref_id, crash_id = f"ref{n}", f"crash{n}"
    ref_tag, crash_tag = f"t-ref{n}", f"t-crash{n}"

    first = build_app(world, "first")
    second: pgflow.App | None = None
    try:
        # 1. The reference: uninterrupted.
        reference = first.options(workflow_id=ref_id).call("shape", ref_tag, ops, x)
        ref_log = step_log(first, ref_id)

        # 2. The same shape, killed inside operation `crash_op` (in the child for a child op).
        world.crash_at, world.crashed = (crash_tag, crash_op), False
        with pytest.raises(Crash):
            first.options(workflow_id=crash_id).call("shape", crash_tag, ops, x)
        assert world.crashed
        before = first.retrieve(crash_id).status()
        assert before.status is pgflow.Status.PENDING
        assert len(first.steps(crash_id)) == crash_op + (ops[crash_op][0] == "child")
        done_before = counts_of(world, crash_tag)

        # 3. The crash unwound the run (and the child's, for a child op): each handed its
        # workflow back as it went, charged, so the process's executor holds nothing more; a
        # fresh App (a new executor) recovers them.
        expect = {crash_id} | (
            {f"{crash_id}-{crash_op + 1}"} if ops[crash_op][0] == "child" else set()
        )
        handed_back = {
            w.workflow_id: w.recovery_attempts
            for w in first.list_workflows(status="PENDING")
            if w.executor_id is None
        }
        assert handed_back == dict.fromkeys(expect, 1)
        assert release_executors(first, [first.executor.executor_id], charge=True) == []
        second = build_app(world, "second")
        assert second.recover_now() == len(expect)
        recovered = second.retrieve(crash_id).result(timeout=30)
        assert second.wait_idle(30)

        # Same result and same step log (children compared by their own logs, their ids
        # checked relative to each root) as the uninterrupted run.
        assert recovered == reference
        assert step_log(second, crash_id) == ref_log
        after = second.retrieve(crash_id).status()
        assert after.status is pgflow.Status.SUCCESS
        assert after.recovery_attempts == 1
        assert after.executor_id == second.executor.executor_id

        # Nothing that completed before the crash ran again: every body ran exactly as often
        # as in the reference (the crashed attempt raised before it was counted).
        crash_counts = counts_of(world, crash_tag)
        assert crash_counts == counts_of(world, ref_tag)
        for key, n_before in done_before.items():
            op, _ = key
            if op < crash_op:
                assert crash_counts[key] == n_before
        # Transactions took effect exactly once.
        ref_books = bookings(world.url, ref_tag)
        assert bookings(world.url, crash_tag) == ref_books
        assert len(ref_books) == sum(1 for kind, _ in ops if kind == "book")
    finally:
        world.crash_at = None
        first.shutdown(timeout=10)
        if second is not None:
            second.shutdown(timeout=10)
