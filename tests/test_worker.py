"""``pgflow worker`` as a real subprocess: flow control, crashes, drains, wake-ups, CLI errors.

Each test runs ``python -m pgflow.cli worker -A tests.worker_app ...`` against its own fresh
database. Workflows record spans and step executions on the database clock (see
tests/worker_app.py); the assertions read those tables and ``pgflow.workflow_status``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgflow
from pgflow.testing import use_database
from tests import worker_app
from tests.processes import (
    StartWorker,
    parent_of,
    process_gone,
    wait_for,
)

FAST = ["--heartbeat-interval", "0.5", "--heartbeat-timeout", "3", "--poll-interval", "0.5"]


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def app(database_url: str) -> Iterator[pgflow.App]:
    """The task module's App, pointed at this test's database, with the record tables."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(worker_app.TABLES)
    with use_database(worker_app.app, database_url) as a:
        yield a


def query(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(statement, params).fetchall()


def statuses(url: str) -> dict[str, dict[str, Any]]:
    rows = query(
        url,
        "SELECT workflow_id, name, status, queue_name, recovery_attempts, "
        "executor_id, error, created_at, started_at, completed_at, "
        "parent_workflow_id, dedup_id FROM pgflow.workflow_status",
    )
    return {r["workflow_id"]: r for r in rows}


def spans(url: str, label: str | None = None) -> list[dict[str, Any]]:
    return query(
        url,
        "SELECT * FROM public.spans WHERE %(label)s::text IS NULL "
        "OR label = %(label)s ORDER BY started, id",
        {"label": label},
    )


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """Most intervals open at one instant (an end at t comes before a start at t)."""
    events = []
    for start, end in intervals:
        assert end is not None and end >= start
        events += [(start, 1), (end, -1)]
    events.sort(key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


def worker_pids(url: str) -> dict[int, str]:
    rows = query(url, "SELECT pid, executor_id FROM pgflow.executors WHERE kind = 'worker'")
    return {r["pid"]: r["executor_id"] for r in rows}


def assert_all_success(url: str, expected: int) -> dict[str, dict[str, Any]]:
    rows = statuses(url)
    assert len(rows) == expected
    bad = {i: (r["status"], r["error"]) for i, r in rows.items() if r["status"] != "SUCCESS"}
    assert not bad
    return rows


# -- flow control ------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["4", "2"])
def test_global_concurrency_holds_across_processes(
    app: pgflow.App, database_url: str, workers: StartWorker, threads: str
) -> None:
    """concurrency=3 for the queue as a whole. With 4 threads one process may take all three
    slots; with 2 threads the third slot can only be taken by the other process."""
    for _ in range(12):
        worker_app.limited.enqueue(worker_app.timed, "limited", None, 0.3)
    w = workers("-P", "2", "-c", threads, "--burst", *FAST)
    assert w.wait(60) == 0, w.stderr()[-3000:]
    assert_all_success(database_url, 12)
    rows = spans(database_url, "limited")
    assert len(rows) == 12
    overlap = max_overlap((r["started"], r["ended"]) for r in rows)
    pids = {r["pid"] for r in rows}
    print(
        f"concurrency=3 over 2x{threads} threads: max overlap {overlap}, "
        f"spans per pid {[sum(r['pid'] == p for r in rows) for p in sorted(pids)]}"
    )
    assert overlap <= 3
    assert overlap >= 2  # the work did run in parallel
    if threads == "2":
        assert len(pids) == 2  # both processes shared the one limit


def test_worker_concurrency_holds_per_process(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    for _ in range(8):
        worker_app.per_worker.enqueue(worker_app.timed, "per_worker", None, 0.3)
    w = workers("-P", "2", "-c", "4", "--burst", *FAST)
    assert w.wait(60) == 0, w.stderr()[-3000:]
    assert_all_success(database_url, 8)
    rows = spans(database_url, "per_worker")
    assert len(rows) == 8
    by_pid: dict[int, list[tuple[datetime, datetime]]] = {}
    for r in rows:
        by_pid.setdefault(r["pid"], []).append((r["started"], r["ended"]))
    overlaps = {pid: max_overlap(iv) for pid, iv in by_pid.items()}
    print(f"worker_concurrency=1: overlap per pid {overlaps}")
    assert all(n <= 1 for n in overlaps.values()), overlaps


def test_rate_limit_holds_in_every_window(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    for _ in range(15):
        worker_app.rated.enqueue(worker_app.timed, "rated", None, 0.05)
    w = workers("-P", "2", "-c", "4", "--burst", *FAST)
    assert w.wait(60) == 0, w.stderr()[-3000:]
    rows = assert_all_success(database_url, 15)
    # The claim time on the database clock is what the limit governs; sweep every window
    # [start, start + 1 s) that begins at a start.
    starts = sorted(r["started_at"] for r in rows.values())
    worst = max(sum(1 for s in starts if t <= s < t + timedelta(seconds=1.0)) for t in starts)
    spread = (starts[-1] - starts[0]).total_seconds()
    print(
        f"Rate(5, per=1.0): at most {worst} starts in any 1 s window; "
        f"first to last start {spread:.3f}s"
    )
    assert worst <= 5
    assert spread >= 1.99  # 15 starts at 5/s: three windows


def test_partitioned_queue_limits_each_key_and_is_fair(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    for _ in range(10):
        worker_app.parts.options(partition_key="hot").enqueue(worker_app.timed, "parts", "hot", 0.2)
    for key in ("cold-a", "cold-b"):
        for _ in range(2):
            worker_app.parts.options(partition_key=key).enqueue(worker_app.timed, "parts", key, 0.2)
    w = workers("-P", "2", "-c", "4", "--burst", *FAST)
    assert w.wait(60) == 0, w.stderr()[-3000:]
    assert_all_success(database_url, 14)
    rows = spans(database_url, "parts")
    assert len(rows) == 14
    per_key: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        per_key.setdefault(r["pkey"], []).append(r)
    assert {k: len(v) for k, v in per_key.items()} == {"hot": 10, "cold-a": 2, "cold-b": 2}
    for key, rs in per_key.items():
        assert max_overlap((r["started"], r["ended"]) for r in rs) == 1, key
    hot_fourth = per_key["hot"][3]["started"]
    for key in ("cold-a", "cold-b"):
        assert per_key[key][0]["started"] < hot_fourth, key


def test_priority_order_then_fifo(app: pgflow.App, database_url: str, workers: StartWorker) -> None:
    plan = [(3, "a"), (1, "b"), (2, "c"), (1, "d"), (3, "e"), (0, "f"), (2, "g"), (1, "h")]
    for p, label in plan:
        worker_app.prio.options(priority=p).enqueue(worker_app.timed, "prio", label, 0.02)
    w = workers("-P", "1", "-c", "1", "--burst", *FAST)
    assert w.wait(60) == 0, w.stderr()[-3000:]
    assert_all_success(database_url, len(plan))
    order = [r["pkey"] for r in spans(database_url, "prio")]
    expected = [label for _, label in sorted(plan, key=lambda pl: pl[0])]  # stable: FIFO
    assert order == expected == ["f", "b", "d", "h", "c", "g", "a", "e"]


def test_delayed_job_does_not_start_early(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    h = worker_app.plain.options(delay=1.5).enqueue(worker_app.timed, "delay", None, 0.01)
    w = workers("-P", "1", "-c", "2", "--burst", "--burst-wait-delayed", *FAST)
    assert w.wait(60) == 0, w.stderr()[-3000:]
    row = assert_all_success(database_url, 1)[h.workflow_id]
    (span,) = spans(database_url, "delay")
    claimed_after = (row["started_at"] - row["created_at"]).total_seconds()
    ran_after = (span["started"] - row["created_at"]).total_seconds()
    print(f"delay=1.5: claimed {claimed_after:.3f}s and started {ran_after:.3f}s after enqueue")
    assert claimed_after >= 1.5
    assert ran_after >= 1.5
    assert claimed_after < 1.5 + 5.0  # and not forgotten


def test_dedup_id_is_held_until_the_workflow_ends(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    first = worker_app.plain.options(dedup_id="order-7").enqueue(
        worker_app.timed, "dedup", None, 0.01
    )
    with pytest.raises(pgflow.Deduplicated) as info:
        worker_app.plain.options(dedup_id="order-7").enqueue(worker_app.timed, "dedup", None, 0.01)
    assert info.value.existing_workflow_id == first.workflow_id
    assert info.value.dedup_id == "order-7"
    w = workers("-P", "1", "-c", "2", "--burst", *FAST)
    assert w.wait(60) == 0, w.stderr()[-3000:]
    assert first.status().status == pgflow.Status.SUCCESS
    again = worker_app.plain.options(dedup_id="order-7").enqueue(
        worker_app.timed, "dedup", None, 0.01
    )
    assert again.workflow_id != first.workflow_id
    assert again.status().status == pgflow.Status.ENQUEUED
    assert again.status().dedup_id == "order-7"


# -- crashes and drains ------------------------------------------------------------------------


def test_sigkill_of_a_worker_process_is_recovered(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    handles = [worker_app.plain.enqueue(worker_app.timed, "kill", None, 1.0) for _ in range(8)]
    w = workers("-P", "2", "-c", "2", "--burst", *FAST)
    # A worker process with work in flight: freeze it so that what it owns holds still.
    busy = wait_for(
        "a span in flight",
        lambda: query(database_url, "SELECT pid FROM public.spans WHERE ended IS NULL LIMIT 1"),
        30,
    )
    victim = busy[0]["pid"]
    pids = wait_for(
        "two worker processes",
        lambda: len(worker_pids(database_url)) == 2 and worker_pids(database_url),
        10,
    )
    assert victim in pids, pids
    assert parent_of(victim) == w.pid
    os.kill(victim, signal.SIGSTOP)
    owned = {
        r["workflow_id"]
        for r in query(
            database_url,
            "SELECT workflow_id FROM pgflow.workflow_status "
            "WHERE executor_id = %s AND status = 'PENDING'",
            (pids[victim],),
        )
    }
    assert owned
    killed_at = query(database_url, "SELECT clock_timestamp() AS t")[0]["t"]
    os.kill(victim, signal.SIGKILL)
    # The supervisor replaces it: a new worker process registers as a new executor.
    new = wait_for(
        "a replacement executor", lambda: set(worker_pids(database_url)) - set(pids), 10, 0.02
    )
    assert len(new) == 1
    assert parent_of(next(iter(new))) == w.pid
    assert w.wait(60) == 0, w.stderr()[-3000:]
    rows = assert_all_success(database_url, 8)
    attempts = {i: r["recovery_attempts"] for i, r in rows.items()}
    assert {i for i, n in attempts.items() if n == 1} == owned
    assert all(n == 0 for i, n in attempts.items() if i not in owned)
    # Each recovered workflow re-ran its step elsewhere; measure how soon after the kill.
    rerun = query(
        database_url,
        "SELECT workflow_id, min(started) AS t FROM public.spans "
        "WHERE started > %s GROUP BY workflow_id",
        (killed_at,),
    )
    delays = {
        r["workflow_id"]: (r["t"] - killed_at).total_seconds()
        for r in rerun
        if r["workflow_id"] in owned
    }
    assert set(delays) == owned
    print(
        f"SIGKILL of worker {victim}: {len(owned)} workflow(s) re-run "
        f"{min(delays.values()):.3f}-{max(delays.values()):.3f}s after the kill; "
        f"replacement pid {sorted(new)}"
    )
    exited = [e for e in w.events("worker_process_exited") if e["pid"] == victim]
    assert exited and exited[0]["exit_code"] == -signal.SIGKILL
    assert len(w.events("worker_process_started")) == 3
    assert all(h.status().status == pgflow.Status.SUCCESS for h in handles)


def test_sigterm_drains_and_hands_back_uncharged(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    handles = [worker_app.plain.enqueue(worker_app.two_steps, 5.0) for _ in range(6)]
    w = workers("-P", "2", "-c", "2", "--grace", "1", *FAST)
    wait_for(
        "four naps in flight",
        lambda: (
            query(database_url, "SELECT count(*) AS n FROM public.step_runs WHERE step = 'nap'")[0][
                "n"
            ]
            == 4
        ),
        30,
    )
    sent = time.monotonic()
    os.kill(w.pid, signal.SIGTERM)
    code = w.wait(10)
    took = time.monotonic() - sent
    print(f"SIGTERM with --grace 1: supervisor exited {code} after {took:.2f}s")
    assert code == 0, w.stderr()[-3000:]
    assert took <= 1 + 3
    rows = statuses(database_url)
    assert len(rows) == 6
    assert {r["status"] for r in rows.values()} == {"ENQUEUED"}
    assert all(r["recovery_attempts"] == 0 and r["executor_id"] is None for r in rows.values())
    assert not worker_pids(database_url)  # drained processes deregistered
    in_flight = {
        r["workflow_id"]
        for r in query(
            database_url, "SELECT DISTINCT workflow_id FROM public.step_runs WHERE step = 'nap'"
        )
    }
    assert len(in_flight) == 4

    w2 = workers("-P", "2", "-c", "3", "--burst", *FAST)
    assert w2.wait(60) == 0, w2.stderr()[-3000:]
    rows = assert_all_success(database_url, 6)
    assert all(r["recovery_attempts"] == 0 for r in rows.values())
    runs = query(
        database_url,
        "SELECT workflow_id, step, count(*) AS n FROM public.step_runs GROUP BY workflow_id, step",
    )
    count = {(r["workflow_id"], r["step"]): r["n"] for r in runs}
    for h in handles:
        assert count[(h.workflow_id, "first")] == 1  # checkpointed before the drain: not re-run
        assert count[(h.workflow_id, "nap")] == (2 if h.workflow_id in in_flight else 1)
        assert h.result(timeout=5) == ["first done", "nap done"]


def test_idle_worker_wakes_on_notify(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    w = workers(
        "-P",
        "1",
        "-c",
        "2",
        "--heartbeat-interval",
        "0.5",
        "--heartbeat-timeout",
        "3",
        "--poll-interval",
        "5",
    )
    warm = worker_app.plain.enqueue(worker_app.timed, "warm", None, 0.0)
    assert warm.result(timeout=30) > 0
    latencies = []
    for _ in range(3):
        time.sleep(1.0)  # idle: the last claim poll is behind it, the next is seconds away
        h = worker_app.plain.enqueue(worker_app.timed, "wake", None, 0.0)
        h.result(timeout=30)
        row = statuses(database_url)[h.workflow_id]
        latencies.append((row["started_at"] - row["created_at"]).total_seconds())
    print(
        "enqueue -> claim on an idle worker (poll interval 5 s): "
        + ", ".join(f"{s * 1000:.1f} ms" for s in latencies)
    )
    assert all(s < 1.0 for s in latencies), latencies
    os.kill(w.pid, signal.SIGTERM)
    assert w.wait(15) == 0, w.stderr()[-3000:]


def test_children_exit_when_the_supervisor_is_killed(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    worker_app.plain.enqueue(worker_app.timed, "orphaned", None, 30.0)
    w = workers("-P", "2", "-c", "2", *FAST)
    wait_for("a span in flight", lambda: spans(database_url, "orphaned"), 30)
    pids = wait_for(
        "two worker processes",
        lambda: len(worker_pids(database_url)) == 2 and worker_pids(database_url),
        30,
    )
    assert all(parent_of(pid) == w.pid for pid in pids)
    os.kill(w.pid, signal.SIGKILL)
    killed = time.monotonic()
    w.proc.wait(5)
    wait_for("the worker processes to exit", lambda: all(process_gone(p) for p in pids), 5, 0.02)
    took = time.monotonic() - killed
    print(f"supervisor SIGKILLed: its {len(pids)} worker processes exited within {took:.2f}s")
    assert took < 2.0


@pytest.mark.parametrize("shape", [("1", "2"), ("2", "1")], ids=["P1c2", "P2c1"])
def test_in_limbo_parent_and_crashing_child_end_terminal(
    app: pgflow.App, database_url: str, workers: StartWorker, shape: tuple[str, str]
) -> None:
    """DBOS exp24: a deduplicated queued parent whose child kills its process on every attempt
    must not stay PENDING forever nor keep its dedup id. With one process the parent and the
    child die together; with two, the child may be adopted by the process the parent is not
    waiting in."""
    parent = worker_app.plain.options(dedup_id="6/5").enqueue(worker_app.limbo_parent)
    w = workers("-P", shape[0], "-c", shape[1], "--burst", *FAST)
    started = time.monotonic()
    code = w.wait(90)
    took = time.monotonic() - started
    assert code == 0, w.stderr()[-4000:]
    rows = statuses(database_url)
    child_rows = [r for r in rows.values() if r["parent_workflow_id"] == parent.workflow_id]
    by_name = {r["name"].rsplit(".", 1)[1]: r for r in child_rows}
    assert set(by_name) == {"calm_child", "killer_child"}
    killer = by_name["killer_child"]
    print(
        f"in-limbo case ({shape}): burst worker exited after {took:.2f}s; killer child "
        f"charged {killer['recovery_attempts']}, parent charged "
        f"{rows[parent.workflow_id]['recovery_attempts']} recovery attempts; "
        f"{len(w.events('worker_process_started'))} worker processes started"
    )
    assert killer["status"] == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    assert killer["recovery_attempts"] == 3  # charged at each of its 3 deaths (limit 2)
    assert by_name["calm_child"]["status"] == "SUCCESS"
    prow = rows[parent.workflow_id]
    assert prow["status"] == "ERROR"
    error = parent.status().error
    assert isinstance(error, pgflow.MaxRecoveryAttemptsExceeded)
    assert error.workflow_id == killer["workflow_id"]
    with pytest.raises(pgflow.MaxRecoveryAttemptsExceeded):
        parent.result(timeout=5)
    with pytest.raises(pgflow.MaxRecoveryAttemptsExceeded):
        app.retrieve(killer["workflow_id"]).result(timeout=5)
    assert not [r for r in rows.values() if r["status"] in ("PENDING", "ENQUEUED")]
    runs = query(database_url, "SELECT step, count(*) AS n FROM public.step_runs GROUP BY step")
    count = {r["step"]: r["n"] for r in runs}
    assert count["suicide"] == 3  # the first run and its 2 allowed recoveries
    assert count["calm"] == 1  # a finished child is never re-run by its recovered parent
    assert not worker_pids(database_url)
    # The dedup id is free again.
    again = worker_app.plain.options(dedup_id="6/5").enqueue(worker_app.limbo_parent)
    assert again.status().status == pgflow.Status.ENQUEUED


# -- CLI errors --------------------------------------------------------------------------------


def test_unknown_task_module_fails_before_forking(database_url: str, workers: StartWorker) -> None:
    w = workers("-P", "2", "--burst", app="tests.no_such_module")
    assert w.wait(30) != 0
    lines = [ln for ln in w.stderr().splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "tests.no_such_module" in lines[0]
    assert not w.events()  # no worker_starting, no worker_process_started: nothing forked
    assert w.stdout() == ""


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:SECRETCANARY@127.0.0.1:1/x",  # nothing listens
        "postgresql://no_such_role:SECRETCANARY@127.0.0.1:5432/x",  # the server says no
    ],
    ids=["refused", "rejected"],
)
def test_bad_database_url_fails_without_leaking_the_password(
    url: str, workers: StartWorker
) -> None:
    w = workers("-P", "2", "--burst", env={"PGFLOW_DATABASE_URL": url})
    started = time.monotonic()
    assert w.wait(60) != 0
    took = time.monotonic() - started
    err, out = w.stderr(), w.stdout()
    print(f"bad URL: exit after {took:.2f}s: {err.strip()}")
    assert "127.0.0.1" in err
    assert "SECRETCANARY" not in err + out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert not w.events("worker_process_started")


def test_abandoned_step_bodies_piling_up_replace_the_process(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    """With one thread, a workflow that catches two time-limited steps leaves two abandoned
    bodies (more than its threads): the process hands its work back uncharged, exits 4 and is
    replaced; the workflow resumes from its checkpoints (the timed-out steps do not run again)."""
    w = workers("-P", "1", "-c", "1", *FAST)
    h = worker_app.plain.enqueue(worker_app.outlasts, 2)
    assert h.result(timeout=30) == ["timed out", "timed out", "nap done"]
    (backstop,) = w.events("abandoned_steps_running")
    assert backstop["n"] == 2 and backstop["overdue"] == 0
    assert [e["exit_code"] for e in w.events("worker_process_exited")] == [4]
    assert len(w.events("worker_process_started")) == 2
    runs = query(
        database_url, "SELECT step, count(*) AS n FROM public.step_runs GROUP BY step ORDER BY step"
    )
    assert {r["step"]: r["n"] for r in runs} == {"hangs_on0": 1, "hangs_on1": 1, "nap": 2}
    assert h.status().recovery_attempts == 0
