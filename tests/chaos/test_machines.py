"""Machines: one dies whole, one freezes and wakes up (a zombie), one has a wrong clock, one
runs another version. A "machine" is a worker started in a UTS namespace of its own with its
own host name, so the others cannot check its pids: only its heartbeat tells them it lives."""

from __future__ import annotations

import json
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import pgflow
from pgflow.executor import Executor
from pgflow.recovery import reap_dead_executors
from tests.chaos import chaos_app
from tests.chaos.harness import (
    HEARTBEAT,
    HEARTBEAT_TIMEOUT,
    assert_no_stale_writes,
    check_all,
    db_now,
    query,
    stats,
    wait_terminal,
)
from tests.processes import clean_env, process_gone, run_pgflow, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


def machine_executors(url: str, hostname: str) -> dict[str, int]:
    rows = query(
        url, "SELECT executor_id, pid FROM pgflow.executors WHERE hostname = %s", (hostname,)
    )
    return {r["executor_id"]: r["pid"] for r in rows}


def owned_by(url: str, executor_ids: list[str]) -> list[str]:
    return [
        r["workflow_id"]
        for r in query(
            url,
            "SELECT workflow_id FROM pgflow.workflow_status "
            "WHERE status = 'PENDING' AND executor_id = ANY(%s)",
            (executor_ids,),
        )
    ]


def released_at(url: str, executor_ids: list[str]) -> list[Any]:
    """When each workflow of these executors was taken from them (from the audit)."""
    rows = query(
        url,
        "SELECT workflow_id, min(at) AS at FROM public.wf_audit "
        "WHERE old_executor = ANY(%s) AND old_status = 'PENDING' "
        "AND new_status IN ('PENDING', 'ENQUEUED') "
        "AND new_executor IS DISTINCT FROM old_executor GROUP BY workflow_id",
        (executor_ids,),
    )
    return [r["at"] for r in rows]


def start_two_machines(url: str, workers: Any) -> tuple[Any, Any]:
    """Machine A first, holding work; then machine B. (B could take every slot of the
    queue first: the process whose own workflows finish claims the freed slots at once,
    while the other only polls.)"""
    a = workers("-P", "2", "-c", "4", *HEARTBEAT, hostname="machine-a")
    wait_for(
        "machine A running work",
        lambda: len(owned_by(url, list(machine_executors(url, "machine-a")))) >= 4,
        30,
    )
    b = workers("-P", "2", "-c", "4", *HEARTBEAT, hostname="machine-b")
    wait_for("machine B", lambda: len(machine_executors(url, "machine-b")) == 2, 30)
    return a, b


def test_machine_death_is_adopted_within_two_heartbeat_timeouts(
    capp: pgflow.App, chaos_url: str, workers: Any, soak: int
) -> None:
    """Two machines share a concurrency=8 queue; one is SIGKILLed whole. The other adopts its
    work once its heartbeat is older than the timeout (not before: no pid check can see
    across machines), within 2 x the timeout, and everything ends SUCCESS."""
    n = 40 * soak
    handles = chaos_app.chaos.enqueue_many(chaos_app.long, [(i, 10, 0.2) for i in range(n)])
    expected = {h.workflow_id: i for i, h in enumerate(handles)}
    a, b = start_two_machines(chaos_url, workers)
    dead = list(machine_executors(chaos_url, "machine-a"))
    held = owned_by(chaos_url, dead)
    killed = db_now(chaos_url)
    a.signal_group(signal.SIGKILL)
    wait_for(
        "the dead machine's work adopted",
        lambda: not owned_by(chaos_url, dead),
        2 * HEARTBEAT_TIMEOUT + 5,
        0.1,
    )
    delays = [(t - killed).total_seconds() for t in released_at(chaos_url, dead)]
    wait_terminal(chaos_url, n, 120 * soak)
    v = check_all(chaos_url, expected=expected, limit=8, limit_queue="chaos")
    print(
        f"\nmachine death: {len(held)} workflows held by {len(dead)} dead executors; "
        f"kill -> adopted: {stats(delays)}; {v.line()}"
    )
    assert len(delays) >= len(held)
    assert min(delays) >= HEARTBEAT_TIMEOUT - 1.0  # the heartbeat, not a pid, told
    assert max(delays) <= 2 * HEARTBEAT_TIMEOUT
    assert not b.events("worker_process_exited")


