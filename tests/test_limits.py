"""Every value a start or an enqueue accepts is one the database can store and claim: the rest
is refused at the call (pgflow.InvalidValue, a ConfigurationError and a ValueError) by every
path - App, Queue, enqueue_many, Client, the CLI, workflow declarations - and nothing is
written. The largest accepted values are stored, claimed and run."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow import limits
from tests.apps import MakeApp
from tests.inprocess import running_worker
from tests.processes import run_pgflow

BAD_SECONDS = [1e14, -1, -0.001, math.nan, math.inf, -math.inf, 1e300, True, "10", [1]]
BAD_PRIORITY = [-1, 2**31, 2**63, 1.5, True, "1"]
BAD_TEXT = ["", " ", " \t ", "a\x00b", "a\nb", "x" * 1001, "é" * 501, "\ud800", 7]


def rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pgflow.workflow_status").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("limits", app_version="limits-v1")


@pytest.fixture
def flows(app: pgflow.App) -> dict[str, Any]:
    @app.workflow(name="echo")
    def echo(x: Any) -> Any:
        return x

    return {
        "echo": echo,
        "plain": app.queue("plain"),
        "prio": app.queue("prio", priority_enabled=True),
        "parts": app.queue("parts", partitioned=True, concurrency=2),
    }


def refused(
    words: str | tuple[str, ...], call: Callable[..., Any], *args: Any, **kwargs: Any
) -> str:
    """``call(*args, **kwargs)`` raises InvalidValue whose message holds every word."""
    if isinstance(words, str):
        words = (words,)
    with pytest.raises(pgflow.InvalidValue) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, pgflow.ConfigurationError)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    for word in words:
        assert word in message, message
    return message


# -- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_SECONDS, ids=repr)
def test_seconds_out_of_range_are_refused(bad: Any) -> None:
    message = refused("timeout", limits.check_seconds, "timeout", bad)
    if isinstance(bad, float):
        assert "100 years" in message


@pytest.mark.parametrize("bad", BAD_PRIORITY, ids=repr)
def test_priority_out_of_int4_is_refused(bad: Any) -> None:
    refused(("priority", "0", "2,147,483,647"), limits.check_priority, bad)


@pytest.mark.parametrize("bad", BAD_TEXT, ids=repr)
def test_ids_postgres_cannot_store_or_index_are_refused(bad: Any) -> None:
    refused("dedup_id", limits.check_id, "dedup_id", bad)


def test_the_boundaries_are_accepted() -> None:
    assert limits.check_seconds("delay", 0) == 0.0
    assert limits.check_seconds("timeout", limits.MAX_SECONDS) == limits.MAX_SECONDS
    assert limits.to_ms("timeout", 0.0001) == 1
    assert limits.check_priority(None) == 0 and limits.check_priority(2**31 - 1) == 2**31 - 1
    assert limits.check_id("workflow_id", "x" * 1000) == "x" * 1000
    assert limits.check_id("workflow_id", "é" * 500) == "é" * 500
    assert limits.check_id("workflow_id", "🎉 a b") == "🎉 a b"


# -- every path refuses them, before writing anything --------------------------------------


def test_every_enqueue_and_start_path_refuses_bad_values(
    app: pgflow.App, flows: dict[str, Any], database_url: str
) -> None:
    echo, plain, prio, parts = flows["echo"], flows["plain"], flows["prio"], flows["parts"]
    v = {"app_version": "limits-v1"}
    with pgflow.Client(database_url) as client:
        for bad in BAD_SECONDS:
            refused("timeout", plain.options, timeout=bad)
            refused("delay", plain.options, delay=bad)
            refused("timeout", app.options, timeout=bad)
            with pytest.raises(pgflow.InvalidValue):
                app.workflow(name=f"late-{bad!r}", timeout=bad)(lambda: None)  # type: ignore[arg-type]
            refused("timeout", client.enqueue, "plain", "echo", 1, timeout=bad, **v)
            refused("delay", client.enqueue, "plain", "echo", 1, delay=bad, **v)
        for bad in BAD_PRIORITY:
            refused("priority", prio.options, priority=bad)
            refused("priority", client.enqueue, "prio", "echo", 1, priority=bad, **v)
        for bad in BAD_TEXT:
            refused("workflow_id", plain.options, workflow_id=bad)
            refused("dedup_id", plain.options, dedup_id=bad)
            refused("partition_key", parts.options, partition_key=bad)
            refused("workflow_id", app.options, workflow_id=bad)
            if bad != "":  # an empty name= means "the function's qualified name"
                with pytest.raises(pgflow.InvalidValue):
                    app.workflow(name=bad)(lambda: None)  # type: ignore[arg-type]
            refused("workflow_id", client.enqueue, "plain", "echo", 1, workflow_id=bad, **v)
            refused("dedup_id", client.enqueue, "plain", "echo", 1, dedup_id=bad, **v)
            refused("partition_key", client.enqueue, "parts", "echo", 1, partition_key=bad, **v)
            refused("workflow name", client.enqueue, "plain", bad, 1, **v)
        for bad_count in (-1, 2**31, 1.5):
            refused(
                "max_recovery_attempts",
                client.enqueue,
                "plain",
                "echo",
                1,
                max_recovery_attempts=bad_count,
                **v,
            )
        refused("app_version", client.enqueue, "plain", "echo", 1, app_version="v\x00")
    with pytest.raises(pgflow.InvalidValue):
        app.workflow(name="too-many", max_recovery_attempts=2**31)(lambda: None)
    with pytest.raises(pgflow.InvalidValue):
        app.step(name="a\x00b")(lambda: None)
    for setting in (
        {"max_payload_bytes": 2**40},
        {"max_payload_bytes": 0},
        {"max_recovery_attempts": 2**31},
        {"app_version": "x" * 201},
    ):
        with pytest.raises(pgflow.InvalidValue):
            pgflow.App("bad", database_url=database_url, **setting)
    for rate in ((1, 1e300), (2**31, 1.0), (1, math.nan), (1, 0)):
        with pytest.raises(pgflow.ConfigurationError):
            pgflow.Rate(*rate)
    with pytest.raises(pgflow.ConfigurationError):
        app.queue("huge", concurrency=2**31)
    # enqueue_many goes through the same options
    with pytest.raises(pgflow.InvalidValue):
        plain.options(timeout=1e14).enqueue_many(echo, [(1,), (2,)])
    assert rows(database_url) == 0


def test_cli_enqueue_refuses_with_one_line(
    app: pgflow.App, flows: dict[str, Any], database_url: str
) -> None:
    env = {**os.environ, "PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"}
    for flag, value in (
        ("--timeout", "1e14"),
        ("--delay", "nan"),
        ("--priority", "-5"),
        ("--workflow-id", " "),
    ):
        out = run_pgflow(
            "enqueue", "prio", "echo", "[1]", flag, value, "--app-version", "limits-v1", env=env
        )
        assert out.returncode == 1, out
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert flag.strip("-").replace("-", "_") in out.stderr, out.stderr
    assert rows(database_url) == 0


# -- the largest accepted values are stored, claimed and run ---------------------------------


def test_largest_accepted_values_are_claimed_and_run(
    app: pgflow.App, flows: dict[str, Any], database_url: str
) -> None:
    echo, prio, parts = flows["echo"], flows["prio"], flows["parts"]
    big = [
        prio.options(
            workflow_id="w" * 1000,
            dedup_id="é" * 500,
            priority=2**31 - 1,
            timeout=limits.MAX_SECONDS / 2,
        ).enqueue(echo, 1),
        parts.options(
            partition_key="🎉" * 250, dedup_id="d" * 1000, timeout=limits.MAX_SECONDS
        ).enqueue(echo, 2),
        prio.options(priority=0, timeout=0.0).enqueue(echo, 3),
    ]
    big += prio.options(timeout=limits.MAX_SECONDS).enqueue_many(echo, [(4,), (5,)])
    with running_worker(app):
        assert big[0].result(timeout=30) == 1
        assert big[1].result(timeout=30) == 2
        for h, x in zip(big[3:], (4, 5), strict=True):
            assert h.result(timeout=30) == x
        # A zero timeout is a deadline already passed: cancelled, never stuck.
        with pytest.raises(pgflow.WorkflowCancelled):
            big[2].result(timeout=30)
    assert big[0].status().deadline is not None
