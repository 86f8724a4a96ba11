"""Database probes and the oracles of the chaos tests (processes: tests/processes.py).

The oracles read only what the database recorded, on its clock:

- ``public.ledger``: one row per step execution (see ``chaos_app``);
- ``public.wf_audit``: every change of a workflow's status, owner or attempt, stamped by a
  trigger with ``clock_timestamp()`` when the row changed (so after any lock it waited for);
- ``public.exec_audit``: every executor row inserted or deleted (registrations, deaths);
- ``pgflow.operation_outputs``: the checkpoints, with their writer and statement time.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

APP = "tests.chaos.chaos_app"
# The test timings: a machine is dead 5 s after its last heartbeat.
HEARTBEAT = ["--heartbeat-interval", "1", "--heartbeat-timeout", "5"]
HEARTBEAT_TIMEOUT = 5.0

AUDIT = """
CREATE TABLE public.wf_audit (
    id            bigserial PRIMARY KEY,
    workflow_id   text NOT NULL,
    op            text NOT NULL,
    old_status    text,
    new_status    text,
    old_executor  text,
    new_executor  text,
    old_attempt   integer,
    new_attempt   integer,
    recovery_attempts integer,
    at            timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ON public.wf_audit (workflow_id, id);
CREATE FUNCTION public.audit_wf() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.wf_audit (workflow_id, op, new_status, new_executor, new_attempt,
                                     recovery_attempts)
        VALUES (NEW.workflow_id, 'I', NEW.status, NEW.executor_id, NEW.attempt,
                NEW.recovery_attempts);
    ELSIF OLD.status IS DISTINCT FROM NEW.status
          OR OLD.executor_id IS DISTINCT FROM NEW.executor_id
          OR OLD.attempt IS DISTINCT FROM NEW.attempt THEN
        INSERT INTO public.wf_audit (workflow_id, op, old_status, new_status, old_executor,
                                     new_executor, old_attempt, new_attempt, recovery_attempts)
        VALUES (NEW.workflow_id, 'U', OLD.status, NEW.status, OLD.executor_id, NEW.executor_id,
                OLD.attempt, NEW.attempt, NEW.recovery_attempts);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER audit_wf AFTER INSERT OR UPDATE ON pgflow.workflow_status
    FOR EACH ROW EXECUTE FUNCTION public.audit_wf();

CREATE TABLE public.exec_audit (
    id           bigserial PRIMARY KEY,
    executor_id  text NOT NULL,
    pid          integer,
    hostname     text,
    op           text NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION public.audit_exec() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.exec_audit (executor_id, pid, hostname, op)
        VALUES (NEW.executor_id, NEW.pid, NEW.hostname, 'I');
    ELSE
        INSERT INTO public.exec_audit (executor_id, pid, hostname, op)
        VALUES (OLD.executor_id, OLD.pid, OLD.hostname, 'D');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER audit_exec AFTER INSERT OR DELETE ON pgflow.executors
    FOR EACH ROW EXECUTE FUNCTION public.audit_exec();
"""


# -- database probes ---------------------------------------------------------------------------


def query(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(statement, params).fetchall()


def db_now(url: str) -> datetime:
    return query(url, "SELECT clock_timestamp() AS t")[0]["t"]  # type: ignore[no-any-return]


def counts(url: str) -> dict[str, int]:
    rows = query(url, "SELECT status, count(*) AS n FROM pgflow.workflow_status GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


def wait_terminal(url: str, expected: int, timeout: float) -> dict[str, int]:
    """Wait until ``expected`` workflows exist and none is ENQUEUED or PENDING."""

    def done() -> dict[str, int] | None:
        c = counts(url)
        if sum(c.values()) >= expected and not c.get("ENQUEUED") and not c.get("PENDING"):
            return c
        return None

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        c = done()
        if c:
            return c
        time.sleep(0.2)
    stuck = query(
        url,
        """
        SELECT w.workflow_id, w.status, w.executor_id, w.attempt, w.recovery_attempts,
               e.executor_id IS NOT NULL AS owner_registered, e.pid AS owner_pid
        FROM pgflow.workflow_status w LEFT JOIN pgflow.executors e USING (executor_id)
        WHERE w.status IN ('ENQUEUED', 'PENDING') LIMIT 5""",
    )
    history = (
        query(
            url,
            "SELECT op, old_status, new_status, old_executor, new_executor, "
            "old_attempt, new_attempt, at FROM public.wf_audit "
            "WHERE workflow_id = %s ORDER BY id",
            (stuck[0]["workflow_id"],),
        )
        if stuck
        else []
    )
    pytest.fail(
        f"not all terminal after {timeout}s: {counts(url)}\nstuck: "
        + "\n".join(map(str, stuck))
        + "\nhistory of the first:\n"
        + "\n".join(map(str, history))
    )


def executors(url: str) -> dict[str, dict[str, Any]]:
    rows = query(url, "SELECT * FROM pgflow.executors")
    return {r["executor_id"]: r for r in rows}


def worker_pids(url: str) -> dict[int, str]:
    rows = query(url, "SELECT pid, executor_id FROM pgflow.executors WHERE kind = 'worker'")
    return {r["pid"]: r["executor_id"] for r in rows}


def stats(values: Iterable[float]) -> str:
    vals = sorted(values)
    if not vals:
        return "n=0"
    return f"n={len(vals)} median={statistics.median(vals):.3f}s max={vals[-1]:.3f}s"


def soak_scaled(n: int, factor: int) -> int:
    return n * factor


# -- oracles -----------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the oracles measured (printed by the tests)."""

    workflows: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    extra_plain_runs: int = 0
    interruptions: int = 0
    checkpoints: int = 0
    max_overlap: int = 0
    max_overlap_per_pid: int = 0
    fenced_writes: int = 0

    def line(self) -> str:
        return (
            f"{self.workflows} workflows {self.statuses}; {self.checkpoints} checkpoints; "
            f"{self.interruptions} runs interrupted, {self.extra_plain_runs} plain steps "
            f"re-run; max concurrent runs {self.max_overlap} (per pid "
            f"{self.max_overlap_per_pid}); writes outside ownership {self.fenced_writes}"
        )


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """Most intervals open at one instant (an end at t comes before a start at t)."""
    events = []
    for start, end in intervals:
        events += [(start, 1), (end, -1)]
    events.sort(key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


def ownership(url: str) -> dict[str, list[tuple[str, int, datetime, datetime | None]]]:
    """Per workflow, every (executor, attempt, from, until) it was owned, from the audit."""
    rows = query(url, "SELECT * FROM public.wf_audit ORDER BY id")
    owned: dict[str, list[tuple[str, int, datetime, datetime | None]]] = defaultdict(list)
    current: dict[str, tuple[str, int, datetime]] = {}
    for r in rows:
        wf = r["workflow_id"]
        if wf in current:
            ex, att, since = current[wf]
            if r["new_executor"] != ex or r["new_attempt"] != att or r["new_status"] != "PENDING":
                owned[wf].append((ex, att, since, r["at"]))
                del current[wf]
        if r["new_executor"] is not None and r["new_status"] == "PENDING" and wf not in current:
            current[wf] = (r["new_executor"], r["new_attempt"], r["at"])
    for wf, (ex, att, since) in current.items():
        owned[wf].append((ex, att, since, None))
    return owned


def check_fencing(
    url: str, owned: dict[str, list[tuple[str, int, datetime, datetime | None]]] | None = None
) -> list[dict[str, Any]]:
    """Checkpoints written while their writer did not own the workflow (must be none), and
    final statuses written by a former owner (impossible by construction; checked anyway)."""
    # Checkpoints first: the audit read afterwards holds the ownership of every one of them.
    checkpoints = query(
        url, "SELECT workflow_id, step_id, executor_id, completed_at FROM pgflow.operation_outputs"
    )
    owned = owned if owned is not None else ownership(url)
    bad = []
    for cp in checkpoints:
        ok = any(
            ex == cp["executor_id"]
            and since <= cp["completed_at"]
            and (until is None or cp["completed_at"] <= until)
            for ex, _, since, until in owned.get(cp["workflow_id"], [])
        )
        if not ok:
            bad.append(
                dict(
                    cp,
                    kind="checkpoint",
                    owners=[
                        (ex[:8], att, str(since.time()), str(until.time()) if until else None)
                        for ex, att, since, until in owned.get(cp["workflow_id"], [])
                    ],
                )
            )
    return bad


def assert_no_stale_writes(url: str) -> None:
    """No checkpoint outside its writer's ownership (the full story on failure)."""
    bad = check_fencing(url)
    if bad:
        history = query(
            url,
            "SELECT * FROM public.wf_audit WHERE workflow_id = %s ORDER BY id",
            (bad[0]["workflow_id"],),
        )
        raise AssertionError(
            "writes outside ownership:\n"
            + "\n".join(map(str, bad[:5]))
            + "\nhistory of the first:\n"
            + "\n".join(map(str, history))
        )


def check_all(
    url: str,
    *,
    expected: dict[str, Any],
    steps: int | None = None,
    plain: tuple[str, ...] = (),
    tx: tuple[str, ...] = (),
    limit: int | None = None,
    per_pid: int | None = None,
    limit_queue: str | None = None,
) -> Verdict:
    """The oracles over workflows ``expected`` (id -> result):

    every one SUCCESS with its result; ``steps`` checkpoints each; every transaction step one
    ledger row; every plain step at most one execution more than its workflow had runs
    interrupted (and one per run); at most ``limit`` runs of ``limit_queue`` at once and
    ``per_pid`` per process (swept over the runs' ledger rows); no checkpoint outside its
    writer's ownership.
    """
    v = Verdict(workflows=len(expected))
    rows = {
        r["workflow_id"]: r
        for r in query(
            url,
            "SELECT workflow_id, status, output, error, queue_name, recovery_attempts "
            "FROM pgflow.workflow_status",
        )
    }
    for wf, result in expected.items():
        r = rows.get(wf)
        assert r is not None, f"workflow {wf} lost"
        v.statuses[r["status"]] = v.statuses.get(r["status"], 0) + 1
        assert r["status"] == "SUCCESS", (wf, r["status"], r["error"])
        assert json.loads(r["output"]) == result, (wf, r["output"], result)
    ids = list(expected)
    if steps is not None:
        cps = query(
            url,
            "SELECT workflow_id, count(*) AS n FROM pgflow.operation_outputs "
            "WHERE workflow_id = ANY(%s) GROUP BY workflow_id",
            (ids,),
        )
        n = {r["workflow_id"]: r["n"] for r in cps}
        wrong = {wf: n.get(wf, 0) for wf in ids if n.get(wf, 0) != steps}
        assert not wrong, f"checkpoints per workflow != {steps}: {list(wrong.items())[:5]}"
        v.checkpoints = sum(n.values())
    ledger = query(
        url,
        "SELECT workflow_id, step, kind, pid, executor_id, attempt, at "
        "FROM public.ledger WHERE workflow_id = ANY(%s)",
        (ids,),
    )
    per_step: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ledger:
        per_step[(r["workflow_id"], r["step"])].append(r)
    for wf in ids:
        for s in tx:
            found = len(per_step.get((wf, s), []))
            assert found == 1, f"transaction step {s} of {wf} has {found} ledger rows"
    owned = ownership(url)
    for wf in ids:
        # Runs that lost their workflow while it was still PENDING: crashes and hand-backs.
        interrupted = max(0, len(owned.get(wf, [])) - 1)
        v.interruptions += interrupted
        for s in plain:
            got = per_step.get((wf, s), [])
            assert got, f"plain step {s} of {wf} never ran"
            runs = {(r["executor_id"], r["attempt"]) for r in got}
            assert len(runs) == len(got), f"plain step {s} of {wf} ran twice in one run"
            assert len(got) <= 1 + interrupted, (
                f"plain step {s} of {wf} ran {len(got)} times over {interrupted} interruptions"
            )
            v.extra_plain_runs += len(got) - 1
    if limit is not None or per_pid is not None:
        spans: dict[tuple[str, str, int], list[datetime]] = defaultdict(list)
        pids: dict[tuple[str, str, int], int] = {}
        for r in ledger:
            if limit_queue is not None and rows[r["workflow_id"]]["queue_name"] != limit_queue:
                continue
            key = (r["workflow_id"], r["executor_id"], r["attempt"])
            spans[key].append(r["at"])
            pids[key] = r["pid"]
        intervals = {k: (min(ts), max(ts)) for k, ts in spans.items()}
        v.max_overlap = max_overlap(intervals.values())
        by_pid: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
        for k, iv in intervals.items():
            by_pid[pids[k]].append(iv)
        v.max_overlap_per_pid = max((max_overlap(iv) for iv in by_pid.values()), default=0)
        if limit is not None:
            assert v.max_overlap <= limit, f"{v.max_overlap} runs at once > limit {limit}"
        if per_pid is not None:
            assert v.max_overlap_per_pid <= per_pid, (
                f"{v.max_overlap_per_pid} runs at once in one process > {per_pid}"
            )
    bad = check_fencing(url)
    v.fenced_writes = len(bad)
    if bad:
        raise AssertionError("writes outside ownership:\n" + "\n".join(map(str, bad[:5])))
    return v
