"""Management semantics DBOS users rely on (issue 13, item 3): resume of waiting and
succeeded workflows, id conflicts between functions, send to an unknown id, fork and events,
Deduplicated inside a workflow, unlimited recovery attempts, and the checks on ids and
priorities at every entry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import pgflow


@pytest.fixture
def make_app(database_url: str) -> Iterator[Any]:
    apps: list[pgflow.App] = []

    def make(name: str = "dbos", **kwargs: Any) -> pgflow.App:
        app = pgflow.App(name, database_url=database_url, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        app.shutdown(timeout=5)


@pytest.fixture
def client(database_url: str) -> Iterator[pgflow.Client]:
    with pgflow.Client(database_url) as c:
        yield c


# -- one id, one function ----------------------------------------------------------------------

def test_a_different_function_under_a_taken_id_is_a_conflict(
        make_app: Any, client: pgflow.Client) -> None:
    app = make_app()
    q = app.queue("conflicts")

    @app.workflow(name="first")
    def first() -> str:
        return "first's result"

    @app.workflow(name="second")
    def second() -> str:
        return "second's result"

    assert app.options(workflow_id="taken").call(first) == "first's result"
    # The same function under the same id is the same execution: its result comes back.
    assert app.options(workflow_id="taken").call(first) == "first's result"
    assert app.options(workflow_id="taken").start(first).result(timeout=5) == "first's result"
    starts = [
        lambda: app.options(workflow_id="taken").call(second),
        lambda: app.options(workflow_id="taken").start(second),
        lambda: q.options(workflow_id="taken").enqueue(second),
        lambda: client.enqueue("conflicts", "second", workflow_id="taken",
                               app_version=app.app_version),
    ]
    for start in starts:
        with pytest.raises(pgflow.WorkflowConflict, match=r"'first'.*'second'") as err:
            start()
        assert (err.value.workflow_id, err.value.existing_name, err.value.requested_name) == (
            "taken", "first", "second")
    assert isinstance(err.value, pgflow.PgflowError)
    # An enqueue of the same function under a taken id still stands for the existing one.
    assert q.options(workflow_id="taken").enqueue(first).result(timeout=5) == "first's result"
    assert [w.name for w in app.list_workflows()] == ["first"]
