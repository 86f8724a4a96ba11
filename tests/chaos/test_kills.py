"""Processes killed on purpose: a SIGKILL storm on worker processes, a killed supervisor,
a step past its hard time limit, poison workflows, and DBOS's "in limbo" case across
restarts. Every test ends with the oracles of ``harness.check_all`` where they apply."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from datetime import datetime
from typing import Any

import pytest

import pgflow
from tests.chaos import chaos_app
from tests.chaos.harness import (
    HEARTBEAT,
    assert_no_stale_writes,
    check_all,
    counts,
    db_now,
    query,
    stats,
    wait_terminal,
    worker_pids,
)
from tests.processes import process_gone, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

WORK = 0.15  # seconds in each plain step: long enough that kills land mid-workflow


def test_sigkill_storm_on_worker_processes(
    capp: pgflow.App, chaos_url: str, workers: Any, soak: int
) -> None:
    """SIGKILL a random worker process every 2 s while N five-step workflows run on a
    concurrency=8 queue under -P 2 -c 4. Everything ends SUCCESS with its result, exactly
    once where promised; each kill's work is requeued, and its process replaced, within 2 s."""
    n = 300 * soak
    handles = chaos_app.chaos.enqueue_many(chaos_app.five, [(i, WORK) for i in range(n)])
    expected = {h.workflow_id: chaos_app.five_result(i) for i, h in enumerate(handles)}
    w = workers("-P", "2", "-c", "4", *HEARTBEAT)
    wait_for("two worker processes", lambda: len(worker_pids(chaos_url)) == 2, 30)
    rng = random.Random(20240601)
    kills: list[tuple[Any, int, str]] = []
    started = time.monotonic()
    while True:
        time.sleep(2.0)
        c = counts(chaos_url)
        if not c.get("ENQUEUED") and not c.get("PENDING"):
            break
        assert time.monotonic() - started < 120 * soak, f"no progress: {c}"
        registered = worker_pids(chaos_url)
        live = [p for p in w.children() if p in registered]
        if not live:
            continue
        victim = rng.choice(live)
        at = db_now(chaos_url)
        os.kill(victim, signal.SIGKILL)
        kills.append((at, victim, registered[victim]))
    took = time.monotonic() - started
    v = check_all(
        chaos_url,
        expected=expected,
        steps=chaos_app.FIVE_STEPS,
        plain=chaos_app.FIVE_PLAIN,
        tx=chaos_app.FIVE_TX,
        limit=8,
        per_pid=4,
        limit_queue="chaos",
    )
    requeue, replaced = [], []
    for at, pid, executor in kills:
        rel = query(
            chaos_url,
            "SELECT min(at) AS t FROM public.wf_audit "
            "WHERE old_executor = %s AND new_executor IS NULL",
            (executor,),
        )
        if rel[0]["t"] is not None:
            requeue.append((rel[0]["t"] - at).total_seconds())
        new = query(
            chaos_url,
            "SELECT min(at) AS t FROM public.exec_audit WHERE op = 'I' AND at > %s AND pid <> %s",
            (at, pid),
        )
        assert new[0]["t"] is not None, f"process {pid} never replaced"
        replaced.append((new[0]["t"] - at).total_seconds())
    print(
        f"\nkill storm: {n} workflows in {took:.1f}s under {len(kills)} SIGKILLs; {v.line()}"
        f"\n  kill -> work requeued: {stats(requeue)}\n  kill -> process replaced: "
        f"{stats(replaced)}"
    )
    assert len(kills) >= 3
    assert requeue and max(requeue) <= 2.0
    assert max(replaced) <= 2.0
    os.kill(w.pid, signal.SIGTERM)
    assert w.wait(30) == 0, w.stderr()[-3000:]


