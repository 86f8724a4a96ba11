"""A step's ``time_limit`` holds per attempt: past it the attempt raises StepTimeLimitExceeded,
an ordinary step error (retried, catchable, recorded), and its body is abandoned on its
thread. Values that could never work are refused where the step is declared."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pgflow
from pgflow.testing import drain

LIMIT = 0.5


@pytest.fixture
def app(database_url: str) -> Iterator[pgflow.App]:
    app = pgflow.App("tl", database_url=database_url)
    yield app
    app.shutdown(timeout=5)


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
    assert all(LIMIT + 0.05 <= g < LIMIT + 0.05 + 0.3 for g in gaps), gaps
    assert took < 2 * (LIMIT + 0.05) + 0.6  # well under 2 s: no attempt ran to its end
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
    assert time.monotonic() - began < LIMIT + 0.4


def test_fast_step_with_a_limit_returns_its_value_and_raises_its_own_errors(
        app: pgflow.App) -> None:
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
