"""1. The limit: what the server itself sustains, measured with pgbench on a scratch table.

"Job life" is the least a durable job needs: its row INSERTed with a small jsonb payload, then
UPDATEd to running, then to done, each statement its own commit (three fsyncs, as a durable
queue that records start and end must pay). "Insert" is one INSERT per commit: the commit rate.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .plan import Plan
from .scratch import Scratch

SCRATCH_TABLE = "bench_jobs"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {SCRATCH_TABLE} (
    id            bigserial PRIMARY KEY,
    status        text NOT NULL,
    payload       jsonb NOT NULL,
    output        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    completed_at  timestamptz
)"""

JOB_LIFE = f"""\
INSERT INTO {SCRATCH_TABLE} (status, payload) VALUES ('queued', '{{"args": [42], "kwargs": {{}}}}') RETURNING id \\gset
UPDATE {SCRATCH_TABLE} SET status = 'running', started_at = now() WHERE id = :id;
UPDATE {SCRATCH_TABLE} SET status = 'done', completed_at = now(), output = '42' WHERE id = :id;
"""  # noqa: E501 - pgbench takes one statement per line

INSERT_ONLY = f"""\
INSERT INTO {SCRATCH_TABLE} (status, payload) VALUES ('queued', '{{"args": [42], "kwargs": {{}}}}');
"""

# name -> (script, clients: None for the plan's count); one client is the ceiling of a caller
# that commits one row at a time (one-by-one enqueue, a step checkpoint).
SCRIPTS = {
    "job_life": (JOB_LIFE, None),
    "insert": (INSERT_ONLY, None),
    "insert_1": (INSERT_ONLY, 1),
}

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def find_pgbench(given: str | None = None) -> str:
    if given:
        return given
    found = shutil.which("pgbench") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)), None
    )
    if found is None:
        raise SystemExit("pgbench not found: install PostgreSQL's client tools or pass --pgbench")
    return found


def run_pgbench(
    pgbench: str, url: str, script: str, *, clients: int, seconds: int
) -> dict[str, Any]:
    """One pgbench run of ``script``; returns its TPS and mean latency."""
    with tempfile.TemporaryDirectory(prefix="pgflow-bench-") as tmp:
        path = Path(tmp) / "script.sql"
        path.write_text(script, encoding="utf-8")
        cmd = [
            pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, os.cpu_count() or 1)),
            "-T",
            str(seconds),
            "-f",
            str(path),
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = _TPS.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    latency = re.search(r"^latency average = ([0-9.]+) ms", done.stdout, re.MULTILINE)
    return {
        "tps": float(match.group(1)),
        "latency_ms": float(latency.group(1)) if latency else None,
    }


def measure_limits(scratch: Scratch, plan: Plan, repeat: int, pgbench: str) -> dict[str, Any]:
    """TPS of each script, ``repeat`` times, on an emptied scratch table after a checkpoint."""
    scratch.admin.execute(CREATE_TABLE)
    out: dict[str, Any] = {name: [] for name in SCRIPTS}
    try:
        for _ in range(repeat):
            for name, (script, clients) in SCRIPTS.items():
                scratch.admin.execute(f"TRUNCATE {SCRATCH_TABLE}")
                scratch.checkpoint()
                noise = scratch.wait_quiet()
                run = run_pgbench(
                    pgbench,
                    scratch.url,
                    script,
                    clients=clients or plan.pgbench_clients,
                    seconds=plan.pgbench_seconds
                    if clients is None
                    else max(3, plan.pgbench_seconds // 3),
                )
                run.update(noise)
                out[name].append(run)
    finally:
        scratch.admin.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
    return out
