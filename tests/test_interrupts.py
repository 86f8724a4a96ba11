"""An interrupted run and a shutting-down executor leave nothing PENDING without a live owner
or a way to be adopted (issue 12, item 7)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import pgflow
from tests.apps import MakeApp


def owner_state(url: str, workflow_id: str) -> tuple[str, str | None, bool, int]:
    """(status, owner, whether the owner's executor row exists, recovery attempts)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT w.status, w.executor_id, e.executor_id IS NOT NULL, w.recovery_attempts "
            "FROM pgflow.workflow_status w "
            "LEFT JOIN pgflow.executors e ON e.executor_id = w.executor_id "
            "WHERE w.workflow_id = %s",
            (workflow_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def _declare(app: pgflow.App, interrupt: list[BaseException | None], calls: list[str]) -> Any:
    @app.step(name="intr.charge", retries=3, interval=0.01)
    def charge() -> str:
        calls.append("charge")
        if len(calls) == 1:
            raise ValueError("declined, try again")  # a retry is under way...
        if interrupt[0] is not None:
            raise interrupt[0]  # ...when the interrupt comes
        return "charged"

    @app.workflow(name="intr.flow")
    def flow() -> str:
        return charge()

    return flow


@pytest.mark.parametrize("how", ["call", "start"])
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_run_is_recovered_after_shutdown(
    make_app: MakeApp, database_url: str, how: str, interrupt: type[BaseException]
) -> None:
    calls: list[str] = []
    first = make_app("first", app_version="v1")
    flow = _declare(first, [interrupt()], calls)
    if how == "call":
        with pytest.raises(interrupt):
            first.options(workflow_id="wf").call(flow)
    else:
        first.options(workflow_id="wf").start(flow)
        assert first.wait_idle(10)
    first.shutdown(timeout=5)

    status, owner, owner_alive, charged = owner_state(database_url, "wf")
    assert status == "PENDING"
    assert owner is None or owner_alive, "PENDING under an executor that no longer exists"
    assert (owner, charged) == (None, 1)  # handed back as the run unwound, charged

    second = make_app("second", app_version="v1")
    _declare(second, [None], calls)
    assert second.recover_now() == 1
    assert second.retrieve("wf").result(timeout=10) == "charged"
    assert calls == ["charge", "charge", "charge"]


def test_deregistering_an_executor_releases_its_work_uncharged(
    make_app: MakeApp, database_url: str
) -> None:
    app = make_app("drained", app_version="v1")
    jobs = app.queue("jobs")

    @app.workflow(name="intr.job")
    def job() -> str:
        return "done"

    handle = jobs.enqueue(job)
    executor = app.executor
    executor.ensure_registered()
    claimed = app.db.fetchall(
        "claim_workflows",
        {
            "queue_name": "jobs",
            "app_version": app.app_version,
            "names": ["intr.job"],
            "executor_id": executor.executor_id,
            "limit": 10,
            "strict": False,
        },
    )
    assert [r["workflow_id"] for r in claimed] == [handle.workflow_id]
    # The executor goes away while it holds the workflow (a drain, a shutdown).
    executor.stop(deregister=True)
    status, owner, _, charged = owner_state(database_url, handle.workflow_id)
    assert (status, owner, charged) == ("ENQUEUED", None, 0)
