"""The task module that tests/test_worker.py runs under ``pgflow worker -A tests.worker_app``.

Its App reads ``PGFLOW_DATABASE_URL`` like any user's app. Steps record what they do in tables
the test creates in the ``public`` schema (see ``TABLES``), with times from the database clock
(``clock_timestamp()``), through their own autocommitted statements: a row is written by every
execution of a step, including one whose process dies before the step's checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pgflow

app = pgflow.App("worker-tests")

limited = app.queue("limited", concurrency=3)
per_worker = app.queue("per_worker", worker_concurrency=1)
rated = app.queue("rated", rate_limit=pgflow.Rate(5, per=1.0))
parts = app.queue("parts", partitioned=True, concurrency=1)
prio = app.queue("prio", priority_enabled=True)
plain = app.queue("plain")

# Created by the test in each fresh database (public schema, next to pgflow's own).
TABLES = """
CREATE TABLE public.spans (
    id           serial PRIMARY KEY,
    workflow_id  text NOT NULL,
    label        text NOT NULL,
    pkey         text,
    pid          integer NOT NULL,
    started      timestamptz NOT NULL,
    ended        timestamptz
);
CREATE TABLE public.step_runs (
    id           serial PRIMARY KEY,
    workflow_id  text NOT NULL,
    step         text NOT NULL,
    pid          integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


def _sql(statement: str, params: tuple[Any, ...]) -> Any:
    """One autocommitted statement on this process's pool (survives a later crash)."""
    with app.db.connection() as conn:
        cur = conn.execute(statement, params)
        row = cur.fetchone() if cur.description else None
    return None if row is None else next(iter(row.values()))


def _step_ran(step: str) -> int:
    """Record one execution of ``step``; return how many executions it has had so far."""
    wf = pgflow.workflow_id()
    _sql(
        "INSERT INTO public.step_runs (workflow_id, step, pid) VALUES (%s, %s, %s)",
        (wf, step, os.getpid()),
    )
    return int(
        _sql(
            "SELECT count(*) FROM public.step_runs WHERE workflow_id = %s AND step = %s", (wf, step)
        )
    )


# -- timed work: one span per execution --------------------------------------------------------


@app.step()
def work(label: str, key: str | None, seconds: float) -> int:
    """Hold a worker thread for ``seconds``, recording the span on the database clock."""
    span = _sql(
        "INSERT INTO public.spans (workflow_id, label, pkey, pid, started) "
        "VALUES (%s, %s, %s, %s, clock_timestamp()) RETURNING id",
        (pgflow.workflow_id(), label, key, os.getpid()),
    )
    time.sleep(seconds)
    _sql("UPDATE public.spans SET ended = clock_timestamp() WHERE id = %s", (span,))
    return os.getpid()


@app.workflow()
def timed(label: str, key: str | None, seconds: float) -> int:
    """One span of ``seconds``; returns the pid that ran it."""
    return work(label, key, seconds)


# -- two steps, the second long (drained by SIGTERM) -------------------------------------------


@app.step()
def first() -> str:
    _step_ran("first")
    return "first done"


@app.step()
def nap(seconds: float) -> str:
    """Long on its first execution, short when re-executed (keeps the drain test quick)."""
    runs = _step_ran("nap")
    time.sleep(seconds if runs == 1 else 0.1)
    return "nap done"


@app.workflow()
def two_steps(seconds: float) -> list[str]:
    return [first(), nap(seconds)]


# -- the DBOS "in limbo" case: a queued parent whose child kills its process every time -------


@app.step()
def suicide() -> None:
    """Kill this worker process, as an OOM kill or a segfault would."""
    _step_ran("suicide")
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


@app.step()
def calm() -> str:
    _step_ran("calm")
    return "calm"


@app.workflow()
def calm_child() -> str:
    return calm()


@app.workflow(max_recovery_attempts=2)
def killer_child() -> str:
    suicide()
    return "unreachable"


@app.workflow()
def limbo_parent() -> list[str]:
    """Calls two child workflows inline; the second never survives."""
    return [calm_child(), killer_child()]


# -- steps past their time limit: abandoned bodies that pile up -------------------------------


@app.step(time_limit=0.3)
def hangs_on(n: int) -> str:
    _step_ran(f"hangs_on{n}")
    time.sleep(60)
    return "unreachable"


@app.workflow()
def outlasts(n: int) -> list[str]:
    """Catches ``n`` time-limited steps, each leaving an abandoned body, then naps."""
    got = []
    for i in range(n):
        try:
            got.append(hangs_on(i))
        except pgflow.StepTimeLimitExceeded:
            got.append("timed out")
    return [*got, nap(2.0)]