def test_frozen_machine_wakes_fenced_out(
    capp: pgflow.App, chaos_url: str, workers: Any, soak: int
) -> None:
    """SIGSTOP a whole machine for 8 s (> the heartbeat timeout): the other adopts its work.
    On SIGCONT its worker processes find their heartbeat row gone and exit within 2 s,
    writing no checkpoint and no final status after losing their work; everything ends
    SUCCESS with each step checkpointed once."""
    n = 60 * soak
    handles = chaos_app.chaos.enqueue_many(chaos_app.five, [(i, 0.6) for i in range(n)])
    expected = {h.workflow_id: chaos_app.five_result(i) for i, h in enumerate(handles)}
    a, _ = start_two_machines(chaos_url, workers)
    frozen = machine_executors(chaos_url, "machine-a")
    stopped = db_now(chaos_url)
    a.signal_group(signal.SIGSTOP)
    held = owned_by(chaos_url, list(frozen))
    wait_for(
        "the frozen machine's work adopted",
        lambda: not owned_by(chaos_url, list(frozen)),
        2 * HEARTBEAT_TIMEOUT + 5,
        0.1,
    )
    delays = [(t - stopped).total_seconds() for t in released_at(chaos_url, list(frozen))]
    time.sleep(max(0.0, 8.0 - (db_now(chaos_url) - stopped).total_seconds()))
    woke = db_now(chaos_url)
    woke_mono = time.monotonic()
    a.signal_group(signal.SIGCONT)
    wait_for(
        "the frozen worker processes to exit",
        lambda: all(process_gone(p) for p in frozen.values()),
        5,
        0.02,
    )
    gone = time.monotonic() - woke_mono
    wait_terminal(chaos_url, n, 120 * soak)
    v = check_all(
        chaos_url,
        expected=expected,
        steps=chaos_app.FIVE_STEPS,
        plain=chaos_app.FIVE_PLAIN,
        tx=chaos_app.FIVE_TX,
        limit=8,
        limit_queue="chaos",
    )
    late = query(
        chaos_url,
        "SELECT count(*) AS n FROM pgflow.operation_outputs "
        "WHERE executor_id = ANY(%s) AND completed_at > %s",
        (list(frozen), woke),
    )[0]["n"]
    late_ledger = query(
        chaos_url,
        "SELECT count(*) AS n FROM public.ledger WHERE executor_id = ANY(%s) AND at > %s",
        (list(frozen), woke),
    )[0]["n"]
    dead_events = [e for e in a.events("executor_declared_dead")]
    exits = [e["exit_code"] for e in a.events("worker_process_exited")]
    print(
        f"\nzombie: {len(held)} workflows held by {len(frozen)} frozen executors; "
        f"stop -> adopted: {stats(delays)}; woken processes exited {gone:.2f}s after "
        f"SIGCONT (exit codes {exits}); after waking: {late} checkpoints, {late_ledger} "
        f"step bodies finishing (user code); {v.line()}"
    )
    assert max(delays) <= 2 * HEARTBEAT_TIMEOUT
    assert gone <= 2.0
    assert late == 0
    assert len(dead_events) == len(frozen)
    assert exits == [3] * len(frozen)


# -- clock skew --------------------------------------------------------------------------------


