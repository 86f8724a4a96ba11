"""A step's ``time_limit`` holds per attempt: past it the attempt raises StepTimeLimitExceeded,
an ordinary step error (retried, catchable, recorded), and its body is abandoned on its
thread. Values that could never work are refused where the step is declared."""

from __future__ import annotations

import itertools
import math
import threading
import time
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow.testing import drain
from tests.apps import MakeApp

LIMIT = 0.5


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("tl")


def test_each_retry_starts_one_time_limit_after_the_previous(app: pgflow.App) -> None:
    """Attempts 1 and 2 hang for 2 s, attempt 3 is fast: the step succeeds on its third
    attempt, each attempt abandoned at the limit (not after limit x (1 + retries))."""
    starts: list[float] = []

    @app.step(retries=2, interval=0.05, backoff=1.0, time_limit=LIMIT)
    def slow_then_fast() -> str:
        starts.append(time.monotonic())
        if len(starts) <= 2:
            time.sleep(2)
        return f"attempt {len(starts)}"

    @app.workflow()
    def flow() -> str:
        return slow_then_fast()

    began = time.monotonic()
    h = app.options(workflow_id="tl-retry").start(flow)
    assert h.result(timeout=10) == "attempt 3"
    took = time.monotonic() - began
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    print(f"\nattempt gaps {[round(g, 3) for g in gaps]} s; done after {took:.2f} s")
    assert len(starts) == 3
    # Each retry starts about a limit (plus the 0.05 s interval) after the one before; the
    # upper bounds are loose for loaded machines yet far below the 2 s a body would take.
    assert all(LIMIT + 0.05 <= g < LIMIT + 0.05 + 0.8 for g in gaps), gaps
    assert took < 2 * (LIMIT + 0.05) + 1.5  # under 2.6 s, where two full bodies take 4 s
    (step,) = app.steps("tl-retry")
    assert step.output == "attempt 3" and step.error is None and step.attempts == 3


def test_workflow_catches_the_time_limit_and_goes_on(app: pgflow.App) -> None:
    body: dict[str, Any] = {}
    after_abandoned = threading.Event()

    @app.step()
    def inner() -> str:
        return "inner ran"

    @app.step(time_limit=LIMIT)
    def hangs() -> str:
        body["workflow_id"] = pgflow.workflow_id()  # context variables reach the body
        time.sleep(LIMIT + 0.5)
        # Abandoned by now, the workflow has gone on: a step called here is a plain call
        # that takes no step number of the workflow and records nothing.
        body["inner"] = inner()
        after_abandoned.set()
        return "too late"

    @app.step()
    def fallback() -> str:
        return "fallback"

    @app.workflow()
    def flow() -> str:
        try:
            return hangs()
        except pgflow.StepTimeLimitExceeded:
            answer = fallback()
        assert after_abandoned.wait(5)
        return answer + " " + inner()

    began = time.monotonic()
    h = app.options(workflow_id="tl-catch").start(flow)
    assert h.result(timeout=10) == "fallback inner ran"
    assert time.monotonic() - began < 5
    assert body == {"workflow_id": "tl-catch", "inner": "inner ran"}
    steps = app.steps("tl-catch")
    assert [s.name.rsplit(".", 1)[-1] for s in steps] == ["hangs", "fallback", "inner"]
    assert isinstance(steps[0].error, pgflow.StepTimeLimitExceeded)
    assert steps[0].output is None and steps[1].output == "fallback"


def test_step_past_its_limit_without_retries_ends_the_workflow_error(app: pgflow.App) -> None:
    """Under a worker (pgflow.testing.drain): the workflow ends ERROR with the step's
    StepTimeLimitExceeded about one limit after the step began; a replay does not run it."""
    calls: list[float] = []
    jobs = app.queue("tl-jobs")

    @app.step(time_limit=LIMIT)
    def stuck() -> None:
        calls.append(time.monotonic())
        time.sleep(3)

    @app.workflow()
    def flow() -> str:
        stuck()
        return "unreachable"

    h = jobs.options(workflow_id="tl-error").enqueue(flow)
    drain(app, [jobs], timeout=10)
    ended = time.monotonic()
    st = h.status()
    assert st.status is pgflow.Status.ERROR
    assert isinstance(st.error, pgflow.StepTimeLimitExceeded)
    assert "time_limit of 0.5 s" in str(st.error)
    with pytest.raises(pgflow.StepTimeLimitExceeded):
        h.result(timeout=5)
    (step,) = app.steps("tl-error")
    assert isinstance(step.error, pgflow.StepTimeLimitExceeded) and step.attempts == 1
    assert len(calls) == 1 and ended - calls[0] < LIMIT + 1.5
    with pytest.raises(pgflow.StepTimeLimitExceeded):
        app.options(workflow_id="tl-error").call(flow)
    assert len(calls) == 1


