"""SIGTERM drains a worker under load; a second SIGINT stops it at once."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

import pgflow
from tests.chaos import chaos_app
from tests.chaos.harness import (
    HEARTBEAT,
    assert_no_stale_writes,
    check_all,
    counts,
    query,
    worker_pids,
)
from tests.processes import process_gone, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

GRACE = 2.0
LONG_STEPS, LONG_STEP_S = 40, 0.25  # 10 s: never done within the grace


def test_sigterm_drain_under_load(
    capp: pgflow.App, chaos_url: str, workers: Any, soak: int
) -> None:
    """Short and long workflows in flight, more queued. SIGTERM: exit 0 within grace + 2 s;
    no claim after the signal; short ones finish, long ones go back to the queue uncharged
    (recovery_attempts 0), and a second worker finishes them without re-running their
    completed steps."""
    longs = [chaos_app.drain.enqueue(chaos_app.long, i, LONG_STEPS, LONG_STEP_S) for i in range(4)]
    shorts = chaos_app.drain.enqueue_many(chaos_app.five, [(i, 0.05) for i in range(200 * soak)])
    w = workers("-P", "2", "-c", "4", "--grace", str(GRACE), *HEARTBEAT)
    wait_for(
        "long workflows in flight",
        lambda: (
            query(
                chaos_url,
                "SELECT count(DISTINCT workflow_id) AS n FROM public.ledger WHERE step LIKE 't%%'",
            )[0]["n"]
            == 4
        ),
        30,
    )
    time.sleep(0.5)
    mine = list(worker_pids(chaos_url).values())
    sent = time.monotonic()
    os.kill(w.pid, signal.SIGTERM)
    code = w.wait(GRACE + 10)
    took = time.monotonic() - sent
    (draining,) = w.events("worker_draining")
    signalled = datetime.fromisoformat(draining["timestamp"].replace("Z", "+00:00"))
    claims = query(
        chaos_url,
        "SELECT max(at) AS last FROM public.wf_audit "
        "WHERE new_executor = ANY(%s) AND old_executor IS NULL",
        (mine,),
    )[0]["last"]
    c = counts(chaos_url)
    rows = {
        r["workflow_id"]: r
        for r in query(
            chaos_url,
            "SELECT workflow_id, status, recovery_attempts, executor_id "
            "FROM pgflow.workflow_status",
        )
    }
    handed_back = [h.workflow_id for h in longs]
    done_before = {h.workflow_id for h in shorts if rows[h.workflow_id]["status"] == "SUCCESS"}
    print(
        f"\nSIGTERM drain (grace {GRACE}s): exit {code} after {took:.2f}s; statuses {c}; last "
        f"claim {(claims - signalled).total_seconds() * 1000:+.0f} ms from the signal; "
        f"long ones {[rows[i]['status'] for i in handed_back]} charged "
        f"{[rows[i]['recovery_attempts'] for i in handed_back]}"
    )
    assert code == 0, w.stderr()[-3000:]
    assert took <= GRACE + 2.0
    # The supervisor logs worker_draining before it signals its children: a claim whose
    # statement began after a child got the signal would start after this instant.
    assert claims <= signalled + timedelta(milliseconds=20)
    assert all(
        rows[i]["status"] == "ENQUEUED"
        and rows[i]["recovery_attempts"] == 0
        and rows[i]["executor_id"] is None
        for i in handed_back
    )
    assert not c.get("PENDING")
    assert not worker_pids(chaos_url)
    steps_before = {
        r["workflow_id"]: r["n"]
        for r in query(
            chaos_url,
            "SELECT workflow_id, count(*) AS n FROM pgflow.operation_outputs GROUP BY workflow_id",
        )
    }

    w2 = workers("-P", "2", "-c", "4", "--burst", *HEARTBEAT)
    assert w2.wait(120) == 0, w2.stderr()[-3000:]
    expected = {h.workflow_id: chaos_app.five_result(i) for i, h in enumerate(shorts)}
    v = check_all(
        chaos_url,
        expected=expected,
        steps=chaos_app.FIVE_STEPS,
        plain=chaos_app.FIVE_PLAIN,
        tx=chaos_app.FIVE_TX,
    )
    assert [h.result(timeout=5) for h in longs] == [0, 1, 2, 3]
    reruns = {}
    for h in longs:
        per_step = {
            r["step"]: r["n"]
            for r in query(
                chaos_url,
                "SELECT step, count(*) AS n FROM public.ledger WHERE workflow_id = %s "
                "GROUP BY step",
                (h.workflow_id,),
            )
        }
        done = steps_before.get(h.workflow_id, 0)
        # Steps checkpointed before the drain never ran again; at most the one in flight did.
        assert all(per_step[f"t{k}"] == 1 for k in range(done)), (done, per_step)
        assert sum(per_step.values()) <= LONG_STEPS + 1
        reruns[h.workflow_id] = sum(per_step.values()) - LONG_STEPS
    final = {
        r["workflow_id"]: r["recovery_attempts"]
        for r in query(
            chaos_url, "SELECT workflow_id, recovery_attempts FROM pgflow.workflow_status"
        )
    }
    print(
        f"  {len(done_before)} short ones done before the drain; second worker: {v.line()}; "
        f"long ones had {[steps_before.get(h.workflow_id, 0) for h in longs]} steps "
        f"checkpointed, re-ran {list(reruns.values())} step(s)"
    )
    assert all(n == 0 for n in final.values())
    assert_no_stale_writes(chaos_url)


def test_second_sigint_stops_at_once(capp: pgflow.App, chaos_url: str, workers: Any) -> None:
    """SIGINT drains; a second SIGINT kills the worker processes at once (exit 1). Their
    work is recovered as after a crash (one attempt charged) by the next worker."""
    longs = [chaos_app.drain.enqueue(chaos_app.long, i, 20, 0.25) for i in range(4)]
    w = workers("-P", "2", "-c", "2", "--grace", "30", *HEARTBEAT)
    wait_for(
        "work in flight",
        lambda: (
            query(chaos_url, "SELECT count(DISTINCT workflow_id) AS n FROM public.ledger")[0]["n"]
            == 4
        ),
        30,
    )
    kids = w.children()
    w.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.monotonic()
    w.proc.send_signal(signal.SIGINT)
    code = w.wait(10)
    took = time.monotonic() - sent
    wait_for("children gone", lambda: all(process_gone(p) for p in kids), 2)
    print(
        f"\nsecond SIGINT: supervisor exited {code} after {took:.2f}s "
        f"({len(w.events('worker_stopping_now'))} stop-now line)"
    )
    assert code == 1
    assert took <= 1.0
    w2 = workers("-P", "1", "-c", "4", "--burst", *HEARTBEAT)
    assert w2.wait(60) == 0, w2.stderr()[-3000:]
    assert [h.result(timeout=5) for h in longs] == [0, 1, 2, 3]
    charged = [
        r["recovery_attempts"]
        for r in query(chaos_url, "SELECT recovery_attempts FROM pgflow.workflow_status")
    ]
    assert charged == [1, 1, 1, 1]
    assert_no_stale_writes(chaos_url)