SKEWED_CLOCK = """
# Injected by tests/chaos/test_machines.py: this process's wall clock is off by
# CHAOS_CLOCK_OFFSET seconds (time.time, time.time_ns, datetime.now/utcnow). Monotonic time
# stays real. (libfaketime 0.9.10 makes Python's time.sleep fail with EINVAL here.)
import datetime as _dt
import os as _os
import time as _time

_OFFSET = float(_os.environ.get("CHAOS_CLOCK_OFFSET", "0"))
_real_time, _real_time_ns, _Real = _time.time, _time.time_ns, _dt.datetime
_time.time = lambda: _real_time() + _OFFSET
_time.time_ns = lambda: _real_time_ns() + int(_OFFSET * 1e9)


class _Skewed(_Real):
    @classmethod
    def now(cls, tz=None):
        return _Real.fromtimestamp(_time.time(), tz)

    @classmethod
    def utcnow(cls):
        return _Real.fromtimestamp(_time.time(), _dt.timezone.utc).replace(tzinfo=None)


_dt.datetime = _Skewed
"""


def skewed(tmp_path: Path, offset: float) -> dict[str, str]:
    """Environment for a worker whose wall clock is ``offset`` seconds off."""
    folder = tmp_path / f"clock{offset:+.0f}"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SKEWED_CLOCK)
    return {"PYTHONPATH": str(folder), "CHAOS_CLOCK_OFFSET": str(offset)}


def test_clock_skew_changes_nothing(
    capp: pgflow.App, chaos_url: str, workers: Any, soak: int, tmp_path: Path
) -> None:
    """Two machines whose clocks are 10 minutes fast and 10 minutes slow: liveness, limits,
    delays and durable sleeps all follow the database's clock. No live worker is declared
    dead; concurrency (3), worker concurrency (2) and the rate (10/s) hold; a delay and a
    pgflow.sleep fire within 1 s of database time, also when the sleeping workflow moves
    from one machine to the other; each process warns about its clock."""
    fast = workers(
        "-P",
        "1",
        "-c",
        "4",
        *HEARTBEAT,
        "--poll-interval",
        "0.5",
        hostname="fast",
        env=skewed(tmp_path, +600),
    )
    slow = workers(
        "-P",
        "1",
        "-c",
        "4",
        *HEARTBEAT,
        "--poll-interval",
        "0.5",
        hostname="slow",
        env=skewed(tmp_path, -600),
    )
    wait_for(
        "both machines", lambda: len(query(chaos_url, "SELECT 1 FROM pgflow.executors")) == 2, 30
    )
    n = 30 * soak
    handles = chaos_app.skew.enqueue_many(chaos_app.five, [(i, 0.1) for i in range(n)])
    expected: dict[str, Any] = {
        h.workflow_id: chaos_app.five_result(i) for i, h in enumerate(handles)
    }
    delayed = [chaos_app.hang.options(delay=2.0).enqueue(chaos_app.sleeper, 0.0) for _ in range(3)]
    sleepers = [chaos_app.chaos.enqueue(chaos_app.sleeper, 2.0) for _ in range(4)]
    for h in [*delayed, *sleepers]:
        h.result(timeout=30)
    # A sleeper that moves machines in its sleep: the machine it sleeps on dies.
    mover = chaos_app.chaos.enqueue(chaos_app.sleeper, 4.0)
    row = wait_for(
        "the mover asleep",
        lambda: query(
            chaos_url,
            "SELECT l.pid, e.hostname FROM public.ledger l JOIN pgflow.executors e "
            "ON e.executor_id = l.executor_id WHERE l.workflow_id = %s "
            "AND l.step = 'before'",
            (mover.workflow_id,),
        ),
        20,
    )[0]
    victim, survivor = (fast, slow) if row["hostname"] == "fast" else (slow, fast)
    victim.signal_group(signal.SIGKILL)  # the whole machine: only the other can adopt
    wait_terminal(chaos_url, n + 8, 60 * soak)
    expected.update({h.workflow_id: "slept" for h in [*delayed, *sleepers, mover]})
    v = check_all(
        chaos_url,
        expected={k: expected[k] for k in list(expected)[:n]},
        steps=chaos_app.FIVE_STEPS,
        plain=chaos_app.FIVE_PLAIN,
        tx=chaos_app.FIVE_TX,
        limit=3,
        per_pid=2,
        limit_queue="skew",
    )
    for h in [*delayed, *sleepers, mover]:
        assert h.result(timeout=1) == "slept"
    starts = sorted(
        r["started_at"]
        for r in query(
            chaos_url,
            "SELECT started_at FROM pgflow.workflow_status WHERE workflow_id = ANY(%s)",
            (list(expected)[:n],),
        )
    )
    worst = max(sum(1 for s in starts if t <= s < t + timedelta(seconds=1)) for t in starts)
    late_delay = [
        (r["started_at"] - r["not_before"]).total_seconds()
        for r in query(
            chaos_url,
            "SELECT started_at, not_before FROM pgflow.workflow_status WHERE workflow_id = ANY(%s)",
            ([h.workflow_id for h in delayed],),
        )
    ]
    slept = {}
    for h in [*sleepers, mover]:
        marks = {
            r["step"]: r["at"]
            for r in query(
                chaos_url,
                "SELECT step, max(at) AS at FROM public.ledger WHERE workflow_id = %s "
                "GROUP BY step",
                (h.workflow_id,),
            )
        }
        slept[h.workflow_id] = (marks["after"] - marks["before"]).total_seconds()
    deaths = query(chaos_url, "SELECT count(*) AS n FROM public.exec_audit WHERE op = 'D'")
    warnings = [e for w in (fast, slow) for e in w.events("clock_skew")]
    mover_slept = slept.pop(mover.workflow_id)
    print(
        f"\nclock skew +-600 s: {v.line()}; max starts in 1 s {worst}; delays fired "
        f"{[round(d, 3) for d in late_delay]}s late; sleeps of 2 s took "
        f"{[round(s, 2) for s in slept.values()]}s; a 4 s sleep moved machines and took "
        f"{mover_slept:.2f}s; executors removed {deaths[0]['n']} (1 killed on purpose); "
        f"clock_skew warnings {[round(e['local_minus_database_s']) for e in warnings]}"
    )
    assert worst <= 10
    assert all(0 <= d <= 1.0 for d in late_delay)
    assert all(2.0 <= s <= 3.0 for s in slept.values())
    assert 4.0 <= mover_slept <= 5.0 + HEARTBEAT_TIMEOUT
    assert deaths[0]["n"] == 1  # only the process killed on purpose
    assert not [e for w in (fast, slow) for e in w.events("executor_declared_dead")]
    assert len({e["executor_id"] for e in warnings}) >= 2
    assert all(abs(abs(e["local_minus_database_s"]) - 600) < 5 for e in warnings)
    assert not survivor.events("worker_process_exited")
    assert_no_stale_writes(chaos_url)