def test_killed_supervisor_children_exit_and_work_is_adopted(
    capp: pgflow.App, chaos_url: str, workers: Any, soak: int
) -> None:
    """SIGKILL a supervisor: its worker processes exit within 2 s, and another worker
    adopts their work, which then ends SUCCESS."""
    n = 16 * soak
    handles = chaos_app.chaos.enqueue_many(chaos_app.long, [(i, 6, 0.25) for i in range(n)])
    expected = {h.workflow_id: i for i, h in enumerate(handles)}
    a = workers("-P", "2", "-c", "4", *HEARTBEAT, "-Q", "chaos")
    wait_for(
        "work in flight on the first worker",
        lambda: query(chaos_url, "SELECT count(*) AS n FROM public.ledger")[0]["n"] >= 8,
        30,
    )
    kids = a.children()
    owned = worker_pids(chaos_url)
    assert len(kids) == 2 and set(kids) <= set(owned)
    b = workers("-P", "1", "-c", "4", *HEARTBEAT, "-Q", "chaos")
    wait_for("the second worker", lambda: len(worker_pids(chaos_url)) == 3, 30)
    os.kill(a.pid, signal.SIGKILL)
    killed = time.monotonic()
    at = db_now(chaos_url)
    a.proc.wait(5)
    wait_for(
        "the orphaned worker processes to exit", lambda: all(process_gone(p) for p in kids), 5, 0.02
    )
    gone = time.monotonic() - killed
    adopted = wait_for(
        "their work adopted",
        lambda: (
            all(
                query(
                    chaos_url,
                    "SELECT count(*) AS n FROM pgflow.workflow_status "
                    "WHERE executor_id = %s AND status = 'PENDING'",
                    (owned[p],),
                )[0]["n"]
                == 0
                for p in kids
            )
            and db_now(chaos_url)
        ),
        15,
    )
    wait_terminal(chaos_url, n, 60 * soak)
    v = check_all(chaos_url, expected=expected, limit=8, limit_queue="chaos")
    released = (adopted - at).total_seconds()
    print(
        f"\nsupervisor SIGKILLed: children exited in {gone:.2f}s, their work released "
        f"{released:.2f}s after the kill; {v.line()}"
    )
    assert gone <= 2.0
    assert released <= 5.0  # same host: the dead pids are seen at the next recovery pass
    assert not b.events("worker_process_exited")


def test_step_past_its_time_limit_fails_its_workflow_and_the_body_is_backstopped(
    capp: pgflow.App, chaos_url: str, workers: Any
) -> None:
    """A step stuck in time.sleep(3600) with time_limit=3: the workflow ends ERROR with
    StepTimeLimitExceeded (the step's recorded error) about 3 s after the step began, while
    its siblings run on undisturbed. The abandoned body keeps sleeping; once it has run its
    grace (max(10 s, 2 x limit)) past the limit, the process exits 4 and is replaced, and the
    siblings in flight re-run without a recovery attempt charged."""
    from pgflow.attempts import abandoned_grace

    siblings = [chaos_app.hang.enqueue(chaos_app.long, i, 100, 0.2) for i in range(3)]
    w = workers("-P", "1", "-c", "4", *HEARTBEAT)
    wait_for(
        "siblings in flight",
        lambda: (
            query(chaos_url, "SELECT count(DISTINCT workflow_id) AS n FROM public.ledger")[0]["n"]
            == 3
        ),
        30,
    )
    stuck = chaos_app.hang.enqueue(chaos_app.hangs)
    began = wait_for(
        "the stuck step",
        lambda: query(chaos_url, "SELECT at FROM public.ledger WHERE step = 'stuck'"),
        10,
    )[0]["at"]
    with pytest.raises(pgflow.StepTimeLimitExceeded):
        stuck.result(timeout=15)
    row = query(
        chaos_url,
        "SELECT completed_at, status FROM pgflow.workflow_status WHERE workflow_id = %s",
        (stuck.workflow_id,),
    )[0]
    took = (row["completed_at"] - began).total_seconds()
    (step,) = capp.steps(stuck.workflow_id)
    assert isinstance(step.error, pgflow.StepTimeLimitExceeded)
    assert not w.events("worker_process_exited")  # the limit itself replaces nothing
    results = [h.result(timeout=90) for h in siblings]
    assert results == [0, 1, 2]
    rows = query(chaos_url, "SELECT workflow_id, recovery_attempts FROM pgflow.workflow_status")
    exits = w.events("worker_process_exited")
    (backstop,) = w.events("abandoned_steps_running")
    reruns = query(
        chaos_url,
        "SELECT workflow_id, count(*) - count(DISTINCT step) AS extra "
        "FROM public.ledger WHERE step LIKE 't%%' GROUP BY workflow_id",
    )
    print(
        f"\ntime_limit=3: ERROR {took:.2f}s after the step began; the abandoned body "
        f"backstopped after {backstop['abandoned_s']}s; exits "
        f"{[e['exit_code'] for e in exits]}; siblings re-ran "
        f"{sum(r['extra'] for r in reruns)} plain steps, charged "
        f"{[r['recovery_attempts'] for r in rows]}"
    )
    assert row["status"] == "ERROR"
    assert 3 <= took <= 3 + 1
    assert abandoned_grace(3) <= backstop["abandoned_s"] <= abandoned_grace(3) + 1.5
    assert [e["exit_code"] for e in exits] == [4]
    assert len(w.events("worker_process_started")) == 2
    assert sum(r["extra"] for r in reruns) > 0  # the siblings were in flight at the backstop
    assert all(r["recovery_attempts"] == 0 for r in rows)
    assert_no_stale_writes(chaos_url)


