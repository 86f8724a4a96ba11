"""The task module the chaos tests run under ``pgflow worker -A tests.chaos.chaos_app``.

Every step writes a row to ``public.ledger`` (created by the test, see ``TABLES``), stamped with
the database clock (``clock_timestamp()``), the worker's pid, executor id and attempt:

- a plain step inserts its row in autocommit as it begins (well before returning), so every
  execution leaves a row, including one whose process dies before the step's checkpoint;
- a transaction step inserts its row inside its own transaction (``pgflow.db()``), so the row
  exists exactly when the step's checkpoint committed.

Ledger writes of plain steps carry a token per execution and are retried across lost
connections (``ON CONFLICT (token) DO NOTHING``): one execution, one row, however the
connection behaves.
"""

from __future__ import annotations

import ctypes
import os
import resource
import time
import uuid
from typing import Any

import pgflow
from pgflow import context

app = pgflow.App("chaos")

chaos = app.queue("chaos", concurrency=8)
per_proc = app.queue("per_proc", worker_concurrency=2)
poison = app.queue("poison", concurrency=1)
hang = app.queue("hang")
drain = app.queue("drain")
limbo = app.queue("limbo")
dedup = app.queue("dedup")
skew = app.queue("skew", concurrency=3, worker_concurrency=2, rate_limit=pgflow.Rate(10, per=1.0))
parts = app.queue("parts", partitioned=True, concurrency=4)

TABLES = """
CREATE TABLE public.ledger (
    id           bigserial PRIMARY KEY,
    token        text UNIQUE,
    workflow_id  text NOT NULL,
    step         text NOT NULL,
    kind         text NOT NULL,
    pid          integer NOT NULL,
    executor_id  text,
    attempt      integer,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ON public.ledger (workflow_id, step);
"""


def _owner() -> tuple[str, str | None, int | None]:
    ctx = context.current()
    if ctx is None:
        return "", None, None
    return ctx.workflow_id, ctx.executor_id, ctx.attempt


def ledger(step: str) -> None:
    """One row per execution of a plain step, committed at once (survives a later crash)."""
    workflow_id, executor_id, attempt = _owner()
    token = uuid.uuid4().hex

    def write() -> None:
        with app.db.connection() as conn:
            conn.execute(
                "INSERT INTO public.ledger (token, workflow_id, step, kind, pid, executor_id, "
                "attempt) VALUES (%s, %s, %s, 'plain', %s, %s, %s) "
                "ON CONFLICT (token) DO NOTHING",
                (token, workflow_id, step, os.getpid(), executor_id, attempt),
            )

    app.db.retrying(write, patience=300.0)


def ledger_tx(step: str) -> None:
    """The row of a transaction step: in the step's transaction, with its checkpoint."""
    workflow_id, executor_id, attempt = _owner()
    pgflow.db().execute(
        "INSERT INTO public.ledger (token, workflow_id, step, kind, pid, executor_id, attempt) "
        "VALUES (%s, %s, %s, 'tx', %s, %s, %s)",
        (uuid.uuid4().hex, workflow_id, step, os.getpid(), executor_id, attempt),
    )


# -- the five-step workflow of the kill storms -----------------------------------------------


@app.step()
def plain_a(i: int, work: float) -> int:
    ledger("a")  # first: a crash during the work below leaves the execution on record
    time.sleep(work)
    return i + 1


@app.transaction()
def tx_b(x: int, work: float) -> int:
    ledger_tx("b")
    time.sleep(work / 3)  # work inside the open transaction: crashes land in it too
    return x * 2


@app.transaction()
def tx_c(x: int) -> int:
    ledger_tx("c")
    return x + 3


@app.step()
def plain_d(x: int, work: float) -> int:
    ledger("d")
    time.sleep(work)
    return x * 5


@app.workflow()
def five(i: int, work: float) -> int:
    """2 plain steps, 2 transaction steps and a short durable sleep: 5 checkpoints."""
    a = plain_a(i, work)
    b = tx_b(a, work)
    pgflow.sleep(0.05)
    c = tx_c(b)
    return plain_d(c, work)


def five_result(i: int) -> int:
    return ((i + 1) * 2 + 3) * 5


FIVE_STEPS = 5
FIVE_PLAIN = ("a", "d")
FIVE_TX = ("b", "c")


# -- long workflows: many short plain steps (drains, zombies, restarts) ------------------------


@app.step()
def tick(n: int, seconds: float) -> int:
    ledger(f"t{n}")
    time.sleep(seconds)
    return n


@app.workflow()
def long(i: int, steps: int, seconds: float) -> int:
    """``steps`` plain steps of ``seconds`` each; returns ``i``."""
    for n in range(steps):
        tick(n, seconds)
    return i


# -- a step past its time limit (per attempt) -----------------------------------------------------


@app.step(time_limit=3)
def stuck() -> None:
    ledger("stuck")
    time.sleep(3600)


@app.workflow()
def hangs() -> str:
    stuck()
    return "unreachable"


# -- poison: each kind kills (or tries to kill) the process that runs it -----------------------


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@app.step()
def swallow(kind: str) -> str:
    ledger(f"poison:{kind}")
    if kind == "exit":
        os._exit(1)
    if kind == "segfault":
        ctypes.string_at(0)
    if kind == "memory":
        # A memory cap reached inside the step: Python raises MemoryError (an Exception).
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + 256 * 1024 * 1024, hard))
        try:
            blob = bytearray(8 * 1024 * 1024 * 1024)
            return str(len(blob))
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    if kind == "systemexit":
        raise SystemExit(3)
    if kind == "keyboardinterrupt":
        raise KeyboardInterrupt
    return kind


@app.workflow(max_recovery_attempts=2)
def poisoned(kind: str) -> str:
    return swallow(kind)


@app.step()
def quick(i: int) -> int:
    ledger("quick")
    return i


@app.workflow(max_recovery_attempts=2)
def normal(i: int) -> int:
    return quick(i) * 3


# -- the DBOS "in limbo" case: a queued parent whose child kills its process every time --------


@app.step()
def suicide() -> None:
    ledger("suicide")
    time.sleep(1.0)
    os.kill(os.getpid(), 9)
    time.sleep(60)


@app.step()
def calm() -> str:
    ledger("calm")
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
    return [calm_child(), killer_child()]


# -- durable sleep and delays (clock skew) -----------------------------------------------------


@app.step()
def mark(label: str) -> float:
    ledger(label)
    return time.time()


@app.workflow()
def sleeper(seconds: float) -> str:
    mark("before")
    pgflow.sleep(seconds)
    mark("after")
    return "slept"


@app.workflow()
def unknown_output() -> Any:
    return emit_set()


@app.step()
def emit_set() -> Any:
    return {1, 2, 3}


# -- errors that quote a password (redaction) --------------------------------------------------

LEAKED = "Le4kedPassw0rd"


class LeakyError(Exception):
    """An error carrying a connection URL in its args and a password in an attribute."""

    def __init__(self, url: str, password: str) -> None:
        super().__init__(url)
        self.url = url
        self.password = password


@app.step()
def leaky_step() -> None:
    raise LeakyError(f"cannot reach postgresql://app:{LEAKED}@db.internal:5432/shop", LEAKED)


@app.workflow()
def leaky() -> None:
    try:
        leaky_step()
    except LeakyError as exc:
        raise RuntimeError(
            f"gave up on conninfo 'host=db.internal password={LEAKED} user=app' ({exc})"
        ) from exc
