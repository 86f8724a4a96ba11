"""The pure core of `explain`: facts in, reasons out (no database). The situations the database
tests cannot easily hold still (a claimable row, an owner gone, ownerless work, a short sleep,
strict and forked rows) are checked here, rule by rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from pgflow.diagnosis import (
    Checkpoint,
    ExecutorFacts,
    Facts,
    QueueFacts,
    RecvWait,
    WorkflowFacts,
    diagnose,
    paragraph,
    span,
)

NOW = datetime(2025, 3, 2, 10, 0, 0, tzinfo=timezone.utc)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


WF = WorkflowFacts(
    workflow_id="w1",
    name="checkout",
    status="ENQUEUED",
    queue_name="jobs",
    priority=0,
    partition_key=None,
    app_version=None,
    executor_id=None,
    started_at=None,
    forked_from=None,
    not_before=None,
    updated_at=ago(5),
    completed_at=None,
)
WORKER = ExecutorFacts(
    executor_id="e1" * 8,
    hostname="web-1",
    pid=10,
    app_version="v2",
    kind="worker",
    queues=("jobs",),
    heartbeat_at=ago(2),
    alive=True,
    knows_name=True,
)
QUEUE = QueueFacts(name="jobs", declared=True)


def facts(**changes: Any) -> Facts:
    base = Facts(
        now=NOW,
        heartbeat_timeout=30.0,
        workflow=WF,
        queue=QUEUE,
        executors=(WORKER,),
        name_known=True,
    )
    return replace(base, **changes)


def codes(f: Facts) -> list[str]:
    return [r.code for r in diagnose(f)]


def test_nothing_holds_a_due_row_a_live_worker_may_claim() -> None:
    [r] = diagnose(facts())
    assert r.code == "claimable" and "should claim it at its next poll" in r.text


def test_version_rules_for_never_started_strict_and_forked_rows() -> None:
    of_v1 = replace(WF, app_version="v1")
    assert codes(facts(workflow=of_v1)) == ["claimable"]  # never started: any version
    strict = diagnose(facts(workflow=of_v1, queue=replace(QUEUE, strict_versions=True)))
    assert [r.code for r in strict] == ["wrong_version"]
    assert "queue 'jobs' is strict_versions and it was enqueued for v1" in strict[0].text
    forked = diagnose(facts(workflow=replace(of_v1, forked_from="w0")))
    assert "it was forked from w0 on version v1" in forked[0].text
    assert "retarget --from v1 --to v2" in forked[0].text
    # A worker of its own version among the live ones: nothing about versions.
    own = replace(WORKER, executor_id="e2", app_version="v1")
    started = replace(of_v1, started_at=ago(60))
    assert codes(facts(workflow=started, executors=(WORKER, own))) == ["claimable"]


def test_a_dead_worker_does_not_serve_and_the_live_versions_are_named() -> None:
    dead = replace(WORKER, alive=False)
    elsewhere = replace(WORKER, executor_id="e3", queues=("mail",), app_version="v3")
    [r] = diagnose(facts(executors=(dead, elsewhere)))
    assert r.code == "no_worker"
    assert r.text == (
        "No live worker serves queue 'jobs' (live versions elsewhere: v3): start "
        "one (`pgflow worker -A MODULE -Q jobs`)."
    )
    assert r.numbers == {"queue": "jobs", "live_executors": 1, "live_versions": ["v3"]}


def test_rate_window_of_a_key_and_one_ahead() -> None:
    q = replace(QUEUE, partitioned=True, rate_limit=3, rate_per_seconds=10.0, priority_enabled=True)
    f = facts(
        workflow=replace(WF, partition_key="eu"),
        queue=q,
        rate_used=3,
        rate_next_slot=NOW + timedelta(seconds=4),
        higher_priority_ahead=1,
    )
    rate, ahead = diagnose(f)
    assert rate.text == (
        "The rate limit of key 'eu' used 3 of 3 starts in the current 10s "
        "window; next slot at 2025-03-02 10:00:04 UTC, in 4s."
    )
    assert rate.numbers["in_s"] == 4.0
    assert ahead.text == (
        "1 workflow (1 of higher priority) is ahead of it in queue 'jobs' (key 'eu')."
    )


def test_pending_sleeping_in_its_thread() -> None:
    wake = NOW + timedelta(seconds=20)
    f = facts(
        workflow=replace(WF, status="PENDING", executor_id=WORKER.executor_id, started_at=ago(3)),
        last_checkpoint=Checkpoint(4, "pgflow.sleep", ago(1), wake),
    )
    [r] = diagnose(f)
    assert r.code == "sleeping" and r.numbers["until"] == wake and r.numbers["step"] == 4
    assert ", in a durable sleep (its step 4) until 2025-03-02 10:00:20 UTC, in 20s." in r.text
    # Once it is due, it is in the step after the sleep.
    [late] = diagnose(replace(f, last_checkpoint=Checkpoint(4, "pgflow.sleep", ago(30), ago(1))))
    assert late.code == "running" and late.numbers["step"] == 5


def test_ownerless_pending_work() -> None:
    orphan = replace(WF, status="PENDING", queue_name=None, app_version="v2", started_at=ago(9))
    [r] = diagnose(facts(workflow=orphan, queue=None))
    assert r.code == "awaiting_adoption" and r.numbers == {"app_version": "v2", "adopters": 1}
    [r] = diagnose(facts(workflow=replace(orphan, app_version="v1"), queue=None))
    assert r.code == "wrong_version" and r.numbers["live_versions"] == ["v2"]
    assert "no live executor of its version v1 that knows 'checkout'" in r.text


def test_owner_gone_and_done() -> None:
    gone = replace(WF, status="PENDING", executor_id="lost")
    assert codes(facts(workflow=gone)) == ["owner_gone"]
    ended = replace(WF, status="ERROR", completed_at=ago(90))
    [r] = diagnose(facts(workflow=ended))
    assert r.text == "It is done: ERROR at 2025-03-02 09:58:30 UTC (1m30s ago); nothing blocks it."
    assert paragraph(facts(workflow=ended), [r]).startswith(
        "Workflow w1 (checkout) is ERROR on queue 'jobs'. It is done"
    )


def test_span() -> None:
    assert [span(s) for s in (0.25, 9.6, 65, 7322, 90000)] == [
        "250ms",
        "10s",
        "1m05s",
        "2h02m",
        "1d01h",
    ]


def test_a_dead_owner_while_others_live() -> None:
    dead = replace(WORKER, executor_id="old", heartbeat_at=ago(40), alive=False)
    wf = replace(WF, status="PENDING", executor_id="old", started_at=ago(50))
    [r] = diagnose(facts(workflow=wf, executors=(dead, WORKER)))
    assert r.code == "owner_dead" and r.numbers["adoption_due"] == ago(10)
    assert r.text.endswith(
        "adoption was due at 2025-03-02 09:59:50 UTC, 10s ago: the next "
        "recovery pass of a live executor hands it back to its queue."
    )


def test_a_recv_waiting_on_its_topic_and_a_stale_record() -> None:
    running = replace(WF, status="PENDING", executor_id=WORKER.executor_id, started_at=ago(90))
    done = Checkpoint(step_id=2, name="ready", completed_at=ago(70))
    wait = RecvWait(step_id=3, topic="go", since=ago(65), until=NOW + timedelta(seconds=535))
    [r] = diagnose(facts(workflow=running, last_checkpoint=done, recv_wait=wait))
    assert r.code == "waiting_recv"
    assert r.text == (
        f"It runs on executor {WORKER.executor_id} (host web-1, pid 10, version v2; "
        "heartbeat 2s ago), waiting in recv for topic 'go' since 2025-03-02 09:58:55 UTC "
        "(1m05s ago), its step 3; it gives up at 2025-03-02 10:08:55 UTC, in 8m55s. "
        "A message sent to it on that topic wakes it."
    )
    assert r.numbers["topic"] == "go" and r.numbers["waiting_s"] == 65.0
    assert r.numbers["in_s"] == 535.0 and r.numbers["step"] == 3
    untopiced = replace(wait, topic="", until=None)
    [r] = diagnose(facts(workflow=running, last_checkpoint=done, recv_wait=untopiced))
    assert "waiting in recv for a message with no topic since " in r.text
    assert r.numbers["topic"] is None and "gives up" not in r.text
    # A record left by an earlier recv (the workflow has gone past it): not believed.
    later = replace(done, step_id=3)
    assert codes(facts(workflow=running, last_checkpoint=later, recv_wait=wait)) == ["running"]