def test_time_limit_applies_to_a_plain_call_too(app: pgflow.App) -> None:
    @app.step(time_limit=LIMIT)
    def hangs() -> None:
        time.sleep(2)

    began = time.monotonic()
    with pytest.raises(pgflow.StepTimeLimitExceeded):
        hangs()
    assert time.monotonic() - began < LIMIT + 1.0  # the body would take 2 s


def test_fast_step_with_a_limit_returns_its_value_and_raises_its_own_errors(
    app: pgflow.App,
) -> None:
    class Declined(Exception):
        pass

    @app.step(time_limit=5)
    def echo(x: int) -> int:
        if x < 0:
            raise Declined(f"no {x}")
        return x

    @app.workflow()
    def flow(x: int) -> int:
        return echo(x)

    assert flow(3) == 3
    with pytest.raises(Declined, match="no -1"):
        flow(-1)


@pytest.mark.parametrize("limit", [0, 0.0, -1, math.nan, math.inf, -math.inf, True, "3"])
def test_impossible_time_limits_are_refused_when_declared(app: pgflow.App, limit: Any) -> None:
    with pytest.raises(pgflow.InvalidValue, match="time_limit"):

        @app.step(time_limit=limit)
        def never() -> None:
            pass


# -- transaction steps: the server cancels the statement; an attempt over the limit rolls back


@pytest.fixture
def notes(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.notes (attempt int NOT NULL)")
    return database_url


def note_attempts(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT attempt FROM public.notes ORDER BY 1")]


def test_transaction_statement_past_the_limit_is_cancelled_and_retried(
    app: pgflow.App, notes: str
) -> None:
    """Attempt 1 writes, then a statement sleeps past the limit: the server cancels it, the
    attempt's write rolls back, and attempt 2 (fast) commits with the checkpoint."""
    starts: list[float] = []

    @app.transaction(retries=1, interval=0.05, time_limit=LIMIT)
    def write() -> int:
        starts.append(time.monotonic())
        cur = pgflow.db()
        cur.execute("INSERT INTO public.notes VALUES (%s)", (len(starts),))
        if len(starts) == 1:
            cur.execute("SELECT pg_sleep(5)")
        cur.execute("SELECT current_setting('statement_timeout') AS t")
        assert cur.fetchone() == {"t": "500ms"}  # in force for the body's statements
        return len(starts)

    @app.workflow()
    def flow() -> int:
        return write()

    h = app.options(workflow_id="tl-tx").start(flow)
    assert h.result(timeout=10) == 2
    assert LIMIT <= starts[1] - starts[0] < LIMIT + 0.05 + 0.4
    assert note_attempts(notes) == [2]
    (step,) = app.steps("tl-tx")
    assert step.output == 2 and step.attempts == 2


def test_transaction_over_its_limit_in_all_rolls_back_and_fails(
    app: pgflow.App, notes: str
) -> None:
    """Each statement under the limit, the attempt over it: rolled back, the workflow ERROR
    with StepTimeLimitExceeded; a statement cancelled by the limit gives the same error,
    with the server's QueryCanceled as its cause."""

    @app.transaction(time_limit=LIMIT)
    def many_short() -> None:
        cur = pgflow.db()
        cur.execute("INSERT INTO public.notes VALUES (1)")
        for _ in range(3):
            cur.execute("SELECT pg_sleep(0.3)")

    @app.transaction(time_limit=LIMIT)
    def one_long() -> None:
        pgflow.db().execute("INSERT INTO public.notes VALUES (2)")
        pgflow.db().execute("SELECT pg_sleep(5)")

    @app.workflow()
    def flow(long: bool) -> None:
        one_long() if long else many_short()

    for wid, long in (("tl-tx-short", False), ("tl-tx-long", True)):
        began = time.monotonic()
        with pytest.raises(pgflow.StepTimeLimitExceeded) as info:
            app.options(workflow_id=wid).call(flow, long)
        # Well before the 5 s statement ends: the limit cancelled it (loose, for loaded CI
        # machines: the short body itself takes 0.9 s before its rollback).
        assert time.monotonic() - began < 4.0
        assert app.retrieve(wid).status().status is pgflow.Status.ERROR
        (step,) = app.steps(wid)
        assert isinstance(step.error, pgflow.StepTimeLimitExceeded)
        if long:
            assert isinstance(info.value.__cause__, psycopg.errors.QueryCanceled)
    assert note_attempts(notes) == []
    # The session the steps ran on is back to no statement timeout.
    with app.db.connection() as conn:
        row = conn.execute("SELECT current_setting('statement_timeout') AS t").fetchone()
    assert row == {"t": "0"}
