"""An App's executor identity: created once however many threads ask first, kept by every run
to its end, never taken for dead by its own process (issue 12, item 6)."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow.executor import Executor
from pgflow.testing import drain
from tests.apps import MakeApp


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Threads switch as often as the interpreter allows: races show up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("busy_switching")
def test_an_apps_executor_is_created_once_however_many_threads_ask_first() -> None:
    # Before the fix about one round in ten made two executors or more.
    for _ in range(100):
        app = pgflow.App("ident", database_url="postgresql://nobody@127.0.0.1:9/none")
        barrier = threading.Barrier(16)
        seen: list[Executor] = []

        def ask(
            app: pgflow.App = app, barrier: threading.Barrier = barrier, seen: list[Executor] = seen
        ) -> None:
            barrier.wait()
            seen.append(app.executor)

        threads = [threading.Thread(target=ask) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(seen) == 16 and {id(e) for e in seen} == {id(app.executor)}


@pytest.mark.usefixtures("busy_switching")
def test_many_threads_making_the_first_calls_share_one_executor(
    make_app: MakeApp, database_url: str
) -> None:
    for round_ in range(5):
        _first_calls_at_once(make_app(f"ident{round_}"), database_url, n=16)


def _first_calls_at_once(app: pgflow.App, database_url: str, n: int) -> None:
    @app.workflow(name="double")
    def double(x: int) -> int:
        return 2 * x

    barrier = threading.Barrier(n)
    results: dict[int, Any] = {}
    owners: set[str | None] = set()

    def first_call(i: int) -> None:
        barrier.wait()
        try:
            handle = app.start(double, i)
            results[i] = handle.result(timeout=10)
            owners.add(handle.status().executor_id)
        except BaseException as exc:  # reported below, not lost on the thread
            results[i] = exc

    threads = [threading.Thread(target=first_call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: 2 * i for i in range(n)}
    mine = app.executor.executor_id
    assert rows(database_url, "SELECT executor_id FROM pgflow.executors") == [(mine,)]
    assert owners == {mine}
    app.shutdown(timeout=5)  # deregisters: the next round's App is alone again


def test_launch_then_drain_runs_each_workflow_exactly_once(
    make_app: MakeApp, database_url: str
) -> None:
    # Recovery passes every 0.1 s, so the launched App looks for dead executors all through
    # the drain.
    app = make_app(heartbeat_interval=0.1, heartbeat_timeout=5.0)
    jobs = app.queue("jobs")
    ran: Counter[str] = Counter()
    lock = threading.Lock()
    gate = threading.Event()

    def count(what: str) -> None:
        with lock:
            ran[what] += 1

    @app.step()
    def wait_for_gate() -> None:
        count("long")
        assert gate.wait(20)

    @app.workflow()
    def long_running() -> str:
        wait_for_gate()
        return "long done"

    @app.step()
    def work(n: int) -> None:
        count(f"job{n}")
        time.sleep(0.15)

    @app.workflow()
    def job(n: int) -> int:
        work(n)
        return n

    app.launch()
    started = app.start(long_running)  # owned by the App's executor, running here
    handles = [jobs.enqueue(job, i) for i in range(6)]
    summary = drain(app, threads=2, timeout=30)
    assert (summary.done, summary.failed, summary.left) == (6, 0, 0)
    gate.set()
    assert started.result(timeout=10) == "long done"
    assert [h.result(timeout=10) for h in handles] == list(range(6))
    assert app.wait_idle(10)
    assert ran == {"long": 1, **{f"job{i}": 1 for i in range(6)}}
    assert rows(
        database_url, "SELECT count(*) FROM pgflow.workflow_status WHERE status <> 'SUCCESS'"
    ) == [(0,)]
    # The App's own executor was never reaped: it still owns its row and heartbeats.
    assert (app.executor.executor_id,) in rows(
        database_url, "SELECT executor_id FROM pgflow.executors"
    )


def test_inline_run_finishes_when_the_apps_executor_is_replaced(
    make_app: MakeApp, database_url: str
) -> None:
    app = make_app()
    in_step, go = threading.Event(), threading.Event()

    @app.step()
    def wait() -> None:
        in_step.set()
        assert go.wait(10)

    @app.workflow()
    def flow() -> str:
        wait()
        return "done"

    result: list[Any] = []
    caller = threading.Thread(
        target=lambda: result.append(app.options(workflow_id="inline").call(flow)), daemon=True
    )
    caller.start()
    assert in_step.wait(10)
    first = app.executor
    replacement = Executor(app)
    replacement.ensure_registered()
    app.use_executor(replacement)  # as a worker process does when it starts
    try:
        go.set()
        caller.join(10)
        assert result == ["done"], "the inline call was fenced out by its own process"
        status = app.retrieve("inline").status()
        assert (status.status, status.executor_id) == (pgflow.Status.SUCCESS, first.executor_id)
    finally:
        go.set()
        first.stop(deregister=True)