def restart_gaps(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(seconds from a crashed process's exit to the next start in its slot, the backoff the
    supervisor's constants prescribe for it), replaying the supervisor's rule on the log."""
    from pgflow.worker.supervisor import BACKOFF_MAX, BACKOFF_START, STABLE_AFTER

    def ts(e: dict[str, Any]) -> float:
        return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()

    slot_of: dict[int, int] = {}
    started: dict[int, float] = {}
    backoff: dict[int, float] = {}
    waiting: dict[int, tuple[float, float]] = {}
    gaps = []
    for e in events:
        if e["event"] == "worker_process_started":
            slot_of[e["pid"]] = e["slot"]
            started[e["slot"]] = ts(e)
            if e["slot"] in waiting:
                exited, delay = waiting.pop(e["slot"])
                gaps.append((round(ts(e) - exited, 3), delay))
        elif e["event"] == "worker_process_exited" and e["exit_code"] != 0:
            slot = slot_of[e["pid"]]
            lived = ts(e) - started[slot]
            if lived > STABLE_AFTER:
                backoff[slot] = BACKOFF_START
            delay = backoff.get(slot, BACKOFF_START)
            backoff[slot] = min(delay * 2, BACKOFF_MAX)
            if abs(lived - STABLE_AFTER) > 0.2:  # else the log cannot tell which rule applied
                waiting[slot] = (ts(e), delay)
    return gaps


POISONS = ("exit", "segfault", "memory", "systemexit", "keyboardinterrupt")


def test_poison_workflows_end_after_three_runs(
    capp: pgflow.App, chaos_url: str, workers: Any, soak: int
) -> None:
    """Poison workflows among normal ones on a concurrency=1 queue (max_recovery_attempts=2):
    a poison that kills its process (or raises SystemExit / KeyboardInterrupt) ends
    MAX_RECOVERY_ATTEMPTS_EXCEEDED after exactly 3 runs, its waiter gets the error, its dedup
    id is free; a MemoryError is an ordinary exception (ERROR after one run); every normal
    one succeeds; crashed processes restart with capped backoff."""
    n = 100 * soak
    normals: dict[str, int] = {}
    poisons: dict[str, Any] = {}
    order = list(range(n))
    every = max(1, n // (len(POISONS) + 1))
    for i in order:
        h = chaos_app.poison.enqueue(chaos_app.normal, i)
        normals[h.workflow_id] = i * 3
        if i % every == every - 1 and len(poisons) < len(POISONS):
            kind = POISONS[len(poisons)]
            p = chaos_app.poison.options(dedup_id=f"poison-{kind}").enqueue(
                chaos_app.poisoned, kind
            )
            poisons[kind] = p
    outcomes: dict[str, BaseException | object] = {}

    def wait(kind: str, h: Any) -> None:
        try:
            outcomes[kind] = h.result(timeout=300)
        except BaseException as exc:  # what the waiter gets is the point
            outcomes[kind] = exc

    waiters = [threading.Thread(target=wait, args=(k, h)) for k, h in poisons.items()]
    for t in waiters:
        t.start()
    started = time.monotonic()
    w = workers("-P", "2", "-c", "2", *HEARTBEAT, "--burst")
    assert w.wait(300) == 0, w.stderr()[-4000:]
    took = time.monotonic() - started
    for t in waiters:
        t.join(30)
    runs = {
        r["step"]: r["n"]
        for r in query(
            chaos_url,
            "SELECT step, count(*) AS n FROM public.ledger "
            "WHERE step LIKE 'poison:%%' GROUP BY step",
        )
    }
    rows = {
        r["workflow_id"]: r
        for r in query(
            chaos_url,
            "SELECT workflow_id, status, recovery_attempts, error FROM pgflow.workflow_status",
        )
    }
    report = {
        k: (rows[h.workflow_id]["status"], runs.get(f"poison:{k}"), type(outcomes.get(k)).__name__)
        for k, h in poisons.items()
    }
    gaps = restart_gaps(w.events())
    print(
        f"\npoison: {n} normal + {len(poisons)} poison workflows in {took:.1f}s; "
        f"(status, runs, waiter got) {report}; restart gaps after crashes (gap, backoff) {gaps}; "
        f"exit codes {[e['exit_code'] for e in w.events('worker_process_exited')]}"
    )
    for kind in ("exit", "segfault", "systemexit", "keyboardinterrupt"):
        poisoned = poisons[kind]
        assert rows[poisoned.workflow_id]["status"] == "MAX_RECOVERY_ATTEMPTS_EXCEEDED", kind
        assert runs[f"poison:{kind}"] == 3, kind
        assert isinstance(outcomes[kind], pgflow.MaxRecoveryAttemptsExceeded), kind
    mem = poisons["memory"]
    assert rows[mem.workflow_id]["status"] == "ERROR"
    assert runs["poison:memory"] == 1
    assert isinstance(outcomes["memory"], MemoryError)
    bad = {wf: rows[wf]["status"] for wf in normals if rows[wf]["status"] != "SUCCESS"}
    assert not bad
    assert all(rows[wf]["recovery_attempts"] == 0 for wf in normals)
    for kind in POISONS:
        again = chaos_app.poison.options(dedup_id=f"poison-{kind}").enqueue(chaos_app.normal, 0)
        assert again.status().status == pgflow.Status.ENQUEUED
    assert gaps
    for gap, backoff in gaps:
        # The supervisor's delay, plus the release of the dead process's work and a fork.
        assert backoff - 0.05 <= gap <= backoff + 1.0, gaps
    assert_no_stale_writes(chaos_url)


def test_in_limbo_parent_across_four_restarts(
    capp: pgflow.App, chaos_url: str, workers: Any
) -> None:
    """DBOS exp24 with the worker killed (the whole group) and restarted 4 times while other
    PENDING workflows exist: every start takes up every workflow the killed worker held, at
    once; the killer child ends MAX_RECOVERY_ATTEMPTS_EXCEEDED, its parent ERROR, nothing is
    left PENDING, and the dedup id is free."""
    parent = chaos_app.limbo.options(dedup_id="6/5").enqueue(chaos_app.limbo_parent)
    others = [chaos_app.limbo.enqueue(chaos_app.long, i, 100, 0.1) for i in range(6)]
    taken: list[tuple[int, float]] = []
    held: list[str] = []
    for restart in range(5):
        t0 = db_now(chaos_url)
        w = workers("-P", "1", "-c", "8", *HEARTBEAT)
        if restart:

            def retaken(t0: Any = t0, held: list[str] = held) -> bool:
                new = [
                    r["executor_id"]
                    for r in query(
                        chaos_url,
                        "SELECT executor_id FROM public.exec_audit WHERE op = 'I' AND at > %s",
                        (t0,),
                    )
                ]
                rows = query(
                    chaos_url,
                    """
                    SELECT w.status, EXISTS (
                        SELECT 1 FROM public.wf_audit a WHERE a.workflow_id = w.workflow_id
                          AND a.at > %s AND a.new_executor = ANY(%s)) AS taken
                    FROM pgflow.workflow_status w WHERE w.workflow_id = ANY(%s)""",
                    (t0, new, held),
                )
                return all(r["taken"] or r["status"] not in ("ENQUEUED", "PENDING") for r in rows)

            wait_for(
                f"start {restart}: the {len(held)} workflows held by the killed worker", retaken, 10
            )
            taken.append((len(held), round((db_now(chaos_url) - t0).total_seconds(), 2)))
        if restart == 4:
            break
        for pause in (1.0, 0.0):
            # The killer child may have just killed the process (and the supervisor handed
            # everything back): then wait for work in flight again and kill at once.
            wait_for(
                "work in flight",
                lambda: (
                    query(
                        chaos_url,
                        "SELECT count(*) AS n FROM pgflow.workflow_status "
                        "WHERE status = 'PENDING' AND executor_id IS NOT NULL",
                    )[0]["n"]
                    >= 4
                ),
                20,
            )
            time.sleep(pause)
            w.signal_group(signal.SIGSTOP)
            held = [
                r["workflow_id"]
                for r in query(
                    chaos_url,
                    "SELECT workflow_id FROM pgflow.workflow_status "
                    "WHERE status = 'PENDING' AND executor_id IS NOT NULL",
                )
            ]
            if held:
                w.kill()
                break
            w.signal_group(signal.SIGCONT)
        assert held, "the killed worker held nothing"
    wait_terminal(chaos_url, 9, 90)
    rows = {
        r["workflow_id"]: r
        for r in query(
            chaos_url,
            "SELECT workflow_id, name, status, recovery_attempts, parent_workflow_id "
            "FROM pgflow.workflow_status",
        )
    }
    kids = {
        r["name"].rsplit(".", 1)[1]: r
        for r in rows.values()
        if r["parent_workflow_id"] == parent.workflow_id
    }
    print(
        f"\nin limbo x4 restarts: (held workflows, all taken up after s) per start {taken}; "
        f"killer {kids['killer_child']['status']} charged "
        f"{kids['killer_child']['recovery_attempts']}; parent "
        f"{rows[parent.workflow_id]['status']}; others charged "
        f"{[rows[h.workflow_id]['recovery_attempts'] for h in others]}"
    )
    assert kids["killer_child"]["status"] == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    assert kids["killer_child"]["recovery_attempts"] == 3
    assert kids["calm_child"]["status"] == "SUCCESS"
    assert rows[parent.workflow_id]["status"] == "ERROR"
    with pytest.raises(pgflow.MaxRecoveryAttemptsExceeded):
        parent.result(timeout=5)
    assert [h.result(timeout=5) for h in others] == list(range(6))
    assert (
        query(chaos_url, "SELECT count(*) AS n FROM public.ledger WHERE step = 'calm'")[0]["n"] == 1
    )
    assert_no_stale_writes(chaos_url)
    again = chaos_app.limbo.options(dedup_id="6/5").enqueue(chaos_app.limbo_parent)
    assert again.status().status in (pgflow.Status.ENQUEUED, pgflow.Status.PENDING)
