"""Cancellation: a cancelled workflow starts no new step body, a step body that completed keeps
its checkpoint, resume never runs it again, and waits wake at once (issue 12, item 8)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pgflow
from tests.apps import MakeApp


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("cancel")


@pytest.fixture
def client(database_url: str) -> Iterator[pgflow.Client]:
    """Cancels from another program: only the NOTIFY tells this process."""
    client = pgflow.Client(database_url)
    yield client
    client.close()


def _canceller(how: str, app: pgflow.App, client: pgflow.Client) -> Any:
    if how == "app":
        return app.cancel

    def cancel(workflow_id: str) -> None:
        client.cancel(workflow_id)
        time.sleep(0.3)  # the NOTIFY's way round to this process's listener

    return cancel


@pytest.mark.parametrize("how", ["app", "client"])
def test_a_workflow_cancelled_between_steps_runs_no_further_step_body(
    app: pgflow.App, client: pgflow.Client, how: str
) -> None:
    ran: list[str] = []
    between, go = threading.Event(), threading.Event()

    @app.step()
    def first() -> None:
        ran.append("first")

    @app.step()
    def second() -> None:
        ran.append("second")

    @app.workflow()
    def flow() -> str:
        first()
        between.set()
        assert go.wait(10)  # workflow code between two steps
        second()
        return "done"

    handle = app.options(workflow_id="between").start(flow)
    assert between.wait(10)
    _canceller(how, app, client)("between")
    go.set()
    with pytest.raises(pgflow.WorkflowCancelled):
        handle.result(timeout=10)
    assert app.wait_idle(10)
    assert ran == ["first"]
    assert [s.name.rsplit(".", 1)[-1] for s in app.steps("between")] == ["first"]

    assert app.resume("between").result(timeout=10) == "done"
    assert ran == ["first", "second"]


@pytest.mark.parametrize("how", ["app", "client"])
def test_a_step_running_when_the_cancel_comes_keeps_its_checkpoint(
    app: pgflow.App, client: pgflow.Client, how: str
) -> None:
    effects: list[str] = []
    in_step, go = threading.Event(), threading.Event()

    @app.step()
    def charge(cents: int) -> int:
        effects.append(f"charged {cents}")  # a side effect that must happen once
        in_step.set()
        assert go.wait(10)
        return cents

    @app.step()
    def ship() -> None:
        effects.append("shipped")

    @app.workflow()
    def checkout() -> int:
        cents = charge(500)
        ship()
        return cents

    handle = app.options(workflow_id="running").start(checkout)
    assert in_step.wait(10)
    _canceller(how, app, client)("running")
    go.set()
    with pytest.raises(pgflow.WorkflowCancelled):
        handle.result(timeout=10)
    assert app.wait_idle(10)
    assert effects == ["charged 500"]
    recorded = app.steps("running")
    assert [(s.step_id, s.output, s.error) for s in recorded] == [(1, 500, None)]
    assert app.retrieve("running").status().status is pgflow.Status.CANCELLED

    assert app.resume("running").result(timeout=10) == 500
    assert effects == ["charged 500", "shipped"]  # not charged twice


@pytest.mark.parametrize("wait", ["recv", "sleep"])
def test_a_waiting_recv_or_sleep_wakes_at_once_on_cancel(
    app: pgflow.App, client: pgflow.Client, wait: str
) -> None:
    waiting = threading.Event()

    @app.workflow()
    def receiver() -> Any:
        waiting.set()
        return pgflow.recv(timeout=60)

    @app.workflow()
    def sleeper() -> str:
        waiting.set()
        pgflow.sleep(60)
        return "slept"

    handle = app.options(workflow_id="waiter").start(receiver if wait == "recv" else sleeper)
    assert waiting.wait(10)
    time.sleep(0.3)  # well into its wait
    cancelled = time.monotonic()
    client.cancel("waiter")  # from another program: the NOTIFY wakes it
    with pytest.raises(pgflow.WorkflowCancelled):
        handle.result(timeout=10)
    assert app.wait_idle(10)
    assert time.monotonic() - cancelled < 2.0
