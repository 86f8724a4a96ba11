"""The application the process-level crash tests (``tests/test_crash.py``) run and kill.

Its database URL comes from ``CRASH_APP_DATABASE_URL``. A process runs one command:

    python -c "from tests.crash_app import main; main()" run WORKFLOW_ID NAME
    python -c "from tests.crash_app import main; main()" recover WORKFLOW_ID

``run`` starts the workflow on a thread, waits for that thread, writes ``run_done.<pid>.json``,
then waits for the workflow's outcome; ``recover`` makes the process an executor
(``app.launch()``, which adopts orphaned work) and waits for the outcome. Both then write
``result.<pid>.json`` in ``CRASH_APP_DIR``.

Gates let the test freeze a process at a chosen point: a gate named in ``CRASH_APP_GATES``
writes ``<gate>.<pid>.ready`` and blocks until ``<gate>.<pid>.go`` exists. Every step appends a
row to the user table ``public.ledger`` (the test creates it), so the test can count executions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

import pgflow

URL_VAR = "CRASH_APP_DATABASE_URL"
DIR_VAR = "CRASH_APP_DIR"
GATES_VAR = "CRASH_APP_GATES"

app = pgflow.App("crash", database_url=os.environ.get(URL_VAR), app_version="crash-v1")


def _dir() -> Path:
    return Path(os.environ[DIR_VAR])


def write_json(name: str, data: dict[str, Any]) -> None:
    """Write ``<name>.<pid>.json`` atomically (the test polls for it)."""
    target = _dir() / f"{name}.{os.getpid()}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(target)


def gate(name: str) -> None:
    if name not in os.environ.get(GATES_VAR, "").split(","):
        return
    pid = os.getpid()
    (_dir() / f"{name}.{pid}.ready").touch()
    go = _dir() / f"{name}.{pid}.go"
    while not go.exists():
        time.sleep(0.01)


def ledger(step: int, note: str = "") -> None:
    """A side effect outside pgflow: one row per execution of a plain step."""
    with psycopg.connect(os.environ[URL_VAR], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.ledger (workflow_id, step, pid, note) VALUES (%s, %s, %s, %s)",
            (pgflow.workflow_id(), step, os.getpid(), note),
        )


# -- a five-step workflow: killed after its transaction step commits -----------------------------


@app.step(name="crash.one")
def step_one(order: int) -> int:
    ledger(1)
    return order + 1


@app.step(name="crash.two")
def step_two(value: int) -> int:
    ledger(2)
    return value * 2


@app.transaction(name="crash.three")
def step_three(value: int) -> int:
    pgflow.db().execute(
        "INSERT INTO public.ledger (workflow_id, step, pid, note) VALUES (%s, 3, %s, 'tx')",
        (pgflow.workflow_id(), os.getpid()),
    )
    return value + 3


@app.step(name="crash.four")
def step_four(value: int) -> int:
    ledger(4)
    return value * 10


@app.step(name="crash.five")
def step_five(value: int) -> int:
    ledger(5)
    return value - 1


@app.workflow(name="crash.five_steps")
def five_steps(order: int) -> dict[str, Any]:
    a = step_one(order)
    b = step_two(a)
    c = step_three(b)
    gate("after_tx")  # step 3 has committed
    d = step_four(c)
    e = step_five(d)
    return {"values": [a, b, c, d, e], "finished_by": os.getpid()}


# -- a workflow for fencing: frozen inside step 2, or just before its final write ---------------


@app.step(name="fence.one")
def fence_one() -> int:
    ledger(1)
    return os.getpid()


@app.step(name="fence.two")
def fence_two() -> int:
    gate("in_step_two")
    ledger(2)
    return os.getpid()


@app.workflow(name="fence.flow")
def fence_flow() -> dict[str, Any]:
    one = fence_one()
    two = fence_two()
    gate("before_finish")
    return {"one": one, "two": two, "finished_by": os.getpid()}


WORKFLOWS: dict[str, Callable[..., Any]] = {"five_steps": five_steps, "fence": fence_flow}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command, workflow_id = args[0], args[1]
    if command == "run":
        fn = WORKFLOWS[args[2]]
        call_args = [7] if fn is five_steps else []
        handle = app.options(workflow_id=workflow_id).start(fn, *call_args)
        app.wait_idle()
        write_json("run_done", {"pid": os.getpid()})
        result = handle.result(timeout=120)
    elif command == "recover":
        app.launch()
        result = app.retrieve(workflow_id).result(timeout=120)
    else:
        raise SystemExit(f"unknown command {command!r}")
    write_json("result", {"pid": os.getpid(), "result": result})
    app.shutdown()


if __name__ == "__main__":
    main()
