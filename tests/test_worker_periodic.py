"""The worker's pure parts: the periodic-job scheduler beside the claim loop, and the
supervisor's respawn backoff."""

from __future__ import annotations

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from pgflow.db.pool import Database
from pgflow.errors import PgflowError
from pgflow.worker.periodic import MIN_INTERVAL, Periodic
from pgflow.worker.supervisor import BACKOFF_MAX, BACKOFF_START, STABLE_AFTER, respawn_delay


@pytest.fixture
def periodic(database_url: str) -> Periodic:
    # Never connects: the scheduler asks the Database only whether the server is suspect.
    return Periodic(Database(database_url, "pgflow"))


def test_due_jobs_run_in_order_then_wait_their_interval(periodic: Periodic) -> None:
    ran: list[str] = []
    periodic.add("a", 1.0, lambda: ran.append("a"), "a_failed")
    periodic.add("b", 60.0, lambda: ran.append("b"), "b_failed")
    periodic.run_due(100.0)  # everything is due at the first turn
    assert ran == ["a", "b"]
    periodic.run_due(100.5)
    assert ran == ["a", "b"]
    assert periodic.due_in(100.5) == pytest.approx(0.5)
    periodic.run_due(101.0)
    assert ran == ["a", "b", "a"]
    periodic.run_soon("b")
    periodic.run_due(101.2)
    assert ran == ["a", "b", "a", "b"]
    assert periodic.due_in(101.2) == pytest.approx(0.8)


def test_a_job_may_choose_its_next_run(periodic: Periodic) -> None:
    delays = iter([5.0, 0.0, None])
    periodic.add("retention", 300.0, lambda: next(delays), "retention_failed")
    periodic.run_due(0.0)
    assert periodic.due_in(0.0) == pytest.approx(5.0)
    periodic.run_due(5.0)  # "again at once" still waits a little: no hot loop
    assert periodic.due_in(5.0) == pytest.approx(MIN_INTERVAL)
    periodic.run_due(6.0)
    assert periodic.due_in(6.0) == pytest.approx(300.0)


def test_a_failed_job_is_logged_under_its_event_and_runs_again_next_time(
    periodic: Periodic,
) -> None:
    calls: list[str] = []

    def failing() -> None:
        calls.append("recovery")
        raise PgflowError("the reaper lost its way")

    periodic.add("recovery", 5.0, failing, "recovery_failed")
    periodic.add("paused_queues", 1.0, lambda: calls.append("paused"), "paused_check_failed")
    with structlog.testing.capture_logs() as logs:
        periodic.run_due(0.0)
    assert calls == ["recovery", "paused"]  # the others still ran
    assert [(e["event"], e["log_level"], e["error"]) for e in logs] == [
        ("recovery_failed", "warning", "the reaper lost its way")
    ]
    assert periodic.due_in(0.0) == pytest.approx(1.0)
    periodic.run_due(4.9)
    assert calls.count("recovery") == 1
    periodic.run_due(5.0)
    assert calls.count("recovery") == 2


def test_other_errors_are_bugs_and_propagate(periodic: Periodic) -> None:
    def broken() -> None:
        raise KeyError("bug")

    periodic.add("broken", 1.0, broken, "broken_failed")
    with pytest.raises(KeyError):
        periodic.run_due(0.0)


@given(
    clean=st.booleans(),
    lived=st.floats(min_value=0.0, max_value=100.0),
    backoff=st.floats(min_value=BACKOFF_START, max_value=BACKOFF_MAX),
)
def test_respawn_backoff(clean: bool, lived: float, backoff: float) -> None:
    delay, after = respawn_delay(clean, lived, backoff)
    if clean:
        assert (delay, after) == (0.0, backoff)
        return
    assert delay == (BACKOFF_START if lived > STABLE_AFTER else backoff)
    assert after == min(delay * 2, BACKOFF_MAX)
    assert BACKOFF_START <= after <= BACKOFF_MAX


def test_a_crash_loop_backs_off_to_the_cap() -> None:
    backoff, delays = BACKOFF_START, []
    for _ in range(10):
        delay, backoff = respawn_delay(False, 0.01, backoff)
        delays.append(delay)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8] and delays[-1] == BACKOFF_MAX
