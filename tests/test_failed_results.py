"""What ``result()`` raises for a workflow that ended in ERROR: its own exception when this
process can rebuild it, else ``pgflow.WorkflowFailed`` (the exported name is the raised one)."""

from __future__ import annotations

import pickle

import pytest

import pgflow
from pgflow.serialization import RecordedError, dumps_error, loads_error
from tests.apps import MakeApp


class Declined(Exception):
    """Module level: any reader that imported this module rebuilds it."""


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("failed")


def test_an_error_that_cannot_be_rebuilt_raises_workflow_failed(app: pgflow.App) -> None:
    class Unreachable(Exception):  # a local class: no reader can find it by name
        pass

    @app.workflow()
    def breaks() -> None:
        raise Unreachable("the card was declined")

    handle = app.start(breaks)
    with pytest.raises(pgflow.WorkflowFailed) as caught:
        handle.result(timeout=30)
    failed = caught.value
    assert isinstance(failed, pgflow.PgflowError)
    assert failed.error_type.endswith("<locals>.Unreachable")
    assert failed.message == "the card was declined"
    assert failed.workflow_id == handle.workflow_id
    assert "raise Unreachable" in (failed.traceback_text or "")
    assert str(failed) == (
        f"workflow {handle.workflow_id} failed with {failed.error_type}: the card was declined"
    )
    # The record (app.retrieve, the CLI) reads the same error, without a workflow id.
    recorded = app.retrieve(handle.workflow_id).status().error
    assert isinstance(recorded, pgflow.WorkflowFailed) and recorded.workflow_id is None


def test_an_error_that_can_be_rebuilt_is_raised_as_itself(app: pgflow.App) -> None:
    @app.workflow()
    def declines() -> None:
        raise Declined("no funds")

    with pytest.raises(Declined, match="no funds"):
        app.start(declines).result(timeout=30)


def test_a_parent_waiting_on_a_failed_child_fails_with_the_childs_error(app: pgflow.App) -> None:
    class Unreachable(Exception):
        pass

    @app.workflow()
    def child() -> None:
        raise Unreachable("deep down")

    @app.workflow()
    def parent() -> None:
        app.start(child).result()

    handle = app.start(parent)
    with pytest.raises(pgflow.WorkflowFailed) as caught:
        handle.result(timeout=30)
    # The child's failure, recorded as the parent's error, still names the child.
    assert caught.value.workflow_id == f"{handle.workflow_id}-1"
    assert caught.value.message == "deep down"


def test_workflow_failed_survives_pickle_and_recording() -> None:
    failed = pgflow.WorkflowFailed("shop.Gone", "it broke", "Traceback ...", workflow_id="w1")
    back = pickle.loads(pickle.dumps(failed))
    assert (back.error_type, back.message, back.traceback_text, back.workflow_id, str(back)) == (
        "shop.Gone",
        "it broke",
        "Traceback ...",
        "w1",
        str(failed),
    )
    again = loads_error(dumps_error(failed))
    assert isinstance(again, pgflow.WorkflowFailed)
    assert (again.error_type, again.message, again.workflow_id) == ("shop.Gone", "it broke", "w1")
    assert RecordedError is pgflow.WorkflowFailed  # the older name, kept