# -- version drift -----------------------------------------------------------------------------


def test_other_versions_run_only_what_never_started_and_report_the_rest(
    capp: pgflow.App, chaos_url: str, workers: Any
) -> None:
    """Rows of another application version: those that never started (no checkpoints) are
    run by this version, which knows their name; those that started (parked, released) stay
    ENQUEUED beside the work the worker runs, and `pgflow queues --json` and the worker's
    warning report them as the wrong version, naming the retarget command."""
    client = pgflow.Client(chaos_url)
    try:
        old = [
            client.enqueue(
                "chaos",
                chaos_app.five.__pgflow_workflow__.name,  # type: ignore[attr-defined]
                i,
                0.0,
                app_version="chaos-old",
            )
            for i in range(10)
        ]
    finally:
        client.close()
    fresh, started = old[:5], old[5:]
    query(
        chaos_url,
        "UPDATE pgflow.workflow_status SET started_at = now() "
        "WHERE workflow_id = ANY(%s) RETURNING 1",
        ([h.workflow_id for h in started],),
    )
    current = [chaos_app.chaos.enqueue(chaos_app.five, i, 0.0) for i in range(5)]
    w = workers("-P", "1", "-c", "2", *HEARTBEAT, "--burst")
    assert w.wait(60) == 0, w.stderr()[-3000:]
    rows = {
        r["workflow_id"]: r
        for r in query(
            chaos_url,
            "SELECT workflow_id, status, executor_id, app_version FROM pgflow.workflow_status",
        )
    }
    assert all(rows[h.workflow_id]["status"] == "SUCCESS" for h in current + fresh)
    assert {rows[h.workflow_id]["app_version"] for h in fresh} == {capp.app_version}
    assert all(
        rows[h.workflow_id]["status"] == "ENQUEUED" and rows[h.workflow_id]["executor_id"] is None
        for h in started
    )
    out = run_pgflow("queues", "--json", env=clean_env(chaos_url))
    assert out.returncode == 0, out.stderr
    stranded = json.loads(out.stdout)["stranded"]
    warned = w.events("workflows_stranded")
    print(f"\nversion drift: stranded {stranded}; worker warned {warned}")
    assert [(s["queue_name"], s["app_version"], s["reason"], s["count"]) for s in stranded] == [
        ("chaos", "chaos-old", "wrong_version", 5)
    ]
    assert "pgflow workflows retarget --from chaos-old" in stranded[0]["remedy"]
    assert warned and warned[0]["n"] == 5 and warned[0]["app_version"] == "chaos-old"
    assert warned[0]["level"] == "warning" and warned[0].get("since")
    assert warned[0]["reason"] == "wrong_version" and "retarget" in warned[0]["action"]


