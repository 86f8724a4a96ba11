"""Properties of the pure claim budget (pgflow/budget.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pgflow.budget import claim_budget

counts = st.integers(0, 50)
limits = st.none() | st.integers(1, 50)


@given(
    free_slots=counts,
    local_running=counts,
    worker_concurrency=limits,
    concurrency=limits,
    running=counts,
    rate_limit=limits,
    started_in_window=counts,
)
def test_claim_budget_is_the_tightest_room_and_never_negative(
    free_slots: int,
    local_running: int,
    worker_concurrency: int | None,
    concurrency: int | None,
    running: int,
    rate_limit: int | None,
    started_in_window: int,
) -> None:
    n = claim_budget(
        free_slots=free_slots,
        local_running=local_running,
        worker_concurrency=worker_concurrency,
        concurrency=concurrency,
        running=running,
        rate_limit=rate_limit,
        started_in_window=started_in_window,
    )
    rooms = [free_slots]
    if worker_concurrency is not None:
        rooms.append(worker_concurrency - local_running)
    if concurrency is not None:
        rooms.append(concurrency - running)
    if rate_limit is not None:
        rooms.append(rate_limit - started_in_window)
    assert n >= 0
    assert n <= free_slots
    if worker_concurrency is not None:
        assert local_running + n <= max(worker_concurrency, local_running)
    if concurrency is not None:
        assert running + n <= max(concurrency, running)
    if rate_limit is not None:
        assert started_in_window + n <= max(rate_limit, started_in_window)
    # ... and it takes all the room there is: one more would break a limit.
    assert n == max(0, min(rooms))
