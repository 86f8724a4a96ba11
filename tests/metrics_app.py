"""The task module of tests/test_metrics.py: workflows that succeed, fail and retry."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pgflow

app = pgflow.App("metrics-tests")

jobs = app.queue("jobs")
held = app.queue("held")

# Attempts of the flaky step per workflow, in this process (a retry runs in the same thread).
_attempts: dict[str, int] = {}


@app.step()
def add(a: int, b: int) -> int:
    time.sleep(0.3)  # long enough that one worker process cannot take every workflow
    return a + b


@app.workflow()
def adds(n: int) -> int:
    return add(n, 1)


@app.step()
def explode() -> None:
    raise ValueError("boom")


@app.workflow()
def fails() -> None:
    explode()


@app.step(retries=2, interval=0.01)
def flaky_step() -> str:
    wf = pgflow.workflow_id()
    _attempts[wf] = _attempts.get(wf, 0) + 1
    if _attempts[wf] == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


@app.workflow()
def flaky() -> str:
    return flaky_step()


@app.workflow()
def crashes_once(marker: str) -> str:
    """Kills its own worker process the first time (``marker`` remembers, on disk)."""
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"