# -- a reaped executor ----------------------------------------------------------------------


def test_reaped_executor_claims_adopts_and_owns_nothing(capp: pgflow.App, chaos_url: str) -> None:
    """A process declared dead may still run for a moment (a frozen machine waking up): its
    claims, adoptions and new workflows must not land under its dead id, where nobody would
    ever recover them. (Found by the zombie and connection-storm tests: rows stuck PENDING
    under an executor whose row was gone.)"""
    h = chaos_app.chaos.enqueue(chaos_app.five, 1, 0.0)
    ghost = Executor(capp, kind="worker", queues=("chaos",))
    ghost.ensure_registered()
    ghost.stop(deregister=False)
    assert reap_dead_executors(capp, "reaper", [ghost.executor_id], judge_heartbeats=False) == [
        ghost.executor_id
    ]
    names = sorted(capp.registry.workflows)
    common = {"executor_id": ghost.executor_id, "app_version": capp.app_version, "names": names}
    assert (
        capp.db.fetchall(
            "claim_workflows", {**common, "queue_name": "chaos", "limit": 10, "strict": False}
        )
        == []
    )
    query(
        chaos_url,
        "UPDATE pgflow.workflow_status SET status = 'PENDING', queue_name = NULL "
        "WHERE workflow_id = %s RETURNING 1",
        (h.workflow_id,),
    )
    assert capp.db.fetchall("adopt_orphans", {**common, "limit": 10}) == []
    assert capp.db.fetchone("adopt_workflow", {**common, "workflow_id": h.workflow_id}) is None
    row = capp.db.fetchone(
        "insert_workflow",
        {
            "workflow_id": "started-by-a-ghost",
            "name": names[0],
            "parent_workflow_id": None,
            "executor_id": ghost.executor_id,
            "app_version": capp.app_version,
            "max_recovery_attempts": 1,
            "serializer": "json",
            "inputs": '{"args":[],"kwargs":{}}',
            "timeout_ms": None,
            "deadline": None,
            "fence": uuid.uuid4(),
            "trace_context": None,
        },
    )
    assert row is not None and row["owned"] is False
    owner = query(
        chaos_url,
        "SELECT executor_id, fence FROM pgflow.workflow_status "
        "WHERE workflow_id = 'started-by-a-ghost'",
    )[0]
    assert owner == {"executor_id": None, "fence": None}  # ownerless: any executor adopts it
