"""Versions never strand work: a workflow that never started may be started by any version that
knows its name; one that started runs only on its own version, and what no live worker can run
is reported with the command that resolves it."""

from __future__ import annotations

import threading
from typing import Any

import pgflow
from pgflow.management import stranded_work
from tests.apps import MakeApp
from tests.inprocess import running_worker, wait_for
from tests.processes import run_pgflow


def shop(app: pgflow.App, *, strict: bool | None = None) -> tuple[Any, pgflow.Queue]:
    """The same workflow, as one version of the code declares it."""
    orders = app.queue("orders", strict_versions=strict)

    @app.step(name="charge")
    def charge(n: int) -> int:
        return n * 10

    @app.workflow(name="checkout")
    def checkout(n: int) -> int:
        return charge(n) + 1

    return checkout, orders


def test_an_edit_of_the_code_strands_no_queued_work(make_app: MakeApp) -> None:
    """Work queued by version 1 is run by a worker of version 2 (which knows the name)."""
    old = make_app("versions", app_version="v1")
    checkout, orders = shop(old)
    handles = orders.enqueue_many(checkout, [(i,) for i in range(20)])
    new = make_app("versions", app_version="v2")
    shop(new)
    with running_worker(new):
        assert [h.result(timeout=20) for h in handles] == [i * 10 + 1 for i in range(20)]
    assert {h.status().app_version for h in handles} == {"v2"}


def test_strict_versions_keeps_rows_to_their_own_version(make_app: MakeApp) -> None:
    old = make_app("versions", app_version="v1")
    checkout, orders = shop(old)
    h = orders.enqueue(checkout, 1)
    new = make_app("versions", app_version="v2")
    shop(new, strict=True)
    with running_worker(new):
        wait_for(lambda: stranded_work(new.db, 30.0), what="the stranded report")
        assert h.status().status is pgflow.Status.ENQUEUED
    with running_worker(old):
        assert h.result(timeout=10) == 11


def test_started_work_runs_only_on_its_version_until_retargeted(
    make_app: MakeApp, database_url: str
) -> None:
    """A workflow parked in a durable sleep has checkpoints: version 2 does not take it; the
    report names the retarget command; once retargeted, version 2 replays it and finishes."""
    old = make_app("versions", app_version="v1", sleep_threshold=0.5)
    ran: list[str] = []

    def declare(app: pgflow.App, version: str) -> Any:
        q = app.queue("naps")

        @app.step(name="before")
        def before() -> str:
            ran.append(f"before@{version}")
            return "b"

        @app.step(name="after")
        def after() -> str:
            ran.append(f"after@{version}")
            return "a"

        @app.workflow(name="nap")
        def nap() -> str:
            first = before()
            pgflow.sleep(2.0)
            return first + after()

        return nap, q

    nap, naps = declare(old, "v1")
    h = naps.enqueue(nap)
    with running_worker(old):
        wait_for(lambda: parked(h), what="the workflow to park")
    new = make_app("versions", app_version="v2", sleep_threshold=0.5)
    declare(new, "v2")
    with running_worker(new):
        [s] = wait_for(lambda: stranded_work(new.db, 30.0), what="the stranded report")
        assert (s.app_version, s.name, s.reason, s.count) == ("v1", "nap", "wrong_version", 1)
        assert "pgflow workflows retarget --from v1 --to v2" in s.remedy
        assert h.status().status is pgflow.Status.ENQUEUED
        with pgflow.Client(database_url) as client:
            assert client.count_retarget("v1") == 1
            assert client.retarget("v1", "v2") == 1
        assert h.result(timeout=10) == "ba"
    assert ran == ["before@v1", "after@v2"]  # the replay reused step 1's checkpoint


def test_worker_concurrency_holds_per_key_on_a_partitioned_queue(make_app: MakeApp) -> None:
    """One blocked key does not stall the others on a worker (worker_concurrency=1)."""
    app = make_app("versions", app_version="v1")
    q = app.queue("parts", partitioned=True, worker_concurrency=1)
    release = threading.Event()

    @app.workflow(name="hold")
    def hold(key: str) -> str:
        if key == "slow":
            assert release.wait(20)
        return key

    slow = q.options(partition_key="slow").enqueue(hold, "slow")
    try:
        with running_worker(app, threads=4):
            wait_for(lambda: slow.status().status is pgflow.Status.PENDING, what="slow")
            fast = [q.options(partition_key=f"k{i}").enqueue(hold, f"k{i}") for i in range(3)]
            assert [h.result(timeout=10) for h in fast] == ["k0", "k1", "k2"]
            second_slow = q.options(partition_key="slow").enqueue(hold, "slow")
            # The blocked key holds its one slot on this worker: its second row waits.
            assert second_slow.status().status is pgflow.Status.ENQUEUED
            release.set()
            assert slow.result(timeout=10) == "slow"
            assert second_slow.result(timeout=10) == "slow"
    finally:
        release.set()


def test_the_burst_summary_says_why_work_is_left(database_url: str) -> None:
    with pgflow.Client(database_url) as client:
        client.enqueue("jobs", "double", 3)
    env = {"PGFLOW_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    first = run_pgflow(
        "worker", "-A", "tests.mgmt_app", "--burst", "-P", "1", "-c", "2", env=env, timeout=120
    )
    assert first.returncode == 0, first.stderr
    with pgflow.Client(database_url) as client:
        client.enqueue("jobs", "tasks.nope", 1)
    second = run_pgflow(
        "worker", "-A", "tests.mgmt_app", "--burst", "-P", "1", "-c", "2", env=env, timeout=120
    )
    assert second.returncode == 0, second.stderr
    out = second.stdout + second.stderr
    assert "1 left" in out
    assert "left: 1 x tasks.nope in jobs (unknown name)" in out, out
    assert "no registered version knows workflow 'tasks.nope'" in out


def parked(h: Any) -> bool:
    """ENQUEUED after it started (a durable sleep gave its thread back), read at once."""
    s = h.status()
    return s.status is pgflow.Status.ENQUEUED and s.started_at is not None
