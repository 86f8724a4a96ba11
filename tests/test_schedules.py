"""Cron schedules: the pure tick arithmetic, exactly-once ticks under racing workers, catch-up,
and the worker's claim loop driving them."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pgflow
from pgflow import schedules
from pgflow.schedules import due_ticks, tick_id
from tests.inprocess import running_worker, wait_for

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


# -- pure --------------------------------------------------------------------------------------


def test_due_ticks_latest_only_or_all() -> None:
    after = T0 + timedelta(minutes=2)
    now = T0 + timedelta(minutes=17, seconds=30)
    assert due_ticks("*/5 * * * *", after, now, catch_up=False) == [T0 + timedelta(minutes=15)]
    assert due_ticks("*/5 * * * *", after, now, catch_up=True) == [
        T0 + timedelta(minutes=m) for m in (5, 10, 15)
    ]
    # A tick exactly at `now` is due; one exactly at `after` was done already.
    assert due_ticks("*/5 * * * *", T0, T0 + timedelta(minutes=5), catch_up=False) == [
        T0 + timedelta(minutes=5)
    ]
    assert due_ticks("*/5 * * * *", T0, T0 + timedelta(minutes=4), catch_up=True) == []
    assert due_ticks("* * * * *", T0, T0 + timedelta(hours=1), catch_up=True, limit=7) == [
        T0 + timedelta(minutes=m) for m in range(1, 8)
    ]


@settings(max_examples=100, deadline=None)
@given(
    after=st.integers(0, 10_000),
    span=st.integers(0, 2_000),
    every=st.sampled_from([1, 2, 5, 7, 15, 30]),
)
def test_due_ticks_properties(after: int, span: int, every: int) -> None:
    cron = f"*/{every} * * * *"
    start = T0 + timedelta(seconds=after * 7)
    now = start + timedelta(seconds=span * 7)
    all_ticks = due_ticks(cron, start, now, catch_up=True, limit=10_000)
    latest = due_ticks(cron, start, now, catch_up=False)
    assert all(start < t <= now for t in all_ticks)
    assert all(t.minute % every == 0 and t.second == 0 for t in all_ticks)
    assert all_ticks == sorted(set(all_ticks))
    assert latest == all_ticks[-1:]


def test_six_fields_read_seconds_first() -> None:
    # As DBOS and Quartz read them: "*/10 * * * * *" is every ten seconds (croniter's own
    # default, seconds last, made it every second of every tenth minute).
    assert due_ticks("*/10 * * * * *", T0, T0 + timedelta(seconds=35), catch_up=True) == [
        T0 + timedelta(seconds=s) for s in (10, 20, 30)
    ]
    assert due_ticks("30 */2 * * * *", T0, T0 + timedelta(minutes=5), catch_up=True) == [
        T0 + timedelta(minutes=m, seconds=30) for m in (0, 2, 4)
    ]
    with pytest.raises(pgflow.ConfigurationError, match="seconds first"):
        schedules.validate_cron("* * * * * 70")
    with pytest.raises(pgflow.ConfigurationError, match="seconds first"):
        schedules.validate_cron("0 0 * * * * 2030")


def test_tick_ids_are_stable_utc_text() -> None:
    local = T0.astimezone(timezone(timedelta(hours=2)))
    assert (
        tick_id("report", local)
        == tick_id("report", T0)
        == "sched:report:2030-01-01T12:00:00+00:00"
    )


# -- against the database ----------------------------------------------------------------------


def build_app(
    url: str, runs: list[datetime] | None = None, catch_up: bool = False, cron: str = "* * * * *"
) -> pgflow.App:
    """One "machine": an App with the same scheduled workflow as every other one."""
    app = pgflow.App("sched", database_url=url, app_version="sched-v1")

    @app.step()
    def record(at: datetime) -> None:
        if runs is not None:
            runs.append(at)

    @app.scheduled(cron, catch_up=catch_up)
    @app.workflow(name="report")
    def report(at: datetime) -> str:
        record(at)
        return at.isoformat()

    return app


@pytest.fixture
def apps(database_url: str) -> Iterator[Any]:
    made: list[pgflow.App] = []

    def make(**kwargs: Any) -> pgflow.App:
        app = build_app(database_url, **kwargs)
        made.append(app)
        return app

    yield make
    for app in made:
        app.shutdown(timeout=5)


def test_each_tick_runs_once_with_three_racing_workers(apps: Any) -> None:
    runs: list[datetime] = []
    machines = [apps(runs=runs, catch_up=True) for _ in range(3)]
    schedules.tick(machines[0], now=T0)  # first seen at T0
    moments = [T0 + timedelta(seconds=s) for s in range(20, 12 * 60, 20)]  # 12 minutes
    inserted: list[list[str]] = [[] for _ in machines]
    barrier = threading.Barrier(len(machines))

    def worker(i: int) -> None:
        for now in moments:
            barrier.wait(10)
            inserted[i].extend(schedules.tick(machines[i], now=now))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(machines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [wid for ids in inserted for wid in ids]
    expected = [tick_id("report", T0 + timedelta(minutes=m)) for m in range(1, 12)]
    assert sorted(every) == sorted(expected)  # each tick inserted by exactly one worker
    queued = machines[0].list_queued(schedules.SCHEDULE_QUEUE)
    assert sorted(w.workflow_id for w in queued) == sorted(expected)
    with running_worker(machines[1]):
        for wid in expected:
            machines[1].retrieve(wid).result(timeout=10)
    assert Counter(runs) == Counter({T0 + timedelta(minutes=m): 1 for m in range(1, 12)})
    assert all(r.tzinfo is not None for r in runs)


def test_missed_ticks_catch_up_or_only_the_latest(apps: Any) -> None:
    latest_only = apps()
    schedules.tick(latest_only, now=T0)
    assert schedules.tick(latest_only, now=T0 + timedelta(minutes=10, seconds=5)) == [
        tick_id("report", T0 + timedelta(minutes=10))
    ]
    assert schedules.tick(latest_only, now=T0 + timedelta(minutes=10, seconds=50)) == []


def test_catch_up_runs_every_missed_tick(database_url: str, apps: Any) -> None:
    app = apps(catch_up=True)
    schedules.tick(app, now=T0)
    ids = schedules.tick(app, now=T0 + timedelta(minutes=10, seconds=5))
    assert ids == [tick_id("report", T0 + timedelta(minutes=m)) for m in range(1, 11)]
    [status] = app.list_workflows(status="ENQUEUED", limit=1)
    assert status.inputs == {"args": [T0 + timedelta(minutes=1)], "kwargs": {}}
    assert status.queue_name == "pgflow.schedules"


def test_a_schedule_never_runs_ticks_from_before_it_was_first_seen(apps: Any) -> None:
    app = apps(catch_up=True)
    assert schedules.tick(app, now=T0 + timedelta(seconds=59)) == []  # registered here
    assert schedules.tick(app, now=T0 + timedelta(minutes=1)) == [
        tick_id("report", T0 + timedelta(minutes=1))
    ]


def test_the_worker_drives_schedules(apps: Any) -> None:
    runs: list[datetime] = []
    app = apps(runs=runs, cron="* * * * * *")  # every second
    other = app.queue("other")
    with running_worker(app, other.name):  # the schedule queue is served all the same
        wait_for(lambda: len(runs) >= 2, timeout=6, what="two ticks to run")
    assert runs[0].tzinfo is not None and runs[0].microsecond == 0
    ticks = app.list_workflows(name="report", status="SUCCESS")
    assert len(ticks) == len({t.workflow_id for t in ticks}) >= 2


def test_scheduled_checks_its_arguments(database_url: str) -> None:
    app = pgflow.App("bad", database_url=database_url)
    with pytest.raises(pgflow.ConfigurationError, match="cron"):
        app.scheduled("every minute")
    with pytest.raises(pgflow.ConfigurationError, match="one argument"):

        @app.scheduled("* * * * *")
        def no_args() -> None: ...

    @app.scheduled("0 * * * *")
    def plain(at: datetime) -> None:  # a plain function becomes a workflow
        ...

    assert plain.__pgflow_workflow__.name in app.schedules  # type: ignore[attr-defined]
    assert "pgflow.schedules" in app.queues
