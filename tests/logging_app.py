"""The task module of tests/test_worker_logs.py: a workflow that succeeds, one whose step
fails twice before it succeeds, and one that fails (with a password in its message)."""

from __future__ import annotations

import pgflow

app = pgflow.App("logging-tests")
jobs = app.queue("jobs")

_failures: dict[str, int] = {}


@app.step(retries=3, interval=0.05, backoff=2.0)
def flaky_step() -> str:
    """Fails on its first two attempts in each workflow, then succeeds."""
    wf = pgflow.workflow_id() or ""
    _failures[wf] = _failures.get(wf, 0) + 1
    if _failures[wf] <= 2:
        raise ConnectionError(f"flaky attempt {_failures[wf]}")
    return "ok"


@app.workflow()
def fine() -> int:
    return 1


@app.workflow()
def flaky() -> str:
    return flaky_step()


@app.workflow()
def broken() -> None:
    raise ValueError("cannot reach postgresql://shop:hunter2@db.example/shop")
