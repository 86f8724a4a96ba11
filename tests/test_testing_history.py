"""The pure checks of pgflow.testing.history, on hand-made histories (no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pgflow
from pgflow.queues import Queue
from pgflow.testing import HistoryRow, Span, check_rows, first_excess

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def row(
    i: int,
    *,
    started: int | None = None,
    completed: int | None = None,
    status: str = "SUCCESS",
    **fields: Any,
) -> HistoryRow:
    values: dict[str, Any] = dict(
        workflow_id=f"w{i}",
        seq=i,
        name="job",
        status=status,
        app_version="v",
        dedup_id=None,
        priority=0,
        partition_key=None,
        executor_id="e1",
        attempt=1 if started is not None else 0,
        recovery_attempts=0,
        created_at=at(-1000),
        not_before=None,
        started_at=None if started is None else at(started),
        completed_at=None if completed is None else at(completed),
    )
    values.update(fields)
    return HistoryRow(**values)


intervals = st.lists(st.tuples(st.integers(0, 50), st.none() | st.integers(0, 60)), max_size=12)


@given(intervals, st.integers(0, 4))
def test_first_excess_finds_the_first_moment_over_the_limit(
    spans: list[tuple[int, int | None]], limit: int
) -> None:
    items = [(s, e, i) for i, (s, e) in enumerate(spans)]

    def running(t: int) -> list[int]:  # half-open [start, end); None: still open
        return [i for s, e, i in items if s <= t and (e is None or t < e) and (e is None or e > s)]

    over = [t for t in range(0, 61) if len(running(t)) > limit]
    found = first_excess(items, limit)
    if not over:
        assert found is None
    else:
        assert found is not None
        moment, ids = found
        assert moment == over[0]
        assert sorted(cast("list[int]", ids)) == running(over[0])  # the ids are the items' ints


@given(
    st.lists(st.integers(0, 3000), max_size=12), st.integers(1, 4), st.sampled_from([0.5, 1.0, 2.0])
)
def test_the_rate_check_flags_exactly_the_windows_over_the_limit(
    starts_ms: list[int], limit: int, per: float
) -> None:
    q = Queue("q", rate_limit=pgflow.Rate(limit, per=per))
    rows = [row(i, started=ms, completed=ms + 1) for i, ms in enumerate(sorted(starts_ms))]
    window = per * 1000
    too_many = any(
        sum(1 for other in starts_ms if 0 <= t - other < window) > limit for t in starts_ms
    )
    if too_many:
        with pytest.raises(AssertionError, match="rate_limit"):
            check_rows(q, rows)
    else:
        check_rows(q, rows)


def test_concurrency_is_checked_per_partition_and_per_executor() -> None:
    q = Queue("q", concurrency=1, worker_concurrency=1, partitioned=True)
    # Two keys at once: fine (the limit is per key), on two executors.
    ok = [
        row(1, started=0, completed=10, partition_key="a"),
        row(2, started=5, completed=15, partition_key="b", executor_id="e2"),
        row(3, started=10, completed=20, partition_key="a"),
    ]  # starts as 1 ends
    check_rows(q, ok)
    with pytest.raises(AssertionError, match=r"partition 'a'.*concurrency=1 exceeded.*w1, w4"):
        check_rows(q, [*ok, row(4, started=9, completed=30, partition_key="a", executor_id="e3")])
    # worker_concurrency holds per executor and key: another key on the same executor is
    # fine, the same key is not.
    per_worker = Queue("q", worker_concurrency=1, partitioned=True)
    check_rows(per_worker, [*ok, row(4, started=2, completed=3, partition_key="c")])
    with pytest.raises(AssertionError, match="executor e1, partition 'a': worker_concurrency=1"):
        check_rows(
            per_worker, [*ok, row(4, started=2, completed=3, partition_key="a")], check_order=False
        )
    # A row still PENDING holds its slot until now.
    with pytest.raises(AssertionError, match="concurrency=1 exceeded"):
        check_rows(
            q,
            [
                row(1, started=0, status="PENDING", partition_key="a"),
                row(2, started=100, completed=110, partition_key="a", executor_id="e2"),
            ],
        )


def test_order_is_priority_then_fifo_among_rows_due_at_the_claim() -> None:
    q = Queue("q", priority_enabled=True)
    check_rows(q, [row(1, started=0, completed=1), row(2, started=1, completed=2)])
    # w2 started while w1, enqueued earlier and due, waited.
    with pytest.raises(AssertionError, match=r"w2 .* started at .* while w1"):
        check_rows(q, [row(1, started=5, completed=6), row(2, started=1, completed=2)])
    # ... unless w1 was still delayed then, or enqueued after it, or ranked after it.
    check_rows(
        q, [row(1, started=5, completed=6, not_before=at(4)), row(2, started=1, completed=2)]
    )
    check_rows(
        q, [row(1, started=5, completed=6, created_at=at(3)), row(2, started=1, completed=2)]
    )
    check_rows(
        q, [row(1, started=5, completed=6, priority=2), row(2, started=1, completed=2, priority=1)]
    )
    # A row that never started but was due counts; one of another version does not.
    with pytest.raises(AssertionError, match="never started"):
        check_rows(q, [row(1, status="ENQUEUED"), row(2, started=1, completed=2)])
    check_rows(
        q,
        [row(1, status="ENQUEUED", app_version="old"), row(2, started=1, completed=2)],
        app_version="v",
    )
    # Re-queued rows (attempt > 1) leave no trustworthy order: skipped.
    check_rows(q, [row(1, started=5, completed=6, attempt=3), row(2, started=1, completed=2)])


def test_dedup_ids_are_unique_among_active_rows_only() -> None:
    q = Queue("q")
    check_rows(
        q, [row(1, started=0, completed=1, dedup_id="d"), row(2, status="ENQUEUED", dedup_id="d")]
    )
    with pytest.raises(AssertionError, match="dedup id 'd' is held by two active"):
        check_rows(
            q,
            [
                row(1, started=0, status="PENDING", dedup_id="d"),
                row(2, status="ENQUEUED", dedup_id="d"),
            ],
        )


def test_recorded_spans_are_checked_against_the_limits() -> None:
    q = Queue("q", concurrency=2, worker_concurrency=1)
    spans = [
        Span(0.0, 1.0, "a", worker="x"),
        Span(0.5, 1.5, "b", worker="y"),
        Span(1.0, 2.0, "c", worker="x"),
    ]
    check_rows(q, [], spans=spans)
    with pytest.raises(AssertionError, match="concurrency=2 exceeded by recorded spans"):
        check_rows(q, [], spans=[*spans, Span(0.7, 0.9, "d", worker="z")])
    with pytest.raises(AssertionError, match=r"\(x\): worker_concurrency=1"):
        check_rows(q, [], spans=[*spans[:2], Span(0.2, 0.3, "d", worker="x")])
