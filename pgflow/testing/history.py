"""Check a queue's recorded history against its flow control.

``check_history`` reads every ``workflow_status`` row of a queue and checks, from the recorded
times (``{schema}.clock()``), that the queue's limits held:

- ``concurrency``: no more rows PENDING at once than the limit, by a sweep over
  ``[started_at, completed_at)``; per partition key on a partitioned queue;
- ``worker_concurrency``: the same per executor (worker process); per executor and key on a
  partitioned queue;
- ``rate_limit``: no more starts than the limit within any window shorter than ``per``;
- priority and FIFO order: no row started while a row ahead of it (lower priority number,
  then earlier enqueue; same partition key) was already eligible and still waiting;
- deduplication: no dedup id on two active rows.

The history keeps each row's last run only: a run that crashed and was re-queued leaves no
interval, and such rows (``attempt`` > 1) are left out of the order check. What is checked is
therefore a lower bound of what happened: a failure is always a real violation.

The checks are pure functions of the rows (``check_rows``), so they can be tested on
hand-made histories too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .. import context
from ..errors import ConfigurationError
from ..queues import Queue

if TYPE_CHECKING:
    from ..app import App

ACTIVE = ("ENQUEUED", "PENDING")
T = TypeVar("T", datetime, float)


@dataclass(frozen=True)
class HistoryRow:
    """One ``workflow_status`` row of a queue, as ``check_history`` reads it."""

    workflow_id: str
    seq: int
    name: str
    status: str
    app_version: str | None
    dedup_id: str | None
    priority: int
    partition_key: str | None
    executor_id: str | None
    attempt: int
    recovery_attempts: int
    created_at: datetime
    not_before: datetime | None
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> HistoryRow:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Span:
    """When one workflow body ran (``time.monotonic()`` seconds), recorded by the test."""

    start: float
    end: float
    workflow_id: str | None = None
    partition_key: str | None = None
    worker: str | None = None


class Spans:
    """A thread-safe recorder of workflow bodies, for ``check_history(..., spans=...)``.

    >>> spans = Spans()
    >>> @app.workflow()
    ... def send_email(to: str) -> None:
    ...     with spans.record():
    ...         deliver(to)
    """

    def __init__(self) -> None:
        self._items: list[Span] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def record(self, partition_key: str | None = None) -> Iterator[None]:
        """Record the block as one span of the current workflow (and its worker)."""
        ctx = context.current()
        start = time.monotonic()
        try:
            yield
        finally:
            span = Span(
                start,
                time.monotonic(),
                workflow_id=ctx.workflow_id if ctx else None,
                partition_key=partition_key,
                worker=ctx.executor_id if ctx else None,
            )
            with self._lock:
                self._items.append(span)

    def clear(self) -> None:
        """Forget every span (at the start of each hypothesis example)."""
        with self._lock:
            self._items.clear()

    def __iter__(self) -> Iterator[Span]:
        with self._lock:
            return iter(list(self._items))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def load_history(app: App, queue: Queue | str) -> list[HistoryRow]:
    """Every row of ``queue``, in enqueue order."""
    name = queue if isinstance(queue, str) else queue.name
    rows = app.db.fetchall("testing_queue_history", {"queue_name": name})
    return [HistoryRow.from_row(r) for r in rows]


def check_history(
    app: App,
    queue: Queue | str,
    *,
    spans: Iterable[Span] = (),
    check_order: bool = True,
    tolerance: float = 0.0,
) -> list[HistoryRow]:
    """Raise AssertionError, saying which workflows and when, unless the recorded history of
    ``queue`` honours its limits (see the module's doc). Returns the rows it checked.

    ``spans`` (recorded by the test, e.g. with :class:`Spans`) are checked against the
    concurrency limits too. ``tolerance`` (seconds) forgives order inversions closer than that,
    for tests that enqueue while workers claim, or claim from several workers at once.

    >>> drain(app, clock=Clock(app))
    >>> check_history(app, emails)
    """
    q = app.queues[queue] if isinstance(queue, str) else queue
    rows = load_history(app, q)
    check_rows(
        q,
        rows,
        spans=spans,
        app_version=app.app_version,
        names=set(app.registry.workflows),
        check_order=check_order,
        tolerance=tolerance,
    )
    return rows


def check_rows(
    queue: Queue,
    rows: Sequence[HistoryRow],
    *,
    spans: Iterable[Span] = (),
    app_version: str | None = None,
    names: Collection[str] | None = None,
    check_order: bool = True,
    tolerance: float = 0.0,
) -> None:
    """The checks of :func:`check_history` on given rows (pure: no database)."""
    _check_dedup(queue, rows)
    groups = _by_partition(queue, rows)
    for key, group in groups.items():
        label = _label(queue, key)
        if queue.concurrency is not None:
            _check_overlap(
                f"{label}: concurrency={queue.concurrency}", queue.concurrency, _intervals(group)
            )
        if queue.rate_limit is not None:
            _check_rate(label, queue.rate_limit.limit, queue.rate_limit.per, group)
        if check_order:
            _check_order(label, group, app_version, names, timedelta(seconds=tolerance))
    if queue.worker_concurrency is not None:
        by_executor: dict[tuple[str, str | None], list[HistoryRow]] = defaultdict(list)
        for r in rows:
            if r.executor_id is not None:
                key = r.partition_key if queue.partitioned else None
                by_executor[(r.executor_id, key)].append(r)
        for (executor, key), group in by_executor.items():
            where = "" if key is None else f", partition {key!r}"
            _check_overlap(
                f"queue {queue.name!r}, executor {executor}{where}: "
                f"worker_concurrency={queue.worker_concurrency}",
                queue.worker_concurrency,
                _intervals(group),
            )
    _check_spans(queue, list(spans))


# -- the checks ----------------------------------------------------------------------------------


def _label(queue: Queue, key: str | None) -> str:
    return f"queue {queue.name!r}" + (f", partition {key!r}" if queue.partitioned else "")


def _by_partition(queue: Queue, rows: Sequence[HistoryRow]) -> dict[str | None, list[HistoryRow]]:
    groups: dict[str | None, list[HistoryRow]] = defaultdict(list)
    for r in rows:
        groups[r.partition_key if queue.partitioned else None].append(r)
    return groups


def _check_dedup(queue: Queue, rows: Sequence[HistoryRow]) -> None:
    holders: dict[str, str] = {}
    for r in rows:
        if r.dedup_id is None or r.status not in ACTIVE:
            continue
        if r.dedup_id in holders:
            raise AssertionError(
                f"queue {queue.name!r}: dedup id {r.dedup_id!r} is held by two active "
                f"workflows, {holders[r.dedup_id]} and {r.workflow_id}"
            )
        holders[r.dedup_id] = r.workflow_id


def _intervals(rows: Iterable[HistoryRow]) -> list[tuple[datetime, datetime | None, str]]:
    """[started_at, completed_at) of each row's last run; still open while PENDING. A row that
    went back to ENQUEUED after a start ran until an unrecorded time: left out."""
    out: list[tuple[datetime, datetime | None, str]] = []
    for r in rows:
        if r.started_at is None:
            continue
        if r.status == "PENDING":
            out.append((r.started_at, None, r.workflow_id))
        elif r.status not in ACTIVE and r.completed_at is not None:
            out.append((r.started_at, r.completed_at, r.workflow_id))
    return out


def first_excess(
    intervals: Iterable[tuple[T, T | None, Hashable]], limit: int
) -> tuple[T, list[Hashable]] | None:
    """The first moment more than ``limit`` half-open intervals ``[start, end)`` overlap, with
    the ids of those running then; None when never (an end of None is still open)."""
    events: list[tuple[Any, int, Hashable]] = []
    for start, end, ident in intervals:
        if end is not None and end <= start:
            continue  # empty: it never ran for any length of time
        events.append((start, 1, ident))
        if end is not None:
            events.append((end, 0, ident))  # 0 sorts first: an end frees its slot at once
    events.sort(key=lambda e: (e[0], e[1]))
    running: dict[Hashable, None] = {}
    for i, (moment, kind, ident) in enumerate(events):
        if kind == 0:
            running.pop(ident, None)
        else:
            running[ident] = None
        last_at_moment = i + 1 == len(events) or events[i + 1][0] != moment
        if last_at_moment and len(running) > limit:
            return moment, list(running)
    return None


def _check_overlap(
    what: str, limit: int, intervals: Sequence[tuple[T, T | None, Hashable]]
) -> None:
    found = first_excess(intervals, limit)
    if found is not None:
        moment, ids = found
        raise AssertionError(
            f"{what} exceeded: {len(ids)} workflows ran at once at {moment}: "
            f"{', '.join(map(str, ids))}"
        )


def _check_rate(label: str, limit: int, per: float, rows: Sequence[HistoryRow]) -> None:
    # A claim counts the starts newer than (its time - per): any starts less than `per` apart
    # were all counted by the last of their claims, so they are at most `limit`.
    window = timedelta(microseconds=round(per * 1e6))
    starts = sorted((r.started_at, r.workflow_id) for r in rows if r.started_at is not None)
    first = 0
    for last in range(len(starts)):
        while starts[last][0] - starts[first][0] >= window:
            first += 1
        if last - first + 1 > limit:
            inside = starts[first : last + 1]
            raise AssertionError(
                f"{label}: rate_limit={limit}/{per:g}s exceeded: {len(inside)} workflows "
                f"started within {(inside[-1][0] - inside[0][0]).total_seconds():g}s, from "
                f"{inside[0][0]} to {inside[-1][0]}: {', '.join(i for _, i in inside)}"
            )


def _check_order(
    label: str,
    rows: Sequence[HistoryRow],
    app_version: str | None,
    names: Collection[str] | None,
    tolerance: timedelta,
) -> None:
    def claimable(r: HistoryRow) -> bool:
        return (
            (app_version is None or r.app_version == app_version)
            and (names is None or r.name in names)
            and r.attempt <= 1
        )

    waiting = sorted((r for r in rows if claimable(r)), key=lambda r: (r.priority, r.seq))
    for b in rows:
        if b.started_at is None or b.attempt != 1:
            continue
        t = b.started_at
        for a in waiting:
            if (a.priority, a.seq) >= (b.priority, b.seq):
                break
            if a.created_at >= t - tolerance or (a.not_before is not None and a.not_before > t):
                continue  # not yet enqueued, or still delayed, when b was claimed
            if a.started_at is not None and a.started_at <= t + tolerance:
                continue  # claimed no later than b
            if a.started_at is None and a.status != "ENQUEUED":
                continue  # left the queue (cancelled) at an unrecorded time
            since = max(a.created_at, a.not_before or a.created_at)
            raise AssertionError(
                f"{label}: priority/FIFO order broken: {b.workflow_id} (priority {b.priority}, "
                f"seq {b.seq}) started at {t} while {a.workflow_id} (priority {a.priority}, "
                f"seq {a.seq}), ahead of it and eligible since {since}, "
                f"{'started only at ' + str(a.started_at) if a.started_at else 'never started'}"
            )


def _check_spans(queue: Queue, spans: Sequence[Span]) -> None:
    if not spans:
        return
    if queue.partitioned and queue.concurrency is not None:
        keyless = [
            s.workflow_id or f"span {i}" for i, s in enumerate(spans) if s.partition_key is None
        ]
        if keyless:
            # Limits apply per key there: a span without its key cannot be checked.
            raise ConfigurationError(
                f"queue {queue.name!r} is partitioned: record each span with its key, "
                f"spans.record(partition_key=...); {len(keyless)} span(s) have none "
                f"({', '.join(map(str, keyless[:5]))})"
            )

    def check(what: str, limit: int, key: Callable[[Span], Any]) -> None:
        groups: dict[Any, list[Span]] = defaultdict(list)
        for s in spans:
            groups[key(s)].append(s)
        for k, group in groups.items():
            if k is None and what != "concurrency":
                continue
            intervals = [
                (s.start, s.end, s.workflow_id or f"span {i}") for i, s in enumerate(group)
            ]
            found = first_excess(intervals, limit)
            if found is not None:
                moment, ids = found
                where = "" if k is None else f" ({k})"
                raise AssertionError(
                    f"queue {queue.name!r}{where}: {what}={limit} exceeded by recorded spans: "
                    f"{len(ids)} bodies ran at once at monotonic {moment:.6f}: "
                    f"{', '.join(map(str, ids))}"
                )

    if queue.concurrency is not None:
        if queue.partitioned:
            check("partition concurrency", queue.concurrency, lambda s: s.partition_key)
        else:
            check("concurrency", queue.concurrency, lambda s: None)
    if queue.worker_concurrency is not None:
        if queue.partitioned:  # per worker and key
            check(
                "worker_concurrency",
                queue.worker_concurrency,
                lambda s: (s.worker, s.partition_key),
            )
        else:
            check("worker_concurrency", queue.worker_concurrency, lambda s: s.worker)
