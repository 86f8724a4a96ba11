"""Task module of the server-crash tests: three steps whose bodies append a line to a ledger
file outside the database (``FENCE_LEDGER``), so the count of bodies run survives the server's
crashes. Step 1 takes ``FENCE_STEP1`` seconds the first time it runs for a workflow (the window
in which the test crashes the server after a claim) and no time after that; step 2 takes
``FENCE_STEP2`` seconds, so that a second run is still inside it when a first run wakes."""

from __future__ import annotations

import os
import time

import pgflow

app = pgflow.App("fence")
free = app.queue("fence_free")
limited = app.queue("fence_limited", concurrency=8)


def _ledger(step: str) -> int:
    """Append this body's run; return how many runs of it came before."""
    wid = pgflow.workflow_id()
    with open(os.environ["FENCE_LEDGER"], "a+") as f:
        f.seek(0)
        before = sum(1 for line in f if line.split()[:2] == [wid, step])
        f.write(f"{wid} {step} {os.getpid()}\n")
    return before


@app.step(name="s1")
def s1() -> int:
    if _ledger("s1") == 0:
        time.sleep(float(os.environ.get("FENCE_STEP1", "2.5")))
    return 1


@app.step(name="s2")
def s2(x: int) -> int:
    _ledger("s2")
    time.sleep(float(os.environ.get("FENCE_STEP2", "0")))
    return x + 1


@app.step(name="s3")
def s3(x: int) -> int:
    _ledger("s3")
    return x + 1


@app.workflow(name="three")
def three(i: int) -> int:
    return s3(s2(s1())) + i
